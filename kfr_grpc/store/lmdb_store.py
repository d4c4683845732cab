"""The register's store on an embedded LMDB environment: ``Storage`` and
``StorageMaintenance`` (``kfr_grpc.register.storage``) for one machine.

The layout is in ``layout`` and ``codec``; the reads and writes of each concern in
``relationships``, ``institutions``, ``records`` and ``rotation``; growing the map in
``mapsize``. This module opens and closes the environment and runs transactions.

Several processes may open the environment at once (the server, the ``kfr`` admin
commands): LMDB serialises writers, and every process reads the key versions and the
map size other processes set. Thread-safe.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import lmdb

from kfr_grpc.errors import ConfigError, StoreFull
from kfr_grpc.keyring import FixedKeyring, Keyring, KeyringProvider
from kfr_grpc.register.storage import CopySummary, MigrationResult, Progress, StoreUsage
from kfr_grpc.store import backup, rotation
from kfr_grpc.store.institutions import InstitutionReads, InstitutionWrites
from kfr_grpc.store.layout import (
    ACTIVE_KEY,
    META,
    PSEUDONYM_VERSION_KEY,
    SEAL_VERSION_KEY,
    SEALED_DATABASES,
    Databases,
    check_or_initialise,
    meta_number,
    open_environment,
)
from kfr_grpc.store.mapsize import MapGuard
from kfr_grpc.store.records import RecordReads, RecordWrites
from kfr_grpc.store.relationships import RelationshipReads
from kfr_grpc.store.rotation import RotationWrites
from kfr_grpc.store.txn import Crypto

log = logging.getLogger("kfr.store")

_T = TypeVar("_T")
DEFAULT_MAX_MAP_SIZE = 1 << 40  # 1 TiB of address space: the map grows up to this
_STORE_FULL_AT_MAXIMUM = (
    "the register's store is full: it reached store.max_map_size_mb (or the disk is full)"
)


class LmdbReadTxn(RelationshipReads, InstitutionReads, RecordReads):
    """Reads within one LMDB read transaction."""


class LmdbWriteTxn(RotationWrites, InstitutionWrites, RecordWrites, LmdbReadTxn):
    """Reads and writes within one LMDB write transaction."""


class LmdbStore:
    """An open LMDB environment with the register's layout."""

    def __init__(
        self,
        env: lmdb.Environment,
        databases: Databases,
        keys: KeyringProvider,
        *,
        max_map_size: int,
        keyring_path: Path | None,
    ) -> None:
        self._env = env
        self._map = MapGuard(env, max_bytes=max_map_size)
        self._databases = databases
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
        """Opens (or, unless ``readonly``, creates) the store in ``path``.

        ``map_size`` is where the LMDB map starts; it grows by itself up to
        ``max_map_size``. ``shared=False`` only for a copy no other process opens.
        ``keyring_path``: the keyring file, which key rotation rewrites.

        Refuses, before writing anything, a directory written under another keyring.
        Opening an existing store writes nothing (but for a count a store from before it
        was kept gets once).
        """
        keys = FixedKeyring(keyring) if isinstance(keyring, Keyring) else keyring
        env = open_environment(path, map_size=map_size, readonly=readonly, shared=shared)
        try:
            databases = check_or_initialise(env, path, keys.get(), readonly=readonly)
        except BaseException:
            env.close()
            raise
        store = cls(
            env,
            databases,
            keys,
            max_map_size=max(max_map_size, map_size),
            keyring_path=keyring_path,
        )
        if not readonly:
            store._count_active_if_unknown()
        return store

    def _count_active_if_unknown(self) -> None:
        """A store written before the active count was kept gets it counted, once."""
        meta = self._databases[META]
        with self.read() as view:
            if view._txn.get(ACTIVE_KEY, db=meta) is not None:
                return

        def count(txn: LmdbWriteTxn) -> None:
            if txn._txn.get(ACTIVE_KEY, db=meta) is None:
                txn._txn.put(ACTIVE_KEY, str(txn.count_active()).encode(), db=meta)

        self.write(count)

    def close(self, wait_seconds: float = 10.0) -> None:
        """Closes the environment once the transactions under way have ended; later ones
        fail with ``StoreClosed``. If some are still running after ``wait_seconds`` the
        environment is left to the process's exit (LMDB needs no clean close to be
        consistent; closing it under a running commit could crash the process)."""
        if self._map.close(wait_seconds):
            self._env.close()
        else:
            log.warning("store transactions still running at close; leaving it to exit")

    @property
    def keyring(self) -> Keyring:
        return self._current_crypto().keyring

    # --- transactions --------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[LmdbReadTxn]:
        """A consistent snapshot for reading."""
        with self._map.transaction(lambda: self._env.begin(buffers=False)) as txn, txn:
            pseudonym_version = meta_number(txn, self._databases, PSEUDONYM_VERSION_KEY)
            crypto = self._current_crypto()
            if pseudonym_version not in crypto.pseudonymisers:
                crypto = self._refreshed_crypto()
            yield LmdbReadTxn(txn, self._databases, crypto, self._refreshed_crypto)

    def write(self, work: Callable[[LmdbWriteTxn], _T]) -> _T:
        """Runs ``work`` in one write transaction: committed when it returns, aborted if it
        raises. A write that finds the map full below its maximum (another process wrote
        first) grows the map and runs ``work`` again; at the maximum it is ``StoreFull``."""
        while True:
            self._map.ensure_headroom()
            with self._map.transaction(lambda: self._env.begin(write=True)) as txn:
                try:
                    return self._run(txn, work)
                except lmdb.MapFullError:
                    pass  # aborted; grown below, then run again
            if not self._map.grow():
                raise StoreFull(_STORE_FULL_AT_MAXIMUM)

    def _run(self, txn: lmdb.Transaction, work: Callable[[LmdbWriteTxn], _T]) -> _T:
        try:
            store_txn = self._write_transaction(txn)
            result = work(store_txn)
            store_txn.flush_active_count()
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        return result

    def _write_transaction(self, txn: lmdb.Transaction) -> LmdbWriteTxn:
        seal_version = meta_number(txn, self._databases, SEAL_VERSION_KEY)
        pseudonym_version = meta_number(txn, self._databases, PSEUDONYM_VERSION_KEY)
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
            self._databases,
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
        return rotation.rotate(self.write, self._rotatable_keyring(), pseudonym=pseudonym)

    def reseal(self, progress: Progress) -> MigrationResult:
        return rotation.reseal(self.write, self._rotatable_keyring(), progress)

    def repseudonymise(
        self, progress: Progress, *, stop_after_batches: int | None = None
    ) -> MigrationResult:
        return rotation.repseudonymise(
            self.write, self._rotatable_keyring(), progress, stop_after_batches=stop_after_batches
        )

    def _rotatable_keyring(self) -> Path:
        if self._keyring_path is None:
            raise ConfigError("this store was opened without its keyring file; cannot rotate")
        return self._keyring_path

    def sealed_value_count(self) -> int:
        with self.read() as view:
            return sum(
                view._txn.stat(self._databases[name])["entries"] for name in SEALED_DATABASES
            )

    def backup(self, destination: Path) -> CopySummary:
        """A consistent, compacted copy in ``destination`` while the store is in use."""
        keyring = self.keyring
        return backup.backup(
            self._copy_to, destination, lambda copy: summarise(copy, keyring, live=False)
        )

    def _copy_to(self, destination: Path) -> None:
        with self._map.transaction(lambda: None):
            self._env.copy(str(destination), compact=True)

    def usage(self) -> StoreUsage:
        used, size = self._map.usage()
        return StoreUsage(used_bytes=used, capacity_bytes=size)


def summarise(directory: Path, keyring: Keyring, *, live: bool) -> CopySummary:
    """Opens the store in ``directory`` read-only under ``keyring`` and counts what it
    holds. ``live``: other processes may have it open (LMDB's reader lock table is used);
    else a copy no one else opens (a backup)."""
    size = (directory / backup.DATA_FILE).stat().st_size
    copy = LmdbStore.open(
        directory, keyring, map_size=max(size, 1 << 20), readonly=True, shared=live
    )
    try:
        with copy.read() as view:
            return CopySummary(
                directory, size, view.relationship_count(), sum(1 for _ in view.institutions())
            )
    finally:
        copy.close()


def restore(source: Path, data_dir: Path, keyring: Keyring) -> tuple[CopySummary, Path | None]:
    """Replaces the (stopped) store in ``data_dir`` with the backup in ``source``."""
    return backup.restore(source, data_dir, lambda copy: summarise(copy, keyring, live=False))
