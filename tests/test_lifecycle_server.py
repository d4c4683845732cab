"""Issue-4 behaviour through the live server: the request log, collection accounts,
closure, retention by itself, and what a lookup leaves behind (only counters)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime

import grpc

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.config import load_config
from kfr_grpc.register.operations import Operations
from kfr_grpc.server import open_store
from tests.leaks import find_leaks
from tests.support import (
    AGENCY_ORG,
    INSTITUTION_NAME,
    INSTITUTION_ORG,
    MANDATE,
    OTHER_MANDATE,
    VENDOR_ORG,
    dump_store,
)
from tests.test_server import end, lookup, report, rpc_error

StatusCode = grpc.StatusCode
OWNER = pb.ROLE_OWNER
ACCOUNT = "86011117947"


def _with_correlation(call, request, correlation: str):
    return call.with_call(request, metadata=(("correlation-id", correlation),))


def request_log(client, correlation: str, org: str = INSTITUTION_ORG) -> list[pb.RequestLogRecord]:
    request = pb.GetRequestLogRequest(institution_org_number=org, correlation_id=correlation)
    return list(client.institutions.GetRequestLog(request).records)


def test_a_rejected_report_can_be_traced_by_its_correlation_id(server, ids, caplog):
    client = server.client(server.pki.institution)
    good, bad = ids.person(), ids.person()[:-1] + "0"
    correlation = str(uuid.uuid4())
    request = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[
            pb.Relationship(customer_id=good, role=OWNER),
            pb.Relationship(customer_id=bad, role=OWNER),
            pb.Relationship(customer_id=good, role=OWNER, start_date="2099-01-01"),
        ],
    )
    error = rpc_error(_with_correlation, client.institutions.Report, request, correlation)
    assert error.code() is StatusCode.INVALID_ARGUMENT

    (record,) = request_log(client, correlation)
    assert record.status == "INVALID_ARGUMENT"
    assert record.method == "/kfr.v1.InstitutionService/Report"
    assert record.institution_org_number == INSTITUTION_ORG
    assert [(v.field, v.reason) for v in record.rejected] == [
        ("relationships[1].customer_id", "is not a valid fødselsnummer or D-number (check digits)"),
        ("relationships[2].start_date", "is in the future"),
    ]
    assert good not in str(record) and bad not in str(record)
    datetime.fromisoformat(record.time)  # RFC 3339


def test_a_successful_call_is_recorded_with_its_counts(server, ids):
    client = server.client(server.pki.institution)
    customer, correlation = ids.person(), str(uuid.uuid4())
    report(client, INSTITUTION_ORG, (customer, OWNER, "2020-01-01"))
    request = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[
            pb.Relationship(customer_id=c, role=OWNER) for c in (customer, ids.person())
        ],
    )
    _with_correlation(client.institutions.Report, request, correlation)
    _with_correlation(client.institutions.Report, request, correlation)  # a retry, same id
    first, retry = request_log(client, correlation)
    assert first.status == "OK" and dict(first.counts) == {"registered": 1, "already_registered": 1}
    assert dict(retry.counts) == {"registered": 0, "already_registered": 2}


def test_only_the_institution_that_made_the_call_sees_its_record(server, ids):
    correlation = str(uuid.uuid4())
    request = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[pb.Relationship(customer_id=ids.person(), role=OWNER)],
    )
    _with_correlation(
        server.client(server.pki.institution).institutions.Report, request, correlation
    )
    other = server.client(server.pki.other_institution)
    error = rpc_error(request_log, other, correlation, "313000001")
    assert error.code() is StatusCode.NOT_FOUND
    error = rpc_error(request_log, other, correlation, INSTITUTION_ORG)  # not theirs to ask
    assert error.code() is StatusCode.PERMISSION_DENIED


def test_a_vendors_call_is_recorded_for_the_institution_with_the_vendor(server, ids):
    vendor = server.pki.vendor
    token = server.token(vendor, consumer=INSTITUTION_ORG, supplier=VENDOR_ORG)
    correlation = str(uuid.uuid4())
    request = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[pb.Relationship(customer_id=ids.person(), role=OWNER)],
    )
    _with_correlation(server.client(vendor, token=token).institutions.Report, request, correlation)
    (record,) = request_log(server.client(server.pki.institution), correlation)
    assert record.supplier_org_number == VENDOR_ORG


def test_collection_account_lookup_follows_the_agency_rules(server):
    store = server.server.store
    Operations(store, server.clock).set_collection_accounts(INSTITUTION_ORG, [ACCOUNT])

    def ask(client, account=ACCOUNT, mandate=MANDATE):
        request = pb.LookupCollectionAccountRequest(
            account_number=account, legal_mandate=mandate, account_info_request_id=str(uuid.uuid4())
        )
        return [
            (i.org_number, i.name)
            for i in client.lookups.LookupCollectionAccount(request).institutions
        ]

    agency = server.client(server.pki.agency)
    assert ask(agency) == [(INSTITUTION_ORG, INSTITUTION_NAME)]
    assert ask(agency, account="12345678903") == []
    assert rpc_error(ask, agency, account="123").code() is StatusCode.INVALID_ARGUMENT
    owner_only = server.client(server.pki.owner_only_agency)
    denied = rpc_error(ask, owner_only, mandate=OTHER_MANDATE)
    assert denied.code() is StatusCode.PERMISSION_DENIED
    institution = server.pki.institution
    reader = server.client(institution, token=server.token(institution, scope="bits:kundeforhold"))
    assert rpc_error(ask, reader).code() is StatusCode.PERMISSION_DENIED


def test_a_closed_institution_can_no_longer_report(server, ids):
    client = server.client(server.pki.institution)
    customer = ids.person()
    report(client, INSTITUTION_ORG, (customer, OWNER, "2020-01-01"))
    Operations(server.server.store, server.clock).close_institution(INSTITUTION_ORG, "2026-06-01")
    error = rpc_error(report, client, INSTITUTION_ORG, (ids.person(), OWNER, ""))
    assert error.code() is StatusCode.PERMISSION_DENIED
    assert "closed on 2026-06-01" in error.details()
    assert rpc_error(end, client, INSTITUTION_ORG, (customer, OWNER, "")).code() is (
        StatusCode.PERMISSION_DENIED
    )
    assert lookup(server.client(server.pki.agency), customer) == [
        (INSTITUTION_ORG, INSTITUTION_NAME, [OWNER], False)
    ]


def test_the_server_runs_retention_by_itself(server_factory, ids):
    server = server_factory(
        maintenance_toml="purge_interval_seconds = 0.2\nlookup_counts_flush_seconds = 0.1"
    )
    client = server.client(server.pki.institution)
    customer = ids.person()
    report(client, INSTITUTION_ORG, (customer, OWNER, "2010-01-01"))
    end(client, INSTITUTION_ORG, (customer, OWNER, "2015-01-01"))
    assert server.relationship_count() == 1
    deadline = time.monotonic() + 10
    while server.relationship_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.relationship_count() == 0


def test_a_lookup_leaves_no_trace_of_the_person_only_counters(server, ids, caplog):
    institution = server.client(server.pki.institution)
    customer = ids.person()
    report(institution, INSTITUTION_ORG, (customer, OWNER, "2020-01-01"))
    store = server.server.store
    before = dump_store(store)
    caplog.clear()

    agency = server.client(server.pki.agency)
    case = uuid.uuid4()  # the agency's case reference: it must not be kept either
    assert lookup(agency, customer, account_info_request_id=str(case))
    stranger = ids.person()  # someone not in the register
    assert lookup(agency, stranger, account_info_request_id=str(case)) == []
    rpc_error(lookup, agency, customer, legal_mandate="not one of ours")
    server.stop()  # stores the counters; every record the lookups caused is now on disk

    reopened = open_store(load_config(server.config_path))
    try:
        after = dump_store(reopened)
        keyring = reopened.keyring
    finally:
        reopened.close()
    changed = {key: value for key, value in after.items() if before.get(key) != value}
    assert changed, "the lookups were not counted"
    assert {database for database, _ in changed} == {b"lookup_counts"}
    forms = [str(case).encode(), case.hex.encode(), case.bytes]
    for value in (customer, stranger):
        pseudonym = keyring.pseudonymiser().pseudonym(value)
        forms += [value.encode(), pseudonym, pseudonym.hex().encode()]
    for (_, key), value in changed.items():
        assert not any(form in key or form in value for form in forms)
    counted = {json.loads(value)["mandate"] for value in changed.values()}
    assert counted == {MANDATE, "(not allowed)"}
    text_forms = [f.decode() for f in forms if f.isascii() and f != case.bytes]
    assert find_leaks(text_forms, caplog.records) == []
    assert AGENCY_ORG in caplog.text  # the request log line names the agency, nothing more
