"""Assembles and runs the gRPC server: keyring, store, register, policy, servicers, TLS."""

from __future__ import annotations

import logging
from concurrent import futures
from pathlib import Path

import grpc

from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.api.institution import InstitutionServicer
from kfr_grpc.api.interceptor import RequestInterceptor
from kfr_grpc.api.lookup import LookupServicer
from kfr_grpc.auth.policy import AccessPolicy
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


class KfrServer:
    """The register served over mutual TLS. ``start()`` returns the bound port."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self._config = config
        credentials = _server_credentials(config)
        self._register, self._store = open_register(config, clock or SystemClock())
        policy = AccessPolicy(config.agencies)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="kfr-rpc"),
            interceptors=[RequestInterceptor()],
            maximum_concurrent_rpcs=config.threads * _MAX_CONCURRENT_RPCS_PER_THREAD,
        )
        kfr_pb2_grpc.add_InstitutionServiceServicer_to_server(
            InstitutionServicer(self._register, policy), self._server
        )
        kfr_pb2_grpc.add_LookupServiceServicer_to_server(
            LookupServicer(self._register, policy), self._server
        )
        try:
            self._port = self._server.add_secure_port(config.listen, credentials)
        except RuntimeError:
            self._port = 0
        if self._port == 0:
            self._store.close()
            raise ConfigError(f"cannot listen on {config.listen} (address in use or invalid)")

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


def _server_credentials(config: Config) -> grpc.ServerCredentials:
    tls = config.tls
    return grpc.ssl_server_credentials(
        [(_read(tls.key, "tls.key"), _read(tls.cert, "tls.cert"))],
        root_certificates=_read(tls.client_ca, "tls.client_ca"),
        require_client_auth=True,
    )


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{setting}: cannot read {path}: {error.strerror}") from None
