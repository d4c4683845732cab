"""Counters of agency lookups: how many, by day, agency, mandate and outcome. Nothing else.

For lookups nothing about the person looked up is stored or logged, not the ID and not
its pseudonym: these counters are the only trace. They are kept in memory and added to
the store every ``flush`` (the server does so every minute and when it stops), so that
a lookup never waits for a disk write; a crash loses at most the counts since the last
flush.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import date

from kfr_grpc.clock import Clock
from kfr_grpc.register.storage import Storage, WriteTxn

_Key = tuple[date, str, str]
_Pending = dict[_Key, dict[str, int]]


class LookupStatistics:
    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: _Pending = defaultdict(dict)

    def count(self, agency: str, mandate: str, status: str) -> None:
        key = (self._clock.today(), agency, mandate)
        with self._lock:
            counts = self._pending[key]
            counts[status] = counts.get(status, 0) + 1

    def flush(self) -> int:
        """Adds the pending counts to the store; returns how many counters it wrote."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(dict)
        if not pending:
            return 0

        def work(txn: WriteTxn) -> None:
            for (day, agency, mandate), counts in pending.items():
                txn.add_lookup_counts(day, agency, mandate, counts)

        try:
            self._storage.write(work)
        except BaseException:
            self._restore(pending)
            raise
        return len(pending)

    def _restore(self, pending: _Pending) -> None:
        """Puts counts that could not be written back, so a later flush writes them."""
        with self._lock:
            for key, counts in pending.items():
                merged = self._pending[key]
                for status, count in counts.items():
                    merged[status] = merged.get(status, 0) + count
