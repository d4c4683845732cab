"""Byte layouts of the store's keys and (unsealed) values.

Relationship key (38 bytes): ``pseudonym key version (u8) | pseudonym (32) |
institution org number (u32 BE) | role (u8)``. All relationships of one customer under
one pseudonym key are adjacent, so Lookup and ListOwn are range reads.

Relationship value: ``format (u8) | id length (u8) | customer ID digits | slot (u64) |
period count (u16) | periods (start, end as u32 date ordinals; end 0 while active)``.
The customer ID is kept inside the sealed value so that the index can be rebuilt under
a new pseudonym key.

Indexes:
- by institution: ``org (u32 BE) | slot (u64 BE)`` -> relationship key. Slots are handed
  out in increasing order per institution, so a bulk load appends to the index instead
  of writing to a random page per item; the record keeps its slot.
- ended by date: ``end date ordinal (u32 BE) | relationship key`` -> empty, one per ended
  period
- request log by time: ``time ns (u64 BE) | correlation id (16) | sequence, random (4)``
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from datetime import UTC, date, datetime
from typing import Any

from kfr_grpc.errors import Rejection
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
from kfr_grpc.register.model import History, Institution, Period, RequestRecord, Role

PSEUDONYM_BYTES = 32
RELATIONSHIP_KEY_BYTES = 38
_ORG = struct.Struct(">I")
_RELATIONSHIP_KEY = struct.Struct(">B32sIB")
_DAY = struct.Struct(">I")
_TIME = struct.Struct(">Q")
_SEQUENCE = struct.Struct(">H")
_HEADER = struct.Struct(">BB")
_COUNT = struct.Struct(">H")
_PERIOD = struct.Struct(">II")
_SLOT = struct.Struct(">Q")
_RELATIONSHIP_FORMAT = 2
_OPEN_END = 0
# The byte that stands for each role in a relationship key: part of the store format.
_ROLE_BYTES = {Role.OWNER: 1, Role.DISPONENT: 2}
_ROLES_BY_BYTE = {byte: role for role, byte in _ROLE_BYTES.items()}


# --- relationships ------------------------------------------------------------------------


def org_key(org_number: str) -> bytes:
    return _ORG.pack(int(org_number))


def org_from_key(key: bytes) -> str:
    return f"{_ORG.unpack(key[:4])[0]:09d}"


def relationship_key(version: int, pseudonym: bytes, org_number: str, role: Role) -> bytes:
    return _RELATIONSHIP_KEY.pack(version, pseudonym, int(org_number), _ROLE_BYTES[role])


def relationship_prefix(version: int, pseudonym: bytes, org_number: str | None = None) -> bytes:
    prefix = bytes((version,)) + pseudonym
    return prefix if org_number is None else prefix + org_key(org_number)


def split_relationship_key(key: bytes) -> tuple[int, str, Role]:
    """The pseudonym key version, institution and role of a relationship key."""
    version, _, org, role = _RELATIONSHIP_KEY.unpack(key)
    return version, f"{org:09d}", _ROLES_BY_BYTE[role]


def encode_relationship(customer: CustomerId, history: History, slot: int) -> bytes:
    digits = customer.digits.encode("ascii")
    parts = [
        _HEADER.pack(_RELATIONSHIP_FORMAT, len(digits)),
        digits,
        _SLOT.pack(slot),
        _COUNT.pack(len(history)),
    ]
    for period in history:
        end = period.end.toordinal() if period.end is not None else _OPEN_END
        parts.append(_PERIOD.pack(period.start.toordinal(), end))
    return b"".join(parts)


def decode_relationship(value: bytes) -> tuple[CustomerId, History, int]:
    """The customer, the history and the by-institution slot of a relationship value."""
    record_format, id_length = _HEADER.unpack_from(value)
    if record_format != _RELATIONSHIP_FORMAT:
        raise ValueError(f"unknown relationship record format {record_format}")
    offset = _HEADER.size
    digits = value[offset : offset + id_length].decode("ascii")
    offset += id_length
    (slot,) = _SLOT.unpack_from(value, offset)
    offset += _SLOT.size
    (count,) = _COUNT.unpack_from(value, offset)
    offset += _COUNT.size
    history = tuple(
        Period(date.fromordinal(start), date.fromordinal(end) if end != _OPEN_END else None)
        for start, end in _PERIOD.iter_unpack(value[offset : offset + count * _PERIOD.size])
    )
    kind = CustomerKind.PERSON if len(digits) == 11 else CustomerKind.ORGANISATION
    return CustomerId(digits, kind), history, slot


def ended_keys(relationship: bytes, history: History) -> set[bytes]:
    """The ended-by-date index keys of ``history``'s ended periods."""
    return {
        _DAY.pack(period.end.toordinal()) + relationship
        for period in history
        if period.end is not None
    }


