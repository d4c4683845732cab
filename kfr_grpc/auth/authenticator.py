"""Who is calling: the client certificate and the access token, checked against each other.

- The certificate (already verified by TLS against the client CA bundle) must not be
  revoked. Its organisation number is the party holding the connection.
- The token must verify (see ``tokens``). Without ``supplier``, its ``consumer`` must be
  the certificate's organisation. With ``supplier`` (a vendor running the integration
  for someone), the supplier must be the certificate's organisation, and the consumer
  is the party the call is made for.
- A token carrying ``cnf.x5t#S256`` is bound to one certificate: it must be this one.
- The token must carry a scope the method (or its service) requires (else
  PERMISSION_DENIED).

A client makes many calls with the same certificate and token: the caller they
identify is remembered (bounded) for as long as the token is valid, the client CA and
revocation lists are unchanged and the issuer's keys are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kfr_grpc.auth.peer import PeerCertificate, cached_parser
from kfr_grpc.auth.tokens import AccessToken, TokenVerifier
from kfr_grpc.auth.trust import ClientTrust
from kfr_grpc.errors import PermissionDenied, Unauthenticated

_BEARER = "bearer "
_REMEMBERED_CALLERS = 4096


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated party behind a call."""

    org_number: str  # on whose behalf the call is made (the token's consumer)
    certificate_org: str  # who holds the connection (the client certificate)
    supplier: str | None = None  # set when a vendor acts for the consumer
    scopes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _Identified:
    """A caller once identified, and what its identity rested on."""

    caller: Caller
    token: AccessToken
    trust: ClientTrust
    keys_version: object


class Authenticator:
    def __init__(
        self,
        trust: Callable[[], ClientTrust],
        verifier: TokenVerifier,
        scopes: Mapping[str, tuple[str, ...]],
    ) -> None:
        """``scopes``: by full method name (``/kfr.v1.LookupService/Lookup``), else by
        service name, the scopes of which a token must carry one."""
        self._trust = trust
        self._verifier = verifier
        self._scopes = dict(scopes)
        self._parse_certificate = cached_parser()
        self._identified: dict[tuple[bytes, str], _Identified] = {}

    def authenticate(
        self, pem_certificates: Sequence[bytes], metadata: Sequence[tuple[str, str]]
    ) -> Caller:
        """Who is calling, from the client certificate and the access token."""
        token = _bearer_token(metadata)
        key = (pem_certificates[0] if pem_certificates else b"", token)
        trust = self._trust()
        known = self._identified.get(key)
        if (
            known is not None
            and known.trust is trust
            and self._verifier.still_valid(known.token, known.keys_version)
        ):
            return known.caller
        keys_version = self._verifier.keys_version
        peer = self._certificate(pem_certificates, trust)
        verified = self._verifier.verify(token)
        caller = _bind(peer, verified)
        if len(self._identified) >= _REMEMBERED_CALLERS:
            self._identified.clear()  # (rarely: a client keeps its token for minutes)
        self._identified[key] = _Identified(caller, verified, trust, keys_version)
        return caller

    def authorize(self, method: str, caller: Caller) -> None:
        """Checks the caller's token carries a scope that ``method`` (or its service)
        requires."""
        required = self._scopes.get(method) or self._scopes.get(_service_of(method))
        if required is not None and caller.scopes.isdisjoint(required):
            raise PermissionDenied(
                f"the access token lacks the scope {' or '.join(required)} that this "
                "service requires"
            )

    def _certificate(
        self, pem_certificates: Sequence[bytes], trust: ClientTrust
    ) -> PeerCertificate:
        if not pem_certificates:
            raise Unauthenticated("a client certificate is required (mutual TLS)")
        peer = self._parse_certificate(pem_certificates[0])
        if trust.is_revoked(peer):
            raise Unauthenticated("the client certificate has been revoked")
        return peer


def _bearer_token(metadata: Sequence[tuple[str, str]]) -> str:
    values = [value for key, value in metadata if key == "authorization"]
    if not values:
        raise Unauthenticated("an access token is required: metadata authorization: Bearer <JWT>")
    if len(values) > 1 or not values[0].lower().startswith(_BEARER):
        raise Unauthenticated("the authorization metadata must be one 'Bearer <JWT>'")
    return values[0][len(_BEARER) :].strip()


def _bind(peer: PeerCertificate, token: AccessToken) -> Caller:
    if token.cnf_thumbprint is not None and token.cnf_thumbprint != peer.thumbprint:
        raise Unauthenticated("the access token is bound (cnf) to another client certificate")
    if token.supplier is None and token.consumer != peer.org_number:
        raise Unauthenticated(
            f"the access token's consumer {token.consumer} is not the organisation "
            f"{peer.org_number} of the client certificate"
        )
    if token.supplier is not None and token.supplier != peer.org_number:
        raise Unauthenticated(
            f"the access token's supplier {token.supplier} is not the organisation "
            f"{peer.org_number} of the client certificate"
        )
    return Caller(
        org_number=token.consumer,
        certificate_org=peer.org_number,
        supplier=token.supplier,
        scopes=token.scopes,
    )


def _service_of(method: str) -> str:
    """``/kfr.v1.LookupService/Lookup`` -> ``kfr.v1.LookupService``."""
    return method.strip("/").split("/", 1)[0]
