"""What the bench commands share: a server started from a fresh dev setup, and clients."""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.client import KfrClient, secure_channel
from kfr_grpc.clock import SystemClock
from kfr_grpc.config import load_config
from kfr_grpc.dev.setup import TEST_AGENCY_ORG, TEST_INSTITUTION_ORG, DevSetup, create_dev_setup

KFR = str(Path(sys.executable).with_name("kfr"))
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
WRITE_SCOPE, READ_SCOPE = "bits:kundeforhold.write", "bits:kundeforhold.read"


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m`` or ``1.5h`` (argparse type of --duration)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is no duration: try 90, 90s, 10m or 1h")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


@dataclass
class BenchServer:
    setup: DevSetup
    port: int
    process: subprocess.Popen

    @property
    def target(self) -> str:
        return f"localhost:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{load_config(self.setup.config).metrics.listen}/metrics"

    def agency_channel(self) -> grpc.aio.Channel:
        """An asyncio channel as the test agency, with a certificate-bound token."""
        return self.aio_channel("agency")

    def aio_channel(self, who: str) -> grpc.aio.Channel:
        """An asyncio channel as the test institution or agency (see ``client``)."""
        cert, key, token = self._identity(who)
        credentials = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(
                self.setup.file("ca.crt").read_bytes(), key.read_bytes(), cert.read_bytes()
            ),
            grpc.access_token_call_credentials(token),
        )
        return grpc.aio.secure_channel(self.target, credentials)

    def client(self, who: str) -> KfrClient:
        """The test institution ("institution") or agency ("agency"), with a bound token."""
        cert, key, token = self._identity(who)
        channel = secure_channel(
            self.target, ca=self.setup.file("ca.crt"), cert=cert, key=key, token=token
        )
        return KfrClient(channel)

    def _identity(self, who: str) -> tuple[Path, Path, str]:
        """Certificate, key and a certificate-bound two-hour token of ``who``."""
        org, scope = (
            (TEST_INSTITUTION_ORG, WRITE_SCOPE)
            if who == "institution"
            else (TEST_AGENCY_ORG, READ_SCOPE)
        )
        cert = self.setup.file(f"{who}.crt")
        token = self.setup.token_issuer().mint(
            org, scope, now=SystemClock().now(), ttl=7200, cnf_certificate=cert.read_bytes()
        )
        return cert, self.setup.file(f"{who}.key"), token

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

        client = self.client("institution")
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
        return rss_anon_kib(self.process.pid)


@contextlib.contextmanager
def bench_server(*, workers: int = 1, config_extra: str = "") -> Iterator[BenchServer]:
    """``kfr serve`` in its own process on a fresh dev setup in a temp directory."""
    with tempfile.TemporaryDirectory(prefix="kfr-bench-") as workdir:
        port = free_port()
        setup = create_dev_setup(Path(workdir) / "dev", listen=f"127.0.0.1:{port}")
        if config_extra:
            with setup.config.open("a", encoding="utf-8") as config:
                config.write("\n" + config_extra + "\n")
        command = [KFR, "serve", "--config", str(setup.config), "--workers", str(workers)]
        process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, process)
            time.sleep(0.5 * workers)  # let every worker bind before measuring
            yield BenchServer(setup, port, process)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    """Until the server ``process`` accepts connections on ``port``; RuntimeError if it
    exits first (with what it wrote to a piped stderr) or takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"the server exited early ({process.returncode}): {said}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on port {port} within {timeout:.0f} s")


def rss_anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0
