"""``make chaos``: a cluster under load, losing a random machine every round.

    python -m bench.chaos [--rounds 10] [--round-seconds 8] [--smoke]

Three etcd members and three nodes; clients spread Report, End, ReportStream and Lookup
over the nodes (round robin over the healthy ones, one retry on another node after
UNAVAILABLE), and send some reports that must be refused (one bad ID in the batch: all
or nothing). Each round kills -9 one random node or etcd member under that load, keeps
the load on for a while, and restarts it. After every round, once every node has caught
up with the log, each node's store is read directly and checked:

- every write the client was told succeeded is there (reported relationships; ended
  ones with their end),
- nothing the client was told was refused is there,
- every node's content digest is equal,

and the share of Lookups answered is printed. Calls that failed with UNAVAILABLE or
DEADLINE_EXCEEDED are in doubt (the write may or may not have been made) and are not
checked either way. Exit status 1 on any violation.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import grpc

from bench.cluster import LocalCluster, local_cluster
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.config import load_config
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG, TEST_MANDATE
from kfr_grpc.dev.synthetic import unique_synthetic_person_ids
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
from kfr_grpc.register.digest import content_digest
from kfr_grpc.server import open_store

_IN_DOUBT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
# Refused before any work, with a reason to retry later (a node's bulk-stream limit, met
# when a dead node's share of the load lands on the others).
_TRY_LATER = {grpc.StatusCode.RESOURCE_EXHAUSTED}
_DOUBT_NAMES = {code.name for code in _IN_DOUBT}
_BAD_ID = "12345678901"  # fails its check digits


@dataclass
class Ledger:
    """What the clients were told."""

    reported: set[str] = field(default_factory=set)  # acknowledged as registered
    ended: set[str] = field(default_factory=set)  # acknowledged as ended
    refused: set[str] = field(default_factory=set)  # in a batch refused as a whole
    outcomes: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)  # answers no client should get
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, what: str, code: grpc.StatusCode) -> None:
        with self.lock:
            self.outcomes[(what, code.name)] += 1


class Load:
    """Client threads running the mixed load until stopped."""

    def __init__(self, cluster: LocalCluster, threads: int, seed: int) -> None:
        self._clients = cluster.clients()
        self._setup = cluster.setup
        self._ids = unique_synthetic_person_ids(seed=seed)
        self._ids_lock = threading.Lock()
        self.ledger = Ledger()
        self._stopping = threading.Event()
        self._go = threading.Event()
        self._go.set()
        self._busy = 0
        self._idle = threading.Condition()
        self._threads = [
            threading.Thread(target=self._run, args=(random.Random(seed + n),), daemon=True)
            for n in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._go.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def pause(self) -> None:
        """Returns once no call is under way and none will start until ``resume``."""
        self._go.clear()
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout=120)

    def resume(self) -> None:
        self._go.set()

    def _new_ids(self, count: int) -> list[str]:
        with self._ids_lock:
            return list(itertools.islice(self._ids, count))

    def _run(self, rng: random.Random) -> None:
        institution = self._clients.client(self._setup.identity("institution"))
        agency = self._clients.client(self._setup.identity("agency"))
        actions = [self._report, self._report_stream, self._end, self._refused, self._lookup]
        weights = [4, 1, 2, 1, 4]
        try:
            while not self._stopping.is_set():
                self._go.wait()
                action = rng.choices(actions, weights)[0]
                client = agency if action == self._lookup else institution
                with self._idle:
                    if not self._go.is_set():
                        continue
                    self._busy += 1
                try:
                    action(client, rng)
                finally:
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()
        finally:
            institution.close()
            agency.close()

    def _call(self, what: str, call) -> bool:
        try:
            call()
        except grpc.RpcError as error:
            self.ledger.note(what, error.code())
            if error.code() not in _IN_DOUBT | _TRY_LATER:
                with self.ledger.lock:
                    self.ledger.unexpected.append(f"{what}: {error.code().name}")
            return False
        self.ledger.note(what, grpc.StatusCode.OK)
        return True

    def _report(self, client, rng: random.Random) -> None:
        customers = self._new_ids(rng.randint(1, 5))
        request = _report_request(customers)
        if self._call("Report", lambda: client.institutions.Report(request, timeout=10)):
            with self.ledger.lock:
                self.ledger.reported.update(customers)

    def _report_stream(self, client, rng: random.Random) -> None:
        chunks = [self._new_ids(100) for _ in range(rng.randint(1, 5))]
        requests = [_report_request(chunk) for chunk in chunks]
        if self._call(
            "ReportStream", lambda: client.institutions.ReportStream(iter(requests), timeout=20)
        ):
            with self.ledger.lock:
                for chunk in chunks:
                    self.ledger.reported.update(chunk)

    def _refused(self, client, rng: random.Random) -> None:
        customers = self._new_ids(2)
        request = _report_request([*customers, _BAD_ID])
        try:
            client.institutions.Report(request, timeout=10)
        except grpc.RpcError as error:
            self.ledger.note("refused Report", error.code())
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                with self.ledger.lock:
                    self.ledger.refused.update(customers)
                return
            if error.code() in _IN_DOUBT:
                return
        with self.ledger.lock:
            self.ledger.unexpected.append("a report with a bad ID was not refused")

    def _end(self, client, rng: random.Random) -> None:
        with self.ledger.lock:
            candidates = list(self.ledger.reported - self.ledger.ended)
        if not candidates:
            return
        customer = rng.choice(candidates)
        request = pb.EndRequest(
            institution_org_number=TEST_INSTITUTION_ORG,
            endings=[pb.Ending(customer_id=customer, role=pb.ROLE_OWNER, end_date="2024-01-01")],
        )
        if self._call("End", lambda: client.institutions.End(request, timeout=10)):
            with self.ledger.lock:
                self.ledger.ended.add(customer)

    def _lookup(self, client, rng: random.Random) -> None:
        with self.ledger.lock:
            candidates = list(self.ledger.reported)
        if not candidates:
            return
        request = pb.LookupRequest(
            customer_id=rng.choice(candidates),
            legal_mandate=TEST_MANDATE,
            from_date="2020-01-01",
            account_info_request_id=str(uuid.uuid4()),
        )
        self._call("Lookup", lambda: client.lookups.Lookup(request, timeout=10))


def _report_request(customers: list[str]) -> pb.ReportRequest:
    return pb.ReportRequest(
        institution_org_number=TEST_INSTITUTION_ORG,
        relationships=[
            pb.Relationship(customer_id=c, role=pb.ROLE_OWNER, start_date="2020-01-01")
            for c in customers
        ],
    )


def check_nodes(cluster: LocalCluster, ledger: Ledger) -> list[str]:
    """Every node's store against what the clients were told; the problems found."""
    problems: list[str] = []
    digests = set()
    with ledger.lock:
        reported, ended, refused = set(ledger.reported), set(ledger.ended), set(ledger.refused)
    for number in sorted(cluster.nodes):
        store = open_store(load_config(cluster.cluster.node_config(number)), readonly=True)
        try:
            with store.read() as view:
                digests.add(content_digest(view).digest)
                for customer in reported:
                    histories = list(view.relationships(_person(customer), TEST_INSTITUTION_ORG))
                    if not histories:
                        problems.append(f"node{number}: an acknowledged report is missing")
                    elif customer in ended and histories[0].periods[-1].end is None:
                        problems.append(f"node{number}: an acknowledged end is missing")
                for customer in refused:
                    if list(view.relationships(_person(customer))):
                        problems.append(f"node{number}: a refused report is visible")
        finally:
            store.close()
    if len(digests) != 1:
        problems.append(f"the nodes' digests differ: {len(digests)} different")
    with ledger.lock:
        problems += sorted(set(ledger.unexpected))
    return problems


