"""Copies of the store that hold only what is live: for compaction and for backups.

LMDB never overwrites what it frees: a purged relationship, a value sealed again under a
new key or moved to a new pseudonym stays in the data file, on free pages and in the
unused room of pages still in use (LMDB's own compacted copy takes whole pages, that
room included), until the space happens to be reused. So erasure in the register would
only be logical. A live copy instead reads every key and value of a snapshot and writes
them, in key order, into a new environment: its pages hold what is live and zeros,
nothing else.

``compact`` swaps such a copy in for the store in a data directory. It needs the store
to itself (the server stopped; in a cluster one node at a time, the others serving), and
holds LMDB's lock file while it works, so a server started meanwhile waits for it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from kfr_grpc.durable import sync_directory
from kfr_grpc.errors import ConfigError
from kfr_grpc.register.storage import CopySummary
from kfr_grpc.store.backup import DATA_FILE, locked_exclusively
from kfr_grpc.store.layout import DATABASES, META, existing_map_size, open_environment

_BATCH = 50_000  # entries per write transaction of the copy (LMDB bounds a transaction)
_STAGING_PREFIX = ".kfr-compact-"


def copy_live(source: lmdb.Environment, destination: Path) -> None:
    """Writes every key and value of a snapshot of ``source`` into a new environment in
    ``destination`` (an empty directory), in key order."""
    with source.begin(buffers=False) as snapshot:
        copy = open_environment(
            destination, map_size=source.info()["map_size"], readonly=False, shared=False
        )
        try:
            for name in (META, *DATABASES):
                _copy_database(
                    snapshot, source.open_db(name, txn=snapshot, create=False), copy, name
                )
            copy.sync(True)
        finally:
            copy.close()


def _copy_database(
    snapshot: lmdb.Transaction, database: object, copy: lmdb.Environment, name: bytes
) -> None:
    with snapshot.cursor(db=database) as cursor:
        entries = cursor.iternext(keys=True, values=True)
        while True:
            with copy.begin(write=True) as txn:
                target = copy.open_db(name, txn=txn)
                with txn.cursor(db=target) as writer:
                    added, _ = writer.putmulti(_take(entries, _BATCH), append=True)
            if added < _BATCH:
                return


def _take(entries: Iterator[tuple[bytes, bytes]], count: int) -> Iterator[tuple[bytes, bytes]]:
    for _ in range(count):
        entry = next(entries, None)
        if entry is None:
            return
        yield entry


def compact(
    data_dir: Path,
    open_source: Callable[[Path], lmdb.Environment],
    summarise: Callable[[Path], CopySummary],
) -> tuple[CopySummary, int]:
    """Replaces the store in ``data_dir`` with a live copy of it; returns the copy's
    summary and the data file's size before.

    ``open_source`` opens the store read-only and ``summarise`` opens a store and counts
    it (refusing one the keyring cannot open), both without LMDB's lock: this holds the
    lock file itself, and a process's locks on a file go with any descriptor of it that
    it closes. The old file is replaced in one step, after the copy has been written,
    synced and found to hold the same relationships and institutions."""
    with _store_to_ourselves(data_dir):
        _remove_leftovers(data_dir)
        before = summarise(data_dir)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=data_dir))  # mode 0700
        try:
            source = open_source(data_dir)
            try:
                copy_live(source, staging)
            finally:
                source.close()
            after = summarise(staging)
            if (after.relationships, after.institutions) != (
                before.relationships,
                before.institutions,
            ):
                raise ConfigError("the compacted copy differs from the store; store left as it was")
            os.chmod(staging / DATA_FILE, 0o600)
            os.replace(staging / DATA_FILE, data_dir / DATA_FILE)
            sync_directory(data_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        compacted = summarise(data_dir)  # before the lock goes: nobody else has it yet
        _reset_lock_file(data_dir)  # (closing it releases this process's lock)
        return compacted, before.bytes


def _remove_leftovers(data_dir: Path) -> None:
    """A compaction killed half way left its copy: it may hold what was purged since."""
    for leftover in data_dir.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _reset_lock_file(data_dir: Path) -> None:
    """Opens the new file once with LMDB's locking, in this process (whose exclusive
    lock LMDB then shares): LMDB sets up its lock file afresh from the new file. A
    process waiting to open the store would otherwise take the old file's transaction
    id from the lock file and could pick the new file's older meta page, and its first
    write overwrite the newer one."""
    map_size = existing_map_size(data_dir)
    open_environment(data_dir, map_size=map_size, readonly=False, shared=True).close()


@contextmanager
def _store_to_ourselves(data_dir: Path) -> Iterator[None]:
    """Holds LMDB's lock file exclusively (every process with the store open holds it
    shared): refuses if some process has the store open; one that opens it meanwhile
    waits until the block ends."""
    if not (data_dir / DATA_FILE).is_file():
        raise ConfigError(f"{data_dir} holds no KFR store (no {DATA_FILE})")
    descriptor = locked_exclusively(data_dir)
    if descriptor is None:
        raise ConfigError(
            f"{data_dir} is in use (is the server running?); stop it first "
            "(in a cluster, compact one node at a time while the others serve)"
        )
    try:
        yield
    finally:
        os.close(descriptor)  # releases the lock
