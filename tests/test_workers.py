"""``kfr serve --workers N``: processes sharing the store and the port, and the supervisor
that restarts a worker that dies and gives up on one that crash-loops."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.common import ServerProcess, reserved_port, running, start_server
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.cli import main
from kfr_grpc.client import KfrClient
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG, TEST_MANDATE, DevSetup


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[DevSetup]:
    with reserved_port() as port:  # workers share a fixed port: held here, so no one takes it
        result = CliRunner().invoke(
            main,
            ["dev", "init", str(tmp_path), "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", "127.0.0.1:0"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        yield DevSetup(tmp_path)


@pytest.fixture
def workers(setup: DevSetup) -> Iterator[ServerProcess]:
    server = start_server(setup.config, workers=2)
    yield server
    if server.process.poll() is None:
        server.stop(timeout=60)
    server.kill()  # and wait for every worker to be gone


def _clients(setup: DevSetup, server: ServerProcess, who: str, count: int) -> list[KfrClient]:
    clients = setup.clients(server.target)
    return [clients.client(setup.identity(who), own_connection=True) for _ in range(count)]


def _report(client: KfrClient, customer: str, correlation: str = "") -> None:
    client.institutions.Report(
        pb.ReportRequest(
            institution_org_number=TEST_INSTITUTION_ORG,
            relationships=[pb.Relationship(customer_id=customer, role=pb.ROLE_OWNER)],
        ),
        metadata=(("correlation-id", correlation or str(uuid.uuid4())),),
        timeout=10,
    )


def _found(client: KfrClient, customer: str, correlation: str = "") -> int:
    request = pb.LookupRequest(
        customer_id=customer, legal_mandate=TEST_MANDATE, account_info_request_id=str(uuid.uuid4())
    )
    metadata = (("correlation-id", correlation or str(uuid.uuid4())),)
    return len(client.lookups.Lookup(request, metadata=metadata, timeout=10).institutions)


def test_every_worker_serves_before_the_ready_file_says_so(workers: ServerProcess):
    pids = [worker["pid"] for worker in workers.ready["workers"]]
    assert len(set(pids)) == 2 and all(running(pid) for pid in pids)


def test_a_write_on_one_worker_is_read_at_once_on_another(setup, workers, ids):
    writers = _clients(setup, workers, "institution", 6)
    readers = _clients(setup, workers, "agency", 6)
    pairs = []
    for writer in writers:
        for reader in readers:
            customer, write_id, read_id = ids.person(), str(uuid.uuid4()), str(uuid.uuid4())
            _report(writer, customer, write_id)
            pairs.append((write_id, read_id, _found(reader, customer, read_id)))
    for client in writers + readers:
        client.close()
    assert workers.stop(timeout=30) == 0
    log = workers.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    worker_of = {
        line["correlation_id"]: line["worker"] for line in lines if line["logger"] == "kfr.requests"
    }
    assert {p[2] for p in pairs} == {1}  # every read found the write just before it
    across = [(w, r) for w, r, _ in pairs if worker_of[w] != worker_of[r]]
    assert across, "no write and read landed on different workers"
    assert "all workers stopped" in log


def test_a_worker_that_dies_is_restarted_and_the_service_goes_on(setup, workers, ids):
    first = workers.ready["workers"][0]
    os.kill(first["pid"], signal.SIGKILL)
    workers.wait_until(lambda ready: first["pid"] not in [w["pid"] for w in ready["workers"]])
    assert "worker 0 was killed by SIGKILL; restarting it" in workers.log()
    (writer,) = _clients(setup, workers, "institution", 1)
    customer = ids.person()
    _report(writer, customer)
    for reader in _clients(setup, workers, "agency", 4):  # whichever worker answers
        assert _found(reader, customer) == 1
    assert workers.stop(timeout=30) == 0


def test_workers_stop_when_their_supervisor_is_killed(workers):
    pids = [worker["pid"] for worker in workers.ready["workers"]]
    workers.kill()  # waits until every worker (and its helpers) has ended
    assert not any(running(pid) for pid in pids)


def test_a_crash_looping_worker_stops_the_supervisor_with_status_1(setup, workers):
    setup.file("keyring.json").chmod(0o644)  # every new worker now refuses to start
    os.kill(workers.ready["workers"][1]["pid"], signal.SIGKILL)
    status = workers.process.wait(timeout=60)
    log = workers.log()
    assert status == 1, log[-2000:]
    assert "it is crash-looping: stopping every worker" in log
    assert "chmod 600" in log  # the workers' own reason is in the log too


def test_workers_need_a_fixed_port(tmp_path: Path):
    CliRunner().invoke(main, ["dev", "init", str(tmp_path), "--listen", "127.0.0.1:0"])
    result = CliRunner().invoke(
        main, ["serve", "--config", str(tmp_path / "kfr.toml"), "--workers", "2"]
    )
    assert result.exit_code == 1 and "fixed port" in result.output


def test_a_server_killed_with_sigkill_takes_its_helpers_along(tmp_path: Path):
    """The bulk-load validation helpers and multiprocessing's resource tracker die with
    the server, whatever kills it: a kill -9 leaves nothing running."""
    import time

    from bench.common import descendants

    made = CliRunner().invoke(main, ["dev", "init", str(tmp_path), "--listen", "127.0.0.1:0"])
    assert made.exit_code == 0, made.output
    server = start_server(DevSetup(tmp_path).config)
    try:
        helpers = descendants(server.process.pid)
        assert helpers, "the server started no helper process"  # the control
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in helpers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in helpers if running(pid)] == []
    finally:
        server.kill()
