"""``kfr doctor``: checks a deployment, one line per finding, without changing anything."""

from __future__ import annotations

import enum
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kfr_grpc.auth.jwks import JwksSource
from kfr_grpc.auth.tls import read_key_pair
from kfr_grpc.auth.trust import load_client_trust
from kfr_grpc.client import secure_channel
from kfr_grpc.clock import Clock, SystemClock
from kfr_grpc.config import Config, host_port, load_config
from kfr_grpc.errors import KfrError
from kfr_grpc.keyring import Keyring
from kfr_grpc.store.generations import has_store
from kfr_grpc.store.lmdb_store import summarise, verify

_EXPIRY_WARNING = timedelta(days=30)
_FREE_DISK_WARNING = 0.10


class Status(enum.Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    status: Status
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status.value:<4} {self.subject}: {self.detail}"


@dataclass(frozen=True)
class ClientIdentity:
    """How doctor calls the running server: a client certificate and an access token."""

    ca: Path
    cert: Path
    key: Path
    token: str


def examine(
    config_path: Path,
    client: ClientIdentity | None,
    clock: Clock | None = None,
    *,
    target: str | None = None,
    verify_store: bool = False,
) -> list[Finding]:
    """Every check's findings; certificate validity is judged at ``clock``'s now. The
    server asked is at ``target`` (default: the configuration's listen address).
    ``verify_store``: walk the whole store for inconsistencies too."""
    now = (clock or SystemClock()).now()
    try:
        config = load_config(config_path)
    except KfrError as error:
        return [Finding(Status.FAIL, "config", str(error))]
    findings = [Finding(Status.OK, "config", f"{config.path} reads cleanly")]
    keyring = _keyring(config, findings)
    checks = [_data_dir, _server_certificate, _client_trust, _jwks]
    if verify_store:
        checks.insert(1, _integrity)
    for check in checks:
        findings.extend(_guarded(check, config, keyring, now))
    findings.extend(_guarded(_health, config, client, target))
    return findings


def _guarded(check: Callable[..., Iterator[Finding]], *args: object) -> list[Finding]:
    name = check.__name__.strip("_").replace("_", " ")
    try:
        return list(check(*args))
    except KfrError as error:
        return [Finding(Status.FAIL, name, str(error))]
    except Exception as error:  # doctor reports; it never stops half way
        return [Finding(Status.FAIL, name, f"{type(error).__name__}: {error}")]


def _keyring(config: Config, findings: list[Finding]) -> Keyring | None:
    try:
        keyring = Keyring.load(config.keyring)
    except KfrError as error:
        findings.append(Finding(Status.FAIL, "keyring", str(error)))
        return None
    mode = stat.filemode(config.keyring.stat().st_mode)
    versions = f"seal v{list(keyring.seal.versions)}, pseudonym v{list(keyring.pseudonym.versions)}"
    findings.append(Finding(Status.OK, "keyring", f"{config.keyring} ({mode}), {versions}"))
    if keyring.raw_keys_format:
        findings.append(
            Finding(
                Status.WARN,
                "keyring format",
                "format 1 (raw keys of kfr's own): `kfr migrate --config …` rewrites it as "
                "Tink keysets, the same keys",
            )
        )
    if keyring.kek is None:
        findings.append(
            Finding(
                Status.WARN,
                "keyring encryption",
                "its keys are in clear: a copy of the file is every secret; seal them under "
                "a key kept elsewhere (`kfr keys kek PATH`, `kfr keys encrypt --kek file:PATH`)",
            )
        )
    else:
        findings.append(
            Finding(Status.OK, "keyring encryption", f"sealed under {keyring.kek.spec}")
        )
    return keyring


def _data_dir(config: Config, keyring: Keyring | None, *_: object) -> Iterator[Finding]:
    directory = config.data_dir
    if not has_store(directory):
        yield Finding(Status.WARN, "data directory", f"{directory} holds no store yet")
        return
    if not os.access(directory, os.W_OK):
        yield Finding(Status.FAIL, "data directory", f"{directory} is not writable")
    if keyring is not None:
        copy = summarise(directory, keyring, live=True)  # beside a running server
        yield Finding(
            Status.OK,
            "data directory",
            f"opens under the keyring: {copy.relationships:,} relationships, "
            f"{copy.institutions} institutions, {copy.bytes / 1e6:,.0f} MB",
        )
    usage = shutil.disk_usage(directory)
    free = usage.free / usage.total
    status = Status.WARN if free < _FREE_DISK_WARNING else Status.OK
    yield Finding(status, "disk", f"{usage.free / 1e9:,.1f} GB free ({free:.0%}) under {directory}")


def _integrity(config: Config, keyring: Keyring | None, *_: object) -> Iterator[Finding]:
    if keyring is None or not has_store(config.data_dir):
        return
    problems = verify(config.data_dir, keyring)
    for problem in problems:
        yield Finding(Status.FAIL, "store integrity", problem)
    if not problems:
        yield Finding(Status.OK, "store integrity", "every record, index entry and count agrees")


def _server_certificate(config: Config, _: object, now: datetime) -> Iterator[Finding]:
    _, pem = read_key_pair(config.tls)
    yield _validity("server certificate", x509.load_pem_x509_certificate(pem), now)


def _client_trust(config: Config, _: object, now: datetime) -> Iterator[Finding]:
    trust = load_client_trust(config.tls.client_ca, config.tls.crls)
    authorities = x509.load_pem_x509_certificates(trust.ca_pem)
    yield Finding(
        Status.OK,
        "client CA bundle",
        f"{len(authorities)} CA certificate(s), {len(config.tls.crls)} CRL(s) signed by them, "
        f"{len(trust.revoked)} revoked serial(s)",
    )
    for authority in authorities:
        yield _validity(f"client CA {authority.subject.rfc4514_string()}", authority, now)


def _jwks(config: Config, *_: object) -> Iterator[Finding]:
    source = JwksSource(config.tokens.jwks, ca_file=config.tokens.jwks_ca)
    keys = source.keys
    source.close()
    status = Status.OK if keys else Status.FAIL
    yield Finding(status, "token keys", f"{len(keys)} RS256 key(s) at {config.tokens.jwks}")


def _health(config: Config, client: ClientIdentity | None, target: str | None) -> Iterator[Finding]:
    if client is None:
        yield Finding(
            Status.WARN, "server", "not asked: give --cert, --key and --token (a dev setup: none)"
        )
        return
    if target is None:
        host, port = host_port(config.listen)
        target = f"{'localhost' if host in ('0.0.0.0', '[::]', '127.0.0.1', '') else host}:{port}"
    channel = secure_channel(
        target, ca=client.ca, cert=client.cert, key=client.key, token=client.token
    )
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    except grpc.RpcError as error:
        yield Finding(Status.FAIL, "server", f"{target} did not answer: {error.code().name}")
        return
    finally:
        channel.close()
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    status_name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    yield Finding(Status.OK if serving else Status.FAIL, "server", f"{target} says {status_name}")


def _validity(subject: str, certificate: x509.Certificate, now: datetime) -> Finding:
    if certificate.not_valid_before_utc > now:
        return Finding(Status.FAIL, subject, f"not valid before {certificate.not_valid_before_utc}")
    left = certificate.not_valid_after_utc - now
    if left < timedelta(0):
        return Finding(Status.FAIL, subject, f"expired {certificate.not_valid_after_utc:%Y-%m-%d}")
    status = Status.WARN if left < _EXPIRY_WARNING else Status.OK
    return Finding(
        status,
        subject,
        f"valid until {certificate.not_valid_after_utc:%Y-%m-%d} ({left.days} days)",
    )
