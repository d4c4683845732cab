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
from dataclasses import dataclass
from pathlib import Path

from kfr_grpc.keyring import Keyring
from kfr_grpc.store.lmdb_store import SEALED_DATABASES, Store

Progress = Callable[[int], None]
_BATCH = 1000


@dataclass(frozen=True, slots=True)
class MigrationResult:
    examined: int  # values (reseal) or relationships (repseudonymise) looked at
    changed: int  # re-sealed or moved
    retired: tuple[int, ...]  # key versions removed from the keyring
    finished: bool  # False when stopped early (run again to continue)


def rotate(store: Store, keyring_path: Path, *, pseudonym: bool) -> int:
    """Adds a new seal (or pseudonym) key version and makes new writes use it."""
    keyring = Keyring.load(keyring_path)
    if pseudonym:
        rotated = Keyring(keyring.id, keyring.seal, keyring.pseudonym.rotated())
        version = rotated.pseudonym.primary
    else:
        rotated = Keyring(keyring.id, keyring.seal.rotated(), keyring.pseudonym)
        version = rotated.seal.primary
    rotated.replace_file(keyring_path)
    with store.write() as txn:
        if pseudonym:
            txn.set_write_versions(pseudonym=version)
        else:
            txn.set_write_versions(seal=version)
    return version


def reseal(
    store: Store, keyring_path: Path, *, progress: Progress = lambda _: None
) -> MigrationResult:
    """Re-seals every value under the current seal version, then retires unused versions."""
    examined = changed = 0
    for database in SEALED_DATABASES:
        after: bytes | None = None
        while True:
            with store.write() as txn:
                after, scanned, resealed = txn.reseal_batch(database, after, _BATCH)
            examined += scanned
            changed += resealed
            progress(scanned)
            if after is None:
                break
    with store.write() as txn:
        txn.reseal_canary()
        in_use = txn.seal_versions_in_use()
        keyring = Keyring.load(keyring_path)
        unused = set(keyring.seal.keys) - in_use - {txn.seal_version, keyring.seal.primary}
        if unused:
            Keyring(keyring.id, keyring.seal.without(unused), keyring.pseudonym).replace_file(
                keyring_path
            )
    return MigrationResult(examined, changed, tuple(sorted(unused)), finished=True)


def repseudonymise(
    store: Store,
    keyring_path: Path,
    *,
    progress: Progress = lambda _: None,
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
        with store.write() as txn:
            keys = txn.relationships_under_old_pseudonyms(batch)
            for key in keys:
                txn.move_relationship(key)
        moved += len(keys)
        batches += 1
        progress(len(keys))
        if len(keys) < batch:
            break
    with store.write() as txn:
        if txn.relationships_under_old_pseudonyms(1):
            return MigrationResult(moved, moved, (), finished=False)  # a writer was faster
        keyring = Keyring.load(keyring_path)
        old = set(keyring.pseudonym.keys) - {txn.pseudonym_version, keyring.pseudonym.primary}
        if old:
            Keyring(keyring.id, keyring.seal, keyring.pseudonym.without(old)).replace_file(
                keyring_path
            )
    return MigrationResult(moved, moved, tuple(sorted(old)), finished=True)
