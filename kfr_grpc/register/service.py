"""The register's use cases: reporting, ending, listing and looking up relationships.

Requests arrive as plain values (strings for IDs and dates, exactly as the caller sent
them). Each use case validates every item first and reports every bad one in a single
``InvalidArgument``; only then does it open one write transaction, so a request is
applied entirely or not at all.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from kfr_grpc.clock import Clock
from kfr_grpc.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied
from kfr_grpc.register.customer_ids import CustomerId, parse_customer_id
from kfr_grpc.register.model import (
    EndResult,
    Institution,
    InstitutionRelation,
    ReportResult,
    RequestRecord,
    Role,
    RoleHistory,
)
from kfr_grpc.register.periods import end_period, start_period
from kfr_grpc.register.reports import (
    ItemProblem,
    ParsedReport,
    ReportItem,
    Row,
    ValidatedReports,
    validate_reports,
    validate_rows,
)
from kfr_grpc.register.values import (
    InvalidValue,
    Violations,
    parse_account_number,
    parse_date,
    parse_uuid,
    require_text,
)
from kfr_grpc.store import Store, StoreTxn, StoreView

MAX_ITEMS_PER_CALL = 1000

__all__ = ["EndItem", "ItemProblem", "Register", "ReportItem"]


@dataclass(frozen=True, slots=True)
class EndItem:
    customer_id: str
    role: Role | None  # None: every role the customer holds at the institution
    end_date: str = ""


@dataclass(frozen=True, slots=True)
class LookupQuery:
    """A validated Lookup request."""

    customer: CustomerId
    first_day: date
    last_day: date
    owner_only: bool
    legal_mandate: str
    case_reference: uuid.UUID


@dataclass(frozen=True, slots=True)
class CollectionAccountQuery:
    """A validated LookupCollectionAccount request."""

    account: str
    legal_mandate: str
    case_reference: uuid.UUID


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """One chunk of a bulk load: what was written and what was rejected."""

    registered: int
    already_registered: int
    rejected: list[ItemProblem]


@dataclass(frozen=True, slots=True)
class _ParsedEnd:
    customer: CustomerId
    roles: tuple[Role, ...]
    end: date


class Register:
    """The register's rules over a ``Store``. Thread-safe; its only state is a memo of
    institution names."""

    def __init__(self, store: Store, clock: Clock, *, test_mode: bool) -> None:
        self._store = store
        self._clock = clock
        self._test_mode = test_mode
        # An institution's name never changes once registered (adding it again under
        # another name is refused), so lookups can remember names instead of reading them.
        self._names: dict[str, str] = {}

    # --- institution service ------------------------------------------------------------

    def report(self, institution: str, items: Sequence[ReportItem]) -> ReportResult:
        """Registers relationships for ``institution``: all of them, or none."""
        self._require_registered(institution, open_for_reports=True)
        _check_batch_size("relationships", items)
        validated = self.validate_reports(items)
        if validated.problems:
            raise InvalidArgument([p.violation("relationships") for p in validated.problems])
        parsed = validated.parsed
        with self._store.write() as txn:
            _require_registered_in(txn, institution, open_for_reports=True)
            registered, conflicts = _apply_reports(txn, institution, parsed)
            if conflicts:
                raise InvalidArgument([problem.violation("relationships") for problem in conflicts])
        return ReportResult(registered=registered, already_registered=len(parsed) - registered)

    def report_chunk(self, institution: str, items: Sequence[ReportItem]) -> ChunkResult:
        """One chunk of a bulk load: writes the valid items in one transaction and rejects
        the others item by item (the unary ``report`` is all or nothing instead)."""
        check_chunk_size(items)
        return self.apply_chunk(institution, self.validate_reports(items))

    def validate_reports(self, items: Sequence[ReportItem]) -> ValidatedReports:
        return validate_reports(items, allow_synthetic=self._test_mode, today=self._clock.today())

    def row_validator(self) -> Callable[[Sequence[Row]], tuple[list, list]]:
        """``validate_rows`` with this register's settings, picklable: a bulk load runs it
        in a helper process (then ``ValidatedReports.from_rows`` and ``apply_chunk``)."""
        return functools.partial(
            validate_rows,
            allow_synthetic=self._test_mode,
            today_ordinal=self._clock.today().toordinal(),
        )

    def apply_chunk(self, institution: str, validated: ValidatedReports) -> ChunkResult:
        """Writes the valid items of a validated chunk in one transaction."""
        with self._store.write() as txn:
            _require_registered_in(txn, institution, open_for_reports=True)
            registered, conflicts = _apply_reports(txn, institution, validated.parsed)
        valid = sum(item is not None for item in validated.parsed) - len(conflicts)
        rejected = sorted(validated.problems + conflicts, key=lambda problem: problem.index)
        return ChunkResult(registered, valid - registered, rejected)

    def end(self, institution: str, items: Sequence[EndItem]) -> EndResult:
        """Ends relationships of ``institution``: all of them, or none."""
        self._require_registered(institution, open_for_reports=True)
        parsed = self._parse_end(items)
        ended = 0
        with self._store.write() as txn:
            _require_registered_in(txn, institution, open_for_reports=True)
            conflicts = Violations()
            missing: list[FieldViolation] = []
            for index, item in enumerate(parsed):
                histories = {
                    role: txn.history(item.customer, institution, role) for role in item.roles
                }
                histories = {role: history for role, history in histories.items() if history}
                if not histories:
                    missing.append(
                        FieldViolation(f"endings[{index}]", _NO_SUCH_RELATIONSHIP, "NOT_FOUND")
                    )
                    continue
                changed_any = False
                for role, history in histories.items():
                    updated = conflicts.parse(
                        f"endings[{index}].end_date", end_period, history, item.end
                    )
                    if updated is not None and updated[1]:
                        txn.put_history(item.customer, institution, role, updated[0])
                        changed_any = True
                ended += changed_any
            conflicts.raise_if_any()
            if missing:
                raise NotFound(missing)
        return EndResult(ended=ended, already_ended=len(parsed) - ended)

    def list_own(self, institution: str, customer_id: str) -> list[RoleHistory]:
        """The institution's own role histories with one customer, owner first."""
        self._require_registered(institution)
        violations = Violations()
        customer = violations.parse("customer_id", self._parse_customer, customer_id)
        violations.raise_if_any()
        with self._store.read() as view:
            histories = list(view.relationships(customer, institution))
        return sorted(histories, key=lambda history: history.role.value)

    # --- lookup service -----------------------------------------------------------------

    def parse_lookup(
        self,
        *,
        customer_id: str,
        from_date: str,
        to_date: str,
        owner_only: bool,
        legal_mandate: str,
        account_info_request_id: str,
    ) -> LookupQuery:
        today = self._clock.today()
        violations = Violations()
        customer = violations.parse("customer_id", self._parse_customer, customer_id)
        first = violations.parse("from_date", parse_date, from_date, today)
        last = violations.parse("to_date", parse_date, to_date, today)
        mandate = violations.parse("legal_mandate", require_text, legal_mandate)
        case = violations.parse("account_info_request_id", parse_uuid, account_info_request_id)
        if first is not None and last is not None and last < first:
            violations.add("to_date", "is before from_date", "DATE_RANGE_INVERTED")
        violations.raise_if_any()
        return LookupQuery(customer, first, last, owner_only, mandate, case)

    def lookup(self, query: LookupQuery) -> list[InstitutionRelation]:
        """Institutions where the customer had a relationship overlapping the query's window."""
        roles_by_org: dict[str, set[Role]] = {}
        active_orgs: set[str] = set()
        with self._store.read() as view:
            for history in view.relationships(query.customer):
                if query.owner_only and history.role is not Role.OWNER:
                    continue
                in_window = [
                    p for p in history.periods if p.overlaps(query.first_day, query.last_day)
                ]
                if not in_window:
                    continue
                roles_by_org.setdefault(history.institution, set()).add(history.role)
                if any(period.ongoing_at(query.last_day) for period in in_window):
                    active_orgs.add(history.institution)
            names = {org: self._institution_name(view, org) for org in roles_by_org}
        return [
            InstitutionRelation(
                org_number=org,
                name=names[org],
                roles=tuple(sorted(roles, key=lambda role: role.value)),
                active=org in active_orgs,
            )
            for org, roles in sorted(roles_by_org.items())
        ]

    def parse_collection_account_lookup(
        self, *, account_number: str, legal_mandate: str, account_info_request_id: str
    ) -> CollectionAccountQuery:
        violations = Violations()
        account = violations.parse("account_number", parse_account_number, account_number)
        mandate = violations.parse("legal_mandate", require_text, legal_mandate)
        case = violations.parse("account_info_request_id", parse_uuid, account_info_request_id)
        violations.raise_if_any()
        return CollectionAccountQuery(account, mandate, case)

    def lookup_collection_account(self, query: CollectionAccountQuery) -> list[Institution]:
        """The institution using ``query.account`` as a collection account, if any."""
        with self._store.read() as view:
            owner = view.collection_account_owner(query.account)
            institution = view.institution(owner) if owner is not None else None
        return [institution] if institution is not None else []

    # --- request log ------------------------------------------------------------------------

    def record_request(self, record: RequestRecord) -> None:
        with self._store.write() as txn:
            txn.put_request_record(record)

    def request_log(self, institution: str, correlation_id: str) -> list[RequestRecord]:
        """The records of ``institution``'s calls under ``correlation_id``, oldest first."""
        self._require_registered(institution)
        violations = Violations()
        parsed = violations.parse("correlation_id", parse_uuid, correlation_id)
        violations.raise_if_any()
        with self._store.read() as view:
            records = view.request_records(str(parsed))
        own = [record for record in records if record.institution == institution]
        if not own:
            raise NotFound(
                [
                    FieldViolation(
                        "correlation_id",
                        "no call of your institution is recorded under it",
                        "NOT_FOUND",
                    )
                ]
            )
        return own

    def _institution_name(self, view: StoreView, org_number: str) -> str:
        name = self._names.get(org_number)
        if name is None:
            institution = view.institution(org_number)
            if institution is None:
                return ""
            name = self._names[org_number] = institution.name
        return name

    # --- parsing --------------------------------------------------------------------------

    def _parse_customer(self, raw: str) -> CustomerId:
        return parse_customer_id(raw, allow_synthetic=self._test_mode, today=self._clock.today())

    def _parse_end(self, items: Sequence[EndItem]) -> list[_ParsedEnd]:
        today = self._clock.today()
        _check_batch_size("endings", items)
        violations = Violations()
        parsed = []
        for index, item in enumerate(items):
            path = f"endings[{index}]"
            customer = violations.parse(
                f"{path}.customer_id", self._parse_customer, item.customer_id
            )
            end = violations.parse(f"{path}.end_date", parse_date, item.end_date, today)
            roles = (item.role,) if item.role is not None else tuple(Role)
            if customer is not None and end is not None:
                parsed.append(_ParsedEnd(customer, roles, end))
        violations.raise_if_any()
        return parsed

    def _require_registered(self, institution: str, *, open_for_reports: bool = False) -> None:
        with self._store.read() as view:
            _require_registered_in(view, institution, open_for_reports=open_for_reports)


