"""The operator's REST contract (README, REST) over real HTTPS: mutual TLS with the test
certificates, Maskinporten-style tokens, a real server and store. Every path, status and
error code of ``../shared/DSOP_REST.md``."""

from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import quote

import pytest

from kfr_grpc._proto import kfr_pb2 as pb
from tests.support import (
    INSTITUTION_NAME,
    INSTITUTION_ORG,
    MANDATE,
    OTHER_INSTITUTION_ORG,
    TODAY,
    UNREGISTERED_ORG,
    WRITE_SCOPE,
)

RELATIONSHIP = f"/customers/financialInstitutions/{INSTITUTION_ORG}/relationshipType/DSOPBANK"
OWN = f"/customers/financialInstitutions/{INSTITUTION_ORG}/"
BATCH = f"/customers/financialInstitutions/{INSTITUTION_ORG}/batch"
LOOKUP = "/customers/customerRelationships"
ACCOUNT = "/customers/accountServicingProvider"


@pytest.fixture
def served(server_factory):
    return server_factory(rest=True)


@pytest.fixture
def bank(served):
    return served.rest(served.pki.institution)


@pytest.fixture
def agency(served):
    return served.rest(served.pki.agency)


def agency_headers(customer: str, **extra) -> dict:
    return {
        "CustomerID": customer,
        "Legal-Mandate": quote(MANDATE),
        "AccountInfoRequestID": str(uuid.uuid4()),
        **extra,
    }


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["errorCode"] == code, body
    assert set(body) == {"errorCode", "errorMessage", "timestamp"}
    assert body["timestamp"].endswith("Z")
    return body


def test_report_end_and_own_relationship(served, bank, ids):
    customer = ids.person()
    sent = str(uuid.uuid4())
    first = bank.call("POST", RELATIONSHIP, {"CustomerID": customer, "CorrelationID": sent})
    assert first.status_code == 201, first.text
    assert first.headers["CorrelationID"] == sent
    again = bank.call("POST", RELATIONSHIP, {"CustomerID": customer})
    assert again.status_code == 200
    own = bank.call("GET", OWN, {"CustomerID": customer})
    assert own.status_code == 200
    assert own.json() == {
        "banks": [
            {"organizationID": INSTITUTION_ORG, "bankName": INSTITUTION_NAME,
             "activeAccount": False}
        ]
    }  # fmt: skip
    ended = bank.call("DELETE", RELATIONSHIP, {"CustomerID": customer})
    assert ended.status_code == 204 and ended.content == b""
    assert bank.call("DELETE", RELATIONSHIP, {"CustomerID": customer}).status_code == 204
    yesterday = (TODAY - timedelta(days=1)).isoformat()
    window = bank.call("GET", OWN, {"CustomerID": customer}, params={"fromDate": yesterday})
    assert len(window.json()["banks"]) == 1
    never = bank.call("DELETE", RELATIONSHIP, {"CustomerID": ids.person()})
    error_of(never, 404, "KFR-008")


def test_agency_lookup_v1_and_v2(served, bank, agency, ids):
    customer = ids.person()
    assert bank.call("POST", RELATIONSHIP, {"CustomerID": customer}).status_code == 201
    v1 = agency.call("GET", LOOKUP, agency_headers(customer))
    assert v1.status_code == 200, v1.text
    assert v1.json() == {
        "banks": [
            {"organizationID": INSTITUTION_ORG, "bankName": INSTITUTION_NAME,
             "activeAccount": False}
        ]
    }  # fmt: skip
    v2 = agency.call("GET", LOOKUP, agency_headers(customer), params={"onlyPrimaryOwner": "false"})
    assert v2.json()["banks"][0]["ownershipType"] == "unknown"
    only = agency.call("GET", LOOKUP, agency_headers(customer), params={"onlyPrimaryOwner": "true"})
    assert only.json() == {"banks": []}


