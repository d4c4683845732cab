"""``make bench-cluster``: the cluster's figures, on a local cluster of three etcd members
and three nodes (node2 with ``reads = "local"``, the others linearizable).

    python -m bench.cluster_bench [--seconds 20] [--catch-up 100000] [--smoke]

- Report p99 at 100 calls/s offered, through the node list (round robin);
- ReportStream relationships/s (chunks of 1,000, to one node; goal >= 20,000/s);
- Lookup p99 at 200 calls/s offered: linearizable (node1) and local (node2), same run;
- catch-up: node3 stopped while ``--catch-up`` relationships are streamed and
  ``--catch-up-writes`` single-relationship Reports are made (one log entry each; their
  rate is printed too), then restarted: the seconds until it has applied the log's head;
- write stall: Reports at 50 calls/s through the node list while the etcd leader is
  killed, then while a node is killed: the longest a call took and the calls that
  failed (a client retries once on another node).

Prints a table; exits 1 if the ReportStream goal or the SLA (p99 <= 500 ms, no failed
calls) of the Report run is missed. ``--smoke`` (make test): a few seconds of each, with
Reports at 20/s and a ReportStream goal of 5,000/s. No figure here is a claim unless
this run printed it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
import uuid

from bench.capacity import Run, open_loop, report_stream
from bench.cluster import LocalCluster, local_cluster
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG, TEST_MANDATE
from kfr_grpc.dev.synthetic import unique_synthetic_person_ids

STREAM_GOAL = 20_000  # relationships/s
SLA_P99_MS = 500.0
# make test's smoke run gates on these instead: it must pass on a slow, shared CI
# machine, where three etcd members, three nodes and the client share two cores (on one
# such machine single Reports through the cluster peaked at 66-84/s, so 100/s offered is
# an overload there, not a latency measurement).
SMOKE_REPORT_RATE = 20  # calls/s offered
SMOKE_STREAM_GOAL = 5_000  # relationships/s


def main() -> None:
    parser = argparse.ArgumentParser(description="cluster figures")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--stream", type=int, default=200_000, help="relationships streamed")
    parser.add_argument(
        "--catch-up", type=int, default=100_000, help="relationships streamed while node3 is down"
    )
    parser.add_argument(
        "--catch-up-writes", type=int, default=100_000,
        help="single-relationship Reports (one log entry each) while node3 is down",
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="seconds, not minutes")
    args = parser.parse_args()
    args.report_rate, args.stream_goal = 100, STREAM_GOAL
    if args.smoke:
        args.seconds, args.stream, args.catch_up, args.catch_up_writes = 3.0, 20_000, 5_000, 1000
        args.report_rate, args.stream_goal = SMOKE_REPORT_RATE, SMOKE_STREAM_GOAL
    ids = unique_synthetic_person_ids(seed=int(time.time()))
    with local_cluster(extra="") as cluster:
        _set_local_reads(cluster, 2)
        results = asyncio.run(_measure(cluster, ids, args))
    sys.exit(0 if _print(results, args) else 1)


def _set_local_reads(cluster: LocalCluster, number: int) -> None:
    config = cluster.cluster.node_config(number)
    config.write_text(config.read_text().replace("[cluster]\n", '[cluster]\nreads = "local"\n'))
    cluster.stop_node(number)
    cluster.start_node(number)


async def _measure(cluster: LocalCluster, ids, args) -> dict:
    results: dict = {}
    everyone = cluster.clients()
    institution = cluster.setup.identity("institution")
    agency = cluster.setup.identity("agency")
    known = list(itertools.islice(ids, 2000))
    async with everyone.aio_channel(institution) as channel:
        reports = kfr_pb2_grpc.InstitutionServiceStub(channel)
        for offset in range(0, len(known), 1000):  # the lookups' customers, and a warm-up
            await reports.Report(_report(known[offset : offset + 1000]))
        results["report"] = await open_loop(
            f"Report, {args.report_rate}/s offered, node list",
            lambda: reports.Report(_report([next(ids)])), args.seconds, args.report_rate,
        )  # fmt: skip
    stream_ids = list(itertools.islice(ids, args.stream))
    node1 = _Node(cluster, 1)
    seconds = await report_stream(node1, stream_ids)
    results["stream"] = (len(stream_ids), seconds)
    for number, kind in ((1, "linearizable"), (2, "local")):
        clients = cluster.clients(cluster.node_target(number))
        async with clients.aio_channel(agency) as channel:
            lookups = kfr_pb2_grpc.LookupServiceStub(channel)
            customers = itertools.cycle(known)

            def find(stub=lookups, customers=customers):
                return stub.Lookup(
                    pb.LookupRequest(
                        customer_id=next(customers), legal_mandate=TEST_MANDATE,
                        from_date="2020-01-01", account_info_request_id=str(uuid.uuid4()),
                    )
                )  # fmt: skip

            for _ in range(100):
                await find()
            results[kind] = await open_loop(f"Lookup {kind}", find, args.seconds, 200)
    results["catch_up"] = await _catch_up(cluster, ids, args.catch_up, args.catch_up_writes)
    results["stall_etcd"] = await _stall(cluster, ids, args.seconds, etcd=True)
    results["stall_node"] = await _stall(cluster, ids, args.seconds, etcd=False)
    return results


class _Node:
    """One node, as ``bench.capacity.report_stream`` wants a server: setup and clients."""

    def __init__(self, cluster: LocalCluster, number: int) -> None:
        self.setup = cluster.setup
        self.clients = cluster.clients(cluster.node_target(number))


def _report(customers: list[str]) -> pb.ReportRequest:
    return pb.ReportRequest(
        institution_org_number=TEST_INSTITUTION_ORG,
        relationships=[
            pb.Relationship(customer_id=c, role=pb.ROLE_OWNER, start_date="2020-01-01")
            for c in customers
        ],
    )


async def _catch_up(
    cluster: LocalCluster, ids, relationships: int, writes: int
) -> tuple[int, int, float, float]:
    """node3 stopped while ``relationships`` are streamed and ``writes`` single Reports
    are made (100 at a time); then restarted. Returns (relationships, log entries, the
    rate the writes were made at per second, the seconds node3 took to apply them)."""
    replicated_log = cluster.log()
    try:
        cluster.stop_node(3)
        before = replicated_log.head()
        if relationships:
            await report_stream(_Node(cluster, 1), list(itertools.islice(ids, relationships)))
        async with cluster.clients().aio_channel(cluster.setup.identity("institution")) as channel:
            reports = kfr_pb2_grpc.InstitutionServiceStub(channel)
            started = time.perf_counter()
            for offset in range(0, writes, 100):
                batch = min(100, writes - offset)
                await asyncio.gather(*(reports.Report(_report([next(ids)])) for _ in range(batch)))
            write_rate = writes / (time.perf_counter() - started)
        head = replicated_log.head()
        started = time.perf_counter()
        cluster.start_node(3)
        while not any(
            node.name == "node3" and node.applied >= head for node in replicated_log.nodes()
        ):
            await asyncio.sleep(0.05)
        return relationships + writes, head - before, write_rate, time.perf_counter() - started
    finally:
        replicated_log.etcd.close()


async def _stall(cluster: LocalCluster, ids, seconds: float, *, etcd: bool) -> tuple[str, Run]:
    """Reports at 50/s through the node list; the etcd leader (or node1) is killed a
    third of the way in and started again at two thirds."""
    victim = _etcd_leader(cluster) if etcd else "node1"

    async def chaos() -> None:
        await asyncio.sleep(seconds / 3)
        if etcd:
            cluster.etcd.kill(victim)
        else:
            await asyncio.to_thread(cluster.kill_node, 1)
        await asyncio.sleep(seconds / 3)
        if etcd:
            cluster.etcd.restart(victim)
        else:
            await asyncio.to_thread(cluster.start_node, 1)

    async with cluster.clients().aio_channel(cluster.setup.identity("institution")) as channel:
        reports = kfr_pb2_grpc.InstitutionServiceStub(channel)
        trouble = asyncio.ensure_future(chaos())
        run = await open_loop(
            f"Report 50/s, {victim} killed", lambda: reports.Report(_report([next(ids)])),
            seconds, 50,
        )  # fmt: skip
        await trouble
    if not etcd:
        await asyncio.to_thread(cluster.wait_serving, 1)
    return victim, run


def _etcd_leader(cluster: LocalCluster) -> str:
    replicated_log = cluster.log()
    try:
        statuses = replicated_log.etcd.member_statuses()
    finally:
        replicated_log.etcd.close()
    for member, status in zip(cluster.etcd.members, statuses, strict=True):
        if status.get("is_leader"):
            return member.name
    return cluster.etcd.members[0].name


def _print(results: dict, args: argparse.Namespace) -> bool:
    report: Run = results["report"]
    p99 = report.percentile_ms(0.99)
    count, seconds = results["stream"]
    rate = count / seconds
    relationships, entries, write_rate, catch_up = results["catch_up"]
    print("## Cluster (3 etcd members, 3 nodes, this machine)\n")
    print("| measure | result | target |")
    print("|---|---|---|")
    report_ok = p99 <= SLA_P99_MS and report.errors == 0
    verdict = "met" if report_ok else "MISSED"
    print(f"| Report p99 at {args.report_rate}/s offered (node list) | {p99:.1f} ms (p50 "
          f"{report.percentile_ms(0.5):.1f}), {report.errors} failed "
          f"| ≤ {SLA_P99_MS:.0f} ms, none failed: {verdict} |")  # fmt: skip
    stream_ok = rate >= args.stream_goal
    print(f"| ReportStream, chunks of 1,000, one node | {rate:,.0f} relationships/s "
          f"({count:,} in {seconds:.1f} s) | ≥ {args.stream_goal:,}/s: "
          f"{'met' if stream_ok else 'MISSED'} |")  # fmt: skip
    for kind in ("linearizable", "local"):
        run: Run = results[kind]
        print(f"| Lookup p99 at 200/s offered, {kind} | {run.percentile_ms(0.99):.2f} ms "
              f"(p50 {run.percentile_ms(0.5):.2f}), {run.errors} failed | - |")  # fmt: skip
    print(f"| catch-up of a restarted node | {catch_up:.1f} s for {entries:,} log entries "
          f"({relationships:,} relationships) | - |")  # fmt: skip
    print(f"| single-relationship Reports, 100 in flight, node list | {write_rate:,.0f}/s "
          f"| - |")  # fmt: skip
    for key in ("stall_etcd", "stall_node"):
        victim, run = results[key]
        slowest = max(run.latencies) * 1e3 if run.latencies else float("inf")
        print(f"| writes while {victim} is killed | longest call {slowest:,.0f} ms, "
              f"{run.errors} failed of {len(run.latencies) + run.errors} | - |")  # fmt: skip
    ok = report_ok and stream_ok
    scope = " (smoke: a few seconds of each, looser targets)" if args.smoke else ""
    print(f"\nCLUSTER BENCH OK{scope}" if ok else "\nCLUSTER BENCH: TARGET MISSED")
    return ok


if __name__ == "__main__":
    main()
