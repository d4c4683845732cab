"""Reconciliation: an institution's complete set of current relationships against what
the register holds as active for it.

The set arrives in chunks, validated as a bulk load's (``reports.validate_rows``). Each
group of chunks is compared in one transaction: a sent item whose relationship (customer,
role, kind) is active matches; one that is not is missing, and with ``apply`` it is
reported in the same transaction. Once the whole set has arrived, ``finish`` counts the
active relationships that were not sent (those begun after the set's day aside) and, with
``apply``, ends them on that day, in batches. Nothing is ended before the set is complete,
and every step is idempotent: a reconciliation cut off anywhere is simply run again.

Memory: one bit per relationship the institution has reported (which of them were sent,
by their references: ``ReadTxn.history_and_ref``), and at most ``MAX_REJECTED_LISTED``
positions and rejections. The scan at the end opens only the relationships not sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from kfr_grpc.errors import Rejection
from kfr_grpc.register.bulk import MAX_REJECTED_LISTED, STREAM
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
from kfr_grpc.register.model import (
    KINDS_IN_ORDER,
    ROLES_IN_ORDER,
    CallInfo,
    ProductKind,
    Role,
    StoredHistory,
    is_active,
)
from kfr_grpc.register.periods import end_period, start_period
from kfr_grpc.register.reports import KIND_OF_VALUE, ROLE_OF_VALUE, ParsedRow, ValidatedRows
from kfr_grpc.register.storage import ReadTxn, Storage, WriteTxn
from kfr_grpc.register.values import InvalidValue

_END_BATCH = 10_000  # relationships ended per transaction
# What comparing one sent item found.
_MATCHED, _MISSING, _REGISTERED = "matched", "missing", "registered"
_PERSON, _ORGANISATION = CustomerKind.PERSON, CustomerKind.ORGANISATION
_ROLE_NUMBER = {role: number for number, role in enumerate(ROLES_IN_ORDER)}
_KIND_NUMBER = {kind: number for number, kind in enumerate(KINDS_IN_ORDER)}
_ROLES_BY_NUMBER = dict(enumerate(ROLES_IN_ORDER))
_KINDS_BY_NUMBER = dict(enumerate(KINDS_IN_ORDER))


def relationship_number(digits: str, is_person: bool, role: Role, kind: ProductKind) -> int:
    """One relationship of an institution as one integer (a set of a million of them is
    tens of megabytes, not hundreds): ID digits, person or not, role and kind."""
    return ((int(digits) * 2 + is_person) * 2 + _ROLE_NUMBER[role]) * 4 + _KIND_NUMBER[kind]


def _relationship_of(number: int) -> tuple[CustomerId, Role, ProductKind]:
    rest, kind = divmod(number, 4)
    rest, role = divmod(rest, 2)
    digits, is_person = divmod(rest, 2)
    customer = (
        CustomerId(f"{digits:011d}", _PERSON)
        if is_person
        else CustomerId(f"{digits:09d}", _ORGANISATION)
    )
    return customer, _ROLES_BY_NUMBER[role], _KINDS_BY_NUMBER[kind]


class RefSet:
    """A set of relationship references (small non-negative integers, dense per
    institution) as a bitmap: a million take 125 KB."""

    def __init__(self) -> None:
        self._bits = bytearray()

    def add(self, ref: int) -> None:
        byte, bit = divmod(ref, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte + 1 - len(self._bits) + len(self._bits) // 2))  # amortised
        self._bits[byte] |= 1 << bit

    def update(self, refs: Iterable[int]) -> None:
        for ref in refs:
            self.add(ref)

    def __contains__(self, ref: object) -> bool:
        if not isinstance(ref, int):
            return False
        byte, bit = divmod(ref, 8)
        return byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)


@dataclass(frozen=True, slots=True)
class GroupOutcome:
    """What comparing one group of chunks found (merged into the reconciliation after its
    transaction committed, so a transaction that runs again counts nothing twice)."""

    items: int
    chunks: int
    matched: int
    missing: tuple[int, ...]  # positions in the group
    rejections: tuple[Rejection, ...]  # items named by their place in the group
    registered: int
    sent: tuple[int, ...]  # references of the relationships now active and sent


@dataclass
class Reconciliation:
    """One reconciliation's state; used by one call at a time (not thread-safe)."""

    call: CallInfo
    apply: bool
    as_of: date
    max_ends: int = 0  # with apply: end nothing if more were not sent (0: no limit)
    items: int = 0
    chunks: int = 0
    matched: int = 0
    missing_count: int = 0
    missing_positions: list[int] = field(default_factory=list)
    rejected_count: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    registered: int = 0
    not_sent: int = 0
    ended: int = 0
    ending_withheld: bool = False  # apply ended nothing: the set had rejected items
    sent: RefSet = field(default_factory=lambda: RefSet())

    @property
    def missing_truncated(self) -> bool:
        return self.missing_count > len(self.missing_positions)

    @property
    def rejected_truncated(self) -> bool:
        return self.rejected_count > len(self.rejections)

    def counts(self) -> dict[str, int]:
        counts = {
            "matched": self.matched, "missing": self.missing_count,
            "not_sent": self.not_sent, "rejected": self.rejected_count, "chunks": self.chunks,
        }  # fmt: skip
        if self.apply:
            counts.update(registered=self.registered, ended=self.ended)
            counts.update(ending_withheld=int(self.ending_withheld))
        return counts

    # --- comparing the set, group by group -----------------------------------------------

    def compared(self, txn: ReadTxn | WriteTxn, chunks: Sequence[ValidatedRows]) -> GroupOutcome:
        """Compares (and with ``apply`` reports, in ``txn``) one group of validated chunks;
        ``merge`` the outcome once ``txn`` has committed."""
        matched, registered = 0, 0
        missing: list[int] = []
        rejections: list[Rejection] = []
        sent: list[int] = []
        offset = 0
        for parsed, rejected in chunks:
            rejections.extend(r._replace(item=offset + r.item) for r in rejected)
            for index, row in enumerate(parsed):
                if row is None:
                    continue
                found, ref = self._compare_item(txn, row)
                if found is not _MATCHED:
                    missing.append(offset + index)
                if isinstance(found, Rejection):
                    rejections.append(found._replace(item=offset + index))
                    continue
                matched += found is _MATCHED
                registered += found is _REGISTERED
                if ref is not None:
                    sent.append(ref)
            offset += len(parsed)
        return GroupOutcome(
            offset, len(chunks), matched, tuple(missing), tuple(rejections), registered,
            tuple(sent),
        )  # fmt: skip

    def _compare_item(
        self, txn: ReadTxn | WriteTxn, row: ParsedRow
    ) -> tuple[str | Rejection, int | None]:
        """``_MATCHED`` when the relationship is active; else ``_MISSING``, or with
        ``apply`` (``txn`` is then a write) ``_REGISTERED`` (a new period begun, from the
        item's start or the set's day, whichever is earlier) or the rejection of that
        start. With it, the relationship's reference when it is active now."""
        digits, is_person, role_value, start_day, kind_value = row
        customer = CustomerId(digits, _PERSON if is_person else _ORGANISATION)
        role, kind = ROLE_OF_VALUE[role_value], KIND_OF_VALUE[kind_value]
        institution = self.call.institution
        history, ref = txn.history_and_ref(customer, institution, role, kind)
        if is_active(history):
            return _MATCHED, ref
        if not self.apply:
            return _MISSING, None
        start = min(date.fromordinal(start_day), self.as_of)
        try:
            updated, _ = start_period(history, start)
        except InvalidValue as error:
            return Rejection("start_date", str(error), error.code), None
        txn.put_history(customer, institution, role, kind, updated)  # type: ignore[union-attr]
        return _REGISTERED, txn.history_and_ref(customer, institution, role, kind)[1]

    def merge(self, outcome: GroupOutcome) -> None:
        base = self.items
        room = MAX_REJECTED_LISTED - len(self.missing_positions)
        self.missing_positions.extend(base + p for p in outcome.missing[: max(room, 0)])
        room = MAX_REJECTED_LISTED - len(self.rejections)
        self.rejections.extend(
            r._replace(item=base + r.item) for r in outcome.rejections[: max(room, 0)]
        )
        self.items += outcome.items
        self.chunks += outcome.chunks
        self.matched += outcome.matched
        self.missing_count += len(outcome.missing)
        self.rejected_count += len(outcome.rejections)
        self.registered += outcome.registered
        self.sent.update(outcome.sent)

    # --- after the whole set -------------------------------------------------------------

    def finish(self, storage: Storage, now: Callable[[], datetime]) -> None:
        """Counts the active relationships not sent and, with ``apply``, a set without
        rejected items and no more than ``max_ends`` of them, ends them on the set's day, in
        batches; the call's request record
        goes in the last transaction (``now()`` its time).

        A rejected item names no relationship the register can match, so its relationship
        counts as not sent: ending those would end what the institution did send. So a set
        with rejected items ends nothing (``ending_withheld``): fix them and run again.
        """
        with storage.read() as view:
            not_sent = [
                relationship_number(s.customer.digits, s.customer.kind is _PERSON, s.role, s.kind)
                for s in view.institution_histories(self.call.institution, skip=self.sent)
                if self._not_sent(s)
            ]
        self.not_sent = len(not_sent)
        too_many = self.max_ends > 0 and len(not_sent) > self.max_ends
        self.ending_withheld = (
            self.apply and bool(not_sent) and (bool(self.rejected_count) or too_many)
        )
        to_end = not_sent if self.apply and not self.ending_withheld else []
        batches = [to_end[i : i + _END_BATCH] for i in range(0, len(to_end), _END_BATCH)] or [[]]
        for number, batch in enumerate(batches, 1):
            last = number == len(batches)
            self.ended += storage.write(lambda txn, b=batch, e=last: self._end(txn, b, e, now))

    def _not_sent(self, stored: StoredHistory) -> bool:
        """(Not in the set, and) active, begun on or before the set's day."""
        periods = stored.periods
        return bool(periods) and periods[-1].end is None and periods[-1].start <= self.as_of

    def _end(
        self, txn: WriteTxn, numbers: Sequence[int], last: bool, now: Callable[[], datetime]
    ) -> int:
        """Ends the relationships ``numbers`` still active (and begun by the set's day);
        the last batch also records the call."""
        ended = 0
        for number in numbers:
            customer, role, kind = _relationship_of(number)
            history = txn.history(customer, self.call.institution, role, kind)
            if not is_active(history) or history[-1].start > self.as_of:
                continue  # changed since the scan
            updated, changed = end_period(history, self.as_of)
            if changed:
                txn.put_history(customer, self.call.institution, role, kind, updated)
                ended += 1
        if last:
            counts = self.counts() | ({"ended": self.ended + ended} if self.apply else {})
            rejected = tuple(r.located(STREAM) for r in self.rejections)
            txn.put_request_record(self.call.record(now(), "OK", counts=counts, rejected=rejected))
        return ended