def day_key(day: date) -> bytes:
    return _DAY.pack(day.toordinal())


def day_of(index_key: bytes) -> date:
    """The date at the front of an ended-by-date index key."""
    return date.fromordinal(_DAY.unpack(index_key[:4])[0])


def slot_key(relationship: bytes, slot: int) -> bytes:
    """The by-institution index key of a relationship (its org is in its key)."""
    return relationship[33:37] + _SLOT.pack(slot)


def slot_of(slot_key: bytes) -> int:
    return _SLOT.unpack(slot_key[4:12])[0]


def relationship_of_index_key(index_key: bytes) -> bytes:
    """The relationship key at the end of an ended-by-date index key."""
    return index_key[-RELATIONSHIP_KEY_BYTES:]


# --- institutions ---------------------------------------------------------------------------


def encode_institution(institution: Institution) -> bytes:
    document = {
        "name": institution.name,
        "registered_on": institution.registered_on.isoformat(),
        "closed_on": institution.closed_on.isoformat() if institution.closed_on else None,
        "collection_accounts": list(institution.collection_accounts),
    }
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def decode_institution(org_number: str, value: bytes) -> Institution:
    document = json.loads(value)
    closed_on = document.get("closed_on")
    return Institution(
        org_number=org_number,
        name=document["name"],
        registered_on=date.fromisoformat(document["registered_on"]),
        closed_on=date.fromisoformat(closed_on) if closed_on else None,
        collection_accounts=tuple(document.get("collection_accounts", ())),
    )


# --- request log ----------------------------------------------------------------------------


def _nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


def request_key(record: RequestRecord, sequence: int) -> bytes:
    """``correlation id (16) | time ns (8) | sequence (u16) | 2 random bytes``.

    Retries under one correlation id get a record each, in order even within one clock
    tick (``sequence`` counts the writer's records); the random bytes keep two processes
    writing in the same nanosecond apart.
    """
    moment = _TIME.pack(_nanoseconds(record.time))
    suffix = _SEQUENCE.pack(sequence & 0xFFFF) + os.urandom(2)
    return uuid.UUID(record.correlation_id).bytes + moment + suffix


def request_prefix(correlation_id: str) -> bytes:
    return uuid.UUID(correlation_id).bytes


def request_time_key(request: bytes) -> bytes:
    """The by-time index key (``time | correlation id | random``) of a request log key."""
    return request[16:24] + request[:16] + request[24:]


def request_of_time_key(time_key: bytes) -> bytes:
    return time_key[8:24] + time_key[:8] + time_key[24:]


def time_key(moment: datetime) -> bytes:
    return _TIME.pack(_nanoseconds(moment))


def encode_request(record: RequestRecord) -> bytes:
    document: dict[str, Any] = {
        "correlation_id": record.correlation_id,
        "time": record.time.astimezone(UTC).isoformat(),
        "method": record.method,
        "institution": record.institution,
        "supplier": record.supplier,
        "status": record.status,
        "message": record.message,
        "counts": record.counts,
        "rejected": [[r.field, r.reason, r.code] for r in record.rejected],
    }
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def decode_request(value: bytes) -> RequestRecord:
    document = json.loads(value)
    return RequestRecord(
        correlation_id=document["correlation_id"],
        time=datetime.fromisoformat(document["time"]),
        method=document["method"],
        institution=document["institution"],
        supplier=document["supplier"],
        status=document["status"],
        message=document["message"],
        counts=document["counts"],
        rejected=tuple(Rejection(*rejection) for rejection in document["rejected"]),
    )


# --- lookup counters ------------------------------------------------------------------------


def lookup_count_key(day: date, agency: str, mandate: str) -> bytes:
    return _DAY.pack(day.toordinal()) + org_key(agency) + mandate.encode("utf-8")


def split_lookup_count_key(key: bytes) -> tuple[date, str, str]:
    return date.fromordinal(_DAY.unpack(key[:4])[0]), org_from_key(key[4:8]), key[8:].decode()


def encode_counts(counts: dict[str, int]) -> bytes:
    return json.dumps(counts, sort_keys=True).encode("ascii")


def decode_counts(value: bytes) -> dict[str, int]:
    return json.loads(value)
