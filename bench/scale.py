"""``make bench-scale``: how Lookup latency, store size and memory grow with the register.

    python -m bench.scale [--sizes 10000,1000000,10000000] [--rate 500] [--seconds 10]
    python -m bench.scale --smoke      # the short version ``make test`` runs

For each size: a server of its own on a fresh dev setup, loaded with that many
relationships from distinct synthetic IDs through ReportStream; then Lookup offered at
``--rate`` per second for ``--seconds`` (open loop, latency from the moment each call
was due; a failed call counts as never answered) for IDs drawn from the loaded ones; then
the store's size on disk and the server's anonymous memory (RssAnon: the heap, not the
LMDB map, which is file-backed). The last lines compare the largest store with the
smallest; the exit status is 1 if a target is missed or any call failed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.capacity import Run, open_loop
from bench.common import BenchServer, bench_server
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.dev.setup import TEST_MANDATE
from kfr_grpc.dev.synthetic import unique_synthetic_person_ids

_CHUNK = 20_000
_SAMPLE = 20_000


@dataclass(frozen=True)
class Targets:
    p99_growth: float  # Lookup p99 at the largest size / at the smallest
    rss_mb: float  # the server's RssAnon at the largest size


FULL = Targets(p99_growth=1.5, rss_mb=200)
# A few seconds on a shared, busy machine: a broken bench or a gross regression, not a
# measurement (p99 at small stores is a couple of milliseconds, easily doubled by noise).
SMOKE = Targets(p99_growth=4.0, rss_mb=200)
SMOKE_ARGUMENTS = ["--sizes", "2000,50000", "--rate", "200", "--seconds", "3"]


def main() -> None:
    parser = argparse.ArgumentParser(description="KFR growth run")
    parser.add_argument("--smoke", action="store_true", help="the short run make test gates on")
    parser.add_argument("--sizes", default="10000,1000000,10000000")
    parser.add_argument("--rate", type=int, default=500, help="offered Lookups per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    argv = sys.argv[1:]
    if "--smoke" in argv:
        argv = SMOKE_ARGUMENTS + argv
    args = parser.parse_args(argv)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        with bench_server(config_extra="[store]\nmap_size_mb = 16384") as server:
            load_seconds, sample = _load(server, size)
            run = asyncio.run(_lookups(server, sample, args.rate, args.seconds))
            store_bytes = _store_bytes(server.setup.directory / "data")
            rss_anon = server.rss_anon_kib()
        results.append((size, load_seconds, run, store_bytes, rss_anon))
        print(f"... {size:,} done", flush=True)
    sys.exit(0 if _print(args, results) else 1)


def _load(server: BenchServer, size: int) -> tuple[float, list[str]]:
    """Streams ``size`` relationships; returns the seconds it took and a sample of IDs."""
    rng = random.Random(size)
    sample: list[str] = []
    ids = unique_synthetic_person_ids(seed=size)

    def batches() -> Iterator[list[str]]:
        sent = 0
        while sent < size:
            batch = list(itertools.islice(ids, min(_CHUNK, size - sent)))
            for customer in batch:  # reservoir sample of what was loaded
                sent += 1
                if len(sample) < _SAMPLE:
                    sample.append(customer)
                elif (slot := rng.randrange(sent)) < _SAMPLE:
                    sample[slot] = customer
            yield batch

    return server.report_stream(batches()), sample


async def _lookups(server: BenchServer, sample: list[str], rate: int, seconds: float) -> Run:
    rng = random.Random(1)
    async with server.clients.aio_channel(server.setup.identity("agency")) as channel:
        lookup = kfr_pb2_grpc.LookupServiceStub(channel).Lookup

        def find():
            return lookup(
                pb.LookupRequest(
                    customer_id=rng.choice(sample), from_date="2019-01-01",
                    legal_mandate=TEST_MANDATE, account_info_request_id=str(uuid.uuid4()),
                )
            )  # fmt: skip

        for _ in range(200):  # warm up the connection and the token cache
            await find()
        return await open_loop("Lookup", find, seconds, rate)


def _store_bytes(data_dir: Path) -> int:
    """Bytes the store occupies on disk (allocated blocks, not the sparse map size)."""
    return sum(path.stat().st_blocks * 512 for path in data_dir.iterdir())


def _print(args, results) -> bool:
    """Prints the table and the targets; True when every target is met."""
    targets = SMOKE if args.smoke else FULL
    print(f"\n## KFR growth (Lookup offered at {args.rate}/s for {args.seconds:.0f} s per size)\n")
    print("| relationships | load s | load rate | Lookup p50 ms | Lookup p99 ms | errors "
          "| store MB | bytes/relationship | server RssAnon MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for size, load_seconds, run, store_bytes, rss_anon in results:
        cells = [
            f"{size:,}", f"{load_seconds:.1f}", f"{size / load_seconds:,.0f}/s",
            f"{run.percentile_ms(0.5):.2f}", f"{run.percentile_ms(0.99):.2f}", run.errors,
            f"{store_bytes / 1e6:,.0f}", f"{store_bytes / size:,.0f}", f"{rss_anon / 1024:.0f}",
        ]  # fmt: skip
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    small, large = results[0], results[-1]
    growth = large[2].percentile_ms(0.99) / small[2].percentile_ms(0.99)
    rss = large[4] / 1024
    errors = sum(result[2].errors for result in results)
    checks = [
        (f"Lookup p99 at {large[0]:,} ≤ {targets.p99_growth} x p99 at {small[0]:,}",
         f"{growth:.2f} x", growth <= targets.p99_growth),
        (f"server RssAnon at {large[0]:,} < {targets.rss_mb:.0f} MB", f"{rss:.0f} MB",
         rss < targets.rss_mb),
        ("no failed call", f"{errors} failed", errors == 0),
    ]  # fmt: skip
    print("\n| target | measured | met |\n|---|---|---|")
    for name, measured, met in checks:
        print(f"| {name} | {measured} | {'yes' if met else 'NO'} |")
    met = all(met for *_, met in checks)
    print(f"\nSCALE {'OK' if met else 'FAILED'}{' (smoke targets)' if args.smoke else ''}")
    return met


if __name__ == "__main__":
    main()
