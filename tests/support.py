"""Constants and helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import functools
import random
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from kfr_grpc.client import KfrClient
from kfr_grpc.clock import FixedClock
from kfr_grpc.config import load_config
from kfr_grpc.dev import pki
from kfr_grpc.dev.clients import DEFAULT, Clients, Identity
from kfr_grpc.dev.synthetic import regular_person_id, synthetic_org_number, synthetic_person_id
from kfr_grpc.dev.tokens import TokenIssuer
from kfr_grpc.register.model import CallInfo
from kfr_grpc.server import KfrServer, build_server

TODAY = date(2026, 6, 15)

INSTITUTION_ORG = "311000004"
INSTITUTION_NAME = "Testbanken KFR"
OTHER_INSTITUTION_ORG = "313000001"
OTHER_INSTITUTION_NAME = "Andre Testbank"
UNREGISTERED_ORG = "314000005"
AGENCY_ORG = "312000008"
OWNER_ONLY_AGENCY_ORG = "315000009"
MANDATE = "Skatteforvaltningsloven § 10-2"
OTHER_MANDATE = "Tvangsfullbyrdelsesloven § 7-9"
VENDOR_ORG = "316000002"
TEST_ISSUER = "https://maskinporten.test.kfr.invalid/"
TEST_AUDIENCE = "https://kfr.test.invalid/"
WRITE_SCOPE = "bits:kundeforhold.write"
# Tests call as fast as they can; the rate limits have tests of their own.
UNLIMITED_RATE = "calls_per_second = 1000000\nburst = 1000000"
LOOKUP_SCOPE = "bits:kundeforhold"
ACCOUNT_SCOPE = "bits:kundeforhold.konto"
READ_SCOPE = f"{LOOKUP_SCOPE} {ACCOUNT_SCOPE}"  # what the test agencies' tokens carry


def refused_in_the_handshake(server: RunningServer, error, customer: str) -> None:
    """``error`` is a TLS handshake the server refused, not a dead or absent server: the
    server took the TCP connection and closed it (a dead server's is refused), and a
    valid client is served by the same server right after (the positive control)."""
    from kfr_grpc._proto import kfr_pb2 as pb

    assert error.code().name == "UNAVAILABLE"
    details = error.details()
    assert "Connection refused" not in details, details
    assert "Socket closed" in details or "andshake" in details, details
    control = server.client(server.pki.institution)
    request = pb.ReportRequest(
        institution_org_number=INSTITUTION_ORG,
        relationships=[pb.Relationship(customer_id=customer, role=pb.ROLE_OWNER)],
    )
    assert control.institutions.Report(request, timeout=10).registered_count == 1


def wait_for(condition, what: str, timeout: float = 10):
    """Until ``condition()`` is true (returns it), or fails naming ``what``."""
    import time

    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.01)
    return result


def by(institution: str) -> CallInfo:
    """A call made for ``institution`` under a fresh correlation-id (register tests)."""
    return CallInfo.new(institution, "/tests")


def register_lookup(register, customer: str, first: str = "2000-01-01", last: str = "", *,
                    owner_only: bool = False) -> list:  # fmt: skip
    """The institutions of the register's Lookup answer (register tests: no server, any
    mandate)."""
    return list(register_lookup_answer(register, customer, first, last, owner_only=owner_only)
                .institutions)  # fmt: skip


def register_lookup_answer(
    register, customer: str, first: str = "2000-01-01", last: str = "", *,
    owner_only: bool = False, only_primary_owner: bool = False,
):  # fmt: skip
    """The register's whole Lookup answer."""
    import uuid

    query = register.parse_lookup(
        customer_id=customer,
        from_date=first,
        to_date=last,
        owner_only=owner_only,
        legal_mandate="m",
        account_info_request_id=str(uuid.uuid4()),
        only_primary_owner=only_primary_owner,
    )
    return register.lookup(query)


