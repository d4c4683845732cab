"""Protobuf <-> register types. Every enum is mapped here explicitly, number by number:
the wire's numbers are the contract's, not the register's."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.register.bulk import BulkLoad
from kfr_grpc.register.model import (
    Institution,
    Period,
    RequestRecord,
    Role,
    RoleChoice,
    UnknownRole,
)
from kfr_grpc.register.reports import ReportItem, Row
from kfr_grpc.register.service import EndItem

_ROLE_FROM_PB = {pb.ROLE_OWNER: Role.OWNER, pb.ROLE_DISPONENT: Role.DISPONENT}
_ROLE_TO_PB = {role: number for number, role in _ROLE_FROM_PB.items()}


def role_from_pb(number: int) -> RoleChoice:
    """The role of a request item: None for ROLE_UNSPECIFIED; a number the contract does
    not define is passed on for validation to reject with the request's other faults."""
    if number == pb.ROLE_UNSPECIFIED:
        return None
    return _ROLE_FROM_PB.get(number) or UnknownRole(number)


def report_items(relationships: Iterable[pb.Relationship]) -> list[ReportItem]:
    return [
        ReportItem(item.customer_id, role_from_pb(item.role), item.start_date)
        for item in relationships
    ]


# A bulk load's rows carry a role as ``reports.role_to_row`` writes it: the role's value,
# None for ROLE_UNSPECIFIED, an unknown number as itself.
_ROLE_ROWS_FROM_PB: dict[int, str | None] = {
    pb.ROLE_UNSPECIFIED: None,
    **{number: role.value for number, role in _ROLE_FROM_PB.items()},
}


def report_rows(relationships: Iterable[pb.Relationship]) -> list[Row]:
    """A bulk load chunk's items as rows (``ReportItem.row()``), without the items."""
    roles = _ROLE_ROWS_FROM_PB
    return [
        (item.customer_id, roles.get(item.role, item.role), item.start_date)
        for item in relationships
    ]


def end_items(endings: Iterable[pb.Ending]) -> list[EndItem]:
    return [EndItem(item.customer_id, role_from_pb(item.role), item.end_date) for item in endings]


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
            pb.FieldViolation(field=r.field, reason=r.reason, code=r.code) for r in record.rejected
        ],
    )


def institution_to_pb(institution: Institution) -> pb.Institution:
    return pb.Institution(org_number=institution.org_number, name=institution.name)


def bulk_load_to_pb(load: BulkLoad) -> pb.ReportStreamResponse:
    return pb.ReportStreamResponse(
        accepted_count=load.accepted,
        registered_count=load.registered,
        already_registered_count=load.already_registered,
        rejected_count=load.rejected_count,
        rejected=[
            pb.RejectedItem(position=r.item, field=r.field, code=r.code, reason=r.reason)
            for r in load.rejections
        ],
        rejected_truncated=load.truncated,
        chunk_count=load.chunks,
    )
