"""Clients of a KFR server for test identities: a client certificate and key, and an
access token minted for the identity's organisation and scope by a stand-in issuer.

What the tests, the benchmarks and the Locust suite share, so that there is one way to
get a channel with a token (``kfr dev init`` setups: ``DevSetup.clients``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from kfr_grpc.client import KfrClient, channel_target, secure_channel
from kfr_grpc.clock import Clock, SystemClock
from kfr_grpc.dev.tokens import TokenIssuer


@dataclass(frozen=True)
class Identity:
    """A client certificate and key, the organisation it names, and the scope it gets."""

    cert: Path
    key: Path
    org: str
    scope: str


DEFAULT: Any = object()  # "mint the usual token for this identity"


class Clients:
    """Channels to the server at ``target`` (verified against ``ca``) as any identity.

    ``bind_tokens``: tokens carry the RFC 8705 ``cnf`` thumbprint of the identity's
    certificate, as Maskinporten's certificate-bound tokens do.
    """

    def __init__(
        self,
        target: str,
        ca: Path,
        issuer: TokenIssuer,
        *,
        clock: Clock | None = None,
        ttl: int = 7200,
        bind_tokens: bool = True,
    ) -> None:
        self.target = target
        self.ca = ca
        self.issuer = issuer
        self._clock = clock or SystemClock()
        self._ttl = ttl
        self._bind = bind_tokens

    def token(self, identity: Identity, **claims: Any) -> str:
        """A token for ``identity``'s organisation and scope; ``claims`` as for ``mint``
        (``consumer`` and ``scope`` too)."""
        consumer = claims.pop("consumer", identity.org)
        scope = claims.pop("scope", identity.scope)
        claims.setdefault("ttl", self._ttl)
        if self._bind:
            claims.setdefault("cnf_certificate", identity.cert.read_bytes())
        return self.issuer.mint(consumer, scope, now=self._clock.now(), **claims)

    def channel(
        self,
        identity: Identity,
        *,
        token: str | None = DEFAULT,
        ca: Path | None = None,
        own_connection: bool = False,
    ) -> grpc.Channel:
        """Mutual TLS as ``identity``; ``token=None`` sends no token."""
        return secure_channel(
            self.target,
            ca=ca or self.ca,
            cert=identity.cert,
            key=identity.key,
            token=self.token(identity) if token is DEFAULT else token,
            own_connection=own_connection,
        )

    def client(self, identity: Identity, **options: Any) -> KfrClient:
        return KfrClient(self.channel(identity, **options))

    def aio_channel(self, identity: Identity) -> grpc.aio.Channel:
        """An asyncio channel as ``identity``, with its usual token."""
        credentials = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(
                self.ca.read_bytes(), identity.key.read_bytes(), identity.cert.read_bytes()
            ),
            grpc.access_token_call_credentials(self.token(identity)),
        )
        target, options = channel_target(self.target)
        return grpc.aio.secure_channel(target, credentials, options=options)