def test_correlation_id_is_required_and_always_echoed(bank, ids):
    customer = ids.person()
    missing = bank.call("POST", RELATIONSHIP, {"CustomerID": customer, "CorrelationID": None})
    body = error_of(missing, 400, "KFR-004")
    assert "CorrelationID" in body["errorMessage"]
    assert uuid.UUID(missing.headers["CorrelationID"])
    malformed = bank.call("POST", RELATIONSHIP, {"CustomerID": customer, "CorrelationID": customer})
    error_of(malformed, 400, "KFR-004")
    assert malformed.headers["CorrelationID"] != customer  # never echoed: it could be an ID
    assert customer not in malformed.text


def test_institution_errors(served, bank, ids):
    customer = ids.person()
    error_of(bank.call("POST", RELATIONSHIP, {"CustomerID": "12345678901"}), 400, "KFR-005")
    error_of(bank.call("POST", RELATIONSHIP, {}), 400, "KFR-005")
    other_type = RELATIONSHIP.replace("DSOPBANK", "LOAN")
    error_of(bank.call("POST", other_type, {"CustomerID": customer}), 400, "KFR-009")
    other_org = RELATIONSHIP.replace(INSTITUTION_ORG, OTHER_INSTITUTION_ORG)
    error_of(bank.call("POST", other_org, {"CustomerID": customer}), 403, "KFR-003")
    bad_fid = RELATIONSHIP.replace(INSTITUTION_ORG, "123")
    error_of(bank.call("POST", bad_fid, {"CustomerID": customer}), 400, "KFR-004")
    unregistered = served.rest(served.pki.unregistered)
    path = RELATIONSHIP.replace(INSTITUTION_ORG, UNREGISTERED_ORG)
    error_of(unregistered.call("POST", path, {"CustomerID": customer}), 403, "KFR-003")
    bad_date = bank.call("GET", OWN, {"CustomerID": customer}, params={"fromDate": "15.06.2026"})
    body = error_of(bad_date, 400, "KFR-010")
    assert "fromDate" in body["errorMessage"]
    unknown = bank.call("GET", OWN, {"CustomerID": customer}, params={"customerId": customer})
    body = error_of(unknown, 400, "KFR-004")
    assert customer not in body["errorMessage"]
    no_token = served.rest(served.pki.institution, token=None)
    error_of(no_token.call("POST", RELATIONSHIP, {"CustomerID": customer}), 401, "KFR-001")
    agency_token = served.token(served.pki.institution, scope="bits:kundeforhold")
    wrong_scope = served.rest(served.pki.institution, token=agency_token)
    body = error_of(wrong_scope.call("POST", RELATIONSHIP, {"CustomerID": customer}), 403,
                    "KFR-002")  # fmt: skip
    assert WRITE_SCOPE in body["errorMessage"]
    assert served.relationship_count() == 0  # no refused call wrote anything


def test_a_token_bound_to_another_certificate_or_organisation_is_refused(served, ids):
    customer = ids.person()
    other_cert = served.pki.other_institution.cert.read_bytes()
    bound = served.token(served.pki.institution, cnf_certificate=other_cert)
    refused = served.rest(served.pki.institution, token=bound)
    body = error_of(refused.call("POST", RELATIONSHIP, {"CustomerID": customer}), 401, "KFR-001")
    assert "cnf" in body["errorMessage"]
    theirs = served.token(served.pki.other_institution)
    borrowed = served.rest(served.pki.institution, token=theirs)
    error_of(borrowed.call("POST", RELATIONSHIP, {"CustomerID": customer}), 401, "KFR-001")
    own_cert = served.pki.institution.cert.read_bytes()
    good = served.token(served.pki.institution, cnf_certificate=own_cert)
    accepted = served.rest(served.pki.institution, token=good)
    assert accepted.call("POST", RELATIONSHIP, {"CustomerID": customer}).status_code == 201


