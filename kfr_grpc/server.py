"""Assembles and runs the gRPC server: keyring, store, register, auth, servicers, TLS."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import threading
import time
from concurrent import futures
from concurrent.futures import ProcessPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kfr_grpc._proto import kfr_pb2, kfr_pb2_grpc
from kfr_grpc.api.institution import InstitutionServicer
from kfr_grpc.api.interceptor import RequestInterceptor
from kfr_grpc.api.lookup import LookupServicer
from kfr_grpc.api.recording import MetricsRecorder, RegisterRecorder
from kfr_grpc.auth.authenticator import Authenticator
from kfr_grpc.auth.jwks import JwksSource
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.auth.tls import ServerTls
from kfr_grpc.auth.tokens import TokenSettings, TokenVerifier
from kfr_grpc.auth.trust import ClientTrust
from kfr_grpc.clock import Clock, SystemClock
from kfr_grpc.config import Config, MaintenanceConfig, load_config
from kfr_grpc.errors import ConfigError
from kfr_grpc.keyring import Keyring, KeyringFile
from kfr_grpc.metrics import Metrics
from kfr_grpc.register.operations import Operations
from kfr_grpc.register.service import Register
from kfr_grpc.register.statistics import LookupStatistics
from kfr_grpc.store import Store
from kfr_grpc.watched import WatchedFiles

log = logging.getLogger("kfr.server")


def open_store(config: Config, *, follow_keyring: bool = False) -> Store:
    """Loads the keyring and opens the store: what the server and admin commands share.

    With ``follow_keyring`` (the server), a rotated keyring file is picked up without a
    restart.
    """
    if follow_keyring:
        keys = KeyringFile(config.keyring, check_seconds=config.file_check_seconds)
    else:
        keys = Keyring.load(config.keyring)
    return Store.open(
        config.data_dir, keys, map_size=config.map_size, max_map_size=config.max_map_size
    )


def operations_for(config: Config, store: Store, clock: Clock) -> Operations:
    return Operations(store, clock, request_log_days=config.maintenance.request_log_days)


class Maintenance:
    """The server's periodic work in one background thread: storing the lookup counters
    and, once per ``purge_interval_seconds`` (first soon after start), retention."""

    def __init__(
        self,
        config: MaintenanceConfig,
        operations: Operations,
        statistics: LookupStatistics,
        metrics: Metrics,
        *,
        run_retention: bool = True,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._run_retention = run_retention
        self._operations = operations
        self._statistics = statistics
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kfr-maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread and stores the last counts."""
        self._stopping.set()
        self._thread.join()
        self._flush()

    def _run(self) -> None:
        next_purge = time.monotonic() + min(60.0, self._config.purge_interval_seconds)
        tick = min(self._config.lookup_counts_flush_seconds, self._config.purge_interval_seconds)
        while not self._stopping.wait(max(tick, 0.05)):
            self._flush()
            if self._run_retention and time.monotonic() >= next_purge:
                self._purge()
                next_purge = time.monotonic() + self._config.purge_interval_seconds

    def _flush(self) -> None:
        try:
            self._statistics.flush()
        except Exception:
            log.exception("storing the lookup counters failed; they are kept for the next try")

    def _purge(self) -> None:
        try:
            result = self._operations.purge()
        except Exception:
            log.exception("retention failed; it runs again at the next interval")
            return
        self._metrics.purge_runs.inc()
        self._metrics.purged_periods.inc(result.periods_removed)
        log.info(
            "retention: removed %d periods, %d relationships, %d request records (cutoff %s)",
            result.periods_removed,
            result.relationships_removed,
            result.request_records_removed,
            result.cutoff.isoformat(),
        )


def jwks_source(config: Config) -> JwksSource:
    tokens = config.tokens
    return JwksSource(
        tokens.jwks,
        ca_file=tokens.jwks_ca,
        min_refresh_seconds=tokens.jwks_min_refresh_seconds,
        check_seconds=config.file_check_seconds,
    )


def build_authenticator(
    config: Config, clock: Clock, trust: WatchedFiles[ClientTrust], jwks: JwksSource
) -> Authenticator:
    tokens = config.tokens
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


# "" is the server as a whole; then each service by its full name.
HEALTH_SERVICES = ("", _service_name("InstitutionService"), _service_name("LookupService"))


