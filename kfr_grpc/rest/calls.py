"""What every REST call shares, as the gRPC interceptor does for gRPC calls (and with the
same parts: admission, the authenticator, the call observer):

1. a CorrelationID: the caller's (a UUID, required by the contract) or, when it sent none
   or a malformed one, a fresh one; echoed in the ``CorrelationID`` header of every answer;
2. admission: the server's and the organisation's call limits and rates (429/503);
3. the caller's identity: the client certificate from the TLS session and the bearer
   token, checked as for gRPC, and the scope the path requires;
4. the handler; errors become the contract's bodies (``errors``);
5. once answered, the log line and the records (refusals in the request log, lookup
   counters, metrics), as for gRPC. No URL is logged: only the route's template.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import unquote

import grpc
from aiohttp import web

from kfr_grpc.api.admission import Admission, Admitted
from kfr_grpc.api.authentication import CallAuthenticator
from kfr_grpc.api.calls import CorrelationIds
from kfr_grpc.api.observability import CallObserver, FinishedCall, service_of
from kfr_grpc.auth.authenticator import Caller
from kfr_grpc.clock import Clock
from kfr_grpc.errors import InvalidArgument, Overloaded, PermissionDenied, Unauthenticated
from kfr_grpc.register.model import CallInfo
from kfr_grpc.rest import route_name
from kfr_grpc.rest.errors import Family, RestRefusal, ScopeMissing, refusal_for

CORRELATION_HEADER = "CorrelationID"


@dataclass(frozen=True)
class RestCall:
    """One authenticated call, as a handler sees it."""

    request: web.Request
    caller_or_none: Caller | None  # None on the one open route (the OpenAPI document)
    correlation_id: str
    name: str  # the route, as logs and the request log name it
    legal_mandate: str = ""  # an agency's Legal-Mandate, decoded

    @property
    def caller(self) -> Caller:
        assert self.caller_or_none is not None, "an authenticated route"
        return self.caller_or_none

    def call_for(self, institution: str) -> CallInfo:
        return CallInfo(self.correlation_id, self.name, institution, self.caller.supplier)

    def header(self, name: str) -> str:
        """A request header's value ("" if absent)."""
        return self.request.headers.get(name, "")


Handler = Callable[[RestCall], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """A path of the contract: who may call it (the gRPC method whose scope it needs, and
    whose service's records it keeps) and what answers it."""

    method: str  # GET, POST, DELETE
    path: str  # under BASE_PATH
    family: Family
    scope_of: str  # a full gRPC method name: /kfr.v1.InstitutionService/Report
    handler: Handler
    authenticated: bool = True

    @property
    def name(self) -> str:
        return route_name(self.method, self.path)


class RestCalls:
    """Wraps each route's handler with the shared work. For the event loop's thread."""

    def __init__(
        self,
        authenticator: CallAuthenticator,
        observer: CallObserver,
        admission: Admission,
        clock: Clock,
    ) -> None:
        self._authenticator = authenticator
        self._observer = observer
        self._admission = admission
        self._clock = clock
        self._correlation_ids = CorrelationIds()
        self._pem = functools.lru_cache(maxsize=4096)(_pem)

    def wrap(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        name, service = route.name, service_of(route.scope_of)
        agency = route.family is Family.AGENCY

        async def handle(request: web.Request) -> web.StreamResponse:
            sent = request.headers.getall(CORRELATION_HEADER, [])
            correlation_id, valid = self._correlation_ids.of(
                [("correlation-id", value) for value in sent[:1]]
            )
            call = FinishedCall(name, correlation_id, service)
            mandate = _legal_mandate(request) if agency else ""
            if agency:
                call.request = _Asked(mandate)
            admitted: Admitted | None = None
            try:
                admitted = self._admission.admit(name, _connection(request))
                if route.authenticated:
                    call.caller = self._identify(request, route)
                    admitted.identified(call.caller.org_number)
                if route.authenticated and (not sent or len(sent) > 1 or not valid):
                    raise InvalidArgument.field(
                        CORRELATION_HEADER, "is required: one UUID per request", "UUID_MALFORMED"
                    )
                rest_call = RestCall(request, call.caller, correlation_id, name, mandate)
                response = await route.handler(rest_call)
            except asyncio.CancelledError:
                await _settled(self._observer.finish(call, grpc.StatusCode.CANCELLED, "gone"))
                raise
            except Exception as error:
                refusal = refusal_for(error, route.family, correlation_id)
                call.over_limit = isinstance(error, Overloaded)  # (no record: see recording)
                response = self._refused(refusal)
                code = grpc.StatusCode[refusal.status]
                await _settled(
                    self._observer.finish(call, code, refusal.message, refusal.rejections)
                )
            else:
                await _settled(self._observer.finish(call))
            finally:
                if admitted is not None:
                    admitted.release()
            response.headers[CORRELATION_HEADER] = correlation_id
            return response

        return handle

    def _identify(self, request: web.Request, route: Route) -> Caller:
        authorization = request.headers.getall("Authorization", [])
        metadata = [("authorization", value) for value in authorization]
        pem = self._pem(_client_certificate(request))  # (clients reconnect with the same)
        caller = self._authenticator.authenticate([pem], metadata)
        try:
            self._authenticator.authorize(route.scope_of, caller)
        except PermissionDenied as error:
            raise ScopeMissing(str(error)) from None
        return caller

    def _refused(self, refusal: RestRefusal) -> web.Response:
        response = web.json_response(refusal.body(self._clock.now()), status=refusal.http_status)
        if refusal.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(refusal.retry_after + 0.5)))
        if refusal.http_status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="kfr"'
        return response


async def _settled(pending: Awaitable[None] | None) -> None:
    if pending is not None:
        await pending


def _legal_mandate(request: web.Request) -> str:
    """Legal-Mandate, "formatted encoded text": percent-encoded UTF-8 (a header is
    Latin-1), so a mandate with "§" arrives whole."""
    return unquote(request.headers.get("Legal-Mandate", ""))


def _connection(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"rest:{peer}"


def _client_certificate(request: web.Request) -> bytes:
    """The client certificate of the TLS session (DER)."""
    transport = request.transport
    ssl_object: Any = transport.get_extra_info("ssl_object") if transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise Unauthenticated("a client certificate is required (mutual TLS)")
    return der


def _pem(der: bytes) -> bytes:
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


class _Asked(NamedTuple):
    """What the lookup counters read of an agency's request (as of a gRPC request)."""

    legal_mandate: str
