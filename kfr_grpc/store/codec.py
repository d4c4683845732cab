"""Byte layouts of the store's keys and (unsealed) values.

Keys show no institution, role, account, agency or mandate in clear: where a key must
be found again from those, it holds a *tag*, an HMAC of them under the pseudonym key of
the version named in the key (``Pseudonymiser.tag``), and the sealed value holds them.

Relationship key (41 bytes): ``pseudonym key version (u8) | pseudonym (32) | tag (8) of
(pseudonym, institution, role, product kind)`` (a relationship of unspecified kind is
tagged without the kind, as before kinds existed, so older records need no move). All
relationships of one customer under one pseudonym key are adjacent, so Lookup and
ListOwn are range reads; the raw key says how many relationships a pseudonym has, not
where.

Relationship value: ``format 3 (u8) | id length (u8) | customer ID digits | institution
(u32) | role (u8) | slot (u64) | period count (u16) | periods (start, end as u32 date
ordinals; end 0 while active)``. The customer ID is kept inside the sealed value so that
the index can be rebuilt under a new pseudonym key. Format 4 (store format 6), for a
relationship of a named kind or with corrections: ``4 | id length | digits | institution |
role | kind (u8) | slot | period count | periods | correction count (u16) | corrections
(made on u32, action u8, reason u8, period start u32, previous date u32; 0 for none)``.

Indexes (their values sealed, so an entry links to no relationship without the keys):
- by institution: ``version (u8) | tag (8) of the institution | slot (u64 BE)`` ->
  relationship key. Slots are handed out in increasing order per institution, so a bulk
  load appends to the index instead of writing to a random page per item; the record
  keeps its slot.
- ended by date: ``end date ordinal (u32 BE) | tag (8) of (relationship key, date)`` ->
  relationship key, one per ended period
- request log by time: ``time ns (u64 BE) | correlation id (16) | sequence, random (4)``

Collection accounts: ``version | tag (16) of the account`` -> "account org". Lookup
counters: ``day (u32 BE) | version | tag (16) of (agency, mandate)`` -> agency, mandate
and counts.

Store format 4 and older (``LEGACY_*``) kept institution and role in relationship keys
(38 bytes, record format 2), ``org (u32) | slot`` -> relationship key and ``day |
relationship key`` -> empty in the indexes, accounts and (day, agency, mandate) as keys.
Those are still read, and moved to the tagged layout by ``kfr migrate``.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import uuid
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from kfr_grpc.errors import Rejection
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
from kfr_grpc.register.model import (
    Correction,
    CorrectionAction,
    CorrectionReason,
    Corrections,
    History,
    Institution,
    Period,
    ProductKind,
    RequestRecord,
    Role,
)

PSEUDONYM_BYTES = 32
RELATIONSHIP_TAG_BYTES = 8
RELATIONSHIP_KEY_BYTES = 1 + PSEUDONYM_BYTES + RELATIONSHIP_TAG_BYTES
LEGACY_RELATIONSHIP_KEY_BYTES = 38
INDEX_TAG_BYTES = 8
LEGACY_SLOT_KEY_BYTES = 12
LEGACY_ENDED_KEY_BYTES = 4 + LEGACY_RELATIONSHIP_KEY_BYTES
NAME_TAG_BYTES = 16
_ORG = struct.Struct(">I")
_LEGACY_RELATIONSHIP_KEY = struct.Struct(">B32sIB")
_PLACE = struct.Struct(">IB")  # institution, role
_DAY = struct.Struct(">I")
_TIME = struct.Struct(">Q")
_SEQUENCE = struct.Struct(">H")
_HEADER = struct.Struct(">BB")
_COUNT = struct.Struct(">H")
_PERIOD = struct.Struct(">II")
_SLOT = struct.Struct(">Q")
_SLOT_COUNT = struct.Struct(">QH")
_RELATIONSHIP_FORMAT = 3
_KINDS_FORMAT = 4  # with a product kind and corrections
_CORRECTION = struct.Struct(">IBBII")
_LEGACY_RELATIONSHIP_FORMAT = 2
_OPEN_END = 0
# The byte that stands for each role in a relationship key: part of the store format.
_ROLE_BYTES = {Role.OWNER: 1, Role.DISPONENT: 2}
_ROLES_BY_BYTE = {byte: role for role, byte in _ROLE_BYTES.items()}
_KIND_BYTES = {
    ProductKind.UNSPECIFIED: 0, ProductKind.PAYMENT_ACCOUNT: 1, ProductKind.LOAN: 2,
    ProductKind.OTHER: 3,
}  # fmt: skip
_KINDS_BY_BYTE = {byte: kind for kind, byte in _KIND_BYTES.items()}
_ACTION_BYTES = {action: index + 1 for index, action in enumerate(CorrectionAction)}
_ACTIONS_BY_BYTE = {byte: action for action, byte in _ACTION_BYTES.items()}
_REASON_BYTES = {reason: index + 1 for index, reason in enumerate(CorrectionReason)}
_REASONS_BY_BYTE = {byte: reason for reason, byte in _REASON_BYTES.items()}


# --- relationships ------------------------------------------------------------------------


def org_key(org_number: str) -> bytes:
    return _ORG.pack(int(org_number))


def org_from_key(key: bytes) -> str:
    return f"{_ORG.unpack(key[:4])[0]:09d}"


def place(org_number: str, role: Role, kind: ProductKind) -> bytes:
    """Institution, role and kind as a relationship's key tag and value hold them: the kind
    byte only for a named kind, so that a relationship of unspecified kind keeps the tag
    it had before kinds existed."""
    packed = _PLACE.pack(int(org_number), _ROLE_BYTES[role])
    return packed if kind is ProductKind.UNSPECIFIED else packed + bytes((_KIND_BYTES[kind],))


def relationship_tag_data(pseudonym: bytes, place: bytes) -> bytes:
    """What a relationship key's tag is made of (``place``: ``place(org, role)``)."""
    return b"relationship\x00" + pseudonym + place


