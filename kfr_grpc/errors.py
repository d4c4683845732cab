"""Errors raised by the register, the store and auth.

Each error names its status as a canonical status code name (``status``: the names gRPC
and Google's HTTP APIs share); the servicers turn that name into the wire's status in
one place each (``kfr_grpc.api.status`` for gRPC).

Messages are shown to callers. They name fields by path and index
(``relationships[3].customer_id``) and never contain a customer ID.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Rejection(NamedTuple):
    """One bad field, from validation to the wire: where it is and why (never its value).

    ``item`` is the position of the item in its batch or stream when the field belongs
    to one (``field`` is then the item's own field, ``customer_id``); None when
    ``field`` is the full path of a request field. A named tuple, so that a bulk load's
    helper process returns thousands of them cheaply.
    """

    field: str
    reason: str
    code: str = "INVALID_VALUE"  # a word for programs: DATE_IN_FUTURE, CUSTOMER_ID_CHECKSUM…
    item: int | None = None

    def path(self, within: str) -> str:
        """``relationships[3].customer_id`` for an item's field; the field path otherwise."""
        return self.field if self.item is None else f"{within}[{self.item}].{self.field}"

    def located(self, within: str) -> Rejection:
        """The same rejection named by its full path in ``within`` (the batch's field)."""
        return Rejection(self.path(within), self.reason, self.code)

    def __str__(self) -> str:
        return f"{self.path('items')}: {self.reason}"


# How many rejections a message spells out; the rest are counted.
_MESSAGE_REJECTIONS = 20


def _describe(rejections: tuple[Rejection, ...]) -> str:
    shown = "; ".join(str(r) for r in rejections[:_MESSAGE_REJECTIONS])
    hidden = len(rejections) - _MESSAGE_REJECTIONS
    return shown + (f"; and {hidden} more" if hidden > 0 else "")


class KfrError(Exception):
    """Base class: ``str(error)`` is a message fit for the caller."""

    status = "INTERNAL"
    rejections: tuple[Rejection, ...] = ()


class _RejectingError(KfrError):
    """An error about named fields: the message lists them."""

    def __init__(self, rejections: Iterable[Rejection]) -> None:
        self.rejections = tuple(rejections)
        super().__init__(_describe(self.rejections))

    @classmethod
    def field(cls, field: str, reason: str, code: str = "INVALID_VALUE") -> _RejectingError:
        return cls([Rejection(field, reason, code)])

    def with_rejection(self, rejection: Rejection) -> _RejectingError:
        """This error with one more rejection (a note on what happened before it)."""
        return type(self)([*self.rejections, rejection])


class InvalidArgument(_RejectingError):
    """The request is malformed: one or more fields are wrong."""

    status = "INVALID_ARGUMENT"


class NotFound(_RejectingError):
    """Items refer to things that do not exist."""

    status = "NOT_FOUND"


class PermissionDenied(KfrError):
    """The authenticated caller may not do this."""

    status = "PERMISSION_DENIED"


class FailedPrecondition(KfrError):
    """The system is not in the state the call needs (the message says what to do first)."""

    status = "FAILED_PRECONDITION"


class AlreadyExists(KfrError):
    """The thing to create exists already."""

    status = "ALREADY_EXISTS"


class Unauthenticated(KfrError):
    """The caller's identity could not be established."""

    status = "UNAUTHENTICATED"


class StoreFull(KfrError):
    """The store has no room left."""

    status = "RESOURCE_EXHAUSTED"


class Overloaded(KfrError):
    """A limit on calls at once was met; the message names it and says how to retry."""

    status = "RESOURCE_EXHAUSTED"


class RateLimited(Overloaded):
    """An organisation called more often than its rate allows; ``retry_after`` seconds
    from now it may call again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MessageTooLarge(KfrError):
    """A request message over the server's size limit."""

    status = "RESOURCE_EXHAUSTED"


class RequestTimeout(KfrError):
    """The caller did not send its request (or its next stream message) in time."""

    status = "DEADLINE_EXCEEDED"


class ClientGone(KfrError):
    """The client cancelled the call, or let its deadline pass, before its answer; the
    message (and a ``PARTIAL`` rejection) says what had been committed by then."""

    def __init__(self, deadline_passed: bool, committed: str = "") -> None:
        self.status = "DEADLINE_EXCEEDED" if deadline_passed else "CANCELLED"
        why = "the client's deadline passed" if deadline_passed else "the client went away"
        super().__init__(f"{why}; {committed}" if committed else why)
        self.rejections = (Rejection("stream", committed, "PARTIAL"),) if committed else ()


class StoreClosed(KfrError):
    """The store was closed: the server is shutting down (retry elsewhere)."""

    status = "UNAVAILABLE"


class StoreUnavailable(KfrError):
    """Cluster mode: the write log (etcd) cannot be reached, or this node cannot follow it;
    the message says whether a write may still take effect. Retry on another node."""

    status = "UNAVAILABLE"


class CorruptRecord(KfrError):
    """A stored value failed its integrity check (details go to the operator's log)."""


class ConfigError(KfrError):
    """The configuration, keyring or data directory cannot be used; raised at start-up."""
