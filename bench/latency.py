"""Latency and throughput of the core RPCs against a real `kfr serve` process.

    make bench                     # or: python -m bench.latency --relationships 100000

Starts a server from a fresh dev setup (its own process, so client and server do not
share an interpreter), loads synthetic relationships with Report in batches of 1000,
then times sequential single calls of each kind over one mutual-TLS channel, each
client reusing one certificate-bound access token. The baseline is a call refused by
policy (an institution asking Lookup): the same TLS, token, interceptor and protobuf
path with no store work, measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.client import KfrClient, secure_channel
from kfr_grpc.clock import SystemClock
from kfr_grpc.config import load_config
from kfr_grpc.dev.setup import (
    TEST_AGENCY_ORG,
    TEST_INSTITUTION_ORG,
    TEST_MANDATE,
    DevSetup,
    create_dev_setup,
)
from kfr_grpc.dev.synthetic import synthetic_person_id

BATCH = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relationships", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per RPC kind")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="kfr-bench-") as workdir:
        port = _free_port()
        setup = create_dev_setup(Path(workdir) / "dev", listen=f"127.0.0.1:{port}")
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("kfr")), "serve", "--config", str(setup.config)],
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port)
            institution = _client(setup, port, "institution", TEST_INSTITUTION_ORG)
            agency = _client(setup, port, "agency", TEST_AGENCY_ORG)
            customers = [synthetic_person_id(rng) for _ in range(args.relationships)]
            load_seconds = _load(institution, customers)
            rows = _measure(institution, agency, customers, rng, args.calls)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    _print(args, load_seconds, rows)


def _client(setup: DevSetup, port: int, who: str, org: str) -> KfrClient:
    """A client with a certificate-bound token, reused for every call (as real clients do)."""
    settings = load_config(setup.config).tokens
    scope = settings.institution_scope if who == "institution" else settings.agency_scope
    cert = setup.file(f"{who}.crt")
    token = setup.token_issuer().mint(
        org, scope, now=SystemClock().now(), ttl=3600, cnf_certificate=cert.read_bytes()
    )
    return KfrClient(
        secure_channel(
            f"localhost:{port}",
            ca=setup.file("ca.crt"),
            cert=cert,
            key=setup.file(f"{who}.key"),
            token=token,
        )
    )


def _load(client: KfrClient, customers: list[str]) -> float:
    started = time.perf_counter()
    for offset in range(0, len(customers), BATCH):
        client.institutions.Report(
            pb.ReportRequest(
                institution_org_number=TEST_INSTITUTION_ORG,
                relationships=[
                    pb.Relationship(customer_id=c, role=pb.ROLE_OWNER, start_date="2020-01-01")
                    for c in customers[offset : offset + BATCH]
                ],
            )
        )
    return time.perf_counter() - started


def _measure(institution, agency, customers, rng, calls) -> list[tuple[str, list[float]]]:
    def lookup_request() -> pb.LookupRequest:
        return pb.LookupRequest(
            customer_id=rng.choice(customers),
            from_date="2019-01-01",
            legal_mandate=TEST_MANDATE,
            account_info_request_id=str(uuid.uuid4()),
        )

    def refused() -> None:
        try:
            institution.lookups.Lookup(lookup_request())
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        else:
            raise AssertionError("baseline call was not refused")

    def report_one() -> None:
        institution.institutions.Report(
            pb.ReportRequest(
                institution_org_number=TEST_INSTITUTION_ORG,
                relationships=[pb.Relationship(customer_id=synthetic_person_id(rng), role=1)],
            )
        )

    def list_own() -> None:
        institution.institutions.ListOwn(
            pb.ListOwnRequest(
                institution_org_number=TEST_INSTITUTION_ORG, customer_id=rng.choice(customers)
            )
        )

    kinds: list[tuple[str, Callable[[], object]]] = [
        ("baseline (refused Lookup)", refused),
        ("Lookup", lambda: agency.lookups.Lookup(lookup_request())),
        ("ListOwn", list_own),
        ("Report (1 item)", report_one),
    ]
    for _, call in kinds:  # warm up connections and caches
        for _ in range(50):
            call()
    return [(name, _timed(call, calls)) for name, call in kinds]


def _timed(call: Callable[[], object], calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _print(args, load_seconds: float, rows) -> None:
    print(f"store: {args.relationships:,} relationships loaded with Report in batches of {BATCH}")
    rate = args.relationships / load_seconds
    print(f"bulk load: {load_seconds:.2f} s = {rate:,.0f} relationships/s")
    print(f"{args.calls} sequential calls per kind, one client, one mutual-TLS channel:")
    print(f"{'rpc':<28}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs baseline':>13}")
    baseline = statistics.fmean(rows[0][1])
    for name, samples in rows:
        mean = statistics.fmean(samples)
        print(
            f"{name:<28}{1 / mean:>10,.0f}{_percentile(samples, 0.5) * 1000:>10.2f}"
            f"{_percentile(samples, 0.99) * 1000:>10.2f}{baseline / mean:>12.2f}x"
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


if __name__ == "__main__":
    main()
