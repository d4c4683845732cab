"""Errors raised by the register, the store and auth, mapped to gRPC status codes in one
place (``kfr_grpc.api.interceptor``).

Messages are shown to callers. They name fields by path and index
(``relationships[3].customer_id``) and never contain a customer ID.
"""

from __future__ import annotations

from dataclasses import dataclass


class KfrError(Exception):
    """Base class: ``str(error)`` is a message fit for the caller."""


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: where it is in the request and what is wrong with it."""

    field: str
    reason: str
    code: str = "INVALID_VALUE"  # a word for programs: DATE_IN_FUTURE, CUSTOMER_ID_CHECKSUM…

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


# How many violations a message spells out; the rest are counted.
_MESSAGE_VIOLATIONS = 20


def _describe(violations: tuple[FieldViolation, ...]) -> str:
    shown = "; ".join(str(v) for v in violations[:_MESSAGE_VIOLATIONS])
    hidden = len(violations) - _MESSAGE_VIOLATIONS
    return shown + (f"; and {hidden} more" if hidden > 0 else "")


class InvalidArgument(KfrError):
    """The request is malformed: one or more fields are wrong (INVALID_ARGUMENT)."""

    def __init__(self, violations: list[FieldViolation] | tuple[FieldViolation, ...]) -> None:
        self.violations = tuple(violations)
        super().__init__(_describe(self.violations))

    @classmethod
    def field(cls, field: str, reason: str, code: str = "INVALID_VALUE") -> InvalidArgument:
        return cls([FieldViolation(field, reason, code)])


class NotFound(KfrError):
    """Items refer to relationships that do not exist (NOT_FOUND)."""

    def __init__(self, violations: list[FieldViolation] | tuple[FieldViolation, ...]) -> None:
        self.violations = tuple(violations)
        super().__init__(_describe(self.violations))


class PermissionDenied(KfrError):
    """The authenticated caller may not do this (PERMISSION_DENIED)."""


class AlreadyExists(KfrError):
    """The thing to create exists already (ALREADY_EXISTS)."""


class Unauthenticated(KfrError):
    """The caller's identity could not be established (UNAUTHENTICATED)."""


class StoreFull(KfrError):
    """The store has no room left (RESOURCE_EXHAUSTED)."""


class StoreClosed(KfrError):
    """The store was closed: the server is shutting down (UNAVAILABLE; retry elsewhere)."""


class CorruptRecord(KfrError):
    """A stored value failed its integrity check (INTERNAL; details go to the operator's log)."""


class ConfigError(KfrError):
    """The configuration, keyring or data directory cannot be used; raised at start-up."""
