"""Cluster mode against real etcd members (three, on loopback) and real nodes: replication,
linearizable reads across nodes, a node from a backup catching up, compaction, the
scheduler, writes without quorum, and what etcd holds."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.cluster.connect import etcd_client
from kfr_grpc.cluster.etcd import prefix_end
from kfr_grpc.cluster.log import ReplicatedLog
from kfr_grpc.config import load_config
from kfr_grpc.dev.etcd import LocalEtcd, unused_ports
from kfr_grpc.dev.setup import TEST_MANDATE as DEV_MANDATE
from kfr_grpc.dev.synthetic import synthetic_person_id
from kfr_grpc.register.digest import content_digest
from tests.support import INSTITUTION_ORG, MANDATE, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    with LocalEtcd(tmp_path / "etcd", members=3) as cluster:
        yield cluster


@pytest.fixture
def nodes(etcd: LocalEtcd, server_factory):
    """``nodes(n)``: n started nodes of one cluster (prefix of its own per test)."""
    made = []

    def start(count: int, *, rest: bool = False, **settings: str):
        extra = "\n".join(f"{key} = {value}" for key, value in settings.items())
        for _ in range(count):
            name = f"node{len(made) + 1}"
            endpoints = ", ".join(f'"{endpoint}"' for endpoint in etcd.endpoints)
            made.append(
                server_factory(
                    cluster_toml=f'node = "{name}"\netcd_endpoints = [{endpoints}]\n'
                    f"etcd_timeout_seconds = 1.5\n{extra}",
                    rest=rest,
                )
            )
        return made

    return start


def _report(node, customer: str, role=pb.ROLE_OWNER, timeout: float = 10):
    client = node.client(node.pki.institution)
    request = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[pb.Relationship(customer_id=customer, role=role, start_date="2020-01-01")],
    )
    return client.institutions.Report(request, timeout=timeout)


def _lookup(node, customer: str, timeout: float = 10) -> list[str]:
    client = node.client(node.pki.agency)
    request = pb.LookupRequest(
        customer_id=customer, legal_mandate=MANDATE, account_info_request_id=str(uuid.uuid4())
    )
    response = client.lookups.Lookup(request, timeout=timeout)
    return [relation.org_number for relation in response.institutions]


def _digest(node) -> tuple[int, str]:
    with node.server.store.read() as view:
        return node.server.store.log_position(), content_digest(view).digest


def test_a_write_on_one_node_is_read_on_every_other_at_once(nodes, ids):
    first, second, third = nodes(3)
    for n in range(20):
        customer = ids.person()
        _report((first, second, third)[n % 3], customer)
        # Linearizable: acknowledged on one node, so visible on the others right away.
        assert _lookup((second, third, first)[n % 3], customer) == [INSTITUTION_ORG]
    digests = {_digest(node) for node in (first, second, third)}
    assert len(digests) == 1, digests


def test_etcd_holds_no_customer_id_in_clear(nodes, ids, etcd):
    (node,) = nodes(1)
    customers = [ids.person() for _ in range(10)]
    for customer in customers:
        _report(node, customer)
    client = etcd_client(load_config(node.config_path).cluster)
    try:
        everything = client.range(b"\0", b"\xff")  # every key
    finally:
        client.close()
    blob = b"".join(kv.key + kv.value for kv in everything.kvs)
    assert len(everything.kvs) > 10  # the log is there
    for customer in customers:
        assert customer.encode() not in blob


def test_a_node_from_a_backup_catches_up_and_a_node_behind_the_compacted_log_says_so(
    nodes, ids, tmp_path, server_factory
):
    first, second = nodes(2)
    early = [ids.person() for _ in range(5)]
    for customer in early:
        _report(first, customer)
    backup = tmp_path / "backup"
    first.server.store.backup(backup)
    late = [ids.person() for _ in range(5)]
    for customer in late:
        _report(second, customer)

    # The second node is replaced: its data directory from the first node's backup.
    second.stop()
    import shutil

    shutil.rmtree(second.data_dir)
    shutil.copytree(backup, second.data_dir)
    second.start()
    for customer in early + late:
        assert _lookup(second, customer) == [INSTITUTION_ORG]
    assert _digest(first) == _digest(second)

    # Compaction: every registered node has applied everything, and with no window it
    # all goes; a store from before (the backup) cannot catch up any more.
    replicated_log = ReplicatedLog(etcd_client(load_config(first.config_path).cluster), "/kfr/")
    wait_for(
        lambda: min(n.applied for n in replicated_log.nodes()) == replicated_log.head(),
        "every node's heartbeat at the head",
    )
    replicated_log.mark(time.time())
    first_kept = replicated_log.compact(time.time() + 1, window_seconds=0)
    assert first_kept == replicated_log.head() + 1
    second.stop()
    shutil.rmtree(second.data_dir)
    shutil.copytree(backup, second.data_dir)
    second.start()
    wait_for(lambda: not second.server.store.available(), "the node behind says it cannot serve")
    with pytest.raises(grpc.RpcError) as refused:
        _lookup(second, early[0])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "restore the data directory from a recent backup" in refused.value.details()
    replicated_log.etcd.close()


def test_scheduled_jobs_run_on_one_node_and_move_when_it_stops(nodes):
    first, second = nodes(2)
    wait_for(
        lambda: first.server.store.runs_scheduled_jobs or second.server.store.runs_scheduled_jobs,
        "a scheduler",
    )
    holder, other = (first, second) if first.server.store.runs_scheduled_jobs else (second, first)
    for _ in range(20):
        assert not (
            first.server.store.runs_scheduled_jobs and second.server.store.runs_scheduled_jobs
        )
        time.sleep(0.1)
    holder.stop()
    wait_for(lambda: other.server.store.runs_scheduled_jobs, "the other node takes over", 15)


def test_without_an_etcd_quorum_writes_and_reads_fail_fast_and_health_says_so(nodes, ids, etcd):
    (node,) = nodes(1)
    customer = ids.person()
    _report(node, customer)
    etcd.kill("etcd1")
    etcd.kill("etcd2")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as refused:
        _report(node, ids.person(), timeout=8)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 6
    with pytest.raises(grpc.RpcError) as unread:
        _lookup(node, customer, timeout=8)
    assert unread.value.code() == grpc.StatusCode.UNAVAILABLE
    health = health_pb2_grpc.HealthStub(node.client(node.pki.institution).channel)

    wait_for(
        lambda: (
            health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.NOT_SERVING
        ),
        "NOT_SERVING without quorum",
    )
    etcd.restart("etcd1")
    wait_for(
        lambda: (
            health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        ),
        "SERVING again with quorum",
        30,
    )
    assert _lookup(node, customer) == [INSTITUTION_ORG]


def test_a_local_read_node_answers_from_its_own_store(nodes, ids):
    (node,) = nodes(1, reads='"local"')
    customer = ids.person()
    _report(node, customer)
    assert _lookup(node, customer) == [INSTITUTION_ORG]
    assert node.server.store.reads_wait is False


def test_admin_commands_write_through_the_log(nodes):
    first, second = nodes(2)
    kfr = Path(sys.executable).parent / "kfr"
    added = subprocess.run(
        [kfr, "institutions", "add", "317000006", "Nybanken", "--config", first.config_path],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    second.server.store.sync()
    with second.server.store.read() as view:
        assert view.institution("317000006").name == "Nybanken"


def test_etcd_prefix_range_end():
    assert prefix_end(b"/kfr/") == b"/kfr0"


def test_dev_cluster_runs_from_its_procfile_and_the_client_spreads_over_the_nodes(tmp_path):
    """`kfr dev cluster`, every Procfile line started as written, then what a newcomer
    does: report through the node list, look up, status, digests."""
    kfr = str(Path(sys.executable).parent / "kfr")
    directory = tmp_path / "cluster"
    base = unused_ports(1)[0] // 10 * 10 % 40000 + 20000
    made = subprocess.run(
        [kfr, "dev", "cluster", str(directory), "--base-port", str(base)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    processes = []
    try:
        for line in (directory / "Procfile").read_text().splitlines():
            name, _, command = line.partition(": ")
            log = (tmp_path / f"{name}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    shlex.split(command), stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
        nodes = ",".join(f"localhost:{base + 2 * n}" for n in range(3))
        client = ["--target", nodes, "--dev", str(directory), "--ca", str(directory / "ca.crt")]
        customer = synthetic_person_id(random.Random(5))

        def as_institution(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [kfr, *args, *client, "--cert", str(directory / "institution.crt"),
                 "--key", str(directory / "institution.key")],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        wait_for(
            lambda: (
                as_institution("report", "--institution", INSTITUTION_ORG, customer).returncode == 0
            ),
            "a report through the node list",
            60,
        )
        for _ in range(3):  # round robin: each node answers one
            found = subprocess.run(
                [kfr, "lookup", *client, "--cert", str(directory / "agency.crt"),
                 "--key", str(directory / "agency.key"), "--mandate", DEV_MANDATE, customer],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert found.returncode == 0, found.stderr
            assert INSTITUTION_ORG in found.stdout
        status = subprocess.run(
            [kfr, "cluster", "status", "--config", str(directory / "node1" / "kfr.toml")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        assert sorted(node["name"] for node in document["nodes"]) == ["node1", "node2", "node3"]
        assert all(member["healthy"] for member in document["etcd"])

        def digests() -> set[str]:
            return {
                subprocess.run(
                    [kfr, "digest", "--config", str(directory / f"node{n}" / "kfr.toml")],
                    capture_output=True, text=True, timeout=60,
                ).stdout
                for n in (1, 2, 3)
            }  # fmt: skip

        wait_for(lambda: len(digests()) == 1, "equal digests on every node")
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_a_cluster_rebuilt_from_a_backup_starts_its_new_log_at_the_backups_position(
    nodes, ids, tmp_path
):
    (node,) = nodes(1)
    customer = ids.person()
    _report(node, customer)
    node.server.store.backup(tmp_path / "backup")
    node.stop()
    # Every node lost, etcd's log too (here: a new prefix): restore, seed, serve.
    import shutil

    shutil.rmtree(node.data_dir)
    shutil.copytree(tmp_path / "backup", node.data_dir)
    config = node.config_path.read_text()
    node.config_path.write_text(config.replace("[cluster]\n", '[cluster]\nprefix = "/kfr2/"\n'))
    kfr = Path(sys.executable).parent / "kfr"
    command = [kfr, "cluster", "seed", "--config", node.config_path]
    seeded = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert seeded.returncode == 0, seeded.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "not empty" in again.stderr
    node.start()
    assert _lookup(node, customer) == [INSTITUTION_ORG]
    later = ids.person()
    _report(node, later)
    assert _lookup(node, later) == [INSTITUTION_ORG]


def test_a_write_refused_or_changing_nothing_on_a_node_behind_is_run_again_at_the_head(nodes, ids):
    """Report on one node, End at once on another (whose log thread may not have applied
    the report yet): the End finds it, every time; a repeated report is 'already'."""
    first, second = nodes(2)
    ender = second.client(second.pki.institution)
    for _ in range(20):
        customer = ids.person()
        _report(first, customer)
        request = pb.EndRequest(
            institution_org_number=INSTITUTION_ORG,
            endings=[pb.Ending(customer_id=customer, role=pb.ROLE_OWNER, end_date="2024-01-01")],
        )
        assert ender.institutions.End(request, timeout=10).ended_count == 1
        another = ids.person()
        _report(first, another)
        assert _report(second, another).already_registered_count == 1


def test_kinds_corrections_reconciliation_and_participants_through_the_log(nodes, ids):
    from tests.test_data_quality import ACCOUNT, IN_ERROR, LOAN, own, reconcile, report, retract

    first, second = nodes(2)
    bank_one = first.client(first.pki.institution)
    bank_two = second.client(second.pki.institution)
    kept, mistaken, gone = ids.person(), ids.person(), ids.person()
    report(
        bank_one, (kept, pb.ROLE_OWNER, ACCOUNT, "2020-01-01"),
        (mistaken, pb.ROLE_OWNER, LOAN, "2020-01-01"), (gone, pb.ROLE_OWNER, LOAN, "2020-01-01"),
    )  # fmt: skip
    assert (
        retract(bank_two, (mistaken, pb.ROLE_OWNER, LOAN, "2020-01-01", IN_ERROR)).retracted_count
        == 1
    )
    applied = reconcile(bank_two, [(kept, pb.ROLE_OWNER, ACCOUNT)], apply=True)
    assert (applied.matched_count, applied.ended_count) == (1, 1)
    assert own(bank_one, mistaken) == []
    assert own(bank_one, gone)[0][2][0][1] != ""  # ended, seen on the other node at once
    agency = first.client(first.pki.agency)
    answer = agency.lookups.Lookup(pb.LookupRequest(
        customer_id=kept, from_date="2020-01-01", legal_mandate=MANDATE,
        account_info_request_id=str(uuid.uuid4()),
    ))  # fmt: skip
    assert [i.ownership_type for i in answer.institutions] == [pb.OWNERSHIP_TYPE_PRIMARY_OWNER]
    assert [p.org_number for p in answer.joined_after_from_date] == [INSTITUTION_ORG]
    assert len({_digest(node) for node in (first, second)}) == 1


def test_the_rest_contract_writes_through_the_log_and_reads_on_every_node(nodes, ids):
    from urllib.parse import quote

    from tests.test_rest import BATCH, LOOKUP, RELATIONSHIP, old_client_upload

    first, second = nodes(2, rest=True)
    bank_one, bank_two = (node.rest(node.pki.institution) for node in (first, second))
    customers = [ids.person() for _ in range(3)]
    assert bank_one.call("POST", RELATIONSHIP, {"CustomerID": customers[0]}).status_code == 201
    headers, body = old_client_upload(",".join(customers[1:]).encode())
    loaded = bank_two.call("POST", BATCH, headers, data=body)
    assert loaded.status_code == 201 and loaded.json()["registered"] == 2, loaded.text
    for node in (first, second):
        agency = node.rest(node.pki.agency)
        for customer in customers:
            found = agency.call("GET", LOOKUP, {
                "CustomerID": customer, "Legal-Mandate": quote(MANDATE),
                "AccountInfoRequestID": str(uuid.uuid4()),
            })  # fmt: skip
            assert [b["organizationID"] for b in found.json()["banks"]] == [INSTITUTION_ORG]
    assert bank_two.call("DELETE", RELATIONSHIP, {"CustomerID": customers[0]}).status_code == 204
    own = first.client(first.pki.institution).institutions.ListOwn(
        pb.ListOwnRequest(institution_org_number=INSTITUTION_ORG, customer_id=customers[0]),
        timeout=10,
    )
    assert own.relationships[0].periods[-1].end_date == first.clock.today().isoformat()
    assert len({_digest(node) for node in (first, second)}) == 1
