"""A walk over the whole store that finds every inconsistency: ``kfr doctor --verify``.

Sealed values authenticate themselves (AES-GCM with their database and key as
associated data); the indexes and ``meta`` are not sealed (they must stay cheap range
reads), so they are checked against the records they are derived from. An index entry
deleted, added or changed, a record whose key does not fit its content, a count in
``meta`` that disagrees: each is found and named by kind and number, never by customer.
Deleting ``ended_by_date`` entries, the way to stop retention quietly, shows as
"relationships with ended periods missing from ended_by_date".
"""

from __future__ import annotations

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
    meta_number,
)
from kfr_grpc.store.txn import TxnBase


class IntegrityReads(TxnBase):
    def problems(self) -> Iterator[str]:
        """Every inconsistency in the store, one line each (none: all is well)."""
        yield from self._meta_problems()
        yield from self._sealed_value_problems()
        yield from self._relationship_problems()

    def _meta_problems(self) -> Iterator[str]:
        for name, key in (("seal", SEAL_VERSION_KEY), ("pseudonym", PSEUDONYM_VERSION_KEY)):
            version = meta_number(self._txn, self._db, key)
            known = (
                self._crypto.keyring.seal.keys
                if name == "seal"
                else self._crypto.keyring.pseudonym.keys
            )
            if version not in known:
                yield f"meta: new writes use {name} key version {version}, which the keyring lacks"

    def _sealed_value_problems(self) -> Iterator[str]:
        for database in SEALED_DATABASES:
            failed = 0
            for key, sealed in self._txn.cursor(db=self._db[database]):
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
        expected_slots: dict[bytes, bytes] = {}
        expected_ended: set[bytes] = set()
        institutions: set[str] = set()
        found = Counter[str]()
        active = 0
        for key, sealed in self._txn.cursor(db=self._db[RELATIONSHIPS]):
            try:
                customer, history, slot = codec.decode_relationship(
                    self._open(RELATIONSHIPS, key, sealed)
                )
                version, institution, _ = codec.split_relationship_key(key)
            except CorruptRecord:
                continue  # counted with the sealed values
            except (ValueError, KeyError, struct.error):
                found["records or keys of an unknown layout"] += 1
                continue
            pseudonymiser = self._crypto.pseudonymisers.get(version)
            if (
                pseudonymiser is None
                or codec.relationship_prefix(version, pseudonymiser.pseudonym(customer.digits))
                != key[: 1 + codec.PSEUDONYM_BYTES]
            ):
                found["key does not fit its record"] += 1
            if not history:
                found["empty history"] += 1
            expected_slots[codec.slot_key(key, slot)] = key
            expected_ended |= codec.ended_keys(key, history)
            institutions.add(institution)
            active += is_active(history)
        yield from _counted("relationships", found)
        yield from self._index_problems(expected_slots, expected_ended)
        yield from self._institution_problems(institutions)
        stored_active = self._txn.get(ACTIVE_KEY, db=self._db[META])
        if stored_active is not None and int(stored_active) != active:
            yield f"meta: the active count says {int(stored_active)}, the records {active}"

    def _index_problems(
        self, expected_slots: dict[bytes, bytes], expected_ended: set[bytes]
    ) -> Iterator[str]:
        slots = dict(self._txn.cursor(db=self._db[BY_INSTITUTION]))
        missing = sum(1 for slot in expected_slots if slot not in slots)
        wrong = sum(1 for slot, key in slots.items() if expected_slots.get(slot, key) != key)
        extra = sum(1 for slot in slots if slot not in expected_slots)
        yield from _counted(
            "by_institution",
            {
                "relationships missing from it (closure would leave them active)": missing,
                "entries naming another relationship": wrong,
                "entries without their relationship": extra,
            },
        )
        ended = {key for key, _ in self._txn.cursor(db=self._db[ENDED_BY_DATE])}
        yield from _counted(
            "ended_by_date",
            {
                "ended periods missing from it (retention would never remove them)": len(
                    expected_ended - ended
                ),
                "entries without their ended period": len(ended - expected_ended),
            },
        )

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
