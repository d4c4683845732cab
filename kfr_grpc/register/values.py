"""Parsing of the plain values in requests: dates, UUIDs, required text.

Parsers raise ``InvalidValue(reason)``; the caller adds the field path and turns it
into a ``Rejection``. Reasons never repeat the value.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import date
from typing import TypeVar

from stdnum.exceptions import ValidationError
from stdnum.no import kontonr

from kfr_grpc.errors import InvalidArgument, Rejection

_T = TypeVar("_T")

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class InvalidValue(ValueError):
    """A value is wrong; ``str(error)`` says why, without the value, and ``code`` says it
    in a word a program can act on (``DATE_IN_FUTURE``, ``CUSTOMER_ID_CHECKSUM`` …)."""

    def __init__(self, reason: str, code: str = "INVALID_VALUE") -> None:
        super().__init__(reason)
        self.code = code


def parse_date(raw: str, today: date) -> date:
    """Parses ``YYYY-MM-DD``; empty means today. Dates after today are refused."""
    if not raw:
        return today
    if not _ISO_DATE.fullmatch(raw):
        raise InvalidValue("must be a date written YYYY-MM-DD", "DATE_MALFORMED")
    try:
        parsed = date.fromisoformat(raw)
    except ValueError:
        raise InvalidValue("is not a real calendar date", "DATE_INVALID") from None
    if parsed > today:
        raise InvalidValue("is in the future", "DATE_IN_FUTURE")
    return parsed


def parse_uuid(raw: str) -> uuid.UUID:
    """Parses a UUID in its canonical text form (any case, with or without braces)."""
    if not raw:
        raise InvalidValue("is required (a UUID)", "REQUIRED")
    reason = "must be a UUID, for example 123e4567-e89b-12d3-a456-426614174000"
    return _or_invalid(uuid.UUID, raw, ValueError, reason, "UUID_MALFORMED")


def parse_account_number(raw: str) -> str:
    """A Norwegian account number: 11 digits, mod-11 check digit (spaces and dots allowed)."""
    compact = "".join(raw.split()).replace(".", "")
    if not (compact.isascii() and compact.isdigit() and len(compact) == 11):
        raise InvalidValue(
            "must be an 11-digit Norwegian account number", "ACCOUNT_NUMBER_MALFORMED"
        )
    reason = "is not a valid account number (check digit)"
    return _or_invalid(
        kontonr.validate, compact, ValidationError, reason, "ACCOUNT_NUMBER_CHECKSUM"
    )


def _or_invalid(
    parse: Callable[[str], _T], raw: str, errors: type[Exception], reason: str, code: str
) -> _T:
    """``parse(raw)``, or ``InvalidValue(reason, code)`` where it raises ``errors``."""
    try:
        return parse(raw)
    except errors:
        raise InvalidValue(reason, code) from None


def require_text(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise InvalidValue("is required", "REQUIRED")
    return text


class Rejections:
    """Collects the rejections found while validating a request: every bad field, not
    only the first."""

    def __init__(self) -> None:
        self.found: list[Rejection] = []

    def parse(
        self, field: str, parser: Callable[..., _T], *args: object, item: int | None = None
    ) -> _T | None:
        """Returns ``parser(*args)``, or None after noting why it failed."""
        try:
            return parser(*args)
        except InvalidValue as error:
            self.found.append(Rejection(field, str(error), error.code, item))
            return None

    def add(self, field: str, reason: str, code: str, item: int | None = None) -> None:
        self.found.append(Rejection(field, reason, code, item))

    def raise_if_any(self, within: str = "") -> None:
        """``InvalidArgument`` naming every rejection (items' fields by their path in
        ``within``)."""
        if self.found:
            raise InvalidArgument(rejection.located(within) for rejection in self.found)


def parse_or_raise(field: str, parser: Callable[..., _T], *args: object) -> _T:
    """``parser(*args)``, or ``InvalidArgument`` naming ``field``."""
    rejections = Rejections()
    value = rejections.parse(field, parser, *args)
    rejections.raise_if_any()
    assert value is not None
    return value
