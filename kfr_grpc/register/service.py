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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date

from kfr_grpc.clock import Clock
from kfr_grpc.errors import InvalidArgument, NotFound, PermissionDenied, Rejection
from kfr_grpc.register.bulk import STREAM, BulkLoad, ChunkOutcome
from kfr_grpc.register.corrections import (
    CorrectionResult,
    CorrectItem,
    RetractItem,
    apply_corrections,
    parse_corrections,
    parse_retractions,
)
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind, parse_customer_id
from kfr_grpc.register.model import (
    KINDS_IN_ORDER,
    ROLES_IN_ORDER,
    CallInfo,
    EndResult,
    Institution,
    InstitutionRelation,
    KindChoice,
    LookupAnswer,
    OwnershipType,
    Participant,
    ProductKind,
    ReportResult,
    RequestRecord,
    Role,
    RoleChoice,
    RoleHistory,
    UnknownNumber,
    UnknownRole,
    in_role_order,
)
from kfr_grpc.register.periods import end_period, start_period
from kfr_grpc.register.reconcile import GroupOutcome, Reconciliation
from kfr_grpc.register.reports import (
    KIND_OF_VALUE,
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
    parse_or_raise,
    parse_uuid,
    require_text,
)

__all__ = ["CorrectItem", "EndItem", "Register", "ReportItem", "RetractItem"]

_NO_SUCH_RELATIONSHIP = "no such relationship at this institution (never reported, or removed)"


@dataclass(frozen=True, slots=True)
class EndItem:
    customer_id: str
    role: RoleChoice  # None: every role the customer holds at the institution
    end_date: str = ""
    kind: KindChoice | None = None  # None: every kind


@dataclass(frozen=True, slots=True)
class LookupQuery:
    """A validated Lookup request."""

    customer: CustomerId
    first_day: date
    last_day: date
    owner_only: bool
    legal_mandate: str
    case_reference: uuid.UUID
    only_primary_owner: bool = False


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
    kinds: tuple[ProductKind, ...]
    end: date


