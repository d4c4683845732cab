"""The real server on a free loopback port, over real mutual TLS, through generated stubs."""

from __future__ import annotations

import uuid
from datetime import UTC

import grpc
import pytest

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.client import KfrClient, correlation_id_of, secure_channel
from tests.support import (
    INSTITUTION_NAME,
    INSTITUTION_ORG,
    MANDATE,
    OTHER_INSTITUTION_ORG,
    OTHER_MANDATE,
    READ_SCOPE,
    UNREGISTERED_ORG,
    RunningServer,
    refused_in_the_handshake,
)

StatusCode = grpc.StatusCode


def report(
    client: KfrClient, org: str, *items: tuple[str, int, str], **kwargs
) -> pb.ReportResponse:
    request = pb.ReportRequest(
        institution_org_number=org,
        relationships=[pb.Relationship(customer_id=c, role=r, start_date=d) for c, r, d in items],
    )
    return client.institutions.Report(request, **kwargs)


def end(client: KfrClient, org: str, *items: tuple[str, int, str]) -> pb.EndResponse:
    request = pb.EndRequest(
        institution_org_number=org,
        endings=[pb.Ending(customer_id=c, role=r, end_date=d) for c, r, d in items],
    )
    return client.institutions.End(request)


def list_own(client: KfrClient, org: str, customer: str) -> list[tuple[int, list[tuple[str, str]]]]:
    response = client.institutions.ListOwn(
        pb.ListOwnRequest(institution_org_number=org, customer_id=customer)
    )
    return [
        (rel.role, [(p.start_date, p.end_date) for p in rel.periods])
        for rel in response.relationships
    ]


def lookup(client: KfrClient, customer: str, **fields) -> list[tuple[str, str, list[int], bool]]:
    request = pb.LookupRequest(
        customer_id=customer,
        from_date=fields.get("from_date", "2016-06-16"),
        to_date=fields.get("to_date", ""),
        role_filter=fields.get("role_filter", pb.ROLE_FILTER_ALL),
        legal_mandate=fields.get("legal_mandate", MANDATE),
        account_info_request_id=fields.get("account_info_request_id", str(uuid.uuid4())),
    )
    response = client.lookups.Lookup(request)
    return [(i.org_number, i.name, list(i.roles), i.active) for i in response.institutions]


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **kwargs)
    return raised.value


OWNER, DISPONENT = pb.ROLE_OWNER, pb.ROLE_DISPONENT


# --- transport and identity -----------------------------------------------------------------


def test_a_client_without_certificate_fails_the_handshake(server: RunningServer, ids):
    credentials = grpc.ssl_channel_credentials(root_certificates=server.pki.ca.read_bytes())
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        client = KfrClient(channel)
        error = rpc_error(report, client, INSTITUTION_ORG, (ids.person(), OWNER, ""), timeout=5)
    assert server.relationship_count() == 0
    refused_in_the_handshake(server, error, ids.person())


def test_a_plaintext_client_is_refused(server: RunningServer, ids):
    with grpc.insecure_channel(f"localhost:{server.port}") as channel:
        error = rpc_error(
            report, KfrClient(channel), INSTITUTION_ORG, (ids.person(), OWNER, ""), timeout=5
        )
    assert server.relationship_count() == 0
    refused_in_the_handshake(server, error, ids.person())


@pytest.mark.parametrize(
    "identity", ["foreign_ca_institution", "expired_institution", "future_institution"]
)
def test_certificates_the_ca_bundle_does_not_vouch_for_are_refused(server, ids, identity):
    client = server.client(getattr(server.pki, identity))
    error = rpc_error(report, client, INSTITUTION_ORG, (ids.person(), OWNER, ""), timeout=5)
    assert server.relationship_count() == 0
    refused_in_the_handshake(server, error, ids.person())


def test_a_certificate_without_org_number_is_unauthenticated(server, ids):
    client = server.client(server.pki.no_org_number)
    error = rpc_error(report, client, INSTITUTION_ORG, (ids.person(), OWNER, ""))
    assert error.code() is StatusCode.UNAUTHENTICATED
    assert "organisation number" in error.details()


