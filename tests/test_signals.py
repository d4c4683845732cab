"""Running ``kfr serve`` as an SRE would: SIGTERM drains, SIGHUP reloads."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import ServerProcess, start_server
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.cli import main
from kfr_grpc.client import KfrClient
from kfr_grpc.clock import SystemClock
from kfr_grpc.dev import pki, tokens
from kfr_grpc.dev.setup import TEST_AGENCY_ORG, TEST_INSTITUTION_ORG, TEST_MANDATE, DevSetup
from kfr_grpc.server import open_store

WRITE, READ = "bits:kundeforhold.write", "bits:kundeforhold"


class Served:
    """``kfr serve`` on a fresh dev setup with ``extra_config`` appended."""

    def __init__(self, directory: Path, extra_config: str) -> None:
        result = CliRunner().invoke(
            main, ["dev", "init", str(directory), "--listen", "127.0.0.1:0"]
        )
        assert result.exit_code == 0, result.output
        self.setup = DevSetup(directory)
        with self.setup.config.open("a") as config:
            config.write("\n" + extra_config + "\n")
        self.server: ServerProcess = start_server(self.setup.config)
        self.clients = self.setup.clients(self.server.target)

    def institution(self, **kwargs) -> KfrClient:
        return self.clients.client(
            self.setup.identity("institution"), own_connection=True, **kwargs
        )

    def agency(self, **kwargs) -> KfrClient:
        return self.clients.client(self.setup.identity("agency"), own_connection=True, **kwargs)

    def wait_for_log(self, text: str, timeout: float = 10) -> None:
        """Until the server's log says ``text`` (it acts on a signal in its own time)."""
        deadline = time.monotonic() + timeout
        while text not in self.server.log():
            assert time.monotonic() < deadline, f"the server never logged {text!r}"
            time.sleep(0.02)


@pytest.fixture
def served_factory(tmp_path: Path):
    started: list[Served] = []

    def make(extra_config: str = "") -> Served:
        served = Served(tmp_path / f"dev{len(started)}", extra_config)
        started.append(served)
        return served

    yield make
    for served in started:
        served.server.kill()


def _lookup(client: KfrClient, customer: str, mandate: str = TEST_MANDATE) -> int:
    request = pb.LookupRequest(
        customer_id=customer, legal_mandate=mandate, account_info_request_id=str(uuid.uuid4())
    )
    return len(client.lookups.Lookup(request, timeout=10).institutions)


def test_sigterm_lets_calls_in_flight_finish_then_exits_cleanly(served_factory, ids):
    served = served_factory("[server]\ngrace_seconds = 20\ndrain_notice_seconds = 3")
    institution = served.institution()
    health = health_pb2_grpc.HealthStub(served.agency().channel)
    customers = [[ids.person() for _ in range(100)] for _ in range(3)]
    first_sent, go_on = threading.Event(), threading.Event()

    def chunks_held_back_after_the_first():
        for index, batch in enumerate(customers):
            yield pb.ReportRequest(
                institution_org_number=TEST_INSTITUTION_ORG if index == 0 else "",
                relationships=[pb.Relationship(customer_id=c, role=pb.ROLE_OWNER) for c in batch],
            )
            first_sent.set()
            assert go_on.wait(30)

    results: dict[str, object] = {}
    stream = threading.Thread(
        target=lambda: results.update(
            response=institution.institutions.ReportStream(
                chunks_held_back_after_the_first(), timeout=60
            )
        )
    )
    stream.start()
    assert first_sent.wait(10)
    served.server.signal(signal.SIGTERM)
    served.wait_for_log("stopping: NOT_SERVING")
    # Inside the drain notice: still answering, but NOT_SERVING.
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    go_on.set()  # the call in flight goes on and completes
    stream.join(timeout=60)
    assert results["response"].registered_count == 300
    assert served.server.stop() == 0
    assert "stopped" in served.server.log()
    with pytest.raises(grpc.RpcError) as refused:
        served.agency().lookups.Lookup(pb.LookupRequest(), timeout=3)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    from kfr_grpc.config import load_config

    store = open_store(load_config(served.setup.config))  # opens cleanly: LMDB was closed
    try:
        with store.read() as view:
            assert view.relationship_count() == 300
    finally:
        store.close()


