"""The contract's paths (``../shared/DSOP_REST.md``; README, REST): each translates the
request's path, headers and query to the register's plain values, calls the same code as
the gRPC servicers, and writes the contract's JSON. No rule lives here.

Customer IDs and account numbers travel in headers, never in paths or query strings;
dates in the query. A query parameter the path does not take is refused (unnamed: a
mistyped parameter could be an ID).
"""

from __future__ import annotations

import json
from importlib import resources

from aiohttp import web

from kfr_grpc.api.blocking import Blocking
from kfr_grpc.api.queries import AgencyQueries
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.errors import InvalidArgument, NotFound, Rejection
from kfr_grpc.register.model import CallInfo, InstitutionRelation, LookupAnswer, OwnershipType, Role
from kfr_grpc.register.service import EndItem, Register, ReportItem
from kfr_grpc.rest import BATCH_PATH, INSTITUTION_PATH
from kfr_grpc.rest.batch import BatchLoader
from kfr_grpc.rest.calls import RestCall, Route
from kfr_grpc.rest.errors import Family

RELATIONSHIP_TYPE = "DSOPBANK"  # the contract's only relationship type
_OWNERSHIP = {
    OwnershipType.PRIMARY_OWNER: "primaryOwner",
    OwnershipType.NOT_PRIMARY_OWNER: "notPrimaryOwner",
    OwnershipType.UNKNOWN: "unknown",
}
_BOOLEANS = {"true": True, "false": False}


def _grpc(service: str, method: str) -> str:
    return f"/kfr.v1.{service}/{method}"


class RestRoutes:
    def __init__(
        self,
        register: Register,
        policy: AccessPolicy,
        blocking: Blocking,
        queries: AgencyQueries,
        batches: BatchLoader,
    ) -> None:
        self._register = register
        self._policy = policy
        self._blocking = blocking
        self._queries = queries
        self._batches = batches
        self._openapi = resources.files("kfr_grpc.rest").joinpath("openapi.json").read_bytes()

    def routes(self) -> list[Route]:
        institution, agency = Family.INSTITUTION, Family.AGENCY
        relationship = f"{INSTITUTION_PATH}/relationshipType/{{type}}"
        report = _grpc("InstitutionService", "Report")
        return [
            Route("POST", relationship, institution, report, self.report),
            Route("DELETE", relationship, institution, _grpc("InstitutionService", "End"),
                  self.end),
            Route("POST", BATCH_PATH, institution,
                  _grpc("InstitutionService", "ReportStream"), self.batch),
            Route("GET", f"{INSTITUTION_PATH}/", institution,
                  _grpc("InstitutionService", "ListOwn"), self.own),
            Route("GET", "/customers/customerRelationships", agency,
                  _grpc("LookupService", "Lookup"), self.lookup),
            Route("GET", "/customers/accountServicingProvider", agency,
                  _grpc("LookupService", "LookupCollectionAccount"), self.account_servicer),
            Route("GET", "/openapi.json", institution, "", self.openapi, authenticated=False),
        ]  # fmt: skip

    # --- institutions ---------------------------------------------------------------------

    async def report(self, call: RestCall) -> web.Response:
        """201: registered now; 200: it was there already."""
        _no_query(call)
        institution = self._institution(call)
        item = ReportItem(call.header("CustomerID"), Role.OWNER)
        result = await self._blocking.run(self._register.report, institution, [item])
        return web.Response(status=201 if result.registered else 200)

    async def end(self, call: RestCall) -> web.Response:
        """204: ended now, or ended before; 404 (KFR-008): no such relationship."""
        _no_query(call)
        institution = self._institution(call)
        item = EndItem(call.header("CustomerID"), None)  # every role and kind: the customer
        await self._blocking.run(self._register.end, institution, [item])
        return web.Response(status=204)

    async def batch(self, call: RestCall) -> web.Response:
        _no_query(call)
        institution = self._acting(call)
        load = await self._batches.load(call, call.call_for(institution))
        return web.json_response(load, status=201)

    async def own(self, call: RestCall) -> web.Response:
        query = _query(call, "fromDate", "toDate")
        institution = self._acting(call)
        answer = await self._blocking.run(
            self._register.own_relation, call.call_for(institution), call.header("CustomerID"),
            query.get("fromDate", ""), query.get("toDate", ""),
        )  # fmt: skip
        return _banks(answer, with_ownership=False)

    def _institution(self, call: RestCall) -> CallInfo:
        """The call for the path's institution, once the caller may act for it and the
        relationship type is the contract's."""
        institution = self._acting(call)
        if call.request.match_info["type"] != RELATIONSHIP_TYPE:
            raise InvalidArgument.field(
                "relationshipType", f"must be {RELATIONSHIP_TYPE}", "RELATIONSHIP_TYPE_UNKNOWN"
            )
        return call.call_for(institution)

    def _acting(self, call: RestCall) -> str:
        """The path's institution, once the caller may act for it."""
        fid = call.request.match_info["fid"]
        return self._policy.acting_institution(call.caller, fid, field="path fid")

    # --- agencies -------------------------------------------------------------------------

    async def lookup(self, call: RestCall) -> web.Response:
        """v1's answer; v2's (``ownershipType``) when the query carries ``onlyPrimaryOwner``."""
        query = _query(call, "fromDate", "toDate", "onlyPrimaryOwner")
        only_primary = query.get("onlyPrimaryOwner")
        if only_primary is not None and only_primary.lower() not in _BOOLEANS:
            raise InvalidArgument.field("onlyPrimaryOwner", "must be true or false", "NOT_BOOLEAN")
        answer = await self._queries.lookup(
            call.caller,
            customer_id=call.header("CustomerID"),
            from_date=query.get("fromDate", ""),
            to_date=query.get("toDate", ""),
            owner_only=False,
            legal_mandate=call.legal_mandate,
            account_info_request_id=call.header("AccountInfoRequestID"),
            only_primary_owner=_BOOLEANS.get((only_primary or "").lower(), False),
        )
        return _banks(answer, with_ownership=only_primary is not None)

    async def account_servicer(self, call: RestCall) -> web.Response:
        """The institution that uses the account number (a collection account)."""
        _no_query(call)
        institutions = await self._queries.collection_account(
            call.caller,
            account_number=call.header("AccountID"),
            legal_mandate=call.legal_mandate,
            account_info_request_id=call.header("AccountInfoRequestID"),
        )
        if not institutions:
            raise NotFound(
                [Rejection("account_number", "no institution has registered this account "
                           "number as a collection account", "NOT_FOUND")]
            )  # fmt: skip
        found = institutions[0]
        return web.json_response({"organizationId": found.org_number, "bankName": found.name})

    # --- the document ---------------------------------------------------------------------

    async def openapi(self, call: RestCall) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")


