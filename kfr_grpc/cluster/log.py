"""The register's write log in etcd: numbered entries, appended only at the position the
writer validated against.

Keys under the cluster's prefix (``/kfr/`` by default):

- ``log/<position>`` (20 digits, so that key order is log order): one entry, a write's
  changes as the stores apply them (pseudonymised keys, sealed values) with an id and
  the time it was appended;
- ``head``: the position of the last entry. An append is one etcd transaction: if
  ``head`` is still the position the writer's store had applied, put the entry and move
  ``head``; else nothing (another node wrote first: catch up and validate again);
- ``first``: the first position still in the log (earlier ones were compacted);
- ``marks/<time>``: the head at that time (the compaction window is measured by them);
- ``nodes/<name>``: each registered node's applied position and last heartbeat (JSON);
- ``scheduler``: the node that runs the cluster's scheduled jobs (under a lease).
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aetcd import rpc

from kfr_grpc.cluster.etcd import (
    Etcd,
    EtcdUnavailable,
    compare_absent,
    compare_value,
    get_op,
    prefix_end,
    put_op,
)

_ENVELOPE = struct.Struct(">4s16sQ")  # magic, entry id, time appended (ns since epoch)
_MAGIC = b"KFR1"
_BATCH = 16  # entries fetched at once when catching up
_CHECK_SECONDS = 0.5  # after an append etcd did not confirm: is the entry there after all?


class Conflict(Exception):
    """The log moved on past the position a write was validated against."""


class LogBehind(Exception):
    """The entries a store needs next were compacted away: it must be restored from a
    recent backup."""


@dataclass(frozen=True, slots=True)
class Entry:
    position: int
    entry_id: bytes
    appended_ns: int
    changes: bytes


@dataclass(frozen=True, slots=True)
class NodeState:
    name: str
    applied: int
    heartbeat: float  # unix time of its last heartbeat
    listen: str = ""


class ReplicatedLog:
    """The log under ``prefix`` in the etcd cluster ``etcd`` speaks to."""

    def __init__(self, etcd: Etcd, prefix: str) -> None:
        self.etcd = etcd
        self._prefix = prefix.encode()
        self._log = self._prefix + b"log/"
        self._head = self._prefix + b"head"
        self._first = self._prefix + b"first"
        self._marks = self._prefix + b"marks/"
        self._nodes = self._prefix + b"nodes/"
        self.scheduler_key = self._prefix + b"scheduler"

    def _entry_key(self, position: int) -> bytes:
        return self._log + b"%020d" % position

    # --- appending and reading -------------------------------------------------------------

    def append(self, position: int, changes: bytes, *, timeout: float | None = None) -> Entry:
        """Puts ``changes`` at ``position`` if the log's head is ``position - 1``.

        ``Conflict`` if another entry got there first; ``EtcdUnavailable`` if etcd did not
        answer (``ambiguous``: the entry may be in the log all the same; see ``find``).
        """
        entry_id = os.urandom(16)
        now = time.time_ns()
        value = _ENVELOPE.pack(_MAGIC, entry_id, now) + changes
        before = (
            compare_value(self._head, b"%d" % (position - 1))
            if position > 1
            else compare_absent(self._head)
        )
        request = rpc.TxnRequest(
            compare=[before],
            success=[
                put_op(self._entry_key(position), value),
                put_op(self._head, b"%d" % position),
            ],
            failure=[get_op(self._head)],
        )
        try:
            response = self.etcd.txn(request, timeout)
        except EtcdUnavailable as error:
            if error.ambiguous and self._holds(position, entry_id):
                return Entry(position, entry_id, now, changes)
            raise
        if not response.succeeded:
            raise Conflict(f"log position {position} is taken")
        return Entry(position, entry_id, now, changes)

    def _holds(self, position: int, entry_id: bytes) -> bool:
        """Whether the entry ``entry_id`` made it to ``position`` after all (asked once)."""
        try:
            found = self.etcd.range(self._entry_key(position), timeout=_CHECK_SECONDS).kvs
        except EtcdUnavailable:
            return False
        return bool(found) and _decode(position, found[0].value).entry_id == entry_id

    def head(self, *, serializable: bool = False) -> int:
        """The position of the last entry (0: none). Linearizable unless ``serializable``:
        every entry appended before this call began is at or before it."""
        found = self.etcd.get(self._head, serializable=serializable)
        return int(found.value) if found is not None else 0

    def first(self, *, serializable: bool = True) -> int:
        found = self.etcd.get(self._first, serializable=serializable)
        return int(found.value) if found is not None else 1

    def entries_after(self, position: int, *, serializable: bool = True) -> Iterator[Entry]:
        """The entries after ``position`` in order, fetched a batch at a time, until the
        head as it was when each batch was fetched. ``LogBehind`` if they were compacted.

        Each request names the exact window of keys it wants (not "from here on" with a
        limit): etcd counts every key a range covers, so an open range costs what the
        whole rest of the log holds, and catching up on a long log became quadratic."""
        while True:
            response = self.etcd.range(
                self._entry_key(position + 1),
                self._entry_key(position + 1 + _BATCH),
                serializable=serializable,
            )
            if not response.kvs:
                if position + 1 < self.first(serializable=serializable):
                    raise self._behind(position, self.first(serializable=serializable))
                return
            first = int(response.kvs[0].key[len(self._log) :])
            if first != position + 1:
                raise self._behind(position, first)
            for kv in response.kvs:
                entry = _decode(int(kv.key[len(self._log) :]), kv.value)
                position = entry.position
                yield entry
            if len(response.kvs) < _BATCH:
                return

    @staticmethod
    def _behind(position: int, first: int) -> LogBehind:
        return LogBehind(
            f"this node's store is at log position {position}, but the log now starts at "
            f"{first} (earlier entries were compacted): restore the data directory from a "
            "recent backup of another node (README, Running a cluster)"
        )

    def seed(self, position: int) -> bool:
        """Starts an empty log at ``position`` (the next entry is ``position + 1``): for a
        cluster rebuilt from a backup at that position. False if the log is not empty."""
        response = self.etcd.txn(
            rpc.TxnRequest(
                compare=[compare_absent(self._head), compare_absent(self._first)],
                success=[
                    put_op(self._head, b"%d" % position),
                    put_op(self._first, b"%d" % (position + 1)),
                ],
            )
        )
        return response.succeeded

    # --- nodes -----------------------------------------------------------------------------

    def heartbeat(self, node: NodeState) -> None:
        document = {"applied": node.applied, "heartbeat": node.heartbeat, "listen": node.listen}
        self.etcd.put(self._nodes + node.name.encode(), json.dumps(document).encode())

    def nodes(self) -> list[NodeState]:
        response = self.etcd.range(self._nodes, prefix_end(self._nodes))
        states = []
        for kv in response.kvs:
            document = json.loads(kv.value)
            states.append(
                NodeState(
                    kv.key[len(self._nodes) :].decode(),
                    int(document["applied"]),
                    float(document["heartbeat"]),
                    str(document.get("listen", "")),
                )
            )
        return states

    def forget(self, name: str) -> bool:
        """Removes a node from the registered ones (compaction stops waiting for it)."""
        return self.etcd.delete_range(self._nodes + name.encode()) > 0

    def scheduler(self) -> str | None:
        found = self.etcd.get(self.scheduler_key, serializable=True)
        return found.value.decode() if found is not None else None

    # --- compaction ------------------------------------------------------------------------

    def mark(self, now: float) -> None:
        """Notes the head as of ``now``: compaction keeps what is younger than its window."""
        self.etcd.put(self._marks + b"%020d" % int(now), b"%d" % self.head())

    def compact(self, now: float, window_seconds: float) -> int:
        """Removes the entries every registered node has applied that were in the log
        ``window_seconds`` ago; returns the new first position."""
        marks = self.etcd.range(
            self._marks, self._marks + b"%020d" % int(now - window_seconds + 1)
        ).kvs
        nodes = self.nodes()
        if not marks or not nodes:
            return self.first(serializable=False)
        upto = min(int(marks[-1].value), *(node.applied for node in nodes))
        first = self.first(serializable=False)
        if upto < first:
            return first
        self.etcd.put(self._first, b"%d" % (upto + 1))
        self.etcd.delete_range(self._entry_key(first), self._entry_key(upto + 1))
        self.etcd.delete_range(self._marks, marks[-1].key)  # the newest one stays
        return upto + 1


def _decode(position: int, value: bytes) -> Entry:
    magic, entry_id, appended = _ENVELOPE.unpack_from(value)
    if magic != _MAGIC:
        raise ValueError(f"log entry {position} is not a KFR entry")
    return Entry(position, entry_id, appended, value[_ENVELOPE.size :])
