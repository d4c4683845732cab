"""InstitutionService: reporting and ending relationships, listing one's own."""

from __future__ import annotations

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.api.convert import (
    period_to_pb,
    request_record_to_pb,
    role_to_pb,
    roles_from_pb,
)
from kfr_grpc.api.interceptor import RequestContext
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.register.service import EndItem, Register, ReportItem


class InstitutionServicer(kfr_pb2_grpc.InstitutionServiceServicer):
    def __init__(self, register: Register, policy: AccessPolicy) -> None:
        self._register = register
        self._policy = policy

    def Report(self, request: pb.ReportRequest, context: RequestContext) -> pb.ReportResponse:
        institution = self._policy.acting_institution(
            context.caller, request.institution_org_number
        )
        roles = roles_from_pb([item.role for item in request.relationships], "relationships")
        items = [
            ReportItem(item.customer_id, role, item.start_date)
            for item, role in zip(request.relationships, roles, strict=True)
        ]
        result = self._register.report(institution, items)
        context.outcome.counts = {
            "registered": result.registered,
            "already_registered": result.already_registered,
        }
        return pb.ReportResponse(
            registered_count=result.registered,
            already_registered_count=result.already_registered,
        )

    def End(self, request: pb.EndRequest, context: RequestContext) -> pb.EndResponse:
        institution = self._policy.acting_institution(
            context.caller, request.institution_org_number
        )
        roles = roles_from_pb([item.role for item in request.endings], "endings")
        items = [
            EndItem(item.customer_id, role, item.end_date)
            for item, role in zip(request.endings, roles, strict=True)
        ]
        result = self._register.end(institution, items)
        context.outcome.counts = {"ended": result.ended, "already_ended": result.already_ended}
        return pb.EndResponse(ended_count=result.ended, already_ended_count=result.already_ended)

    def ListOwn(self, request: pb.ListOwnRequest, context: RequestContext) -> pb.ListOwnResponse:
        institution = self._policy.acting_institution(
            context.caller, request.institution_org_number
        )
        histories = self._register.list_own(institution, request.customer_id)
        context.outcome.counts = {"relationships": len(histories)}
        return pb.ListOwnResponse(
            relationships=[
                pb.OwnRelationship(
                    role=role_to_pb(history.role),
                    periods=[period_to_pb(period) for period in history.periods],
                )
                for history in histories
            ]
        )

    def GetRequestLog(
        self, request: pb.GetRequestLogRequest, context: RequestContext
    ) -> pb.GetRequestLogResponse:
        institution = self._policy.acting_institution(
            context.caller, request.institution_org_number
        )
        records = self._register.request_log(institution, request.correlation_id)
        return pb.GetRequestLogResponse(records=[request_record_to_pb(r) for r in records])
