"""A write transaction's changes as bytes: what a replicated log carries between stores.

A change is ``(database, key, value)``, ``value`` None for a delete: exactly what LMDB
was told, so keys are already pseudonymised and values already sealed. Every store that
applies the same changes in the same order holds the same data, whatever its own keys'
nonces or its map size. No customer ID in clear ever gets here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import lmdb

from kfr_grpc.errors import CorruptRecord
from kfr_grpc.store.layout import DATABASES, META

Change = tuple[bytes, bytes, bytes | None]

_NAMES = (META, *DATABASES)  # a database is written as its index in this tuple
_HEADER = struct.Struct(">BII")  # database index, key length, value length
_DELETE = 0xFFFFFFFF  # as the value length: the key is deleted


class RecordingTransaction:
    """An LMDB write transaction that notes every put and delete made through it.

    Reads (``get``, ``cursor``, ``stat``) go straight to the transaction and see the
    changes made so far, as they would without it.
    """

    __slots__ = ("_names", "_txn", "changes")

    def __init__(self, txn: lmdb.Transaction, names: dict[int, bytes]) -> None:
        self._txn = txn
        self._names = names  # id of a database handle -> its name
        self.changes: list[Change] = []

    def put(self, key: bytes, value: bytes, db: Any) -> bool:
        self.changes.append((self._names[id(db)], bytes(key), bytes(value)))
        return self._txn.put(key, value, db=db)

    def delete(self, key: bytes, db: Any) -> bool:
        self.changes.append((self._names[id(db)], bytes(key), None))
        return self._txn.delete(key, db=db)

    def get(self, key: bytes, default: Any = None, db: Any = None) -> Any:
        return self._txn.get(key, default, db=db)

    def cursor(self, db: Any) -> lmdb.Cursor:
        return self._txn.cursor(db=db)

    def stat(self, db: Any) -> dict[str, int]:
        return self._txn.stat(db)


def encode_changes(changes: list[Change]) -> bytes:
    index = {name: number for number, name in enumerate(_NAMES)}
    parts: list[bytes] = []
    pack = _HEADER.pack
    for database, key, value in changes:
        if value is None:
            parts += (pack(index[database], len(key), _DELETE), key)
        else:
            parts += (pack(index[database], len(key), len(value)), key, value)
    return b"".join(parts)


def decode_changes(data: bytes) -> Iterator[Change]:
    """The changes ``encode_changes`` wrote; ``CorruptRecord`` if ``data`` is not that."""
    view = memoryview(data)
    offset, size = 0, len(data)
    try:
        while offset < size:
            number, key_length, value_length = _HEADER.unpack_from(view, offset)
            offset += _HEADER.size
            key = bytes(view[offset : offset + key_length])
            offset += key_length
            if value_length == _DELETE:
                yield _NAMES[number], key, None
                continue
            value = bytes(view[offset : offset + value_length])
            offset += value_length
            if offset > size:
                raise CorruptRecord("a log entry's changes are cut short")
            yield _NAMES[number], key, value
    except (struct.error, IndexError):
        raise CorruptRecord("a log entry's changes cannot be read") from None
