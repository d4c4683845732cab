"""The gRPC interceptor: wraps every handler with what every call shares.

For each call, in order: a correlation-id (the caller's, or a fresh one, always sent
back in the initial metadata); the caller's identity and the scope the service needs
(``authentication``); the handler, with a ``RequestContext``; errors turned into the
caller's status (``status``); and, once the call has ended with the status the client
saw, the log line and the records (``observability``).

Streams end later than their handler returns: a response stream is finished when its
last message is sent, when it fails, or when the client goes away (then CANCELLED, or
DEADLINE_EXCEEDED), whichever comes first. Bytes that do not decode as the method's
message reach the handler as ``MALFORMED`` and are refused after authentication, like
any other bad request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

from kfr_grpc.api.authentication import CallAuthenticator, identify
from kfr_grpc.api.calls import CORRELATION_ID_KEY, RequestContext, correlation_id_of
from kfr_grpc.api.observability import CallObserver, FinishedCall
from kfr_grpc.api.status import refusal_for
from kfr_grpc.errors import InvalidArgument, KfrError


class RequestInterceptor(grpc.ServerInterceptor):
    def __init__(self, authenticator: CallAuthenticator, observer: CallObserver) -> None:
        self._authenticator = authenticator
        self._observer = observer

    def intercept_service(
        self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        call = _CallWrapper(
            self._authenticator,
            self._observer,
            handler_call_details.method,
            handler_call_details.invocation_metadata or (),
        )
        deserializer = _tolerant(handler.request_deserializer)
        serializer = handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                call.unary(handler.unary_unary), deserializer, serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                call.request_stream(handler.stream_unary), deserializer, serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                call.response_stream(handler.unary_stream), deserializer, serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            call.bidirectional(handler.stream_stream), deserializer, serializer
        )


class _ClientGone(Exception):
    """The client cancelled, or its deadline passed, while the handler read its stream."""

    def __init__(self, error: grpc.RpcError) -> None:
        super().__init__("the client went away")
        self.error = error


class _CallWrapper:
    """The shared work of one method's calls, around each kind of handler."""

    def __init__(
        self,
        authenticator: CallAuthenticator,
        observer: CallObserver,
        method: str,
        metadata: Any,
    ) -> None:
        self._authenticator = authenticator
        self._observer = observer
        self._method = method
        self._metadata = metadata

    def unary(self, behaviour: Callable) -> Callable:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            call, wrapped = self._begin(context, request)
            try:
                response = behaviour(_refuse_malformed(request), wrapped)
            except Exception as error:
                self._refuse(call, context, error)
            self._finish_answered(call, context)
            return response

        return handle

    def request_stream(self, behaviour: Callable) -> Callable:
        def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            call, wrapped = self._begin(context, None)
            try:
                response = behaviour(_well_formed(requests), wrapped)
            except _ClientGone as gone:
                self._finish_gone(call, context)
                raise gone.error from None  # grpcio knows its own error: no log line
            except Exception as error:
                self._refuse(call, context, error)
            self._finish_answered(call, context)
            return response

        return handle

    def response_stream(self, behaviour: Callable) -> Callable:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call, wrapped = self._begin(context, request)
            return self._streamed(
                call, context, lambda: behaviour(_refuse_malformed(request), wrapped)
            )

        return handle

    def bidirectional(self, behaviour: Callable) -> Callable:
        def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            call, wrapped = self._begin(context, None)
            return self._streamed(call, context, lambda: behaviour(_well_formed(requests), wrapped))

        return handle

    # --- the parts ----------------------------------------------------------------------

    def _begin(
        self, context: grpc.ServicerContext, request: Any
    ) -> tuple[FinishedCall, RequestContext]:
        """Starts the call: correlation-id, then identity. A call refused here is
        finished, and the context aborted (which raises)."""
        correlation_id, correlation_ok = correlation_id_of(self._metadata)
        context.send_initial_metadata(((CORRELATION_ID_KEY, correlation_id),))
        call = FinishedCall(self._method, correlation_id, request=request)
        try:
            if not correlation_ok:
                raise InvalidArgument.field(
                    f"metadata {CORRELATION_ID_KEY}", "must be a UUID", "UUID_MALFORMED"
                )
            caller = identify(self._authenticator, context, self._method, self._metadata)
        except Exception as error:
            self._refuse(call, context, error)
        call.caller = caller
        return call, RequestContext(context, caller, correlation_id, self._method)

    def _refuse(
        self, call: FinishedCall, context: grpc.ServicerContext, error: Exception
    ) -> NoReturn:
        """Finishes ``call`` with the status ``error`` gives, then aborts (raises). A
        handler that aborted by itself (health, reflection) keeps its own status."""
        aborted_with = context.code()
        if aborted_with is not None and not isinstance(error, KfrError):
            self._observer.finish(call, aborted_with, _text(context.details()))
            raise error
        refusal = refusal_for(error, call.correlation_id)
        self._observer.finish(call, refusal.code, refusal.message, refusal.rejections)
        refusal.abort(context)
        raise AssertionError("context.abort returned")  # it always raises

    def _finish_answered(self, call: FinishedCall, context: grpc.ServicerContext) -> None:
        """The handler answered: with the code it set (OK if none), unless the client
        went away meanwhile."""
        if context.is_active():
            code = context.code() or grpc.StatusCode.OK
            self._observer.finish(call, code, _text(context.details()))
        else:
            self._finish_gone(call, context)

    def _finish_gone(self, call: FinishedCall, context: grpc.ServicerContext) -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            code, message = grpc.StatusCode.DEADLINE_EXCEEDED, "the client's deadline passed"
        else:
            code, message = grpc.StatusCode.CANCELLED, "the client went away"
        self._observer.finish(call, code, message)

    def _streamed(
        self,
        call: FinishedCall,
        context: grpc.ServicerContext,
        responses: Callable[[], Iterator[Any]],
    ) -> Iterator[Any]:
        """The response stream, finished when it ends, fails or is torn down (a stream
        the client leaves is never iterated to its end: the callback finishes it)."""
        context.add_callback(lambda: self._finish_gone(call, context))  # no-op once finished

        def stream() -> Iterator[Any]:
            try:
                yield from responses()
            except _ClientGone:
                self._finish_gone(call, context)
                return
            except Exception as error:
                self._refuse(call, context, error)
            self._finish_answered(call, context)

        return stream()


def _text(details: bytes | str | None) -> str:
    if isinstance(details, bytes):
        return details.decode("utf-8", "replace")
    return details or ""


def _refuse_malformed(request: Any) -> Any:
    if request is _MALFORMED:
        raise InvalidArgument.field(
            "request", "is not a valid protobuf message of the method's type", "MALFORMED"
        )
    return request


def _well_formed(requests: Iterator[Any]) -> Iterator[Any]:
    """The request stream: ``InvalidArgument`` at a message that does not decode, and
    ``_ClientGone`` when the client cancels or its deadline passes."""
    while True:
        try:
            request = next(requests)
        except StopIteration:
            return
        except grpc.RpcError as error:
            raise _ClientGone(error) from None
        yield _refuse_malformed(request)


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
