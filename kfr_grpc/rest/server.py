"""The REST endpoint: aiohttp on the server's event loop, over mutual TLS.

aiohttp because it runs on the asyncio loop that already serves gRPC (one process, one
set of store threads, no second server framework), hands the handler the TLS session
(the client certificate, for the token's binding), parses HTTP and multipart bodies
itself, and is widely used and maintained (README, REST: why aiohttp).

It keeps to the same limits as gRPC: the admission's calls at once and rates, the
request timeout for every piece of a body, a cap on connections and on an idle
keep-alive's life; no access log (a URL is never logged: a route's template is).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from kfr_grpc.api.calls import CorrelationIds
from kfr_grpc.clock import Clock
from kfr_grpc.config import RestConfig, host_port
from kfr_grpc.errors import ConfigError
from kfr_grpc.rest import BASE_PATH
from kfr_grpc.rest.calls import CORRELATION_HEADER, RestCalls, Route
from kfr_grpc.rest.errors import Family, plain_refusal

log = logging.getLogger("kfr.rest")
_SMALL_BODY_BYTES = 64 * 1024  # what any path but the batch takes (they take none)


class RestServer:
    def __init__(
        self,
        config: RestConfig,
        routes: list[Route],
        calls: RestCalls,
        context: ssl.SSLContext,
        clock: Clock,
        *,
        shared_port: bool = False,
        handshake_timeout: float = 10.0,
    ) -> None:
        assert config.listen is not None
        self._config = config
        self._context = context
        self._clock = clock
        self._shared_port = shared_port
        self._handshake_timeout = handshake_timeout  # a connection's TLS handshake, at most
        self._correlation_ids = CorrelationIds()
        self._app = web.Application(
            middlewares=[self._contract_errors], client_max_size=_SMALL_BODY_BYTES
        )
        for route in routes:
            self._app.router.add_route(route.method, BASE_PATH + route.path, calls.wrap(route))
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.port = 0

    def paths(self) -> list[tuple[str, str]]:
        """What it serves: (method, path under the base path)."""
        return [
            (route.method, route.resource.canonical.removeprefix(BASE_PATH))
            for route in self._app.router.routes()
            if route.resource is not None and route.method != "HEAD"
        ]

    async def start(self, grace: float) -> int:
        """Binds ``[rest] listen`` and serves; returns the bound port."""
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=grace,
            keepalive_timeout=self._config.idle_connection_seconds,
        )
        await runner.setup()
        server = runner.server
        assert server is not None
        loop = asyncio.get_running_loop()

        def handler() -> asyncio.Protocol:
            return _ContractHandler(
                server, self._refused, loop=loop, access_log=None, auto_decompress=False,
                keepalive_timeout=self._config.idle_connection_seconds,
            )  # fmt: skip

        connections = _Connections(handler, self._config.max_connections)
        host, port = host_port(self._config.listen or "")
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                connections.protocol, host.strip("[]"), port, ssl=self._context,
                reuse_port=self._shared_port or None, backlog=128,
                ssl_handshake_timeout=self._handshake_timeout,
            )  # fmt: skip
        except OSError as error:
            await runner.cleanup()
            raise ConfigError(
                f"cannot serve REST on {self._config.listen}: {error.strerror}; set [rest] "
                "listen to a free host:port (or remove it to turn REST off)"
            ) from None
        self._runner = runner
        self.port = self._listener.sockets[0].getsockname()[1]
        log.info("REST on https://%s%s (port %d)", self._config.listen, BASE_PATH, self.port)
        return self.port

    async def stop(self) -> None:
        """Stops taking connections; calls in flight finish within the grace period."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _contract_errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """aiohttp's own refusals (no such path or method, a body too large) in the
        contract's error body, with a CorrelationID like every answer."""
        try:
            return await handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            response = self._refused(error.status, request.path, _reason(error))
            if isinstance(error, web.HTTPMethodNotAllowed):
                response.headers["Allow"] = ", ".join(sorted(error.allowed_methods))
            return response

    def _refused(self, status: int, path: str, reason: str) -> web.Response:
        """An answer in the contract's body to a request refused before any route."""
        family = Family.INSTITUTION if "/financialInstitutions/" in path else Family.AGENCY
        refusal = plain_refusal(status, family, reason)
        response = web.json_response(refusal.body(self._clock.now()), status=status)
        response.headers[CORRELATION_HEADER] = self._correlation_ids.fresh()
        return response


def _reason(error: web.HTTPException) -> str:
    if error.status == 404:
        return f"no such path under {BASE_PATH} (see {BASE_PATH}/openapi.json)"
    if error.status == 405:
        return "this path does not take that method"
    if error.status == 413:
        return "the request body is larger than this path takes"
    return error.reason


class _ContractHandler(RequestHandler):
    """aiohttp's protocol for one connection, answering a request its parser refuses in
    the contract's body: without the parser's message or its log record, which quote
    the request's bytes (a header may hold a customer ID)."""

    def __init__(
        self, manager: web.Server, refused: Callable[[int, str, str], web.Response], **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._refuse = refused

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # (its type, not its message: it may quote the request)
            log.error("aiohttp failed a request (%d): %s", status, type(exc).__name__)
        else:
            log.info("a malformed HTTP request refused (%d)", status)
        reason = "not a valid HTTP/1.1 request" if status < 500 else "internal error"
        response = self._refuse(status, _path_of(request), reason)
        response.force_close()
        return response


def _path_of(request: BaseRequest) -> str:
    """The path, if the parser got that far ("" if not)."""
    try:
        return request.path
    except Exception:
        return ""


class _Connections:
    """Counts the connections open; past ``limit`` a new one is closed at once (the
    client sees a reset and retries), so idle connections cannot pile up."""

    def __init__(self, make: Callable[[], asyncio.Protocol], limit: int) -> None:
        self._make = make
        self._limit = limit
        self.open = 0

    def protocol(self) -> asyncio.Protocol:
        return _Counted(self, self._make())


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted."""

    def __init__(self, connections: _Connections, inner: asyncio.Protocol) -> None:
        self._connections = connections
        self._inner = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connections.open += 1
        if self._connections.open > self._connections._limit:
            transport.abort()
            return
        self._inner.connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._connections.open -= 1
        self._inner.connection_lost(error)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
