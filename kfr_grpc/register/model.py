"""The register's plain data types. No gRPC, no protobuf, no storage engine.

Enums here are the register's own: the wire (``api.convert``) and the disk
(``store.codec``) each map them explicitly to their own numbers.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime

from kfr_grpc.errors import Rejection
from kfr_grpc.register.customer_ids import CustomerId


class Role(enum.Enum):
    """The customer's role in a relationship."""

    OWNER = "owner"
    DISPONENT = "disponent"

    # Members are singletons compared by identity: hashed by identity too, in C. (Enum's
    # own hash is a Python call; a bulk load hashes roles several times per item.)
    __hash__ = object.__hash__


ROLES_IN_ORDER = (Role.OWNER, Role.DISPONENT)  # how answers list them: owner first


def in_role_order(roles: set[Role] | tuple[Role, ...]) -> tuple[Role, ...]:
    return tuple(role for role in ROLES_IN_ORDER if role in roles)


@dataclass(frozen=True, slots=True)
class UnknownRole:
    """A role number the caller sent that the contract does not define (rejected by
    validation, with every other bad field of the request)."""

    number: int


RoleChoice = Role | UnknownRole | None  # None: not given


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


def is_active(history: History) -> bool:
    return bool(history) and history[-1].end is None


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
    rejected: tuple[Rejection, ...] = ()


# Rejected items a request record keeps (the count of all of them is in the message).
MAX_REJECTIONS_RECORDED = 1000


@dataclass(frozen=True, slots=True)
class CallInfo:
    """An institution's call as its request record names it: under which correlation-id,
    which method, for which institution and through which vendor. The register writes
    the record of a call it carried out in the same transaction as the call's changes."""

    correlation_id: str
    method: str
    institution: str
    supplier: str | None = None

    @classmethod
    def new(cls, institution: str, method: str = "register") -> CallInfo:
        """A call under a fresh correlation-id (operator tools, tests)."""
        return cls(str(uuid.uuid4()), method, institution)

    def record(
        self,
        time: datetime,
        status: str,
        message: str = "",
        *,
        counts: dict[str, int] | None = None,
        rejected: tuple[Rejection, ...] = (),
    ) -> RequestRecord:
        return RequestRecord(
            correlation_id=self.correlation_id,
            time=time,
            method=self.method,
            institution=self.institution,
            supplier=self.supplier,
            status=status,
            message=message,
            counts=dict(counts or {}),
            rejected=rejected[:MAX_REJECTIONS_RECORDED],
        )


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

    def counts(self) -> dict[str, int]:
        return {"registered": self.registered, "already_registered": self.already_registered}


@dataclass(frozen=True, slots=True)
class EndResult:
    ended: int
    already_ended: int

    def counts(self) -> dict[str, int]:
        return {"ended": self.ended, "already_ended": self.already_ended}


@dataclass(frozen=True, slots=True)
class LookupCount:
    """Agency lookups on one day under one mandate, by outcome."""

    day: date
    agency: str
    mandate: str
    by_status: dict[str, int]
