"""Validating reported relationships: the CPU-heavy half of reporting, kept free of the
store so that a bulk load can run it in another process while the store writes.

``validate_reports`` checks every field of every item (customer ID with python-stdnum,
role, start date) in one pass and returns the parsed items with every rejection found.
``validate_rows`` does the same on plain tuples, for crossing a process boundary cheaply
(pickling dataclasses costs more than the validation saves).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from kfr_grpc.errors import InvalidArgument, Rejection
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind, parse_customer_id
from kfr_grpc.register.model import Role, RoleChoice, UnknownRole
from kfr_grpc.register.values import InvalidValue, parse_date

_T = TypeVar("_T")
_ROLE_REQUIRED = "is required: ROLE_OWNER or ROLE_DISPONENT"
_DISPONENT_MUST_BE_PERSON = (
    "ROLE_DISPONENT needs a person (fødselsnummer or D-number), not an organisation number"
)

MAX_ITEMS_PER_CALL = 1000
# The write transaction of a chunk is held in memory until it commits: this bounds the
# server's memory whatever a client sends (see README, Performance).
MAX_ITEMS_PER_CHUNK = 20_000

# (customer_id, role as row value, start_date) and (digits, is_person, role value, start
# ordinal): the role's row value is its enum value, an unknown number, or None.
Row = tuple[str, str | int | None, str]
ParsedRow = tuple[str, bool, str, int]
ValidatedRows = tuple[list[ParsedRow | None], list[Rejection]]


@dataclass(frozen=True, slots=True)
class ReportItem:
    customer_id: str
    role: RoleChoice
    start_date: str = ""

    def row(self) -> Row:
        return (self.customer_id, role_to_row(self.role), self.start_date)


@dataclass(frozen=True, slots=True)
class ParsedReport:
    customer: CustomerId
    role: Role
    start: date


@dataclass(frozen=True, slots=True)
class ValidatedReports:
    """Each item parsed (None where rejected, so indexes stay those of the batch), and
    every rejection, each naming its item's index."""

    parsed: list[ParsedReport | None]
    rejections: list[Rejection]

    @classmethod
    def from_rows(cls, rows: ValidatedRows) -> ValidatedReports:
        parsed_rows, rejections = rows
        days: dict[int, date] = {}
        parsed = [
            None
            if row is None
            else ParsedReport(
                CustomerId(row[0], _KINDS[row[1]]),
                Role(row[2]),
                days.get(row[3]) or days.setdefault(row[3], date.fromordinal(row[3])),
            )
            for row in parsed_rows
        ]
        return cls(parsed, rejections)


_KINDS = {True: CustomerKind.PERSON, False: CustomerKind.ORGANISATION}


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
    """``validate_reports`` on plain tuples, returning plain tuples."""
    items = [ReportItem(c, role_of_row(r), d) for c, r, d in rows]
    result = validate_reports(
        items, allow_synthetic=allow_synthetic, today=date.fromordinal(today_ordinal)
    )
    parsed = [
        None
        if p is None
        else (
            p.customer.digits,
            p.customer.kind is CustomerKind.PERSON,
            p.role.value,
            p.start.toordinal(),
        )
        for p in result.parsed
    ]
    return parsed, result.rejections


def validate_reports(
    items: Sequence[ReportItem], *, allow_synthetic: bool, today: date
) -> ValidatedReports:
    dates = _DateCache(today)
    parsed: list[ParsedReport | None] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(items):
        found_before = len(rejections)
        customer = _attempt(
            rejections, index, "customer_id", parse_customer_id, item.customer_id,
            allow_synthetic=allow_synthetic, today=today,
        )  # fmt: skip
        start = _attempt(rejections, index, "start_date", dates.parse, item.start_date)
        role_problem = _role_problem(item.role, customer)
        if role_problem is not None:
            rejections.append(Rejection("role", *role_problem, index))
        valid = len(rejections) == found_before
        parsed.append(ParsedReport(customer, item.role, start) if valid else None)
    return ValidatedReports(parsed, rejections)


def _role_problem(role: RoleChoice, customer: CustomerId | None) -> tuple[str, str] | None:
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
        self._parsed: dict[str, date | InvalidValue] = {}

    def parse(self, raw: str) -> date:
        parsed = self._parsed.get(raw)
        if parsed is None:
            try:
                parsed = parse_date(raw, self._today)
            except InvalidValue as error:
                parsed = error
            self._parsed[raw] = parsed
        if isinstance(parsed, InvalidValue):
            raise parsed
        return parsed
