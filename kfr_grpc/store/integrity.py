"""A walk over the whole store that finds every inconsistency: ``kfr doctor --verify``.

Sealed values authenticate themselves (AES-GCM with their database and key as
associated data), index values among them; the index keys and ``meta`` are not sealed
(they must stay cheap range reads), so they are checked against the records they are
derived from. An index entry
deleted, added or changed, a record whose key does not fit its content, a count in
``meta`` that disagrees: each is found and named by kind and number, never by customer.
Deleting ``ended_by_date`` entries, the way to stop retention quietly, shows as
"relationships with ended periods missing from ended_by_date".
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from collections.abc import Iterator

from kfr_grpc.errors import CorruptRecord
from kfr_grpc.register.model import is_active
from kfr_grpc.store import codec
from kfr_grpc.store.layout import (
    ACTIVE_KEY,
    BY_INSTITUTION,
    ENDED_BY_DATE,
    INSTITUTIONS,
    META,
    PSEUDONYM_VERSION_KEY,
    RELATIONSHIPS,
    SEAL_VERSION_KEY,
    SEALED_DATABASES,
    is_unsealed_entry,
    meta_number,
)
from kfr_grpc.store.relationships import RelationshipReads


class IntegrityReads(RelationshipReads):
    def problems(self) -> Iterator[str]:
        """Every inconsistency in the store, one line each (none: all is well)."""
        yield from self._meta_problems()
        yield from self._sealed_value_problems()
        yield from self._relationship_problems()

    def _meta_problems(self) -> Iterator[str]:
        for name, key in (("seal", SEAL_VERSION_KEY), ("pseudonym", PSEUDONYM_VERSION_KEY)):
            version = meta_number(self._txn, self._db, key)
            known = (
                self._crypto.keyring.seal.versions
                if name == "seal"
                else self._crypto.keyring.pseudonym.versions
            )
            if version not in known:
                yield f"meta: new writes use {name} key version {version}, which the keyring lacks"

    def _sealed_value_problems(self) -> Iterator[str]:
        for database in SEALED_DATABASES:
            failed = 0
            for key, sealed in self._txn.cursor(db=self._db[database]):
                if is_unsealed_entry(database, key):
                    continue
                try:
                    self._open(database, key, sealed)
                except CorruptRecord:
                    failed += 1
            if failed:
                yield (
                    f"{database.decode()}: {failed} value(s) do not open (altered, moved to "
                    "another key, or sealed with a key version the keyring lacks)"
                )

    def _relationship_problems(self) -> Iterator[str]:
        # Each index is compared with the records by count and by a sum of digests of its
        # entries (order-free, constant memory: the store may hold 10^7 relationships).
        expected_slots, expected_ended = _Tally(), _Tally()
        institutions: set[str] = set()
        found = Counter[str]()
        active = 0
        for key, sealed in self._txn.cursor(db=self._db[RELATIONSHIPS]):
            try:
                record = self._decoded(key, sealed)
            except CorruptRecord:
                continue  # counted with the sealed values
            except (ValueError, KeyError, struct.error):
                found["records or keys of an unknown layout"] += 1
                continue
            if not self._fits(key, record):
                found["key does not fit its record"] += 1
            if not record.history:
                found["empty history"] += 1
            expected_slots.add(self._slot_key(key, record.institution, record.slot) + key)
            for ended in self._ended_keys(key, record.history):
                expected_ended.add(ended + key)
            institutions.add(record.institution)
            active += is_active(record.history)
        yield from _counted("relationships", found)
        yield from self._index_problems(expected_slots, expected_ended)
        yield from self._institution_problems(institutions)
        stored_active = self._txn.get(ACTIVE_KEY, db=self._db[META])
        if stored_active is not None and int(stored_active) != active:
            yield f"meta: the active count says {int(stored_active)}, the records {active}"

    def _fits(self, key: bytes, record: codec.DecodedRelationship) -> bool:
        """Whether ``key`` is the key ``record`` belongs under (its version's)."""
        version = key[0]
        pseudonymiser = self._crypto.pseudonymisers.get(version)
        if pseudonymiser is None:
            return False
        pseudonym = pseudonymiser.pseudonym(record.customer.digits)
        if codec.is_legacy_relationship(key):
            expected = codec.legacy_relationship_key(
                version, pseudonym, record.institution, record.role
            )
        else:
            expected = self._relationship_key(
                version, pseudonym, record.institution, record.role, record.kind
            )
        return key == expected

    def _index_problems(self, expected_slots: _Tally, expected_ended: _Tally) -> Iterator[str]:
        slots, ended = _Tally(), _Tally()
        for key, value in self._txn.cursor(db=self._db[BY_INSTITUTION]):
            slots.add(key + self._index_value(BY_INSTITUTION, key, value))
        for key, value in self._txn.cursor(db=self._db[ENDED_BY_DATE]):
            ended.add(key + self._index_value(ENDED_BY_DATE, key, value))
        yield from _compared(
            "by_institution", slots, expected_slots,
            missing="relationships missing from it (closure would leave them active)",
            extra="entries without their relationship",
            different="entries that do not match their relationships",
        )  # fmt: skip
        yield from _compared(
            "ended_by_date", ended, expected_ended,
            missing="ended periods missing from it (retention would never remove them)",
            extra="entries without their ended period",
            different="entries that do not match the records' ended periods",
        )  # fmt: skip

    def _index_value(self, database: bytes, key: bytes, value: bytes) -> bytes:
        """The relationship key an index entry names (b"" if its value does not open:
        counted with the sealed values, and here as an entry that does not match)."""
        if database == ENDED_BY_DATE and codec.is_legacy_ended_key(key):
            return key[4:]
        if is_unsealed_entry(database, key):
            return value
        try:
            return self._open(database, key, value)
        except CorruptRecord:
            return b""

    def _institution_problems(self, institutions: set[str]) -> Iterator[str]:
        registered = {
            codec.org_from_key(key) for key, _ in self._txn.cursor(db=self._db[INSTITUTIONS])
        }
        unknown = len(institutions - registered)
        if unknown:
            yield f"relationships: {unknown} institution(s) that are not registered"


def _counted(where: str, counts: dict[str, int] | Counter[str]) -> Iterator[str]:
    for what, count in counts.items():
        if count:
            yield f"{where}: {count} {what}"


class _Tally:
    """How many entries, and a sum of their digests: equal for equal sets of entries."""

    __slots__ = ("count", "digest")

    def __init__(self) -> None:
        self.count = 0
        self.digest = 0

    def add(self, entry: bytes) -> None:
        self.count += 1
        self.digest = (self.digest + int.from_bytes(_blake(entry), "big")) % _MODULUS


def _blake(entry: bytes) -> bytes:
    return hashlib.blake2b(entry, digest_size=16).digest()


_MODULUS = 1 << 128


def _compared(
    where: str, actual: _Tally, expected: _Tally, *, missing: str, extra: str, different: str
) -> Iterator[str]:
    if actual.count < expected.count:
        yield f"{where}: {expected.count - actual.count} {missing}"
    elif actual.count > expected.count:
        yield f"{where}: {actual.count - expected.count} {extra}"
    elif actual.digest != expected.digest:
        yield f"{where}: {different}"