def test_a_revoked_certificate_is_refused_and_none_is_refused_in_the_handshake(served, ids):
    import requests

    from kfr_grpc.dev import pki

    customer = ids.person()
    bank = served.rest(served.pki.institution)
    assert bank.call("POST", RELATIONSHIP, {"CustomerID": customer}).status_code == 201
    serial = pki.x509.load_pem_x509_certificate(served.pki.institution.cert.read_bytes())
    served.crl_path.write_bytes(pki.make_crl(served.pki.authority, [serial.serial_number]))
    body = error_of(bank.call("GET", OWN, {"CustomerID": customer}), 401, "KFR-001")
    assert "revoked" in body["errorMessage"]
    anonymous = requests.Session()
    anonymous.trust_env = False
    with pytest.raises(requests.exceptions.ConnectionError):  # (TLS 1.3: after the handshake)
        anonymous.get(bank.url + bank.BASE + OWN, verify=str(served.pki.ca), timeout=10)
    anonymous.close()


def test_a_vendor_reports_for_an_institution(served, ids):
    from tests.support import VENDOR_ORG

    token = served.token(served.pki.vendor, consumer=INSTITUTION_ORG, supplier=VENDOR_ORG)
    vendor = served.rest(served.pki.vendor, token=token)
    assert vendor.call("POST", RELATIONSHIP, {"CustomerID": ids.person()}).status_code == 201


def test_agency_errors(served, agency, bank, ids):
    customer = ids.person()
    error_of(agency.call("GET", LOOKUP, agency_headers("12345678901")), 400, "ERR-002")
    bad_period = agency.call("GET", LOOKUP, agency_headers(customer),
                             params={"fromDate": "2026-06-16", "toDate": "2026-06-01"})  # fmt: skip
    error_of(bad_period, 400, "ERR-003")
    error_of(agency.call("GET", LOOKUP, agency_headers(customer), params={"toDate": "x"}), 400,
             "ERR-003")  # fmt: skip
    no_mandate = agency.call("GET", LOOKUP, agency_headers(customer, **{"Legal-Mandate": None}))
    assert "Legal-Mandate" in error_of(no_mandate, 400, "ERR-005")["errorMessage"]
    no_case = agency.call("GET", LOOKUP, agency_headers(customer, AccountInfoRequestID=None))
    assert "AccountInfoRequestID" in error_of(no_case, 400, "ERR-005")["errorMessage"]
    maybe = agency.call("GET", LOOKUP, agency_headers(customer), params={"onlyPrimaryOwner": "x"})
    error_of(maybe, 400, "ERR-005")
    not_allowed = agency.call("GET", LOOKUP, agency_headers(customer, **{"Legal-Mandate": "Other"}))
    error_of(not_allowed, 403, "ERR-001")
    as_bank = served.rest(served.pki.institution, token=served.token(
        served.pki.institution, scope="bits:kundeforhold"))  # fmt: skip
    error_of(as_bank.call("GET", LOOKUP, agency_headers(customer)), 403, "ERR-001")
    error_of(bank.call("GET", LOOKUP, agency_headers(customer)), 403, "ERR-001")  # scope
    no_token = served.rest(served.pki.agency, token=None)
    error_of(no_token.call("GET", LOOKUP, agency_headers(customer)), 401, "ERR-001")
    error_of(agency.call("GET", ACCOUNT, agency_headers("", AccountID="1234")), 400, "ERR-004")


def test_account_servicing_provider(served, agency):
    from kfr_grpc.register.operations import Operations

    Operations(served.server.store, served.clock).set_collection_accounts(
        INSTITUTION_ORG, ["86011117947"]
    )
    found = agency.call("GET", ACCOUNT, agency_headers("", AccountID="8601.11.17947"))
    assert found.status_code == 200, found.text
    assert found.json() == {"organizationId": INSTITUTION_ORG, "bankName": INSTITUTION_NAME}
    missing = agency.call("GET", ACCOUNT, agency_headers("", AccountID="86011117955"))
    error_of(missing, 404, "ERR-006")
    lookup_only = served.rest(served.pki.agency, token=served.token(
        served.pki.agency, scope="bits:kundeforhold"))  # fmt: skip
    body = error_of(lookup_only.call("GET", ACCOUNT, agency_headers("", AccountID="86011117947")),
                    403, "ERR-001")  # fmt: skip
    assert "bits:kundeforhold.konto" in body["errorMessage"]


