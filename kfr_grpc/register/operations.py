"""The operator's use cases: registering and closing institutions, collection accounts,
and retention (purging what the agreement says must go)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import TypeVar

from kfr_grpc.clock import Clock
from kfr_grpc.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from kfr_grpc.register.customer_ids import parse_org_number
from kfr_grpc.register.model import Institution
from kfr_grpc.register.periods import end_period
from kfr_grpc.register.retention import (
    kept_after_retention,
    retention_cutoff,
    without_periods_ended_on,
)
from kfr_grpc.register.values import (
    InvalidValue,
    Violations,
    parse_account_number,
    parse_date,
    require_text,
)
from kfr_grpc.store import Store, StoreTxn, StoreView

_T = TypeVar("_T")

DEFAULT_REQUEST_LOG_DAYS = 90
_PURGE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ClosureResult:
    ended: int  # active relationships made historical
    examined: int  # relationships of the institution looked at


@dataclass(frozen=True, slots=True)
class PurgeResult:
    cutoff: date  # periods that ended before this day are removed
    periods_removed: int
    relationships_removed: int  # relationships left without any period
    request_records_removed: int


class Operations:
    """Operator commands over a ``Store``; each runs in its own transaction(s)."""

    def __init__(
        self, store: Store, clock: Clock, *, request_log_days: int = DEFAULT_REQUEST_LOG_DAYS
    ) -> None:
        self._store = store
        self._clock = clock
        self._request_log_days = request_log_days

    # --- institutions ---------------------------------------------------------------------------

    def add_institution(self, org_number: str, name: str) -> tuple[Institution, bool]:
        """Registers an institution; returns it and whether it is new.

        Idempotent: adding an institution again under the same name changes nothing.
        """
        violations = Violations()
        org = violations.parse("org_number", parse_org_number, org_number)
        clean_name = violations.parse("name", require_text, name)
        violations.raise_if_any()
        with self._store.write() as txn:
            existing = txn.institution(org)
            if existing is not None and existing.name == clean_name:
                return existing, False
            if existing is not None:
                raise AlreadyExists(f"institution {org} is already registered as {existing.name!r}")
            institution = Institution(org, clean_name, self._clock.today())
            txn.put_institution(institution)
        return institution, True

    def institutions(self) -> list[Institution]:
        with self._store.read() as view:
            return list(view.institutions())

    def close_institution(self, org_number: str, day: str) -> ClosureResult:
        """The institution ceased to exist on ``day``: every active relationship becomes
        historical with that end date, in one transaction, and it can no longer report.

        Costs what the institution has (its index), not what the register holds.
        """
        org = _parse_or_raise("org_number", parse_org_number, org_number)
        closed_on = _parse_or_raise("date", parse_date, day, self._clock.today())
        with self._store.write() as txn:
            institution = _existing(txn, org)
            if institution.closed_on is not None:
                raise AlreadyExists(
                    f"institution {org} was already closed on {institution.closed_on.isoformat()}"
                )
            ended = examined = 0
            for stored in txn.institution_histories(org):
                examined += 1
                try:
                    history, changed = end_period(stored.periods, closed_on)
                except InvalidValue:
                    raise InvalidArgument.field(
                        "date",
                        "is before the start of an active relationship of the institution",
                        "END_BEFORE_START",
                    ) from None
                if changed:
                    txn.put_history(stored.customer, org, stored.role, history)
                    ended += 1
            txn.put_institution(replace(institution, closed_on=closed_on))
        return ClosureResult(ended=ended, examined=examined)

    def set_collection_accounts(self, org_number: str, accounts: Sequence[str]) -> Institution:
        """Replaces the institution's list of collection account numbers."""
        org = _parse_or_raise("org_number", parse_org_number, org_number)
        violations = Violations()
        parsed = [
            violations.parse(f"accounts[{index}]", parse_account_number, account)
            for index, account in enumerate(accounts)
        ]
        violations.raise_if_any()
        wanted = tuple(dict.fromkeys(parsed))
        with self._store.write() as txn:
            institution = _existing(txn, org)
            for account in wanted:
                owner = txn.collection_account_owner(account)
                if owner is not None and owner != org:
                    raise AlreadyExists(
                        f"account {account} is already a collection account of institution {owner}"
                    )
            for account in set(institution.collection_accounts) - set(wanted):
                txn.delete_collection_account(account)
            for account in wanted:
                txn.put_collection_account(account, org)
            updated = replace(institution, collection_accounts=wanted)
            txn.put_institution(updated)
        return updated

    # --- retention ------------------------------------------------------------------------------

    def purge(self, *, dry_run: bool = False) -> PurgeResult:
        """Deletes periods that ended more than ten years ago (relationships left without
        periods disappear) and request log records past their retention.

        Costs what it removes: it walks the index of ended periods up to the cutoff, one
        entry per period to remove. With ``dry_run`` it only counts.
        """
        today = self._clock.today()
        cutoff = retention_cutoff(today)
        periods = relationships = 0
        after: bytes | None = None
        while True:
            with self._store.read() if dry_run else self._store.write() as txn:
                batch = txn.ended_entries(cutoff, after, _PURGE_BATCH)
                for index_key, day, key in batch:
                    removed, emptied = _expire(txn, index_key, key, day, cutoff, dry_run=dry_run)
                    periods += removed
                    relationships += emptied
            if len(batch) < _PURGE_BATCH:
                break
            if dry_run:  # nothing was deleted: go on after this batch
                after = batch[-1][0]
        records = self._expire_request_log(self._clock.now(), apply=not dry_run)
        return PurgeResult(cutoff, periods, relationships, records)

    def _expire_request_log(self, now: datetime, *, apply: bool) -> int:
        before = now - timedelta(days=self._request_log_days)
        if not apply:
            with self._store.read() as view:
                return view.count_request_records_before(before)
        total = 0
        while True:
            with self._store.write() as txn:
                expired = txn.expire_request_records(before, _PURGE_BATCH)
            total += expired
            if expired < _PURGE_BATCH:
                return total


def _expire(
    txn: StoreView, index_key: bytes, key: bytes, day: date, cutoff: date, *, dry_run: bool
) -> tuple[int, int]:
    """Removes the periods of one relationship that ended on ``day`` (before the cutoff).

    Returns how many periods that removes, and 1 if the relationship is left with none.
    """
    stored = txn.stored_history(key)
    remaining = without_periods_ended_on(stored.periods, day)
    removed = len(stored.periods) - len(remaining)
    if not dry_run:
        assert isinstance(txn, StoreTxn)
        if removed:
            txn.put_history(stored.customer, stored.institution, stored.role, remaining)
        else:
            txn.drop_ended_entry(index_key)  # an entry without its period: never expected
        return removed, int(removed > 0 and not remaining)
    # Counting only: the relationship goes once its last expired period is counted.
    expired_ends = [p.end for p in stored.periods if p.end is not None and p.end < cutoff]
    emptied = not kept_after_retention(stored.periods, cutoff) and day == max(expired_ends)
    return removed, int(emptied)


def _existing(txn: StoreTxn, org: str) -> Institution:
    institution = txn.institution(org)
    if institution is None:
        raise NotFound(
            [FieldViolation("org_number", f"institution {org} is not registered", "NOT_FOUND")]
        )
    return institution


def _parse_or_raise(field: str, parser: Callable[..., _T], *args: object) -> _T:
    violations = Violations()
    value = violations.parse(field, parser, *args)
    violations.raise_if_any()
    assert value is not None
    return value
