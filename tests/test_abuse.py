"""No abuse by flooding or enumeration: a rate per organisation (refused calls leave no
request record), and a warning when an agency's lookups look like trying IDs."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kfr_grpc.api.admission import Admission, Limits
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.config import AgencyConfig, RateLimitConfig
from kfr_grpc.errors import RateLimited
from kfr_grpc.register.enumeration import EnumerationSettings, EnumerationWatch, Suspicion
from tests.support import AGENCY_ORG, INSTITUTION_ORG, MANDATE
from tests.test_server import OWNER, lookup, report, rpc_error

StatusCode = grpc.StatusCode


def _request_records(server) -> int:
    far = datetime.now(UTC) + timedelta(days=3650)
    with server.server.store.read() as view:
        return view.count_request_records_before(far)


def _retry_delay(error: grpc.RpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None, "no status details"
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo detail")


def test_an_organisation_over_its_rate_is_refused_with_a_retry_hint_and_no_record(
    server_factory, ids
):
    # (slow enough that the calls below, however slow the machine, earn no new one)
    server = server_factory(rate_limits_toml="calls_per_second = 0.5\nburst = 5")
    institution = server.client(server.pki.institution)
    # A refused call of a registered institution is recorded (the control) ...
    rpc_error(report, institution, INSTITUTION_ORG, ("12345678901", OWNER, ""))
    assert _request_records(server) == 1
    for _ in range(4):
        report(institution, INSTITUTION_ORG, (ids.person(), OWNER, ""))
    records = _request_records(server)
    # ... but calls over the rate are refused at once and leave no record.
    errors = [
        rpc_error(report, institution, INSTITUTION_ORG, (ids.person(), OWNER, ""))
        for _ in range(20)
    ]
    assert {error.code() for error in errors} == {StatusCode.RESOURCE_EXHAUSTED}
    assert "calls per second (rate_limits)" in errors[0].details()
    assert _request_records(server) == records
    delay = _retry_delay(errors[-1])
    assert 0 < delay <= 2.0
    # Another organisation has a bucket of its own.
    assert lookup(server.client(server.pki.agency), ids.person()) == []
    # After the hinted delay the institution is served again.
    time.sleep(delay + 0.05)
    assert report(institution, INSTITUTION_ORG, (ids.person(), OWNER, "")).registered_count == 1


def _agency(**rate) -> AgencyConfig:
    return AgencyConfig(org_number=AGENCY_ORG, mandates=[MANDATE], **rate)


def _admission(policy: AccessPolicy, clock: list[float]) -> Admission:
    limits = Limits(
        max_calls=100, max_calls_per_connection=100, max_calls_per_caller=100,
        per_method={}, rate_of=policy.rate_of,
    )  # fmt: skip
    return Admission(limits, monotonic=lambda: clock[0])


def _calls_admitted(admission: Admission, organisation: str, calls: int) -> int:
    admitted = 0
    for _ in range(calls):
        call = admission.admit("/m", "peer")
        try:
            call.identified(organisation)
            admitted += 1
        except RateLimited:
            pass
        finally:
            call.release()
    return admitted


def test_an_agency_can_have_a_rate_of_its_own_and_buckets_refill_at_the_rate():
    policy = AccessPolicy([_agency(calls_per_second=50, burst=100)], RateLimitConfig(burst=10))
    clock = [0.0]
    admission = _admission(policy, clock)
    assert _calls_admitted(admission, AGENCY_ORG, 150) == 100
    assert _calls_admitted(admission, INSTITUTION_ORG, 50) == 10  # the common rate
    clock[0] += 1.0
    assert _calls_admitted(admission, AGENCY_ORG, 150) == 50
    assert _calls_admitted(admission, INSTITUTION_ORG, 150) == 10  # 100/s, burst 10
    # A new agency list (SIGHUP) brings new rates; a rate without a burst gets two
    # seconds' worth.
    policy.replace_agencies([_agency(calls_per_second=4)])
    clock[0] += 1000
    assert _calls_admitted(admission, AGENCY_ORG, 500) == 8


def test_lookups_that_mostly_find_nobody_raise_a_warning_and_a_metric(server_factory, ids, caplog):
    server = server_factory(
        metrics=True,
        enumeration_toml="min_lookups = 20\nmax_empty_share = 0.5\nmax_lookups = 1000",
    )
    agency = server.client(server.pki.agency)
    institution = server.client(server.pki.institution)
    known = [ids.person() for _ in range(15)]
    for customer in known:
        report(institution, INSTITUTION_ORG, (customer, OWNER, ""))
    caplog.set_level(logging.WARNING, "kfr.server")
    for customer in known:  # 15 found, then 10 empty: 10/25 is no more than half
        assert lookup(agency, customer)
    for _ in range(10):
        assert lookup(agency, ids.person()) == []
    assert "possible enumeration" not in caplog.text
    for _ in range(10):  # 20/35 found nothing
        lookup(agency, ids.person())
    warnings = [r.getMessage() for r in caplog.records if "possible enumeration" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per window
    assert f"agency {AGENCY_ORG}" in warnings[0] and "empty_share" in warnings[0]
    expected = f'kfr_enumeration_suspected_total{{agency="{AGENCY_ORG}",reason="empty_share"}} 1.0'
    assert expected in server.metrics()


def test_the_enumeration_watch_counts_per_agency_and_window():
    raised: list[Suspicion] = []
    clock = [0.0]
    settings = EnumerationSettings(
        window_seconds=60, max_lookups=100, min_lookups=1000, max_empty_share=0.9
    )
    watch = EnumerationWatch(settings, raised.append, monotonic=lambda: clock[0])
    for _ in range(100):
        watch.record("a", found=True)
        watch.record("b", found=False)
    assert raised == []
    watch.record("a", found=True)
    assert [(s.agency, s.reason, s.lookups) for s in raised] == [("a", "rate", 101)]
    for _ in range(500):
        watch.record("a", found=True)
    assert len(raised) == 1  # once per window
    clock[0] += 60
    for _ in range(100):
        watch.record("a", found=True)
    assert len(raised) == 1  # a new window starts from nothing
    watch.record("a", found=True)
    assert len(raised) == 2


@pytest.mark.parametrize("rate", [{"calls_per_second": 0}, {"burst": 0.5}])
def test_rates_must_make_sense(rate):
    with pytest.raises(ValueError):
        _agency(**rate)
