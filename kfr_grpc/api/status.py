"""The one place where errors become gRPC statuses.

A ``KfrError`` names its status (``error.status``, a canonical code name); its message
goes to the caller as it is, and an ``INVALID_ARGUMENT`` also carries a
``google.rpc.BadRequest`` detail with one field violation per rejection, a rate limit a
``google.rpc.RetryInfo`` saying when to call again. Anything else
is a bug or a corrupt record: the caller gets ``INTERNAL`` with the correlation-id to
quote, and the details go to the operator's log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from kfr_grpc.errors import CorruptRecord, KfrError, RateLimited, Rejection

log = logging.getLogger("kfr.requests")

# The BadRequest detail travels in a trailer, and gRPC clients refuse metadata over 8 to
# 16 KiB: it carries the first violations up to this many bytes (the message lists the
# first 20 anyway; the request log keeps up to 1000).
_MAX_DETAIL_BYTES = 3 * 1024


@dataclass(frozen=True)
class Refusal:
    """How a call ended in error: what the caller is told."""

    code: grpc.StatusCode
    message: str
    rejections: tuple[Rejection, ...] = ()
    retry_after: float | None = None  # seconds, for a RetryInfo detail

    async def abort(self, context: grpc.aio.ServicerContext) -> None:
        """Ends the call with this status (raises, as ``context.abort`` does)."""
        # (the trailing metadata set before, the correlation-id, goes along)
        trailing = tuple(context.trailing_metadata() or ())
        details = self._details()
        if details:
            status = status_pb2.Status(
                code=self.code.value[0], message=self.message, details=details
            )
            detail = rpc_status.to_status(status)
            await context.abort(detail.code, detail.details, trailing + detail.trailing_metadata)
        await context.abort(self.code, self.message, trailing)

    def _details(self) -> list[any_pb2.Any]:
        details = []
        if self.code is grpc.StatusCode.INVALID_ARGUMENT and self.rejections:
            details.append(_packed(self._bad_request()))
        if self.retry_after is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromNanoseconds(int(self.retry_after * 1e9))
            details.append(_packed(retry))
        return details

    def _bad_request(self) -> error_details_pb2.BadRequest:
        """The violations in item order, as many as fit; then, if some did not, one more
        saying how many and where they all are."""
        bad_request = error_details_pb2.BadRequest()
        for listed, rejection in enumerate(self.rejections):
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=rejection.field, description=rejection.reason, reason=rejection.code
            )
            if bad_request.ByteSize() + violation.ByteSize() > _MAX_DETAIL_BYTES:
                bad_request.field_violations.append(_more(len(self.rejections) - listed))
                break
            bad_request.field_violations.append(violation)
        return bad_request


def _more(count: int) -> error_details_pb2.BadRequest.FieldViolation:
    return error_details_pb2.BadRequest.FieldViolation(
        field="",
        reason="MORE_VIOLATIONS",
        description=(
            f"{count} more violation(s) not listed here (the detail must fit a client's "
            "metadata limit): `kfr request-log CORRELATION-ID` lists up to 1000, or send "
            "fewer items at a time"
        ),
    )


def _packed(message: object) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def refusal_for(error: Exception, correlation_id: str) -> Refusal:
    """What the caller is told about ``error``."""
    if isinstance(error, KfrError) and not isinstance(error, CorruptRecord):
        code = grpc.StatusCode[error.status]
        if code is not grpc.StatusCode.INTERNAL:
            retry_after = error.retry_after if isinstance(error, RateLimited) else None
            return Refusal(code, str(error), error.rejections, retry_after)
    if isinstance(error, KfrError):
        log.error("%s correlation_id=%s: %s", type(error).__name__, correlation_id, error)
    else:
        log.error("unexpected error correlation_id=%s", correlation_id, exc_info=error)
    return Refusal(
        grpc.StatusCode.INTERNAL, f"internal error; quote correlation-id {correlation_id}"
    )
