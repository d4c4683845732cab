"""Assembles and runs the gRPC server: keyring, store, register, auth, servicers, TLS.

The server runs on ``grpc.aio``: calls are coroutines on one asyncio event loop, so no
fixed pool of threads exists for idle or slow callers to fill; what would stall the loop
(store writes and their fsync) runs in a few store threads, and bulk-load validation in
helper processes. ``build_server(config)`` puts the parts together, bound to the listen
address (and takes them apart again if any part cannot start, so a failed start leaves
no helper process or open store behind); ``KfrServer`` starts, reloads and stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from kfr_grpc._proto import kfr_pb2, kfr_pb2_grpc
from kfr_grpc.api.admission import Admission, Limits
from kfr_grpc.api.blocking import Blocking
from kfr_grpc.api.institution import InstitutionServicer
from kfr_grpc.api.interceptor import RequestInterceptor
from kfr_grpc.api.lookup import LookupServicer
from kfr_grpc.api.observability import CallObserver
from kfr_grpc.api.queries import AgencyQueries
from kfr_grpc.api.recording import MetricsRecorder, RegisterRecorder
from kfr_grpc.auth.authenticator import Authenticator
from kfr_grpc.auth.jwks import JwksSource
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.auth.tls import ServerTls
from kfr_grpc.auth.tokens import TokenSettings, TokenVerifier
from kfr_grpc.auth.trust import ClientTrust
from kfr_grpc.clock import Clock, SystemClock
from kfr_grpc.cluster.connect import replicated_store
from kfr_grpc.cluster.store import ReplicatedStore
from kfr_grpc.config import Config, ServerConfig, load_config
from kfr_grpc.errors import ConfigError
from kfr_grpc.keyring import Keyring, KeyringFile
from kfr_grpc.lifetime import exit_when_orphaned
from kfr_grpc.maintenance import Maintenance
from kfr_grpc.metrics import Metrics
from kfr_grpc.register.enumeration import EnumerationSettings, EnumerationWatch, Suspicion
from kfr_grpc.register.operations import Operations
from kfr_grpc.register.service import Register
from kfr_grpc.register.statistics import LookupStatistics
from kfr_grpc.rest import BATCH_ROUTE
from kfr_grpc.store import LmdbStore
from kfr_grpc.watched import WatchedFiles

if TYPE_CHECKING:
    from kfr_grpc.rest.server import RestServer

log = logging.getLogger("kfr.server")
Store = LmdbStore | ReplicatedStore
_HEALTH_CHECK_SECONDS = 0.5  # how often the store's availability is looked at


def open_store(config: Config, *, follow_keyring: bool = False, readonly: bool = False) -> Store:
    """Loads the keyring and opens the store: what the server and admin commands share.

    With ``follow_keyring`` (the server), a rotated keyring file is picked up without a
    restart. ``readonly`` (commands that only read) writes nothing to the data directory
    (in cluster mode: reads this node's store as it is, without asking etcd). With a
    ``[cluster]`` section, writes go through the cluster's log.
    """
    local = _open_local_store(config, follow_keyring=follow_keyring, readonly=readonly)
    if config.cluster is None or readonly:
        return local
    return replicated_store(config.cluster, local, listen=config.listen)


def _open_local_store(config: Config, *, follow_keyring: bool, readonly: bool) -> LmdbStore:
    if follow_keyring:
        keys = KeyringFile(config.keyring, check_seconds=config.server.file_check_seconds)
    else:
        keys = Keyring.load(config.keyring)
    return LmdbStore.open(
        config.data_dir,
        keys,
        map_size=config.store.map_size,
        max_map_size=config.store.max_map_size,
        readonly=readonly,
        keyring_path=config.keyring,
    )


def operations_for(config: Config, store: Store, clock: Clock) -> Operations:
    return Operations(store, clock, request_log_days=config.maintenance.request_log_days)


def jwks_source(config: Config) -> JwksSource:
    tokens = config.tokens
    return JwksSource(
        tokens.jwks,
        ca_file=tokens.jwks_ca,
        min_refresh_seconds=tokens.jwks_min_refresh_seconds,
        check_seconds=config.server.file_check_seconds,
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
            max_lifetime_seconds=tokens.max_lifetime_seconds,
        ),
        jwks,
        clock,
    )
    scopes = {
        _service_name("InstitutionService"): tokens.institution_scope,
        _service_name("LookupService"): tokens.agency_scope,
        LOOKUP_COLLECTION_ACCOUNT: tokens.account_scope,
    }
    return Authenticator(trust.get, verifier, scopes)


def _service_name(service: str) -> str:
    return kfr_pb2.DESCRIPTOR.services_by_name[service].full_name


# "" is the server as a whole; then each service by its full name.
HEALTH_SERVICES = ("", _service_name("InstitutionService"), _service_name("LookupService"))
REPORT_STREAM = f"/{_service_name('InstitutionService')}/ReportStream"
RECONCILE = f"/{_service_name('InstitutionService')}/Reconcile"
LOOKUP_COLLECTION_ACCOUNT = f"/{_service_name('LookupService')}/LookupCollectionAccount"
REFLECTION = f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"
MAX_REFLECTION_STREAMS = 8  # an operator's grpcurl or grpcui needs one at a time
# gRPC's own hard limits sit above the server's, which refuse with a reason, are counted
# and logged; gRPC's would refuse silently. (Messages: 1.25 x, connections' streams: 2 x.)
_HARD_LIMIT_FACTOR = 2
_HARD_MESSAGE_FACTOR = 1.25
# Before a call reads its request, a stream buffers at most this much of it (gRPC's
# window for it, kept fixed): so a call refused or kept waiting costs no more memory.
_STREAM_WINDOW_BYTES = 64 * 1024
# A stream that ends this close to the end of the grace period is taken as cut off.
_CUT_OFF_MARGIN_SECONDS = 0.1


@dataclass
class KfrServer:
    """The register served over mutual TLS, as ``build_server`` assembled it."""

    config: Config
    grpc_server: grpc.aio.Server
    port: int
    store: Store
    tls: ServerTls
    jwks: JwksSource
    policy: AccessPolicy
    health: HealthServicer
    maintenance: Maintenance
    metrics: Metrics
    blocking: Blocking
    validation: ProcessPoolExecutor | None
    interceptor: RequestInterceptor
    rest: RestServer | None = None  # (kfr_grpc.rest, loaded only when configured)
    metrics_port: int = 0
    rest_port: int = 0
    _metrics_http: Any = None
    _health_watch: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Starts serving; returns the bound port."""
        await asyncio.to_thread(self.store.start)
        await self.grpc_server.start()
        if self.rest is not None:
            try:
                self.rest_port = await self.rest.start(self.config.server.grace_seconds)
            except ConfigError:
                await self.stop(grace=0)
                raise
        self.maintenance.start()
        listen = self.config.metrics.listen
        if listen:
            try:
                self._metrics_http, self.metrics_port = self.metrics.serve(listen)
            except OSError as error:
                await self.stop(grace=0)
                raise ConfigError(
                    f"cannot serve metrics on {listen}: {error.strerror}; set [metrics] listen "
                    "in the config to a free host:port (or remove it to turn metrics off)"
                ) from None
            log.info("metrics on http://%s/metrics", listen)
        await self._set_health(self.store.available())
        self._health_watch = asyncio.create_task(self._watch_store())
        log.info(
            "serving on %s (port %d), data in %s, test mode %s",
            self.config.listen,
            self.port,
            self.config.data_dir,
            "on" if self.config.test_mode else "off",
        )
        return self.port

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse
        for service in HEALTH_SERVICES:
            await self.health.set(service, status.SERVING if serving else status.NOT_SERVING)

    async def _watch_store(self) -> None:
        """NOT_SERVING while the store cannot serve (cluster mode: etcd out of reach, or
        this node behind a compacted log), so that clients move to another node."""
        serving = self.store.available()
        while True:
            await asyncio.sleep(_HEALTH_CHECK_SECONDS)
            now = self.store.available()
            if now != serving:
                serving = now
                await self._set_health(serving)
                log.warning("store %s: health %s", "back" if now else "unavailable",
                            "SERVING" if now else "NOT_SERVING")  # fmt: skip

    def reload(self) -> None:
        """SIGHUP: re-reads the server certificate, the client CA bundle and CRLs, the JWKS
        and the agencies from the configuration, without dropping calls. Other settings
        need a restart."""
        try:
            config = load_config(self.config.path)
        except ConfigError as error:
            log.error("reload failed, nothing changed: %s", error)
            return
        self.tls.reload(config.tls)
        self.metrics.observe_certificate(self.tls.certificate_pem)
        self.jwks.refresh_now()
        self.policy.replace_agencies(config.agencies)
        unchanged = config.model_copy(
            update={"tls": self.config.tls, "agencies": self.config.agencies}
        )
        if unchanged != self.config:
            log.warning("reload applies tls and agencies only; other changes need a restart")
        log.info("reloaded: server certificate, client CA bundle and CRLs, JWKS, agencies")

    async def stop(self, grace: float | None = None) -> None:
        """Stops taking calls, lets calls in flight finish within ``grace``, closes the store."""
        if self._health_watch is not None:
            self._health_watch.cancel()
        await self.health.enter_graceful_shutdown()  # NOT_SERVING from now on
        notice = self.config.server.drain_notice_seconds
        grace = self.config.server.grace_seconds if grace is None else grace
        log.info(
            "stopping: NOT_SERVING; new calls refused in %.1f s, calls in flight then have "
            "%.1f s to finish",
            notice,
            grace,
        )
        await asyncio.sleep(notice)  # for load balancers to notice
        # gRPC cancels the calls still running when the grace period ends.
        asyncio.get_running_loop().call_later(
            max(0.0, grace - _CUT_OFF_MARGIN_SECONDS), self.interceptor.cut_off
        )
        if self.rest is not None:
            await asyncio.gather(self.grpc_server.stop(grace), self.rest.stop())
        else:
            await self.grpc_server.stop(grace)
        await asyncio.to_thread(self._stop_the_rest)
        log.info("stopped")

    def _stop_the_rest(self) -> None:
        """What has threads and files of its own, once no call is left."""
        self.maintenance.stop()
        self.jwks.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        self.blocking.shutdown()
        if self.validation is not None:
            self.validation.shutdown(cancel_futures=True)
        self.store.close()


async def build_server(
    config: Config,
    clock: Clock | None = None,
    *,
    shared_port: bool = False,
    run_retention: bool = True,
) -> KfrServer:
    """The server, bound to ``config.listen`` and ready to ``start()``. Runs in the event
    loop that will serve.

    ``shared_port``: one of several worker processes on the same port (SO_REUSEPORT);
    otherwise a second server on the port fails to start. ``run_retention``: this
    process runs the daily retention (one worker of several does).
    """
    clock = clock or SystemClock()
    settings = config.server
    with contextlib.ExitStack() as undo:
        tls = ServerTls(config.tls, check_seconds=settings.file_check_seconds)
        jwks = jwks_source(config)
        authenticator = build_authenticator(config, clock, tls.trust, jwks)
        store = open_store(config, follow_keyring=True)
        undo.callback(store.close)
        blocking = Blocking(settings.threads)
        undo.callback(blocking.shutdown)
        register = Register(store, clock, test_mode=config.test_mode)
        statistics = LookupStatistics(store, clock)
        metrics = Metrics(store, store.usage)
        metrics.observe_certificate(tls.certificate_pem)
        policy = AccessPolicy(config.agencies, config.rate_limits)
        admission = Admission(
            Limits(
                max_calls=settings.max_concurrent_calls,
                max_calls_per_connection=settings.max_calls_per_connection,
                max_calls_per_caller=settings.max_calls_per_caller,
                per_method={
                    REPORT_STREAM: (settings.max_bulk_streams, "server.max_bulk_streams"),
                    RECONCILE: (settings.max_bulk_streams, "server.max_bulk_streams"),
                    BATCH_ROUTE: (settings.max_bulk_streams, "server.max_bulk_streams"),
                    REFLECTION: (MAX_REFLECTION_STREAMS, "reflection streams at once"),
                },
                rate_of=policy.rate_of,
            )
        )
        metrics.observe_calls_in_progress(lambda: admission.calls)
        observer = CallObserver(
            [RegisterRecorder(register, statistics, policy, blocking), MetricsRecorder(metrics)]
        )
        validation = _validation_executor(settings.validation_processes)
        if validation is not None:
            undo.callback(validation.shutdown, cancel_futures=True)
        interceptor = RequestInterceptor(
            authenticator,
            observer,
            admission,
            request_timeout=settings.request_timeout_seconds,
            max_message_bytes=_message_bytes(settings),
            max_in_memory=settings.max_requests_in_memory,
        )
        grpc_server = grpc.aio.server(
            interceptors=[interceptor],
            maximum_concurrent_rpcs=settings.max_concurrent_calls * _HARD_LIMIT_FACTOR,
            options=_grpc_options(settings, shared_port),
        )
        queries = AgencyQueries(register, policy, blocking, _enumeration_watch(config, metrics))
        health_servicer = _add_services(
            grpc_server, register, policy, blocking, validation, queries
        )
        rest = None
        if config.rest.listen is not None:
            rest = _rest_server(
                config, register, policy, blocking, queries, validation, authenticator,
                observer, admission, tls, clock, shared_port=shared_port,
            )  # fmt: skip
        port = _bind(grpc_server, config.listen, tls)
        maintenance = Maintenance(
            config.maintenance,
            operations_for(config, store, clock),
            statistics,
            metrics,
            runs_retention=lambda: run_retention and store.runs_scheduled_jobs,
            problems=store.problems if run_retention else None,
            compact=store.compact if run_retention else None,
        )
        undo.pop_all()
    return KfrServer(
        config=config,
        grpc_server=grpc_server,
        port=port,
        store=store,
        tls=tls,
        jwks=jwks,
        policy=policy,
        health=health_servicer,
        maintenance=maintenance,
        metrics=metrics,
        blocking=blocking,
        validation=validation,
        interceptor=interceptor,
        rest=rest,
    )


def _rest_server(
    config: Config,
    register: Register,
    policy: AccessPolicy,
    blocking: Blocking,
    queries: AgencyQueries,
    validation: ProcessPoolExecutor | None,
    authenticator: Authenticator,
    observer: CallObserver,
    admission: Admission,
    tls: ServerTls,
    clock: Clock,
    *,
    shared_port: bool,
) -> RestServer:
    """The REST endpoint, on the same parts as gRPC's. Its modules (and aiohttp) are
    loaded only for a server that serves it."""
    from kfr_grpc.rest.batch import BatchLoader
    from kfr_grpc.rest.calls import RestCalls
    from kfr_grpc.rest.routes import RestRoutes
    from kfr_grpc.rest.server import RestServer

    settings = config.server
    batches = BatchLoader(
        register, blocking, validation,
        max_bytes=int(config.rest.max_batch_mb * 1024 * 1024),
        read_timeout=settings.request_timeout_seconds,
        max_upload_seconds=config.rest.max_upload_seconds,
    )  # fmt: skip
    return RestServer(
        config.rest,
        RestRoutes(register, policy, blocking, queries, batches).routes(),
        RestCalls(authenticator, observer, admission, clock),
        tls.ssl_context(),
        clock,
        shared_port=shared_port,
        handshake_timeout=settings.request_timeout_seconds,
    )


def _message_bytes(settings: ServerConfig) -> int:
    return int(settings.max_message_mb * 1024 * 1024)


def _grpc_options(settings: ServerConfig, shared_port: bool) -> list[tuple[str, int]]:
    """gRPC's own limits: the hard ones beyond the server's (see ``_HARD_LIMIT_FACTOR``)."""
    return [
        ("grpc.so_reuseport", 1 if shared_port else 0),
        # A message up to this size is taken in and then refused by the server, with a
        # reason and what a stream had committed; a larger one gRPC refuses by its length.
        ("grpc.max_receive_message_length", int(_message_bytes(settings) * _HARD_MESSAGE_FACTOR)),
        ("grpc.max_concurrent_streams", settings.max_calls_per_connection * _HARD_LIMIT_FACTOR),
        ("grpc.max_connection_idle_ms", int(settings.idle_connection_seconds * 1000)),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", _STREAM_WINDOW_BYTES),
    ]


def _enumeration_watch(config: Config, metrics: Metrics) -> EnumerationWatch:
    """Warns in the log and counts in the metrics when lookups look like enumeration."""
    settings = config.enumeration

    def notify(suspicion: Suspicion) -> None:
        log.warning("possible enumeration: %s", suspicion.describe())
        metrics.enumeration_suspected(suspicion.agency, suspicion.reason)

    return EnumerationWatch(
        EnumerationSettings(
            window_seconds=settings.window_seconds,
            max_lookups=settings.max_lookups,
            min_lookups=settings.min_lookups,
            max_empty_share=settings.max_empty_share,
        ),
        notify,
    )


def _add_services(
    grpc_server: grpc.aio.Server,
    register: Register,
    policy: AccessPolicy,
    blocking: Blocking,
    validation: ProcessPoolExecutor | None,
    queries: AgencyQueries,
) -> HealthServicer:
    kfr_pb2_grpc.add_InstitutionServiceServicer_to_server(
        InstitutionServicer(register, policy, blocking, validation), grpc_server
    )
    kfr_pb2_grpc.add_LookupServiceServicer_to_server(LookupServicer(queries), grpc_server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    # Reflection, so grpcurl and grpcui can list and call the services (with the same
    # certificate and token as any other call).
    names = (*[name for name in HEALTH_SERVICES if name], "grpc.health.v1.Health",
             reflection.SERVICE_NAME)  # fmt: skip
    reflection.enable_server_reflection(names, grpc_server)
    return health_servicer


def _bind(grpc_server: grpc.aio.Server, listen: str, tls: ServerTls) -> int:
    try:
        port = grpc_server.add_secure_port(listen, tls.credentials())
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {listen} (address in use or invalid)")
    return port


def _validation_executor(processes: int) -> ProcessPoolExecutor | None:
    """Helper processes that validate bulk-load chunks while the server writes (they hold
    no keys: validation needs none). None: validate in the serving process."""
    if processes == 0:
        return None
    executor = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_when_orphaned,  # a server killed with -9 takes its helpers along
        initargs=(os.getpid(),),
    )
    executor.submit(int).result()  # start them now, not on the first bulk load
    return executor