def test_active_account_needs_a_payment_account_and_to_date_today(served, agency, ids):
    customer = ids.person()
    client = served.client(served.pki.institution)
    client.institutions.Report(pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[pb.Relationship(customer_id=customer, role=pb.ROLE_OWNER,
                                       kind=pb.PRODUCT_KIND_PAYMENT_ACCOUNT,
                                       start_date="2026-01-01")],
    ), timeout=10)  # fmt: skip
    today = agency.call(
        "GET", LOOKUP, agency_headers(customer), params={"onlyPrimaryOwner": "true"}
    )
    assert today.json()["banks"] == [
        {"organizationID": INSTITUTION_ORG, "bankName": INSTITUTION_NAME, "activeAccount": True,
         "ownershipType": "primaryOwner"}
    ]  # fmt: skip
    earlier = {"fromDate": "2026-02-01", "toDate": "2026-03-01"}
    before = agency.call("GET", LOOKUP, agency_headers(customer), params=earlier)
    assert before.json()["banks"][0]["activeAccount"] is False  # toDate is not today
    bank = served.rest(served.pki.institution)
    own = bank.call("GET", OWN, {"CustomerID": customer})
    assert own.json()["banks"][0]["activeAccount"] is True


def old_client_upload(entries: bytes, customer_type: bytes = b"DSOPBANK") -> tuple[dict, bytes]:
    """A multipart body as the old register's clients send it (a Java HTTP client's
    boundary, the text field first, then the file part with a filename)."""
    boundary = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
    body = b"".join([
        b"--" + boundary + b"\r\n",
        b'Content-Disposition: form-data; name="customer_type"\r\n\r\n',
        customer_type + b"\r\n",
        b"--" + boundary + b"\r\n",
        b'Content-Disposition: form-data; name="customers"; filename="customers.txt"\r\n',
        b"Content-Type: text/plain\r\n\r\n",
        entries + b"\r\n",
        b"--" + boundary + b"--\r\n",
    ])  # fmt: skip
    return {"Content-Type": "multipart/form-data; boundary=" + boundary.decode()}, body


def test_batch_as_an_old_client_sends_it(served, bank, agency, ids):
    customers = [ids.person() for _ in range(5)]
    entries = ",".join([
        customers[0], f"{customers[1]}#2020-01-31", f"{customers[2]}#2031-01-01", "12345678901",
    ]).encode() + b",\r\n" + f"{customers[3]}#2026-06-01,{customers[4]}".encode()  # fmt: skip
    headers, body = old_client_upload(entries)
    sent = str(uuid.uuid4())
    response = bank.call("POST", BATCH, {**headers, "CorrelationID": sent}, data=body)
    assert response.status_code == 201, response.text
    assert response.headers["CorrelationID"] == sent
    result = response.json()
    assert (result["entries"], result["registered"], result["alreadyRegistered"]) == (6, 4, 0)
    assert result["rejectedCount"] == 2
    assert [(r["index"], r["field"], r["code"]) for r in result["rejected"]] == [
        (2, "startDate", "DATE_IN_FUTURE"), (3, "customerId", "CUSTOMER_ID_CHECKSUM"),
    ]  # fmt: skip
    assert not any(c in response.text for c in customers)
    for customer in (customers[0], customers[1], customers[3], customers[4]):
        found = agency.call("GET", LOOKUP, agency_headers(customer, **{}),
                            params={"fromDate": "2020-01-31"})  # fmt: skip
        assert found.json()["banks"][0]["organizationID"] == INSTITUTION_ORG
    again = bank.call("POST", BATCH, headers, data=body)
    assert again.json()["alreadyRegistered"] == 4
    records = (
        served.client(served.pki.institution)
        .institutions.GetRequestLog(
            pb.GetRequestLogRequest(institution_org_number=INSTITUTION_ORG, correlation_id=sent),
            timeout=10,
        )
        .records
    )
    assert len(records) == 1 and "batch" in records[0].method


