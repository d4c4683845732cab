"""Protobuf <-> register types."""

from __future__ import annotations

from datetime import UTC, date

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.errors import FieldViolation, InvalidArgument
from kfr_grpc.register.model import Institution, Period, RequestRecord, Role
from kfr_grpc.register.values import InvalidValue

_ROLE_FROM_PB = {pb.ROLE_OWNER: Role.OWNER, pb.ROLE_DISPONENT: Role.DISPONENT}
_ROLE_TO_PB = {role: number for number, role in _ROLE_FROM_PB.items()}


def role_from_pb(number: int) -> Role | None:
    """The role of a request item (None for ROLE_UNSPECIFIED); unknown numbers are refused."""
    if number == pb.ROLE_UNSPECIFIED:
        return None
    role = _ROLE_FROM_PB.get(number)
    if role is None:
        raise InvalidValue(f"has unknown value {number}", "ROLE_UNKNOWN")
    return role


def roles_from_pb(numbers: list[int], field_of: str) -> list[Role | None]:
    """Roles of a request's items; ``field_of`` names the repeated field for errors."""
    roles, unknown = [], []
    for index, number in enumerate(numbers):
        try:
            roles.append(role_from_pb(number))
        except InvalidValue as error:
            unknown.append(FieldViolation(f"{field_of}[{index}].role", str(error), error.code))
    if unknown:
        raise InvalidArgument(unknown)
    return roles


def role_to_pb(role: Role) -> int:
    return _ROLE_TO_PB[role]


def date_to_pb(day: date | None) -> str:
    return day.isoformat() if day is not None else ""


def period_to_pb(period: Period) -> pb.Period:
    return pb.Period(start_date=date_to_pb(period.start), end_date=date_to_pb(period.end))


def request_record_to_pb(record: RequestRecord) -> pb.RequestLogRecord:
    return pb.RequestLogRecord(
        correlation_id=record.correlation_id,
        time=record.time.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        method=record.method,
        institution_org_number=record.institution,
        supplier_org_number=record.supplier or "",
        status=record.status,
        message=record.message,
        counts=record.counts,
        rejected=[
            pb.FieldViolation(field=v.field, reason=v.reason, code=v.code) for v in record.rejected
        ],
    )


def institution_to_pb(institution: Institution) -> pb.Institution:
    return pb.Institution(org_number=institution.org_number, name=institution.name)
