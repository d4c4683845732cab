"""``kfr serve --workers N``: processes sharing the store and the port."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path

from click.testing import CliRunner

from bench.common import free_port, wait_for_port
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.cli import main
from kfr_grpc.client import KfrClient, secure_channel
from kfr_grpc.clock import SystemClock
from kfr_grpc.dev.setup import (
    TEST_AGENCY_ORG,
    TEST_INSTITUTION_ORG,
    TEST_MANDATE,
    DevSetup,
)
from tests.test_cli import KFR


def _client(setup: DevSetup, port: int, who: str, org: str, scope: str) -> KfrClient:
    cert = setup.file(f"{who}.crt")
    token = setup.token_issuer().mint(org, scope, now=SystemClock().now(), ttl=600)
    return KfrClient(
        secure_channel(
            f"localhost:{port}", ca=setup.file("ca.crt"), cert=cert, key=setup.file(f"{who}.key"),
            token=token, own_connection=True,
        )
    )  # fmt: skip


def test_a_write_on_one_worker_is_read_at_once_on_another(tmp_path: Path, ids):
    port = free_port()
    assert (
        CliRunner()
        .invoke(main, ["dev", "init", str(tmp_path), "--listen", f"127.0.0.1:{port}"])
        .exit_code
        == 0
    )
    setup = DevSetup(tmp_path)
    server = subprocess.Popen(
        [KFR, "serve", "--config", str(setup.config), "--workers", "2"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_port(port, server)
        writers = [
            _client(setup, port, "institution", TEST_INSTITUTION_ORG, "bits:kundeforhold.write")
            for _ in range(6)
        ]
        readers = [
            _client(setup, port, "agency", TEST_AGENCY_ORG, "bits:kundeforhold.read")
            for _ in range(6)
        ]
        pairs = []
        for writer in writers:
            for reader in readers:
                customer, write_id, read_id = ids.person(), str(uuid.uuid4()), str(uuid.uuid4())
                writer.institutions.Report(
                    pb.ReportRequest(
                        institution_org_number=TEST_INSTITUTION_ORG,
                        relationships=[pb.Relationship(customer_id=customer, role=pb.ROLE_OWNER)],
                    ),
                    metadata=(("correlation-id", write_id),),
                )
                found = reader.lookups.Lookup(
                    pb.LookupRequest(
                        customer_id=customer, legal_mandate=TEST_MANDATE,
                        account_info_request_id=str(uuid.uuid4()),
                    ),
                    metadata=(("correlation-id", read_id),),
                )  # fmt: skip
                pairs.append((write_id, read_id, len(found.institutions)))
        for client in writers + readers:
            client.close()
    finally:
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=30)
    assert server.returncode == 0, log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    worker_of = {
        line["correlation_id"]: line["worker"] for line in lines if line["logger"] == "kfr.requests"
    }
    assert {p[2] for p in pairs} == {1}  # every read found the write just before it
    across = [(w, r) for w, r, _ in pairs if worker_of[w] != worker_of[r]]
    assert across, "no write and read landed on different workers"
    assert "all workers stopped" in log


def test_workers_need_a_fixed_port(tmp_path: Path):
    CliRunner().invoke(main, ["dev", "init", str(tmp_path), "--listen", "127.0.0.1:0"])
    result = CliRunner().invoke(
        main, ["serve", "--config", str(tmp_path / "kfr.toml"), "--workers", "2"]
    )
    assert result.exit_code == 1 and "fixed port" in result.output
