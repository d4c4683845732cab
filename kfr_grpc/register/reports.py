"""Validating reported relationships: the CPU-heavy half of reporting, kept free of the
store so that a bulk load can run it in another process while the store writes.

``validate_reports`` checks every item (customer ID with python-stdnum, role, start date)
and returns the parsed items with every problem found. ``validate_rows`` does the same
on plain tuples, for crossing a process boundary cheaply (pickling dataclasses costs
more than the validation saves).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from kfr_grpc.errors import FieldViolation
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind, parse_customer_id
from kfr_grpc.register.model import Role
from kfr_grpc.register.values import InvalidValue, parse_date

_T = TypeVar("_T")
_ROLE_REQUIRED = "is required: ROLE_OWNER or ROLE_DISPONENT"
_DISPONENT_MUST_BE_PERSON = (
    "ROLE_DISPONENT needs a person (fødselsnummer or D-number), not an organisation number"
)

# (customer_id, role value or 0, start_date) and (digits, is_person, role, start ordinal)
Row = tuple[str, int, str]
ParsedRow = tuple[str, bool, int, int]
ProblemRow = tuple[int, str, str, str]


@dataclass(frozen=True, slots=True)
class ReportItem:
    customer_id: str
    role: Role | None
    start_date: str = ""


@dataclass(frozen=True, slots=True)
class ItemProblem:
    """Why one item of a batch was not applied (its index in the batch, never its value)."""

    index: int
    field: str  # customer_id, role, start_date
    reason: str
    code: str

    def violation(self, list_name: str) -> FieldViolation:
        return FieldViolation(f"{list_name}[{self.index}].{self.field}", self.reason, self.code)


@dataclass(frozen=True, slots=True)
class ParsedReport:
    customer: CustomerId
    role: Role
    start: date


@dataclass(frozen=True, slots=True)
class ValidatedReports:
    """Each item parsed (None where invalid, so indexes stay those of the batch), and
    every problem found."""

    parsed: list[ParsedReport | None]
    problems: list[ItemProblem]

    @classmethod
    def from_rows(cls, rows: tuple[list[ParsedRow | None], list[ProblemRow]]) -> ValidatedReports:
        parsed_rows, problem_rows = rows
        days: dict[int, date] = {}
        parsed = [
            None
            if row is None
            else ParsedReport(
                CustomerId(row[0], _KINDS[row[1]]),
                _ROLES[row[2]],
                days.get(row[3]) or days.setdefault(row[3], date.fromordinal(row[3])),
            )
            for row in parsed_rows
        ]
        return cls(parsed, [ItemProblem(*row) for row in problem_rows])


_KINDS = {True: CustomerKind.PERSON, False: CustomerKind.ORGANISATION}
_ROLES = {0: None, Role.OWNER.value: Role.OWNER, Role.DISPONENT.value: Role.DISPONENT}


def validate_rows(
    rows: Sequence[Row], *, allow_synthetic: bool, today_ordinal: int
) -> tuple[list[ParsedRow | None], list[ProblemRow]]:
    """``validate_reports`` on plain tuples (role 0 for none), returning plain tuples."""
    items = [ReportItem(c, _ROLES[r], d) for c, r, d in rows]
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
    return parsed, [(q.index, q.field, q.reason, q.code) for q in result.problems]


def validate_reports(
    items: Sequence[ReportItem], *, allow_synthetic: bool, today: date
) -> ValidatedReports:
    dates = _DateCache(today)
    parsed: list[ParsedReport | None] = []
    problems: list[ItemProblem] = []
    for index, item in enumerate(items):
        found_before = len(problems)
        customer = _attempt(
            problems, index, "customer_id", parse_customer_id, item.customer_id,
            allow_synthetic=allow_synthetic, today=today,
        )  # fmt: skip
        start = _attempt(problems, index, "start_date", dates.parse, item.start_date)
        if item.role is None:
            problems.append(ItemProblem(index, "role", _ROLE_REQUIRED, "ROLE_MISSING"))
        elif (
            item.role is Role.DISPONENT
            and customer is not None
            and customer.kind is CustomerKind.ORGANISATION
        ):
            problems.append(
                ItemProblem(index, "role", _DISPONENT_MUST_BE_PERSON, "DISPONENT_NOT_A_PERSON")
            )
        valid = len(problems) == found_before
        parsed.append(ParsedReport(customer, item.role, start) if valid else None)
    return ValidatedReports(parsed, problems)


def _attempt(
    problems: list[ItemProblem],
    index: int,
    field: str,
    parser: Callable[..., _T],
    raw: str,
    **options: object,
) -> _T | None:
    try:
        return parser(raw, **options)
    except InvalidValue as error:
        problems.append(ItemProblem(index, field, str(error), error.code))
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