def relationship_key(version: int, pseudonym: bytes, tag: bytes) -> bytes:
    return bytes((version,)) + pseudonym + tag[:RELATIONSHIP_TAG_BYTES]


def legacy_relationship_key(version: int, pseudonym: bytes, org_number: str, role: Role) -> bytes:
    return _LEGACY_RELATIONSHIP_KEY.pack(version, pseudonym, int(org_number), _ROLE_BYTES[role])


def is_legacy_relationship(key: bytes) -> bool:
    return len(key) == LEGACY_RELATIONSHIP_KEY_BYTES


def relationship_prefix(version: int, pseudonym: bytes) -> bytes:
    return bytes((version,)) + pseudonym


class DecodedRelationship(NamedTuple):
    """A decoded relationship value (a tuple: every Lookup and write decodes a few, a
    reconciliation a million)."""

    customer: CustomerId
    institution: str
    role: Role
    history: History
    slot: int
    kind: ProductKind = ProductKind.UNSPECIFIED
    corrections: Corrections = ()


def encode_relationship(
    customer: CustomerId, place: bytes, history: History, slot: int, corrections: Corrections
) -> bytes:
    """``place``: ``place(org, role, kind)``. Format 3 while it can (no kind, no
    corrections): byte for byte what a store of format 5 holds."""
    digits = customer.digits.encode("ascii")
    plain = len(place) == _PLACE.size and not corrections
    parts = [_HEADER.pack(_RELATIONSHIP_FORMAT if plain else _KINDS_FORMAT, len(digits)), digits]
    parts.append(place if plain else place[: _PLACE.size] + (place[_PLACE.size :] or b"\0"))
    parts += [_SLOT.pack(slot), _COUNT.pack(len(history))]
    for period in history:
        end = period.end.toordinal() if period.end is not None else _OPEN_END
        parts.append(_PERIOD.pack(period.start.toordinal(), end))
    if not plain:
        parts.append(_COUNT.pack(len(corrections)))
        parts.extend(_packed_correction(correction) for correction in corrections)
    return b"".join(parts)