def test_batch_errors(served, bank, ids):
    customer = ids.person()
    headers, body = old_client_upload(customer.encode(), customer_type=b"LOAN")
    error_of(bank.call("POST", BATCH, headers, data=body), 400, "KFR-009")
    headers, body = old_client_upload(b" , ,\r\n")
    error_of(bank.call("POST", BATCH, headers, data=body), 400, "KFR-004")
    error_of(bank.call("POST", BATCH, {"Content-Type": "text/plain"}, data=customer), 400,
             "KFR-004")  # fmt: skip
    only_type = bank.call("POST", BATCH, files={"customer_type": (None, "DSOPBANK")})
    assert "customers" in error_of(only_type, 400, "KFR-004")["errorMessage"]
    other = BATCH.replace(INSTITUTION_ORG, OTHER_INSTITUTION_ORG)
    headers, body = old_client_upload(customer.encode())
    error_of(bank.call("POST", other, headers, data=body), 403, "KFR-003")
    assert served.relationship_count() == 0


def test_a_batch_over_the_size_limit_is_refused_whole(server_factory, ids):
    served = server_factory(rest='listen = "127.0.0.1:0"\nmax_batch_mb = 0.001')
    bank = served.rest(served.pki.institution)
    headers, body = old_client_upload(",".join(ids.person() for _ in range(200)).encode())
    error_of(bank.call("POST", BATCH, headers, data=body), 413, "KFR-004")
    assert served.relationship_count() == 0


def test_unknown_paths_and_methods_answer_in_the_contract_s_body(bank):
    missing = bank.call("GET", "/customers/nothing")
    error_of(missing, 404, "ERR-005")
    assert uuid.UUID(missing.headers["CorrelationID"])
    wrong = bank.call("PUT", RELATIONSHIP, {"CustomerID": "x"})
    error_of(wrong, 405, "KFR-004")
    assert "POST" in wrong.headers["Allow"]


def test_rate_limits_answer_429_with_retry_after(server_factory, ids):
    served = server_factory(rest=True, rate_limits_toml="calls_per_second = 1\nburst = 2")
    bank = served.rest(served.pki.institution)
    answers = [bank.call("POST", RELATIONSHIP, {"CustomerID": ids.person()}) for _ in range(4)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    error_of(limited[0], 429, "KFR-011")
    assert int(limited[0].headers["Retry-After"]) >= 1


def test_an_internal_error_names_the_correlation_id_and_no_customer(served, bank, ids, caplog,
                                                                     monkeypatch):  # fmt: skip
    from kfr_grpc.register.service import Register

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Register, "own_relation", broken)  # (a bug cannot be made otherwise)
    customer = ids.person()
    response = bank.call("GET", OWN, {"CustomerID": customer})
    body = error_of(response, 500, "KFR-007")
    assert response.headers["CorrelationID"] in body["errorMessage"]
    assert customer not in caplog.text


def test_no_customer_id_in_any_log_line(served, bank, agency, ids, caplog):
    caplog.set_level("DEBUG", logger="kfr")
    customer = ids.person()
    bank.call("POST", RELATIONSHIP, {"CustomerID": customer})
    bank.call("GET", OWN, {"CustomerID": customer}, params={"fromDate": customer})
    agency.call("GET", LOOKUP, agency_headers(customer))
    agency.call("GET", LOOKUP, agency_headers(customer), params={customer: "1"})
    bank.call("DELETE", RELATIONSHIP, {"CustomerID": customer})
    kfr_lines = [r.getMessage() for r in caplog.records if r.name.startswith("kfr")]
    assert any("REST GET /customers/customerRelationships" in line for line in kfr_lines)
    assert not any(customer in line for line in kfr_lines)


