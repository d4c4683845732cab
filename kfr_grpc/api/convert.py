"""Protobuf <-> register types. Every enum is mapped here explicitly, number by number:
the wire's numbers are the contract's, not the register's."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.errors import Rejection
from kfr_grpc.register.bulk import BulkLoad
from kfr_grpc.register.corrections import CorrectItem, RetractItem
from kfr_grpc.register.model import (
    Correction,
    CorrectionAction,
    CorrectionReason,
    Institution,
    KindChoice,
    OwnershipType,
    Participant,
    Period,
    ProductKind,
    ReasonChoice,
    RequestRecord,
    Role,
    RoleChoice,
    RoleHistory,
    UnknownNumber,
    UnknownRole,
)
from kfr_grpc.register.reconcile import Reconciliation
from kfr_grpc.register.reports import ReportItem, Row
from kfr_grpc.register.service import EndItem

_ROLE_FROM_PB = {pb.ROLE_OWNER: Role.OWNER, pb.ROLE_DISPONENT: Role.DISPONENT}
_ROLE_TO_PB = {role: number for number, role in _ROLE_FROM_PB.items()}
_KIND_FROM_PB = {
    pb.PRODUCT_KIND_UNSPECIFIED: ProductKind.UNSPECIFIED,
    pb.PRODUCT_KIND_PAYMENT_ACCOUNT: ProductKind.PAYMENT_ACCOUNT,
    pb.PRODUCT_KIND_LOAN: ProductKind.LOAN,
    pb.PRODUCT_KIND_OTHER: ProductKind.OTHER,
}
_KIND_TO_PB = {kind: number for number, kind in _KIND_FROM_PB.items()}
_OWNERSHIP_TO_PB = {
    OwnershipType.PRIMARY_OWNER: pb.OWNERSHIP_TYPE_PRIMARY_OWNER,
    OwnershipType.NOT_PRIMARY_OWNER: pb.OWNERSHIP_TYPE_NOT_PRIMARY_OWNER,
    OwnershipType.UNKNOWN: pb.OWNERSHIP_TYPE_UNKNOWN,
}
_REASON_FROM_PB = {
    pb.CORRECTION_REASON_REPORTED_IN_ERROR: CorrectionReason.REPORTED_IN_ERROR,
    pb.CORRECTION_REASON_WRONG_CUSTOMER: CorrectionReason.WRONG_CUSTOMER,
    pb.CORRECTION_REASON_WRONG_ROLE: CorrectionReason.WRONG_ROLE,
    pb.CORRECTION_REASON_WRONG_KIND: CorrectionReason.WRONG_KIND,
    pb.CORRECTION_REASON_WRONG_DATE: CorrectionReason.WRONG_DATE,
    pb.CORRECTION_REASON_ENDED_IN_ERROR: CorrectionReason.ENDED_IN_ERROR,
}
_REASON_TO_PB = {reason: number for number, reason in _REASON_FROM_PB.items()}
_ACTION_TO_PB = {
    CorrectionAction.RETRACTED: pb.CORRECTION_ACTION_RETRACTED,
    CorrectionAction.START_CORRECTED: pb.CORRECTION_ACTION_START_CORRECTED,
    CorrectionAction.END_CORRECTED: pb.CORRECTION_ACTION_END_CORRECTED,
    CorrectionAction.REOPENED: pb.CORRECTION_ACTION_REOPENED,
}
# A bulk load's rows carry a kind as its value, an unknown number as itself.
_KIND_ROWS_FROM_PB = {number: kind.value for number, kind in _KIND_FROM_PB.items()}


def role_from_pb(number: int) -> RoleChoice:
    """The role of a request item: None for ROLE_UNSPECIFIED; a number the contract does
    not define is passed on for validation to reject with the request's other faults."""
    if number == pb.ROLE_UNSPECIFIED:
        return None
    return _ROLE_FROM_PB.get(number) or UnknownRole(number)


def kind_from_pb(number: int) -> KindChoice:
    return _KIND_FROM_PB.get(number) or UnknownNumber(number)


def kind_to_pb(kind: ProductKind) -> int:
    return _KIND_TO_PB[kind]


def reason_from_pb(number: int) -> ReasonChoice:
    if number == pb.CORRECTION_REASON_UNSPECIFIED:
        return None
    return _REASON_FROM_PB.get(number) or UnknownNumber(number)