def is_plain_relationship(value: bytes) -> bool:
    """Whether a relationship value is of format 3 or older (readable by store format 5)."""
    return value[0] != _KINDS_FORMAT


def _packed_correction(correction: Correction) -> bytes:
    return _CORRECTION.pack(
        correction.made_on.toordinal(),
        _ACTION_BYTES[correction.action],
        _REASON_BYTES[correction.reason],
        _ordinal_or_zero(correction.period_start),
        _ordinal_or_zero(correction.previous),
    )


def _ordinal_or_zero(day: date | None) -> int:
    return day.toordinal() if day is not None else 0


def _date_or_none(ordinal: int) -> date | None:
    return date.fromordinal(ordinal) if ordinal else None


def _unpacked_corrections(value: bytes, offset: int) -> Corrections:
    (count,) = _COUNT.unpack_from(value, offset)
    offset += _COUNT.size
    return tuple(
        Correction(
            date.fromordinal(made_on),
            _ACTIONS_BY_BYTE[action],
            _REASONS_BY_BYTE[reason],
            _date_or_none(start),
            _date_or_none(previous),
        )
        for made_on, action, reason, start, previous in _CORRECTION.iter_unpack(
            value[offset : offset + count * _CORRECTION.size]
        )
    )


def decode_relationship(key: bytes, value: bytes) -> DecodedRelationship:
    """A relationship record; a legacy one (format 2) has its institution and role in
    its key."""
    record_format, id_length = _HEADER.unpack_from(value)
    offset = _HEADER.size
    digits = value[offset : offset + id_length].decode("ascii")
    offset += id_length
    kind = ProductKind.UNSPECIFIED
    if record_format in (_RELATIONSHIP_FORMAT, _KINDS_FORMAT):
        org, role_byte = _PLACE.unpack_from(value, offset)
        offset += _PLACE.size
        if record_format == _KINDS_FORMAT:
            kind = _KINDS_BY_BYTE[value[offset]]
            offset += 1
    elif record_format == _LEGACY_RELATIONSHIP_FORMAT:
        _, _, org, role_byte = _LEGACY_RELATIONSHIP_KEY.unpack(key)
    else:
        raise ValueError(f"unknown relationship record format {record_format}")
    slot, count = _SLOT_COUNT.unpack_from(value, offset)
    offset += _SLOT_COUNT.size
    end_of_periods = offset + count * _PERIOD.size
    history = tuple(map(_period, _PERIOD.iter_unpack(value[offset:end_of_periods])))
    corrections = (
        _unpacked_corrections(value, end_of_periods) if record_format == _KINDS_FORMAT else ()
    )
    customer_kind = CustomerKind.PERSON if len(digits) == 11 else CustomerKind.ORGANISATION
    customer = CustomerId(digits, customer_kind)
    role = _ROLES_BY_BYTE[role_byte]
    return DecodedRelationship(customer, _org(org), role, history, slot, kind, corrections)


# Decoding is on every read's path: the few distinct periods and institutions a store holds
# are made once (immutable values; bounded caches of pure functions).
@functools.lru_cache(maxsize=1 << 16)
def _period(ordinals: tuple[int, int]) -> Period:
    start, end = ordinals
    return Period(date.fromordinal(start), date.fromordinal(end) if end != _OPEN_END else None)


@functools.lru_cache(maxsize=1 << 12)
def _org(number: int) -> str:
    return f"{number:09d}"


def day_key(day: date) -> bytes:
    return _DAY.pack(day.toordinal())


def day_of(index_key: bytes) -> date:
    """The date at the front of an ended-by-date index key."""
    return date.fromordinal(_DAY.unpack(index_key[:4])[0])


def ended_tag_data(relationship: bytes, day: date) -> bytes:
    return b"ended\x00" + relationship + day_key(day)


def ended_key(day: date, tag: bytes) -> bytes:
    return day_key(day) + tag[:INDEX_TAG_BYTES]


def legacy_ended_key(day: date, relationship: bytes) -> bytes:
    return day_key(day) + relationship


def is_legacy_ended_key(index_key: bytes) -> bool:
    return len(index_key) == LEGACY_ENDED_KEY_BYTES


