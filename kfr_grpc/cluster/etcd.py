"""A small synchronous etcd v3 client: the calls the replicated log needs, nothing more.

It speaks etcd's own gRPC API through the request types and stubs the ``aetcd`` package
generated from etcd's protos (``aetcd.rpc``), over a synchronous gRPC channel of ours:
the store calls it from store threads and its own log thread, and ``aetcd.Client``
itself is asyncio-only, connects to a single endpoint and has no TLS.

Endpoints are tried in turn: a call that finds its member unreachable (or without a
leader) moves on to the next one, within one time budget per call. Every failure is
``EtcdUnavailable``; ``EtcdUnavailable.ambiguous`` says the request may still have been
carried out (a deadline that passed after it was sent).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from aetcd import rpc

_T = TypeVar("_T")
_MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # log entries come in batches of several MB
# Statuses after which the next member may well answer (this one is down, has no leader,
# or is shutting down); anything else is an answer.
_TRY_ANOTHER = {grpc.StatusCode.UNAVAILABLE}


class EtcdUnavailable(Exception):
    """No member answered within the time allowed."""

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


@dataclass(frozen=True)
class EtcdTls:
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        private_key = self.key_file.read_bytes() if self.key_file else None
        chain = self.cert_file.read_bytes() if self.cert_file else None
        return grpc.ssl_channel_credentials(self.ca_file.read_bytes(), private_key, chain)


class _Member:
    """One endpoint's channel and stubs."""

    def __init__(self, endpoint: str, tls: EtcdTls | None) -> None:
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if tls is None:
            self.channel = grpc.insecure_channel(endpoint, options=options)
        else:
            self.channel = grpc.secure_channel(endpoint, tls.credentials(), options=options)
        self.endpoint = endpoint
        self.kv = rpc.KVStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)


class Etcd:
    """Calls to an etcd cluster through any of its members. Thread-safe."""

    def __init__(
        self, endpoints: Sequence[str], *, timeout: float = 2.0, tls: EtcdTls | None = None
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self._members = [_Member(endpoint, tls) for endpoint in endpoints]
        self._current = 0
        self._lock = threading.Lock()
        self.timeout = timeout

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self._members]

    def close(self) -> None:
        for member in self._members:
            member.channel.close()

    def call(self, request: Callable[[_Member, float], _T], timeout: float | None = None) -> _T:
        """``request(member, seconds_left)`` on the current member, then on the next ones
        while they are unreachable, until ``timeout`` (the client's) has passed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        first = self._current
        tried = 0
        last = "no member tried"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise EtcdUnavailable(f"etcd did not answer in time ({last})")
            index = (first + tried) % len(self._members)
            member = self._members[index]
            try:
                result = request(member, left)
            except grpc.RpcError as error:
                code = error.code()
                last = f"{member.endpoint}: {code.name} {error.details() or ''}".strip()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise EtcdUnavailable(
                        f"etcd did not answer in time ({last})", ambiguous=True
                    ) from None
                if code not in _TRY_ANOTHER:
                    raise EtcdUnavailable(f"etcd refused the request ({last})") from None
                tried += 1
                if tried % len(self._members) == 0:
                    time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
                continue
            if index != self._current:
                with self._lock:
                    self._current = index
            return result

    # --- key-value -----------------------------------------------------------------------

    def get(self, key: bytes, *, serializable: bool = False) -> rpc.KeyValue | None:
        response = self.range(key, serializable=serializable)
        return response.kvs[0] if response.kvs else None

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        limit: int = 0,
        serializable: bool = False,
        keys_only: bool = False,
        timeout: float | None = None,
    ) -> rpc.RangeResponse:
        request = rpc.RangeRequest(
            key=key,
            range_end=range_end,
            limit=limit,
            serializable=serializable,
            keys_only=keys_only,
        )
        return self.call(lambda member, left: member.kv.Range(request, timeout=left), timeout)

    def put(self, key: bytes, value: bytes, *, lease: int = 0) -> None:
        request = rpc.PutRequest(key=key, value=value, lease=lease)
        self.call(lambda member, left: member.kv.Put(request, timeout=left))

    def delete_range(self, key: bytes, range_end: bytes = b"") -> int:
        request = rpc.DeleteRangeRequest(key=key, range_end=range_end)
        response = self.call(lambda member, left: member.kv.DeleteRange(request, timeout=left))
        return response.deleted

    def txn(self, request: rpc.TxnRequest, timeout: float | None = None) -> rpc.TxnResponse:
        return self.call(lambda member, left: member.kv.Txn(request, timeout=left), timeout)

    # --- leases --------------------------------------------------------------------------

    def grant_lease(self, ttl_seconds: int) -> int:
        request = rpc.LeaseGrantRequest(TTL=ttl_seconds)
        return self.call(lambda member, left: member.lease.LeaseGrant(request, timeout=left)).ID

    def keep_alive(self, lease: int) -> int:
        """Renews ``lease``; returns its new time to live (0: it had expired)."""
        request = rpc.LeaseKeepAliveRequest(ID=lease)

        def renew(member: _Member, left: float) -> int:
            responses = member.lease.LeaseKeepAlive(iter([request]), timeout=left)
            try:
                return next(responses).TTL
            finally:
                responses.cancel()

        return self.call(renew)

    def revoke_lease(self, lease: int) -> None:
        request = rpc.LeaseRevokeRequest(ID=lease)
        self.call(lambda member, left: member.lease.LeaseRevoke(request, timeout=left))

    # --- members -------------------------------------------------------------------------

    def member_statuses(self, timeout: float = 1.0) -> list[dict[str, object]]:
        """Each configured endpoint's health as its member reports it (no failover)."""
        statuses: list[dict[str, object]] = []
        for member in self._members:
            try:
                status = member.maintenance.Status(rpc.StatusRequest(), timeout=timeout)
            except grpc.RpcError as error:
                statuses.append(
                    {"endpoint": member.endpoint, "healthy": False, "error": error.code().name}
                )
                continue
            statuses.append(
                {
                    "endpoint": member.endpoint,
                    "healthy": not status.errors and status.leader != 0,
                    "version": status.version,
                    "is_leader": status.leader == status.header.member_id,
                    "raft_index": status.raftIndex,
                    "db_size": status.dbSize,
                    "errors": list(status.errors),
                }
            )
        return statuses


def compare_value(key: bytes, value: bytes) -> rpc.Compare:
    return rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.VALUE, value=value)


def compare_absent(key: bytes) -> rpc.Compare:
    return rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.VERSION, version=0)


def put_op(key: bytes, value: bytes, lease: int = 0) -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def get_op(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])
