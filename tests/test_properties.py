"""Property tests: ID validation against python-stdnum, and the register's answers against a
simple in-memory model over random histories of Report, End, Retract, Correct, closure and
purge, over roles and product kinds."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from stdnum.exceptions import ValidationError
from stdnum.no import fodselsnummer, orgnr

from kfr_grpc.clock import FixedClock
from kfr_grpc.errors import InvalidArgument, KfrError, NotFound, PermissionDenied
from kfr_grpc.keyring import Keyring
from kfr_grpc.register.corrections import CorrectItem, RetractItem
from kfr_grpc.register.customer_ids import (
    CustomerKind,
    birth_date_of,
    check_digits_hold,
    parse_customer_id,
)
from kfr_grpc.register.model import (
    CorrectionAction,
    CorrectionReason,
    OwnershipType,
    ProductKind,
    Role,
)
from kfr_grpc.register.operations import Operations
from kfr_grpc.register.retention import retention_cutoff
from kfr_grpc.register.service import EndItem, Register, ReportItem
from kfr_grpc.register.values import InvalidValue
from kfr_grpc.store import LmdbStore
from tests.support import by, register_lookup_answer

TODAY = date(2026, 6, 15)

# --- ID validation --------------------------------------------------------------------------


def _accepts(number: str, synthetic: bool = False) -> bool:
    try:
        parse_customer_id(number, allow_synthetic=synthetic, today=TODAY)
    except InvalidValue:
        return False
    return True


def _with_check_digits(body: str) -> str | None:
    first = fodselsnummer.calc_check_digit1(body)
    second = fodselsnummer.calc_check_digit2(body + first)
    return body + first + second if len(first + second) == 2 else None


digits = st.text(alphabet="0123456789", min_size=9, max_size=9)


@given(digits.map(_with_check_digits))
@settings(max_examples=400)
def test_person_numbers_are_accepted_exactly_when_stdnum_and_our_rules_agree(number):
    assume(number is not None)
    day, month = int(number[:2]), int(number[2:4])
    ours = _accepts(number)
    stdnum_valid = fodselsnummer.is_valid(number)  # also judges the birth date by real today
    if ours:
        assert stdnum_valid  # we never accept what stdnum refuses
    if stdnum_valid and month <= 12 and day < 80:
        birth = fodselsnummer.get_birth_date(number)
        assert ours == (birth <= TODAY)  # H-/FH-numbers aside, only the date differs


@given(st.text(alphabet="0123456789", min_size=11, max_size=11))
@settings(max_examples=3000)
def test_check_digits_are_stdnums(number):
    """The register computes a person number's check digits itself (for speed): exactly
    as stdnum does, valid or not."""
    stdnum_holds = fodselsnummer.calc_check_digit1(number) == number[9] and (
        fodselsnummer.calc_check_digit2(number) == number[10]
    )
    assert check_digits_hold(number) == stdnum_holds


@given(
    st.integers(0, 71), st.integers(1, 12), st.integers(0, 99), st.integers(0, 999),
    st.integers(0, 99),
)  # fmt: skip
@settings(max_examples=3000)
def test_birth_dates_are_stdnums(day, month, year, individual, tail):
    """... and its date of birth, D-numbers included, centuries from the individual number."""
    number = f"{day:02d}{month:02d}{year:02d}{individual:03d}{tail:02d}"
    try:
        expected = fodselsnummer.get_birth_date(number)
    except ValidationError:
        expected = None
    assert birth_date_of(number, month) == expected


@given(st.text(alphabet="0123456789", min_size=11, max_size=11))
@settings(max_examples=400)
def test_random_eleven_digits_never_pass_without_stdnum(number):
    if _accepts(number):
        assert fodselsnummer.is_valid(number)


@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
@settings(max_examples=400)
def test_organisation_numbers_follow_stdnum(number):
    assert _accepts(number) == orgnr.is_valid(number)


@given(st.text(max_size=20))
def test_nothing_else_passes_and_no_reason_echoes_the_input(text):
    try:
        customer = parse_customer_id(text, allow_synthetic=True, today=TODAY)
    except InvalidValue as error:
        compact = "".join(text.split())
        assert not (len(compact) > 3 and compact in str(error))
    else:
        assert customer.kind in (CustomerKind.PERSON, CustomerKind.ORGANISATION)
        assert customer.digits in {"".join(text.split())}


# --- the register against a model -----------------------------------------------------------

BANKS = ("311000004", "313000001")
KINDS = (ProductKind.UNSPECIFIED, ProductKind.PAYMENT_ACCOUNT, ProductKind.LOAN)
DAYS_BACK = st.just(0) | st.integers(0, 400)  # today often: the edges of periods matter


def _synthetic_customers() -> list[str]:
    """Three synthetic IDs with valid check digits (month + 80), made at test time."""
    found = []
    for day in range(1, 29):
        number = _with_check_digits(f"{day:02d}8{1 + day % 9}90123")
        if number is not None:
            found.append(number)
        if len(found) == 3:
            return found
    raise AssertionError("could not make synthetic IDs")


def _answers_as_expected(call: Callable[[], object], expected_error: type | None) -> bool:
    """Runs ``call``; asserts it fails with ``expected_error`` or, if None, succeeds.
    True when it succeeded (the model then applies the change)."""
    try:
        call()
    except KfrError as error:
        assert expected_error is not None and isinstance(error, expected_error), error
        return False
    assert expected_error is None
    return True


class RegisterModel(RuleBasedStateMachine):
    """Random Report/End/close/purge/clock moves; after each, every answer must match."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.clock = FixedClock.on(date(2015, 1, 1))
        self.store = LmdbStore.open(
            Path(self.directory.name) / "data", Keyring.generate(), map_size=16 << 20
        )
        self.operations = Operations(self.store, self.clock)
        for bank in BANKS:
            self.operations.add_institution(bank, f"Bank {bank}")
        self.register = Register(self.store, self.clock, test_mode=True)
        self.customers = _synthetic_customers()
        # (customer, bank, role, kind) -> list of [start, end or None]
        self.periods: dict[tuple[str, str, Role, ProductKind], list[list]] = {}
        self.closed: set[str] = set()

    def teardown(self) -> None:
        self.store.close()
        self.directory.cleanup()

    @property
    def today(self) -> date:
        return self.clock.today()

    @rule(days=st.integers(1, 800) | st.integers(3600, 3700))  # past retention, now and then
    def advance_the_clock(self, days):
        self.clock.set(self.clock.now() + timedelta(days=days))

    @rule(c=st.integers(0, 2), bank=st.sampled_from(BANKS), role=st.sampled_from(list(Role)),
          kind=st.sampled_from(KINDS), back=DAYS_BACK)  # fmt: skip
    def report(self, c, bank, role, kind, back):
        customer, start = self.customers[c], self.today - timedelta(days=back)
        key = (customer, bank, role, kind)
        history = self.periods.get(key, [])
        expected_error = None
        if bank in self.closed:
            expected_error = PermissionDenied
        elif history and history[-1][1] is None:
            pass  # already active: a no-op
        elif history and (start < history[-1][1] or start == history[-1][0]):
            expected_error = InvalidArgument  # before the previous end, or on its start
        report = [ReportItem(customer, role, start.isoformat(), kind)]
        if not _answers_as_expected(lambda: self.register.report(by(bank), report), expected_error):
            return
        if not (history and history[-1][1] is None):
            self.periods.setdefault(key, []).append([start, None])

    @rule(c=st.integers(0, 2), bank=st.sampled_from(BANKS), role=st.sampled_from([*Role, None]),
          kind=st.sampled_from([*KINDS, None]), back=DAYS_BACK)  # fmt: skip
    def end(self, c, bank, role, kind, back):
        customer, day = self.customers[c], self.today - timedelta(days=back)
        roles = [role] if role else list(Role)
        kinds = [kind] if kind else list(ProductKind)
        keys = [
            (customer, bank, r, k)
            for r in roles
            for k in kinds
            if self.periods.get((customer, bank, r, k))
        ]
        open_keys = [k for k in keys if self.periods[k][-1][1] is None]
        expected_error = None
        if bank in self.closed:
            expected_error = PermissionDenied
        elif not keys:
            expected_error = NotFound
        elif any(day < self.periods[k][-1][0] for k in open_keys):
            expected_error = InvalidArgument
        ending = [EndItem(customer, role, day.isoformat(), kind)]
        if not _answers_as_expected(lambda: self.register.end(by(bank), ending), expected_error):
            return
        for key in open_keys:
            self.periods[key][-1][1] = day

    @rule(c=st.integers(0, 2), bank=st.sampled_from(BANKS), role=st.sampled_from(list(Role)),
          kind=st.sampled_from(KINDS), which=st.integers(0, 2))  # fmt: skip
    def retract(self, c, bank, role, kind, which):
        key = (self.customers[c], bank, role, kind)
        history = self.periods.get(key, [])
        start = history[which][0] if which < len(history) else date(2014, 1, 1)
        expected_error = PermissionDenied if bank in self.closed else None
        if expected_error is None and which >= len(history):
            expected_error = NotFound
        item = RetractItem(
            key[0], role, kind, start.isoformat(), CorrectionReason.REPORTED_IN_ERROR
        )
        if not _answers_as_expected(
            lambda: self.register.retract(by(bank), [item]), expected_error
        ):
            return
        del history[which]
        if not history:
            del self.periods[key]

    @rule(c=st.integers(0, 2), bank=st.sampled_from(BANKS), role=st.sampled_from(list(Role)),
          kind=st.sampled_from(KINDS), which=st.integers(0, 2),
          change=st.sampled_from([CorrectionAction.START_CORRECTED,
                                  CorrectionAction.END_CORRECTED, CorrectionAction.REOPENED]),
          back=DAYS_BACK)  # fmt: skip
    def correct(self, c, bank, role, kind, which, change, back):
        key = (self.customers[c], bank, role, kind)
        history = self.periods.get(key, [])
        day = self.today - timedelta(days=back)
        start = history[which][0] if which < len(history) else date(2014, 1, 1)
        expected_error, updated = _expected_correction(
            bank in self.closed, history, which, change, day
        )
        new_date = "" if change is CorrectionAction.REOPENED else day.isoformat()
        item = CorrectItem(key[0], role, kind, start.isoformat(), change, new_date,
                           CorrectionReason.WRONG_DATE)  # fmt: skip
        if _answers_as_expected(lambda: self.register.correct(by(bank), [item]), expected_error):
            history[which] = updated

    @precondition(lambda self: len(self.closed) < len(BANKS))
    @rule(bank=st.sampled_from(BANKS), back=st.integers(0, 30))
    def close(self, bank, back):
        day = self.today - timedelta(days=back)
        open_keys = [k for k, h in self.periods.items() if k[1] == bank and h[-1][1] is None]
        try:
            self.operations.close_institution(bank, day.isoformat())
        except KfrError:
            assert bank in self.closed or any(day < self.periods[k][-1][0] for k in open_keys)
            return
        assert bank not in self.closed
        self.closed.add(bank)
        for key in open_keys:
            self.periods[key][-1][1] = day

    @rule()
    def purge(self):
        cutoff = retention_cutoff(self.today)
        self.operations.purge()
        for key in list(self.periods):
            kept = [p for p in self.periods[key] if p[1] is None or p[1] >= cutoff]
            if kept:
                self.periods[key] = kept
            else:
                del self.periods[key]

    @invariant()
    def list_own_matches(self):
        for customer in self.customers:
            for bank in BANKS:
                answer = {
                    (h.role, h.kind): [[p.start, p.end] for p in h.periods]
                    for h in self.register.list_own(by(bank), customer)
                }
                expected = {
                    (key[2], key[3]): history
                    for key, history in self.periods.items()
                    if key[0] == customer and key[1] == bank
                }
                assert answer == expected

    @invariant()
    def lookup_matches(self):
        first, last = self.today - timedelta(days=3650), self.today
        for customer in self.customers:
            relations = register_lookup_answer(
                self.register, customer, first.isoformat(), last.isoformat()
            ).institutions
            answer = {
                r.org_number: (set(r.roles), r.active, r.ownership, r.active_payment_account)
                for r in relations
            }
            found: dict[str, dict] = {}
            for (who, bank, role, kind), history in self.periods.items():
                seen = [p for p in history if p[0] <= last and (p[1] is None or p[1] >= first)]
                if who != customer or not seen:
                    continue
                at = found.setdefault(bank, {"roles": set(), "active": False, "kinds": set(),
                                             "active_account": False})  # fmt: skip
                ongoing = any(p[1] is None or p[1] > last for p in seen)
                at["roles"].add(role)
                at["active"] = at["active"] or ongoing
                if role is Role.OWNER:
                    at["kinds"].add(kind)
                    if kind is ProductKind.PAYMENT_ACCOUNT:
                        at["active_account"] = at["active_account"] or ongoing
            expected = {bank: (at["roles"], at["active"], _ownership(at["kinds"]),
                               at["active_account"]) for bank, at in found.items()}  # fmt: skip
            assert answer == expected


