"""``kfr serve --workers N``: N server processes sharing the LMDB environment and the port.

The kernel spreads new connections over the workers (SO_REUSEPORT). They share nothing
but the store, and LMDB makes a write committed by one visible to the next read
transaction of every other. The supervisor passes SIGHUP on to the workers (reload),
stops them on SIGTERM/SIGINT, waiting for them to drain, and restarts a worker that dies
unexpectedly.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("kfr.supervisor")

_RESTART_DELAY_SECONDS = 1.0


class Supervisor:
    def __init__(self, config_path: Path, workers: int, grace_seconds: float) -> None:
        self._config_path = config_path
        self._count = workers
        self._grace = grace_seconds
        self._stopping = threading.Event()
        self._workers: dict[int, subprocess.Popen] = {}

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self._forward(signal.SIGHUP))
        for index in range(self._count):
            self._start(index)
        while not self._stopping.wait(0.2):
            for index, worker in list(self._workers.items()):
                if worker.poll() is not None and not self._stopping.is_set():
                    log.error("worker %d exited with %s; restarting it", index, worker.returncode)
                    time.sleep(_RESTART_DELAY_SECONDS)
                    self._start(index)
        return self._stop_all()

    def _forward(self, signum: int) -> None:
        for worker in self._workers.values():
            if worker.poll() is None:
                worker.send_signal(signum)

    def _start(self, index: int) -> None:
        command = [
            sys.executable, "-m", "kfr_grpc.cli", "serve",
            "--config", str(self._config_path), "--worker-index", str(index),
        ]  # fmt: skip
        self._workers[index] = subprocess.Popen(command)
        log.info("worker %d started (pid %d)", index, self._workers[index].pid)

    def _stop_all(self) -> int:
        for worker in self._workers.values():
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + 10
        status = 0
        for index, worker in self._workers.items():
            try:
                worker.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", index)
                worker.kill()
                worker.wait()
            status = status or (worker.returncode if worker.returncode > 0 else 0)
        log.info("all workers stopped")
        return status