def test_sighup_reloads_certificates_crl_jwks_and_agencies(served_factory, ids):
    served = served_factory("[server]\nfile_check_seconds = 3600")  # only SIGHUP looks again
    setup = served.setup
    customer = ids.person()
    served.institution().institutions.Report(
        pb.ReportRequest(
            institution_org_number=TEST_INSTITUTION_ORG,
            relationships=[pb.Relationship(customer_id=customer, role=pb.ROLE_OWNER)],
        )
    )
    old_agency = served.agency()  # a connection open across the reload
    assert _lookup(old_agency, customer) == 1
    new_mandate = "Tvangsfullbyrdelsesloven § 7-9"
    with pytest.raises(grpc.RpcError) as denied:
        _lookup(served.agency(), customer, new_mandate)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED

    # The operator: a new server certificate from a new CA, a revoked agency certificate
    # replaced by a fresh one, a new token signing key, and one more mandate.
    new_ca = pki.make_ca("KFR renewed server CA")
    new_ca.write(setup.file("server-ca.crt"), setup.file("server-ca.key"))
    pki.issue_server(new_ca).write(setup.file("server.crt"), setup.file("server.key"))
    dev_ca = pki.Issued.load(setup.file("ca.crt"), setup.file("ca.key"))
    setup.revoke(setup.file("institution.crt"))
    new_key = tokens.new_signing_key()
    old_key, old_kid = tokens.read_signing_key(setup.file("token-signing.key"))
    tokens.write_jwks(setup.file("jwks.json"), {old_kid: old_key, "rotated-2": new_key})
    config = setup.config.read_text().replace(
        f'mandates = ["{TEST_MANDATE}"]', f'mandates = ["{TEST_MANDATE}", "{new_mandate}"]'
    )
    setup.config.write_text(config)
    served.server.signal(signal.SIGHUP)
    served.wait_for_log("reloaded: server certificate")

    dev_issuer = setup.token_issuer()
    rotated = tokens.TokenIssuer(new_key, "rotated-2", dev_issuer.issuer, dev_issuer.audience)
    token = rotated.mint(TEST_AGENCY_ORG, READ, now=SystemClock().now())
    agency_identity = setup.identity("agency")
    agency = served.clients.client(
        agency_identity, token=token, ca=setup.file("server-ca.crt"), own_connection=True
    )
    assert _lookup(agency, customer, new_mandate) == 1  # new cert, new JWKS, new mandate
    assert _lookup(old_agency, customer) == 1  # the open connection was not dropped
    with pytest.raises(grpc.RpcError) as revoked:  # the CRL was re-read
        institution = served.clients.client(
            setup.identity("institution"),
            token=rotated.mint(TEST_INSTITUTION_ORG, WRITE, now=SystemClock().now()),
            ca=setup.file("server-ca.crt"),
            own_connection=True,
        )
        institution.institutions.ListOwn(
            pb.ListOwnRequest(institution_org_number=TEST_INSTITUTION_ORG, customer_id=customer)
        )
    assert revoked.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as old_ca:  # clients trusting only the old CA: gone
        _lookup(served.agency(), customer)
    assert old_ca.value.code() is grpc.StatusCode.UNAVAILABLE
    assert dev_ca.certificate.subject != new_ca.certificate.subject
    assert served.server.stop() == 0
    assert "reloaded" in served.server.log()


def test_sighup_with_a_broken_configuration_changes_nothing(served_factory, ids):
    served = served_factory("[server]\nfile_check_seconds = 3600")
    setup, customer = served.setup, ids.person()
    served.institution().institutions.Report(
        pb.ReportRequest(
            institution_org_number=TEST_INSTITUTION_ORG,
            relationships=[pb.Relationship(customer_id=customer, role=pb.ROLE_OWNER)],
        )
    )
    agency = served.agency()  # (the test's own client reads the config too)
    good = setup.config.read_text()
    # A half-edited file: the agency's mandates gone, and a table that does not parse.
    setup.config.write_text(good.replace(f'mandates = ["{TEST_MANDATE}"]', "mandates = [") + "\n")
    served.server.signal(signal.SIGHUP)
    served.wait_for_log("reload failed, nothing changed")
    assert _lookup(agency, customer) == 1  # the agency and its mandate still stand
    assert served.server.process.poll() is None
    setup.config.write_text(good)
    assert served.server.stop() == 0


def test_calls_still_running_when_the_grace_period_ends_are_cancelled(served_factory, ids):
    served = served_factory("[server]\ngrace_seconds = 1")
    institution = served.institution()
    first_sent, never = threading.Event(), threading.Event()

    def one_chunk_then_nothing():
        yield pb.ReportRequest(
            institution_org_number=TEST_INSTITUTION_ORG,
            relationships=[pb.Relationship(customer_id=ids.person(), role=pb.ROLE_OWNER)],
        )
        first_sent.set()
        never.wait(60)  # a client that never finishes its stream

    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            institution.institutions.ReportStream(one_chunk_then_nothing(), timeout=60)
        except grpc.RpcError as error:
            outcome["code"] = error.code()

    stream = threading.Thread(target=call)
    stream.start()
    assert first_sent.wait(10)
    started = time.monotonic()
    assert served.server.stop(timeout=30) == 0  # SIGTERM: grace 1 s, then the call is cut
    assert time.monotonic() - started < 15
    never.set()
    stream.join(timeout=30)
    assert outcome["code"] in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    log = served.server.log()
    assert "stopped" in log
    assert '"method": "/kfr.v1.InstitutionService/ReportStream"' in log
    line = next(row for row in log.splitlines() if "ReportStream" in row and '"status"' in row)
    assert '"status": "CANCELLED"' in line, line
