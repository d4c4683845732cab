"""Assembles and runs the gRPC server: keyring, store, register, auth, servicers, TLS."""

from __future__ import annotations

import logging
from concurrent import futures
from pathlib import Path

import grpc

from kfr_grpc._proto import kfr_pb2, kfr_pb2_grpc
from kfr_grpc.api.institution import InstitutionServicer
from kfr_grpc.api.interceptor import RequestInterceptor
from kfr_grpc.api.lookup import LookupServicer
from kfr_grpc.auth.authenticator import Authenticator
from kfr_grpc.auth.jwks import JwksSource
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.auth.tokens import TokenSettings, TokenVerifier
from kfr_grpc.auth.trust import ClientTrust, load_client_trust
from kfr_grpc.auth.watched import WatchedFiles
from kfr_grpc.clock import Clock, SystemClock
from kfr_grpc.config import Config
from kfr_grpc.errors import ConfigError
from kfr_grpc.keyring import Keyring
from kfr_grpc.register.service import Register
from kfr_grpc.store import Store

log = logging.getLogger("kfr.server")

# Bounded so a flood of connections cannot exhaust memory: beyond it, calls get
# RESOURCE_EXHAUSTED instead of queueing without limit.
_MAX_CONCURRENT_RPCS_PER_THREAD = 4


def open_register(config: Config, clock: Clock) -> tuple[Register, Store]:
    """Loads the keyring and opens the store: what the server and admin commands share."""
    keyring = Keyring.load(config.keyring)
    store = Store.open(config.data_dir, keyring, map_size=config.map_size)
    return Register(store, clock, test_mode=config.test_mode), store


def build_authenticator(
    config: Config, clock: Clock, trust: WatchedFiles[ClientTrust]
) -> Authenticator:
    tokens = config.tokens
    jwks = JwksSource(
        tokens.jwks,
        ca_file=tokens.jwks_ca,
        min_refresh_seconds=tokens.jwks_min_refresh_seconds,
        check_seconds=config.file_check_seconds,
    )
    verifier = TokenVerifier(
        TokenSettings(
            issuer=tokens.issuer,
            audience=tokens.audience,
            leeway_seconds=tokens.leeway_seconds,
            cache_size=tokens.cache_size,
        ),
        jwks,
        clock,
    )
    scopes = {
        _service_name("InstitutionService"): tokens.institution_scope,
        _service_name("LookupService"): tokens.agency_scope,
    }
    return Authenticator(trust.get, verifier, scopes)


def _service_name(service: str) -> str:
    return kfr_pb2.DESCRIPTOR.services_by_name[service].full_name


class KfrServer:
    """The register served over mutual TLS. ``start()`` returns the bound port."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        clock = clock or SystemClock()
        self._config = config
        tls = config.tls
        self._server_key = _read(tls.key, "tls.key")
        self._server_cert = _read(tls.cert, "tls.cert")
        self._trust = WatchedFiles(
            "client CA bundle and CRLs",
            [tls.client_ca, *tls.crls],
            lambda: load_client_trust(tls.client_ca, tls.crls),
            check_seconds=config.file_check_seconds,
        )
        authenticator = build_authenticator(config, clock, self._trust)
        self._register, self._store = open_register(config, clock)
        policy = AccessPolicy(config.agencies)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="kfr-rpc"),
            interceptors=[RequestInterceptor(authenticator)],
            maximum_concurrent_rpcs=config.threads * _MAX_CONCURRENT_RPCS_PER_THREAD,
        )
        kfr_pb2_grpc.add_InstitutionServiceServicer_to_server(
            InstitutionServicer(self._register, policy), self._server
        )
        kfr_pb2_grpc.add_LookupServiceServicer_to_server(
            LookupServicer(self._register, policy), self._server
        )
        self._port = self._bind()

    def _bind(self) -> int:
        self._served_trust = self._trust.get()
        credentials = grpc.dynamic_ssl_server_credentials(
            self._certificate_configuration(self._served_trust),
            self._next_certificate_configuration,
            require_client_authentication=True,
        )
        try:
            port = self._server.add_secure_port(self._config.listen, credentials)
        except RuntimeError:
            port = 0
        if port == 0:
            self._store.close()
            raise ConfigError(f"cannot listen on {self._config.listen} (address in use or invalid)")
        return port

    def _certificate_configuration(self, trust: ClientTrust) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self._server_key, self._server_cert)], root_certificates=trust.ca_pem
        )

    def _next_certificate_configuration(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before every TLS handshake: a changed CA bundle takes effect."""
        try:
            trust = self._trust.get()
            if trust is self._served_trust:
                return None
            self._served_trust = trust
            return self._certificate_configuration(trust)
        except Exception:  # never let an exception escape into gRPC's handshake
            log.exception("could not refresh the TLS configuration; keeping the current one")
            return None

    @property
    def port(self) -> int:
        return self._port

    @property
    def store(self) -> Store:
        return self._store

    def start(self) -> int:
        self._server.start()
        log.info(
            "serving on %s (port %d), data in %s, test mode %s",
            self._config.listen,
            self._port,
            self._config.data_dir,
            "on" if self._config.test_mode else "off",
        )
        return self._port

    def wait(self) -> None:
        self._server.wait_for_termination()

    def stop(self, grace: float | None = None) -> None:
        """Stops taking calls, lets calls in flight finish within ``grace``, closes the store."""
        self._server.stop(self._config.grace_seconds if grace is None else grace).wait()
        self._store.close()
        log.info("stopped")


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{setting}: cannot read {path}: {error.strerror}") from None