def test_org_number_must_match_the_certificate(server, ids):
    client = server.client(server.pki.institution)
    customer = ids.person()
    error = rpc_error(report, client, OTHER_INSTITUTION_ORG, (customer, OWNER, ""))
    assert error.code() is StatusCode.PERMISSION_DENIED
    assert "is not the organisation 311000004 this call is made for" in error.details()
    assert server.relationship_count() == 0
    report(client, INSTITUTION_ORG, (customer, OWNER, ""))
    error = rpc_error(end, client, OTHER_INSTITUTION_ORG, (customer, OWNER, ""))
    assert error.code() is StatusCode.PERMISSION_DENIED
    error = rpc_error(list_own, client, OTHER_INSTITUTION_ORG, customer)
    assert error.code() is StatusCode.PERMISSION_DENIED


def test_missing_institution_org_number_is_invalid(server, ids):
    client = server.client(server.pki.institution)
    error = rpc_error(report, client, "", (ids.person(), OWNER, ""))
    assert error.code() is StatusCode.INVALID_ARGUMENT
    assert "institution_org_number" in error.details()


def test_an_unregistered_institution_is_denied(server, ids):
    client = server.client(server.pki.unregistered)
    error = rpc_error(report, client, UNREGISTERED_ORG, (ids.person(), OWNER, ""))
    assert error.code() is StatusCode.PERMISSION_DENIED
    assert "not registered" in error.details()
    assert server.relationship_count() == 0


def test_refused_calls_of_an_unregistered_organisation_leave_no_request_records(server, ids):
    """A certificate and a token of the right scope, but no registered institution: its
    refused calls are not kept (else anyone with a token could flood the request log);
    a registered institution's refused call is."""
    from datetime import datetime, timedelta

    def records() -> int:
        far = datetime.now(UTC) + timedelta(days=3650)
        with server.server.store.read() as view:
            return view.count_request_records_before(far)

    stranger = server.client(server.pki.unregistered)
    for _ in range(30):
        rpc_error(report, stranger, UNREGISTERED_ORG, (ids.person(), OWNER, ""))
    assert records() == 0
    member = server.client(server.pki.institution)
    rpc_error(report, member, INSTITUTION_ORG, ("12345678901", OWNER, ""))
    assert records() == 1


def test_organization_identifier_certificates_are_understood(server, ids):
    client = server.client(server.pki.institution_org_identifier)
    response = report(client, INSTITUTION_ORG, (ids.person(), OWNER, ""))
    assert response.registered_count == 1


# --- correlation id -------------------------------------------------------------------------


def _report_with_call(client, ids, metadata=()):
    request = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[pb.Relationship(customer_id=ids.person(), role=OWNER)],
    )
    return client.institutions.Report.with_call(request, metadata=metadata)


def test_correlation_id_is_echoed_or_made(server, ids):
    client = server.client(server.pki.institution)
    mine = str(uuid.uuid4())
    _, call = _report_with_call(client, ids, (("correlation-id", mine),))
    assert correlation_id_of(call) == mine
    _, call = _report_with_call(client, ids)
    assert uuid.UUID(correlation_id_of(call))


