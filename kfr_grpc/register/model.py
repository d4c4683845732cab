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


class ProductKind(enum.Enum):
    """What a relationship is about. The agreement tells accounts from loans and credit, and
    an agency's "primary owner" question depends on it (``ownership_of``)."""

    UNSPECIFIED = "unspecified"  # reported without a kind (all history from before kinds)
    PAYMENT_ACCOUNT = "payment_account"  # a payment or deposit account: holds funds, pays
    LOAN = "loan"  # a loan or credit
    OTHER = "other"  # safe-deposit box, custody, ...

    __hash__ = object.__hash__  # as Role's


KINDS_IN_ORDER = tuple(ProductKind)  # unspecified first, then as declared


class OwnershipType(enum.Enum):
    """What a Lookup says about the customer's ownership at one institution in a window."""

    PRIMARY_OWNER = "primary_owner"  # owner of a payment or deposit account
    NOT_PRIMARY_OWNER = "not_primary_owner"  # relationships, but no such ownership
    UNKNOWN = "unknown"  # an owner relationship of unspecified kind: cannot tell


class CorrectionAction(enum.Enum):
    """What a correction changed."""

    RETRACTED = "retracted"  # a period removed as if never reported (nothing of it kept)
    START_CORRECTED = "start_corrected"
    END_CORRECTED = "end_corrected"
    REOPENED = "reopened"  # an ended period made active again


class CorrectionReason(enum.Enum):
    """Why an institution corrected its data (a fixed list, for the operator's follow-up)."""

    REPORTED_IN_ERROR = "reported_in_error"  # the relationship never existed
    WRONG_CUSTOMER = "wrong_customer"  # reported under another customer's ID
    WRONG_ROLE = "wrong_role"
    WRONG_KIND = "wrong_kind"
    WRONG_DATE = "wrong_date"  # a start or end date was wrong
    ENDED_IN_ERROR = "ended_in_error"  # the relationship had not ended


@dataclass(frozen=True, slots=True)
class Correction:
    """A correction of one relationship's history, as its institution sees it in ListOwn.

    ``period_start`` names the corrected period by its start as it is now (None for a
    retraction: nothing of a retracted period is kept); ``previous`` is the date it
    replaced (start or end; None for a reopening or a retraction).
    """

    made_on: date
    action: CorrectionAction
    reason: CorrectionReason
    period_start: date | None = None
    previous: date | None = None


Corrections = tuple[Correction, ...]


@dataclass(frozen=True, slots=True)
class UnknownRole:
    """A role number the caller sent that the contract does not define (rejected by
    validation, with every other bad field of the request)."""

    number: int


RoleChoice = Role | UnknownRole | None  # None: not given


@dataclass(frozen=True, slots=True)
class UnknownNumber:
    """An enum number (a kind, a reason) the caller sent that the contract does not
    define: rejected by validation with the request's other faults."""

    number: int


KindChoice = ProductKind | UnknownNumber
ReasonChoice = CorrectionReason | UnknownNumber | None  # None: not given


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
    """One relationship (role and kind) a customer holds or held at one institution, with
    its periods and the corrections made to them."""

    institution: str
    role: Role
    kind: ProductKind
    periods: History
    corrections: Corrections = ()


@dataclass(frozen=True, slots=True)
class StoredHistory:
    """A relationship together with its customer, as maintenance jobs read them."""

    customer: CustomerId
    institution: str
    role: Role
    kind: ProductKind
    periods: History
    corrections: Corrections = ()


@dataclass(frozen=True, slots=True)
class Institution:
    org_number: str
    name: str
    registered_on: date
    closed_on: date | None = None  # the institution ceased to exist: no more reports
    collection_accounts: tuple[str, ...] = ()
    # The day of its first report (it joined the register); None before that. Stores from
    # before this was kept fall back on ``registered_on`` for an institution with data.
    first_report_on: date | None = None


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
class Participant:
    """An institution as agencies see it in the list of participants: a public list."""

    org_number: str
    name: str
    joined_on: date | None  # its first report (None: it has reported nothing yet)
    closed_on: date | None
    has_collection_accounts: bool


@dataclass(frozen=True, slots=True)
class InstitutionRelation:
    """A Lookup answer line: the customer's relationship with one institution in a window."""

    org_number: str
    name: str
    roles: tuple[Role, ...]
    active: bool
    ownership: OwnershipType = OwnershipType.NOT_PRIMARY_OWNER
    active_payment_account: bool = False


@dataclass(frozen=True, slots=True)
class ReportResult:
    registered: int
    already_registered: int

    def counts(self) -> dict[str, int]:
        return {"registered": self.registered, "already_registered": self.already_registered}


@dataclass(frozen=True, slots=True)
class LookupAnswer:
    """A Lookup's answer: the institutions, and the participants that joined after the
    window began (their data before joining is not in the register)."""

    institutions: tuple[InstitutionRelation, ...]
    joined_after_from_date: tuple[Participant, ...] = ()
    # Whether the window ends today: the REST contract's activeAccount holds only then.
    ends_today: bool = False


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
