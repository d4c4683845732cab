"""What an online compaction costs the service: how long it takes, how long writes wait
and how reads fare meanwhile, on a store of ``--relationships``.

    python -m bench.compaction [--relationships 1000000]

Builds a fresh dev store, fills it (in the store's own process, straight through the
register's writes), ends and purges a tenth of it (so there is something to erase), then
compacts it while one thread keeps writing (a report of a new customer every 10 ms) and
another keeps reading (a customer's relationships, as a Lookup reads them). Prints the
compaction's duration, the data file before and after, the longest a write waited, and
the reads' latency during the compaction against before it. Exits 1 if a call failed.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from datetime import date

from bench.common import fresh_dev_store, percentile
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG
from kfr_grpc.dev.synthetic import unique_synthetic_person_ids
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
from kfr_grpc.register.model import Period, ProductKind, Role
from kfr_grpc.store import LmdbStore

UNSPECIFIED = ProductKind.UNSPECIFIED

_BATCH = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description="the cost of an online compaction")
    parser.add_argument("--relationships", type=int, default=1_000_000)
    args = parser.parse_args()
    with fresh_dev_store("kfr-compaction-") as store:
        status = _measure(store, args.relationships)
    sys.exit(status)


def _person(digits: str) -> CustomerId:
    return CustomerId(digits, CustomerKind.PERSON)


def _fill(store: LmdbStore, count: int) -> list[CustomerId]:
    ids = unique_synthetic_person_ids(seed=23)
    active, ended = (Period(date(2020, 1, 1)),), (Period(date(2005, 1, 1), date(2010, 1, 1)),)
    customers: list[CustomerId] = []
    for start in range(0, count, _BATCH):
        batch = [_person(d) for d in itertools.islice(ids, min(_BATCH, count - start))]

        def put(txn, batch=batch, start=start) -> None:
            for n, customer in enumerate(batch, start):
                history = ended if n % 10 == 0 else active
                txn.put_history(customer, TEST_INSTITUTION_ORG, Role.OWNER, UNSPECIFIED, history)

        store.write(put)
        customers.extend(batch[1::10])  # a sample with active relationships, to read
    return customers


def _purge(store: LmdbStore) -> int:
    removed = 0
    while True:
        expired = store.write(lambda txn: _delete_expired(txn, date(2016, 1, 1)))
        removed += expired
        if expired == 0:
            return removed


def _delete_expired(txn, cutoff: date) -> int:
    victims = list(itertools.islice(txn.expired(cutoff), _BATCH))
    for stored in victims:
        txn.put_history(stored.customer, stored.institution, stored.role, stored.kind, ())
    return len(victims)


class _Load:
    """A writer and a reader thread, each recording its calls' latencies."""

    def __init__(self, store: LmdbStore, readable: list[CustomerId]) -> None:
        self._store = store
        self._readable = readable
        self._stop = threading.Event()
        self.writes: list[tuple[float, float]] = []  # (start, seconds)
        self.reads: list[tuple[float, float]] = []
        self.failures: list[str] = []
        self._new = (_person(d) for d in unique_synthetic_person_ids(seed=29))
        self._threads = [
            threading.Thread(target=self._write_loop),
            threading.Thread(target=self._read_loop),
        ]

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _write_loop(self) -> None:
        while not self._stop.wait(0.01):
            customer = next(self._new)
            self._timed(
                self.writes,
                lambda c=customer: self._store.write(
                    lambda txn: txn.put_history(
                        c,
                        TEST_INSTITUTION_ORG,
                        Role.OWNER,
                        UNSPECIFIED,
                        (Period(date(2021, 1, 1)),),
                    )
                ),
            )

    def _read_loop(self) -> None:
        for customer in itertools.cycle(self._readable):
            if self._stop.is_set():
                return
            self._timed(self.reads, lambda c=customer: self._read(c))

    def _read(self, customer: CustomerId) -> None:
        with self._store.read() as view:
            if not list(view.relationships(customer)):
                raise AssertionError("a relationship read found nothing")

    def _timed(self, samples: list[tuple[float, float]], call) -> None:
        started = time.perf_counter()
        try:
            call()
        except Exception as error:  # every failure is reported
            self.failures.append(repr(error))
        samples.append((started, time.perf_counter() - started))


def _measure(store: LmdbStore, count: int) -> int:
    print(f"filling a store with {count:,} relationships ...", flush=True)
    readable = _fill(store, count)
    purged = _purge(store)
    with _Load(store, readable) as load:
        time.sleep(3.0)  # before: the baseline
        began = time.perf_counter()
        copy, size_before = store.compact()
        ended = time.perf_counter()
        time.sleep(3.0)  # after
    during = [s for t, s in load.reads if began <= t <= ended]
    before = [s for t, s in load.reads if t < began]
    writes_during = [s for t, s in load.writes if t + s >= began and t <= ended]
    print(f"\n## Online compaction of {copy.relationships:,} relationships ({purged:,} purged)\n")
    print("| measure | value |\n|---|---|")
    print(f"| compaction, start to swap | {ended - began:.1f} s |")
    print(
        f"| data file before -> after | {size_before / 1e6:,.0f} MB -> {copy.bytes / 1e6:,.0f} MB |"
    )
    print(f"| longest a write waited | {max(s for _, s in load.writes) * 1000:,.0f} ms |")
    print(f"| writes during it (one every 10 ms) | {len(writes_during)} |")
    print(
        f"| reads before: count, p99 | {len(before):,}, {percentile(before, 0.99) * 1000:.2f} ms |"
    )
    print(
        f"| reads during: count, p99, max | {len(during):,}, "
        f"{percentile(during, 0.99) * 1000:.2f} ms, {max(during, default=0) * 1000:.1f} ms |"
    )
    print(f"| failed calls | {len(load.failures)} |")
    print("\nCOMPACTION " + ("OK" if not load.failures else f"FAILED: {load.failures[:3]}"))
    return 1 if load.failures else 0


if __name__ == "__main__":
    main()
