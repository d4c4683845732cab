"""Validating reported relationships: the CPU-heavy half of reporting, kept free of the
store so that a bulk load can run it in another process while the store writes.

``validate_rows`` checks every field of every item (customer ID, role, start date) in one
pass and returns the parsed items with every rejection found, on plain tuples: they
cross a process boundary cheaply (pickling dataclasses costs more than the validation
saves), and the register writes from them without making an object per item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from kfr_grpc.errors import InvalidArgument, Rejection
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind, parse_customer
from kfr_grpc.register.model import (
    KindChoice,
    ProductKind,
    Role,
    RoleChoice,
    UnknownNumber,
    UnknownRole,
)
from kfr_grpc.register.values import InvalidValue, parse_date

_T = TypeVar("_T")
_ROLE_REQUIRED = "is required: ROLE_OWNER or ROLE_DISPONENT"
_DISPONENT_MUST_BE_PERSON = (
    "ROLE_DISPONENT needs a person (fødselsnummer or D-number), not an organisation number"
)

# No relationship starts before this day (nor a person's before their date of birth).
EARLIEST_START = date(1900, 1, 1)
_EARLIEST_START_ORDINAL = EARLIEST_START.toordinal()
MAX_ITEMS_PER_CALL = 1000
# The write transaction of a chunk is held in memory until it commits: this bounds the
# server's memory whatever a client sends (see README, Performance).
MAX_ITEMS_PER_CHUNK = 20_000

# (customer_id, role as row value, start_date, kind as row value) and (digits, is_person,
# role value, start ordinal, kind value): a role's row value is its enum value, an unknown
# number, or None; a kind's its enum value or an unknown number.
Row = tuple[str, str | int | None, str, str | int]
ParsedRow = tuple[str, bool, str, int, str]
ValidatedRows = tuple[list[ParsedRow | None], list[Rejection]]


@dataclass(frozen=True, slots=True)
class ReportItem:
    customer_id: str
    role: RoleChoice
    start_date: str = ""
    kind: KindChoice = ProductKind.UNSPECIFIED

    def row(self) -> Row:
        return (self.customer_id, role_to_row(self.role), self.start_date, kind_to_row(self.kind))


_PERSON = CustomerKind.PERSON
ROLE_OF_VALUE: dict[str, Role] = {role.value: role for role in Role}
KIND_OF_VALUE: dict[str, ProductKind] = {kind.value: kind for kind in ProductKind}


def kind_to_row(kind: KindChoice) -> str | int:
    return kind.number if isinstance(kind, UnknownNumber) else kind.value


def role_to_row(role: RoleChoice) -> str | int | None:
    if isinstance(role, Role):
        return role.value
    if isinstance(role, UnknownRole):
        return role.number
    return None


def role_of_row(value: str | int | None) -> RoleChoice:
    if value is None:
        return None
    if isinstance(value, int):
        return UnknownRole(value)
    return Role(value)


def validate_rows(
    rows: Sequence[Row], *, allow_synthetic: bool, today_ordinal: int
) -> ValidatedRows:
    """Checks every field of every row (customer ID, role, start date) in one pass:
    the parsed rows (None where rejected, so indexes stay the batch's) and every
    rejection, each naming its item's index. Plain tuples in and out: a bulk load runs
    this in a helper process, and tuples cross the process boundary cheaply."""
    today = date.fromordinal(today_ordinal)
    dates = _DateCache(today)
    parsed: list[ParsedRow | None] = []
    rejections: list[Rejection] = []
    for index, (raw_id, role_row, raw_start, kind_row) in enumerate(rows):
        found_before = len(rejections)
        born = None
        try:
            customer, born = parse_customer(raw_id, allow_synthetic=allow_synthetic, today=today)
        except InvalidValue as error:
            rejections.append(Rejection("customer_id", str(error), error.code, index))
            customer = None
        try:
            start = dates.ordinal(raw_start)
        except InvalidValue as error:
            rejections.append(Rejection("start_date", str(error), error.code, index))
        else:
            early = early_start(start, customer, born)
            if early is not None:
                rejections.append(Rejection("start_date", *early, index))
        role = ROLE_OF_VALUE.get(role_row) if isinstance(role_row, str) else role_of_row(role_row)
        role_fault = role_problem(role, customer)
        if role_fault is not None:
            rejections.append(Rejection("role", *role_fault, index))
        if kind_row not in KIND_OF_VALUE:
            rejections.append(
                Rejection("kind", f"has unknown value {kind_row}", "KIND_UNKNOWN", index)
            )
        if len(rejections) == found_before:
            assert customer is not None and role_row is not None
            parsed.append((customer.digits, customer.kind is _PERSON, role_row, start, kind_row))
        else:
            parsed.append(None)
    return parsed, rejections


def early_start(
    start: int, customer: CustomerId | None, born: date | None
) -> tuple[str, str] | None:
    """(reason, code) when a relationship would start before its customer was born, or
    (an organisation) before the earliest start the register takes."""
    if start >= _EARLIEST_START_ORDINAL and (born is None or start >= born.toordinal()):
        return None
    if born is not None and start < born.toordinal():
        return "is before the customer's date of birth", "START_BEFORE_BIRTH"
    if customer is not None:
        return f"is before {EARLIEST_START.isoformat()}, the earliest start", "START_TOO_EARLY"
    return None


def role_problem(role: RoleChoice, customer: CustomerId | None) -> tuple[str, str] | None:
    """(reason, code) when the role is missing, unknown or not possible for the customer."""
    if role is None:
        return _ROLE_REQUIRED, "ROLE_MISSING"
    if isinstance(role, UnknownRole):
        return f"has unknown value {role.number}", "ROLE_UNKNOWN"
    if (
        role is Role.DISPONENT
        and customer is not None
        and customer.kind is CustomerKind.ORGANISATION
    ):
        return _DISPONENT_MUST_BE_PERSON, "DISPONENT_NOT_A_PERSON"
    return None


def check_batch_size(field: str, items: Sequence[object]) -> None:
    """A unary call's batch: between 1 and ``MAX_ITEMS_PER_CALL`` items."""
    if not items:
        raise InvalidArgument.field(field, "must hold at least one item", "BATCH_EMPTY")
    if len(items) > MAX_ITEMS_PER_CALL:
        raise InvalidArgument.field(
            field,
            f"holds {len(items)} items; at most {MAX_ITEMS_PER_CALL} are allowed per call",
            "BATCH_TOO_LARGE",
        )


def check_chunk_size(items: Sequence[object]) -> None:
    """A bulk load's chunk: at most ``MAX_ITEMS_PER_CHUNK`` items."""
    if len(items) > MAX_ITEMS_PER_CHUNK:
        raise InvalidArgument.field(
            "relationships",
            f"holds {len(items)} items; at most {MAX_ITEMS_PER_CHUNK} per chunk",
            "BATCH_TOO_LARGE",
        )


def _attempt(
    rejections: list[Rejection],
    index: int,
    field: str,
    parser: Callable[..., _T],
    raw: str,
    **options: object,
) -> _T | None:
    try:
        return parser(raw, **options)
    except InvalidValue as error:
        rejections.append(Rejection(field, str(error), error.code, index))
        return None


class _DateCache:
    """Parses dates once per distinct text: a bulk load repeats few start dates."""

    def __init__(self, today: date) -> None:
        self._today = today
        self._parsed: dict[str, int | InvalidValue] = {}

    def ordinal(self, raw: str) -> int:
        """The date's day number (``date.toordinal``)."""
        parsed = self._parsed.get(raw)
        if parsed is None:
            try:
                parsed = parse_date(raw, self._today).toordinal()
            except InvalidValue as error:
                parsed = error
            self._parsed[raw] = parsed
        if isinstance(parsed, InvalidValue):
            raise parsed
        return parsed
