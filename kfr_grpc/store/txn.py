"""What every transaction of the store shares: the LMDB transaction, the database handles,
and sealing (values are opened and sealed here, and nowhere else).

The readers and writers of each concern (``relationships``, ``institutions``,
``records``, ``rotation``) build on ``TxnBase``; ``lmdb_store`` puts them together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lmdb

from kfr_grpc.errors import CorruptRecord
from kfr_grpc.keyring import Keyring, MissingKeyVersion, Pseudonymiser, Sealer, SealError
from kfr_grpc.store.layout import (
    FORMAT_KEY,
    META,
    TAGGED_FORMATS,
    Databases,
    associated_data,
    pad,
    sealed_place,
    unpad,
)


class Crypto:
    """The sealer and pseudonymisers of one keyring version (rebuilt when it changes)."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.sealer: Sealer = keyring.sealer()
        self.pseudonymisers: dict[int, Pseudonymiser] = {
            version: keyring.pseudonymiser(version) for version in keyring.pseudonym.versions
        }
        # Every pseudonym version that may hold data, newest first.
        self.newest_first = sorted(self.pseudonymisers.items(), reverse=True)

    def has(self, seal_version: int, pseudonym_version: int) -> bool:
        return self.sealer.has_version(seal_version) and pseudonym_version in self.pseudonymisers


class TxnBase:
    """One LMDB transaction with the register's databases and the keys to open them.

    ``refresh_crypto`` re-reads the keyring (a value sealed with a version this process
    has not seen yet: another process rotated).
    """

    def __init__(
        self,
        txn: lmdb.Transaction,
        databases: Databases,
        crypto: Crypto,
        refresh_crypto: Callable[[], Crypto],
    ) -> None:
        self._txn = txn
        self._db = databases
        self._crypto = crypto
        self._refresh_crypto = refresh_crypto
        self._legacy_possible: bool | None = None
        self._tags: dict[tuple[int, bytes], bytes] = {}
        self._places: dict[tuple[str, object], bytes] = {}

    @property
    def _legacy(self) -> bool:
        """Whether the store may still hold entries of the untagged layout (format < 5)."""
        if self._legacy_possible is None:
            self._legacy_possible = (
                self._txn.get(FORMAT_KEY, db=self._db[META]) not in TAGGED_FORMATS
            )
        return self._legacy_possible

    def _tag(self, version: int, data: bytes) -> bytes:
        """The tag of ``data`` under pseudonym key ``version`` (``codec``)."""
        pseudonymiser = self._crypto.pseudonymisers.get(version)
        if pseudonymiser is None:
            self._crypto = self._refresh_crypto()
            pseudonymiser = self._crypto.pseudonymisers.get(version)
            if pseudonymiser is None:
                raise CorruptRecord(f"a key names pseudonym key version {version}, which is gone")
        return pseudonymiser.tag(data)

    def _memo_tag(self, version: int, data: bytes) -> bytes:
        """``_tag``, remembered for the transaction (tags of institutions, met per item)."""
        tag = self._tags.get((version, data))
        if tag is None:
            tag = self._tags[(version, data)] = self._tag(version, data)
        return tag

    def _last_with_prefix(self, database: bytes, prefix: bytes) -> bytes | None:
        """The greatest key of ``database`` that starts with ``prefix``."""
        cursor = self._txn.cursor(db=self._db[database])
        after = (int.from_bytes(prefix, "big") + 1).to_bytes(len(prefix) + 1, "big")[1:]
        overflowed = after == bytes(len(prefix))
        beyond = not overflowed and cursor.set_range(after)  # the first key past the prefix
        positioned = cursor.prev() if beyond else cursor.last()
        if positioned and cursor.key().startswith(prefix):
            return cursor.key()
        return None

    def _range(self, database: bytes, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of ``database`` whose key starts with ``prefix``."""
        cursor = self._txn.cursor(db=self._db[database])
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value

    def _keys_from(self, database: bytes, after: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of ``database`` after the key ``after`` (from the first if None)."""
        cursor = self._txn.cursor(db=self._db[database])
        positioned = cursor.set_range(after) if after is not None else cursor.first()
        if positioned and after is not None and cursor.key() == after:
            positioned = cursor.next()
        while positioned:
            yield cursor.key(), cursor.value()
            positioned = cursor.next()

    def _open(self, database: bytes, key: bytes, sealed: bytes) -> bytes:
        return self._open_marked(database, key, sealed)[0]

    def _open_marked(self, database: bytes, key: bytes, sealed: bytes) -> tuple[bytes, bool]:
        """The plaintext, and whether it was padded (store format 4) or not (format 3)."""
        try:
            return self._unsealed(database, key, sealed)
        except MissingKeyVersion:
            self._crypto = self._refresh_crypto()  # a newer keyring may have it
        except SealError as error:
            raise _corrupt(database, error) from None
        try:
            return self._unsealed(database, key, sealed)
        except SealError as error:
            raise _corrupt(database, error) from None

    def _unsealed(self, database: bytes, key: bytes, sealed: bytes) -> tuple[bytes, bool]:
        sealer = self._crypto.sealer
        try:
            padded = sealer.open(sealed, sealed_place(database, key))
        except MissingKeyVersion:
            raise
        except SealError:
            return sealer.open(sealed, associated_data(database, key)), False
        try:
            return unpad(padded), True
        except ValueError as error:
            raise _corrupt(database, error) from None

    def _get_opened(self, database: bytes, key: bytes) -> bytes | None:
        sealed = self._txn.get(key, db=self._db[database])
        return None if sealed is None else self._open(database, key, sealed)


class WriteTxnBase(TxnBase):
    """A write transaction: values are sealed under the key version all writers use."""

    def __init__(self, *opened: Any, seal_version: int, pseudonym_version: int) -> None:
        """``opened``: as for ``TxnBase``."""
        super().__init__(*opened)
        self.seal_version = seal_version
        self.pseudonym_version = pseudonym_version

    def _put(self, database: bytes, key: bytes, plaintext: bytes) -> None:
        sealed = self._crypto.sealer.seal(
            pad(plaintext), sealed_place(database, key), self.seal_version
        )
        self._txn.put(key, sealed, db=self._db[database])

    def _put_index(self, database: bytes, key: bytes, value: bytes = b"") -> None:
        self._txn.put(key, value, db=self._db[database])

    def _delete(self, database: bytes, key: bytes) -> None:
        self._txn.delete(key, db=self._db[database])


def _corrupt(database: bytes, error: Exception) -> CorruptRecord:
    return CorruptRecord(f"a {database.decode()} record failed to open: {error}")
