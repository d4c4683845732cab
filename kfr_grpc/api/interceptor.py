"""What every call shares: correlation id, caller identity, error mapping, request log.

Servicers receive a ``RequestContext``: the gRPC context plus the authenticated
``caller`` and the ``correlation_id``. They raise the register's errors; this module is
the one place that turns them into gRPC status codes. Log lines name the method, the
caller's organisation, the correlation id, the status and the duration: never a
request field, so never a customer ID.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from kfr_grpc.auth.authenticator import Caller
from kfr_grpc.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    KfrError,
    NotFound,
    PermissionDenied,
    StoreClosed,
    StoreFull,
    Unauthenticated,
)

log = logging.getLogger("kfr.requests")

CORRELATION_ID_KEY = "correlation-id"

_STATUS: dict[type[KfrError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    StoreFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StoreClosed: grpc.StatusCode.UNAVAILABLE,
}


class RequestContext:
    """A ``grpc.ServicerContext`` that also knows who is calling and under which id."""

    def __init__(
        self,
        context: grpc.ServicerContext,
        caller: Caller,
        correlation_id: str,
        outcome: CallOutcome,
    ) -> None:
        self._context = context
        self.caller = caller
        self.correlation_id = correlation_id
        self.outcome = outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class CallAuthenticator(Protocol):
    def authenticate(
        self, pem_certificates: Sequence[bytes], metadata: Sequence[tuple[str, str]]
    ) -> Caller: ...

    def authorize(self, method: str, caller: Caller) -> None: ...


@dataclass
class CallOutcome:
    """What a servicer tells the request log about a call it handled."""

    counts: dict[str, int] = field(default_factory=dict)
    rejected: tuple[FieldViolation, ...] = ()  # items a successful call did not apply
    mandate: str | None = None  # lookups: the legal mandate, as counted


@dataclass
class FinishedCall:
    """One call as the request log and the lookup counters see it: no request fields."""

    method: str
    correlation_id: str
    caller: Caller | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""
    violations: tuple[FieldViolation, ...] = ()
    outcome: CallOutcome = field(default_factory=CallOutcome)
    seconds: float = 0.0  # how long the call took


class CallRecorder(Protocol):
    def record(self, call: FinishedCall) -> None: ...


class RequestInterceptor(grpc.ServerInterceptor):
    """Wraps every handler with the shared per-call work."""

    def __init__(
        self, authenticator: CallAuthenticator, recorders: Sequence[CallRecorder] = ()
    ) -> None:
        self._authenticator = authenticator
        self._recorders = tuple(recorders)

    def intercept_service(
        self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        for kind, factory, streams_requests, streams_responses in _HANDLER_KINDS:
            behaviour = getattr(handler, kind)
            if behaviour is None:
                continue
            if streams_requests:
                behaviour = _well_formed_stream(behaviour)
            wrapped = self._wrap(behaviour, method, metadata)
            if streams_responses:
                wrapped = _streaming_responses(wrapped)
            return factory(
                wrapped,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap(self, behaviour: Callable, method: str, metadata: Any) -> Callable:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            correlation_id, correlation_ok = _correlation_id(metadata)
            context.send_initial_metadata(((CORRELATION_ID_KEY, correlation_id),))
            call = FinishedCall(method, correlation_id)
            try:
                if not correlation_ok:
                    raise InvalidArgument.field(
                        f"metadata {CORRELATION_ID_KEY}", "must be a UUID", "UUID_MALFORMED"
                    )
                pem_certificates = context.auth_context().get("x509_pem_cert", [])
                call.caller = self._authenticator.authenticate(pem_certificates, metadata or ())
                self._authenticator.authorize(method, call.caller)
                wrapped = RequestContext(context, call.caller, correlation_id, call.outcome)
                return behaviour(_refuse_malformed(request), wrapped)
            except KfrError as error:
                call.code, call.message = _status_for(error, correlation_id)
                call.violations = getattr(error, "violations", ())
                if isinstance(error, InvalidArgument):
                    context.abort_with_status(_bad_request(call.code, call.message, error))
                context.abort(call.code, call.message)
            except Exception:
                log.exception("unexpected error correlation_id=%s", correlation_id)
                call.code = grpc.StatusCode.INTERNAL
                call.message = f"internal error; quote correlation-id {correlation_id}"
                context.abort(call.code, call.message)
            finally:
                self._finish(call, started)

        return handle

    def _finish(self, call: FinishedCall, started: float) -> None:
        call.seconds = time.perf_counter() - started
        org = call.caller.org_number if call.caller else None
        supplier = call.caller.supplier if call.caller else None
        log.info(
            "request method=%s caller=%s%s correlation_id=%s status=%s duration_ms=%.2f",
            call.method,
            org or "-",
            f" via={supplier}" if supplier else "",
            call.correlation_id,
            call.code.name,
            call.seconds * 1000,
            extra={
                "method": call.method,
                "caller": org,
                "supplier": supplier,
                "correlation_id": call.correlation_id,
                "status": call.code.name,
                "duration_ms": round(call.seconds * 1000, 3),
            },
        )
        for recorder in self._recorders:
            try:
                recorder.record(call)
            except Exception:  # the call's answer stands; the operator hears about the record
                log.exception("could not record the call correlation_id=%s", call.correlation_id)


# Field violations carried in an error's details; the message lists the first 20 anyway.
_MAX_DETAILED_VIOLATIONS = 1000


def _bad_request(code: grpc.StatusCode, message: str, error: InvalidArgument) -> grpc.Status:
    """INVALID_ARGUMENT with a google.rpc.BadRequest detail: one field violation per bad
    field, with its path, the reason in words and its code (never the value)."""
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=violation.field, description=violation.reason, reason=violation.code
            )
            for violation in error.violations[:_MAX_DETAILED_VIOLATIONS]
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)


def _status_for(error: KfrError, correlation_id: str) -> tuple[grpc.StatusCode, str]:
    code = _STATUS.get(type(error))
    if code is not None:
        return code, str(error)
    # CorruptRecord and anything unforeseen: details for the operator, not the caller.
    log.error("%s correlation_id=%s: %s", type(error).__name__, correlation_id, error)
    return grpc.StatusCode.INTERNAL, f"internal error; quote correlation-id {correlation_id}"


def _correlation_id(metadata: Any) -> tuple[str, bool]:
    """The caller's correlation id if it sent a valid one, else a fresh one (and whether valid)."""
    for key, value in metadata or ():
        if key == CORRELATION_ID_KEY:
            try:
                return str(uuid.UUID(value)), True
            except (ValueError, TypeError, AttributeError):
                return str(uuid.uuid4()), False
    return str(uuid.uuid4()), True


