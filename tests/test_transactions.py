"""How the register meets its store: one committed transaction per call (its changes and
its request record together), nothing written by opening a store or by a read-only
command, and a register that loads no storage engine."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.cli import main
from kfr_grpc.config import load_config
from kfr_grpc.dev.setup import create_dev_setup
from kfr_grpc.server import open_store
from tests.support import INSTITUTION_ORG, RunningServer
from tests.test_bulk import stream
from tests.test_server import end, list_own, lookup, report, rpc_error

OWNER = pb.ROLE_OWNER


@pytest.fixture
def commits(server: RunningServer, monkeypatch) -> list[str]:
    """The write transactions the server's store commits, as they happen."""
    store = server.server.store
    committed: list[str] = []
    original = store._run

    def counting(txn, databases, work):
        result = original(txn, databases, work)
        committed.append(getattr(work, "__qualname__", "?"))
        return result

    monkeypatch.setattr(store, "_run", counting)
    return committed


def _request_log(client, correlation: str) -> list[pb.RequestLogRecord]:
    request = pb.GetRequestLogRequest(
        institution_org_number=INSTITUTION_ORG, correlation_id=correlation
    )
    return list(client.institutions.GetRequestLog(request).records)


def test_a_write_call_commits_once_with_its_record(server, ids, commits):
    client = server.client(server.pki.institution)
    customer, correlation = ids.person(), str(uuid.uuid4())
    request = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[pb.Relationship(customer_id=customer, role=OWNER, start_date="2020-01-01")],
    )
    client.institutions.Report(request, metadata=(("correlation-id", correlation),))
    assert len(commits) == 1  # the relationship and the request record, together
    (record,) = _request_log(client, correlation)
    assert record.status == "OK" and dict(record.counts)["registered"] == 1

    for call in (
        lambda: end(client, INSTITUTION_ORG, (customer, OWNER, "2021-01-01")),
        lambda: list_own(client, INSTITUTION_ORG, customer),
        lambda: rpc_error(report, client, INSTITUTION_ORG, (customer[:-1] + "x", OWNER, "")),
        lambda: rpc_error(end, client, INSTITUTION_ORG, (ids.person(), OWNER, "")),
    ):
        commits.clear()
        call()
        assert len(commits) == 1, commits  # a refused call: its record only


def test_a_bulk_load_written_slower_than_it_arrives_commits_its_chunks_together(
    server, ids, commits, monkeypatch
):
    """Chunks that arrive while a transaction commits wait and go into the next one
    together: fewer, larger commits, the same counts and positions, and the request
    record in the last one."""
    store = server.server.store
    counting = store._run

    def slow(txn, databases, work):
        time.sleep(0.2)  # a slow disk: each commit takes its time
        return counting(txn, databases, work)

    monkeypatch.setattr(store, "_run", slow)
    client = server.client(server.pki.institution)
    chunks = [[(ids.person(), OWNER, "2020-01-01") for _ in range(10)] for _ in range(12)]
    bad = chunks[7][3][0]
    chunks[7][3] = (bad[:-1] + str((int(bad[-1]) + 1) % 10), OWNER, "")  # a check digit off
    correlation = str(uuid.uuid4())
    response = stream(client, *chunks, correlation=correlation)
    assert (response.registered_count, response.rejected_count) == (119, 1)
    assert [(r.position, r.code) for r in response.rejected] == [(73, "CUSTOMER_ID_CHECKSUM")]
    assert 1 < len(commits) < 12, commits  # grouped: not one transaction per chunk
    assert server.relationship_count() == 119
    (record,) = _request_log(client, correlation)
    assert dict(record.counts) == {
        "registered": 119, "already_registered": 0, "rejected": 1, "chunks": 12,
    }  # fmt: skip


def test_a_lookup_commits_nothing(server, ids, commits):
    customer = ids.person()
    report(server.client(server.pki.institution), INSTITUTION_ORG, (customer, OWNER, ""))
    commits.clear()
    agency = server.client(server.pki.agency)
    assert lookup(agency, customer)
    rpc_error(lookup, agency, customer, legal_mandate="not ours")
    assert commits == []  # counters are kept in memory and stored by the maintenance thread


def test_a_refused_call_leaves_nothing_but_its_record(server, ids):
    client = server.client(server.pki.institution)
    good, correlation = ids.person(), str(uuid.uuid4())
    request = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[
            pb.Relationship(customer_id=good, role=OWNER),
            pb.Relationship(customer_id=good, role=7),  # an unknown role, with another fault
            pb.Relationship(customer_id=good[:-1] + "x", role=OWNER),
        ],
    )
    error = rpc_error(
        client.institutions.Report, request, metadata=(("correlation-id", correlation),)
    )
    assert server.relationship_count() == 0
    # One pass of validation reports every bad field, the unknown role among them.
    (record,) = _request_log(client, correlation)
    assert [(r.field, r.code) for r in record.rejected] == [
        ("relationships[1].role", "ROLE_UNKNOWN"),
        ("relationships[2].customer_id", "CUSTOMER_ID_MALFORMED"),
    ]
    assert record.status == "INVALID_ARGUMENT" == error.code().name


def _fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_opening_a_store_and_read_only_commands_write_nothing(tmp_path: Path):
    setup = create_dev_setup(tmp_path / "dev")
    data_file = setup.directory / "data" / "data.mdb"
    before = _fingerprint(data_file)
    store = open_store(load_config(setup.config))  # writable, but nothing to change
    store.close()
    config = ["--config", str(setup.config)]
    for command in (
        ["institutions", "list"],
        ["institutions", "collection-accounts", "311000004"],
        ["lookup-counts"],
        ["purge", "--dry-run"],
        ["doctor"],
        ["backup", str(tmp_path / "backup")],
    ):
        result = CliRunner().invoke(main, [*command, *config])
        assert result.exit_code in (0, 1), result.output  # doctor: no server to ask
    assert _fingerprint(data_file) == before


def test_the_register_loads_no_storage_engine_and_no_grpc():
    modules = (
        "kfr_grpc.register.service", "kfr_grpc.register.operations",
        "kfr_grpc.register.statistics", "kfr_grpc.register.storage", "kfr_grpc.register.bulk",
    )  # fmt: skip
    program = (
        f"import sys\nfor name in {modules!r}: __import__(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lmdb', 'grpc')"
        " or m.startswith(('kfr_grpc.store', 'kfr_grpc.api', 'kfr_grpc._proto'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
