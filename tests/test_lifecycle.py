"""Retention, institution closure, collection accounts, the request log and lookup
counters: the register's rules with a fixed clock on a real store."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from kfr_grpc.clock import FixedClock
from kfr_grpc.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Rejection,
)
from kfr_grpc.keyring import Keyring
from kfr_grpc.register.model import LookupCount, Period, RequestRecord, Role
from kfr_grpc.register.operations import Operations
from kfr_grpc.register.retention import retention_cutoff
from kfr_grpc.register.service import EndItem, Register, ReportItem
from kfr_grpc.register.statistics import LookupStatistics
from kfr_grpc.store import LmdbStore
from kfr_grpc.store.layout import RELATIONSHIPS
from kfr_grpc.store.txn import TxnBase
from tests.support import by, register_lookup

TODAY = date(2026, 6, 15)
BANK, OTHER_BANK = "311000004", "313000001"
OWNER = Role.OWNER
ACCOUNT, OTHER_ACCOUNT = "86011117947", "12345678903"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock.on(TODAY)


@pytest.fixture
def store(tmp_path: Path):
    opened = LmdbStore.open(tmp_path / "data", Keyring.generate(), map_size=256 * 1024 * 1024)
    yield opened
    opened.close()


@pytest.fixture
def operations(store, clock) -> Operations:
    ops = Operations(store, clock)
    ops.add_institution(BANK, "Testbanken")
    ops.add_institution(OTHER_BANK, "Andre bank")
    return ops


@pytest.fixture
def register(store, clock, operations) -> Register:
    return Register(store, clock, test_mode=True)


def periods(register: Register, customer: str, bank: str = BANK) -> list[Period]:
    return [p for h in register.list_own(by(bank), customer) for p in h.periods]


def lookup(register: Register, customer: str) -> list[str]:
    return [relation.org_number for relation in register_lookup(register, customer)]


def report_and_end(register: Register, customer: str, start: str, end: str, bank=BANK) -> None:
    register.report(by(bank), [ReportItem(customer, OWNER, start)])
    register.end(by(bank), [EndItem(customer, OWNER, end)])


# --- retention ------------------------------------------------------------------------------


def test_cutoff_is_ten_years_back():
    assert retention_cutoff(date(2026, 6, 15)) == date(2016, 6, 15)
    assert retention_cutoff(date(2028, 2, 29)) == date(2018, 2, 28)


def test_purge_removes_periods_ended_more_than_ten_years_ago(register, operations, ids):
    old, edge, recent, active = ids.person(), ids.person(), ids.person(), ids.person()
    report_and_end(register, old, "2005-01-01", "2016-06-14")  # one day too old
    report_and_end(register, edge, "2005-01-01", "2016-06-15")  # exactly ten years: kept
    report_and_end(register, recent, "2010-01-01", "2020-01-01")
    register.report(by(BANK), [ReportItem(active, OWNER, "2001-01-01")])  # active: never purged

    result = operations.purge()

    assert (result.periods_removed, result.relationships_removed) == (1, 1)
    assert result.cutoff == date(2016, 6, 15)
    assert periods(register, old) == [] and lookup(register, old) == []
    assert [lookup(register, c) for c in (edge, recent, active)] == [[BANK]] * 3
    assert operations.purge().periods_removed == 0  # nothing left to do


def test_purge_keeps_a_relationship_with_periods_left(register, operations, ids):
    customer = ids.person()
    report_and_end(register, customer, "2003-01-01", "2005-01-01")
    report_and_end(register, customer, "2008-01-01", "2010-01-01")
    register.report(by(BANK), [ReportItem(customer, OWNER, "2020-01-01")])
    result = operations.purge()
    assert (result.periods_removed, result.relationships_removed) == (2, 0)
    assert periods(register, customer) == [Period(date(2020, 1, 1))]


def test_dry_run_counts_the_same_and_removes_nothing(register, operations, ids):
    for _ in range(3):
        customer = ids.person()
        report_and_end(register, customer, "2003-01-01", "2005-01-01")
        report_and_end(register, customer, "2006-01-01", "2007-01-01")
        report_and_end(register, customer, "2006-01-01", "2008-01-01", bank=OTHER_BANK)
    with register._storage.read() as view:
        before = view.relationship_count()
    dry = operations.purge(dry_run=True)
    with register._storage.read() as view:
        assert view.relationship_count() == before
    real = operations.purge()
    assert (dry.periods_removed, dry.relationships_removed) == (9, 6)
    assert (real.periods_removed, real.relationships_removed) == (9, 6)


@pytest.fixture
def opened(monkeypatch) -> Counter:
    """How many sealed values of each database the store opens (decrypts): what a job
    really reads, counted at the store, not by the job itself."""
    counts: Counter = Counter()
    original = TxnBase._open

    def counting(self, database: bytes, key: bytes, sealed: bytes) -> bytes:
        counts[database] += 1
        return original(self, database, key, sealed)

    monkeypatch.setattr(TxnBase, "_open", counting)
    return counts


def test_purge_costs_what_it_removes_not_the_register_size(register, operations, ids, opened):
    register.report(by(BANK), [ReportItem(ids.person(), OWNER, "2020-01-01") for _ in range(1000)])
    expired = [ids.person() for _ in range(5)]
    for customer in expired:
        report_and_end(register, customer, "2001-01-01", "2002-01-01")
    opened.clear()
    assert operations.purge().periods_removed == 5
    # Each expired relationship is read once from the index and once more to rewrite it;
    # none of the 1000 active ones is opened.
    assert opened[RELATIONSHIPS] <= 2 * len(expired)


def test_request_log_records_expire(register, operations, clock, store):
    def record(age_days: int) -> RequestRecord:
        return RequestRecord(
            correlation_id=str(uuid.uuid4()),
            time=clock.now() - timedelta(days=age_days),
            method="/kfr.v1.InstitutionService/Report",
            institution=BANK,
            supplier=None,
            status="OK",
            message="",
        )

    records = [record(91), record(89), record(1)]
    for item in records:
        store.write(lambda txn, item=item: txn.put_request_record(item))
    assert operations.purge(dry_run=True).request_records_removed == 1
    assert operations.purge().request_records_removed == 1
    with pytest.raises(NotFound):
        register.request_log(by(BANK), records[0].correlation_id)
    assert register.request_log(by(BANK), records[1].correlation_id)[0].status == "OK"
    short = Operations(store, clock, request_log_days=30)
    assert short.purge().request_records_removed == 1


# --- closure ----------------------------------------------------------------------------------


def test_closing_an_institution_ends_everything_and_stops_its_reports(register, operations, ids):
    active, ended, elsewhere = ids.person(), ids.person(), ids.person()
    register.report(by(BANK), [ReportItem(active, OWNER, "2020-01-01")])
    report_and_end(register, ended, "2019-01-01", "2021-01-01")
    register.report(by(OTHER_BANK), [ReportItem(elsewhere, OWNER, "2020-01-01")])

    assert operations.close_institution(BANK, "2026-05-31") == 1
    assert periods(register, active) == [Period(date(2020, 1, 1), date(2026, 5, 31))]
    assert periods(register, ended) == [Period(date(2019, 1, 1), date(2021, 1, 1))]
    assert periods(register, elsewhere, OTHER_BANK) == [Period(date(2020, 1, 1))]
    assert lookup(register, active) == [BANK]  # history stays visible
    with pytest.raises(PermissionDenied, match="closed on 2026-05-31"):
        register.report(by(BANK), [ReportItem(ids.person(), OWNER)])
    with pytest.raises(PermissionDenied, match="closed"):
        register.end(by(BANK), [EndItem(active, OWNER)])
    assert [i.closed_on for i in operations.institutions()] == [date(2026, 5, 31), None]


def test_closure_is_all_or_nothing_and_once(register, operations, ids):
    early, late = ids.person(), ids.person()
    register.report(by(BANK), [ReportItem(early, OWNER, "2020-01-01")])
    register.report(by(BANK), [ReportItem(late, OWNER, "2026-06-01")])
    with pytest.raises(InvalidArgument, match="before the start"):
        operations.close_institution(BANK, "2026-05-01")
    assert periods(register, early) == [Period(date(2020, 1, 1))]  # untouched
    operations.close_institution(BANK, "2026-06-10")
    with pytest.raises(AlreadyExists, match="already closed"):
        operations.close_institution(BANK, "2026-06-11")
    with pytest.raises(NotFound):
        operations.close_institution("314000005", "2026-06-11")
    with pytest.raises(InvalidArgument, match="future"):
        operations.close_institution(OTHER_BANK, "2026-07-01")


def test_closure_costs_what_the_institution_has(register, operations, ids, opened):
    others = [ReportItem(ids.person(), OWNER, "2020-01-01") for _ in range(500)]
    register.report(by(OTHER_BANK), others)
    register.report(by(BANK), [ReportItem(ids.person(), OWNER, "2020-01-01") for _ in range(3)])
    opened.clear()
    assert operations.close_institution(BANK, "2026-06-01") == 3
    # Read through the institution's index, then rewritten: none of OTHER_BANK's 500.
    assert 3 <= opened[RELATIONSHIPS] <= 2 * 3


def test_retention_removes_a_closed_institutions_history_in_time(register, operations, clock, ids):
    customer = ids.person()
    register.report(by(BANK), [ReportItem(customer, OWNER, "2020-01-01")])
    operations.close_institution(BANK, "2026-06-01")
    clock.set(datetime(2036, 6, 2, 12, tzinfo=UTC))
    assert operations.purge().relationships_removed == 1
    assert lookup(register, customer) == []


# --- collection accounts --------------------------------------------------------------------


def _collection_lookup(register: Register, account: str):
    query = register.parse_collection_account_lookup(
        account_number=account, legal_mandate="m", account_info_request_id=str(uuid.uuid4())
    )
    return [(i.org_number, i.name) for i in register.lookup_collection_account(query)]


def test_collection_accounts_are_set_replaced_and_looked_up(register, operations):
    operations.set_collection_accounts(BANK, ["8601.11.17947", OTHER_ACCOUNT])
    assert _collection_lookup(register, "8601 11 17947") == [(BANK, "Testbanken")]
    updated = operations.set_collection_accounts(BANK, [OTHER_ACCOUNT])
    assert updated.collection_accounts == (OTHER_ACCOUNT,)
    assert _collection_lookup(register, ACCOUNT) == []
    assert _collection_lookup(register, OTHER_ACCOUNT) == [(BANK, "Testbanken")]


def test_collection_accounts_are_validated_and_not_shared(operations):
    with pytest.raises(InvalidArgument) as raised:
        operations.set_collection_accounts(BANK, [ACCOUNT, "86011117948", "123"])
    assert [v.field for v in raised.value.rejections] == ["accounts[1]", "accounts[2]"]
    operations.set_collection_accounts(BANK, [ACCOUNT])
    with pytest.raises(AlreadyExists, match=f"{ACCOUNT} is already a collection account of"):
        operations.set_collection_accounts(OTHER_BANK, [ACCOUNT])


def test_collection_lookup_validation(register):
    with pytest.raises(InvalidArgument) as raised:
        register.parse_collection_account_lookup(
            account_number="1234", legal_mandate="", account_info_request_id="x"
        )
    assert [v.field for v in raised.value.rejections] == [
        "account_number",
        "legal_mandate",
        "account_info_request_id",
    ]


# --- request log and counters ---------------------------------------------------------------


def test_request_log_is_only_for_the_institution_that_made_the_call(register, clock, store):
    correlation = str(uuid.uuid4())
    record = RequestRecord(
        correlation_id=correlation,
        time=clock.now(),
        method="/kfr.v1.InstitutionService/Report",
        institution=BANK,
        supplier="316000002",
        status="INVALID_ARGUMENT",
        message="relationships[3].customer_id: is required",
        rejected=(Rejection("relationships[3].customer_id", "is required"),),
    )
    store.write(lambda txn: txn.put_request_record(record))
    (found,) = register.request_log(by(BANK), correlation)
    assert found == record
    with pytest.raises(NotFound):
        register.request_log(by(OTHER_BANK), correlation)
    with pytest.raises(InvalidArgument, match="correlation_id"):
        register.request_log(by(BANK), "not-a-uuid")


def test_lookup_counters_add_up_across_flushes(store, clock):
    statistics = LookupStatistics(store, clock)
    for _ in range(3):
        statistics.count("312000008", "mandate A", "OK")
    statistics.count("312000008", "mandate A", "INVALID_ARGUMENT")
    assert statistics.flush() == 1
    statistics.count("312000008", "mandate A", "OK")
    statistics.flush()
    assert statistics.flush() == 0
    with store.read() as view:
        assert list(view.lookup_counts()) == [
            LookupCount(TODAY, "312000008", "mandate A", {"OK": 4, "INVALID_ARGUMENT": 1})
        ]
