"""One call as the servicers see it: the correlation-id, the authenticated caller, and
the ``CallInfo`` under which the register records an institution's call.

Servicers receive a ``RequestContext``: the gRPC context plus ``caller``,
``correlation_id`` and ``method``. They pass ``context.call_for(institution)`` to the
register, which writes the call's request record with its changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from kfr_grpc.auth.authenticator import Caller
from kfr_grpc.register.model import CallInfo

CORRELATION_ID_KEY = "correlation-id"


# A client's deadline passes a little before the server's (which counts from when the
# call arrived): a call cut off this close to its deadline was cut off by it.
_DEADLINE_MARGIN_SECONDS = 0.25


def deadline_passed(context: grpc.aio.ServicerContext) -> bool:
    """Whether a call the client cut off was cut off by its deadline (else: cancelled)."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= _DEADLINE_MARGIN_SECONDS


def correlation_id_of(metadata: Sequence[tuple[str, Any]] | None) -> tuple[str, bool]:
    """The caller's correlation id if it sent a valid one, else a fresh one (and whether
    what it sent, if anything, was valid)."""
    for key, value in metadata or ():
        if key == CORRELATION_ID_KEY:
            try:
                return str(uuid.UUID(value)), True
            except (ValueError, TypeError, AttributeError):
                return str(uuid.uuid4()), False
    return str(uuid.uuid4()), True


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
