"""The operator's use cases: registering and closing institutions, collection accounts,
and retention (purging what the agreement says must go)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from kfr_grpc.clock import Clock
from kfr_grpc.errors import AlreadyExists, InvalidArgument, NotFound, Rejection
from kfr_grpc.register.customer_ids import parse_org_number
from kfr_grpc.register.model import Institution, StoredHistory
from kfr_grpc.register.periods import end_period
from kfr_grpc.register.retention import kept_after_retention, retention_cutoff
from kfr_grpc.register.storage import ReadTxn, Storage, WriteTxn
from kfr_grpc.register.values import (
    InvalidValue,
    Rejections,
    parse_account_number,
    parse_date,
    parse_or_raise,
    require_text,
)

DEFAULT_REQUEST_LOG_DAYS = 90
_PURGE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class PurgeResult:
    cutoff: date  # periods that ended before this day are removed
    periods_removed: int
    relationships_removed: int  # relationships left without any period
    request_records_removed: int


@dataclass(frozen=True, slots=True)
class _Expired:
    """What retention takes: periods, and relationships left with none."""

    periods: int = 0
    relationships: int = 0

    def plus(self, stored: StoredHistory, cutoff: date) -> _Expired:
        kept = kept_after_retention(stored.periods, cutoff)
        return _Expired(
            self.periods + len(stored.periods) - len(kept), self.relationships + (not kept)
        )


class Operations:
    """Operator commands over a ``Storage``; each runs in its own transaction(s)."""

    def __init__(
        self, storage: Storage, clock: Clock, *, request_log_days: int = DEFAULT_REQUEST_LOG_DAYS
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._request_log_days = request_log_days

    # --- institutions ---------------------------------------------------------------------------

    def add_institution(self, org_number: str, name: str) -> tuple[Institution, bool]:
        """Registers an institution; returns it and whether it is new.

        Idempotent: adding an institution again under the same name changes nothing.
        """
        rejections = Rejections()
        org = rejections.parse("org_number", parse_org_number, org_number)
        clean_name = rejections.parse("name", require_text, name)
        rejections.raise_if_any()

        def work(txn: WriteTxn) -> tuple[Institution, bool]:
            existing = txn.institution(org)
            if existing is not None and existing.name == clean_name:
                return existing, False
            if existing is not None:
                raise AlreadyExists(f"institution {org} is already registered as {existing.name!r}")
            institution = Institution(org, clean_name, self._clock.today())
            txn.put_institution(institution)
            return institution, True

        return self._storage.write(work)

    def institutions(self) -> list[Institution]:
        with self._storage.read() as view:
            return list(view.institutions())

    def institution(self, org_number: str) -> Institution:
        org = parse_or_raise("org_number", parse_org_number, org_number)
        with self._storage.read() as view:
            return _existing(view, org)

    def close_institution(self, org_number: str, day: str) -> int:
        """The institution ceased to exist on ``day``: every active relationship becomes
        historical with that end date, in one transaction, and it can no longer report.
        Returns how many relationships that ended.

        Costs what the institution has (its index), not what the register holds.
        """
        org = parse_or_raise("org_number", parse_org_number, org_number)
        closed_on = parse_or_raise("date", parse_date, day, self._clock.today())

        def work(txn: WriteTxn) -> int:
            institution = _existing(txn, org)
            if institution.closed_on is not None:
                raise AlreadyExists(
                    f"institution {org} was already closed on {institution.closed_on.isoformat()}"
                )
            ended = sum(
                _end_at_closure(txn, stored, closed_on) for stored in txn.institution_histories(org)
            )
            txn.put_institution(replace(institution, closed_on=closed_on))
            return ended

        return self._storage.write(work)

    def set_collection_accounts(self, org_number: str, accounts: Sequence[str]) -> Institution:
        """Replaces the institution's list of collection account numbers."""
        org = parse_or_raise("org_number", parse_org_number, org_number)
        rejections = Rejections()
        parsed = [
            rejections.parse(f"accounts[{index}]", parse_account_number, account)
            for index, account in enumerate(accounts)
        ]
        rejections.raise_if_any()
        wanted = tuple(dict.fromkeys(parsed))

        def work(txn: WriteTxn) -> Institution:
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

        return self._storage.write(work)

    # --- retention ------------------------------------------------------------------------------

    def purge(self, *, dry_run: bool = False) -> PurgeResult:
        """Deletes periods that ended more than ten years ago (relationships left without
        periods disappear) and request log records past their retention.

        Costs what it removes: the store yields only relationships with an expired period.
        With ``dry_run`` it only counts.
        """
        cutoff = retention_cutoff(self._clock.today())
        expired = self._count_expired(cutoff) if dry_run else self._remove_expired(cutoff)
        records = self._expire_request_log(self._clock.now(), apply=not dry_run)
        return PurgeResult(cutoff, expired.periods, expired.relationships, records)

    def _count_expired(self, cutoff: date) -> _Expired:
        total = _Expired()
        with self._storage.read() as view:
            for stored in view.expired(cutoff):
                total = total.plus(stored, cutoff)
        return total

    def _remove_expired(self, cutoff: date) -> _Expired:
        def batch(txn: WriteTxn) -> tuple[_Expired, int]:
            removed = _Expired()
            found = list(itertools.islice(txn.expired(cutoff), _PURGE_BATCH))
            for stored in found:
                kept = kept_after_retention(stored.periods, cutoff)
                txn.put_history(stored.customer, stored.institution, stored.role, stored.kind, kept)
                removed = removed.plus(stored, cutoff)
            return removed, len(found)

        total = _Expired()
        while True:
            removed, looked_at = self._storage.write(batch)
            total = _Expired(
                total.periods + removed.periods, total.relationships + removed.relationships
            )
            if looked_at < _PURGE_BATCH:
                return total

    def _expire_request_log(self, now: datetime, *, apply: bool) -> int:
        before = now - timedelta(days=self._request_log_days)
        if not apply:
            with self._storage.read() as view:
                return view.count_request_records_before(before)
        total = 0
        while True:
            expired = self._storage.write(
                lambda txn: txn.expire_request_records(before, _PURGE_BATCH)
            )
            total += expired
            if expired < _PURGE_BATCH:
                return total


def _end_at_closure(txn: WriteTxn, stored: StoredHistory, closed_on: date) -> bool:
    try:
        history, changed = end_period(stored.periods, closed_on)
    except InvalidValue:
        raise InvalidArgument.field(
            "date",
            "is before the start of an active relationship of the institution",
            "END_BEFORE_START",
        ) from None
    if changed:
        txn.put_history(stored.customer, stored.institution, stored.role, stored.kind, history)
    return changed


def _existing(view: ReadTxn, org: str) -> Institution:
    institution = view.institution(org)
    if institution is None:
        raise NotFound(
            [Rejection("org_number", f"institution {org} is not registered", "NOT_FOUND")]
        )
    return institution
