"""``make bench``: the capacity run, against a server of its own, printed as a table.

    python -m bench.capacity [--seconds 8] [--preload 100000] [--file-entries 1000000]
    python -m bench.capacity --smoke      # the short version ``make test`` runs

1. Preloads ``--preload`` relationships with ReportStream in chunks of 1,000 from an
   asyncio client (the bulk-load rate, from memory).
2. Closed loop, ``--concurrency`` calls in flight for ``--seconds`` each, from one asyncio
   gRPC client with the same mutual TLS and the same certificate-bound token: the health
   Check of a bare ``grpc.aio`` server with the same TLS and nothing else (``bench.bare``:
   the framework's own limit on this machine), KFR's health Check (the same plus KFR's
   interceptor: correlation-id, admission, certificate and token checks, log line,
   metrics), and KFR's Lookup (the same plus the register's work).
3. Open loop: Lookup (and KFR's health Check) offered at fixed rates, latency measured
   from the moment each call was due, so a slow answer cannot hide the ones behind it.
   The REST contract beside gRPC, same server, same run: single reports (a new customer
   each: a write each) over gRPC's Report and REST's POST, closed loop; Lookup over REST
   (GET customerRelationships, aiohttp client, keep-alive), closed loop and at the same
   offered rates.
4. ``kfr report-file`` on a generated file of ``--file-entries`` entries in the reference
   register's batch format: the end-to-end bulk-load rate, client parsing included.
5. ``kfr reconcile`` (a dry run) of the same file against the register, which now holds
   it and the preload: the reconciliation rate, end to end.
6. The targets, each with yes/no. The exit status is 1 if any is missed.

A call that fails counts in the latency figures as never answered (an infinite latency),
and any failed call misses the targets: the figures are the callers' experience.

Client and server share this machine's cores; compare the figures with the baseline
measured in the same run, not with another machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import (
    KFR,
    BenchServer,
    ServerProcess,
    bench_server,
    percentile,
    start_bare_server,
)
from bench.rest_failure import RestFailed
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.dev.clients import Clients
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG, TEST_MANDATE
from kfr_grpc.dev.synthetic import unique_synthetic_person_ids

REFERENCE_RATE = 250  # relationships/s, the reference register's bulk load
BARE = "bare grpc.aio health Check"
GRPC_REPORT = "Report (one new relationship)"
REST_REPORT = "REST POST relationshipType (one new)"
REST_LOOKUP = "REST GET customerRelationships"
SINGLE_REPORTS = (GRPC_REPORT, REST_REPORT)  # each answered call: one new relationship
REST_RATE = 500  # the REST lookup's aim: p99 ≤ 10 ms at 500/s
# What a call can fail with: gRPC's status, or a REST call's error or unexpected status.
_FAILED = (grpc.RpcError, asyncio.TimeoutError, RestFailed)


@dataclass(frozen=True)
class Targets:
    lookup_ratio: float  # Lookup closed-loop throughput / the bare server's health Check
    health_ratio: float  # KFR's health Check throughput / the bare server's
    p99_ms: float  # Lookup p99 at the highest offered rate
    rest_p99_ms: float  # REST lookup p99 at 500/s offered (the highest rate in a smoke run)
    stream_rate: float  # ReportStream relationships/s (chunks of 1,000, asyncio client)
    bulk_rate: float  # report-file relationships/s, end to end
    file_seconds: float  # the whole file in less than this
    reconcile_seconds: float  # the whole file reconciled in less than this


FULL = Targets(
    lookup_ratio=0.8, health_ratio=0.9, p99_ms=5.0, rest_p99_ms=10.0, stream_rate=75_000,
    bulk_rate=100_000, file_seconds=30.0, reconcile_seconds=60.0,
)  # fmt: skip
# The short run inside `make test`: a few seconds of each part on a shared, busy machine,
# to catch a broken bench or a gross regression, not to measure.
SMOKE = Targets(
    lookup_ratio=0.4, health_ratio=0.5, p99_ms=100.0, rest_p99_ms=100.0, stream_rate=10_000,
    bulk_rate=10_000, file_seconds=30.0, reconcile_seconds=60.0,
)  # fmt: skip
SMOKE_ARGUMENTS = [
    "--seconds", "2", "--preload", "5000", "--rates", "100,300", "--file-entries", "50000",
]  # fmt: skip


@dataclass
class Run:
    name: str
    seconds: float
    latencies: list[float]
    errors: int
    offered: float | None = None

    @property
    def rate(self) -> float:
        """Calls answered per second."""
        return len(self.latencies) / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        """Latency at ``fraction``, failed calls counted as never answered."""
        return percentile(self.latencies + [math.inf] * self.errors, fraction) * 1e3

    def row(self) -> str:
        offered = f"{self.offered:,.0f}/s" if self.offered else "closed loop"
        p50, p99 = self.percentile_ms(0.5), self.percentile_ms(0.99)
        return _row(self.name, offered, f"{self.rate:,.0f}/s", f"{p50:.2f}", f"{p99:.2f}",
                    self.errors)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="KFR capacity run")
    parser.add_argument("--smoke", action="store_true", help="the short run make test gates on")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument("--rates", default="250,500,1000", help="offered Lookup rates per second")
    parser.add_argument("--file-entries", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1)
    argv = sys.argv[1:]
    if "--smoke" in argv:
        argv = SMOKE_ARGUMENTS + argv
    args = parser.parse_args(argv)
    rates = [int(rate) for rate in args.rates.split(",")]

    ids = unique_synthetic_person_ids(seed=7)
    with bench_server(workers=args.workers) as server:
        preload = list(itertools.islice(ids, args.preload))
        stream_seconds = asyncio.run(report_stream(server, preload))
        bare = start_bare_server(server.setup.config)
        try:
            runs = asyncio.run(_measure(server, bare, preload, ids, args, rates))
        finally:
            bare.stop()
        # In the register before the file: the preload and the single reports' customers.
        reported = sum(len(run.latencies) for run in runs if run.name in SINGLE_REPORTS)
        files = _bulk_files(server, ids, args.file_entries, len(preload) + reported)
    met = _print(args, rates, stream_seconds, runs, files)
    sys.exit(0 if met else 1)


# --- bulk load ------------------------------------------------------------------------------


async def report_stream(server: BenchServer, customers: list[str], chunk: int = 1000) -> float:
    """One ReportStream of ``customers`` in chunks of ``chunk``, from an asyncio client;
    returns the seconds until the answer (the chunks are built before the clock starts)."""
    messages = [
        pb.ReportRequest(
            institution_org_number=TEST_INSTITUTION_ORG if offset == 0 else "",
            relationships=[
                pb.Relationship(customer_id=c, role=pb.ROLE_OWNER, start_date="2020-01-01")
                for c in customers[offset : offset + chunk]
            ],
        )
        for offset in range(0, len(customers), chunk)
    ]

    async def requests():
        for message in messages:
            yield message

    identity = server.setup.identity("institution")
    async with server.clients.aio_channel(identity) as channel:
        stub = kfr_pb2_grpc.InstitutionServiceStub(channel)
        started = time.perf_counter()
        response = await stub.ReportStream(requests())
        elapsed = time.perf_counter() - started
    assert response.registered_count == len(customers), response
    return elapsed


@dataclass(frozen=True)
class FileRuns:
    """``kfr report-file`` of the generated file, then ``kfr reconcile`` of it."""

    entries: int
    load_seconds: float
    load_output: str
    reconcile_seconds: float
    reconcile_output: str


def _bulk_files(server: BenchServer, ids, entries: int, preloaded: int) -> FileRuns:
    with tempfile.TemporaryDirectory(prefix="kfr-bench-file-") as workdir:
        path = Path(workdir) / "load.txt"
        with path.open("w") as out:
            left = entries
            for batch in iter(lambda: list(itertools.islice(ids, 10)), []):
                out.write(",".join(f"{c}#2020-01-01" for c in batch) + ",\n")
                left -= len(batch)
                if left <= 0:
                    break
        load_seconds, load_output = _kfr_on_file(server, "report-file", path)
        reconcile_seconds, reconcile_output = _kfr_on_file(server, "reconcile", path)
    expected = f"matched {entries:,}; missing from the register 0; active in the register " \
        f"but not in the file {preloaded:,}"  # fmt: skip
    if not reconcile_output.startswith(expected):
        raise SystemExit(f"reconcile said {reconcile_output!r}, expected {expected!r}")
    return FileRuns(entries, load_seconds, load_output, reconcile_seconds, reconcile_output)


def _kfr_on_file(server: BenchServer, command: str, path: Path) -> tuple[float, str]:
    """Runs ``kfr COMMAND`` on the file as the institution; its seconds and what it said
    (exit status 2 is a reconciliation's "they differ")."""
    setup = server.setup
    argv = [
        KFR, command, "--target", server.target, "--ca", str(setup.file("ca.crt")),
        "--cert", str(setup.file("institution.crt")), "--key", str(setup.file("institution.key")),
        "--dev", str(setup.directory), "--institution", TEST_INSTITUTION_ORG, str(path),
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode not in (0, 2) or not result.stdout.strip():
        raise SystemExit(f"{command} failed: {result.stdout}{result.stderr}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = result.stdout.strip().splitlines()[0]
    return elapsed, f"{summary}\n(client peak RSS so far {peak_mb:.0f} MB)"


# --- RPC load -------------------------------------------------------------------------------


async def _measure(
    server: BenchServer, bare: ServerProcess, known: list[str], fresh, args, rates: list[int]
) -> list[Run]:
    runs = await _measure_grpc(server, bare, known, fresh, args, rates)
    runs += await _measure_rest(server, known, fresh, args, rates)
    return runs


async def _measure_rest(server: BenchServer, known: list[str], fresh, args, rates) -> list[Run]:
    """The REST contract: single reports and lookups, as the gRPC runs before. (aiohttp
    is imported here: the gRPC-only benches that share this module's loops keep a
    client without it, whose heap, and garbage collector pauses, stay as they were.)"""
    from bench.rest_load import RestLoad, caller

    rest_url = server.server.rest_url
    cycle = itertools.cycle(known)
    async with (
        RestLoad(rest_url, server.clients, server.setup.identity("institution")) as bank,
        RestLoad(rest_url, server.clients, server.setup.identity("agency")) as agency,
    ):
        find = caller(agency.lookup, cycle)
        await _closed("warm-up", find, 2.0, args.concurrency)
        runs = [
            await _closed(REST_REPORT, caller(bank.report, fresh), args.seconds, args.concurrency),
            await _closed(REST_LOOKUP, find, args.seconds, args.concurrency),
        ]
        for rate in rates:
            runs.append(await open_loop(REST_LOOKUP, find, args.seconds, rate))
        return runs


async def _measure_grpc(
    server: BenchServer, bare: ServerProcess, known: list[str], fresh, args, rates: list[int]
) -> list[Run]:
    agency = server.setup.identity("agency")
    institution = server.setup.identity("institution")
    bare_clients = Clients(bare.target, server.clients.ca, server.clients.issuer)
    async with (
        server.clients.aio_channel(agency) as channel,
        server.clients.aio_channel(institution) as writer,
        bare_clients.aio_channel(agency) as bare_channel,
    ):
        report = kfr_pb2_grpc.InstitutionServiceStub(writer).Report

        def report_one() -> Awaitable:
            relationship = pb.Relationship(customer_id=next(fresh), role=pb.ROLE_OWNER)
            return report(pb.ReportRequest(
                institution_org_number=TEST_INSTITUTION_ORG, relationships=[relationship]
            ))  # fmt: skip

        health = health_pb2_grpc.HealthStub(channel).Check
        bare_health = health_pb2_grpc.HealthStub(bare_channel).Check
        lookup = kfr_pb2_grpc.LookupServiceStub(channel).Lookup
        cycle = itertools.cycle(known)

        def check() -> Awaitable:
            return health(health_pb2.HealthCheckRequest())

        def bare_check() -> Awaitable:
            return bare_health(health_pb2.HealthCheckRequest())

        def find() -> Awaitable:
            return lookup(
                pb.LookupRequest(
                    customer_id=next(cycle), from_date="2019-01-01", legal_mandate=TEST_MANDATE,
                    account_info_request_id=str(uuid.uuid4()),
                )
            )  # fmt: skip

        await _closed("warm-up", find, 2.0, args.concurrency)
        await _closed("warm-up", bare_check, 1.0, args.concurrency)
        runs = [
            await _closed(BARE, bare_check, args.seconds, args.concurrency),
            await _closed("health Check", check, args.seconds, args.concurrency),
            await _closed("Lookup", find, args.seconds, args.concurrency),
            await _closed(GRPC_REPORT, report_one, args.seconds, args.concurrency),
        ]
        for rate in rates:
            runs.append(await open_loop("Lookup", find, args.seconds, rate))
        runs.append(await open_loop("health Check", check, args.seconds, max(rates)))
        return runs


async def _closed(
    name: str, call: Callable[[], Awaitable], seconds: float, concurrency: int
) -> Run:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call()
                latencies.append(time.perf_counter() - started)
            except _FAILED:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(name, time.perf_counter() - started, latencies, errors)


async def open_loop(name: str, call: Callable[[], Awaitable], seconds: float, rate: int) -> Run:
    """Calls started on a fixed schedule, whatever the answers do; latency from due time."""
    latencies: list[float] = []
    errors = 0

    async def one(due: float) -> None:
        nonlocal errors
        try:
            await call()
            latencies.append(time.perf_counter() - due)
        except _FAILED:
            errors += 1

    tasks = []
    start = time.perf_counter()
    for n in range(int(seconds * rate)):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(due)))
    await asyncio.gather(*tasks)
    return Run(name, time.perf_counter() - start, latencies, errors, offered=rate)


# --- report ---------------------------------------------------------------------------------


def _print(args, rates, stream_seconds, runs, files: FileRuns) -> bool:
    """Prints the tables and the targets; True when every target is met."""
    targets = SMOKE if args.smoke else FULL
    stream_rate = args.preload / stream_seconds
    file_seconds = files.load_seconds
    file_rate = files.entries / file_seconds
    reconcile_rate = files.entries / files.reconcile_seconds
    closed = {run.name: run for run in runs if run.offered is None}
    worst_open = next(r for r in runs if r.name == "Lookup" and r.offered == max(rates))
    bare_rate = closed[BARE].rate
    ratio = closed["Lookup"].rate / bare_rate
    health_ratio = closed["health Check"].rate / bare_rate
    print(f"## KFR capacity ({args.workers} worker(s); client and server on this machine)\n")
    print("| call | offered | achieved | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        print(run.row())
    print("\n| bulk load | relationships | seconds | rate |")
    print("|---|---|---|---|")
    print(_row("ReportStream (asyncio client, chunks of 1,000)", f"{args.preload:,}",
               f"{stream_seconds:.1f}", f"{stream_rate:,.0f}/s"))  # fmt: skip
    print(_row("kfr report-file (batch file, end to end)", f"{args.file_entries:,}",
               f"{file_seconds:.1f}", f"{file_rate:,.0f}/s"))  # fmt: skip
    print(_row("kfr reconcile (the same file, dry run, end to end)", f"{files.entries:,}",
               f"{files.reconcile_seconds:.1f}", f"{reconcile_rate:,.0f}/s"))  # fmt: skip
    print(f"\nreport-file said: {files.load_output}")
    print(f"reconcile said: {files.reconcile_output}\n")
    _print_rest(closed)
    errors = sum(run.errors for run in runs)
    p99 = worst_open.percentile_ms(0.99)
    rest_rate = REST_RATE if REST_RATE in rates else max(rates)
    rest_open = next(r for r in runs if r.name == REST_LOOKUP and r.offered == rest_rate)
    rest_p99 = rest_open.percentile_ms(0.99)
    print("| target | measured | met |")
    print("|---|---|---|")
    results = [
        _target(f"Lookup throughput ≥ {targets.lookup_ratio} x the bare server "
                f"({bare_rate:,.0f}/s)", f"{ratio:.2f} x", ratio >= targets.lookup_ratio),
        _target(f"KFR health Check ≥ {targets.health_ratio} x the bare server",
                f"{health_ratio:.2f} x", health_ratio >= targets.health_ratio),
        _target(f"Lookup p99 ≤ {targets.p99_ms:.0f} ms at {max(rates):,}/s offered",
                f"{p99:.1f} ms", p99 <= targets.p99_ms),
        _target(f"REST lookup p99 ≤ {targets.rest_p99_ms:.0f} ms at {rest_rate:,}/s offered",
                f"{rest_p99:.1f} ms", rest_p99 <= targets.rest_p99_ms),
        _target(f"ReportStream ≥ {targets.stream_rate:,.0f} relationships/s",
                f"{stream_rate:,.0f}/s", stream_rate >= targets.stream_rate),
        _target(f"report-file ≥ {targets.bulk_rate:,.0f} relationships/s end to end",
                f"{file_rate:,.0f}/s", file_rate >= targets.bulk_rate),
        _target(f"{args.file_entries:,}-relationship file in < {targets.file_seconds:.0f} s",
                f"{file_seconds:.1f} s", file_seconds < targets.file_seconds),
        _target(f"{files.entries:,}-relationship reconciliation in < "
                f"{targets.reconcile_seconds:.0f} s", f"{files.reconcile_seconds:.1f} s",
                files.reconcile_seconds < targets.reconcile_seconds),
        _target("no failed call", f"{errors} failed", errors == 0),
    ]  # fmt: skip
    print(f"(vs the reference register's 250 relationships/s: {file_rate / REFERENCE_RATE:,.0f} x)")
    answered = closed["Lookup"].latencies
    if answered:
        print(f"(mean Lookup latency, closed loop: {statistics.fmean(answered) * 1e3:.2f} ms)")
    met = all(results)
    print(f"\nCAPACITY {'OK' if met else 'FAILED'}{' (smoke targets)' if args.smoke else ''}")
    return met


def _print_rest(closed: dict[str, Run]) -> None:
    """REST against gRPC, closed loop, in this run."""
    print("| REST against gRPC (closed loop, this run) | REST | gRPC | REST / gRPC |")
    print("|---|---|---|---|")
    for name, rest, grpc_run in (
        ("lookup", closed[REST_LOOKUP], closed["Lookup"]),
        ("single report", closed[REST_REPORT], closed[GRPC_REPORT]),
    ):
        print(_row(name, f"{rest.rate:,.0f}/s, p99 {rest.percentile_ms(0.99):.2f} ms",
                   f"{grpc_run.rate:,.0f}/s, p99 {grpc_run.percentile_ms(0.99):.2f} ms",
                   f"{rest.rate / grpc_run.rate:.2f} x"))  # fmt: skip
    print()


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _target(name: str, measured: str, met: bool) -> bool:
    print(f"| {name} | {measured} | {'yes' if met else 'NO'} |")
    return met


if __name__ == "__main__":
    main()
