"""The server's periodic work in one background thread: storing the lookup counters;
once per ``purge_interval_seconds`` (first soon after start), retention; once per
``integrity_check_seconds``, a walk over the store for inconsistencies (a deleted index
entry would otherwise stop retention without a sound); and once per
``compact_seconds``, a compaction, so that what was removed is gone from the disk too.

Every process stores its own counters (they add up). Retention runs in one process: of
several workers, the one told so; in a cluster, only while its node holds the scheduler
lease (``runs_retention`` is asked each time). The integrity walk and the compaction run
in that worker, on every node (each has its own copy)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kfr_grpc.config import MaintenanceConfig
from kfr_grpc.errors import KfrError
from kfr_grpc.metrics import Metrics
from kfr_grpc.register.operations import Operations
from kfr_grpc.register.statistics import LookupStatistics

log = logging.getLogger("kfr.server")


class Maintenance:
    def __init__(
        self,
        config: MaintenanceConfig,
        operations: Operations,
        statistics: LookupStatistics,
        metrics: Metrics,
        *,
        runs_retention: Callable[[], bool] = lambda: True,
        problems: Callable[[], list[str]] | None = None,
        compact: Callable[[], tuple[Any, int]] | None = None,
    ) -> None:
        self._config = config
        self._problems = problems
        self._compact = compact
        self._metrics = metrics
        self._runs_retention = runs_retention
        self._operations = operations
        self._statistics = statistics
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kfr-maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread and stores the last counts."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._flush()

    def _run(self) -> None:
        config = self._config
        purge = _Periodic(
            config.purge_interval_seconds,
            min(60.0, config.purge_interval_seconds),
            self._purge,
            self._runs_retention,
        )
        jobs = [purge]
        if self._problems is not None and config.integrity_check_seconds > 0:
            first = min(300.0, config.integrity_check_seconds)
            jobs.append(_Periodic(config.integrity_check_seconds, first, self._check_integrity))
        if self._compact is not None and config.compact_seconds > 0:
            # First after one to two hours (or intervals), at random: cluster nodes started
            # together do not all compact, and stop applying the log, at once.
            first = min(3600.0, config.compact_seconds) * (1 + random.random())
            jobs.append(_Periodic(config.compact_seconds, first, self._compact_store))
        tick = min(config.lookup_counts_flush_seconds, *(job.interval for job in jobs))
        while not self._stopping.wait(max(tick, 0.05)):
            self._flush()
            for job in jobs:
                job.run_if_due()

    def _flush(self) -> None:
        # (a KfrError: the store cannot take them now, e.g. etcd away in a cluster)
        _attempted(self._statistics.flush, "storing the lookup counters", "kept for the next try")

    def _purge(self) -> None:
        result = _attempted(self._operations.purge, "retention", _NEXT_INTERVAL)
        if result is None:
            return
        self._metrics.purge_runs.inc()
        self._metrics.purged_periods.inc(result.periods_removed)
        log.info(
            "retention: removed %d periods, %d relationships, %d request records (cutoff %s)",
            result.periods_removed,
            result.relationships_removed,
            result.request_records_removed,
            result.cutoff.isoformat(),
        )

    def _check_integrity(self) -> None:
        assert self._problems is not None
        problems = _attempted(self._problems, "the integrity walk", _NEXT_INTERVAL)
        if problems is None:
            return
        self._metrics.integrity_problems.set(len(problems))
        for problem in problems:
            log.error("store integrity: %s (kfr doctor --verify lists them all)", problem)
        if not problems:
            log.info("store integrity: every record, index entry and count agrees")

    def _compact_store(self) -> None:
        assert self._compact is not None
        result = _attempted(self._compact, "compaction", _NEXT_INTERVAL)
        if result is not None:
            copy, before = result
            log.info("compaction: data file %d -> %d bytes", before, copy.bytes)


@dataclass
class _Periodic:
    """A job run every ``interval`` seconds (first after ``first``), when ``wanted()``."""

    interval: float
    first: float
    job: Callable[[], None]
    wanted: Callable[[], bool] = lambda: True

    def __post_init__(self) -> None:
        self._due = time.monotonic() + self.first

    def run_if_due(self) -> None:
        if time.monotonic() >= self._due and self.wanted():
            self.job()
            self._due = time.monotonic() + self.interval


_NEXT_INTERVAL = "it runs again at the next interval"
_T = TypeVar("_T")


def _attempted(job: Callable[[], _T], what: str, then: str) -> _T | None:
    """``job()``, or None after logging why it failed: a known refusal as a warning, a
    bug with its traceback. Periodic work never stops the thread that runs it."""
    try:
        return job()
    except KfrError as error:
        log.warning("%s failed (%s): %s", what, then, error)
    except Exception:
        log.exception("%s failed; %s", what, then)
    return None
