"""LookupService: agencies asking where a customer has or had relationships. The rules
they go through are ``queries``'; this only translates protobuf."""

from __future__ import annotations

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.api.calls import RequestContext
from kfr_grpc.api.convert import (
    institution_to_pb,
    ownership_to_pb,
    participant_to_pb,
    role_to_pb,
)
from kfr_grpc.api.queries import AgencyQueries
from kfr_grpc.errors import InvalidArgument

_ROLE_FILTERS = {pb.ROLE_FILTER_UNSPECIFIED, pb.ROLE_FILTER_ALL, pb.ROLE_FILTER_OWNER_ONLY}


class LookupServicer(kfr_pb2_grpc.LookupServiceServicer):
    def __init__(self, queries: AgencyQueries) -> None:
        self._queries = queries

    async def Lookup(self, request: pb.LookupRequest, context: RequestContext) -> pb.LookupResponse:
        if request.role_filter not in _ROLE_FILTERS:
            raise InvalidArgument.field(
                "role_filter", f"has unknown value {request.role_filter}", "ROLE_FILTER_UNKNOWN"
            )
        answer = await self._queries.lookup(
            context.caller,
            customer_id=request.customer_id,
            from_date=request.from_date,
            to_date=request.to_date,
            owner_only=request.role_filter == pb.ROLE_FILTER_OWNER_ONLY,
            legal_mandate=request.legal_mandate,
            account_info_request_id=request.account_info_request_id,
            only_primary_owner=request.only_primary_owner,
        )
        return pb.LookupResponse(
            institutions=[
                pb.InstitutionRelation(
                    org_number=relation.org_number,
                    name=relation.name,
                    roles=[role_to_pb(role) for role in relation.roles],
                    active=relation.active,
                    ownership_type=ownership_to_pb(relation.ownership),
                    active_payment_account=relation.active_payment_account,
                )
                for relation in answer.institutions
            ],
            joined_after_from_date=[participant_to_pb(p) for p in answer.joined_after_from_date],
        )

    async def ListParticipants(
        self, request: pb.ListParticipantsRequest, context: RequestContext
    ) -> pb.ListParticipantsResponse:
        participants = await self._queries.participants(context.caller)
        return pb.ListParticipantsResponse(
            participants=[participant_to_pb(p) for p in participants]
        )

    async def LookupCollectionAccount(
        self, request: pb.LookupCollectionAccountRequest, context: RequestContext
    ) -> pb.LookupCollectionAccountResponse:
        institutions = await self._queries.collection_account(
            context.caller,
            account_number=request.account_number,
            legal_mandate=request.legal_mandate,
            account_info_request_id=request.account_info_request_id,
        )
        return pb.LookupCollectionAccountResponse(
            institutions=[institution_to_pb(i) for i in institutions]
        )
