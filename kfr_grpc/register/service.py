"""The register's use cases for institutions and agencies: reporting, ending, listing and
looking up relationships, and the request log.

Requests arrive as plain values (strings for IDs and dates, exactly as the caller sent
them). Each write validates every item first, reporting every bad field in a single
``InvalidArgument``, and then runs in one write transaction, which also holds the call's
request record: a call is applied entirely, with its record, or not at all. A call that
fails leaves nothing; its caller records the refusal (``record_refusal``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from kfr_grpc.clock import Clock
from kfr_grpc.errors import NotFound, PermissionDenied, Rejection
from kfr_grpc.register.bulk import STREAM, BulkLoad, ChunkOutcome
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind, parse_customer_id
from kfr_grpc.register.model import (
    ROLES_IN_ORDER,
    CallInfo,
    EndResult,
    Institution,
    InstitutionRelation,
    ReportResult,
    RequestRecord,
    Role,
    RoleChoice,
    RoleHistory,
    UnknownRole,
    in_role_order,
)
from kfr_grpc.register.periods import end_period, start_period
from kfr_grpc.register.reports import (
    ROLE_OF_VALUE,
    ParsedRow,
    ReportItem,
    Row,
    ValidatedRows,
    check_batch_size,
    validate_rows,
)
from kfr_grpc.register.storage import ReadTxn, Storage, WriteTxn
from kfr_grpc.register.values import (
    InvalidValue,
    Rejections,
    parse_account_number,
    parse_date,
    parse_uuid,
    require_text,
)

__all__ = ["EndItem", "Register", "ReportItem"]

_NO_SUCH_RELATIONSHIP = "no such relationship at this institution (never reported, or removed)"


@dataclass(frozen=True, slots=True)
class EndItem:
    customer_id: str
    role: RoleChoice  # None: every role the customer holds at the institution
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
class _ParsedEnd:
    index: int  # in the request
    customer: CustomerId
    roles: tuple[Role, ...]
    end: date


class Register:
    """The register's rules over a ``Storage``. Thread-safe; its only state is a memo of
    institution names."""

    def __init__(self, storage: Storage, clock: Clock, *, test_mode: bool) -> None:
        self._storage = storage
        self._clock = clock
        self._test_mode = test_mode
        # An institution's name never changes once registered (adding it again under
        # another name is refused), so lookups can remember names instead of reading them.
        self._names: dict[str, str] = {}

    @property
    def reads_wait(self) -> bool:
        """Whether a read may wait on the network (see ``Storage.reads_wait``)."""
        return self._storage.reads_wait

    # --- institution service ------------------------------------------------------------

    def report(self, call: CallInfo, items: Sequence[ReportItem]) -> ReportResult:
        """Registers relationships for ``call.institution``: all of them, or none."""
        parsed, rejections = self.row_validator()([item.row() for item in items])

        def work(txn: WriteTxn) -> ReportResult:
            _require_open_for_reports(txn, call.institution)
            check_batch_size("relationships", items)
            _raise_rejections(rejections, "relationships")
            registered, conflicts = _apply_reports(txn, call.institution, parsed)
            _raise_rejections(conflicts, "relationships")
            result = ReportResult(registered, len(items) - registered)
            txn.put_request_record(call.record(self._clock.now(), "OK", counts=result.counts()))
            return result

        return self._storage.write(work)

    def end(self, call: CallInfo, items: Sequence[EndItem]) -> EndResult:
        """Ends relationships of ``call.institution``: all of them, or none."""
        parsed = self._parse_end(items)

        def work(txn: WriteTxn) -> EndResult:
            _require_open_for_reports(txn, call.institution)
            check_batch_size("endings", items)
            parsed.raise_if_any("endings")
            ended = _apply_endings(txn, call.institution, parsed.items)
            result = EndResult(ended, len(items) - ended)
            txn.put_request_record(call.record(self._clock.now(), "OK", counts=result.counts()))
            return result

        return self._storage.write(work)

    def list_own(self, call: CallInfo, customer_id: str) -> list[RoleHistory]:
        """The institution's own role histories with one customer, owner first."""
        rejections = Rejections()
        customer = rejections.parse("customer_id", self._parse_customer, customer_id)
        with self._storage.read() as view:
            _require_registered(view, call.institution)
            rejections.raise_if_any()
            histories = list(view.relationships(customer, call.institution))
        histories.sort(key=lambda history: ROLES_IN_ORDER.index(history.role))
        counts = {"relationships": len(histories)}
        self._storage.write(
            lambda txn: txn.put_request_record(call.record(self._clock.now(), "OK", counts=counts))
        )
        return histories

    def request_log(self, call: CallInfo, correlation_id: str) -> list[RequestRecord]:
        """The records of the institution's calls under ``correlation_id``, oldest first."""
        rejections = Rejections()
        parsed = rejections.parse("correlation_id", parse_uuid, correlation_id)
        with self._storage.read() as view:
            _require_registered(view, call.institution)
            rejections.raise_if_any()
            records = view.request_records(str(parsed))
        own = [record for record in records if record.institution == call.institution]
        if not own:
            raise NotFound(
                [
                    Rejection(
                        "correlation_id", "no call of your institution is recorded under it",
                        "NOT_FOUND",
                    )
                ]
            )  # fmt: skip
        counts = {"records": len(own)}
        self._storage.write(
            lambda txn: txn.put_request_record(call.record(self._clock.now(), "OK", counts=counts))
        )
        return own

    def record_refusal(
        self, call: CallInfo, status: str, message: str, rejected: tuple[Rejection, ...] = ()
    ) -> None:
        """Records a call that was refused (and so changed nothing), in its own transaction,
        if it was made for a registered institution: an organisation that is not one gets
        no record (it could never read it, and could flood the log with refused calls)."""
        record = call.record(self._clock.now(), status, message, rejected=rejected)

        def work(txn: WriteTxn) -> None:
            if txn.institution(call.institution) is not None:
                txn.put_request_record(record)

        self._storage.write(work)

    # --- bulk load ----------------------------------------------------------------------

    def row_validator(self) -> Callable[[Sequence[Row]], ValidatedRows]:
        """``validate_rows`` with this register's settings, picklable: a bulk load runs it
        in a helper process (then ``apply_chunks``)."""
        return functools.partial(
            validate_rows,
            allow_synthetic=self._test_mode,
            today_ordinal=self._clock.today().toordinal(),
        )

    def apply_chunks(
        self, call: CallInfo, load: BulkLoad, chunks: Sequence[ValidatedRows], *, last: bool
    ) -> BulkLoad:
        """Writes the valid items of validated chunks of a bulk load, in order, in one
        transaction, and rejects the others item by item (``report`` is all or nothing
        instead). The last chunk's transaction also holds the load's request record.
        Returns the load with these chunks counted."""

        def work(txn: WriteTxn) -> BulkLoad:
            _require_open_for_reports(txn, call.institution)
            counted = load
            for parsed, rejections in chunks:
                registered, conflicts = _apply_reports(txn, call.institution, parsed)
                valid = sum(item is not None for item in parsed) - len(conflicts)
                outcome = ChunkOutcome(
                    size=len(parsed),
                    registered=registered,
                    already_registered=valid - registered,
                    rejections=(*rejections, *conflicts),
                )
                counted = counted.plus(outcome)
            if last:
                located = tuple(r.located(STREAM) for r in counted.rejections)
                record = call.record(
                    self._clock.now(), "OK", counts=counted.counts(), rejected=located
                )
                txn.put_request_record(record)
            return counted

        return self._storage.write(work)

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
        rejections = Rejections()
        customer = rejections.parse("customer_id", self._parse_customer, customer_id)
        first = rejections.parse("from_date", parse_date, from_date, today)
        last = rejections.parse("to_date", parse_date, to_date, today)
        mandate = rejections.parse("legal_mandate", require_text, legal_mandate)
        case = rejections.parse("account_info_request_id", parse_uuid, account_info_request_id)
        if first is not None and last is not None and last < first:
            rejections.add("to_date", "is before from_date", "DATE_RANGE_INVERTED")
        rejections.raise_if_any()
        return LookupQuery(customer, first, last, owner_only, mandate, case)

    def lookup(self, query: LookupQuery) -> list[InstitutionRelation]:
        """Institutions where the customer had a relationship overlapping the query's window."""
        roles_by_org: dict[str, set[Role]] = {}
        active_orgs: set[str] = set()
        with self._storage.read() as view:
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
                roles=in_role_order(roles),
                active=org in active_orgs,
            )
            for org, roles in sorted(roles_by_org.items())
        ]

    def parse_collection_account_lookup(
        self, *, account_number: str, legal_mandate: str, account_info_request_id: str
    ) -> CollectionAccountQuery:
        rejections = Rejections()
        account = rejections.parse("account_number", parse_account_number, account_number)
        mandate = rejections.parse("legal_mandate", require_text, legal_mandate)
        case = rejections.parse("account_info_request_id", parse_uuid, account_info_request_id)
        rejections.raise_if_any()
        return CollectionAccountQuery(account, mandate, case)

    def lookup_collection_account(self, query: CollectionAccountQuery) -> list[Institution]:
        """The institution using ``query.account`` as a collection account, if any."""
        with self._storage.read() as view:
            owner = view.collection_account_owner(query.account)
            institution = view.institution(owner) if owner is not None else None
        return [institution] if institution is not None else []

    def _institution_name(self, view: ReadTxn, org_number: str) -> str:
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

    def _parse_end(self, items: Sequence[EndItem]) -> _ParsedEnds:
        today = self._clock.today()
        parsed = _ParsedEnds()
        for index, item in enumerate(items):
            customer = parsed.parse(
                "customer_id", self._parse_customer, item.customer_id, item=index
            )
            end = parsed.parse("end_date", parse_date, item.end_date, today, item=index)
            roles = _roles_to_end(item.role, parsed, index)
            if customer is not None and end is not None and roles:
                parsed.items.append(_ParsedEnd(index, customer, roles, end))
        return parsed