def test_the_correlation_id_travels_in_the_trailers_and_a_stream_gets_it_first(server, ids):
    """A unary answer carries it in its trailing metadata (sent with the status: no frame
    of its own); a streamed answer also in its initial metadata, before any message."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    client = server.client(server.pki.institution)
    mine = str(uuid.uuid4())
    _, call = _report_with_call(client, ids, (("correlation-id", mine),))
    assert ("correlation-id", mine) in call.trailing_metadata()
    assert ("correlation-id", mine) not in (call.initial_metadata() or ())
    health = health_pb2_grpc.HealthStub(client.channel)
    watch = health.Watch(
        health_pb2.HealthCheckRequest(), metadata=(("correlation-id", mine),), timeout=5
    )
    assert ("correlation-id", mine) in watch.initial_metadata()  # before the first message
    watch.cancel()


def test_a_malformed_correlation_id_is_refused_but_a_fresh_one_is_returned(server, ids):
    client = server.client(server.pki.institution)
    error = rpc_error(_report_with_call, client, ids, (("correlation-id", "nope"),))
    assert error.code() is StatusCode.INVALID_ARGUMENT
    assert uuid.UUID(correlation_id_of(error))
    assert server.relationship_count() == 0


# --- validation -----------------------------------------------------------------------------


def test_bad_ids_dates_and_roles_are_named_by_path_and_never_echoed(server, ids):
    client = server.client(server.pki.institution)
    good = ids.person()
    bad_check = good[:-1] + str((int(good[-1]) + 1) % 10)
    for odd_role in (7, pb.ROLE_UNSPECIFIED):  # an unknown number, and none
        error = rpc_error(
            report,
            client,
            INSTITUTION_ORG,
            (good, OWNER, "2020-01-01"),
            (bad_check, OWNER, ""),
            (good, DISPONENT, "2020-02-30"),
            (good, odd_role, ""),
            (good, OWNER, "2026-06-16"),
        )
        details = error.details()
        assert error.code() is StatusCode.INVALID_ARGUMENT
        for path in (  # every bad field, the role among them
            "relationships[1].customer_id",
            "relationships[2].start_date",
            "relationships[3].role",
            "relationships[4].start_date",
        ):
            assert path in details
        assert "relationships[0]" not in details
        assert good not in details and bad_check not in details
    assert server.relationship_count() == 0


def test_more_than_1000_items_is_invalid(server, ids):
    client = server.client(server.pki.institution)
    customer = ids.person()
    error = rpc_error(report, client, INSTITUTION_ORG, *[(customer, OWNER, "")] * 1001)
    assert error.code() is StatusCode.INVALID_ARGUMENT
    assert "at most 1000" in error.details()
    assert server.relationship_count() == 0


def test_synthetic_ids_are_refused_outside_test_mode(server_factory, ids):
    production = server_factory(test_mode=False)
    client = production.client(production.pki.institution)
    synthetic, regular = ids.person(), ids.regular_person()
    error = rpc_error(report, client, INSTITUTION_ORG, (synthetic, OWNER, ""))
    assert error.code() is StatusCode.INVALID_ARGUMENT
    assert "test mode" in error.details()
    assert report(client, INSTITUTION_ORG, (regular, OWNER, "")).registered_count == 1


# --- all or nothing, periods --------------------------------------------------------------


def test_report_is_all_or_nothing(server, ids):
    client = server.client(server.pki.institution)
    first, second, company = ids.person(), ids.person(), ids.company()
    error = rpc_error(
        report,
        client,
        INSTITUTION_ORG,
        (first, OWNER, "2020-01-01"),
        (second, OWNER, "2020-01-01"),
        (company, DISPONENT, "2020-01-01"),  # a company cannot be disponent
    )
    assert error.code() is StatusCode.INVALID_ARGUMENT
    assert "relationships[2].role" in error.details()
    assert server.relationship_count() == 0
    assert list_own(client, INSTITUTION_ORG, first) == []


def test_end_is_all_or_nothing_and_unknown_items_are_not_found(server, ids):
    client = server.client(server.pki.institution)
    known, unknown = ids.person(), ids.person()
    report(client, INSTITUTION_ORG, (known, OWNER, "2020-01-01"))
    error = rpc_error(
        end, client, INSTITUTION_ORG, (known, OWNER, "2024-01-01"), (unknown, OWNER, "2024-01-01")
    )
    assert error.code() is StatusCode.NOT_FOUND
    assert "endings[1]" in error.details() and unknown not in error.details()
    assert list_own(client, INSTITUTION_ORG, known) == [(OWNER, [("2020-01-01", "")])]


def test_periods_and_re_entry(server, ids):
    client = server.client(server.pki.institution)
    customer = ids.person()
    assert report(client, INSTITUTION_ORG, (customer, OWNER, "2018-01-01")).registered_count == 1
    assert report(client, INSTITUTION_ORG, (customer, OWNER, "")).already_registered_count == 1
    assert end(client, INSTITUTION_ORG, (customer, OWNER, "2020-01-01")).ended_count == 1
    assert end(client, INSTITUTION_ORG, (customer, OWNER, "")).already_ended_count == 1
    assert report(client, INSTITUTION_ORG, (customer, OWNER, "2023-01-01")).registered_count == 1
    assert (
        report(client, INSTITUTION_ORG, (customer, DISPONENT, "2024-01-01")).registered_count == 1
    )
    assert (
        end(client, INSTITUTION_ORG, (customer, pb.ROLE_UNSPECIFIED, "2025-01-01")).ended_count == 1
    )
    assert list_own(client, INSTITUTION_ORG, customer) == [
        (OWNER, [("2018-01-01", "2020-01-01"), ("2023-01-01", "2025-01-01")]),
        (DISPONENT, [("2024-01-01", "2025-01-01")]),
    ]


def test_concurrent_writers_and_readers_lose_nothing(server, ids):
    from concurrent.futures import ThreadPoolExecutor

    batches = [[ids.person() for _ in range(50)] for _ in range(16)]

    def write_then_read(batch: list[str]) -> int:
        client = server.client(server.pki.institution)
        report(client, INSTITUTION_ORG, *[(c, OWNER, "2020-01-01") for c in batch])
        end(client, INSTITUTION_ORG, *[(c, OWNER, "2021-01-01") for c in batch[:10]])
        agency = server.client(server.pki.agency)
        return sum(bool(lookup(agency, c)) for c in batch)

    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(write_then_read, batches))
    assert found == [50] * 16
    assert server.relationship_count() == 16 * 50


# --- lookup ---------------------------------------------------------------------------------


@pytest.fixture
def reported(server, ids) -> str:
    """Owner at the institution since 2020, disponent at the other one since 2022."""
    customer = ids.person()
    report(server.client(server.pki.institution), INSTITUTION_ORG, (customer, OWNER, "2020-01-01"))
    other = server.client(server.pki.other_institution)
    report(other, OTHER_INSTITUTION_ORG, (customer, DISPONENT, "2022-01-01"))
    return customer


def test_an_agency_finds_every_institution_with_names_and_roles(server, reported):
    agency = server.client(server.pki.agency)
    assert lookup(agency, reported) == [
        (INSTITUTION_ORG, INSTITUTION_NAME, [OWNER], True),
        (OTHER_INSTITUTION_ORG, "Andre Testbank", [DISPONENT], True),
    ]
    assert lookup(agency, reported, to_date="2021-12-31") == [
        (INSTITUTION_ORG, INSTITUTION_NAME, [OWNER], True)
    ]
    assert lookup(agency, reported, role_filter=pb.ROLE_FILTER_OWNER_ONLY) == [
        (INSTITUTION_ORG, INSTITUTION_NAME, [OWNER], True)
    ]
    assert lookup(agency, reported, role_filter=pb.ROLE_FILTER_UNSPECIFIED) == lookup(
        agency, reported
    )


def test_an_owner_only_agency_never_sees_disponents(server, reported):
    agency = server.client(server.pki.owner_only_agency)
    assert lookup(agency, reported, role_filter=pb.ROLE_FILTER_ALL) == [
        (INSTITUTION_ORG, INSTITUTION_NAME, [OWNER], True)
    ]


def test_an_organisation_not_configured_as_agency_may_not_look_up(server, reported):
    # Even holding the read scope, an institution is not an agency.
    institution = server.pki.institution
    client = server.client(institution, token=server.token(institution, scope=READ_SCOPE))
    error = rpc_error(lookup, client, reported)
    assert error.code() is StatusCode.PERMISSION_DENIED
    assert "not registered as an agency" in error.details()


def test_a_mandate_not_allowed_to_the_agency_is_denied(server, reported):
    owner_only = server.client(server.pki.owner_only_agency)
    error = rpc_error(lookup, owner_only, reported, legal_mandate=OTHER_MANDATE)
    assert error.code() is StatusCode.PERMISSION_DENIED
    assert "legal_mandate" in error.details()
    agency = server.client(server.pki.agency)
    assert lookup(agency, reported, legal_mandate=OTHER_MANDATE)  # allowed to this one


def test_lookup_needs_mandate_case_reference_and_sane_dates(server, reported):
    agency = server.client(server.pki.agency)
    error = rpc_error(
        lookup,
        agency,
        reported,
        legal_mandate="",
        account_info_request_id="case 17",
        from_date="2024-01-02",
        to_date="2024-01-01",
    )
    assert error.code() is StatusCode.INVALID_ARGUMENT
    for field in ("legal_mandate", "account_info_request_id", "to_date"):
        assert field in error.details()
    error = rpc_error(lookup, agency, reported[:-1])
    assert error.code() is StatusCode.INVALID_ARGUMENT
    assert "customer_id" in error.details() and reported[:-1] not in error.details()


def test_lookup_from_an_agency_is_answered_identically_for_an_unknown_customer(server, ids):
    assert lookup(server.client(server.pki.agency), ids.person()) == []


# --- persistence ----------------------------------------------------------------------------


def test_data_survives_a_restart(server, ids):
    client = server.client(server.pki.institution)
    customer = ids.person()
    report(client, INSTITUTION_ORG, (customer, OWNER, "2020-01-01"))
    end(client, INSTITUTION_ORG, (customer, OWNER, "2021-01-01"))
    report(client, INSTITUTION_ORG, (customer, OWNER, "2022-01-01"))
    server.restart()
    client = server.client(server.pki.institution)
    assert list_own(client, INSTITUTION_ORG, customer) == [
        (OWNER, [("2020-01-01", "2021-01-01"), ("2022-01-01", "")])
    ]
    assert lookup(server.client(server.pki.agency), customer) == [
        (INSTITUTION_ORG, INSTITUTION_NAME, [OWNER], True)
    ]


def test_ca_bundle_mismatch_on_the_client_side_is_refused(server, ids):
    """A client that trusts another CA must not talk to our server (server authentication)."""
    client = KfrClient(
        secure_channel(
            f"localhost:{server.port}",
            ca=server.pki.foreign_ca_institution.cert,  # not the server's CA
            cert=server.pki.institution.cert,
            key=server.pki.institution.key,
        )
    )
    try:
        error = rpc_error(report, client, INSTITUTION_ORG, (ids.person(), OWNER, ""), timeout=5)
    finally:
        client.close()
    assert server.relationship_count() == 0
    refused_in_the_handshake(server, error, ids.person())


# --- health -------------------------------------------------------------------------------------


def test_health_check_with_the_same_identity_rules(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    client = server.client(server.pki.institution)
    health = health_pb2_grpc.HealthStub(client.channel)
    for service in ("", "kfr.v1.InstitutionService", "kfr.v1.LookupService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    unknown = rpc_error(health.Check, health_pb2.HealthCheckRequest(service="nope"))
    assert unknown.code() is StatusCode.NOT_FOUND
    anonymous = health_pb2_grpc.HealthStub(
        server.client(server.pki.institution, token=None).channel
    )
    error = rpc_error(anonymous.Check, health_pb2.HealthCheckRequest())
    assert error.code() is StatusCode.UNAUTHENTICATED
    watch = anonymous.Watch(health_pb2.HealthCheckRequest())
    assert rpc_error(next, watch).code() is StatusCode.UNAUTHENTICATED
    first = next(health.Watch(health_pb2.HealthCheckRequest(), timeout=5))
    assert first.status == health_pb2.HealthCheckResponse.SERVING


def test_invalid_argument_carries_bad_request_field_violations(server, ids):
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    client = server.client(server.pki.institution)
    good = ids.person()
    error = rpc_error(
        report, client, INSTITUTION_ORG,
        (good, OWNER, ""), (good[:-1] + "x", OWNER, ""), (good, pb.ROLE_UNSPECIFIED, "2020-13-01"),
    )  # fmt: skip
    status = rpc_status.from_call(error)
    assert status.code == StatusCode.INVALID_ARGUMENT.value[0]
    (detail,) = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    assert [(v.field, v.reason) for v in bad_request.field_violations] == [
        ("relationships[1].customer_id", "CUSTOMER_ID_MALFORMED"),
        ("relationships[2].start_date", "DATE_INVALID"),
        ("relationships[2].role", "ROLE_MISSING"),
    ]
    assert all(v.description for v in bad_request.field_violations)
    assert good[:-1] not in str(bad_request)


def test_reflection_lists_and_describes_the_services(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    database = ProtoReflectionDescriptorDatabase(server.client(server.pki.agency).channel)
    assert set(database.get_services()) >= {
        "kfr.v1.InstitutionService",
        "kfr.v1.LookupService",
        "grpc.health.v1.Health",
    }
    from google.protobuf.descriptor_pool import DescriptorPool

    lookup_request = DescriptorPool(database).FindMessageTypeByName("kfr.v1.LookupRequest")
    assert "legal_mandate" in [field.name for field in lookup_request.fields]
    anonymous = server.client(server.pki.agency, token=None).channel
    with pytest.raises(grpc.RpcError) as raised:
        ProtoReflectionDescriptorDatabase(anonymous).get_services()
    assert raised.value.code() is StatusCode.UNAUTHENTICATED


# --- malformed messages ---------------------------------------------------------------------


def _violation_reasons(error: grpc.RpcError) -> list[str]:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    bad_request = error_details_pb2.BadRequest()
    (detail,) = rpc_status.from_call(error).details
    assert detail.Unpack(bad_request)
    return [violation.reason for violation in bad_request.field_violations]


def test_bytes_that_are_no_message_are_invalid_not_internal(server):
    channel = server.client(server.pki.institution).channel
    garbage = b"\xff\xff\xff\xff\x0f"  # a truncated varint: no protobuf decodes it
    for path in ("/kfr.v1.InstitutionService/Report", "/grpc.health.v1.Health/Check"):
        error = rpc_error(channel.unary_unary(path), garbage, timeout=5)
        assert error.code() is StatusCode.INVALID_ARGUMENT, path
        assert _violation_reasons(error) == ["MALFORMED"]
    anonymous = server.client(server.pki.institution, token=None).channel
    error = rpc_error(anonymous.unary_unary("/kfr.v1.InstitutionService/Report"), garbage)
    assert error.code() is StatusCode.UNAUTHENTICATED  # who asks is checked first


def test_a_malformed_chunk_ends_a_stream_after_the_chunks_before_it(server, ids):
    channel = server.client(server.pki.institution).channel
    first = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[pb.Relationship(customer_id=ids.person(), role=OWNER)],
    )
    second = first.SerializeToString()[:-3]  # cut short
    stream = channel.stream_unary("/kfr.v1.InstitutionService/ReportStream")
    error = rpc_error(stream, iter([first.SerializeToString(), second]), timeout=10)
    assert error.code() is StatusCode.INVALID_ARGUMENT
    assert _violation_reasons(error) == ["MALFORMED", "PARTIAL"]
    assert server.relationship_count() == 1


def test_a_server_that_cannot_bind_leaves_no_helper_process(server_factory, tmp_path, server_loop):
    import multiprocessing

    from kfr_grpc.config import load_config
    from kfr_grpc.errors import ConfigError
    from kfr_grpc.server import build_server

    running = server_factory()
    config = load_config(running.config_path)
    taken = config.model_copy(
        update={
            "listen": f"127.0.0.1:{running.port}",  # in use by the running server
            "data_dir": tmp_path / "other-data",
            "server": config.server.model_copy(update={"validation_processes": 1}),
        }
    )
    before = set(multiprocessing.active_children())
    with pytest.raises(ConfigError, match="cannot listen"):
        server_loop.run(build_server(taken))
    assert set(multiprocessing.active_children()) == before


def test_a_thousand_bad_items_still_reach_a_client_with_default_limits(server, ids):
    """The BadRequest detail travels in a trailer; gRPC clients with default settings
    refuse metadata over 8 KiB. It lists the first violations, in item order, and says
    how many more there are and where to find them."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    client = server.client(server.pki.institution)  # no metadata limits set: the defaults
    bad = [(ids.person()[:-1] + "x", OWNER, "") for _ in range(1000)]
    error = rpc_error(report, client, INSTITUTION_ORG, *bad)
    assert error.code() is StatusCode.INVALID_ARGUMENT
    trailer_bytes = sum(len(k) + len(v) for k, v in error.trailing_metadata())
    assert trailer_bytes < 8 * 1024
    (detail,) = rpc_status.from_call(error).details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    *listed, more = bad_request.field_violations
    assert [v.field for v in listed] == [
        f"relationships[{n}].customer_id" for n in range(len(listed))
    ]
    assert more.reason == "MORE_VIOLATIONS" and f"{1000 - len(listed)} more" in more.description
