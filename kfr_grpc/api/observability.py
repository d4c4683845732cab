"""What is kept about every call once it has ended, with the status the client saw: one
log line, and whatever the recorders keep (metrics, refusals in the request log, lookup
counters: ``recording``).

Log lines name the method, the caller's organisation (and vendor), the correlation-id,
the status and the duration: never a request field, so never a customer ID.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import grpc

from kfr_grpc._proto import kfr_pb2
from kfr_grpc.auth.authenticator import Caller
from kfr_grpc.errors import Rejection

log = logging.getLogger("kfr.requests")
_LOOKUP_SERVICE = kfr_pb2.DESCRIPTOR.services_by_name["LookupService"].full_name


class FinishedCall:
    """One call as the log and the recorders see it. ``request`` is the request message
    of a unary call (None for a request stream): recorders read only what they must.

    (A plain class with slots: one is made for every call.) For the event loop's thread.
    """

    __slots__ = (
        "_finished", "caller", "code", "correlation_id", "message", "method", "over_limit",
        "refusal", "rejections", "request", "seconds", "service", "started",
    )  # fmt: skip

    def __init__(self, method: str, correlation_id: str, service: str = "") -> None:
        self.method = method
        self.service = service or service_of(method)
        self.correlation_id = correlation_id
        self.started = time.perf_counter()
        self.caller: Caller | None = None
        self.request: Any = None
        self.code = grpc.StatusCode.OK
        self.message = ""
        self.rejections: tuple[Rejection, ...] = ()
        self.seconds = 0.0  # how long the call took
        self.refusal: BaseException | None = None  # why the call is refused, until it is
        self.over_limit = False  # refused by a limit on calls (at once, per second)
        self._finished = False

    @property
    def claimed(self) -> bool:
        return self._finished

    def claim(self) -> bool:
        """True the first time: whoever claims the call finishes it (a stream may end on
        its own and then be torn down)."""
        if self._finished:
            return False
        self._finished = True
        return True


def service_of(method: str) -> str:
    """``/kfr.v1.LookupService/Lookup`` -> ``kfr.v1.LookupService``."""
    return method.strip("/").split("/", 1)[0]


class CallRecorder(Protocol):
    def record(self, call: FinishedCall) -> Awaitable[None] | None:
        """Keeps what it keeps of ``call``; work that must wait (a store write) it returns
        as an awaitable, which the call's end awaits."""
        ...


class CallObserver:
    """Finishes calls: each exactly once, however it ended."""

    def __init__(self, recorders: Sequence[CallRecorder] = ()) -> None:
        self._recorders = tuple(recorders)

    def finish(
        self,
        call: FinishedCall,
        code: grpc.StatusCode = grpc.StatusCode.OK,
        message: str = "",
        rejections: tuple[Rejection, ...] = (),
    ) -> Awaitable[None] | None:
        """Ends ``call`` with the status the client saw: logs it and hands it to the
        recorders. Returns what remains to be awaited (a refused institution call's
        record, written before the caller hears of the refusal so that it can be looked
        up at once), or None. A second finish of the same call does nothing."""
        if not call.claim():
            return None
        call.code, call.message, call.rejections = code, message, rejections
        call.seconds = time.perf_counter() - call.started
        self._log(call)
        pending = []
        for recorder in self._recorders:
            try:
                waiting = recorder.record(call)
            except Exception:  # the call's answer stands; the operator hears about it
                _record_failed(call)
                continue
            if waiting is not None:
                pending.append(waiting)
        call.request = None  # recorded: a large request need not live as long as the call
        return _settle(call, pending) if pending else None

    @staticmethod
    def _log(call: FinishedCall) -> None:
        org = call.caller.org_number if call.caller else None
        supplier = call.caller.supplier if call.caller else None
        # A lookup's duration grows a little with what it found: its line carries none
        # (the latency histogram in the metrics, over many calls, does).
        timed = call.service != _LOOKUP_SERVICE
        duration = f"{call.seconds * 1000:.2f}" if timed else "-"
        fields = {
            "method": call.method,
            "caller": org,
            "supplier": supplier,
            "correlation_id": call.correlation_id,
            "status": call.code.name,
            "duration_ms": round(call.seconds * 1000, 3) if timed else None,
        }
        detail = ""
        if call.code is not grpc.StatusCode.OK and call.message:
            # The caller's message: it names fields and limits, never a value.
            fields["detail"] = call.message
            detail = f" detail={call.message!r}"
        log.info(
            "request method=%s caller=%s%s correlation_id=%s status=%s duration_ms=%s%s",
            call.method,
            org or "-",
            f" via={supplier}" if supplier else "",
            call.correlation_id,
            call.code.name,
            duration,
            detail,
            extra=fields,
        )


async def _settle(call: FinishedCall, pending: list[Awaitable[None]]) -> None:
    for waiting in pending:
        try:
            await waiting
        except Exception:
            _record_failed(call)


def _record_failed(call: FinishedCall) -> None:
    log.exception("could not record the call correlation_id=%s", call.correlation_id)
