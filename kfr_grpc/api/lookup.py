"""LookupService: agencies asking where a customer has or had relationships.

Lookups only read the store, and an LMDB read of one customer's records is faster than
handing it to a thread and back: they run on the event loop (README, Performance). In
cluster mode a linearizable read first asks etcd how far the log goes: then they run in
a store thread."""

from __future__ import annotations

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.api.blocking import Blocking
from kfr_grpc.api.calls import RequestContext
from kfr_grpc.api.convert import (
    institution_to_pb,
    ownership_to_pb,
    participant_to_pb,
    role_to_pb,
)
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.errors import InvalidArgument
from kfr_grpc.register.enumeration import EnumerationWatch
from kfr_grpc.register.service import Register

_ROLE_FILTERS = {pb.ROLE_FILTER_UNSPECIFIED, pb.ROLE_FILTER_ALL, pb.ROLE_FILTER_OWNER_ONLY}


class LookupServicer(kfr_pb2_grpc.LookupServiceServicer):
    def __init__(
        self,
        register: Register,
        policy: AccessPolicy,
        blocking: Blocking,
        watch: EnumerationWatch,
    ) -> None:
        self._register = register
        self._policy = policy
        self._blocking = blocking
        self._watch = watch

    async def Lookup(self, request: pb.LookupRequest, context: RequestContext) -> pb.LookupResponse:
        """Answered on the event loop: the store read takes tens of microseconds."""
        agency = self._policy.agency(context.caller)
        if request.role_filter not in _ROLE_FILTERS:
            raise InvalidArgument.field(
                "role_filter", f"has unknown value {request.role_filter}", "ROLE_FILTER_UNKNOWN"
            )
        query = self._register.parse_lookup(
            customer_id=request.customer_id,
            from_date=request.from_date,
            to_date=request.to_date,
            owner_only=agency.owner_only or request.role_filter == pb.ROLE_FILTER_OWNER_ONLY,
            legal_mandate=request.legal_mandate,
            account_info_request_id=request.account_info_request_id,
            only_primary_owner=request.only_primary_owner,
        )
        self._policy.require_mandate(agency, query.legal_mandate)
        if self._register.reads_wait:
            answer = await self._blocking.run(self._register.lookup, query)
        else:
            answer = self._register.lookup(query)
        self._watch.record(agency.org_number, found=bool(answer.institutions))
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
        """Agencies only (public data, but the lookup service's callers are agencies)."""
        self._policy.agency(context.caller)
        if self._register.reads_wait:
            participants = await self._blocking.run(self._register.participants)
        else:
            participants = self._register.participants()
        return pb.ListParticipantsResponse(
            participants=[participant_to_pb(p) for p in participants]
        )

    async def LookupCollectionAccount(
        self, request: pb.LookupCollectionAccountRequest, context: RequestContext
    ) -> pb.LookupCollectionAccountResponse:
        agency = self._policy.agency(context.caller)
        query = self._register.parse_collection_account_lookup(
            account_number=request.account_number,
            legal_mandate=request.legal_mandate,
            account_info_request_id=request.account_info_request_id,
        )
        self._policy.require_mandate(agency, query.legal_mandate)
        if self._register.reads_wait:
            institutions = await self._blocking.run(self._register.lookup_collection_account, query)
        else:
            institutions = self._register.lookup_collection_account(query)
        self._watch.record(agency.org_number, found=bool(institutions))
        return pb.LookupCollectionAccountResponse(
            institutions=[institution_to_pb(i) for i in institutions]
        )
