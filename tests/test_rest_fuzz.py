"""Our OpenAPI document against the server: every path served is in it (and the other
way round), and a property-based fuzz (schemathesis, from the document) finds no 5xx, no
answer the document does not describe, and no write from a refused call.

``KFR_REST_FUZZ_EXAMPLES`` cases per operation and mode (make test: 25; `make fuzz`
runs more)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks

from tests.support import RestClient, openapi_schema

EXAMPLES = int(os.environ.get("KFR_REST_FUZZ_EXAMPLES", "25"))
_WRITES = {"reportCustomer", "reportBatch"}


@pytest.fixture
def served(server_factory):
    return server_factory(rest=True)


def test_every_path_served_is_in_the_openapi_document_and_back(served):
    document = openapi_schema().raw_schema["paths"]
    documented = {
        (method.upper(), path)
        for path, item in document.items()
        for method in item
        if method in ("get", "post", "delete", "put", "patch")
    }
    assert set(served.server.rest.paths()) == documented


def _operations():
    return [result.ok() for result in openapi_schema().get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("operation", _operations(), ids=lambda op: op.label)
def test_fuzz_finds_no_server_error_and_no_write_from_a_refused_call(served, operation, mode):
    agency = operation.path.startswith("/customers/c") or "accountServicing" in operation.path
    client = served.rest(served.pki.agency if agency else served.pki.institution)
    writes = operation.definition.raw.get("operationId") in _WRITES
    if mode is GenerationMode.NEGATIVE and operation.path == "/openapi.json":
        pytest.skip("it takes nothing that could be invalid")

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        before = served.relationship_count()
        response = case.call(
            base_url=client.url + RestClient.BASE, session=client.session,
            verify=client.session.verify, cert=client.session.cert,
        )  # fmt: skip
        assert response.status_code < 500, (response.status_code, response.text)
        # Every check but the acceptance of schema-valid data: check digits (customer IDs,
        # org and account numbers) are beyond a JSON schema, so valid-looking data is
        # refused (400) as it must be.
        case.validate_response(response, excluded_checks=[checks.positive_data_acceptance])
        if response.status_code >= 400 or not writes:
            assert served.relationship_count() == before, "a refused call wrote"

    run()
