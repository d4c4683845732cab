"""What the bench commands and the tests that run ``kfr serve`` share: a server in its own
process, started from a configuration and waited for through its ready file (never by
probing a port, so nothing races its bind), and clients of it.

When ``KFR_TEST_LOG_DIR`` is set (the test suite sets it for every test) the server logs
at DEBUG into a file there, where the suite's leak check reads it; otherwise into a file
beside its configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.config import load_config
from kfr_grpc.dev.clients import Clients
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG, DevSetup, create_dev_setup
from kfr_grpc.readiness import read_ready

KFR = str(Path(sys.executable).with_name("kfr"))
REPO = Path(__file__).resolve().parent.parent
LOG_DIR_VARIABLE = "KFR_TEST_LOG_DIR"
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m`` or ``1.5h`` (argparse type of --duration)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is no duration: try 90, 90s, 10m or 1h")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


# --- a server in its own process -----------------------------------------------------------


@dataclass
class ServerProcess:
    """``kfr serve`` in its own process, serving (its ready file was written)."""

    process: subprocess.Popen
    ready_file: Path
    log_path: Path
    ready: dict[str, Any]

    @property
    def port(self) -> int:
        return self.ready["port"]

    @property
    def target(self) -> str:
        return f"localhost:{self.port}"

    @property
    def rest_url(self) -> str:
        """The REST endpoint's base URL (a single-process server's)."""
        return f"https://localhost:{self.ready['rest_port']}/kar-ws/api/v1"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ready['metrics_port']}/metrics"

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then waits for the process to end; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self, timeout: float = 30) -> None:
        """``kill -9``, and the wait for it and for every process it had started (its
        validation helpers, its workers), which must end by themselves."""
        started = descendants(self.process.pid) if self.process.poll() is None else []
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        deadline = time.monotonic() + timeout
        while alive := [pid for pid in started if running(pid)]:
            if time.monotonic() > deadline:
                raise AssertionError(f"processes outlived the killed server: {alive}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_until(self, predicate, timeout: float = 30) -> dict[str, Any]:
        """Until the ready file says what ``predicate`` wants (a restarted worker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            document = read_ready(self.ready_file)
            if document is not None and predicate(document):
                self.ready = document
                return document
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the server's ready file never said so:\n{self.log()[-3000:]}")


def start_server(config: Path, *, workers: int = 1, timeout: float = 60) -> ServerProcess:
    """Starts ``kfr serve`` on ``config`` and waits until it serves."""
    log_dir = os.environ.get(LOG_DIR_VARIABLE)
    if log_dir:
        set_log_level(config, "DEBUG")
    command = [KFR, "serve", "--config", str(config)]
    if workers > 1:
        command += ["--workers", str(workers)]
    return _start(command, config, "kfr-serve", timeout)


def start_bare_server(config: Path, timeout: float = 60) -> ServerProcess:
    """Starts the bare ``grpc.aio`` health server (``bench.bare``) with ``config``'s TLS."""
    command = [sys.executable, "-m", "bench.bare", "--config", str(config)]
    return _start(command, config, "bare-serve", timeout)


def _start(command: list[str], config: Path, kind: str, timeout: float) -> ServerProcess:
    name = f"{kind}-{uuid.uuid4().hex[:8]}"
    log_path = Path(os.environ.get(LOG_DIR_VARIABLE) or config.parent) / f"{name}.log"
    ready_file = config.parent / f"{name}.ready"
    command = [*command, "--ready-file", str(ready_file)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
    server = ServerProcess(process, ready_file, log_path, {})
    try:
        server.wait_until(lambda _: True, timeout)
    except BaseException:
        server.kill()
        raise
    return server


def descendants(pid: int) -> list[int]:
    """Every process ``pid`` started, and theirs (Linux: /proc)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = [int(child) for child in children.read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *descendants(kid)]
    return found


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def set_log_level(config: Path, level: str) -> None:
    """Sets ``log_level`` in the configuration file (top-level keys come first)."""
    lines = config.read_text(encoding="utf-8").splitlines()
    lines = [line for line in lines if not line.startswith("log_level")]
    config.write_text(f'log_level = "{level}"\n' + "\n".join(lines) + "\n", encoding="utf-8")


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A loopback port held (bound, not listening, with SO_REUSEPORT) until the block
    ends: ``kfr serve --workers N`` needs a fixed port, and holding it this way means no
    other program can take it in the meantime, while the workers can bind it too."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


# --- a benchmark's own server ------------------------------------------------------------------


@dataclass
class BenchServer:
    setup: DevSetup
    server: ServerProcess
    clients: Clients

    @property
    def target(self) -> str:
        return self.server.target

    @property
    def metrics_url(self) -> str:
        return self.server.metrics_url

    def report_stream(self, batches: Iterable[list[str]]) -> float:
        """Streams each batch of customer IDs as one ``ReportStream`` chunk (owner since
        2020-01-01) as the test institution; returns the seconds until the answer, and
        checks every relationship was registered."""
        sent = 0

        def chunks() -> Iterator[pb.ReportRequest]:
            nonlocal sent
            for index, batch in enumerate(batches):
                sent += len(batch)
                yield pb.ReportRequest(
                    institution_org_number=TEST_INSTITUTION_ORG if index == 0 else "",
                    relationships=[
                        pb.Relationship(customer_id=c, role=pb.ROLE_OWNER, start_date="2020-01-01")
                        for c in batch
                    ],
                )

        client = self.clients.client(self.setup.identity("institution"))
        try:
            started = time.perf_counter()
            response = client.institutions.ReportStream(chunks())
            elapsed = time.perf_counter() - started
        finally:
            client.close()
        assert response.registered_count == sent, response
        return elapsed

    def rss_anon_kib(self) -> int:
        """The server process's anonymous resident memory (heap, stacks; not the LMDB map)."""
        return rss_anon_kib(self.server.process.pid)


@contextlib.contextmanager
def bench_server(*, workers: int = 1, config_extra: str = "") -> Iterator[BenchServer]:
    """``kfr serve`` in its own process on a fresh dev setup in a temp directory."""
    with tempfile.TemporaryDirectory(prefix="kfr-bench-") as workdir, _listen(workers) as listen:
        setup = create_dev_setup(Path(workdir) / "dev", listen=listen, metrics_listen="127.0.0.1:0")
        if config_extra:
            with setup.config.open("a", encoding="utf-8") as config:
                config.write("\n" + config_extra + "\n")
        server = start_server(setup.config, workers=workers)
        try:
            yield BenchServer(setup, server, setup.clients(server.target))
        finally:
            server.stop()


@contextlib.contextmanager
def _listen(workers: int) -> Iterator[str]:
    if workers == 1:
        yield "127.0.0.1:0"
        return
    with reserved_port() as port:
        yield f"127.0.0.1:{port}"


def rss_anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


@contextlib.contextmanager
def fresh_dev_store(prefix: str) -> Iterator[Any]:
    """The store of a new dev setup in a temporary directory, in this process."""
    from kfr_grpc.server import open_store

    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        setup = create_dev_setup(
            Path(workdir) / "dev", listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"
        )
        store = open_store(load_config(setup.config), follow_keyring=False)
        try:
            yield store
        finally:
            store.close()
