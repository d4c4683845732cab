"""One call as the servicers see it: the correlation-id, the authenticated caller, and
the ``CallInfo`` under which the register records an institution's call.

Servicers receive a ``RequestContext``: the gRPC context plus ``caller``,
``correlation_id`` and ``method``. They pass ``context.call_for(institution)`` to the
register, which writes the call's request record with its changes.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from kfr_grpc.auth.authenticator import Caller
from kfr_grpc.register.model import CallInfo

CORRELATION_ID_KEY = "correlation-id"
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# A client's deadline passes a little before the server's (which counts from when the
# call arrived): a call cut off this close to its deadline was cut off by it.
_DEADLINE_MARGIN_SECONDS = 0.25


def deadline_passed(context: grpc.aio.ServicerContext) -> bool:
    """Whether a call the client cut off was cut off by its deadline (else: cancelled)."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= _DEADLINE_MARGIN_SECONDS


class CorrelationIds:
    """Each call's correlation id: the caller's, if it sent a valid one, else a fresh
    random UUID (version 4).

    Fresh ids come from OS randomness drawn 256 at a time: one system call per call cost
    the event loop a wait for the interpreter lock each time. For the event loop's
    thread only."""

    _BATCH = 256

    def __init__(self) -> None:
        self._random = b""
        self._offset = 0

    def of(self, metadata: Sequence[tuple[str, Any]]) -> tuple[str, bool]:
        """The call's correlation id, and whether what the caller sent (if anything)
        was valid."""
        for key, value in metadata:
            if key == CORRELATION_ID_KEY:
                if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
                    return value, True
                try:
                    return str(uuid.UUID(value)), True
                except (ValueError, TypeError, AttributeError):
                    return self.fresh(), False
        return self.fresh(), True

    def fresh(self) -> str:
        if self._offset >= len(self._random):
            self._random, self._offset = os.urandom(16 * self._BATCH), 0
        raw = bytearray(self._random[self._offset : self._offset + 16])
        self._offset += 16
        raw[6] = raw[6] & 0x0F | 0x40  # version 4
        raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RequestContext:
    """A ``grpc.ServicerContext`` that also knows who is calling, how, and under which id."""

    def __init__(
        self, context: grpc.ServicerContext, caller: Caller, correlation_id: str, method: str
    ) -> None:
        self._context = context
        self.caller = caller
        self.correlation_id = correlation_id
        self.method = method

    def call_for(self, institution: str) -> CallInfo:
        """The call as the request log names it, made for ``institution``."""
        return CallInfo(self.correlation_id, self.method, institution, self.caller.supplier)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
