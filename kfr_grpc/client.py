"""Client-side helpers for the CLI's client commands (and for tests and benchmarks)."""

from __future__ import annotations

import ipaddress
import json
import socket
import uuid
from pathlib import Path

import grpc

from kfr_grpc._proto import kfr_pb2_grpc

CORRELATION_ID_KEY = "correlation-id"

# For a list of nodes: spread calls over them (round robin), use only those whose health
# service says SERVING, and try a call refused with UNAVAILABLE once more on another.
# Integrators: the same service config works in any gRPC client (README, Running a cluster).
CLUSTER_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def secure_channel(
    target: str,
    *,
    ca: Path,
    cert: Path,
    key: Path,
    token: str | None = None,
    own_connection: bool = False,
    health_checked: bool = True,
) -> grpc.Channel:
    """A mutual-TLS channel: the server is verified against ``ca``; we present ``cert``.

    With ``token``, every call carries ``authorization: Bearer <token>``. With
    ``own_connection``, the channel opens its own TCP connection instead of sharing one
    with other channels to the same target (so several reach several server workers).
    ``health_checked`` (a node list): use only nodes whose health service says SERVING;
    the health service wants a token like any call, so only with ``token``.
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
    target, options = channel_target(target, health_checked=health_checked and bool(token))
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.secure_channel(target, credentials, options=options)


def channel_target(
    target: str, *, health_checked: bool = True
) -> tuple[str, list[tuple[str, object]]]:
    """The gRPC target and channel options for ``host:port`` or, for a cluster's nodes,
    ``host:port,host:port,...`` (round robin over the healthy ones, one retry)."""
    if "," not in target:
        return target, []
    target, authority = nodes_target(target)
    config = dict(CLUSTER_SERVICE_CONFIG)
    if not health_checked:
        del config["healthCheckConfig"]
    return target, [
        ("grpc.default_authority", authority),
        ("grpc.ssl_target_name_override", authority.rpartition(":")[0]),
        ("grpc.service_config", json.dumps(config)),
        ("grpc.enable_retries", 1),
    ]


def nodes_target(targets: str) -> tuple[str, str]:
    """``host:port,host:port,...`` as one gRPC target of every node's addresses (gRPC
    resolves only one name per target), and the authority the servers' certificates
    are checked against (the first host's)."""
    addresses: list[str] = []
    hosts = [item.strip() for item in targets.split(",") if item.strip()]
    for item in hosts:
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        for info in socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM):
            address = info[4][0]
            if ipaddress.ip_address(address).version == 4:
                addresses.append(f"{address}:{port}")
                break
        else:
            raise ValueError(f"{host} has no IPv4 address")
    return "ipv4:" + ",".join(addresses), hosts[0]


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
