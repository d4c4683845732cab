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
from kfr_grpc.store import codec
from kfr_grpc.store.institutions import InstitutionWrites
from kfr_grpc.store.layout import (
    BY_INSTITUTION,
    CANARY,
    CANARY_KEY,
    COLLECTION_ACCOUNTS,
    ENDED_BY_DATE,
    FORMAT_KEY,
    LOOKUP_COUNTS,
    META,
    PSEUDONYM_VERSION_KEY,
    RELATIONSHIPS,
    SEAL_VERSION_KEY,
    SEALED_DATABASES,
    STORE_FORMAT,
    TAGGED_FORMAT,
    UNPADDED_FORMAT,
    UNTAGGED_FORMAT,
    associated_data,
    is_unsealed_entry,
)
from kfr_grpc.store.records import RecordWrites
from kfr_grpc.store.relationships import RelationshipWrites

if TYPE_CHECKING:
    from kfr_grpc.store.lmdb_store import LmdbWriteTxn

_T = TypeVar("_T")
Writer = Callable[[Callable[["LmdbWriteTxn"], _T]], _T]
_BATCH = 1000
_SCAN = 20 * _BATCH  # keys a move batch looks at, at most


class RotationWrites(RelationshipWrites, InstitutionWrites, RecordWrites):
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
            if is_unsealed_entry(database, key):
                continue  # a legacy index entry: moved (and sealed) by ``kfr migrate``
            plaintext, padded = self._open_marked(database, key, sealed)
            if padded and sealed_version(sealed) == self.seal_version:
                continue
            self._put(database, key, plaintext)
            resealed += 1
        last = batch[-1][0] if batch and more else None
        return last, len(batch), resealed

    def mark_padded(self) -> None:
        """Every value is padded now (after a whole re-seal): a store of format 3 is 4."""
        if self._txn.get(FORMAT_KEY, db=self._db[META]) == UNPADDED_FORMAT:
            self._txn.put(FORMAT_KEY, UNTAGGED_FORMAT, db=self._db[META])

    def store_format(self) -> bytes:
        return self._txn.get(FORMAT_KEY, db=self._db[META])

    def seal_versions_in_use(self) -> set[int]:
        """Every seal key version some value is sealed with (a scan of the whole store)."""
        versions = {sealed_version(self._txn.get(CANARY_KEY, db=self._db[META]))}
        for database in SEALED_DATABASES:
            for key, sealed in self._txn.cursor(db=self._db[database]):
                if not is_unsealed_entry(database, key):
                    versions.add(sealed_version(sealed))
        return versions

    def reseal_canary(self) -> None:
        canary = self._crypto.sealer.seal(
            CANARY, associated_data(META, CANARY_KEY), self.seal_version
        )
        self._txn.put(CANARY_KEY, canary, db=self._db[META])

    def relationships_to_move(
        self, after: bytes | None, limit: int
    ) -> tuple[list[bytes], bytes | None]:
        """Up to ``limit`` relationship keys after ``after`` that are not in the current
        pseudonym version's tagged layout, and the key to go on after (None: the end).
        Looks at no more than ``_SCAN`` keys, so a batch holds the writer lock briefly."""
        keys: list[bytes] = []
        cursor = self._txn.cursor(db=self._db[RELATIONSHIPS])
        positioned = cursor.set_range(after) if after is not None else cursor.first()
        if positioned and after is not None and cursor.key() == after:
            positioned = cursor.next()
        last: bytes | None = None
        for _ in range(_SCAN):
            if not positioned:
                return keys, None
            last = cursor.key()
            if last[0] != self.pseudonym_version or codec.is_legacy_relationship(last):
                keys.append(last)
                if len(keys) >= limit:
                    return keys, last
            positioned = cursor.next()
        # The last key looked at: the next call goes on after it (not after the next one,
        # which nobody has looked at yet).
        return keys, last if positioned else None

    def move_relationship(self, key: bytes) -> None:
        """Moves one record to the current pseudonym version's tagged key."""
        stored = self._stored_history(key)
        if stored is None:
            return
        found = self._locate(stored.customer, stored.institution, stored.role, stored.kind)
        if found is not None and found.key != key:
            old = self._read_record(key)
            assert old is not None
            self._delete_record(old)  # a newer copy wins
            self._active_delta -= is_active(old.history)
            return
        self.put_history(
            stored.customer, stored.institution, stored.role, stored.kind, stored.periods
        )

    def move_collection_accounts(self) -> int:
        """Moves every collection account to the current version's tag; how many moved."""
        moved = 0
        for account, org_number in list(self.collection_accounts()):
            current = codec.collection_key(
                self.pseudonym_version,
                self._tag(self.pseudonym_version, codec.collection_tag_data(account)),
            )
            if self._txn.get(current, db=self._db[COLLECTION_ACCOUNTS]) is None:
                self.put_collection_account(account, org_number)
                moved += 1
        return moved

    def move_lookup_counts(self, after: bytes | None, limit: int) -> tuple[int, bytes | None]:
        """Moves up to ``limit`` counters after ``after`` to the current version's tag;
        how many moved and the key to go on after (None: the end)."""
        stale: list[tuple[bytes, bytes]] = []
        last: bytes | None = None
        for key, sealed in self._keys_from(LOOKUP_COUNTS, after):
            if len(stale) >= limit:
                break
            last = key
            plaintext = self._open(LOOKUP_COUNTS, key, sealed)
            if codec.is_legacy_lookup_count(plaintext) or key[4] != self.pseudonym_version:
                stale.append((key, plaintext))
        else:
            last = None
        for key, plaintext in stale:
            day, agency, mandate, _ = codec.decode_lookup_count(key, plaintext)
            self.add_lookup_counts(day, agency, mandate, {})
        return len(stale), last

    def anything_to_move(self) -> bool:
        """Whether some record, account or counter is not in the current version's tagged
        layout (a scan of the three)."""
        after: bytes | None = None
        while True:
            keys, after = self.relationships_to_move(after, 1)
            if keys:
                return True
            if after is None:
                break
        if any(
            len(key) != 1 + codec.NAME_TAG_BYTES or key[0] != self.pseudonym_version
            for key in self._txn.cursor(db=self._db[COLLECTION_ACCOUNTS]).iternext(values=False)
        ):
            return True
        return self._stale_counts()

    def _stale_counts(self) -> bool:
        for key, sealed in self._txn.cursor(db=self._db[LOOKUP_COUNTS]):
            plaintext = self._open(LOOKUP_COUNTS, key, sealed)
            if codec.is_legacy_lookup_count(plaintext) or key[4] != self.pseudonym_version:
                return True
        return False

    def drop_orphaned_legacy_entries(
        self, database: bytes, after: bytes | None
    ) -> tuple[int, bytes | None]:
        """Deletes legacy-layout entries of index ``database`` whose record is gone (a
        record's own go when it moves), among up to ``_SCAN`` keys after ``after``: none
        may keep an org number in clear once the store is format 5. How many it deleted,
        and the key to go on after (None: the end)."""
        orphans: list[bytes] = []
        last: bytes | None = None
        for count, (key, value) in enumerate(self._keys_from(database, after)):
            if count == _SCAN:
                break
            last = key
            if is_unsealed_entry(database, key):
                record = value if database == BY_INSTITUTION else key[4:]
                if self._txn.get(record, db=self._db[RELATIONSHIPS]) is None:
                    orphans.append(key)
        else:
            last = None
        for key in orphans:
            self._delete(database, key)
        return len(orphans), last

    def mark_tagged(self) -> None:
        """Nothing is left in the legacy layout: the store is of the current format (a
        store of format 5 needs no move: its records are of unspecified kind)."""
        if self.store_format() in (UNTAGGED_FORMAT, TAGGED_FORMAT):
            self._txn.put(FORMAT_KEY, STORE_FORMAT, db=self._db[META])


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
        retired.update(
            set(keyring.seal.versions) - in_use - {txn.seal_version, keyring.seal.primary}
        )
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
    """Moves every relationship, collection account and lookup counter to the current
    pseudonym version's tagged keys (from older versions, and from the legacy layout of
    store format 4), then retires the other versions.

    Lookups stay correct throughout: readers look under every version the keyring holds,
    and in the legacy layout until the store says it holds none.
    """
    moved = batches = 0
    after: bytes | None = None
    while True:
        if stop_after_batches is not None and batches >= stop_after_batches:
            return MigrationResult(moved, moved, (), finished=False)
        count, after = write(lambda txn, after=after: _move_batch(txn, after, batch))
        moved += count
        batches += 1
        progress(count)
        if after is None:
            break
    moved += write(lambda txn: txn.move_collection_accounts())
    for database in (BY_INSTITUTION, ENDED_BY_DATE):
        _in_batches(
            write, lambda txn, after, d=database: txn.drop_orphaned_legacy_entries(d, after)
        )
    moved += _in_batches(write, lambda txn, after: txn.move_lookup_counts(after, batch))
    with keyring_lock(keyring_path):  # before the write, as rotate takes them: no deadlock
        retired = write(lambda txn: _retire_pseudonym_versions(txn, keyring_path))
    if retired is None:
        return MigrationResult(moved, moved, (), finished=False)  # a writer was faster
    return MigrationResult(moved, moved, retired, finished=True)


