"""Byte layouts of the store's keys and (unsealed) values.

Relationship key: ``pseudonym (32) | institution org number (u32 BE) | role (u8)``. All
relationships of one customer are adjacent, so Lookup and ListOwn are range reads.

Relationship value: ``format (u8) | id length (u8) | customer ID digits |
period count (u16) | periods (start, end as u32 date ordinals; end 0 while active)``.
The customer ID is kept inside the sealed value so that the index can be rebuilt
under a new pseudonym key.
"""

from __future__ import annotations

import json
import struct
from datetime import date

from kfr_grpc.register.model import History, Institution, Period, Role

PSEUDONYM_BYTES = 32
_ORG = struct.Struct(">I")
_RELATIONSHIP_KEY = struct.Struct(">32sIB")
_HEADER = struct.Struct(">BB")
_COUNT = struct.Struct(">H")
_PERIOD = struct.Struct(">II")
_RELATIONSHIP_FORMAT = 1
_OPEN_END = 0


def org_key(org_number: str) -> bytes:
    return _ORG.pack(int(org_number))


def org_from_key(key: bytes) -> str:
    return f"{_ORG.unpack(key)[0]:09d}"


def relationship_key(pseudonym: bytes, org_number: str, role: Role) -> bytes:
    return _RELATIONSHIP_KEY.pack(pseudonym, int(org_number), role.value)


def relationship_prefix(pseudonym: bytes, org_number: str | None = None) -> bytes:
    return pseudonym if org_number is None else pseudonym + org_key(org_number)


def split_relationship_key(key: bytes) -> tuple[str, Role]:
    _, org, role = _RELATIONSHIP_KEY.unpack(key)
    return f"{org:09d}", Role(role)


def encode_relationship(customer_digits: str, history: History) -> bytes:
    digits = customer_digits.encode("ascii")
    parts = [_HEADER.pack(_RELATIONSHIP_FORMAT, len(digits)), digits, _COUNT.pack(len(history))]
    for period in history:
        end = period.end.toordinal() if period.end is not None else _OPEN_END
        parts.append(_PERIOD.pack(period.start.toordinal(), end))
    return b"".join(parts)


def decode_relationship(value: bytes) -> tuple[str, History]:
    record_format, id_length = _HEADER.unpack_from(value)
    if record_format != _RELATIONSHIP_FORMAT:
        raise ValueError(f"unknown relationship record format {record_format}")
    offset = _HEADER.size
    digits = value[offset : offset + id_length].decode("ascii")
    offset += id_length
    (count,) = _COUNT.unpack_from(value, offset)
    offset += _COUNT.size
    history = tuple(
        Period(date.fromordinal(start), date.fromordinal(end) if end != _OPEN_END else None)
        for start, end in _PERIOD.iter_unpack(value[offset : offset + count * _PERIOD.size])
    )
    return digits, history


def encode_institution(institution: Institution) -> bytes:
    document = {"name": institution.name, "registered_on": institution.registered_on.isoformat()}
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def decode_institution(org_number: str, value: bytes) -> Institution:
    document = json.loads(value)
    return Institution(
        org_number=org_number,
        name=document["name"],
        registered_on=date.fromisoformat(document["registered_on"]),
    )