def _banks(answer: LookupAnswer, *, with_ownership: bool) -> web.Response:
    banks = [_relation(r, answer.ends_today, with_ownership) for r in answer.institutions]
    return web.json_response({"banks": banks})


def _relation(
    relation: InstitutionRelation, ends_today: bool, with_ownership: bool
) -> dict[str, object]:
    """A ``CustomerRelation``: ``activeAccount`` as the contract defines it, the owner of a
    payment account still open at ``toDate``, and ``toDate`` today."""
    line: dict[str, object] = {
        "organizationID": relation.org_number,
        "bankName": relation.name,
        "activeAccount": relation.active_payment_account and ends_today,
    }
    if with_ownership:
        line["ownershipType"] = _OWNERSHIP[relation.ownership]
    return line


def _query(call: RestCall, *names: str) -> dict[str, str]:
    """The query parameters, each of ``names`` at most once and no other."""
    query = call.request.query
    for name in query:
        if name not in names:
            raise InvalidArgument.field(
                "query", f"has a parameter this path does not take (it takes "
                f"{', '.join(names) or 'none'}); customer IDs go in the CustomerID header",
                "UNKNOWN_PARAMETER",
            )  # fmt: skip
        if len(query.getall(name)) > 1:
            raise InvalidArgument.field(name, "is given more than once", "REPEATED")
    return {name: query[name] for name in names if name in query}


def _no_query(call: RestCall) -> None:
    _query(call)


def openapi_document() -> dict:
    """The OpenAPI document as served (for tests and tools)."""
    return json.loads(resources.files("kfr_grpc.rest").joinpath("openapi.json").read_text())