class Register:
    """The register's rules over a ``Storage``. Thread-safe; its only state is a memo of
    the participants."""

    def __init__(self, storage: Storage, clock: Clock, *, test_mode: bool) -> None:
        self._storage = storage
        self._clock = clock
        self._test_mode = test_mode
        # The participants by org number, with the store's institutions version they were
        # read at: lookups take names and join dates from it instead of reading them.
        self._participants: tuple[int, dict[str, Participant]] = (-1, {})

    @property
    def reads_wait(self) -> bool:
        """Whether a read may wait on the network (see ``Storage.reads_wait``)."""
        return self._storage.reads_wait

    # --- institution service ------------------------------------------------------------

    def report(self, call: CallInfo, items: Sequence[ReportItem]) -> ReportResult:
        """Registers relationships for ``call.institution``: all of them, or none."""
        parsed, rejections = self.row_validator()([item.row() for item in items])

        def work(txn: WriteTxn) -> ReportResult:
            institution = _require_open_for_reports(txn, call.institution)
            check_batch_size("relationships", items)
            _raise_rejections(rejections, "relationships")
            self._note_first_report(txn, institution)
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

    def retract(self, call: CallInfo, items: Sequence[RetractItem]) -> CorrectionResult:
        """Removes periods the institution reported by mistake: all of them, or none."""
        parsed = parse_retractions(
            items, allow_synthetic=self._test_mode, today=self._clock.today()
        )
        return self._correct(call, "retractions", items, parsed, "retracted")

    def correct(self, call: CallInfo, items: Sequence[CorrectItem]) -> CorrectionResult:
        """Corrects start or end dates of periods, or reopens ended ones: all, or none."""
        parsed = parse_corrections(
            items, allow_synthetic=self._test_mode, today=self._clock.today()
        )
        return self._correct(call, "corrections", items, parsed, "corrected")

    def _correct(self, call, within: str, items, parsed, changed_name: str) -> CorrectionResult:
        def work(txn: WriteTxn) -> CorrectionResult:
            _require_open_for_reports(txn, call.institution)
            check_batch_size(within, items)
            parsed.raise_if_any(within)
            today = self._clock.today()
            result = apply_corrections(txn, call.institution, parsed.targets, today, within)
            counts = result.counts(changed_name)
            txn.put_request_record(call.record(self._clock.now(), "OK", counts=counts))
            return result

        return self._storage.write(work)

    def list_own(self, call: CallInfo, customer_id: str) -> list[RoleHistory]:
        """The institution's own relationships with one customer: owner first, then by
        kind."""
        rejections = Rejections()
        customer = rejections.parse("customer_id", self._parse_customer, customer_id)
        with self._storage.read() as view:
            _require_registered(view, call.institution)
            rejections.raise_if_any()
            histories = list(view.relationships(customer, call.institution))
        histories.sort(key=_role_then_kind)
        counts = {"relationships": len(histories)}
        self._storage.write(
            lambda txn: txn.put_request_record(call.record(self._clock.now(), "OK", counts=counts))
        )
        return histories

    def own_relation(
        self, call: CallInfo, customer_id: str, from_date: str, to_date: str
    ) -> LookupAnswer:
        """The institution's own relationship with one customer in a window, as a Lookup
        would show it (no institution: none in the window)."""
        today = self._clock.today()
        rejections = Rejections()
        customer = rejections.parse("customer_id", self._parse_customer, customer_id)
        first = rejections.parse("from_date", parse_date, from_date, today)
        last = rejections.parse("to_date", parse_date, to_date, today)
        _check_window(rejections, first, last)
        with self._storage.read() as view:
            institution = _require_registered(view, call.institution)
            rejections.raise_if_any()
            assert first is not None and last is not None
            found = _in_window(view.relationships(customer, call.institution), first, last)
        counts = {"relationships": len(found)}
        self._storage.write(
            lambda txn: txn.put_request_record(call.record(self._clock.now(), "OK", counts=counts))
        )
        window = found.get(call.institution)
        relations = (window.relation(call.institution, institution.name),) if window else ()
        return LookupAnswer(relations, ends_today=last == today)

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
            self._note_first_report(txn, _require_open_for_reports(txn, call.institution))
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

    # --- reconciliation -----------------------------------------------------------------

    def start_reconciliation(
        self, call: CallInfo, *, apply: bool, as_of: str, max_ends: int = 0
    ) -> Reconciliation:
        """A reconciliation of ``call.institution``'s set as of ``as_of`` (empty: today)."""
        day = parse_or_raise("as_of_date", parse_date, as_of, self._clock.today())
        if max_ends < 0:
            raise InvalidArgument.field("max_ends", "may not be negative", "INVALID_VALUE")
        with self._storage.read() as view:
            if apply:
                _require_open_for_reports(view, call.institution)
            else:
                _require_registered(view, call.institution)
        return Reconciliation(call, apply, day, max_ends)

    def reconcile_chunks(
        self, reconciliation: Reconciliation, chunks: Sequence[ValidatedRows]
    ) -> None:
        """Compares one group of validated chunks (with ``apply``, reports what is lacking)."""
        if reconciliation.apply:

            def work(txn: WriteTxn) -> GroupOutcome:
                institution = _require_open_for_reports(txn, reconciliation.call.institution)
                self._note_first_report(txn, institution)
                return reconciliation.compared(txn, chunks)

            outcome = self._storage.write(work)
        else:
            with self._storage.read() as view:
                outcome = reconciliation.compared(view, chunks)
        reconciliation.merge(outcome)

    def finish_reconciliation(self, reconciliation: Reconciliation) -> None:
        """After the whole set: counts (and with ``apply`` ends) what was not sent."""
        reconciliation.finish(self._storage, self._clock.now)

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
        only_primary_owner: bool = False,
    ) -> LookupQuery:
        today = self._clock.today()
        rejections = Rejections()
        customer = rejections.parse("customer_id", self._parse_customer, customer_id)
        first = rejections.parse("from_date", parse_date, from_date, today)
        last = rejections.parse("to_date", parse_date, to_date, today)
        mandate = rejections.parse("legal_mandate", require_text, legal_mandate)
        case = rejections.parse("account_info_request_id", parse_uuid, account_info_request_id)
        _check_window(rejections, first, last)
        rejections.raise_if_any()
        return LookupQuery(customer, first, last, owner_only, mandate, case, only_primary_owner)

    def lookup(self, query: LookupQuery) -> LookupAnswer:
        """Institutions where the customer had a relationship overlapping the query's window,
        and the participants that joined after the window began."""
        with self._storage.read() as view:
            found = _in_window(
                view.relationships(query.customer), query.first_day, query.last_day,
                owner_only=query.owner_only,
            )  # fmt: skip
            participants = self._current_participants(view)
        relations = tuple(
            found[org].relation(org, participants[org].name if org in participants else "")
            for org in sorted(found)
            if not query.only_primary_owner or found[org].primary
        )
        joined_after = tuple(
            p
            for p in participants.values()
            if p.joined_on is not None and p.joined_on > query.first_day
        )
        return LookupAnswer(relations, joined_after, query.last_day == self._clock.today())

    def participants(self) -> tuple[Participant, ...]:
        """Every registered institution as agencies see it, by org number."""
        with self._storage.read() as view:
            return tuple(self._current_participants(view).values())

    def _current_participants(self, view: ReadTxn) -> dict[str, Participant]:
        """The participants by org number (in order), read again only when an institution
        record has changed."""
        version = view.institutions_version()
        known_version, known = self._participants
        if version != known_version:
            known = {i.org_number: _participant(view, i) for i in view.institutions()}
            self._participants = (version, known)
        return known

    def _note_first_report(self, txn: WriteTxn, institution: Institution) -> None:
        """Keeps the day the institution joined: its first report. An institution with
        data from before the register kept that day gets the day it was registered, as
        the participants list shows it (``_participant``)."""
        if institution.first_report_on is not None:
            return
        joined = self._clock.today()
        if txn.has_relationships(institution.org_number):
            joined = institution.registered_on
        txn.put_institution(replace(institution, first_report_on=joined))

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
            kinds = _kinds_to_end(item.kind, parsed, index)
            if customer is not None and end is not None and roles and kinds:
                parsed.items.append(_ParsedEnd(index, customer, roles, kinds, end))
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