def migrate(write: Writer, keyring_path: Path, progress: Progress) -> MigrationResult:
    """Brings a store of an older format to the current one, online: rewrites a keyring of
    format 1 as Tink keysets (the same keys), pads values sealed without padding (store
    format 3), then moves everything to the tagged layout (format 5)."""
    Keyring.update(keyring_path, _as_tink_keysets)
    if write(lambda txn: txn.store_format()) == UNPADDED_FORMAT:
        reseal(write, keyring_path, progress)
    return repseudonymise(write, keyring_path, progress)


def _as_tink_keysets(keyring: Keyring) -> Keyring:
    return replace(keyring, raw_keys_format=False) if keyring.raw_keys_format else keyring


def _in_batches(
    write: Writer, step: Callable[[LmdbWriteTxn, bytes | None], tuple[int, bytes | None]]
) -> int:
    """Runs ``step`` (a count and the key to go on after, None at the end) in one write
    transaction after another until it reaches the end; the counts added up."""
    total, after = 0, None
    while True:
        count, after = write(lambda txn, after=after: step(txn, after))
        total += count
        if after is None:
            return total


def _move_batch(txn: LmdbWriteTxn, after: bytes | None, batch: int) -> tuple[int, bytes | None]:
    keys, after = txn.relationships_to_move(after, batch)
    for key in keys:
        txn.move_relationship(key)
    return len(keys), after


def _retire_pseudonym_versions(txn: LmdbWriteTxn, keyring_path: Path) -> tuple[int, ...] | None:
    if txn.anything_to_move():
        return None
    txn.mark_tagged()
    old: set[int] = set()

    def without_old(keyring: Keyring) -> Keyring:
        old.update(
            set(keyring.pseudonym.versions) - {txn.pseudonym_version, keyring.pseudonym.primary}
        )
        if not old:
            return keyring
        return replace(keyring, pseudonym=keyring.pseudonym.without(old))

    Keyring.change_file(keyring_path, without_old)
    return tuple(sorted(old))
