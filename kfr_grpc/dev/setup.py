"""``kfr dev init``: a complete local setup with predictable names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from kfr_grpc.clock import SystemClock
from kfr_grpc.config import DEFAULT_LISTEN, host_port, load_config
from kfr_grpc.dev import pki, tokens
from kfr_grpc.dev.clients import Clients, Identity
from kfr_grpc.errors import ConfigError
from kfr_grpc.keyring import Keyring
from kfr_grpc.register.operations import Operations
from kfr_grpc.server import open_store

# Organisation numbers with valid check digits in the 3xx series, which Tenor uses for
# synthetic organisations.
TEST_INSTITUTION_ORG = "311000004"
TEST_INSTITUTION_NAME = "Testbanken KFR"
TEST_AGENCY_ORG = "312000008"
TEST_AGENCY_NAME = "Testetaten KFR"
TEST_MANDATE = "Skatteforvaltningsloven § 10-2"

TEST_ISSUER = "https://maskinporten.dev.kfr.invalid/"
TEST_AUDIENCE = "https://kfr.dev.invalid/"
TEST_SIGNING_KID = "kfr-dev-1"

CONFIG_NAME = "kfr.toml"
SIGNING_KEY_NAME = "token-signing.key"


@dataclass(frozen=True)
class DevSetup:
    directory: Path

    @property
    def config(self) -> Path:
        """The server's config; in a `kfr dev cluster` directory, the first node's (the
        nodes share everything but their ports, data and node names)."""
        single = self.directory / CONFIG_NAME
        first_node = self.directory / "node1" / CONFIG_NAME
        return first_node if not single.exists() and first_node.exists() else single

    def file(self, name: str) -> Path:
        return self.directory / name

    def require(self) -> DevSetup:
        """This setup, or a ConfigError saying how to make one if the directory has none."""
        if not (self.config.is_file() and self.file(SIGNING_KEY_NAME).is_file()):
            raise ConfigError(
                f"no dev setup in {self.directory}: run `kfr dev init {self.directory}` first, "
                "or point --dev (or KFR_DEV) at the directory `kfr dev init` wrote"
            )
        return self

    def token_issuer(self) -> tokens.TokenIssuer:
        """Mints tokens the dev server accepts (issuer and audience from its config)."""
        self.require()
        key, kid = tokens.read_signing_key(self.file(SIGNING_KEY_NAME))
        settings = load_config(self.config).tokens
        return tokens.TokenIssuer(key, kid, settings.issuer, settings.audience)

    def identity(self, who: str) -> Identity:
        """The test ``"institution"`` or ``"agency"``, with the scope its service needs."""
        settings = load_config(self.config).tokens
        orgs = {"institution": TEST_INSTITUTION_ORG, "agency": TEST_AGENCY_ORG}
        if who not in orgs:
            raise ValueError(f"no test identity {who!r}: institution or agency")
        scope = settings.dev_scope(who)
        return Identity(self.file(f"{who}.crt"), self.file(f"{who}.key"), orgs[who], scope)

    def clients(self, target: str) -> Clients:
        """Channels to the server at ``target`` as this setup's identities."""
        return Clients(target, self.file("ca.crt"), self.token_issuer())

    def revoke(self, certificate: Path, *, undo: bool = False) -> int:
        """Adds ``certificate`` to the dev CA's CRL (``undo``: takes it out again);
        returns its serial."""
        self.require()
        try:
            serial = x509.load_pem_x509_certificate(certificate.read_bytes()).serial_number
        except ValueError:
            raise ConfigError(f"{certificate} is not a PEM certificate") from None
        crl_path = self.file("ca.crl")
        serials = set(pki.revoked_serials(crl_path.read_bytes()))
        serials = serials - {serial} if undo else serials | {serial}
        ca = pki.Issued.load(self.file("ca.crt"), self.file("ca.key"))
        _write_atomically(crl_path, pki.make_crl(ca, sorted(serials)))
        return serial


