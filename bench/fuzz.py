"""``make fuzz``: random and mutated requests to every RPC of a live server.

    python -m bench.fuzz [--duration 5m] [--seed N]

Starts a server of its own (dev setup, test mode) and, until the time is up, sends each
RPC (the register's, health and reflection) three kinds of input: raw random bytes as
the serialized message; valid requests with bytes flipped, inserted, dropped or cut; and
well-formed messages whose fields hold hostile values (invalid and synthetic IDs,
unicode, control characters, huge strings, enum numbers outside the contract, thousands
of items). It checks that

- no call ends in INTERNAL or UNKNOWN, and the server never stops answering;
- a call that fails writes nothing: the register's counts of relationships (total and
  active, read from the metrics endpoint) are the same after it as before. The one
  exception is by contract: a ReportStream commits chunk by chunk, so a stream that fails
  may have written the chunks before the bad one, and then its error says so (a
  ``PARTIAL`` field violation).

It prints how many inputs it tried, per RPC and per status, and exits non-zero on the
first violation (printing the input's kind, never its bytes).
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

from bench.common import BenchServer, bench_server, duration
from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG, TEST_MANDATE
from kfr_grpc.dev.synthetic import synthetic_org_number, synthetic_person_id

REFLECTION = "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
_REQUEST_STREAMING = {"InstitutionService/ReportStream", REFLECTION}
_RESPONSE_STREAMING = {"grpc.health.v1.Health/Watch", REFLECTION}
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}
SERVICE = "/kfr.v1."


def main() -> None:
    parser = argparse.ArgumentParser(description="fuzz a live KFR server")
    parser.add_argument(
        "--duration", type=duration, default=300.0, help="90, 90s, 10m, 1h (default 5 m)"
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"fuzzing for {args.duration:.0f} s, seed {seed}")
    with bench_server() as server:
        fuzzer = Fuzzer(server, random.Random(seed))
        failure = fuzzer.run(args.duration)
    fuzzer.report()
    if failure:
        print(f"FAILED: {failure}")
        sys.exit(1)
    print("OK: no INTERNAL or UNKNOWN, no write from a failed call, the server kept answering")


class Fuzzer:
    def __init__(self, server: BenchServer, rng: random.Random) -> None:
        self.server, self.rng = server, rng
        self.institution = server.clients.client(server.setup.identity("institution")).channel
        self.agency = server.clients.client(server.setup.identity("agency")).channel
        self.tried: collections.Counter[str] = collections.Counter()
        self.codes: collections.Counter[str] = collections.Counter()
        self.metrics_url = server.metrics_url

    # --- the loop -------------------------------------------------------------------------

    def run(self, seconds: float) -> str | None:
        deadline = time.monotonic() + seconds
        methods = list(_VALID)
        before = self._counts()
        while time.monotonic() < deadline:
            method = self.rng.choice(methods)
            kind, payload = self._input(method)
            code, partial = self._send(method, payload)
            self.tried[method] += 1
            self.codes[code.name] += 1
            if code in FORBIDDEN:
                return f"{method} answered {code.name} to a {kind} input"
            after = self._counts()
            if code is not grpc.StatusCode.OK and not partial and after != before:
                return f"{method} failed with {code.name} but wrote (a {kind} input)"
            before = after
        return None

    def report(self) -> None:
        total = sum(self.tried.values())
        print(f"inputs tried: {total:,}")
        for method, count in sorted(self.tried.items()):
            print(f"  {method}: {count:,}")
        print("statuses: " + ", ".join(f"{c}={n:,}" for c, n in self.codes.most_common()))

    # --- sending --------------------------------------------------------------------------

    def _send(self, method: str, payload: bytes | list[bytes]) -> tuple[grpc.StatusCode, bool]:
        """The call's status, and whether its error says it committed part of its input."""
        channel = self.agency if "Lookup" in method else self.institution
        if self.rng.random() < 0.05:  # now and then the wrong side
            channel = self.institution if channel is self.agency else self.agency
        path = "/" + method if method.startswith("grpc.") else SERVICE + method
        # bytes in, bytes out: no (de)serialising on this side
        try:
            if method in _RESPONSE_STREAMING:
                make = channel.stream_stream if isinstance(payload, list) else channel.unary_stream
                responses = make(path)(iter(payload) if isinstance(payload, list) else payload)
                try:
                    next(responses, None)  # Watch never ends by itself: one answer will do
                finally:
                    responses.cancel()
            elif isinstance(payload, list):
                channel.stream_unary(path)(iter(payload), timeout=30)
            else:
                channel.unary_unary(path)(payload, timeout=30)
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.CANCELLED:
                return grpc.StatusCode.OK, False
            return error.code(), _says_partial(error)
        return grpc.StatusCode.OK, False

    def _counts(self) -> tuple[str, str]:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        total = re.search(r"^kfr_relationships (\S+)$", text, re.M)
        active = re.search(r"^kfr_relationships_active (\S+)$", text, re.M)
        return (total.group(1), active.group(1))

    # --- inputs ---------------------------------------------------------------------------

    def _input(self, method: str) -> tuple[str, bytes | list[bytes]]:
        kind = self.rng.choice(("random bytes", "mutated", "hostile fields"))
        make: Callable[[], bytes] = {
            "random bytes": self._random_bytes,
            "mutated": lambda: self._mutate(_VALID[method](self).SerializeToString()),
            "hostile fields": lambda: _HOSTILE[method](self).SerializeToString(),
        }[kind]
        if method in _REQUEST_STREAMING:
            return kind, [make() for _ in range(self.rng.randint(0, 4))]
        return kind, make()

    def _random_bytes(self) -> bytes:
        size = self.rng.choice((0, 1, 5, 50, 500, 5000, 70_000))
        return self.rng.randbytes(size)

    def _mutate(self, data: bytes) -> bytes:
        data = bytearray(data)
        for _ in range(self.rng.randint(1, 8)):
            operation = self.rng.randrange(4)
            spot = self.rng.randrange(len(data) + 1)
            if operation == 0 and data:
                data[min(spot, len(data) - 1)] ^= 1 << self.rng.randrange(8)
            elif operation == 1:
                data[spot:spot] = self.rng.randbytes(self.rng.randint(1, 8))
            elif operation == 2:
                del data[spot : spot + self.rng.randint(1, 8)]
            else:
                del data[spot:]
        return bytes(data)

    def text(self) -> str:
        """A field value: valid, almost valid or hostile (only the chosen one is made)."""
        rng = self.rng
        makers: tuple[Callable[[], str], ...] = (
            lambda: synthetic_person_id(rng),
            lambda: synthetic_org_number(rng),
            lambda: synthetic_person_id(rng)[:-1] + "0",
            lambda: rng.choice(("", " ", "\x00\x01\x7f", "٣٣٣٣٣٣٣٣٣٣٣")),
            lambda: "0" * rng.randint(1, 40),
            lambda: rng.choice(("2020-02-30", "9999-12-31", "2020-01-01", "20200101")),
            lambda: str(uuid.uuid4()),
            lambda: "x" * rng.choice((10, 1000, 100_000)),
            lambda: (
                "".join(chr(rng.randrange(1, 0x10FFFF)) for _ in range(8))
                .encode("utf-8", "surrogatepass")
                .decode("utf-8", "replace")
            ),
        )
        return rng.choice(makers)()

    def number(self) -> int:
        return self.rng.choice((0, 1, 2, 3, -1, 7, 2**31 - 1, -(2**31)))

    def items(self) -> Iterator[int]:
        return range(self.rng.choice((0, 1, 3, 1001, 2000)))


