"""The register's plain data types. No gRPC, no protobuf, no LMDB."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime

from kfr_grpc.errors import FieldViolation
from kfr_grpc.register.customer_ids import CustomerId


class Role(enum.Enum):
    """The customer's role in a relationship."""

    OWNER = 1
    DISPONENT = 2


@dataclass(frozen=True, slots=True)
class Period:
    """Days ``start`` to ``end``, both included; ``end`` is None while ongoing."""

    start: date
    end: date | None = None

    @property
    def is_active(self) -> bool:
        return self.end is None

    def overlaps(self, first: date, last: date) -> bool:
        return self.start <= last and (self.end is None or self.end >= first)

    def ongoing_at(self, day: date) -> bool:
        """True when the relationship had begun by ``day`` and had not ended on or before it."""
        return self.start <= day and (self.end is None or self.end > day)


# Every period of one (customer, institution, role), oldest first; only the last can be active.
History = tuple[Period, ...]


@dataclass(frozen=True, slots=True)
class RoleHistory:
    """One role a customer holds or held at one institution, with its periods."""

    institution: str
    role: Role
    periods: History


@dataclass(frozen=True, slots=True)
class StoredHistory:
    """A role history together with its customer, as maintenance jobs read them."""

    customer: CustomerId
    institution: str
    role: Role
    periods: History


@dataclass(frozen=True, slots=True)
class Institution:
    org_number: str
    name: str
    registered_on: date
    closed_on: date | None = None  # the institution ceased to exist: no more reports
    collection_accounts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What the register keeps about one InstitutionService call, for troubleshooting.

    Never a customer ID: rejected items are named by field path and position.
    """

    correlation_id: str
    time: datetime
    method: str
    institution: str
    supplier: str | None
    status: str
    message: str
    counts: dict[str, int] = field(default_factory=dict)
    rejected: tuple[FieldViolation, ...] = ()


@dataclass(frozen=True, slots=True)
class InstitutionRelation:
    """A Lookup answer line: the customer's relationship with one institution in a window."""

    org_number: str
    name: str
    roles: tuple[Role, ...]
    active: bool


@dataclass(frozen=True, slots=True)
class ReportResult:
    registered: int
    already_registered: int


@dataclass(frozen=True, slots=True)
class EndResult:
    ended: int
    already_ended: int