class KfrServer:
    """The register served over mutual TLS. ``start()`` returns the bound port."""

    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        *,
        shared_port: bool = False,
        run_retention: bool = True,
    ) -> None:
        """``shared_port``: one of several worker processes on the same port (SO_REUSEPORT);
        otherwise a second server on the port fails to start. ``run_retention``: this
        process runs the daily retention (one worker of several does)."""
        clock = clock or SystemClock()
        self._config = config
        self._tls = ServerTls(config.tls, check_seconds=config.file_check_seconds)
        self._jwks = jwks_source(config)
        authenticator = build_authenticator(config, clock, self._tls.trust, self._jwks)
        self._store = open_store(config, follow_keyring=True)
        self._register = Register(self._store, clock, test_mode=config.test_mode)
        statistics = LookupStatistics(self._store, clock)
        self.metrics = Metrics(self._store)
        self.metrics.observe_certificate(self._tls.certificate_pem)
        self._maintenance = Maintenance(
            config.maintenance,
            operations_for(config, self._store, clock),
            statistics,
            self.metrics,
            run_retention=run_retention,
        )
        recorders = [
            RegisterRecorder(self._register, statistics, clock),
            MetricsRecorder(self.metrics),
        ]
        self._policy = policy = AccessPolicy(config.agencies)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="kfr-rpc"),
            interceptors=[RequestInterceptor(authenticator, recorders)],
            # Calls beyond this many get RESOURCE_EXHAUSTED instead of queueing without end.
            maximum_concurrent_rpcs=config.max_concurrent_calls,
            options=[("grpc.so_reuseport", 1 if shared_port else 0)],
        )
        self._validation = _validation_executor(config.validation_processes)
        kfr_pb2_grpc.add_InstitutionServiceServicer_to_server(
            InstitutionServicer(self._register, policy, self._validation), self._server
        )
        kfr_pb2_grpc.add_LookupServiceServicer_to_server(
            LookupServicer(self._register, policy), self._server
        )
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        # Reflection, so grpcurl and grpcui can list and call the services (with the same
        # certificate and token as any other call).
        reflection.enable_server_reflection(
            (*[name for name in HEALTH_SERVICES if name], health.SERVICE_NAME,
             reflection.SERVICE_NAME),
            self._server,
        )  # fmt: skip
        self._port = self._bind()
        self._metrics_http = None
        self.metrics_port = 0

    def _bind(self) -> int:
        try:
            port = self._server.add_secure_port(self._config.listen, self._tls.credentials())
        except RuntimeError:
            port = 0
        if port == 0:
            self._store.close()
            raise ConfigError(f"cannot listen on {self._config.listen} (address in use or invalid)")
        return port

    def reload(self) -> None:
        """SIGHUP: re-reads the server certificate, the client CA bundle and CRLs, the JWKS
        and the agencies from the configuration, without dropping calls. Other settings
        need a restart."""
        try:
            config = load_config(self._config.path)
        except ConfigError as error:
            log.error("reload failed, nothing changed: %s", error)
            return
        self._tls.reload(config.tls)
        self.metrics.observe_certificate(self._tls.certificate_pem)
        self._jwks.refresh_now()
        self._policy.replace_agencies(config.agencies)
        unchanged = dataclasses.replace(
            config, tls=self._config.tls, agencies=self._config.agencies
        )
        if unchanged != self._config:
            log.warning("reload applies tls and agencies only; other changes need a restart")
        log.info("reloaded: server certificate, client CA bundle and CRLs, JWKS, agencies")

    @property
    def port(self) -> int:
        return self._port

    @property
    def store(self) -> Store:
        return self._store

    def start(self) -> int:
        self._server.start()
        self._maintenance.start()
        if self._config.metrics_listen:
            self._metrics_http, self.metrics_port = self.metrics.serve(self._config.metrics_listen)
            log.info("metrics on http://%s/metrics", self._config.metrics_listen)
        for service in HEALTH_SERVICES:
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
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
        self._health.enter_graceful_shutdown()  # NOT_SERVING from now on
        time.sleep(self._config.drain_notice_seconds)  # for load balancers to notice
        self._server.stop(self._config.grace_seconds if grace is None else grace).wait()
        self._maintenance.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        if self._validation is not None:
            self._validation.shutdown(cancel_futures=True)
        self._store.close()
        log.info("stopped")


def _validation_executor(processes: int) -> ProcessPoolExecutor | None:
    """Helper processes that validate bulk-load chunks while the server writes (they hold
    no keys: validation needs none). None: validate in the serving thread."""
    if processes == 0:
        return None
    executor = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    executor.submit(int).result()  # start them now, not on the first bulk load
    return executor
