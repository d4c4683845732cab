"""Crash safety: ``kill -9`` the server in the middle of a bulk load and of a stream of
Report/End calls, restart it, and check that every acknowledged item is there, that no
request or chunk is half applied, and that the store opens cleanly.

``make test`` runs 2 rounds; ``make crash`` runs ``KFR_CRASH_ROUNDS`` (default 10).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from click.testing import CliRunner

from bench.common import free_port, wait_for_port
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.cli import main
from kfr_grpc.client import KfrClient, secure_channel
from kfr_grpc.clock import SystemClock
from kfr_grpc.config import load_config
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG, DevSetup
from kfr_grpc.dev.synthetic import unique_synthetic_person_ids
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
from kfr_grpc.register.model import Role
from kfr_grpc.server import open_store
from tests.test_cli import KFR

ROUNDS = int(os.environ.get("KFR_CRASH_ROUNDS", "2"))
OWNER = pb.ROLE_OWNER
END_DAY = "2021-01-01"


@dataclass
class Sent:
    """One request or chunk: its customers, and whether the server acknowledged it."""

    kind: str  # "report", "end" or "chunk"
    customers: list[str]
    acknowledged: bool = False


class _SharedIds:
    """One stream of distinct IDs for several threads (a generator is not thread-safe)."""

    def __init__(self, source) -> None:
        self._source, self._lock = source, threading.Lock()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        with self._lock:
            return next(self._source)


@dataclass
class Load:
    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def record(self, item: Sent) -> Sent:
        with self.lock:
            self.sent.append(item)
        return item


def _client(setup: DevSetup, port: int) -> KfrClient:
    token = setup.token_issuer().mint(
        TEST_INSTITUTION_ORG, "bits:kundeforhold.write", now=SystemClock().now(), ttl=600
    )
    return KfrClient(
        secure_channel(
            f"localhost:{port}", ca=setup.file("ca.crt"), cert=setup.file("institution.crt"),
            key=setup.file("institution.key"), token=token, own_connection=True,
        )
    )  # fmt: skip


def _bulk(client: KfrClient, ids, load: Load) -> None:
    """One endless ReportStream of 500-item chunks, until the server dies."""

    def chunks():
        first = True
        while not load.stop.is_set():
            batch = [next(ids) for _ in range(500)]
            load.record(Sent("chunk", batch))
            yield pb.ReportRequest(
                institution_org_number=TEST_INSTITUTION_ORG if first else "",
                relationships=[pb.Relationship(customer_id=c, role=OWNER, start_date="2020-01-01")
                               for c in batch],
            )  # fmt: skip
            first = False

    with contextlib.suppress(grpc.RpcError):
        client.institutions.ReportStream(chunks(), timeout=60)


def _calls(client: KfrClient, ids, load: Load, rng: random.Random) -> None:
    """Report 10 new customers, then End 10 acknowledged ones, until the server dies."""
    reported: list[str] = []
    while not load.stop.is_set():
        if len(reported) >= 10 and rng.random() < 0.4:
            batch, reported = reported[:10], reported[10:]
            sent = load.record(Sent("end", batch))
            request = pb.EndRequest(
                institution_org_number=TEST_INSTITUTION_ORG,
                endings=[pb.Ending(customer_id=c, role=OWNER, end_date=END_DAY) for c in batch],
            )
            call = client.institutions.End
        else:
            batch = [next(ids) for _ in range(10)]
            sent = load.record(Sent("report", batch))
            request = pb.ReportRequest(
                institution_org_number=TEST_INSTITUTION_ORG,
                relationships=[pb.Relationship(customer_id=c, role=OWNER, start_date="2020-01-01")
                               for c in batch],
            )  # fmt: skip
            call = client.institutions.Report
        try:
            call(request, timeout=10)
        except grpc.RpcError:
            return
        sent.acknowledged = True
        if sent.kind == "report":
            reported.extend(batch)


def _state(setup: DevSetup, customers: list[str]) -> dict[str, str]:
    """'active', 'ended' or 'absent' for each customer, read from the store directly."""
    store = open_store(load_config(setup.config))
    try:
        with store.read() as view:
            states = {}
            for customer in customers:
                history = view.history(
                    CustomerId(customer, CustomerKind.PERSON), TEST_INSTITUTION_ORG, Role.OWNER
                )
                states[customer] = (
                    "absent" if not history else "active" if history[-1].end is None else "ended"
                )
            return states
    finally:
        store.close()


def _check(setup: DevSetup, load: Load) -> tuple[int, int]:
    everyone = [c for item in load.sent for c in item.customers]
    states = _state(setup, everyone)
    acknowledged = 0
    for item in load.sent:
        seen = {states[c] for c in item.customers}
        if item.kind == "end":
            applied = {"ended"}
            assert seen in ({"ended"}, {"active"}), f"an End was half applied: {seen}"
        else:
            applied = {"active", "ended"}
            assert seen <= applied or seen == {"absent"}, f"a {item.kind} was half applied: {seen}"
        if item.acknowledged:
            acknowledged += 1
            assert seen <= applied, f"an acknowledged {item.kind} was lost: {seen}"
    return acknowledged, len(load.sent)


def test_kill_9_during_writes_loses_nothing_acknowledged(tmp_path: Path, capsys):
    port = free_port()
    CliRunner().invoke(main, ["dev", "init", str(tmp_path), "--listen", f"127.0.0.1:{port}"])
    setup = DevSetup(tmp_path)
    ids = _SharedIds(unique_synthetic_person_ids(seed=17))
    rng = random.Random(17)
    summary = []
    for _ in range(ROUNDS):
        server = subprocess.Popen([KFR, "serve", "--config", str(setup.config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for_port(port, server)
        load = Load()
        threads = [threading.Thread(target=_bulk, args=(_client(setup, port), ids, load))]
        threads += [
            threading.Thread(target=_calls, args=(_client(setup, port), ids, load, rng))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.8, 2.5))
        server.send_signal(signal.SIGKILL)  # kill -9, in the middle of everything
        server.wait()
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        acknowledged, sent = _check(setup, load)
        summary.append((acknowledged, sent))
        assert acknowledged > 0, "the load did not get going before the kill"
    # And after all that, the server starts and serves.
    server = subprocess.Popen([KFR, "serve", "--config", str(setup.config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, server)
        client = _client(setup, port)
        client.institutions.ListOwn(
            pb.ListOwnRequest(institution_org_number=TEST_INSTITUTION_ORG, customer_id=next(ids)),
            timeout=10,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    with capsys.disabled():
        print(f"\ncrash rounds: {ROUNDS}; (acknowledged, sent) per round: {summary}")
