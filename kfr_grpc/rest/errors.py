"""The one place where errors become the REST contract's answers: an HTTP status and a
body ``{"errorCode", "errorMessage", "timestamp"}``.

The contract has two families of codes: institutions' (``KFR-…``) and agencies'
(``ERR-…``). A ``KfrError`` names its canonical status; a rejected field (by the name the
register gives it) picks the contract's code for it (an invalid customer ID, a date). The
message names headers, query parameters and path parts as the contract spells them, and
never a value. Codes marked "ours" below are additions (the contract has no code for
them); the OpenAPI document and the README list them.
"""

from __future__ import annotations

import enum
import logging
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime

from kfr_grpc.errors import CorruptRecord, KfrError, MessageTooLarge, RateLimited, Rejection

log = logging.getLogger("kfr.requests")


class Family(enum.Enum):
    INSTITUTION = "institution"
    AGENCY = "agency"


@dataclass(frozen=True)
class _Codes:
    unauthenticated: str
    no_access: str  # the token lacks the scope
    not_allowed: str  # may not act for that org number / under that mandate
    invalid: str
    customer: str
    date: str
    account: str
    relationship_type: str
    not_found: str
    internal: str
    busy: str


_CODES = {
    Family.INSTITUTION: _Codes(
        unauthenticated="KFR-001", no_access="KFR-002", not_allowed="KFR-003",
        invalid="KFR-004", customer="KFR-005", date="KFR-010", account="KFR-004",
        relationship_type="KFR-009", not_found="KFR-008", internal="KFR-007",
        busy="KFR-011",  # ours
    ),
    Family.AGENCY: _Codes(
        unauthenticated="ERR-001", no_access="ERR-001", not_allowed="ERR-001",
        invalid="ERR-005",  # ours
        customer="ERR-002", date="ERR-003", account="ERR-004",
        relationship_type="ERR-005",  # (agencies name none)
        not_found="ERR-006",  # ours
        internal="ERR-007",  # ours
        busy="ERR-008",  # ours
    ),
}  # fmt: skip

# The register's field names as the contract's requests spell them.
_WIRE_NAMES = {
    "customer_id": "header CustomerID",
    "from_date": "query fromDate",
    "to_date": "query toDate",
    "legal_mandate": "header Legal-Mandate",
    "account_info_request_id": "header AccountInfoRequestID",
    "account_number": "header AccountID",
    "start_date": "start date",
    "relationshipType": "path type",
    "customer_type": "form field customer_type",
    "onlyPrimaryOwner": "query onlyPrimaryOwner",
}
_LISTED = 20  # rejections a message spells out
_DATE_FIELDS = {"from_date", "to_date", "start_date", "end_date"}
_SAME_DAY = {"START_ON_PREVIOUS_START", "START_ON_NEXT_START"}
_SAME_DAY_MESSAGE = (
    "this customer's relationship began and ended today; a relationship can begin again "
    "from tomorrow (or reopen the period over gRPC's Correct)"
)
_STATUS_OF = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "DEADLINE_EXCEEDED": 408,
    "CANCELLED": 400,  # (the client went away: nobody reads it)
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "UNAVAILABLE": 503,
}


class ScopeMissing(KfrError):
    """The token lacks the scope the path requires (the contract's "no access")."""

    status = "PERMISSION_DENIED"


@dataclass(frozen=True)
class RestRefusal:
    """How a call ended in error: the HTTP status, the contract's code, the message, and
    the canonical status name the log and the request log keep."""

    http_status: int
    code: str
    message: str
    status: str
    rejections: tuple[Rejection, ...] = ()
    retry_after: float | None = None

    def body(self, now: datetime) -> dict[str, str]:
        utc = now.astimezone(UTC)
        timestamp = utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"errorCode": self.code, "errorMessage": self.message, "timestamp": timestamp}


