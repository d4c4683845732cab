"""The register's store on an embedded LMDB environment: ``Storage`` and
``StorageMaintenance`` (``kfr_grpc.register.storage``) for one machine.

The layout is in ``layout`` and ``codec``; the reads and writes of each concern in
``relationships``, ``institutions``, ``records`` and ``rotation``; growing the map in
``mapsize``. This module opens and closes the environment and runs transactions.

Several processes may open the environment at once (the server, the ``kfr`` admin
commands): LMDB serialises writers, and every process reads the key versions and the
map size other processes set. A compaction (``compact``) swaps in a new environment
while they run (``generations``): each transaction starts on the current one. Thread-safe.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import lmdb

from kfr_grpc.errors import ConfigError, CorruptRecord, StoreClosed, StoreFull
from kfr_grpc.keyring import FixedKeyring, Keyring, KeyringProvider
from kfr_grpc.register.storage import CopySummary, MigrationResult, Progress, StoreUsage
from kfr_grpc.store import backup, compaction, generations, rotation
from kfr_grpc.store.changes import RecordingTransaction, decode_changes, encode_changes
from kfr_grpc.store.institutions import InstitutionReads
from kfr_grpc.store.integrity import IntegrityReads
from kfr_grpc.store.layout import (
    ACTIVE_KEY,
    CHANGED_PREFIX,
    COMPACTING_KEY,
    INSTITUTIONS,
    LOG_POSITION_KEY,
    META,
    PSEUDONYM_VERSION_KEY,
    RELATIONSHIPS,
    SEAL_VERSION_KEY,
    SEALED_DATABASES,
    Databases,
    changed_key,
    check_or_initialise,
    existing_map_size,
    is_compaction_note,
    meta_number,
    open_environment,
)
from kfr_grpc.store.mapsize import MapGuard
from kfr_grpc.store.records import RecordReads
from kfr_grpc.store.rotation import RotationWrites
from kfr_grpc.store.txn import Crypto

log = logging.getLogger("kfr.store")

_T = TypeVar("_T")
# Hands a write's changes (encoded) to a replicated log at a position; raises if the log
# did not take them there. With None (the write changed nothing, or was refused), only
# confirms that the log has nothing before that position the store has not applied: the
# answer stands only if it was reached on the latest state.
Append = Callable[[int, bytes | None], None]
# The log entries after a position, in order: (position, encoded changes).
Entries = Callable[[int], Iterable[tuple[int, bytes]]]
DEFAULT_MAX_MAP_SIZE = 1 << 40  # 1 TiB of address space: the map grows up to this
_STORE_FULL_AT_MAXIMUM = (
    "the register's store is full: it reached store.max_map_size_mb (or the disk is full)"
)


class LmdbReadTxn(IntegrityReads, InstitutionReads, RecordReads):
    """Reads within one LMDB read transaction."""


class LmdbWriteTxn(RotationWrites, LmdbReadTxn):
    """Reads and writes within one LMDB write transaction."""


@dataclass(frozen=True, eq=False)
class _Generation:
    """One open LMDB environment of the store (a compaction makes the next)."""

    env: lmdb.Environment
    map: MapGuard
    databases: Databases
    directory: Path


class LmdbStore:
    """An open LMDB environment with the register's layout."""

    def __init__(
        self,
        generation: _Generation,
        keys: KeyringProvider,
        *,
        data_dir: Path,
        map_size: int,
        max_map_size: int,
        keyring_path: Path | None,
        readonly: bool,
        shared: bool,
    ) -> None:
        self._gen = generation
        self._data_dir = data_dir
        self._map_size = map_size
        self._max_map_size = max_map_size
        self._readonly = readonly
        self._shared = shared
        self._switching = threading.Lock()
        self._in_use = generations.hold_in_use(data_dir) if shared else None
        self._keys = keys
        self._keyring_path = keyring_path
        self._crypto = Crypto(keys.get())
        self._request_sequence = itertools.count()

    @classmethod
    def open(
        cls,
        path: Path,
        keyring: Keyring | KeyringProvider,
        *,
        map_size: int,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        readonly: bool = False,
        shared: bool = True,
        keyring_path: Path | None = None,
    ) -> LmdbStore:
        """Opens (or, unless ``readonly``, creates) the store in the data directory ``path``.

        ``map_size`` is where the LMDB map starts; it grows by itself up to
        ``max_map_size``. ``shared=False`` only for a copy no other process opens.
        ``keyring_path``: the keyring file, which key rotation rewrites.

        Refuses, before writing anything, a directory written under another keyring.
        Opening an existing store writes nothing (but for a count a store from before it
        was kept gets once).
        """
        keys = FixedKeyring(keyring) if isinstance(keyring, Keyring) else keyring
        max_map_size = max(max_map_size, map_size)
        generation = _open_generation(
            path, keys.get(), map_size, max_map_size, readonly=readonly, shared=shared
        )
        store = cls(
            generation,
            keys,
            data_dir=path,
            map_size=map_size,
            max_map_size=max_map_size,
            keyring_path=keyring_path,
            readonly=readonly,
            shared=shared,
        )
        if not readonly:
            store._count_active_if_unknown()
            if shared:
                store._end_abandoned_compaction()
        return store

    def _end_abandoned_compaction(self) -> None:
        """A compaction killed half way left writers noting their changes: stops that,
        unless a compaction is running now."""
        with self.read() as view:
            if view._txn.get(COMPACTING_KEY, db=view._db[META]) is None:
                return
        with contextlib.suppress(ConfigError), generations.compacting(self._data_dir):
            self._set_compacting(False)  # (ConfigError: one is running)

    @property
    def _env(self) -> lmdb.Environment:
        return self._gen.env

    @property
    def _databases(self) -> Databases:
        return self._gen.databases

    def _is_current(self, generation: _Generation) -> bool:
        """Whether ``generation`` is still the data directory's store (a copy no other
        process opens is never swapped)."""
        return not self._shared or (
            generations.store_directory(self._data_dir) == generation.directory
        )

    def _switch(self, retired: _Generation) -> None:
        """Moves this process to the current generation, once (whichever thread first
        finds ``retired`` out of date); ``retired`` is closed when its transactions end."""
        with self._switching:
            if self._gen is not retired:
                return
            self._gen = _open_generation(
                self._data_dir,
                self._keys.get(),
                self._map_size,
                self._max_map_size,
                readonly=self._readonly,
                shared=self._shared,
            )
        log.info("store: now on %s (a compaction swapped it in)", self._gen.directory.name)
        threading.Thread(
            target=_close_generation, args=(retired,), name="kfr-store-retire", daemon=True
        ).start()

    def _count_active_if_unknown(self) -> None:
        """A store written before the active count was kept gets it counted, once."""
        with self.read() as view:
            if view._txn.get(ACTIVE_KEY, db=view._db[META]) is not None:
                return

        def count(txn: LmdbWriteTxn) -> None:
            meta = txn._db[META]
            if txn._txn.get(ACTIVE_KEY, db=meta) is None:
                txn._txn.put(ACTIVE_KEY, str(txn.count_active()).encode(), db=meta)

        self.write(count)

    def close(self, wait_seconds: float = 10.0) -> None:
        """Closes the environment once the transactions under way have ended; later ones
        fail with ``StoreClosed``. If some are still running after ``wait_seconds`` the
        environment is left to the process's exit (LMDB needs no clean close to be
        consistent; closing it under a running commit could crash the process)."""
        with self._switching:
            _close_generation(self._gen, wait_seconds)
            if self._in_use is not None:
                os.close(self._in_use)  # releases the lock
                self._in_use = None

    @property
    def keyring(self) -> Keyring:
        return self._current_crypto().keyring

    # One machine: reads never wait on the network, the store is there while it is open,
    # and there is nothing to follow.
    reads_wait = False
    runs_scheduled_jobs = True

    def available(self) -> bool:
        return True

    def start(self) -> None:
        """Nothing to start (a replicated store starts following its log here)."""

    # --- transactions --------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[LmdbReadTxn]:
        """A consistent snapshot for reading (of the current generation)."""
        with self._transaction(write=False) as (txn, generation), txn:
            databases = generation.databases
            pseudonym_version = meta_number(txn, databases, PSEUDONYM_VERSION_KEY)
            crypto = self._current_crypto()
            if pseudonym_version not in crypto.pseudonymisers:
                crypto = self._refreshed_crypto()
            yield LmdbReadTxn(txn, databases, crypto, self._refreshed_crypto)

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[tuple[lmdb.Transaction, _Generation]]:
        """A transaction of the current generation: one begun on a generation that a
        compaction retired meanwhile is aborted, and this process moves to the new one.
        The caller commits or aborts a write transaction."""
        while True:
            generation = self._gen
            try:
                with generation.map.transaction(
                    lambda g=generation: g.env.begin(write=write, buffers=False)
                ) as txn:
                    if self._is_current(generation):
                        yield txn, generation
                        return
                    txn.abort()
            except StoreClosed:
                if self._gen is generation:
                    raise  # the store itself is closed
                continue  # a retired generation closed under us: try the current one
            self._switch(generation)

    def write(self, work: Callable[[LmdbWriteTxn], _T]) -> _T:
        """Runs ``work`` in one write transaction: committed when it returns, aborted if it
        raises."""
        return self._in_write_transaction(lambda txn, databases: self._run(txn, databases, work))

    def write_logged(self, work: Callable[[LmdbWriteTxn], _T], append: Append) -> _T:
        """Runs ``work`` in one write transaction and, if it changed anything, hands the
        changes to ``append`` at the log position after this store's before committing
        them with that position; if it changed nothing or raised, ``append`` gets None
        (see ``Append``). If ``append`` raises, nothing is committed."""
        return self._in_write_transaction(
            lambda txn, databases: self._run(txn, databases, work, append)
        )

    def apply_logged(self, entries: Entries, limit: int = 64) -> int:
        """Applies, in one transaction, up to ``limit`` of the log entries after this
        store's position (``entries(position)`` yields them in order); returns the
        position reached. Entries at or before the store's position are never reapplied."""

        def apply(txn: lmdb.Transaction, databases: Databases) -> int:
            try:
                position = _applied(txn, databases)
                for count, (at, changes) in enumerate(entries(position)):
                    if count == limit:
                        break
                    if at != position + 1:
                        raise CorruptRecord(f"log entry {position + 1} missing (got {at})")
                    _apply(txn, databases, changes)
                    position = at
                    txn.put(LOG_POSITION_KEY, str(position).encode(), db=databases[META])
                txn.commit()
            except BaseException:
                txn.abort()
                raise
            return position

        return self._in_write_transaction(apply)

    def log_position(self) -> int:
        """The position of the last log entry applied (0: none)."""
        with self._transaction(write=False) as (txn, generation), txn:
            return _applied(txn, generation.databases)

    def _in_write_transaction(self, body: Callable[[lmdb.Transaction, Databases], _T]) -> _T:
        """``body`` on a new write transaction of the current generation, with its
        databases (``body`` commits or aborts it). A write that finds the map full below
        its maximum (another process wrote first) grows the map and runs ``body`` again;
        at the maximum it is ``StoreFull``."""
        while True:
            current = self._gen
            try:
                current.map.ensure_headroom()
            except (lmdb.Error, StoreClosed):
                if self._gen is current:
                    raise
                continue  # a compaction retired it under us: look at the current one
            with self._transaction(write=True) as (txn, generation):
                try:
                    return body(txn, generation.databases)
                except lmdb.MapFullError:
                    pass  # aborted; grown below, then run again
            if not generation.map.grow():
                raise StoreFull(_STORE_FULL_AT_MAXIMUM)

    def _run(
        self,
        txn: lmdb.Transaction,
        databases: Databases,
        work: Callable[[LmdbWriteTxn], _T],
        append: Append | None = None,
    ) -> _T:
        try:
            compacting = txn.get(COMPACTING_KEY, db=databases[META]) is not None
            recording = (
                RecordingTransaction(txn, {id(db): name for name, db in databases.items()})
                if append or compacting
                else None  # the usual single-node write: nothing to note
            )
            store_txn = self._write_transaction(recording or txn, databases)
            try:
                result = work(store_txn)
            except Exception:
                if append is not None:  # a refusal must be one at the log's head too
                    append(_applied(txn, databases) + 1, None)
                raise
            store_txn.flush_active_count()
            if compacting and recording is not None:
                _note_changes(txn, databases, ((d, k) for d, k, _ in recording.changes))
            if append is not None and recording is not None:
                position = _applied(txn, databases) + 1
                changes = encode_changes(recording.changes) if recording.changes else None
                append(position, changes)
                if changes is not None:
                    txn.put(LOG_POSITION_KEY, str(position).encode(), db=databases[META])
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        return result

    def _write_transaction(
        self, txn: lmdb.Transaction | RecordingTransaction, databases: Databases
    ) -> LmdbWriteTxn:
        seal_version = meta_number(txn, databases, SEAL_VERSION_KEY)
        pseudonym_version = meta_number(txn, databases, PSEUDONYM_VERSION_KEY)
        crypto = self._current_crypto()
        if not crypto.has(seal_version, pseudonym_version):
            crypto = self._refreshed_crypto()
        if not crypto.has(seal_version, pseudonym_version):
            raise ConfigError(
                f"the store writes with seal key version {seal_version} and pseudonym key "
                f"version {pseudonym_version}, but the keyring lacks one of them"
            )
        store_txn = LmdbWriteTxn(
            txn,
            databases,
            crypto,
            self._refreshed_crypto,
            seal_version=seal_version,
            pseudonym_version=pseudonym_version,
        )
        store_txn._begin_relationship_writes()
        store_txn._begin_record_writes(self._request_sequence)
        return store_txn

    def _current_crypto(self) -> Crypto:
        keyring = self._keys.get()
        crypto = self._crypto
        if crypto.keyring is not keyring:
            crypto = self._crypto = Crypto(keyring)
        return crypto

    def _refreshed_crypto(self) -> Crypto:
        self._keys.refresh()
        return self._current_crypto()

    # --- maintenance ---------------------------------------------------------------------

    def rotate_key(self, *, pseudonym: bool) -> int:
        return rotation.rotate(self.write, self.keyring_file(), pseudonym=pseudonym)

    def reseal(self, progress: Progress) -> MigrationResult:
        return rotation.reseal(self.write, self.keyring_file(), progress)

    def repseudonymise(
        self, progress: Progress, *, stop_after_batches: int | None = None
    ) -> MigrationResult:
        return rotation.repseudonymise(
            self.write, self.keyring_file(), progress, stop_after_batches=stop_after_batches
        )

    def migrate(self, progress: Progress) -> MigrationResult:
        return rotation.migrate(self.write, self.keyring_file(), progress)

    def keyring_file(self) -> Path:
        if self._keyring_path is None:
            raise ConfigError("this store was opened without its keyring file; cannot rotate")
        return self._keyring_path

    def sealed_value_count(self) -> int:
        with self.read() as view:
            return sum(view._txn.stat(view._db[name])["entries"] for name in SEALED_DATABASES)

    def backup(self, destination: Path) -> CopySummary:
        """A consistent live copy in ``destination`` while the store is in use."""
        keyring = self.keyring
        return backup.backup(
            self._copy_to, destination, lambda copy: summarise(copy, keyring, live=False)
        )

    def _copy_to(self, destination: Path) -> None:
        with self._transaction(write=False) as (txn, generation), txn:
            compaction.copy_live(txn, generation.databases, generation.env, destination)

    def compact(self) -> tuple[CopySummary, int]:
        """Swaps a live copy of the store in for it (``compaction``), online: the copy is
        of a snapshot while reads and writes go on (writes noting what they change), and
        only bringing it up to date with those and the swap hold the write lock. Returns
        what the copy holds and the old file's size."""
        keyring = self.keyring
        with generations.compacting(self._data_dir):
            self._set_compacting(True)
            try:
                copy = generations.new_generation(self._data_dir)
                self._gen.map.reserve_for_long_read()
                with self._transaction(write=False) as (snapshot, generation), snapshot:
                    size = (generation.directory / backup.DATA_FILE).stat().st_size
                    compaction.copy_live(snapshot, generation.databases, generation.env, copy)
                expected = self._swap_in(copy, generation, keyring)
            finally:
                self._set_compacting(False)
            self._switch(generation)
        return CopySummary(
            self._data_dir, (copy / backup.DATA_FILE).stat().st_size, *expected
        ), size

    def _swap_in(self, copy: Path, generation: _Generation, keyring: Keyring) -> tuple[int, int]:
        """Under the write lock: the copy caught up, checked against the store, swapped in."""
        with self._transaction(write=True) as (txn, current):
            try:
                if current is not generation:
                    raise ConfigError("the store changed generation under the compaction")
                compaction.catch_up(txn, current.databases, current.env, copy)
                summary = summarise(copy, keyring, live=False)
                expected = (
                    txn.stat(current.databases[RELATIONSHIPS])["entries"],
                    txn.stat(current.databases[INSTITUTIONS])["entries"],
                )
                if (summary.relationships, summary.institutions) != expected:
                    raise ConfigError("the compacted copy differs; the store is left as it was")
                generations.swap(self._data_dir, copy)
            finally:
                txn.abort()  # nothing written: the writers waiting go to the new file
        return expected

    def _set_compacting(self, on: bool) -> None:
        """Starts (or ends, dropping the notes) writers' noting of what they change."""

        def mark(txn: lmdb.Transaction, databases: Databases) -> None:
            meta = databases[META]
            try:
                if on:
                    txn.put(COMPACTING_KEY, b"1", db=meta)
                else:
                    txn.delete(COMPACTING_KEY, db=meta)
                    _drop_notes(txn, meta)
                txn.commit()
            except BaseException:
                txn.abort()
                raise

        self._in_write_transaction(mark)

    def problems(self) -> list[str]:
        with self.read() as view:
            return list(view.problems())

    def usage(self) -> StoreUsage:
        used, size = self._gen.map.usage()
        return StoreUsage(used_bytes=used, capacity_bytes=size)


