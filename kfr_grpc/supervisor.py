"""``kfr serve --workers N``: N server processes sharing the LMDB environment and the port.

The kernel spreads new connections over the workers (SO_REUSEPORT). They share nothing
but the store, and LMDB makes a write committed by one visible to the next read
transaction of every other. The supervisor passes SIGHUP on to the workers (reload),
stops them on SIGTERM/SIGINT, waiting for them to drain, and restarts a worker that dies
unexpectedly: at once the first time, then after a delay that doubles with each quick
death. A worker that dies ``MAX_QUICK_DEATHS`` times within ``QUICK_SECONDS`` of its start
is crash-looping (a broken disk, a bad configuration): the supervisor then stops them all
and exits with status 1, so that the service manager and the operator hear of it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kfr_grpc.readiness import read_ready, remove_ready, write_ready

log = logging.getLogger("kfr.supervisor")

QUICK_SECONDS = 60.0  # a worker that dies sooner than this after its start died quickly
MAX_QUICK_DEATHS = 5
_FIRST_DELAY, _MAX_DELAY = 0.5, 30.0
_POLL_SECONDS = 0.1


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    started: float
    quick_deaths: int = 0
    ready: dict | None = None
    restart_at: float | None = None
    delay: float = field(default=_FIRST_DELAY)


def describe_exit(returncode: int) -> str:
    """``exited with 3`` or ``was killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with {returncode}"


class Supervisor:
    def __init__(
        self,
        config_path: Path,
        workers: int,
        grace_seconds: float,
        *,
        ready_file: Path | None = None,
        port: int,
    ) -> None:
        self._config_path = config_path
        self._count = workers
        self._grace = grace_seconds
        self._ready_file = ready_file
        self._port = port
        self._stopping = threading.Event()
        self._workers: dict[int, _Worker] = {}
        self._announced: tuple | None = None

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self._forward(signal.SIGHUP))
        for index in range(self._count):
            self._workers[index] = self._start(index)
        crashed = False
        while not self._stopping.wait(_POLL_SECONDS):
            if not self._watch():
                crashed = True
                break
            self._announce()
        status = self._stop_all()
        if self._ready_file is not None:
            remove_ready(self._ready_file)
        return 1 if crashed else status

    def _watch(self) -> bool:
        """Restarts dead workers when their delay has passed; False when one crash-loops."""
        now = time.monotonic()
        for index, worker in list(self._workers.items()):
            returncode = worker.process.poll()
            if returncode is None or self._stopping.is_set():
                continue
            if worker.restart_at is None:
                if not self._schedule_restart(worker, returncode, now):
                    return False
            elif now >= worker.restart_at:
                self._workers[index] = self._restarted(worker)
        return True

    def _schedule_restart(self, worker: _Worker, returncode: int, now: float) -> bool:
        quick = now - worker.started < QUICK_SECONDS
        worker.quick_deaths = worker.quick_deaths + 1 if quick else 0
        worker.ready = None
        if worker.quick_deaths >= MAX_QUICK_DEATHS:
            log.error(
                "worker %d %s within %.0f s of its start, %d times in a row; it is "
                "crash-looping: stopping every worker (see the worker's log lines above)",
                worker.index, describe_exit(returncode), QUICK_SECONDS, worker.quick_deaths,
            )  # fmt: skip
            return False
        delay = 0.0 if worker.quick_deaths <= 1 else worker.delay
        worker.restart_at = now + delay
        log.error(
            "worker %d %s; restarting it in %.1f s", worker.index, describe_exit(returncode), delay
        )
        return True

    def _restarted(self, worker: _Worker) -> _Worker:
        fresh = self._start(worker.index)
        fresh.quick_deaths = worker.quick_deaths
        fresh.delay = min(worker.delay * 2, _MAX_DELAY) if worker.quick_deaths > 1 else worker.delay
        return fresh

    def _forward(self, signum: int) -> None:
        for worker in self._workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signum)

    def _worker_ready_file(self, index: int) -> Path | None:
        if self._ready_file is None:
            return None
        return self._ready_file.with_name(f"{self._ready_file.name}.worker-{index}")

    def _start(self, index: int) -> _Worker:
        command = [
            sys.executable, "-m", "kfr_grpc.cli", "serve",
            "--config", str(self._config_path), "--worker-index", str(index),
            "--supervisor-pid", str(os.getpid()),
        ]  # fmt: skip
        ready = self._worker_ready_file(index)
        if ready is not None:
            remove_ready(ready)
            command += ["--ready-file", str(ready)]
        process = subprocess.Popen(command)
        log.info("worker %d started (pid %d)", index, process.pid)
        return _Worker(index, process, time.monotonic())

    def _announce(self) -> None:
        """Writes the ready file once every worker serves (again after a restart)."""
        if self._ready_file is None:
            return
        for worker in self._workers.values():
            if worker.ready is None:
                path = self._worker_ready_file(worker.index)
                document = read_ready(path) if path else None
                if document is not None and document.get("pid") == worker.process.pid:
                    worker.ready = document
        if any(worker.ready is None for worker in self._workers.values()):
            return
        workers = [{"index": w.index, **(w.ready or {})} for w in self._workers.values()]
        state = tuple(w["pid"] for w in workers)
        if state != self._announced:
            document = {"pid": os.getpid(), "port": self._port, "workers": workers}
            write_ready(self._ready_file, document)
            self._announced = state

    def _stop_all(self) -> int:
        """SIGTERM to every worker, a wait for them to drain; 1 if any did not stop cleanly."""
        for worker in self._workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + 10
        status = 0
        for index, worker in self._workers.items():
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", index)
                worker.process.kill()
                worker.process.wait()
            if worker.process.returncode != 0:
                log.error("worker %d %s", index, describe_exit(worker.process.returncode))
                status = 1
        log.info("all workers stopped")
        return status
