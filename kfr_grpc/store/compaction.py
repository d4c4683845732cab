"""Copies of the store that hold only what is live: for compaction and for backups.

LMDB never overwrites what it frees: a purged relationship, a value sealed again under a
new key or moved to a new pseudonym stays in the data file, on free pages and in the
unused room of pages still in use (LMDB's own compacted copy takes whole pages, that
room included), until the space happens to be reused. So erasure in the register would
only be logical. A live copy instead reads every key and value of a snapshot and writes
them, in key order, into a new environment: its pages hold what is live and zeros,
nothing else.

``LmdbStore.compact`` swaps such a copy in for the store while it serves
(``generations``); a backup is such a copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb

from kfr_grpc.store.layout import DATABASES, META, Databases, open_environment

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