def refusal_for(error: BaseException, family: Family, correlation_id: str) -> RestRefusal:
    """What the caller is told about ``error``."""
    codes = _CODES[family]
    if not isinstance(error, KfrError) or isinstance(error, CorruptRecord):
        # Its type and where, not its message: a library's message may quote the request.
        log.error(
            "unexpected error %s correlation_id=%s\n%s", type(error).__name__, correlation_id,
            "".join(traceback.format_tb(error.__traceback__)),
        )  # fmt: skip
        return _internal(codes, correlation_id)
    status = error.status
    if status == "INVALID_ARGUMENT" and error.rejections:
        return _invalid(codes, error.rejections)
    if status == "RESOURCE_EXHAUSTED":
        return _exhausted(codes, error)
    if status == "UNAVAILABLE":
        return RestRefusal(503, codes.internal, str(error), status, retry_after=1.0)
    if status in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        code = (
            codes.unauthenticated if status == "UNAUTHENTICATED"
            else codes.no_access if isinstance(error, ScopeMissing)
            else codes.not_allowed
        )  # fmt: skip
        return RestRefusal(_STATUS_OF[status], code, str(error), status)
    if status == "NOT_FOUND":
        return RestRefusal(404, codes.not_found, _message(error), status, error.rejections)
    if status in _STATUS_OF:
        return RestRefusal(_STATUS_OF[status], codes.invalid, _message(error), status)
    log.error("%s correlation_id=%s: %s", type(error).__name__, correlation_id, error)
    return _internal(codes, correlation_id)


def plain_refusal(http_status: int, family: Family, message: str) -> RestRefusal:
    """A request the HTTP layer refused (no such path or method, a body too large)."""
    return RestRefusal(http_status, _CODES[family].invalid, message, "INVALID_ARGUMENT")


def _internal(codes: _Codes, correlation_id: str) -> RestRefusal:
    return RestRefusal(
        500, codes.internal, f"internal error; quote CorrelationID {correlation_id}", "INTERNAL"
    )


def _exhausted(codes: _Codes, error: KfrError) -> RestRefusal:
    status = "RESOURCE_EXHAUSTED"
    if isinstance(error, RateLimited):
        return RestRefusal(429, codes.busy, str(error), status, retry_after=error.retry_after)
    if isinstance(error, MessageTooLarge):
        return RestRefusal(413, codes.invalid, str(error), status)
    return RestRefusal(503, codes.busy, str(error), status, retry_after=1.0)


def _invalid(codes: _Codes, rejections: tuple[Rejection, ...]) -> RestRefusal:
    """400, with the code of the first rejected field the contract names a code for."""
    first = rejections[0]
    field = _field(first)
    if first.code in _SAME_DAY:  # (a report's start: today, the day one began already)
        return RestRefusal(409, codes.invalid, _SAME_DAY_MESSAGE, "FAILED_PRECONDITION")
    code = (
        codes.relationship_type if first.code == "RELATIONSHIP_TYPE_UNKNOWN"
        else codes.customer if field == "customer_id"
        else codes.date if field in _DATE_FIELDS
        else codes.account if field == "account_number"
        else codes.invalid
    )  # fmt: skip
    return RestRefusal(400, code, _described(rejections), "INVALID_ARGUMENT", rejections)


def _message(error: KfrError) -> str:
    return _described(error.rejections) if error.rejections else str(error)


def _described(rejections: tuple[Rejection, ...]) -> str:
    """The rejections by the names the contract's requests use, the first 20 spelled out."""
    shown = "; ".join(f"{_wire_name(r)}: {r.reason}" for r in rejections[:_LISTED])
    hidden = len(rejections) - _LISTED
    return shown + (f"; and {hidden} more" if hidden > 0 else "")


def _field(rejection: Rejection) -> str:
    """The field itself: ``relationships[0].customer_id`` -> ``customer_id``."""
    return rejection.field.rsplit(".", 1)[-1]


def _wire_name(rejection: Rejection) -> str:
    field = _field(rejection)
    return _WIRE_NAMES.get(field, field)
