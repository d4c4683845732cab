"""``make soak``: the SLA mix at 50 times the SLA rate, for a long time.

    python -m bench.soak [--duration 10m] [--rate 500] [--warm-up 60s]

Starts a server of its own (dev setup, test mode) and offers it ``--rate`` calls a
second on a fixed schedule, in the SLA suite's mix: 3 Report (one new relationship
each) : 1 End (of a relationship reported earlier in the run) : 6 Lookup (80 % of a
customer reported in the run). Every call must succeed.

The server's RssAnon (heap and stacks: the LMDB map is file-backed and not in it) is
read every 5 s. It moves by a couple of MB from one reading to the next as the allocator
takes and returns memory, so single readings are not compared: "start" is the median of
the readings in the minute after the warm-up (by then connections, thread pools, caches
and allocator arenas have found their size), "end" the median of the readings in the
last minute. A leak moves both medians; noise does not. (Shorter runs use windows of a
quarter of the counted time.) It prints the calls per method with p50/p99, the error
count, RssAnon per minute and the two medians, and exits non-zero if any call failed or
RssAnon grew by 10 % or more.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from bench.common import BenchServer, bench_server, duration, percentile
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG, TEST_MANDATE
from kfr_grpc.dev.synthetic import synthetic_person_id, unique_synthetic_person_ids

SLA_RATE = 10  # requests/s the SLA suite offers
MAX_GROWTH = 0.10
SAMPLE_EVERY = 5.0  # seconds between RssAnon readings
WINDOW = 60.0  # seconds of readings whose median is "start" and "end"
MIX = ("Report",) * 3 + ("End",) + ("Lookup",) * 6
_KNOWN = 10_000  # customers remembered for End and Lookup


def main() -> None:
    parser = argparse.ArgumentParser(description="soak a KFR server with the SLA mix")
    parser.add_argument("--duration", type=duration, default=600.0, help="default 10m")
    parser.add_argument("--rate", type=int, default=50 * SLA_RATE, help="calls/s (default 500)")
    parser.add_argument("--warm-up", type=duration, default=60.0, help="default 60s")
    args = parser.parse_args()
    if args.warm_up >= args.duration:
        parser.error("--warm-up must be shorter than --duration")
    print(
        f"soak: {args.rate} calls/s ({args.rate / SLA_RATE:.0f} x the SLA rate) for "
        f"{args.duration:.0f} s, memory counted from {args.warm_up:.0f} s"
    )
    with bench_server() as server:
        soak = Soak(server, args.rate)
        asyncio.run(soak.run(args.duration, args.warm_up))
    sys.exit(soak.report())


@dataclass
class Soak:
    server: BenchServer
    rate: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    memory: list[tuple[float, int]] = field(default_factory=list)  # (second of the run, KiB)
    warm_up: float = 0.0
    seconds: float = 0.0
    late: int = 0  # calls the client started more than 100 ms after they were due

    async def run(self, seconds: float, warm_up: float) -> None:
        rng = random.Random(7)
        fresh = unique_synthetic_person_ids(seed=7)
        active: collections.deque[str] = collections.deque()  # reported, not yet ended
        known: collections.deque[str] = collections.deque(maxlen=_KNOWN)
        async with (
            self.server.clients.aio_channel(self.server.setup.identity("institution")) as writer,
            self.server.clients.aio_channel(self.server.setup.identity("agency")) as reader,
        ):
            institutions = kfr_pb2_grpc.InstitutionServiceStub(writer)
            lookups = kfr_pb2_grpc.LookupServiceStub(reader)

            async def report() -> None:
                customer = next(fresh)
                await institutions.Report(
                    pb.ReportRequest(
                        institution_org_number=TEST_INSTITUTION_ORG,
                        relationships=[pb.Relationship(customer_id=customer, role=pb.ROLE_OWNER)],
                    ),
                    timeout=10,
                )
                active.append(customer)
                known.append(customer)

            async def end() -> None:
                if not active:
                    return await report()
                await institutions.End(
                    pb.EndRequest(
                        institution_org_number=TEST_INSTITUTION_ORG,
                        endings=[pb.Ending(customer_id=active.popleft(), role=pb.ROLE_OWNER)],
                    ),
                    timeout=10,
                )
                return None

            async def lookup() -> None:
                customer = (
                    rng.choice(known) if known and rng.random() < 0.8 else synthetic_person_id(rng)
                )
                await lookups.Lookup(
                    pb.LookupRequest(
                        customer_id=customer, from_date="2016-01-01",
                        legal_mandate=TEST_MANDATE, account_info_request_id=str(uuid.uuid4()),
                    ),
                    timeout=10,
                )  # fmt: skip

            calls = {"Report": report, "End": end, "Lookup": lookup}
            self.warm_up, self.seconds = warm_up, seconds
            sampler = asyncio.ensure_future(self._sample_memory(self._window()))
            await self._offer(calls, seconds)
            sampler.cancel()

    async def _offer(self, calls: dict[str, Callable[[], Awaitable]], seconds: float) -> None:
        """Starts calls on a fixed schedule, whatever the answers do; waits for the last."""
        in_flight: set[asyncio.Future] = set()
        start = time.perf_counter()
        for n in range(int(seconds * self.rate)):
            due = start + n / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.1:
                self.late += 1
            name = MIX[n % len(MIX)]
            task = asyncio.ensure_future(self._timed(name, calls[name], due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)

    async def _timed(self, name: str, call: Callable[[], Awaitable], due: float) -> None:
        try:
            await call()
            self.latencies[name].append(time.perf_counter() - due)
        except grpc.RpcError as error:
            self.errors[f"{name} {error.code().name}"] += 1

    async def _sample_memory(self, window: float) -> None:
        interval = min(SAMPLE_EVERY, window / 4)
        start = time.monotonic()
        for n in itertools.count():
            await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
            self.memory.append((time.monotonic() - start, self.server.rss_anon_kib()))

    def _window(self) -> float:
        return min(WINDOW, (self.seconds - self.warm_up) / 4)

    def _median_kib(self, since: float, until: float) -> float:
        return statistics.median(kib for t, kib in self.memory if since <= t <= until)

    def report(self) -> int:
        """Prints the figures; the exit status (0 when the soak passed)."""
        for name in ("Report", "End", "Lookup"):
            samples = self.latencies[name]
            print(
                f"  {name:<7} {len(samples):>9,} ok   p50 {percentile(samples, 0.5) * 1000:6.2f} ms"
                f"   p99 {percentile(samples, 0.99) * 1000:6.2f} ms"
            )
        calls = sum(len(s) for s in self.latencies.values()) + sum(self.errors.values())
        errors = sum(self.errors.values())
        details = ", ".join(f"{kind}={n}" for kind, n in self.errors.most_common())
        print(f"calls: {calls:,}; errors: {errors}{f' ({details})' if details else ''}")
        print(f"calls started over 100 ms late by the client: {self.late:,}")
        minutes = range(0, int(self.seconds + 59) // 60)
        print(
            "RssAnon by minute (median): "
            + ", ".join(
                f"{m}' {self._median_kib(m * 60, m * 60 + 60) / 1024:.1f}"
                for m in minutes
                if any(m * 60 <= t <= m * 60 + 60 for t, _ in self.memory)
            )
            + f" MB; first reading {self.memory[0][1] / 1024:.1f} MB"
        )
        window = self._window()
        begin = self._median_kib(self.warm_up, self.warm_up + window)
        end = self._median_kib(self.seconds - window, self.seconds + 1)
        growth = (end - begin) / begin
        print(
            f"RssAnon start (median {self.warm_up:.0f}-{self.warm_up + window:.0f} s) "
            f"{begin / 1024:.1f} MB, end (median of the last {window:.0f} s) {end / 1024:.1f} MB: "
            f"growth {growth:+.1%} (limit {MAX_GROWTH:.0%})"
        )
        passed = errors == 0 and growth < MAX_GROWTH
        print(f"SOAK {'OK' if passed else 'FAILED'}")
        return 0 if passed else 1


if __name__ == "__main__":
    main()
