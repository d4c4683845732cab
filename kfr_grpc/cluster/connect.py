"""A node's replicated store, from its ``[cluster]`` settings."""

from __future__ import annotations

from kfr_grpc.cluster.etcd import Etcd, EtcdTls
from kfr_grpc.cluster.log import ReplicatedLog
from kfr_grpc.cluster.store import ReplicatedStore, ReplicationSettings
from kfr_grpc.config import ClusterConfig
from kfr_grpc.store import LmdbStore


def etcd_client(settings: ClusterConfig) -> Etcd:
    tls = None
    if settings.etcd_ca is not None:
        tls = EtcdTls(settings.etcd_ca, settings.etcd_cert, settings.etcd_key)
    return Etcd(settings.etcd_endpoints, timeout=settings.etcd_timeout_seconds, tls=tls)


def replicated_store(settings: ClusterConfig, local: LmdbStore, *, listen: str) -> ReplicatedStore:
    return ReplicatedStore(
        local,
        ReplicatedLog(etcd_client(settings), settings.prefix),
        ReplicationSettings(
            node=settings.node,
            linearizable=settings.reads == "linearizable",
            max_entry_bytes=int(settings.max_entry_mb * 1024 * 1024),
            compact_window_seconds=settings.compact_window_seconds,
            listen=settings.advertise or listen,
        ),
    )
