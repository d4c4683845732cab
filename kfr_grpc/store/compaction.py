"""Copies of the store that hold only what is live: for compaction and for backups.

LMDB never overwrites what it frees: a purged relationship, a value sealed again under a
new key or moved to a new pseudonym stays in the data file, on free pages and in the
unused room of pages still in use (LMDB's own compacted copy takes whole pages, that
room included), until the space happens to be reused. So erasure in the register would
only be logical. A live copy instead reads every key and value of a snapshot and writes
them, in key order, into a new environment: its pages hold what is live and zeros,
nothing else.

``LmdbStore.compact`` swaps such a copy in for the store while it serves
(``generations``): it copies a snapshot while writers go on, each noting in ``meta`` the
keys it changes (``COMPACTING_KEY``), then, holding the write lock only for that,
brings the copy up to date with the noted keys (``catch_up``) and swaps. A backup is
such a copy too (of a snapshot, without the catching up).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb

from kfr_grpc.store.layout import (
    CHANGED_PREFIX,
    DATABASES,
    META,
    Databases,
    is_compaction_note,
    open_environment,
    split_changed_key,
)

_BATCH = 50_000  # entries per write transaction of the copy (LMDB bounds a transaction)


def copy_live(
    snapshot: lmdb.Transaction, databases: Databases, source: lmdb.Environment, destination: Path
) -> None:
    """Writes every key and value ``snapshot`` (a transaction of ``source``) sees into a
    new environment in ``destination`` (an empty directory), in key order, and syncs it."""
    copy = open_environment(
        destination, map_size=source.info()["map_size"], readonly=False, shared=False
    )
    try:
        for name in (META, *DATABASES):
            _copy_database(snapshot, databases[name], copy, name)
        copy.sync(True)
    finally:
        copy.close()


def _copy_database(
    snapshot: lmdb.Transaction, database: object, copy: lmdb.Environment, name: bytes
) -> None:
    with snapshot.cursor(db=database) as cursor:
        entries = cursor.iternext(keys=True, values=True)
        if name == META:  # a compaction's own notes stay behind
            entries = ((k, v) for k, v in entries if not is_compaction_note(k))
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


def catch_up(
    current: lmdb.Transaction, databases: Databases, source: lmdb.Environment, copy: Path
) -> int:
    """Brings the copy in ``copy`` up to ``current`` (a write transaction of ``source``,
    so nobody writes meanwhile) for every key noted as changed since the copy's snapshot;
    returns how many."""
    target = open_environment(
        copy, map_size=source.info()["map_size"], readonly=False, shared=False
    )
    caught_up = 0
    try:
        with target.begin(write=True) as txn, current.cursor(db=databases[META]) as notes:
            handles = {name: target.open_db(name, txn=txn) for name in (META, *DATABASES)}
            positioned = notes.set_range(CHANGED_PREFIX)
            while positioned and notes.key().startswith(CHANGED_PREFIX):
                database, key = split_changed_key(notes.key())
                value = current.get(key, db=databases[database])
                if value is None:
                    txn.delete(key, db=handles[database])
                else:
                    txn.put(key, value, db=handles[database])
                caught_up += 1
                positioned = notes.next()
        target.sync(True)
    finally:
        target.close()
    return caught_up
