"""What an agency's questions go through, whichever wire they came over (gRPC's
LookupService or the REST contract): the access policy (agency, owner-only, mandate),
the register's answer, and the enumeration watch. The servicers only translate.

Lookups only read the store, and an LMDB read of one customer's records is faster than
handing it to a thread and back: they run on the event loop (README, Performance). In
cluster mode a linearizable read first asks etcd how far the log goes: then they run in
a store thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from kfr_grpc.api.blocking import Blocking
from kfr_grpc.auth.authenticator import Caller
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.register.enumeration import EnumerationWatch
from kfr_grpc.register.model import Institution, LookupAnswer, Participant
from kfr_grpc.register.service import Register

_T = TypeVar("_T")


class AgencyQueries:
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

    async def lookup(
        self,
        caller: Caller,
        *,
        customer_id: str,
        from_date: str,
        to_date: str,
        owner_only: bool,
        legal_mandate: str,
        account_info_request_id: str,
        only_primary_owner: bool,
    ) -> LookupAnswer:
        """Where the customer has or had relationships; ``owner_only`` as asked (an
        owner-only agency gets owner relationships whatever it asks)."""
        agency = self._policy.agency(caller)
        query = self._register.parse_lookup(
            customer_id=customer_id,
            from_date=from_date,
            to_date=to_date,
            owner_only=agency.owner_only or owner_only,
            legal_mandate=legal_mandate,
            account_info_request_id=account_info_request_id,
            only_primary_owner=only_primary_owner,
        )
        self._policy.require_mandate(agency, query.legal_mandate)
        answer = await self._read(lambda: self._register.lookup(query))
        self._watch.record(agency.org_number, found=bool(answer.institutions))
        return answer

    async def collection_account(
        self,
        caller: Caller,
        *,
        account_number: str,
        legal_mandate: str,
        account_info_request_id: str,
    ) -> list[Institution]:
        """The institution using an account number as a collection account, if any."""
        agency = self._policy.agency(caller)
        query = self._register.parse_collection_account_lookup(
            account_number=account_number,
            legal_mandate=legal_mandate,
            account_info_request_id=account_info_request_id,
        )
        self._policy.require_mandate(agency, query.legal_mandate)
        institutions = await self._read(lambda: self._register.lookup_collection_account(query))
        self._watch.record(agency.org_number, found=bool(institutions))
        return institutions

    async def participants(self, caller: Caller) -> tuple[Participant, ...]:
        """Agencies only (public data, but the lookup service's callers are agencies)."""
        self._policy.agency(caller)
        return await self._read(self._register.participants)

    async def _read(self, read: Callable[[], _T]) -> _T:
        if self._register.reads_wait:
            return await self._blocking.run(read)
        return read()