class Ids:
    """Makes synthetic customer IDs and remembers every one, for the log checks."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self.issued: list[str] = []

    def _remember(self, value: str) -> str:
        self.issued.append(value)
        return value

    def person(self, *, d_number: bool = False) -> str:
        return self._remember(synthetic_person_id(self._rng, d_number=d_number))

    def regular_person(self, *, d_number: bool = False) -> str:
        return self._remember(regular_person_id(self._rng, d_number=d_number))

    def company(self) -> str:
        return self._remember(synthetic_org_number(self._rng))


@dataclass(frozen=True)
class Pki:
    authority: pki.Issued
    foreign_authority: pki.Issued
    ca: Path
    server: Identity
    institution: Identity
    institution_org_identifier: Identity
    other_institution: Identity
    unregistered: Identity
    agency: Identity
    owner_only_agency: Identity
    no_org_number: Identity
    foreign_ca_institution: Identity
    expired_institution: Identity
    future_institution: Identity
    vendor: Identity


class EventLoopThread:
    """One asyncio event loop in a thread of its own, for every in-process server of the
    session: gRPC's asyncio server binds to the loop it first runs on, and event loops
    created and closed one after another in one process make it crash."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kfr-test-loop")
        self._thread.start()

    def run(self, coroutine):
        """Runs ``coroutine`` on the loop; returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)


class RunningServer:
    """A real KFR server on a free loopback port, with clients and tokens for test identities."""

    def __init__(
        self, directory: Path, config_path: Path, test_pki: Pki, clock: FixedClock,
        issuer: TokenIssuer, loop: EventLoopThread,
    ) -> None:  # fmt: skip
        self.directory = directory
        self.config_path = config_path
        self.pki = test_pki
        self.clock = clock
        self.issuer = issuer
        self._clients: list[KfrClient] = []
        self.server: KfrServer | None = None
        self._loop = loop

    def start(self) -> None:
        """Serves on the session's event loop thread."""
        config = load_config(self.config_path)
        self.server = self.run(build_server(config, clock=self.clock))
        self.port = self.run(self.server.start())
        self.clients = Clients(
            f"localhost:{self.port}", self.pki.ca, self.issuer, clock=self.clock,
            ttl=120, bind_tokens=False,
        )  # fmt: skip

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.server is not None:
            self.run(self.server.stop(grace=0))
            self.server = None

    def run(self, coroutine):
        """Runs ``coroutine`` on the server's event loop; returns its result."""
        return self._loop.run(coroutine)

    def restart(self) -> None:
        self.stop()
        self.start()

    def token(self, identity: Identity, **claims) -> str:
        """A token for ``identity``'s organisation and scope; ``claims`` as for ``mint``."""
        return self.clients.token(identity, **claims)

    def client(
        self, identity: Identity, *, token: str | None = DEFAULT, ca: Path | None = None
    ) -> KfrClient:
        """A client over mutual TLS as ``identity``; ``token=None`` sends no token."""
        client = self.clients.client(identity, token=token, ca=ca)
        self._clients.append(client)
        return client

    @property
    def keyring_path(self) -> Path:
        return load_config(self.config_path).keyring

    @property
    def data_dir(self) -> Path:
        return load_config(self.config_path).data_dir

    @property
    def crl_path(self) -> Path:
        return self.directory / "ca.crl"

    @property
    def jwks_path(self) -> Path:
        return self.directory / "jwks.json"

    def rest(self, identity: Identity, *, token: str | None = DEFAULT) -> RestClient:
        """An HTTPS client of the REST endpoint over mutual TLS as ``identity``, sending
        ``token`` (by default a fresh one for it; None: none)."""
        assert self.server is not None and self.server.rest_port, "a server with [rest]"
        if token is DEFAULT:
            token = self.token(identity)
        return RestClient(
            f"https://localhost:{self.server.rest_port}", self.pki.ca, identity, token
        )

    def metrics(self) -> str:
        """The Prometheus endpoint's text."""
        import urllib.request

        assert self.server is not None
        url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def relationship_count(self) -> int:
        assert self.server is not None
        with self.server.store.read() as view:
            return view.relationship_count()


@functools.cache
def openapi_schema():
    """Our OpenAPI document (kfr_grpc/rest/openapi.json), for schemathesis."""
    import schemathesis

    from kfr_grpc.rest.routes import openapi_document

    return schemathesis.openapi.from_dict(openapi_document())


