"""Shared fixtures: a test PKI, synthetic IDs, configs, and a real server on a free port.

Every test runs under the leak check (``tests/leaks.py``): the autouse
``no_customer_ids_in_logs`` fixture captures all logging at DEBUG, gives the test a
directory where every ``kfr serve`` process it starts logs at DEBUG (``KFR_TEST_LOG_DIR``),
and fails the test if a customer ID shows up in any of it: one the ``ids`` fixture handed
out, or any number that could be a fødselsnummer or D-number.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.common import LOG_DIR_VARIABLE
from kfr_grpc.clock import FixedClock
from kfr_grpc.config import load_config
from kfr_grpc.dev import pki, tokens
from kfr_grpc.keyring import Keyring
from kfr_grpc.logs import quiet_grpc_debug
from tests.leaks import find_leaks
from tests.leftovers import left_behind, mark_this_run
from tests.support import (
    AGENCY_ORG,
    INSTITUTION_NAME,
    INSTITUTION_ORG,
    OTHER_INSTITUTION_NAME,
    OTHER_INSTITUTION_ORG,
    OWNER_ONLY_AGENCY_ORG,
    READ_SCOPE,
    TEST_ISSUER,
    TODAY,
    UNREGISTERED_ORG,
    VENDOR_ORG,
    WRITE_SCOPE,
    EventLoopThread,
    Identity,
    Ids,
    Pki,
    RunningServer,
    write_config,
)

_ISSUED = pytest.StashKey[Ids]()
_RUN_MARKER = pytest.StashKey[bytes]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_RUN_MARKER] = mark_this_run()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fails the run if it left a process behind (each is named, then killed)."""
    marker = session.stash.get(_RUN_MARKER, None)
    if marker is None:
        return
    leftovers = left_behind(marker)
    if leftovers:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = "\n  ".join(leftovers)
        if reporter is not None:
            reporter.write_line(f"processes left behind by the test run (killed now):\n  {lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


SIGNING_KID = "test-key-1"


@pytest.fixture
def ids(request: pytest.FixtureRequest) -> Ids:
    made = Ids(seed=zlib.crc32(request.node.nodeid.encode()))
    request.node.stash[_ISSUED] = made
    return made


@pytest.fixture(autouse=True)
def no_customer_ids_in_logs(
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    quiet_grpc_debug()
    log_dir = tmp_path_factory.mktemp("server-logs")
    monkeypatch.setenv(LOG_DIR_VARIABLE, str(log_dir))
    yield
    issued = request.node.stash.get(_ISSUED, None)
    # caplog.records holds only the current phase's (teardown's): take every phase's.
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    leaked = find_leaks(issued.issued if issued else [], records, log_dir)
    assert not leaked, f"customer IDs in log output: {', '.join(map(str, leaked[:5]))}"


def _write(issued: pki.Issued, directory: Path, name: str, org: str, scope: str) -> Identity:
    identity = Identity(directory / f"{name}.crt", directory / f"{name}.key", org, scope)
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

    def institution(name: str, org: str, issued: pki.Issued | None = None) -> Identity:
        issued = issued or pki.issue_enterprise(ca, org, f"Institution {org}")
        return _write(issued, directory, name, org, WRITE_SCOPE)

    def agency(name: str, org: str, **kwargs: object) -> Identity:
        issued = pki.issue_enterprise(ca, org, f"Agency {org}", **kwargs)
        return _write(issued, directory, name, org, READ_SCOPE)

    nobody = pki.issue_client(ca, [x509.NameAttribute(NameOID.COMMON_NAME, "nobody")])
    return Pki(
        authority=ca,
        foreign_authority=foreign_ca,
        ca=directory / "ca.crt",
        server=_write(pki.issue_server(ca), directory, "server", "", ""),
        institution=institution("inst", INSTITUTION_ORG),
        institution_org_identifier=institution(
            "inst-oi",
            INSTITUTION_ORG,
            pki.issue_enterprise(ca, INSTITUTION_ORG, "x", style="organizationIdentifier"),
        ),
        other_institution=institution("other", OTHER_INSTITUTION_ORG),
        unregistered=institution("unreg", UNREGISTERED_ORG),
        agency=agency("agency", AGENCY_ORG, style="organizationIdentifier"),
        owner_only_agency=agency("owner-only", OWNER_ONLY_AGENCY_ORG),
        no_org_number=institution("no-org", INSTITUTION_ORG, nobody),
        foreign_ca_institution=institution(
            "foreign", INSTITUTION_ORG, pki.issue_enterprise(foreign_ca, INSTITUTION_ORG, "x")
        ),
        expired_institution=institution(
            "expired",
            INSTITUTION_ORG,
            pki.issue_enterprise(
                ca, INSTITUTION_ORG, "x", not_before=past - timedelta(days=30), not_after=past
            ),
        ),
        future_institution=institution(
            "future",
            INSTITUTION_ORG,
            pki.issue_enterprise(
                ca,
                INSTITUTION_ORG,
                "x",
                not_before=datetime.now(UTC) + timedelta(days=1),
                not_after=datetime.now(UTC) + timedelta(days=30),
            ),
        ),
        vendor=institution("vendor", VENDOR_ORG),
    )


@pytest.fixture(scope="session")
def signing_key():
    return tokens.new_signing_key()


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    path = tmp_path / "secrets" / "keyring.json"
    path.parent.mkdir(mode=0o700)
    Keyring.generate().save(path)
    return path


def _register_institutions(config_path: Path) -> None:
    from kfr_grpc.register.operations import Operations
    from kfr_grpc.server import open_store

    store = open_store(load_config(config_path))
    try:
        operations = Operations(store, FixedClock.on(TODAY))
        operations.add_institution(INSTITUTION_ORG, INSTITUTION_NAME)
        operations.add_institution(OTHER_INSTITUTION_ORG, OTHER_INSTITUTION_NAME)
    finally:
        store.close()


@pytest.fixture(scope="session")
def server_loop() -> Iterator[EventLoopThread]:
    loop = EventLoopThread()
    yield loop
    loop.close()


@pytest.fixture
def server_factory(
    tmp_path: Path, test_pki: Pki, keyring_path: Path, signing_key, server_loop: EventLoopThread
) -> Iterator[Callable[..., RunningServer]]:
    servers: list[RunningServer] = []

    def make(
        *,
        test_mode: bool = True,
        clock: FixedClock | None = None,
        tokens_toml: str = "",
        maintenance_toml: str = "",
        store_toml: str = "",
        validation_processes: int = 0,
        metrics: bool = False,
        cluster_toml: str = "",
        rate_limits_toml: str = "",
        enumeration_toml: str = "",
        rest: bool | str = False,
        server_toml: str = "",
    ) -> RunningServer:
        """A started server (``rest``: with the REST endpoint, or these lines in [rest]);
        the ``*_toml`` lines go into its [tokens], [maintenance],
        [store], [rate_limits] (else none to speak of), [enumeration] and (if given)
        [cluster]."""
        directory = tmp_path / f"server{len(servers)}"
        directory.mkdir()
        config_path = write_config(
            directory,
            test_pki,
            keyring_path,
            test_mode=test_mode,
            tokens=tokens_toml,
            maintenance=maintenance_toml,
            store=store_toml,
            validation_processes=validation_processes,
            metrics=metrics,
            cluster=cluster_toml,
            rate_limits=rate_limits_toml,
            enumeration=enumeration_toml,
            rest=rest if isinstance(rest, str) else 'listen = "127.0.0.1:0"' if rest else "",
            server=server_toml,
        )
        tokens.write_jwks(directory / "jwks.json", {SIGNING_KID: signing_key})
        _register_institutions(config_path)
        settings = load_config(config_path).tokens
        issuer = tokens.TokenIssuer(signing_key, SIGNING_KID, TEST_ISSUER, settings.audience)
        running = RunningServer(
            directory, config_path, test_pki, clock or FixedClock.on(TODAY), issuer, server_loop
        )
        running.start()
        servers.append(running)
        return running

    yield make
    for running in servers:
        running.stop()


@pytest.fixture
def server(server_factory) -> RunningServer:
    return server_factory()
