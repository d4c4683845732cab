"""The operator's REST contract (README, REST) over real HTTPS: mutual TLS with the test
certificates, Maskinporten-style tokens, a real server and store. Every path, status and
error code of ``../shared/DSOP_REST.md``."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from urllib.parse import quote

import pytest

from tests.support import (
    AGENCY_ORG,
    INSTITUTION_NAME,
    INSTITUTION_ORG,
    MANDATE,
    OTHER_INSTITUTION_ORG,
    TODAY,
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
