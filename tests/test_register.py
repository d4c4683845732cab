"""The register's rules, on a real store in a temp directory, with a fixed clock."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from kfr_grpc.clock import FixedClock
from kfr_grpc.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from kfr_grpc.keyring import Keyring
from kfr_grpc.register.customer_ids import birth_date_of
from kfr_grpc.register.model import Period, Role
from kfr_grpc.register.operations import Operations
from kfr_grpc.register.reports import MAX_ITEMS_PER_CALL
from kfr_grpc.register.service import EndItem, Register, ReportItem
from kfr_grpc.store import LmdbStore
from tests.support import by, register_lookup

TODAY = date(2026, 6, 15)
BANK, OTHER_BANK, UNKNOWN_BANK = "311000004", "313000001", "314000005"
OWNER, DISPONENT = Role.OWNER, Role.DISPONENT


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock.on(TODAY)


@pytest.fixture
def register(tmp_path: Path, clock: FixedClock):
    store = LmdbStore.open(tmp_path / "data", Keyring.generate(), map_size=64 * 1024 * 1024)
    register = Register(store, clock, test_mode=True)
    operations = Operations(store, clock)
    operations.add_institution(BANK, "Testbanken")
    operations.add_institution(OTHER_BANK, "Andre bank")
    yield register
    store.close()


def count(register: Register) -> int:
    with register._storage.read() as view:
        return view.relationship_count()


lookup = register_lookup


def periods(register: Register, institution: str, customer: str) -> dict[Role, tuple[Period, ...]]:
    return {h.role: h.periods for h in register.list_own(by(institution), customer)}


# --- Report ---------------------------------------------------------------------------------


def test_report_registers_and_counts(register, ids):
    alice, bob = ids.person(), ids.company()
    result = register.report(
        by(BANK), [ReportItem(alice, OWNER, "2020-01-01"), ReportItem(bob, OWNER, "")]
    )
    assert (result.registered, result.already_registered) == (2, 0)
    assert periods(register, BANK, alice) == {OWNER: (Period(date(2020, 1, 1)),)}
    assert periods(register, BANK, bob) == {OWNER: (Period(TODAY),)}  # empty date: today


def test_reporting_an_active_relationship_again_is_a_no_op(register, ids):
    alice = ids.person()
    register.report(by(BANK), [ReportItem(alice, OWNER, "2020-01-01")])
    result = register.report(
        by(BANK), [ReportItem(alice, OWNER, "2021-01-01"), ReportItem(alice, OWNER, "")]
    )
    assert (result.registered, result.already_registered) == (0, 2)
    assert periods(register, BANK, alice) == {OWNER: (Period(date(2020, 1, 1)),)}


def test_the_same_item_twice_in_one_request_registers_once(register, ids):
    alice = ids.person()
    result = register.report(by(BANK), [ReportItem(alice, OWNER), ReportItem(alice, OWNER)])
    assert (result.registered, result.already_registered) == (1, 1)


def test_report_is_all_or_nothing_and_lists_every_bad_item(register, ids):
    good, bad = ids.person(), ids.person()[:-1] + "x"
    items = [ReportItem(good, OWNER, "2020-01-01")] * 3
    items += [ReportItem(bad, OWNER), ReportItem(good, None), ReportItem(good, OWNER, "2099-01-01")]
    with pytest.raises(InvalidArgument) as raised:
        register.report(by(BANK), items)
    fields = [v.field for v in raised.value.rejections]
    assert fields == [
        "relationships[3].customer_id",
        "relationships[4].role",
        "relationships[5].start_date",
    ]
    assert good not in str(raised.value) and bad not in str(raised.value)
    assert count(register) == 0


def test_a_start_before_the_customers_birth_or_before_1900_is_refused(register, ids):
    person = ids.person()
    born = birth_date_of(person, int(person[2:4]) % 40)
    organisation = ids.company()
    items = [
        ReportItem(person, OWNER, (born - timedelta(days=1)).isoformat()),
        ReportItem(organisation, OWNER, "1899-12-31"),
    ]
    with pytest.raises(InvalidArgument) as raised:
        register.report(by(BANK), items)
    assert [(v.field, v.code) for v in raised.value.rejections] == [
        ("relationships[0].start_date", "START_BEFORE_BIRTH"),
        ("relationships[1].start_date", "START_TOO_EARLY"),
    ]
    assert person not in str(raised.value)
    items = [
        ReportItem(person, OWNER, born.isoformat()),
        ReportItem(organisation, OWNER, "1900-01-01"),
    ]
    assert register.report(by(BANK), items).registered == 2


def test_a_state_conflict_late_in_the_request_rolls_back_earlier_items(register, ids):
    returning, fresh = ids.person(), ids.person()
    register.report(by(BANK), [ReportItem(returning, OWNER, "2020-01-01")])
    register.end(by(BANK), [EndItem(returning, OWNER, "2022-01-01")])
    with pytest.raises(InvalidArgument) as raised:
        register.report(
            by(BANK),
            [ReportItem(fresh, OWNER, "2023-01-01"), ReportItem(returning, OWNER, "2021-06-01")],
        )
    assert [v.field for v in raised.value.rejections] == ["relationships[1].start_date"]
    assert periods(register, BANK, fresh) == {}


def test_batch_limits(register, ids):
    customer = ids.person()
    with pytest.raises(InvalidArgument, match="at least one"):
        register.report(by(BANK), [])
    too_many = [ReportItem(customer, OWNER)] * (MAX_ITEMS_PER_CALL + 1)
    with pytest.raises(InvalidArgument, match="at most 1000"):
        register.report(by(BANK), too_many)
    exactly = [ReportItem(customer, OWNER)] * MAX_ITEMS_PER_CALL
    assert register.report(by(BANK), exactly).registered == 1


def test_a_company_cannot_be_disponent(register, ids):
    with pytest.raises(InvalidArgument, match="ROLE_DISPONENT needs a person"):
        register.report(by(BANK), [ReportItem(ids.company(), DISPONENT)])


def test_an_unregistered_institution_may_not_report(register, ids):
    with pytest.raises(PermissionDenied, match="not registered"):
        register.report(by(UNKNOWN_BANK), [ReportItem(ids.person(), OWNER)])
    with pytest.raises(PermissionDenied):
        register.end(by(UNKNOWN_BANK), [EndItem(ids.person(), OWNER)])
    with pytest.raises(PermissionDenied):
        register.list_own(by(UNKNOWN_BANK), ids.person())


def test_synthetic_ids_need_test_mode(tmp_path, clock, ids):
    store = LmdbStore.open(tmp_path / "prod", Keyring.generate(), map_size=64 * 1024 * 1024)
    try:
        production = Register(store, clock, test_mode=False)
        Operations(store, clock).add_institution(BANK, "Testbanken")
        with pytest.raises(InvalidArgument, match="test mode"):
            production.report(by(BANK), [ReportItem(ids.person(), OWNER)])
        regular = [ReportItem(ids.regular_person(), OWNER)]
        assert production.report(by(BANK), regular).registered == 1
    finally:
        store.close()


# --- End ------------------------------------------------------------------------------------


def test_end_makes_a_relationship_historical(register, ids):
    alice = ids.person()
    register.report(by(BANK), [ReportItem(alice, OWNER, "2020-01-01")])
    result = register.end(by(BANK), [EndItem(alice, OWNER, "2024-03-01")])
    assert (result.ended, result.already_ended) == (1, 0)
    assert periods(register, BANK, alice) == {OWNER: (Period(date(2020, 1, 1), date(2024, 3, 1)),)}


def test_ending_an_ended_relationship_again_is_a_no_op(register, ids):
    alice = ids.person()
    register.report(by(BANK), [ReportItem(alice, OWNER, "2020-01-01")])
    register.end(by(BANK), [EndItem(alice, OWNER, "2024-03-01")])
    result = register.end(by(BANK), [EndItem(alice, OWNER, "2025-01-01")])
    assert (result.ended, result.already_ended) == (0, 1)
    assert periods(register, BANK, alice)[OWNER][-1].end == date(2024, 3, 1)


def test_ending_what_was_never_reported_is_not_found_and_writes_nothing(register, ids):
    known, unknown = ids.person(), ids.person()
    register.report(by(BANK), [ReportItem(known, OWNER, "2020-01-01")])
    with pytest.raises(NotFound) as raised:
        register.end(by(BANK), [EndItem(known, OWNER), EndItem(unknown, OWNER)])
    assert [v.field for v in raised.value.rejections] == ["endings[1]"]
    assert unknown not in str(raised.value)
    assert periods(register, BANK, known) == {OWNER: (Period(date(2020, 1, 1)),)}


def test_ending_a_role_the_customer_never_held_is_not_found(register, ids):
    alice = ids.person()
    register.report(by(BANK), [ReportItem(alice, OWNER, "2020-01-01")])
    with pytest.raises(NotFound):
        register.end(by(BANK), [EndItem(alice, DISPONENT)])
    with pytest.raises(NotFound):  # relationships are per institution
        register.end(by(OTHER_BANK), [EndItem(alice, OWNER)])


def test_end_without_role_ends_every_role(register, ids):
    alice = ids.person()
    register.report(by(BANK), [ReportItem(alice, OWNER, "2020-01-01")])
    register.report(by(BANK), [ReportItem(alice, DISPONENT, "2021-01-01")])
    result = register.end(by(BANK), [EndItem(alice, None, "2024-01-01")])
    assert (result.ended, result.already_ended) == (1, 0)
    assert all(p[-1].end == date(2024, 1, 1) for p in periods(register, BANK, alice).values())


def test_end_date_before_start_is_refused(register, ids):
    alice = ids.person()
    register.report(by(BANK), [ReportItem(alice, OWNER, "2020-01-01")])
    with pytest.raises(InvalidArgument) as raised:
        register.end(by(BANK), [EndItem(alice, OWNER, "2019-12-31")])
    assert [v.field for v in raised.value.rejections] == ["endings[0].end_date"]


def test_re_entry_keeps_every_period(register, ids):
    alice = ids.person()
    register.report(by(BANK), [ReportItem(alice, OWNER, "2015-01-01")])
    register.end(by(BANK), [EndItem(alice, OWNER, "2017-01-01")])
    register.report(by(BANK), [ReportItem(alice, OWNER, "2019-01-01")])
    register.end(by(BANK), [EndItem(alice, OWNER, "2020-01-01")])
    register.report(by(BANK), [ReportItem(alice, OWNER, "2022-01-01")])
    assert periods(register, BANK, alice) == {
        OWNER: (
            Period(date(2015, 1, 1), date(2017, 1, 1)),
            Period(date(2019, 1, 1), date(2020, 1, 1)),
            Period(date(2022, 1, 1)),
        )
    }


def test_list_own_shows_only_the_callers_relationships(register, ids):
    alice = ids.person()
    register.report(by(BANK), [ReportItem(alice, OWNER, "2020-01-01")])
    register.report(by(OTHER_BANK), [ReportItem(alice, DISPONENT, "2021-01-01")])
    assert set(periods(register, BANK, alice)) == {OWNER}
    assert set(periods(register, OTHER_BANK, alice)) == {DISPONENT}


# --- Lookup ---------------------------------------------------------------------------------


@pytest.fixture
def history(register, ids):
    """Owner at BANK 2018-2020 and again from 2023; disponent at OTHER_BANK from 2021."""
    alice = ids.person()
    register.report(by(BANK), [ReportItem(alice, OWNER, "2018-01-01")])
    register.end(by(BANK), [EndItem(alice, OWNER, "2020-01-01")])
    register.report(by(BANK), [ReportItem(alice, OWNER, "2023-01-01")])
    register.report(by(OTHER_BANK), [ReportItem(alice, DISPONENT, "2021-01-01")])
    return alice


def summary(relations):
    return [(r.org_number, r.name, r.roles, r.active) for r in relations]


def test_lookup_over_the_whole_history(register, history):
    assert summary(lookup(register, history, "2016-06-15", "")) == [
        (BANK, "Testbanken", (OWNER,), True),
        (OTHER_BANK, "Andre bank", (DISPONENT,), True),
    ]


def test_lookup_window_in_a_gap_finds_nothing_there(register, history):
    assert summary(lookup(register, history, "2020-01-02", "2020-12-31")) == []


def test_lookup_active_is_judged_at_to_date(register, history):
    assert summary(lookup(register, history, "2019-01-01", "2019-06-01")) == [
        (BANK, "Testbanken", (OWNER,), True)
    ]
    # The period ended 2020-01-01: on that day it is in the window but no longer ongoing.
    assert summary(lookup(register, history, "2019-01-01", "2020-01-01")) == [
        (BANK, "Testbanken", (OWNER,), False)
    ]
    assert summary(lookup(register, history, "2019-01-01", "2020-06-01")) == [
        (BANK, "Testbanken", (OWNER,), False)
    ]


def test_lookup_owner_only_leaves_out_disponent_only_institutions(register, history):
    assert summary(lookup(register, history, "2016-06-15", "", owner_only=True)) == [
        (BANK, "Testbanken", (OWNER,), True)
    ]


def test_lookup_of_an_unknown_customer_is_empty(register, ids):
    assert lookup(register, ids.person(), "2016-06-15", "") == []


def test_lookup_validation(register, ids):
    with pytest.raises(InvalidArgument) as raised:
        register.parse_lookup(
            customer_id="123",
            from_date="2024-02-01",
            to_date="2024-01-01",
            owner_only=False,
            legal_mandate=" ",
            account_info_request_id="not-a-uuid",
        )
    assert [v.field for v in raised.value.rejections] == [
        "customer_id",
        "legal_mandate",
        "account_info_request_id",
        "to_date",
    ]
    future = (TODAY + timedelta(days=1)).isoformat()
    with pytest.raises(InvalidArgument, match="to_date: is in the future"):
        lookup(register, ids.person(), "", future)


# --- institutions ---------------------------------------------------------------------------


def test_institutions_are_registered_once(register, clock):
    operations = Operations(register._storage, clock)
    assert operations.add_institution(BANK, "Testbanken") == (operations.institutions()[0], False)
    with pytest.raises(AlreadyExists, match="already registered"):
        operations.add_institution(BANK, "Another name")
    with pytest.raises(InvalidArgument, match="org_number"):
        operations.add_institution("123456789", "Bad check digit")
    with pytest.raises(InvalidArgument, match="name"):
        operations.add_institution(UNKNOWN_BANK, "  ")
    assert [i.org_number for i in operations.institutions()] == [BANK, OTHER_BANK]
    assert all(i.registered_on == TODAY for i in operations.institutions())
