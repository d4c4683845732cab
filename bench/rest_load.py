"""An asyncio client of the REST endpoint for the benchmarks: aiohttp over mutual TLS with
the dev setup's certificates and certificate-bound tokens, one keep-alive connection per
call in flight. A call that fails, or is answered with another status than expected,
raises ``RestFailed``."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp

from bench.rest_failure import RestFailed
from kfr_grpc.dev.clients import Clients, Identity
from kfr_grpc.dev.setup import TEST_INSTITUTION_ORG, TEST_MANDATE

_RELATIONSHIP = f"/customers/financialInstitutions/{TEST_INSTITUTION_ORG}/relationshipType/DSOPBANK"


class RestLoad:
    """``async with RestLoad(base_url, clients, identity) as rest``: calls as ``identity``."""

    def __init__(self, base_url: str, clients: Clients, identity: Identity) -> None:
        self._base = base_url
        context = ssl.create_default_context(cafile=str(clients.ca))
        context.load_cert_chain(identity.cert, identity.key)
        self._connector = aiohttp.TCPConnector(ssl=context, limit=256)
        self._headers = {"Authorization": f"Bearer {clients.token(identity)}"}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RestLoad:
        self._session = aiohttp.ClientSession(connector=self._connector, headers=self._headers)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def lookup(self, customer: str, from_date: str = "2019-01-01") -> None:
        await self._call("GET", "/customers/customerRelationships", {200}, {
            "CustomerID": customer, "Legal-Mandate": quote(TEST_MANDATE),
            "AccountInfoRequestID": str(uuid.uuid4()),
        }, params={"fromDate": from_date})  # fmt: skip

    async def report(self, customer: str) -> None:
        await self._call("POST", _RELATIONSHIP, {201, 200}, {"CustomerID": customer})

    async def end(self, customer: str) -> None:
        await self._call("DELETE", _RELATIONSHIP, {204}, {"CustomerID": customer})

    async def _call(
        self, method: str, path: str, expected: set[int], headers: dict[str, str], **kwargs
    ) -> None:
        assert self._session is not None
        sent = {"CorrelationID": str(uuid.uuid4()), **headers}
        try:
            async with self._session.request(
                method, self._base + path, headers=sent, **kwargs
            ) as response:
                await response.read()
        except aiohttp.ClientError as error:
            raise RestFailed(f"{method} {path}: {type(error).__name__}") from error
        if response.status not in expected:
            raise RestFailed(f"{method} {path}: {response.status}")


def caller(call: Callable[[str], Awaitable[None]], customers) -> Callable[[], Awaitable[None]]:
    """A zero-argument call for the load loops: ``call`` with the next customer."""
    return lambda: call(next(customers))