def test_rest_calls_are_in_the_request_log_and_the_metrics(server_factory, ids):
    served = server_factory(rest=True, metrics=True)
    bank = served.rest(served.pki.institution)
    sent = str(uuid.uuid4())
    refused = bank.call("POST", RELATIONSHIP, {"CustomerID": "12345678901", "CorrelationID": sent})
    error_of(refused, 400, "KFR-005")
    records = (
        served.client(served.pki.institution)
        .institutions.GetRequestLog(
            pb.GetRequestLogRequest(institution_org_number=INSTITUTION_ORG, correlation_id=sent),
            timeout=10,
        )
        .records
    )
    assert [(r.method, r.status) for r in records] == [
        ("REST POST /customers/financialInstitutions/{fid}/relationshipType/{type}",
         "INVALID_ARGUMENT")
    ]  # fmt: skip
    assert "REST POST /customers/financialInstitutions/{fid}/relationshipType/{type}" in (
        served.metrics()
    )


def test_the_openapi_document_is_served_without_a_token(served):
    from kfr_grpc.rest.routes import openapi_document

    anonymous = served.rest(served.pki.agency, token=None)
    response = anonymous.call("GET", "/openapi.json", {"CorrelationID": None})
    assert response.status_code == 200
    assert response.json() == openapi_document()