def _person(digits: str) -> CustomerId:
    return CustomerId(digits, CustomerKind.PERSON)


def run(rounds: int, round_seconds: float, threads: int, seed: int) -> int:
    rng = random.Random(seed)
    failures = 0
    with local_cluster() as cluster:
        load = Load(cluster, threads, seed)
        load.start()
        try:
            for round_number in range(1, rounds + 1):
                victim = rng.choice(["node1", "node2", "node3", "etcd1", "etcd2", "etcd3"])
                before = Counter(load.ledger.outcomes)
                _kill_and_restart(cluster, victim, round_seconds)
                problems = _checked(cluster, load)
                failures += bool(problems)
                _print_round(round_number, victim, before, load.ledger, problems)
        finally:
            load.stop()
        problems = _checked(cluster, load)
        failures += bool(problems)
        ledger = load.ledger
        print(
            f"after {rounds} rounds: {len(ledger.reported):,} relationships acknowledged, "
            f"{len(ledger.ended):,} ends, {len(ledger.refused):,} refused; "
            f"problems: {'; '.join(problems) or 'none'}"
        )
    print("CHAOS OK" if failures == 0 else "CHAOS FAILED")
    return 0 if failures == 0 else 1


def _kill_and_restart(cluster: LocalCluster, victim: str, seconds: float) -> None:
    if victim.startswith("node"):
        number = int(victim[4:])
        cluster.kill_node(number)
        time.sleep(seconds / 2)
        cluster.start_node(number)
        cluster.wait_serving(number)
    else:
        cluster.etcd.kill(victim)
        time.sleep(seconds / 2)
        cluster.etcd.restart(victim)
        cluster.etcd.wait_healthy()
    time.sleep(seconds / 2)


def _checked(cluster: LocalCluster, load: Load) -> list[str]:
    """Checks with the load paused (the ledger must not move while the stores are read)."""
    load.pause()
    try:
        cluster.wait_caught_up()
        return check_nodes(cluster, load.ledger)
    finally:
        load.resume()


def _print_round(number: int, victim: str, before: Counter, ledger: Ledger, problems) -> None:
    with ledger.lock:
        now = Counter(ledger.outcomes)
    delta = now - before
    lookups = sum(n for (what, _), n in delta.items() if what == "Lookup")
    answered = delta[("Lookup", "OK")]
    share = answered / lookups if lookups else 1.0
    in_doubt = sum(n for (_, code), n in delta.items() if code in _DOUBT_NAMES)
    verdict = "OK" if not problems else "PROBLEMS: " + "; ".join(problems)
    print(
        f"round {number}: killed {victim}; Lookups answered {share:.2%} ({answered}/{lookups}); "
        f"calls in doubt {in_doubt}; {verdict}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="kill -9 a node or etcd member per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--round-seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"chaos: {args.rounds} rounds of {args.round_seconds:.0f} s, seed {seed}", flush=True)
    sys.exit(run(args.rounds, args.round_seconds, args.threads, seed))


if __name__ == "__main__":
    main()