def create_dev_setup(
    directory: Path, *, listen: str = DEFAULT_LISTEN, metrics_listen: str | None = None
) -> DevSetup:
    """Writes CA, server and client certificates, a keyring, a config and a store
    with the test institution registered. Refuses a directory that already has a config.

    The metrics endpoint listens on ``metrics_listen``; by default on loopback at the
    gRPC port + 1 (port 0, the kernel's choice, when the gRPC port is 0). The REST
    endpoint listens on the gRPC host at its port + 2 (0 when that is 0).
    """
    for option, address in (("--listen", listen), ("--metrics-listen", metrics_listen)):
        try:
            host_port(address or "x:0")
        except ValueError:
            raise ConfigError(f"{option} {address} is not host:port") from None
    host, port = host_port(listen)
    if port > 65533:
        raise ConfigError(
            f"--listen port {port} leaves no port + 1 for metrics and + 2 for REST; choose a "
            "lower port"
        )
    if metrics_listen is None:
        metrics_listen = f"127.0.0.1:{port + 1 if port else 0}"
    rest_listen = f"{host}:{port + 2 if port else 0}"
    setup = DevSetup(directory.resolve())
    if setup.config.exists():
        raise ConfigError(f"{setup.config} already exists; remove {directory} to start afresh")
    try:
        setup.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create {setup.directory}: {error.strerror}") from None
    write_shared_files(setup)
    setup.config.write_text(config_text(listen, metrics_listen, rest_listen), encoding="utf-8")
    register_test_institution(setup.config)
    return setup


def write_shared_files(setup: DevSetup) -> None:
    """CA and certificates, CRL, token signing key and JWKS, keyring: what every server
    (or cluster node) of a dev setup shares."""
    setup.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = pki.make_ca()
    ca.write(setup.file("ca.crt"), setup.file("ca.key"))
    pki.issue_server(ca).write(setup.file("server.crt"), setup.file("server.key"))
    pki.issue_enterprise(ca, TEST_INSTITUTION_ORG, TEST_INSTITUTION_NAME).write(
        setup.file("institution.crt"), setup.file("institution.key")
    )
    pki.issue_enterprise(
        ca, TEST_AGENCY_ORG, TEST_AGENCY_NAME, style="organizationIdentifier"
    ).write(setup.file("agency.crt"), setup.file("agency.key"))
    setup.file("ca.crl").write_bytes(pki.make_crl(ca, [], days=825))
    signing_key = tokens.new_signing_key()
    tokens.write_signing_key(setup.file(SIGNING_KEY_NAME), signing_key, TEST_SIGNING_KID)
    tokens.write_jwks(setup.file("jwks.json"), {TEST_SIGNING_KID: signing_key})
    Keyring.generate().save(setup.file("keyring.json"))


def register_test_institution(config: Path) -> None:
    store = open_store(load_config(config))
    try:
        Operations(store, SystemClock()).add_institution(
            TEST_INSTITUTION_ORG, TEST_INSTITUTION_NAME
        )
    finally:
        store.close()


def config_text(
    listen: str, metrics: str, rest: str, *, shared: str = "", cluster: str = ""
) -> str:
    """A dev server's config; ``shared``: where the shared files are, relative to it."""
    return f'''# Local development setup made by `kfr dev init` or `kfr dev cluster`; see README.md.
listen = "{listen}"
data_dir = "data"
keyring = "{shared}keyring.json"
# Test mode accepts synthetic (Tenor) customer IDs. Never enable it in production.
test_mode = true

[tls]
cert = "{shared}server.crt"
key = "{shared}server.key"
client_ca = "{shared}ca.crt"
crls = ["{shared}ca.crl"]  # `kfr dev revoke CERT` adds to it; re-read when it changes

[tokens]
# A stand-in for Maskinporten: `kfr dev token` signs with token-signing.key, whose
# public half is in jwks.json (re-read when it changes).
issuer = "{TEST_ISSUER}"
audience = "{TEST_AUDIENCE}"  # tokens must be meant for this service
jwks = "{shared}jwks.json"
# Benchmarks and load tests hold one token for a whole run; production: the default 300.
max_lifetime_seconds = 7200

[rate_limits]
# Per organisation. The benchmarks call thousands of times a second as one organisation;
# in production keep the defaults (100 a second, bursts of 200) or set an agency's own.
calls_per_second = 100000
burst = 100000

[metrics]
# Prometheus metrics, plain HTTP on loopback: http://{metrics}/metrics
listen = "{metrics}"

[rest]
# The operator's REST contract over mutual TLS: https://{rest}/kar-ws/api/v1
listen = "{rest}"
{cluster}
[[agencies]]
org_number = "{TEST_AGENCY_ORG}"
name = "{TEST_AGENCY_NAME}"
mandates = ["{TEST_MANDATE}"]
owner_only = false
'''


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` in one step, so a reader never sees a half-written file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
