"""Shared fixtures: a test PKI, synthetic IDs, configs, and a real server on a free port.

Every customer ID a test uses comes from the ``ids`` fixture, which remembers them; the
autouse ``no_ids_in_logs`` fixture captures all logging at DEBUG and fails the test if
any of those IDs (or their digits without spaces) appears in a log line.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from kfr_grpc.clock import FixedClock
from kfr_grpc.config import load_config
from kfr_grpc.dev import pki
from kfr_grpc.keyring import Keyring
from tests.support import (
    AGENCY_ORG,
    INSTITUTION_NAME,
    INSTITUTION_ORG,
    MANDATE,
    OTHER_INSTITUTION_NAME,
    OTHER_INSTITUTION_ORG,
    OTHER_MANDATE,
    OWNER_ONLY_AGENCY_ORG,
    TODAY,
    UNREGISTERED_ORG,
    Identity,
    Ids,
    Pki,
    RunningServer,
    find_leaks,
)

_ISSUED = pytest.StashKey[Ids]()


@pytest.fixture
def ids(request: pytest.FixtureRequest) -> Ids:
    made = Ids(seed=zlib.crc32(request.node.nodeid.encode()))
    request.node.stash[_ISSUED] = made
    return made


@pytest.fixture(autouse=True)
def no_ids_in_logs(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    issued = request.node.stash.get(_ISSUED, None)
    if issued is None:
        return
    leaked = find_leaks(issued.issued, caplog)
    assert not leaked, "a customer ID appeared in a log line"


def _write(issued: pki.Issued, directory: Path, name: str) -> Identity:
    identity = Identity(directory / f"{name}.crt", directory / f"{name}.key")
    issued.write(identity.cert, identity.key)
    return identity


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    directory = tmp_path_factory.mktemp("pki")
    ca = pki.make_ca("KFR test CA")
    foreign_ca = pki.make_ca("Some other CA")
    ca.write(directory / "ca.crt", directory / "ca.key")
    past = datetime.now(UTC) - timedelta(days=30)

    def enterprise(org: str, name: str, **kwargs: object) -> pki.Issued:
        return pki.issue_enterprise(ca, org, name, **kwargs)

    return Pki(
        ca=directory / "ca.crt",
        server=_write(pki.issue_server(ca), directory, "server"),
        institution=_write(enterprise(INSTITUTION_ORG, INSTITUTION_NAME), directory, "inst"),
        institution_org_identifier=_write(
            enterprise(INSTITUTION_ORG, INSTITUTION_NAME, style="organizationIdentifier"),
            directory,
            "inst-oi",
        ),
        other_institution=_write(
            enterprise(OTHER_INSTITUTION_ORG, OTHER_INSTITUTION_NAME), directory, "other"
        ),
        unregistered=_write(enterprise(UNREGISTERED_ORG, "Uregistrert"), directory, "unreg"),
        agency=_write(
            enterprise(AGENCY_ORG, "Testetaten", style="organizationIdentifier"),
            directory,
            "agency",
        ),
        owner_only_agency=_write(
            enterprise(OWNER_ONLY_AGENCY_ORG, "Eieretaten"), directory, "owner-only"
        ),
        no_org_number=_write(
            pki.issue_client(ca, [x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]),
            directory,
            "no-org",
        ),
        foreign_ca_institution=_write(
            pki.issue_enterprise(foreign_ca, INSTITUTION_ORG, INSTITUTION_NAME),
            directory,
            "foreign",
        ),
        expired_institution=_write(
            enterprise(
                INSTITUTION_ORG,
                INSTITUTION_NAME,
                not_before=past - timedelta(days=30),
                not_after=past,
            ),
            directory,
            "expired",
        ),
    )


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    path = tmp_path / "secrets" / "keyring.json"
    path.parent.mkdir(mode=0o700)
    Keyring.generate().save(path)
    return path


def write_config(
    directory: Path, test_pki: Pki, keyring_path: Path, *, test_mode: bool = True
) -> Path:
    path = directory / "kfr.toml"
    path.write_text(
        f'''listen = "127.0.0.1:0"
data_dir = "data"
keyring = "{keyring_path}"
test_mode = {"true" if test_mode else "false"}
log_level = "DEBUG"

[tls]
cert = "{test_pki.server.cert}"
key = "{test_pki.server.key}"
client_ca = "{test_pki.ca}"

[server]
threads = 4
grace_seconds = 1

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
    return path


def _register_institutions(config_path: Path) -> None:
    from kfr_grpc.server import open_register

    register, store = open_register(load_config(config_path), FixedClock.on(TODAY))
    try:
        register.add_institution(INSTITUTION_ORG, INSTITUTION_NAME)
        register.add_institution(OTHER_INSTITUTION_ORG, OTHER_INSTITUTION_NAME)
    finally:
        store.close()


@pytest.fixture
def server_factory(tmp_path: Path, test_pki: Pki, keyring_path: Path) -> Iterator:
    servers: list[RunningServer] = []

    def make(*, test_mode: bool = True, clock: FixedClock | None = None) -> RunningServer:
        directory = tmp_path / f"server{len(servers)}"
        directory.mkdir()
        config_path = write_config(directory, test_pki, keyring_path, test_mode=test_mode)
        _register_institutions(config_path)
        running = RunningServer(config_path, test_pki, clock or FixedClock.on(TODAY))
        running.start()
        servers.append(running)
        return running

    yield make
    for running in servers:
        running.stop()


@pytest.fixture
def server(server_factory) -> RunningServer:
    return server_factory()
