"""Which node runs the cluster's scheduled jobs (retention, request-log expiry, log
compaction): the one holding the ``scheduler`` key in etcd, under a lease.

A node takes the key when it is free (an etcd transaction on its absence) and keeps it
by renewing the lease; if the node dies or loses etcd, the lease runs out and another
node takes over. A node counts itself the holder only until its own last renewal plus
the lease's time minus a margin, so two nodes hardly ever run jobs at once; and the jobs
are writes through the log, so one run twice only finds nothing left to do.
"""

from __future__ import annotations

import contextlib
import logging
import time

from aetcd import rpc

from kfr_grpc.cluster.etcd import EtcdUnavailable, compare_absent, put_op
from kfr_grpc.cluster.log import ReplicatedLog

log = logging.getLogger("kfr.cluster")


class SchedulerLease:
    def __init__(self, replicated_log: ReplicatedLog, node: str, ttl_seconds: int = 10) -> None:
        self._log = replicated_log
        self._node = node
        self._ttl = ttl_seconds
        self._lease = 0
        self._valid_until = 0.0

    @property
    def holding(self) -> bool:
        return time.monotonic() < self._valid_until

    def tick(self) -> bool:
        """Takes or keeps the key; returns whether this node holds it."""
        started = time.monotonic()
        etcd = self._log.etcd
        try:
            if self._lease and etcd.keep_alive(self._lease) > 0:
                owner = etcd.get(self._log.scheduler_key)
                if owner is not None and owner.value == self._node.encode():
                    self._valid_until = started + self._ttl * 2 / 3
                    return True
            self._take(started)
        except EtcdUnavailable as error:
            if self.holding:
                log.warning("cluster: could not renew the scheduler lease: %s", error)
        return self.holding

    def _take(self, started: float) -> None:
        etcd = self._log.etcd
        self._lease = etcd.grant_lease(self._ttl)
        response = etcd.txn(
            rpc.TxnRequest(
                compare=[compare_absent(self._log.scheduler_key)],
                success=[put_op(self._log.scheduler_key, self._node.encode(), self._lease)],
            )
        )
        if response.succeeded:
            self._valid_until = started + self._ttl * 2 / 3
            log.info("cluster: this node (%s) now runs the scheduled jobs", self._node)
        else:
            self._valid_until = 0.0
            etcd.revoke_lease(self._lease)
            self._lease = 0

    def release(self) -> None:
        """Gives the key up at once (a clean stop), so another node need not wait."""
        if self._lease:
            with contextlib.suppress(EtcdUnavailable):  # else it runs out by itself
                self._log.etcd.revoke_lease(self._lease)
        self._lease = 0
        self._valid_until = 0.0