def report_items(relationships: Iterable[pb.Relationship]) -> list[ReportItem]:
    return [
        ReportItem(
            item.customer_id, role_from_pb(item.role), item.start_date, kind_from_pb(item.kind)
        )
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
    roles, kinds = _ROLE_ROWS_FROM_PB, _KIND_ROWS_FROM_PB
    return [
        (
            item.customer_id,
            roles.get(item.role, item.role),
            item.start_date,
            kinds.get(item.kind, item.kind),
        )
        for item in relationships
    ]


def end_items(endings: Iterable[pb.Ending]) -> list[EndItem]:
    return [
        EndItem(
            item.customer_id,
            role_from_pb(item.role),
            item.end_date,
            None if item.kind == pb.PRODUCT_KIND_UNSPECIFIED else kind_from_pb(item.kind),
        )
        for item in endings
    ]


def retract_items(retractions: Iterable[pb.Retraction]) -> list[RetractItem]:
    return [
        RetractItem(
            item.customer_id,
            role_from_pb(item.role),
            kind_from_pb(item.kind),
            item.start_date,
            reason_from_pb(item.reason),
        )
        for item in retractions
    ]


_CHANGE_OF_FIELD = {
    "new_start_date": CorrectionAction.START_CORRECTED,
    "new_end_date": CorrectionAction.END_CORRECTED,
}


def correct_items(corrections: Iterable[pb.PeriodCorrection]) -> list[CorrectItem]:
    items = []
    for item in corrections:
        field = item.WhichOneof("change")
        change = _CHANGE_OF_FIELD.get(field) if field else None
        new_date = getattr(item, field) if change is not None else ""
        if field == "reopen":
            change = CorrectionAction.REOPENED if item.reopen else None
        items.append(
            CorrectItem(
                item.customer_id,
                role_from_pb(item.role),
                kind_from_pb(item.kind),
                item.start_date,
                change,
                new_date,
                reason_from_pb(item.reason),
            )
        )
    return items


def own_relationship_to_pb(history: RoleHistory) -> pb.OwnRelationship:
    return pb.OwnRelationship(
        role=role_to_pb(history.role),
        kind=kind_to_pb(history.kind),
        periods=[period_to_pb(period) for period in history.periods],
        corrections=[correction_to_pb(c) for c in history.corrections],
    )


def correction_to_pb(correction: Correction) -> pb.CorrectionNote:
    return pb.CorrectionNote(
        made_date=date_to_pb(correction.made_on),
        action=_ACTION_TO_PB[correction.action],
        reason=_REASON_TO_PB[correction.reason],
        period_start_date=date_to_pb(correction.period_start),
        previous_date=date_to_pb(correction.previous),
    )


def ownership_to_pb(ownership: OwnershipType) -> int:
    return _OWNERSHIP_TO_PB[ownership]


def participant_to_pb(participant: Participant) -> pb.Participant:
    return pb.Participant(
        org_number=participant.org_number,
        name=participant.name,
        joined_date=date_to_pb(participant.joined_on),
        closed_date=date_to_pb(participant.closed_on),
        has_collection_accounts=participant.has_collection_accounts,
    )


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
        rejected=rejected_items_to_pb(load.rejections),
        rejected_truncated=load.truncated,
        chunk_count=load.chunks,
    )


def reconciliation_to_pb(reconciliation: Reconciliation) -> pb.ReconcileResponse:
    return pb.ReconcileResponse(
        matched_count=reconciliation.matched,
        missing_count=reconciliation.missing_count,
        missing_positions=reconciliation.missing_positions,
        missing_truncated=reconciliation.missing_truncated,
        not_sent_count=reconciliation.not_sent,
        rejected_count=reconciliation.rejected_count,
        rejected=rejected_items_to_pb(reconciliation.rejections),
        rejected_truncated=reconciliation.rejected_truncated,
        registered_count=reconciliation.registered,
        ended_count=reconciliation.ended,
        chunk_count=reconciliation.chunks,
        applied=reconciliation.apply,
        ending_withheld=reconciliation.ending_withheld,
    )


def rejected_items_to_pb(rejections: Iterable[Rejection]) -> list[pb.RejectedItem]:
    """Rejected stream items, named by their position (``Rejection.item``)."""
    return [
        pb.RejectedItem(position=r.item, field=r.field, code=r.code, reason=r.reason)
        for r in rejections
    ]