def _says_partial(error: grpc.RpcError) -> bool:
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            return any(v.reason == "PARTIAL" for v in bad_request.field_violations)
    return False


def _report(f: Fuzzer) -> pb.ReportRequest:
    return pb.ReportRequest(
        institution_org_number=TEST_INSTITUTION_ORG,
        relationships=[pb.Relationship(customer_id=synthetic_person_id(f.rng), role=1)],
    )


_VALID: dict[str, Callable[[Fuzzer], object]] = {
    "InstitutionService/Report": _report,
    "InstitutionService/ReportStream": _report,
    "InstitutionService/End": lambda f: pb.EndRequest(
        institution_org_number=TEST_INSTITUTION_ORG,
        endings=[pb.Ending(customer_id=synthetic_person_id(f.rng), role=1)],
    ),
    "InstitutionService/ListOwn": lambda f: pb.ListOwnRequest(
        institution_org_number=TEST_INSTITUTION_ORG, customer_id=synthetic_person_id(f.rng)
    ),
    "InstitutionService/GetRequestLog": lambda f: pb.GetRequestLogRequest(
        institution_org_number=TEST_INSTITUTION_ORG, correlation_id=str(uuid.uuid4())
    ),
    "LookupService/Lookup": lambda f: pb.LookupRequest(
        customer_id=synthetic_person_id(f.rng),
        legal_mandate=TEST_MANDATE,
        account_info_request_id=str(uuid.uuid4()),
    ),
    "LookupService/LookupCollectionAccount": lambda f: pb.LookupCollectionAccountRequest(
        account_number="86011117947",
        legal_mandate=TEST_MANDATE,
        account_info_request_id=str(uuid.uuid4()),
    ),
    "grpc.health.v1.Health/Check": lambda f: health_pb2.HealthCheckRequest(),
    "grpc.health.v1.Health/Watch": lambda f: health_pb2.HealthCheckRequest(
        service="kfr.v1.LookupService"
    ),
    REFLECTION: lambda f: reflection_pb2.ServerReflectionRequest(list_services=""),
}


