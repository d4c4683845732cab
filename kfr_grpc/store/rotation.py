"""Key rotation on a live store: adding key versions, re-sealing, re-pseudonymising, and
retiring versions nothing uses any more.

The keyring file holds the keys; the store's ``meta`` says which versions new writes
use. ``rotate`` adds a version to the file and then switches the store to it, so every
process (each reads the versions inside its write transaction, and re-reads the
keyring file when it meets a version it lacks) writes with the new key from then on.
Old values stay readable. ``reseal`` and ``repseudonymise`` then move old data to the new
version in batches (each batch one transaction: an interrupted run loses nothing and
continues where it stopped when run again) and finally retire the old versions, inside a
write transaction that first proves nothing uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from kfr_grpc.keyring import Keyring, keyring_lock, sealed_version
from kfr_grpc.register.model import is_active
from kfr_grpc.register.storage import MigrationResult, Progress
from kfr_grpc.store.layout import (
    CANARY,
    CANARY_KEY,
    FORMAT_KEY,
    META,
    PSEUDONYM_VERSION_KEY,
    RELATIONSHIPS,
    SEAL_VERSION_KEY,
    SEALED_DATABASES,
    STORE_FORMAT,
    associated_data,
)
from kfr_grpc.store.relationships import RelationshipWrites

if TYPE_CHECKING:
    from kfr_grpc.store.lmdb_store import LmdbWriteTxn

_T = TypeVar("_T")
Writer = Callable[[Callable[["LmdbWriteTxn"], _T]], _T]
_BATCH = 1000


class RotationWrites(RelationshipWrites):
    def set_write_versions(self, *, seal: int | None = None, pseudonym: int | None = None) -> None:
        """Makes every later write, in every process, use these key versions."""
        meta = self._db[META]
        if seal is not None:
            self._txn.put(SEAL_VERSION_KEY, str(seal).encode(), db=meta)
        if pseudonym is not None:
            self._txn.put(PSEUDONYM_VERSION_KEY, str(pseudonym).encode(), db=meta)

    def reseal_batch(
        self, database: bytes, after: bytes | None, limit: int
    ) -> tuple[bytes | None, int, int]:
        """Re-seals values not under the current seal version, or sealed without padding
        (store format 3), from the key after ``after``.

        Returns the last key looked at (None once the database is done), how many values
        were looked at and how many were re-sealed.
        """
        batch: list[tuple[bytes, bytes]] = []
        more = False
        for item in self._keys_from(database, after):
            if len(batch) == limit:
                more = True
                break
            batch.append(item)
        resealed = 0
        for key, sealed in batch:
            plaintext, padded = self._open_marked(database, key, sealed)
            if padded and sealed_version(sealed) == self.seal_version:
                continue
            self._put(database, key, plaintext)
            resealed += 1
        last = batch[-1][0] if batch and more else None
        return last, len(batch), resealed

    def mark_padded(self) -> None:
        """Every value is padded now (after a whole re-seal): the store is format 4."""
        self._txn.put(FORMAT_KEY, STORE_FORMAT, db=self._db[META])

    def seal_versions_in_use(self) -> set[int]:
        """Every seal key version some value is sealed with (a scan of the whole store)."""
        versions = {sealed_version(self._txn.get(CANARY_KEY, db=self._db[META]))}
        for database in SEALED_DATABASES:
            for sealed in self._txn.cursor(db=self._db[database]).iternext(keys=False):
                versions.add(sealed_version(sealed))
        return versions

    def reseal_canary(self) -> None:
        canary = self._crypto.sealer.seal(
            CANARY, associated_data(META, CANARY_KEY), self.seal_version
        )
        self._txn.put(CANARY_KEY, canary, db=self._db[META])

    def relationships_under_old_pseudonyms(self, limit: int) -> list[bytes]:
        """Up to ``limit`` relationship keys made with another than the current version."""
        keys = []
        for key in self._txn.cursor(db=self._db[RELATIONSHIPS]).iternext(values=False):
            if key[0] == self.pseudonym_version:
                continue
            keys.append(key)
            if len(keys) >= limit:
                break
        return keys

    def move_relationship(self, key: bytes) -> None:
        """Moves one record to the current pseudonym version (key rotation)."""
        stored = self._stored_history(key)
        if stored is None:
            return
        found = self._locate(stored.customer, stored.institution, stored.role)
        if found is not None and found.key != key:
            old = self._read_record(key)
            assert old is not None
            self._delete_record(old)  # a newer copy wins
            self._active_delta -= is_active(old.history)
            return
        self.put_history(stored.customer, stored.institution, stored.role, stored.periods)


def rotate(write: Writer, keyring_path: Path, *, pseudonym: bool) -> int:
    """Adds a new seal (or pseudonym) key version and makes new writes use it; under the
    keyring's lock, so that rotations at once add one version each, in order."""
    with keyring_lock(keyring_path):
        keyring = Keyring.load(keyring_path)
        if pseudonym:
            keyring = replace(keyring, pseudonym=keyring.pseudonym.rotated())
            version = keyring.pseudonym.primary
        else:
            keyring = replace(keyring, seal=keyring.seal.rotated())
            version = keyring.seal.primary
        keyring.replace_file(keyring_path)
        if pseudonym:
            write(lambda txn: txn.set_write_versions(pseudonym=version))
        else:
            write(lambda txn: txn.set_write_versions(seal=version))
    return version