def _open_generation(
    data_dir: Path,
    keyring: Keyring,
    map_size: int,
    max_map_size: int,
    *,
    readonly: bool,
    shared: bool,
) -> _Generation:
    """The current generation of the store in ``data_dir``, opened (created if new and
    not ``readonly``): the environment, its map guard and its databases."""
    with generations.opening(data_dir) if shared else contextlib.nullcontext():
        directory = generations.store_directory(data_dir)
        if directory != data_dir and not (directory / backup.DATA_FILE).is_file():
            raise ConfigError(
                f"{data_dir / generations.CURRENT} names {directory.name}, which holds no store; "
                "restore a backup (`kfr restore`) rather than start an empty register"
            )
        if (directory / backup.DATA_FILE).is_file():
            map_size = max(map_size, existing_map_size(directory))
        env = open_environment(directory, map_size=map_size, readonly=readonly, shared=shared)
    try:
        databases = check_or_initialise(env, directory, keyring, readonly=readonly)
    except BaseException:
        env.close()
        raise
    guard = MapGuard(env, max_bytes=max(max_map_size, map_size))
    return _Generation(env, guard, databases, directory)


def _close_generation(generation: _Generation, wait_seconds: float | None = None) -> None:
    """Closes ``generation`` once its transactions have ended. ``wait_seconds``: give up
    after so long (the process is exiting); None: keep waiting (a retired generation:
    its file, and what it held, leaves the disk only when every process has closed it)."""
    while not generation.map.close(60.0 if wait_seconds is None else wait_seconds):
        if wait_seconds is not None:
            log.warning("store transactions still running at close; leaving it to exit")
            return
        log.warning("a retired store generation is still in use after 60 s; waiting on")
    generation.env.close()


