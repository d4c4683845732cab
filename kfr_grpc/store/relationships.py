"""Relationship records and their indexes: reading and writing role histories.

A record is one (customer, institution, role, product kind) under a pseudonymised key (``codec``);
``by_institution`` lists an institution's records (closure), ``ended_by_date`` every
ended period by its end date (retention), and ``meta`` keeps the count of records with
an active period. Writers keep all three in step with the records.

While a pseudonym key is being rotated a record may sit under an older pseudonym
version: readers look under every version the keyring holds, and a writer moves the
record it changes to the current version.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterator
from datetime import date
from typing import NamedTuple

from kfr_grpc.errors import CorruptRecord, FailedPrecondition
from kfr_grpc.register.customer_ids import CustomerId
from kfr_grpc.register.model import (
    Corrections,
    History,
    ProductKind,
    Role,
    RoleHistory,
    StoredHistory,
    is_active,
)
from kfr_grpc.store import codec
from kfr_grpc.store.layout import (
    ACTIVE_KEY,
    BY_INSTITUTION,
    ENDED_BY_DATE,
    FORMAT_KEY,
    META,
    RELATIONSHIPS,
    STORE_FORMAT,
    TAGGED_FORMAT,
    TAGGED_FORMATS,
    meta_number,
)
from kfr_grpc.store.txn import TxnBase, WriteTxnBase

log = logging.getLogger("kfr.store")


class Record(NamedTuple):
    """A stored relationship: its key, institution, history, by-institution slot and
    corrections (a tuple: one is made per relationship a write touches)."""

    key: bytes
    institution: str
    history: History
    slot: int
    corrections: Corrections = ()


class RelationshipReads(TxnBase):
    def relationship_count(self) -> int:
        """How many (customer, institution, role, kind) records the store holds."""
        return self._txn.stat(self._db[RELATIONSHIPS])["entries"]

    def active_relationship_count(self) -> int:
        """How many of them have an active period (kept up to date by every write)."""
        if self._txn.get(ACTIVE_KEY, db=self._db[META]) is None:
            return self.count_active()  # a store from before the count was kept
        return meta_number(self._txn, self._db, ACTIVE_KEY)

    def count_active(self) -> int:
        """The active count by a scan of every record."""
        active = 0
        for key, sealed in self._txn.cursor(db=self._db[RELATIONSHIPS]):
            active += is_active(self._decoded(key, sealed).history)
        return active

    def relationships(
        self, customer: CustomerId, institution: str | None = None
    ) -> Iterator[RoleHistory]:
        """Every role history of ``customer`` (at ``institution``, if given): range reads
        over the customer's records (a few), each opened."""
        for version, pseudonymiser in self._crypto.newest_first:
            prefix = codec.relationship_prefix(version, pseudonymiser.pseudonym(customer.digits))
            for key, sealed in self._range(RELATIONSHIPS, prefix):
                record = self._decoded(key, sealed)
                if institution is None or record.institution == institution:
                    yield RoleHistory(
                        record.institution, record.role, record.kind, record.history,
                        record.corrections,
                    )  # fmt: skip

    def history(
        self, customer: CustomerId, institution: str, role: Role, kind: ProductKind
    ) -> History:
        """The periods of one relationship; empty if never reported."""
        found = self._locate(customer, institution, role, kind)
        return found.history if found is not None else ()

    def history_and_ref(
        self, customer: CustomerId, institution: str, role: Role, kind: ProductKind
    ) -> tuple[History, int | None]:
        """``history``, and the relationship's reference within its institution (its
        by-institution slot; None if never reported)."""
        found = self._locate(customer, institution, role, kind)
        return (found.history, found.slot) if found is not None else ((), None)

    def corrections(
        self, customer: CustomerId, institution: str, role: Role, kind: ProductKind
    ) -> Corrections:
        """The corrections made to one relationship (none if never reported)."""
        found = self._locate(customer, institution, role, kind)
        return found.corrections if found is not None else ()

    def institution_histories(
        self, institution: str, skip: Container[int] | None = None
    ) -> Iterator[StoredHistory]:
        """Every relationship of ``institution``, through the by-institution index, but
        those whose reference (slot) is in ``skip``: not even opened."""
        for _, key in self._institution_entries(institution, skip):
            stored = self._stored_history(key)
            if stored is None:
                raise CorruptRecord("the institution index names a relationship that is gone")
            yield stored

    def has_relationships(self, institution: str) -> bool:
        """Whether the store holds any relationship of ``institution``."""
        return next(self._institution_entries(institution), None) is not None

    def _institution_entries(
        self, institution: str, skip: Container[int] | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(index key, relationship key) of every by-institution entry of ``institution``
        whose slot is not in ``skip``."""
        for prefix in self._institution_prefixes(institution):
            for index_key, value in self._range(BY_INSTITUTION, prefix):
                if skip is not None and codec.slot_of(index_key) in skip:
                    continue
                if codec.is_legacy_slot_key(index_key):
                    if len(prefix) == len(codec.org_key(institution)):
                        yield index_key, value
                elif len(prefix) != len(codec.org_key(institution)):
                    yield index_key, self._open(BY_INSTITUTION, index_key, value)

    def _institution_prefixes(self, institution: str) -> list[bytes]:
        """The by-institution prefixes ``institution``'s entries may be under: one per
        pseudonym version, and its org number while legacy entries may remain."""
        data = codec.institution_tag_data(institution)
        prefixes = [
            codec.institution_prefix(version, self._memo_tag(version, data))
            for version, _ in self._crypto.newest_first
        ]
        if self._legacy:
            prefixes.append(codec.org_key(institution))
        return prefixes

    def expired(self, cutoff: date) -> Iterator[StoredHistory]:
        """Each relationship with a period that ended before ``cutoff``, once (at the index
        entry of its earliest such end), through the ended-periods index."""
        cursor = self._txn.cursor(db=self._db[ENDED_BY_DATE])
        first_kept = codec.day_key(cutoff)
        positioned = cursor.first()
        while positioned and cursor.key() < first_kept:
            index_key = cursor.key()
            day = codec.day_of(index_key)
            stored = self._stored_history(self._ended_relationship(index_key, cursor.value()))
            if stored is None or all(period.end != day for period in stored.periods):
                positioned = self._stale_index_entry(cursor)
                continue
            earliest = min(p.end for p in stored.periods if p.end is not None and p.end < cutoff)
            if day == earliest:
                yield stored
            positioned = cursor.next()

    def _ended_relationship(self, index_key: bytes, value: bytes) -> bytes:
        """The relationship key an ended-by-date entry names."""
        if codec.is_legacy_ended_key(index_key):
            return index_key[4:]
        return self._open(ENDED_BY_DATE, index_key, value)

    def _stale_index_entry(self, cursor) -> bool:
        """An ended-periods entry whose period is gone (never expected): passed over."""
        log.warning("the ended-periods index holds an entry without its period")
        return cursor.next()

    def _decoded(self, key: bytes, sealed: bytes) -> codec.DecodedRelationship:
        return codec.decode_relationship(key, self._open(RELATIONSHIPS, key, sealed))

    def _stored_history(self, key: bytes) -> StoredHistory | None:
        sealed = self._txn.get(key, db=self._db[RELATIONSHIPS])
        if sealed is None:
            return None
        record = self._decoded(key, sealed)
        return StoredHistory(
            record.customer, record.institution, record.role, record.kind, record.history,
            record.corrections,
        )  # fmt: skip

    def _locate(
        self, customer: CustomerId, institution: str, role: Role, kind: ProductKind
    ) -> Record | None:
        """Where the record is stored (under whichever pseudonym version), with its history."""
        for key in self._candidate_keys(customer, institution, role, kind):
            found = self._read_record(key)
            if found is not None:
                return found
        return None

    def _candidate_keys(
        self,
        customer: CustomerId,
        institution: str,
        role: Role,
        kind: ProductKind,
        *,
        skip: bytes = b"",
    ) -> Iterator[bytes]:
        """Every key the record may be under: each pseudonym version's, newest first, and
        its legacy key while those may remain (the legacy layout knew no kinds)."""
        legacy = self._legacy and kind is ProductKind.UNSPECIFIED
        for version, pseudonymiser in self._crypto.newest_first:
            pseudonym = pseudonymiser.pseudonym(customer.digits)
            key = self._relationship_key(version, pseudonym, institution, role, kind)
            if key != skip:
                yield key
            if legacy:
                yield codec.legacy_relationship_key(version, pseudonym, institution, role)

    def _relationship_key(
        self, version: int, pseudonym: bytes, institution: str, role: Role, kind: ProductKind
    ) -> bytes:
        data = codec.relationship_tag_data(pseudonym, self._place(institution, role, kind))
        return codec.relationship_key(version, pseudonym, self._tag(version, data))

    def _place(self, institution: str, role: Role, kind: ProductKind) -> bytes:
        """``codec.place``, remembered for the transaction (a bulk load has one)."""
        place = self._places.get((institution, role, kind))
        if place is None:
            place = self._places[(institution, role, kind)] = codec.place(institution, role, kind)
        return place

    def _read_record(self, key: bytes) -> Record | None:
        sealed = self._txn.get(key, db=self._db[RELATIONSHIPS])
        if sealed is None:
            return None
        record = self._decoded(key, sealed)
        return Record(key, record.institution, record.history, record.slot, record.corrections)

    def _slot_key(self, record: bytes, institution: str, slot: int) -> bytes:
        """The by-institution key of the relationship ``record`` (legacy or tagged)."""
        if codec.is_legacy_relationship(record):
            return codec.slot_key(codec.org_key(institution), slot)
        version = record[0]
        tag = self._memo_tag(version, codec.institution_tag_data(institution))
        return codec.slot_key(codec.institution_prefix(version, tag), slot)

    def _ended_keys(self, record: bytes, history: History) -> set[bytes]:
        """The ended-by-date keys of ``history``'s ended periods (legacy or tagged)."""
        ends = {period.end for period in history if period.end is not None}
        if codec.is_legacy_relationship(record):
            return {codec.legacy_ended_key(day, record) for day in ends}
        return {
            codec.ended_key(day, self._tag(record[0], codec.ended_tag_data(record, day)))
            for day in ends
        }


class RelationshipWrites(WriteTxnBase, RelationshipReads):
    def _begin_relationship_writes(self) -> None:
        # (customer digits, institution, role, kind) -> [its key under the current
        # pseudonym version, the record as this transaction has it (None: none)]. A bulk
        # load reads and then writes each item: one memo, filled by the read, serves the
        # write.
        self._known: dict[tuple[str, str, Role, ProductKind], list] = {}
        self._format_current = False  # whether meta says STORE_FORMAT (checked once)
        self._pseudonym = self._crypto.pseudonymisers[self.pseudonym_version].pseudonym
        self._next_slots: dict[str, int] = {}
        self._active_delta = 0

    def put_history(
        self,
        customer: CustomerId,
        institution: str,
        role: Role,
        kind: ProductKind,
        history: History,
        corrections: Corrections | None = None,
    ) -> None:
        """Stores ``history`` (an empty one deletes the record), keeping the indexes in step.

        ``corrections`` replace the record's; None keeps those about a period that is
        still there (a retention or closure keeps what it did not remove). A record found
        under an older pseudonym version, or in the legacy layout, moves to the current key.
        """
        known = self._known_record(customer, institution, role, kind)
        key, found = known
        was_active = found is not None and is_active(found.history)
        if not history:
            if found is not None:
                self._delete_record(found)
            self._active_delta -= was_active
            known[1] = None
            return
        moved = found is not None and found.key != key
        if moved:
            self._delete_record(found)
        slot = found.slot if found is not None else self._next_slot(institution)
        previous = found.history if found is not None and not moved else ()
        if corrections is None:
            corrections = _still_about(found.corrections, history) if found is not None else ()
        place = self._place(institution, role, kind)
        value = codec.encode_relationship(customer, place, history, slot, corrections)
        if not self._format_current and not codec.is_plain_relationship(value):
            self._mark_kinds_format()
        self._put(RELATIONSHIPS, key, value)
        self._active_delta += is_active(history) - was_active
        if found is None or moved:
            self._put(BY_INSTITUTION, self._slot_key(key, institution, slot), key)
        self._update_ended_index(key, previous, history)
        known[1] = Record(key, institution, history, slot, corrections)

    def _mark_kinds_format(self) -> None:
        """A record of format 4 (kinds, corrections) is about to be written: a store of
        format 5 becomes format 6, which an older kfr refuses instead of misreading. A
        store still in the legacy layout (formats 3, 4) takes none: it must be migrated
        first (its format mark must keep saying that legacy entries remain)."""
        store_format = self._txn.get(FORMAT_KEY, db=self._db[META])
        if store_format not in TAGGED_FORMATS:
            raise FailedPrecondition(
                f"the store is of format {store_format.decode()}, which holds no product kinds "
                "or corrections: the operator must run `kfr migrate` first"
            )
        if store_format == TAGGED_FORMAT:
            self._txn.put(FORMAT_KEY, STORE_FORMAT, db=self._db[META])
        self._format_current = True

    def flush_active_count(self) -> None:
        """Adds this transaction's change of the active count to ``meta`` (before commit)."""
        if self._active_delta:
            active = meta_number(self._txn, self._db, ACTIVE_KEY) + self._active_delta
            self._txn.put(ACTIVE_KEY, str(active).encode(), db=self._db[META])
            self._active_delta = 0

    def _update_ended_index(self, key: bytes, previous: History, history: History) -> None:
        if not (_any_ended(previous) or _any_ended(history)):
            return  # the common case of a bulk load: nothing ended, nothing to index
        old_ended, new_ended = self._ended_keys(key, previous), self._ended_keys(key, history)
        for index_key in old_ended - new_ended:
            self._delete(ENDED_BY_DATE, index_key)
        for index_key in new_ended - old_ended:
            self._put(ENDED_BY_DATE, index_key, key)

    def _stale_index_entry(self, cursor) -> bool:
        log.warning("removing an ended-periods index entry whose period is gone")
        return cursor.delete()  # moves on to the next entry

    def _locate(
        self, customer: CustomerId, institution: str, role: Role, kind: ProductKind
    ) -> Record | None:
        """As in a view, remembered for the transaction; the current version is tried first."""
        return self._known_record(customer, institution, role, kind)[1]

    def _known_record(
        self, customer: CustomerId, institution: str, role: Role, kind: ProductKind
    ) -> list:
        """[current key, record or None] of (customer, institution, role, kind), remembered."""
        memo = (customer.digits, institution, role, kind)
        known = self._known.get(memo)
        if known is None:
            pseudonym = self._pseudonym(customer.digits)
            key = self._relationship_key(self.pseudonym_version, pseudonym, institution, role, kind)
            found = self._read_record(key)
            if found is None and (len(self._crypto.pseudonymisers) > 1 or self._legacy):
                found = self._locate_elsewhere(customer, institution, role, kind, key)
            known = self._known[memo] = [key, found]
        return known

    def _locate_elsewhere(
        self, customer: CustomerId, institution: str, role: Role, kind: ProductKind, current: bytes
    ) -> Record | None:
        """The record under an older pseudonym version or the legacy layout."""
        for key in self._candidate_keys(customer, institution, role, kind, skip=current):
            found = self._read_record(key)
            if found is not None:
                return found
        return None

    def _next_slot(self, institution: str) -> int:
        """The next free by-institution slot: one past the institution's last."""
        slot = self._next_slots.get(institution)
        if slot is None:
            slot = self._last_slot(institution) + 1
        self._next_slots[institution] = slot + 1
        return slot

    def _last_slot(self, institution: str) -> int:
        """The institution's highest slot in use (under any prefix), or -1."""
        last = -1
        for prefix in self._institution_prefixes(institution):
            key = self._last_with_prefix(BY_INSTITUTION, prefix)
            if key is not None and len(key) == len(prefix) + 8:
                last = max(last, codec.slot_of(key))
        return last

    def _delete_record(self, record: Record) -> None:
        self._delete(RELATIONSHIPS, record.key)
        self._delete(BY_INSTITUTION, self._slot_key(record.key, record.institution, record.slot))
        for index_key in self._ended_keys(record.key, record.history):
            self._delete(ENDED_BY_DATE, index_key)


def _still_about(corrections: Corrections, history: History) -> Corrections:
    """The corrections that still name a period of ``history`` (or none: retractions)
    while any period remains."""
    if not corrections or not history:
        return ()
    starts = {period.start for period in history}
    return tuple(c for c in corrections if c.period_start is None or c.period_start in starts)


def _any_ended(history: History) -> bool:
    for period in history:  # noqa: SIM110 - a loop: cheaper than any() on 0-2 periods
        if period.end is not None:
            return True
    return False