def test_a_stalled_upload_is_cut_off_and_loads_nothing(server_factory, ids):
    import socket
    import ssl

    served = server_factory(rest=True, server_toml="request_timeout_seconds = 0.5")
    token = served.token(served.pki.institution)
    context = ssl.create_default_context(cafile=str(served.pki.ca))
    context.load_cert_chain(served.pki.institution.cert, served.pki.institution.key)
    headers, body = old_client_upload(ids.person().encode())
    head = (
        f"POST /kar-ws/api/v1{BATCH} HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {token}\r\nCorrelationID: {uuid.uuid4()}\r\n"
        f"Content-Type: {headers['Content-Type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    address = ("localhost", served.server.rest_port)
    with (
        socket.create_connection(address, timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(head + body[: len(body) // 2])  # and then nothing
        answer = tls.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert '"KFR-004"' in answer and "stalled" in answer
    assert served.relationship_count() == 0


def test_connections_past_the_limit_are_closed_at_once(server_factory):
    import socket
    import ssl

    served = server_factory(rest='listen = "127.0.0.1:0"\nmax_connections = 2')
    context = ssl.create_default_context(cafile=str(served.pki.ca))
    context.load_cert_chain(served.pki.institution.cert, served.pki.institution.key)
    address = ("localhost", served.server.rest_port)
    idle = [
        context.wrap_socket(socket.create_connection(address, timeout=10),
                            server_hostname="localhost")
        for _ in range(2)
    ]  # fmt: skip
    try:
        assert _closed_at_once(context, address)
    finally:
        for connection in idle:
            connection.close()
    bank = served.rest(served.pki.institution)  # the idle ones gone, a new one is served
    assert bank.call("GET", "/openapi.json").status_code == 200


def _closed_at_once(context, address) -> bool:
    """Whether the server closes a new connection before answering anything."""
    import socket
    import ssl

    try:
        with context.wrap_socket(socket.create_connection(address, timeout=10),
                                 server_hostname="localhost") as extra:  # fmt: skip
            extra.sendall(b"GET /kar-ws/api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
            return extra.recv(1) == b""
    except (ConnectionError, ssl.SSLError):
        return True


def test_a_malformed_request_with_an_id_in_it_leaves_no_id_in_the_log(served, ids, caplog):
    import socket
    import ssl

    caplog.set_level("DEBUG")
    customer = ids.person()
    context = ssl.create_default_context(cafile=str(served.pki.ca))
    context.load_cert_chain(served.pki.institution.cert, served.pki.institution.key)
    address = ("localhost", served.server.rest_port)
    for request in (
        f"GET /kar-ws/api/v1{OWN} HTTP/1.1\r\nCustomerID: {customer}\x01\r\n\r\n",
        f"GET /kar-ws/api/v1/{customer}\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        f"{customer} /x HTTP/1.1\r\n\r\n",
    ):
        with (
            socket.create_connection(address, timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(request.encode("latin-1"))
            answer = tls.recv(65536).decode("latin-1")
        assert answer.split()[1] == "400" and '"errorCode"' in answer, answer
        assert customer not in answer
    assert customer not in caplog.text


def test_rest_lookups_are_counted_under_their_mandate_and_nothing_else(served, agency, ids):
    from kfr_grpc.config import load_config
    from kfr_grpc.server import open_store

    agency.call("GET", LOOKUP, agency_headers(ids.person()))
    agency.call("GET", LOOKUP, agency_headers("12345678901"))
    agency.call("GET", LOOKUP, agency_headers(ids.person(), **{"Legal-Mandate": "Other"}))
    served.stop()  # (the counters are written at shutdown)
    store = open_store(load_config(served.config_path), readonly=True)
    try:
        with store.read() as view:
            counts = {(c.mandate, tuple(sorted(c.by_status.items()))) for c in view.lookup_counts()}
    finally:
        store.close()
    assert counts == {
        (MANDATE, (("INVALID_ARGUMENT", 1), ("OK", 1))),
        ("(not allowed)", (("PERMISSION_DENIED", 1),)),
    }


def test_a_changed_client_ca_bundle_applies_to_new_connections_without_a_restart(served):
    import requests

    from tests.support import wait_for

    foreign = served.rest(served.pki.foreign_ca_institution)
    with pytest.raises(requests.exceptions.ConnectionError):
        foreign.call("GET", "/openapi.json")
    bundle = served.directory / "client-ca.pem"
    bundle.write_bytes(served.pki.ca.read_bytes() + served.pki.foreign_authority.cert_pem)

    def served_now() -> bool:
        try:
            fresh = served.rest(served.pki.foreign_ca_institution)
            return fresh.call("GET", "/openapi.json").status_code == 200
        except requests.exceptions.ConnectionError:
            return False

    wait_for(served_now, "the new CA bundle to be taken")


def test_malformed_uploads_are_refused_whole_without_quoting_them(served, bank, ids, caplog):
    caplog.set_level("DEBUG")
    customers = [ids.person(), ids.person()]
    boundary = "----kfr"
    no_blank_line = (  # the part's headers run straight into the file: a hand-made client's bug
        f'--{boundary}\r\nContent-Disposition: form-data; name="customer_type"\r\n\r\nDSOPBANK\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="customers"\r\n'
        f"{customers[0]},{customers[1]}\r\n--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    body = error_of(bank.call("POST", BATCH, headers, data=no_blank_line), 400, "KFR-004")
    assert not any(customer in body["errorMessage"] for customer in customers)
    extra_headers, upload = old_client_upload(",".join(customers).encode())
    extra = upload.replace(b'name="customer_type"', b'name="something_else"', 1)
    error_of(bank.call("POST", BATCH, extra_headers, data=extra), 400, "KFR-004")
    gzipped = bank.call("POST", BATCH, {**extra_headers, "Content-Encoding": "gzip"}, data=upload)
    assert "compressed" in error_of(gzipped, 400, "KFR-004")["errorMessage"]
    assert served.relationship_count() == 0
    assert not any(customer in caplog.text for customer in customers)


def test_report_end_report_on_one_day_says_what_to_do(bank, ids):
    customer = ids.person()
    assert bank.call("POST", RELATIONSHIP, {"CustomerID": customer}).status_code == 201
    assert bank.call("DELETE", RELATIONSHIP, {"CustomerID": customer}).status_code == 204
    again = bank.call("POST", RELATIONSHIP, {"CustomerID": customer})
    assert "tomorrow" in error_of(again, 409, "KFR-004")["errorMessage"]


def test_a_refusal_for_another_fid_names_no_value(bank, ids):
    company = ids.company()  # a customer's org number put where the institution's goes
    path = RELATIONSHIP.replace(INSTITUTION_ORG, company)
    body = error_of(bank.call("POST", path, {"CustomerID": ids.person()}), 403, "KFR-003")
    assert company not in body["errorMessage"]