def _hostile_report(f: Fuzzer) -> pb.ReportRequest:
    return pb.ReportRequest(
        institution_org_number=f.rng.choice((TEST_INSTITUTION_ORG, f.text())),
        relationships=[
            pb.Relationship(customer_id=f.text(), role=f.number(), start_date=f.text())
            for _ in f.items()
        ],
    )


_HOSTILE: dict[str, Callable[[Fuzzer], object]] = {
    "InstitutionService/Report": _hostile_report,
    "InstitutionService/ReportStream": _hostile_report,
    "InstitutionService/End": lambda f: pb.EndRequest(
        institution_org_number=f.rng.choice((TEST_INSTITUTION_ORG, f.text())),
        endings=[
            pb.Ending(customer_id=f.text(), role=f.number(), end_date=f.text()) for _ in f.items()
        ],
    ),
    "InstitutionService/ListOwn": lambda f: pb.ListOwnRequest(
        institution_org_number=f.rng.choice((TEST_INSTITUTION_ORG, f.text())), customer_id=f.text()
    ),
    "InstitutionService/GetRequestLog": lambda f: pb.GetRequestLogRequest(
        institution_org_number=f.rng.choice((TEST_INSTITUTION_ORG, f.text())),
        correlation_id=f.text(),
    ),
    "LookupService/Lookup": lambda f: pb.LookupRequest(
        customer_id=f.text(),
        from_date=f.text(),
        to_date=f.text(),
        role_filter=f.number(),
        legal_mandate=f.rng.choice((TEST_MANDATE, f.text())),
        account_info_request_id=f.text(),
    ),
    "LookupService/LookupCollectionAccount": lambda f: pb.LookupCollectionAccountRequest(
        account_number=f.text(),
        legal_mandate=f.rng.choice((TEST_MANDATE, f.text())),
        account_info_request_id=f.text(),
    ),
    "grpc.health.v1.Health/Check": lambda f: health_pb2.HealthCheckRequest(service=f.text()),
    "grpc.health.v1.Health/Watch": lambda f: health_pb2.HealthCheckRequest(service=f.text()),
    REFLECTION: lambda f: f.rng.choice(
        (
            reflection_pb2.ServerReflectionRequest(file_by_filename=f.text()),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=f.text()),
            reflection_pb2.ServerReflectionRequest(
                file_containing_extension=reflection_pb2.ExtensionRequest(
                    containing_type=f.text(), extension_number=f.number()
                )
            ),
            reflection_pb2.ServerReflectionRequest(all_extension_numbers_of_type=f.text()),
        )
    ),
}


if __name__ == "__main__":
    main()