# The write transaction of a chunk is held in memory until it commits: this bounds the
# server's memory whatever a client sends (see README, Performance).
MAX_ITEMS_PER_CHUNK = 20_000

_NO_SUCH_RELATIONSHIP = "no such relationship at this institution (never reported, or removed)"


def _check_batch_size(field: str, items: Sequence[object]) -> None:
    if not items:
        raise InvalidArgument.field(field, "must hold at least one item", "BATCH_EMPTY")
    if len(items) > MAX_ITEMS_PER_CALL:
        raise InvalidArgument.field(
            field,
            f"holds {len(items)} items; at most {MAX_ITEMS_PER_CALL} are allowed per call",
            "BATCH_TOO_LARGE",
        )


def check_chunk_size(items: Sequence[object]) -> None:
    if len(items) > MAX_ITEMS_PER_CHUNK:
        raise InvalidArgument.field(
            "relationships",
            f"holds {len(items)} items; at most {MAX_ITEMS_PER_CHUNK} per chunk",
            "BATCH_TOO_LARGE",
        )


def _apply_reports(
    txn: StoreTxn, institution: str, parsed: Sequence[ParsedReport | None]
) -> tuple[int, list[ItemProblem]]:
    """Starts a period for each parsed item (in order, so repeats see earlier ones).

    Returns how many items started a period, and the items in conflict with the
    customer's history, which are not written.
    """
    registered = 0
    conflicts = []
    for index, item in enumerate(parsed):
        if item is None:
            continue
        history = txn.history(item.customer, institution, item.role)
        try:
            updated, changed = start_period(history, item.start)
        except InvalidValue as error:
            conflicts.append(ItemProblem(index, "start_date", str(error), error.code))
            continue
        if changed:
            txn.put_history(item.customer, institution, item.role, updated)
            registered += 1
    return registered, conflicts


def _require_registered_in(
    view: StoreView, institution: str, *, open_for_reports: bool = False
) -> None:
    registered = view.institution(institution)
    if registered is None:
        raise PermissionDenied(
            f"institution {institution} is not registered with the register; "
            "ask the register operator to register it before reporting"
        )
    if open_for_reports and registered.closed_on is not None:
        raise PermissionDenied(
            f"institution {institution} was closed on {registered.closed_on.isoformat()} "
            "and can no longer report"
        )
