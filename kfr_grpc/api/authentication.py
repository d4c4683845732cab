"""Who is calling, for a gRPC call: the client certificate from the TLS session and the
access token from the metadata, checked by ``auth.Authenticator``; then whether the
token's scopes allow the method's service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc

from kfr_grpc.auth.authenticator import Caller


class CallAuthenticator(Protocol):
    def authenticate(
        self, pem_certificates: Sequence[bytes], metadata: Sequence[tuple[str, str]]
    ) -> Caller: ...

    def authorize(self, method: str, caller: Caller) -> None: ...


def identify(
    authenticator: CallAuthenticator,
    context: grpc.ServicerContext,
    method: str,
    metadata: Sequence[tuple[str, str]],
) -> Caller:
    """The authenticated caller, allowed to call ``method``; raises ``Unauthenticated`` or
    ``PermissionDenied`` otherwise."""
    pem_certificates = context.auth_context().get("x509_pem_cert", [])
    caller = authenticator.authenticate(pem_certificates, metadata)
    authenticator.authorize(method, caller)
    return caller
