"""The register's store in cluster mode: every node's own LMDB store as the state
machine of one write log in etcd (``Storage`` and ``StorageMaintenance``, as
``LmdbStore``).

- A write runs against the node's store as it stands at log position P, in an LMDB
  write transaction that notes what it changes; the changes are appended to the log at
  P + 1 (only if the log's head is still P), then committed to LMDB with P + 1 in the
  same transaction. If another node appended first, the node applies what it missed and
  runs the write again. The caller's answer comes after both: etcd committed the entry
  and this node applied it.
- A log thread tails the log and applies each entry, with its position, in one LMDB
  transaction: a node killed at any instant resumes where its store says it stopped.
  The same thread sends heartbeats, holds or seeks the scheduler lease and, on the
  scheduler, marks the log and compacts it.
- Reads are local. ``linearizable`` (the default) first asks etcd for the head (a quorum
  read) and applies up to it, so a read reflects every write acknowledged anywhere
  before it began.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kfr_grpc.cluster.etcd import EtcdUnavailable
from kfr_grpc.cluster.log import Conflict, LogBehind, NodeState, ReplicatedLog
from kfr_grpc.cluster.scheduler import SchedulerLease
from kfr_grpc.errors import StoreFull, StoreUnavailable
from kfr_grpc.keyring import Keyring
from kfr_grpc.register.storage import CopySummary, MigrationResult, Progress, StoreUsage
from kfr_grpc.store import rotation
from kfr_grpc.store.lmdb_store import Entries, LmdbReadTxn, LmdbStore, LmdbWriteTxn

log = logging.getLogger("kfr.cluster")

_T = TypeVar("_T")
_MAX_ATTEMPTS = 100  # a write that loses the race this often gives up (UNAVAILABLE)
# After etcd failed a call, calls fail at once for this long (unless the log thread got
# through meanwhile), instead of each waiting out etcd_timeout_seconds.
_FAIL_FAST_SECONDS = 1.0


@dataclass(frozen=True)
class ReplicationSettings:
    node: str
    linearizable: bool = True
    max_entry_bytes: int = 8 * 1024 * 1024
    poll_seconds: float = 0.05
    heartbeat_seconds: float = 1.0
    unavailable_after_seconds: float = 3.0
    compact_window_seconds: float = 86400.0
    compact_every_seconds: float = 60.0
    listen: str = ""


class ReplicatedStore:
    """A node's LMDB store kept in step with the cluster's log. Thread-safe."""

    def __init__(
        self, local: LmdbStore, replicated_log: ReplicatedLog, settings: ReplicationSettings
    ) -> None:
        self._local = local
        self._log = replicated_log
        self._settings = settings
        self._writing = threading.Lock()
        self._scheduler = SchedulerLease(replicated_log, settings.node)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_contact = time.monotonic()
        self._failed_at = 0.0
        self._behind: str | None = None
        self._next_compaction = 0.0

    # --- Storage ---------------------------------------------------------------------------

    @property
    def reads_wait(self) -> bool:
        """Whether a read may wait on the network (then not on the event loop)."""
        return self._settings.linearizable

    @contextlib.contextmanager
    def read(self) -> Iterator[LmdbReadTxn]:
        if self._settings.linearizable:
            self.sync()
        with self._local.read() as view:
            yield view

    def write(self, work: Callable[[LmdbWriteTxn], _T]) -> _T:
        self._refuse_if_behind()
        with self._writing:
            self._refuse_if_behind()  # (the write before may have just failed)
            for _ in range(_MAX_ATTEMPTS):
                try:
                    return self._local.write_logged(work, self._append)
                except Conflict:
                    self._catch_up(None, serializable=False)
        raise StoreUnavailable(
            "the cluster's log kept moving on under this write (heavy contention); retry"
        )

    def sync(self) -> int:
        """Applies every entry appended before this call; returns the position reached."""
        self._refuse_if_behind()
        try:
            head = self._log.head()
        except EtcdUnavailable as error:
            raise self._unavailable(error) from None
        self._last_contact = time.monotonic()
        return self._catch_up(head, serializable=True)

    def _append(self, position: int, changes: bytes | None) -> None:
        if changes is None:
            self._confirm_head(position - 1)
            return
        if len(changes) > self._settings.max_entry_bytes:
            raise StoreFull(
                f"this write's changes take {len(changes) / 1e6:.1f} MB, over the cluster's "
                f"limit of {self._settings.max_entry_bytes / 1e6:.1f} MB for one log entry "
                "(cluster.max_entry_mb): send fewer relationships per message"
            )
        try:
            self._log.append(position, changes)
        except EtcdUnavailable as error:
            raise self._unavailable(error) from None
        self._last_contact = time.monotonic()

    def _confirm_head(self, applied: int) -> None:
        """``Conflict`` unless the log's head is ``applied``: a write that changed nothing
        or was refused on this store's state answers for the latest state only then."""
        try:
            head = self._log.head()
        except EtcdUnavailable as error:
            raise self._unavailable(error) from None
        self._last_contact = time.monotonic()
        if head != applied:
            raise Conflict(f"the log is at {head}, this store at {applied}")

    def _catch_up(self, target: int | None, *, serializable: bool) -> int:
        """Applies log entries until ``target`` (None: what the log has now)."""
        position = self._local.log_position()
        try:
            while target is None or position < target:
                reached = self._local.apply_logged(self._entries(serializable))
                if reached == position:
                    if target is None or not serializable:
                        break
                    serializable = False  # the member asked lags behind: ask the leader
                position = reached
        except EtcdUnavailable as error:
            raise self._unavailable(error) from None
        except LogBehind as error:
            self._behind = str(error)
            log.error("cluster: %s", error)
            raise StoreUnavailable(self._behind) from None
        if target is not None and position < target:
            raise StoreUnavailable(
                f"the log's entries up to {target} could not be read here yet; retry"
            )
        return position

    def _entries(self, serializable: bool) -> Entries:
        def entries(after: int) -> Iterator[tuple[int, bytes]]:
            for entry in self._log.entries_after(after, serializable=serializable):
                yield entry.position, entry.changes

        return entries

    def _refuse_if_behind(self) -> None:
        if self._behind is not None:
            raise StoreUnavailable(self._behind)
        failed = self._failed_at
        if failed > self._last_contact and time.monotonic() - failed < _FAIL_FAST_SECONDS:
            raise StoreUnavailable(_UNREACHABLE)

    def _unavailable(self, error: EtcdUnavailable) -> StoreUnavailable:
        self._failed_at = time.monotonic()
        return _unavailable(error)

    # --- the log thread --------------------------------------------------------------------

    def start(self) -> None:
        """Starts tailing the log (the server; admin commands write and read without)."""
        self._thread = threading.Thread(target=self._follow, name="kfr-log", daemon=True)
        self._thread.start()

    def available(self) -> bool:
        """Whether this node can serve: etcd answered lately and its store is not behind a
        compacted log."""
        if self._behind is not None:
            return False
        return time.monotonic() - self._last_contact < self._settings.unavailable_after_seconds

    @property
    def runs_scheduled_jobs(self) -> bool:
        return self._scheduler.holding

    def _follow(self) -> None:
        next_heartbeat = 0.0
        while not self._stopping.wait(self._settings.poll_seconds):
            try:
                self._catch_up(None, serializable=True)
                if time.monotonic() >= next_heartbeat:
                    next_heartbeat = time.monotonic() + self._settings.heartbeat_seconds
                    self._heartbeat()
                self._last_contact = time.monotonic()
            except StoreUnavailable as error:
                if self.available():
                    log.warning("cluster: %s", error)
            except Exception:
                log.exception("cluster: the log thread failed a round; it tries again")

    def _heartbeat(self) -> None:
        try:
            now = time.time()
            self._log.heartbeat(
                NodeState(
                    self._settings.node, self._local.log_position(), now, self._settings.listen
                )
            )
            if self._scheduler.tick() and time.monotonic() >= self._next_compaction:
                self._next_compaction = time.monotonic() + self._settings.compact_every_seconds
                self._log.mark(now)
                self._log.compact(now, self._settings.compact_window_seconds)
        except EtcdUnavailable as error:
            raise self._unavailable(error) from None

    def close(self, wait_seconds: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=wait_seconds)
        self._scheduler.release()
        self._local.close(wait_seconds)
        self._log.etcd.close()

    # --- StorageMaintenance ----------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        return self._local.keyring

    def log_position(self) -> int:
        return self._local.log_position()

    def rotate_key(self, *, pseudonym: bool) -> int:
        return rotation.rotate(self.write, self._local.keyring_file(), pseudonym=pseudonym)

    def reseal(self, progress: Progress) -> MigrationResult:
        return rotation.reseal(self.write, self._local.keyring_file(), progress)

    def repseudonymise(
        self, progress: Progress, *, stop_after_batches: int | None = None
    ) -> MigrationResult:
        return rotation.repseudonymise(
            self.write, self._local.keyring_file(), progress, stop_after_batches=stop_after_batches
        )

    def migrate(self, progress: Progress) -> MigrationResult:
        return rotation.migrate(self.write, self._local.keyring_file(), progress)

    def sealed_value_count(self) -> int:
        return self._local.sealed_value_count()

    def backup(self, destination: Path) -> CopySummary:
        return self._local.backup(destination)

    def compact(self) -> tuple[CopySummary, int]:
        return self._local.compact()  # this node's copy

    def problems(self) -> list[str]:
        return self._local.problems()  # this node's copy

    def usage(self) -> StoreUsage:
        return self._local.usage()


def _unavailable(error: EtcdUnavailable) -> StoreUnavailable:
    if error.ambiguous:
        return StoreUnavailable(
            "the cluster's log did not confirm this write in time; it may still take effect. "
            "Retry: reporting the same thing twice changes nothing"
        )
    return StoreUnavailable(_UNREACHABLE)


_UNREACHABLE = "the cluster's log (etcd) cannot be reached from this node; retry on another node"
