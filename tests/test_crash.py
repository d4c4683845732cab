"""Crash safety: ``kill -9`` the server in the middle of bulk loads and of a stream of
Report/End calls, restart it, and check against the store itself that everything the
server acknowledged is there, that no call and no stream chunk is half applied, that the
chunks a stream committed are the first ones, and that the store opens cleanly.

Any failed call before the kill fails the test (an INTERNAL would otherwise hide behind
the crash), and after it only UNAVAILABLE is expected. A stream's answer acknowledges all
its chunks: the load is a series of short streams, so that many are answered before the
kill and one is cut off by it.

``make test`` runs 2 rounds; ``make crash`` runs ``KFR_CRASH_ROUNDS`` (default 10).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from click.testing import CliRunner

from bench.common import ServerProcess, start_server
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.cli import main
from kfr_grpc.client import KfrClient
from kfr_grpc.config import load_config
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG, DevSetup
from kfr_grpc.dev.synthetic import unique_synthetic_person_ids
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
from kfr_grpc.register.model import ProductKind, Role
from kfr_grpc.server import open_store

UNSPECIFIED = ProductKind.UNSPECIFIED

ROUNDS = int(os.environ.get("KFR_CRASH_ROUNDS", "2"))
OWNER = pb.ROLE_OWNER
END_DAY = "2021-01-01"
CHUNKS_PER_STREAM, CHUNK_ITEMS = 3, 500


@dataclass
class Sent:
    """One request or stream chunk: its customers, and whether the server acknowledged it.
    A chunk belongs to a stream (``stream``, ``index``)."""

    kind: str  # "report", "end" or "chunk"
    customers: list[str]
    acknowledged: bool = False
    stream: int = -1
    index: int = -1


@dataclass
class Load:
    sent: list[Sent] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (when, status)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def record(self, item: Sent) -> Sent:
        with self.lock:
            self.sent.append(item)
        return item

    def failed(self, error: grpc.RpcError) -> None:
        with self.lock:
            self.failures.append((time.monotonic(), error.code().name))


class _SharedIds:
    """One stream of distinct IDs for several threads (a generator is not thread-safe)."""

    def __init__(self, source) -> None:
        self._source, self._lock = source, threading.Lock()

    def take(self, count: int) -> list[str]:
        with self._lock:
            return [next(self._source) for _ in range(count)]


def _bulk(client: KfrClient, ids: _SharedIds, load: Load, streams: list[int]) -> None:
    """Short ReportStreams, one after the other, until the server dies."""
    while not load.stop.is_set():
        number = len(streams)
        streams.append(number)
        chunks = [
            load.record(Sent("chunk", ids.take(CHUNK_ITEMS), stream=number, index=index))
            for index in range(CHUNKS_PER_STREAM)
        ]
        messages = (
            pb.ReportRequest(
                institution_org_number=TEST_INSTITUTION_ORG if chunk.index == 0 else "",
                relationships=[
                    pb.Relationship(customer_id=c, role=OWNER, start_date="2020-01-01")
                    for c in chunk.customers
                ],
            )
            for chunk in chunks
        )
        try:
            client.institutions.ReportStream(messages, timeout=60)
        except grpc.RpcError as error:
            load.failed(error)
            return
        for chunk in chunks:
            chunk.acknowledged = True


def _calls(client: KfrClient, ids: _SharedIds, load: Load, rng: random.Random) -> None:
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
            batch = ids.take(10)
            sent = load.record(Sent("report", batch))
            request = pb.ReportRequest(
                institution_org_number=TEST_INSTITUTION_ORG,
                relationships=[pb.Relationship(customer_id=c, role=OWNER, start_date="2020-01-01")
                               for c in batch],
            )  # fmt: skip
            call = client.institutions.Report
        try:
            call(request, timeout=10)
        except grpc.RpcError as error:
            load.failed(error)
            return
        sent.acknowledged = True
        if sent.kind == "report":
            reported.extend(batch)


def _state(setup: DevSetup, customers: list[str]) -> dict[str, str]:
    """'active', 'ended' or 'absent' for each customer, read from the store directly."""
    store = open_store(load_config(setup.config), readonly=True)
    try:
        with store.read() as view:
            states = {}
            for customer in customers:
                history = view.history(
                    CustomerId(customer, CustomerKind.PERSON),
                    TEST_INSTITUTION_ORG,
                    Role.OWNER,
                    UNSPECIFIED,
                )
                states[customer] = (
                    "absent" if not history else "active" if history[-1].end is None else "ended"
                )
            return states
    finally:
        store.close()


def _check(setup: DevSetup, load: Load, killed_at: float) -> tuple[int, int]:
    early = [status for when, status in load.failures if when < killed_at]
    assert not early, f"calls failed before the kill: {early}"
    late = {status for _, status in load.failures}
    assert late <= {"UNAVAILABLE"}, f"calls ended with {late} when the server died"
    states = _state(setup, [c for item in load.sent for c in item.customers])
    acknowledged = 0
    committed: dict[int, list[bool]] = {}
    for item in load.sent:
        seen = {states[c] for c in item.customers}
        if item.kind == "end":
            applied = {"ended"}
            assert seen in ({"ended"}, {"active"}), f"an End was half applied: {seen}"
        else:
            applied = {"active", "ended"}
            assert seen <= applied or seen == {"absent"}, f"a {item.kind} was half applied: {seen}"
        if item.kind == "chunk":
            committed.setdefault(item.stream, []).append(seen <= applied)
        if item.acknowledged:
            acknowledged += 1
            assert seen <= applied, f"an acknowledged {item.kind} was lost: {seen}"
    for stream, chunks in committed.items():
        assert chunks == sorted(chunks, reverse=True), f"stream {stream} committed {chunks}"
    return acknowledged, len(load.sent)


def _round(setup: DevSetup, ids: _SharedIds, rng: random.Random) -> tuple[int, int, int]:
    server = start_server(setup.config)
    clients = setup.clients(server.target)
    identity = setup.identity("institution")
    load, streams = Load(), []
    threads = [
        threading.Thread(
            target=_bulk, args=(clients.client(identity, own_connection=True), ids, load, streams)
        )
    ]
    threads += [
        threading.Thread(
            target=_calls, args=(clients.client(identity, own_connection=True), ids, load, rng)
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    time.sleep(rng.uniform(0.8, 2.5))  # the load runs for a random while: when to kill
    killed_at = time.monotonic()
    server.kill()  # kill -9, in the middle of everything
    load.stop.set()
    for thread in threads:
        thread.join(timeout=30)
    acknowledged, sent = _check(setup, load, killed_at)
    answered_streams = sum(
        1 for item in load.sent if item.kind == "chunk" and item.index == 0 and item.acknowledged
    )
    return acknowledged, sent, answered_streams


def test_kill_9_during_writes_loses_nothing_acknowledged(tmp_path: Path, capsys):
    CliRunner().invoke(main, ["dev", "init", str(tmp_path), "--listen", "127.0.0.1:0"])
    setup = DevSetup(tmp_path)
    ids = _SharedIds(unique_synthetic_person_ids(seed=17))
    rng = random.Random(17)
    summary = []
    for _ in range(ROUNDS):
        acknowledged, sent, streams = _round(setup, ids, rng)
        summary.append((acknowledged, sent, streams))
        assert acknowledged > 0, "the load did not get going before the kill"
    assert sum(streams for *_, streams in summary) > 0, "no stream was answered before a kill"
    # And after all that, the server starts and serves.
    server: ServerProcess = start_server(setup.config)
    try:
        client = setup.clients(server.target).client(setup.identity("institution"))
        client.institutions.ListOwn(
            pb.ListOwnRequest(
                institution_org_number=TEST_INSTITUTION_ORG, customer_id=ids.take(1)[0]
            ),
            timeout=10,
        )
    finally:
        assert server.stop(timeout=30) == 0
    with capsys.disabled():
        print(f"\ncrash rounds: {ROUNDS}; (acknowledged, sent, answered streams): {summary}")