class _ParsedEnds(Rejections):
    """The parsed endings and the rejections found among them."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[_ParsedEnd] = []


def _roles_to_end(role: RoleChoice, rejections: Rejections, index: int) -> tuple[Role, ...]:
    if role is None:
        return ROLES_IN_ORDER
    if isinstance(role, UnknownRole):
        rejections.add("role", f"has unknown value {role.number}", "ROLE_UNKNOWN", index)
        return ()
    return (role,)


def _raise_rejections(rejections: Sequence[Rejection], within: str) -> None:
    collected = Rejections()
    collected.found.extend(rejections)
    collected.raise_if_any(within)


def _apply_reports(
    txn: WriteTxn, institution: str, parsed: Sequence[ParsedRow | None]
) -> tuple[int, list[Rejection]]:
    """Starts a period for each parsed item (in order, so repeats see earlier ones).

    Returns how many items started a period, and the items in conflict with the
    customer's history, which are not written.
    """
    registered = 0
    conflicts = []
    days: dict[int, date] = {}
    for index, row in enumerate(parsed):
        if row is None:
            continue
        digits, is_person, role_value, start_day = row
        customer = CustomerId(digits, _PERSON if is_person else _ORGANISATION)
        role = ROLE_OF_VALUE[role_value]
        start = days.get(start_day) or days.setdefault(start_day, date.fromordinal(start_day))
        history = txn.history(customer, institution, role)
        try:
            updated, changed = start_period(history, start)
        except InvalidValue as error:
            conflicts.append(Rejection("start_date", str(error), error.code, index))
            continue
        if changed:
            txn.put_history(customer, institution, role, updated)
            registered += 1
    return registered, conflicts


_PERSON, _ORGANISATION = CustomerKind.PERSON, CustomerKind.ORGANISATION


def _apply_endings(txn: WriteTxn, institution: str, parsed: Sequence[_ParsedEnd]) -> int:
    """Ends each item's active periods; raises (the transaction then leaves nothing) if
    an item names no relationship or an end date before its period."""
    conflicts = Rejections()
    missing: list[Rejection] = []
    ended = 0
    for item in parsed:
        histories = {role: txn.history(item.customer, institution, role) for role in item.roles}
        histories = {role: history for role, history in histories.items() if history}
        if not histories:
            missing.append(Rejection(f"endings[{item.index}]", _NO_SUCH_RELATIONSHIP, "NOT_FOUND"))
            continue
        changed_any = False
        for role, history in histories.items():
            updated = conflicts.parse("end_date", end_period, history, item.end, item=item.index)
            if updated is not None and updated[1]:
                txn.put_history(item.customer, institution, role, updated[0])
                changed_any = True
        ended += changed_any
    conflicts.raise_if_any("endings")
    if missing:
        raise NotFound(missing)
    return ended


def _require_registered(view: ReadTxn, institution: str) -> Institution:
    registered = view.institution(institution)
    if registered is None:
        raise PermissionDenied(
            f"institution {institution} is not registered with the register; "
            "ask the register operator to register it before reporting"
        )
    return registered


def _require_open_for_reports(view: ReadTxn, institution: str) -> None:
    registered = _require_registered(view, institution)
    if registered.closed_on is not None:
        raise PermissionDenied(
            f"institution {institution} was closed on {registered.closed_on.isoformat()} "
            "and can no longer report"
        )