def _expected_correction(closed: bool, history: list, which: int, change, day: date):
    """(the error the register must answer a correction with, or None, and the period after it)."""
    if closed:
        return PermissionDenied, None
    if which >= len(history):
        return NotFound, None
    first, last = history[which]
    before = history[which - 1] if which > 0 else None
    after = history[which + 1] if which + 1 < len(history) else None
    if change is CorrectionAction.START_CORRECTED:
        if day != first and (
            (last is not None and day > last)
            or (before is not None and (day < before[1] or day == before[0]))
            or (after is not None and day == after[0])
        ):
            return InvalidArgument, None
        return None, [day, last]
    if change is CorrectionAction.END_CORRECTED:
        if last is None or (day != last and (day < first or (after and day > after[0]))):
            return InvalidArgument, None
        return None, [first, day]
    if last is not None and after is not None:
        return InvalidArgument, None
    return None, [first, None]


def _ownership(owned_kinds: set[ProductKind]) -> OwnershipType:
    if ProductKind.PAYMENT_ACCOUNT in owned_kinds:
        return OwnershipType.PRIMARY_OWNER
    if ProductKind.UNSPECIFIED in owned_kinds:
        return OwnershipType.UNKNOWN
    return OwnershipType.NOT_PRIMARY_OWNER


TestRegisterModel = RegisterModel.TestCase
TestRegisterModel.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