def _applied(txn: lmdb.Transaction, databases: Databases) -> int:
    return int(txn.get(LOG_POSITION_KEY, b"0", db=databases[META]))


def _apply(txn: lmdb.Transaction, databases: Databases, changes: bytes) -> None:
    decoded = decode_changes(changes)
    for database, key, value in decoded:
        if value is None:
            txn.delete(key, db=databases[database])
        else:
            txn.put(key, value, db=databases[database])
    if txn.get(COMPACTING_KEY, db=databases[META]) is not None:
        _note_changes(txn, databases, ((d, k) for d, k, _ in decoded))


def _drop_notes(txn: lmdb.Transaction, meta: object) -> None:
    with txn.cursor(db=meta) as cursor:
        positioned = cursor.set_range(CHANGED_PREFIX)
        while positioned and cursor.key().startswith(CHANGED_PREFIX):
            positioned = cursor.delete()


def _note_changes(
    txn: lmdb.Transaction, databases: Databases, changed: Iterable[tuple[bytes, bytes]]
) -> None:
    """Notes, for the compaction under way, the keys a write changed (in the store's own
    transaction: never into a replicated log)."""
    for database, key in changed:
        if database != META or not is_compaction_note(key):
            txn.put(changed_key(database, key), b"", db=databases[META])


