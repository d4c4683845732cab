"""Client-side helpers for the CLI's client commands (and for tests and benchmarks)."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc

from kfr_grpc._proto import kfr_pb2_grpc

CORRELATION_ID_KEY = "correlation-id"


def secure_channel(
    target: str,
    *,
    ca: Path,
    cert: Path,
    key: Path,
    token: str | None = None,
    own_connection: bool = False,
) -> grpc.Channel:
    """A mutual-TLS channel: the server is verified against ``ca``; we present ``cert``.

    With ``token``, every call carries ``authorization: Bearer <token>``. With
    ``own_connection``, the channel opens its own TCP connection instead of sharing one
    with other channels to the same target (so several reach several server workers).
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    if token is not None:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
    return grpc.secure_channel(target, credentials, options=options)


def new_metadata(correlation_id: str | None = None) -> tuple[tuple[str, str], ...]:
    return ((CORRELATION_ID_KEY, correlation_id or str(uuid.uuid4())),)


def correlation_id_of(call: grpc.Call) -> str:
    """The correlation id the server returned: in the trailing metadata (of a streamed
    response, also in the initial metadata)."""
    for key, value in (*(call.initial_metadata() or ()), *(call.trailing_metadata() or ())):
        if key == CORRELATION_ID_KEY:
            return value
    return ""


class KfrClient:
    """Both services' stubs over one channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.institutions = kfr_pb2_grpc.InstitutionServiceStub(channel)
        self.lookups = kfr_pb2_grpc.LookupServiceStub(channel)

    def close(self) -> None:
        self.channel.close()