def institution_tag_data(org_number: str) -> bytes:
    return b"institution\x00" + org_key(org_number)


def institution_prefix(version: int, tag: bytes) -> bytes:
    return bytes((version,)) + tag[:INDEX_TAG_BYTES]


def slot_key(prefix: bytes, slot: int) -> bytes:
    """A by-institution index key: the institution's prefix (tagged, or a legacy org key)
    and the slot."""
    return prefix + _SLOT.pack(slot)


def slot_of(slot_key: bytes) -> int:
    return _SLOT.unpack(slot_key[-_SLOT.size :])[0]


def is_legacy_slot_key(index_key: bytes) -> bool:
    return len(index_key) == LEGACY_SLOT_KEY_BYTES


# --- institutions ---------------------------------------------------------------------------


def encode_institution(institution: Institution) -> bytes:
    document = {
        "name": institution.name,
        "registered_on": institution.registered_on.isoformat(),
        "closed_on": institution.closed_on.isoformat() if institution.closed_on else None,
        "collection_accounts": list(institution.collection_accounts),
    }
    if institution.first_report_on is not None:
        document["first_report_on"] = institution.first_report_on.isoformat()
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def decode_institution(org_number: str, value: bytes) -> Institution:
    document = json.loads(value)
    closed_on = document.get("closed_on")
    first_report_on = document.get("first_report_on")
    return Institution(
        org_number=org_number,
        name=document["name"],
        registered_on=date.fromisoformat(document["registered_on"]),
        closed_on=date.fromisoformat(closed_on) if closed_on else None,
        collection_accounts=tuple(document.get("collection_accounts", ())),
        first_report_on=date.fromisoformat(first_report_on) if first_report_on else None,
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


# --- collection accounts ---------------------------------------------------------------


def collection_tag_data(account: str) -> bytes:
    return b"collection account\x00" + account.encode("ascii")


def collection_key(version: int, tag: bytes) -> bytes:
    return bytes((version,)) + tag[:NAME_TAG_BYTES]


def encode_collection_account(account: str, org_number: str) -> bytes:
    return f"{account} {org_number}".encode("ascii")


def decode_collection_account(key: bytes, value: bytes) -> tuple[str, str]:
    """(account, org number); a legacy entry has the account as its key."""
    text = value.decode("ascii")
    if " " not in text:
        return key.decode("ascii"), text
    account, org_number = text.split(" ")
    return account, org_number


# --- lookup counters ------------------------------------------------------------------------


def lookup_tag_data(agency: str, mandate: str) -> bytes:
    return b"lookup counter\x00" + org_key(agency) + mandate.encode("utf-8")


def lookup_count_key(day: date, version: int, tag: bytes) -> bytes:
    return _DAY.pack(day.toordinal()) + bytes((version,)) + tag[:NAME_TAG_BYTES]


def legacy_lookup_count_key(day: date, agency: str, mandate: str) -> bytes:
    return _DAY.pack(day.toordinal()) + org_key(agency) + mandate.encode("utf-8")


def encode_lookup_count(agency: str, mandate: str, counts: dict[str, int]) -> bytes:
    document = {"agency": agency, "mandate": mandate, "counts": counts}
    return json.dumps(document, sort_keys=True, ensure_ascii=False).encode("utf-8")


def decode_lookup_count(key: bytes, value: bytes) -> tuple[date, str, str, dict[str, int]]:
    """(day, agency, mandate, counts); a legacy entry has agency and mandate in its key
    and only the counts in its value."""
    day = date.fromordinal(_DAY.unpack(key[:4])[0])
    document = json.loads(value)
    if _is_tagged_count(document):
        return day, document["agency"], document["mandate"], document["counts"]
    return day, org_from_key(key[4:8]), key[8:].decode("utf-8"), document


def is_legacy_lookup_count(value: bytes) -> bool:
    return not _is_tagged_count(json.loads(value))


def _is_tagged_count(document: dict) -> bool:
    return isinstance(document.get("counts"), dict) and "agency" in document