def reseal(write: Writer, keyring_path: Path, progress: Progress) -> MigrationResult:
    """Re-seals every value under the current seal version, then retires unused versions."""
    examined = changed = 0
    for database in SEALED_DATABASES:
        after: bytes | None = None
        while True:
            after, scanned, resealed = write(
                lambda txn, after=after, database=database: txn.reseal_batch(
                    database, after, _BATCH
                )
            )
            examined += scanned
            changed += resealed
            progress(scanned)
            if after is None:
                break
    write(lambda txn: txn.mark_padded())
    with keyring_lock(keyring_path):  # before the write, as rotate takes them: no deadlock
        retired = write(lambda txn: _retire_seal_versions(txn, keyring_path))
    return MigrationResult(examined, changed, retired, finished=True)


def _retire_seal_versions(txn: LmdbWriteTxn, keyring_path: Path) -> tuple[int, ...]:
    txn.reseal_canary()
    in_use = txn.seal_versions_in_use()
    retired: set[int] = set()

    def without_unused(keyring: Keyring) -> Keyring:
        retired.update(set(keyring.seal.keys) - in_use - {txn.seal_version, keyring.seal.primary})
        if not retired:
            return keyring
        return replace(keyring, seal=keyring.seal.without(retired))

    Keyring.change_file(keyring_path, without_unused)
    return tuple(sorted(retired))


def repseudonymise(
    write: Writer,
    keyring_path: Path,
    progress: Progress,
    *,
    stop_after_batches: int | None = None,
    batch: int = _BATCH,
) -> MigrationResult:
    """Moves every relationship to the current pseudonym version, then retires the others.

    Lookups stay correct throughout: readers look under every version the keyring holds.
    """
    moved = batches = 0
    while True:
        if stop_after_batches is not None and batches >= stop_after_batches:
            return MigrationResult(moved, moved, (), finished=False)
        count = write(lambda txn: _move_batch(txn, batch))
        moved += count
        batches += 1
        progress(count)
        if count < batch:
            break
    with keyring_lock(keyring_path):  # before the write, as rotate takes them: no deadlock
        retired = write(lambda txn: _retire_pseudonym_versions(txn, keyring_path))
    if retired is None:
        return MigrationResult(moved, moved, (), finished=False)  # a writer was faster
    return MigrationResult(moved, moved, retired, finished=True)


def _move_batch(txn: LmdbWriteTxn, batch: int) -> int:
    keys = txn.relationships_under_old_pseudonyms(batch)
    for key in keys:
        txn.move_relationship(key)
    return len(keys)


def _retire_pseudonym_versions(txn: LmdbWriteTxn, keyring_path: Path) -> tuple[int, ...] | None:
    if txn.relationships_under_old_pseudonyms(1):
        return None
    old: set[int] = set()

    def without_old(keyring: Keyring) -> Keyring:
        old.update(set(keyring.pseudonym.keys) - {txn.pseudonym_version, keyring.pseudonym.primary})
        if not old:
            return keyring
        return replace(keyring, pseudonym=keyring.pseudonym.without(old))

    Keyring.change_file(keyring_path, without_old)
    return tuple(sorted(old))