class RestClient:
    """``requests`` over mutual TLS against the REST endpoint; paths under the base path.
    Every call carries a fresh CorrelationID unless ``headers`` set one (None: none), and
    every answer is checked against our OpenAPI document."""

    BASE = "/kar-ws/api/v1"

    def __init__(self, url: str, ca: Path, identity: Identity, token: str | None) -> None:
        import logging

        import requests

        # (urllib3 logs the client's URLs: some tests put an ID where it must not go, to
        # see that the server never logs it; the client's own log is not the server's)
        logging.getLogger("urllib3").setLevel(logging.INFO)
        self.url = url
        self.session = requests.Session()
        self.session.trust_env = False  # (REQUESTS_CA_BUNDLE would replace our CA)
        self.session.verify = str(ca)
        self.session.cert = (str(identity.cert), str(identity.key))
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, headers: dict | None = None, **kwargs):
        import uuid

        sent = {"CorrelationID": str(uuid.uuid4()), **(headers or {})}
        sent = {key: value for key, value in sent.items() if value is not None}
        response = self.session.request(
            method, self.url + self.BASE + path, headers=sent, timeout=30, **kwargs
        )
        operation = openapi_schema().find_operation_by_path(method, path)
        if operation is not None:  # (else no such path: the test looks at the answer)
            operation.validate_response(response)
            documented = operation.definition.raw["responses"]
            assert str(response.status_code) in documented, (
                f"{method} {operation.path} answered {response.status_code}, not documented"
            )
        return response

    def close(self) -> None:
        self.session.close()


def write_config(
    directory: Path,
    test_pki: Pki,
    keyring_path: Path,
    *,
    test_mode: bool,
    tokens: str,
    maintenance: str = "",
    store: str = "",
    validation_processes: int = 0,
    metrics: bool = False,
    cluster: str = "",
    rate_limits: str = "",
    enumeration: str = "",
    rest: str = "",
    server: str = "",
) -> Path:
    path = directory / "kfr.toml"
    metrics = 'listen = "127.0.0.1:0"' if metrics else ""
    path.write_text(
        f'''listen = "127.0.0.1:0"
data_dir = "data"
keyring = "{keyring_path}"
test_mode = {"true" if test_mode else "false"}
log_level = "DEBUG"

[tls]
cert = "{test_pki.server.cert}"
key = "{test_pki.server.key}"
client_ca = "{directory / "client-ca.pem"}"
crls = ["ca.crl"]

[tokens]
issuer = "{TEST_ISSUER}"
jwks = "jwks.json"
{tokens if "audience" in tokens else f'audience = "{TEST_AUDIENCE}"' + chr(10) + tokens}

[server]
threads = 4
grace_seconds = 1
file_check_seconds = 0
validation_processes = {validation_processes}
{server}

[maintenance]
{maintenance}

[rate_limits]
{rate_limits or UNLIMITED_RATE}

[enumeration]
{enumeration}

[store]
{store}

[metrics]
{metrics}

[rest]
{rest}

{"[cluster]" if cluster else ""}
{cluster}

[[agencies]]
org_number = "{AGENCY_ORG}"
name = "Testetaten"
mandates = ["{MANDATE}", "{OTHER_MANDATE}"]

[[agencies]]
org_number = "{OWNER_ONLY_AGENCY_ORG}"
name = "Eieretaten"
mandates = ["{MANDATE}"]
owner_only = true
''',
        encoding="utf-8",
    )
    (directory / "client-ca.pem").write_bytes(test_pki.ca.read_bytes())
    (directory / "ca.crl").write_bytes(pki.make_crl(test_pki.authority))
    return path


def dump_store(store) -> dict[tuple[bytes, bytes], bytes]:
    """Every record of every database, sealed values opened: (database, key) -> bytes."""
    from kfr_grpc.store.layout import DATABASES, META, SEALED_DATABASES, is_unsealed_entry

    records = {}
    with store.read() as view:
        txn = view._txn
        for name in (*DATABASES, META):
            for key, value in txn.cursor(db=store._databases[name]):
                if name in SEALED_DATABASES and not is_unsealed_entry(name, key):
                    value = view._open(name, key, value)
                records[(name, key)] = value
    return records