class _Malformed:
    """Stands in for a request message that would not deserialize."""


_MALFORMED = _Malformed()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning ``_MALFORMED`` instead of raising.

    grpcio answers a message it cannot decode with INTERNAL and never calls the handler;
    this lets the call go through the interceptor, which answers INVALID_ARGUMENT (after
    authenticating the caller, and in the request log like any other call)."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _MALFORMED

    return deserialize


def _refuse_malformed(request: Any) -> Any:
    if request is _MALFORMED:
        raise InvalidArgument.field(
            "request", "is not a valid protobuf message of the method's type", "MALFORMED"
        )
    return request


def _well_formed_stream(behaviour: Callable) -> Callable:
    """A request-streaming handler whose stream raises ``InvalidArgument`` at a bad message."""

    def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        return behaviour((_refuse_malformed(request) for request in requests), context)

    return handle


def _streaming_responses(handle: Callable) -> Callable:
    """Response-streaming calls (health Watch, reflection): the same checks, then the
    stream; errors while streaming end it with their status."""

    def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        responses = handle(request, context)
        try:
            yield from responses
        except KfrError as error:
            context.abort(*_status_for(error, "-"))

    return stream


# (handler attribute, handler factory, streams requests, streams responses)
_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False, False),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, True, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, False, True),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True, True),
)