def _kinds_to_end(
    kind: KindChoice | None, rejections: Rejections, index: int
) -> tuple[ProductKind, ...]:
    if kind is None:
        return KINDS_IN_ORDER
    if isinstance(kind, UnknownNumber):
        rejections.add("kind", f"has unknown value {kind.number}", "KIND_UNKNOWN", index)
        return ()
    return (kind,)


def _role_then_kind(history: RoleHistory) -> tuple[int, int]:
    return ROLES_IN_ORDER.index(history.role), KINDS_IN_ORDER.index(history.kind)


def _check_window(rejections: Rejections, first: date | None, last: date | None) -> None:
    if first is not None and last is not None and last < first:
        rejections.add("to_date", "is before from_date", "DATE_RANGE_INVERTED")


def _in_window(
    histories: Iterable[RoleHistory], first: date, last: date, *, owner_only: bool = False
) -> dict[str, _InWindow]:
    """What the histories hold in the window [first, last], by institution."""
    found: dict[str, _InWindow] = {}
    for history in histories:
        if owner_only and history.role is not Role.OWNER:
            continue
        in_window = [period for period in history.periods if period.overlaps(first, last)]
        if in_window:
            ongoing = any(period.ongoing_at(last) for period in in_window)
            found.setdefault(history.institution, _InWindow()).add(history, ongoing)
    return found


class _InWindow:
    """What a Lookup found at one institution in its window."""

    __slots__ = ("active", "active_payment_account", "primary", "roles", "unknown")

    def __init__(self) -> None:
        self.roles: set[Role] = set()
        self.active = self.primary = self.unknown = self.active_payment_account = False

    def add(self, history: RoleHistory, ongoing: bool) -> None:
        self.roles.add(history.role)
        self.active = self.active or ongoing
        if history.role is not Role.OWNER:
            return  # a disponent is never the primary owner, whatever the product
        if history.kind is ProductKind.PAYMENT_ACCOUNT:
            self.primary = True
            self.active_payment_account = self.active_payment_account or ongoing
        elif history.kind is ProductKind.UNSPECIFIED:
            self.unknown = True

    def relation(self, org: str, name: str) -> InstitutionRelation:
        ownership = (
            OwnershipType.PRIMARY_OWNER
            if self.primary
            else OwnershipType.UNKNOWN
            if self.unknown
            else OwnershipType.NOT_PRIMARY_OWNER
        )
        return InstitutionRelation(
            org, name, in_role_order(self.roles), self.active, ownership,
            self.active_payment_account,
        )  # fmt: skip


def _participant(view: ReadTxn, institution: Institution) -> Participant:
    joined = institution.first_report_on
    if joined is None and view.has_relationships(institution.org_number):
        joined = institution.registered_on  # data from before the first report was kept
    return Participant(
        institution.org_number, institution.name, joined, institution.closed_on,
        bool(institution.collection_accounts),
    )  # fmt: skip


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
        digits, is_person, role_value, start_day, kind_value = row
        customer = CustomerId(digits, _PERSON if is_person else _ORGANISATION)
        role, kind = ROLE_OF_VALUE[role_value], KIND_OF_VALUE[kind_value]
        start = days.get(start_day) or days.setdefault(start_day, date.fromordinal(start_day))
        history = txn.history(customer, institution, role, kind)
        try:
            updated, changed = start_period(history, start)
        except InvalidValue as error:
            conflicts.append(Rejection("start_date", str(error), error.code, index))
            continue
        if changed:
            txn.put_history(customer, institution, role, kind, updated)
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
        histories = {
            (role, kind): txn.history(item.customer, institution, role, kind)
            for role in item.roles
            for kind in item.kinds
        }
        histories = {place: history for place, history in histories.items() if history}
        if not histories:
            missing.append(Rejection(f"endings[{item.index}]", _NO_SUCH_RELATIONSHIP, "NOT_FOUND"))
            continue
        changed_any = False
        for (role, kind), history in histories.items():
            updated = conflicts.parse("end_date", end_period, history, item.end, item=item.index)
            if updated is not None and updated[1]:
                txn.put_history(item.customer, institution, role, kind, updated[0])
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


def _require_open_for_reports(view: ReadTxn, institution: str) -> Institution:
    registered = _require_registered(view, institution)
    if registered.closed_on is not None:
        raise PermissionDenied(
            f"institution {institution} was closed on {registered.closed_on.isoformat()} "
            "and can no longer report"
        )
    return registered
