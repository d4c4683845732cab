"""``kfr cluster status``: what every node has applied, who runs the scheduled jobs, and
how etcd's members are, as one JSON document."""

from __future__ import annotations

import time
from typing import Any

from kfr_grpc.cluster.etcd import EtcdUnavailable
from kfr_grpc.cluster.log import ReplicatedLog


def cluster_status(replicated_log: ReplicatedLog, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    members = replicated_log.etcd.member_statuses()
    try:
        head = replicated_log.head()
        first = replicated_log.first(serializable=False)
        nodes = replicated_log.nodes()
        scheduler = replicated_log.scheduler()
    except EtcdUnavailable as error:
        return {"etcd": members, "quorum": False, "error": str(error)}
    return {
        "quorum": True,
        "log": {"head": head, "first": first},
        "scheduler": scheduler,
        "nodes": [
            {
                "name": node.name,
                "listen": node.listen,
                "applied": node.applied,
                "lag": head - node.applied,
                "last_heartbeat_seconds_ago": round(now - node.heartbeat, 1),
            }
            for node in nodes
        ],
        "etcd": members,
    }