def summarise(directory: Path, keyring: Keyring, *, live: bool) -> CopySummary:
    """Opens the store in ``directory`` read-only under ``keyring`` and counts what it
    holds. ``live``: other processes may have it open (LMDB's reader lock table is used);
    else a copy no one else opens (a backup)."""
    store_dir = generations.store_directory(directory)
    size = (store_dir / backup.DATA_FILE).stat().st_size
    copy = LmdbStore.open(
        directory, keyring, map_size=existing_map_size(store_dir), readonly=True, shared=live
    )
    try:
        with copy.read() as view:
            return CopySummary(
                directory, size, view.relationship_count(), sum(1 for _ in view.institutions())
            )
    finally:
        copy.close()


def compact(data_dir: Path, keyring: Keyring) -> tuple[CopySummary, int]:
    """Compacts the store in ``data_dir`` (``LmdbStore.compact``), whether a server has it
    open or not."""
    map_size = existing_map_size(generations.store_directory(data_dir))
    store = LmdbStore.open(data_dir, keyring, map_size=map_size)
    try:
        return store.compact()
    finally:
        store.close()


def verify(directory: Path, keyring: Keyring) -> list[str]:
    """Every inconsistency in the store in ``directory`` (``integrity``), read from one
    snapshot beside a running server."""
    map_size = existing_map_size(generations.store_directory(directory))
    store = LmdbStore.open(directory, keyring, map_size=map_size, readonly=True)
    try:
        return store.problems()
    finally:
        store.close()


def restore(source: Path, data_dir: Path, keyring: Keyring) -> tuple[CopySummary, Path | None]:
    """Replaces the (stopped) store in ``data_dir`` with the backup in ``source``."""
    return backup.restore(source, data_dir, lambda copy: summarise(copy, keyring, live=False))
