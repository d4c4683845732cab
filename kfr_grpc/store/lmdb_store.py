"""The register's LMDB environment.

Sub-databases (layouts in ``codec``):
- ``meta``: store format, keyring id, a sealed canary proving the keyring opens the
  store, and the seal and pseudonym key versions that every new write must use. Writers
  read those versions inside their own transaction, so a rotation takes effect in every
  process at the same instant.
- ``institutions``: org number -> sealed institution record.
- ``relationships``: pseudonymised key -> sealed history of one (customer, institution,
  role).
- ``by_institution``, ``ended_by_date``: indexes over relationships, so that closing an
  institution costs what it has and retention costs what it deletes.
- ``collection_accounts``: account number -> sealed org number.
- ``request_log`` (+ ``request_log_by_time``): sealed records of institutions' calls.
- ``lookup_counts``: sealed per-day counters of lookups by agency and mandate.

Every value outside ``meta`` and the indexes is sealed with ``database name || key`` as
associated data. Several processes may open the environment at once (the server, the
``kfr`` admin commands); LMDB serialises writers.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import lmdb

from kfr_grpc.errors import ConfigError, CorruptRecord, StoreFull
from kfr_grpc.keyring import (
    FixedKeyring,
    Keyring,
    KeyringProvider,
    MissingKeyVersion,
    Pseudonymiser,
    Sealer,
    SealError,
    sealed_version,
)
from kfr_grpc.register.customer_ids import CustomerId
from kfr_grpc.register.model import (
    History,
    Institution,
    RequestRecord,
    Role,
    RoleHistory,
    StoredHistory,
)
from kfr_grpc.store import codec
from kfr_grpc.store.mapsize import MapGuard

log = logging.getLogger("kfr.store")

STORE_FORMAT = b"3"
META = b"meta"
INSTITUTIONS = b"institutions"
RELATIONSHIPS = b"relationships"
BY_INSTITUTION = b"by_institution"
ENDED_BY_DATE = b"ended_by_date"
COLLECTION_ACCOUNTS = b"collection_accounts"
REQUEST_LOG = b"request_log"
REQUEST_LOG_BY_TIME = b"request_log_by_time"
LOOKUP_COUNTS = b"lookup_counts"
SEALED_DATABASES = (INSTITUTIONS, RELATIONSHIPS, COLLECTION_ACCOUNTS, REQUEST_LOG, LOOKUP_COUNTS)
_DATABASES = (*SEALED_DATABASES, BY_INSTITUTION, ENDED_BY_DATE, REQUEST_LOG_BY_TIME)

_FORMAT_KEY = b"format"
_KEYRING_ID_KEY = b"keyring_id"
CANARY_KEY = b"canary"
_CANARY = b"kfr store canary"
SEAL_VERSION_KEY = b"seal_version"
PSEUDONYM_VERSION_KEY = b"pseudonym_version"
ACTIVE_KEY = b"active_relationships"  # how many relationships have an active period
_MAX_READERS = 1024
_STORE_FULL_AT_MAXIMUM = (
    "the register's store is full: it reached store.max_map_size_mb (or the disk is full)"
)
DEFAULT_MAX_MAP_SIZE = 1 << 40  # 1 TiB of address space: the map grows up to this


@dataclass(frozen=True, slots=True)
class _Record:
    """A stored relationship: its key, its history and its by-institution slot."""

    key: bytes
    history: History
    slot: int


def associated_data(database: bytes, key: bytes) -> bytes:
    return database + b"\x00" + key


class _Crypto:
    """The sealer and pseudonymisers of one keyring version (rebuilt when it changes)."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.sealer: Sealer = keyring.sealer()
        self.pseudonymisers: dict[int, Pseudonymiser] = {
            version: keyring.pseudonymiser(version) for version in keyring.pseudonym.keys
        }
        # Every pseudonym version that may hold data, newest first.
        self.newest_first = sorted(self.pseudonymisers.items(), reverse=True)

    def has(self, seal_version: int, pseudonym_version: int) -> bool:
        return self.sealer.has_version(seal_version) and pseudonym_version in self.pseudonymisers


class Store:
    """An open LMDB environment with the register's layout. Thread-safe."""

    def __init__(
        self,
        env: lmdb.Environment,
        databases: dict[bytes, Any],
        keys: KeyringProvider,
        *,
        max_map_size: int,
    ) -> None:
        self._env = env
        self._map = MapGuard(env, max_bytes=max_map_size)
        self._databases = databases
        self._keys = keys
        self._crypto = _Crypto(keys.get())
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
    ) -> Store:
        """Opens (or, unless ``readonly``, creates) the store in ``path``.

        ``map_size`` is where the LMDB map starts; it grows by itself up to
        ``max_map_size``.

        Refuses, before writing anything, a directory written under another keyring.
        """
        keys = FixedKeyring(keyring) if isinstance(keyring, Keyring) else keyring
        if readonly and not (path / "data.mdb").is_file():
            raise ConfigError(f"{path} holds no KFR store (no data.mdb)")
        if not readonly:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=len(_DATABASES) + 1,
                max_readers=_MAX_READERS,
                mode=0o600,
                readahead=False,
                readonly=readonly,
                lock=not readonly,
            )
        except lmdb.Error as error:
            raise ConfigError(f"cannot open the data directory {path}: {error}") from None
        try:
            _check_or_initialise(env, path, keys.get(), readonly=readonly)
            # Handles opened outside a transaction stay valid for the environment's life
            # (opening existing databases writes nothing).
            databases = {name: env.open_db(name, create=False) for name in (*_DATABASES, META)}
        except BaseException:
            env.close()
            raise
        store = cls(env, databases, keys, max_map_size=max(max_map_size, map_size))
        if not readonly:
            store._count_active_if_unknown()
        return store

    def _count_active_if_unknown(self) -> None:
        """Stores written before the active count was kept get it counted once."""
        with self.write() as txn:
            if txn._txn.get(ACTIVE_KEY, db=self._databases[META]) is not None:
                return
            active = 0
            for key, sealed in txn._txn.cursor(db=self._databases[RELATIONSHIPS]):
                _, history, _ = codec.decode_relationship(txn._open(RELATIONSHIPS, key, sealed))
                active += _is_active(history)
            txn._txn.put(ACTIVE_KEY, str(active).encode(), db=self._databases[META])

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

    @contextlib.contextmanager
    def read(self) -> Iterator[StoreView]:
        """A consistent snapshot for reading."""
        with self._map.transaction(lambda: self._env.begin(buffers=False)) as txn, txn:
            pseudonym_version = _meta_number(txn, self._databases[META], PSEUDONYM_VERSION_KEY)
            crypto = self._current_crypto()
            if pseudonym_version not in crypto.pseudonymisers:
                crypto = self._refreshed_crypto()
            yield StoreView(self, txn, crypto)

    @contextlib.contextmanager
    def write(self) -> Iterator[StoreTxn]:
        """One write transaction: committed when the block ends, aborted if it raises."""
        self._map.ensure_headroom()
        full = False
        with self._map.transaction(lambda: self._env.begin(write=True)) as txn:
            try:
                store_txn = self._write_transaction(txn)
                yield store_txn
                store_txn.flush_counters()
                txn.commit()
            except lmdb.MapFullError:
                txn.abort()
                full = True
            except BaseException:
                txn.abort()
                raise
        if full:  # only at the maximum size: below it, the headroom makes every write fit
            self._map.grow()
            raise StoreFull(_STORE_FULL_AT_MAXIMUM)

    def _write_transaction(self, txn: lmdb.Transaction) -> StoreTxn:
        meta = self._databases[META]
        seal_version = _meta_number(txn, meta, SEAL_VERSION_KEY)
        pseudonym_version = _meta_number(txn, meta, PSEUDONYM_VERSION_KEY)
        crypto = self._current_crypto()
        if not crypto.has(seal_version, pseudonym_version):
            crypto = self._refreshed_crypto()
        if not crypto.has(seal_version, pseudonym_version):
            raise ConfigError(
                f"the store writes with seal key version {seal_version} and pseudonym key "
                f"version {pseudonym_version}, but the keyring lacks one of them"
            )
        return StoreTxn(self, txn, crypto, seal_version, pseudonym_version)

    def copy_to(self, destination: Path) -> None:
        """A consistent, compacted copy of the environment (a backup), taken while in use."""
        with self._map.transaction(lambda: None):
            self._env.copy(str(destination), compact=True)

    def _current_crypto(self) -> _Crypto:
        keyring = self._keys.get()
        crypto = self._crypto
        if crypto.keyring is not keyring:
            crypto = self._crypto = _Crypto(keyring)
        return crypto

    def _refreshed_crypto(self) -> _Crypto:
        self._keys.refresh()
        return self._current_crypto()


class StoreView:
    """Reads within one transaction."""

    def __init__(self, store: Store, txn: lmdb.Transaction, crypto: _Crypto) -> None:
        self._store = store
        self._txn = txn
        self._crypto = crypto
        self._db = store._databases

    # --- relationships ---------------------------------------------------------------------

    def relationship_count(self) -> int:
        """How many (customer, institution, role) records the store holds."""
        return self._txn.stat(self._db[RELATIONSHIPS])["entries"]

    def active_relationship_count(self) -> int:
        """How many of them have an active period (kept up to date by every write)."""
        return _meta_number(self._txn, self._db[META], ACTIVE_KEY)

    def map_use(self) -> tuple[int, int]:
        """(bytes in use, bytes the map allows now): how full the store is."""
        return self._store._map.usage()

    def sealed_value_count(self) -> int:
        return sum(self._txn.stat(self._db[name])["entries"] for name in SEALED_DATABASES)

    def relationships(
        self, customer: CustomerId, institution: str | None = None
    ) -> Iterator[RoleHistory]:
        """Every role history of ``customer`` (at ``institution``, if given): range reads."""
        for version, pseudonymiser in self._crypto.newest_first:
            pseudonym = pseudonymiser.pseudonym(customer.digits)
            prefix = codec.relationship_prefix(version, pseudonym, institution)
            for key, sealed in self._range(RELATIONSHIPS, prefix):
                _, org_number, role = codec.split_relationship_key(key)
                _, history, _ = codec.decode_relationship(self._open(RELATIONSHIPS, key, sealed))
                yield RoleHistory(org_number, role, history)

    def history(self, customer: CustomerId, institution: str, role: Role) -> History:
        """The periods of one (customer, institution, role); empty if never reported."""
        found = self._locate(customer, institution, role)
        return found.history if found is not None else ()

    def institution_histories(self, institution: str) -> Iterator[StoredHistory]:
        """Every relationship of ``institution``, through the by-institution index."""
        for _, relationship in self._range(BY_INSTITUTION, codec.org_key(institution)):
            yield self.stored_history(relationship)

    def ended_entries(
        self, before: date, after: bytes | None, limit: int
    ) -> list[tuple[bytes, date, bytes]]:
        """Up to ``limit`` entries of the ended-periods index with an end date before
        ``before``, from the one after ``after``: (index key, end date, relationship key)."""
        cursor = self._txn.cursor(db=self._db[ENDED_BY_DATE])
        positioned = cursor.set_range(after) if after is not None else cursor.first()
        if positioned and after is not None and cursor.key() == after:
            positioned = cursor.next()
        first_kept = codec.day_key(before)
        entries = []
        while positioned and len(entries) < limit:
            index_key = cursor.key()
            if index_key >= first_kept:
                break
            relationship = codec.relationship_of_index_key(index_key)
            entries.append((index_key, codec.day_of(index_key), relationship))
            positioned = cursor.next()
        return entries

    def stored_history(self, key: bytes) -> StoredHistory:
        sealed = self._txn.get(key, db=self._db[RELATIONSHIPS])
        if sealed is None:
            raise CorruptRecord("an index names a relationship that does not exist")
        _, institution, role = codec.split_relationship_key(key)
        customer, history, _ = codec.decode_relationship(self._open(RELATIONSHIPS, key, sealed))
        return StoredHistory(customer, institution, role, history)

    def _locate(self, customer: CustomerId, institution: str, role: Role) -> _Record | None:
        """Where the record is stored (under whichever pseudonym version), with its history."""
        for version, pseudonymiser in self._crypto.newest_first:
            pseudonym = pseudonymiser.pseudonym(customer.digits)
            key = codec.relationship_key(version, pseudonym, institution, role)
            found = self._read_record(key)
            if found is not None:
                return found
        return None

    def _read_record(self, key: bytes) -> _Record | None:
        sealed = self._txn.get(key, db=self._db[RELATIONSHIPS])
        if sealed is None:
            return None
        _, history, slot = codec.decode_relationship(self._open(RELATIONSHIPS, key, sealed))
        return _Record(key, history, slot)

    # --- institutions and collection accounts ------------------------------------------------

    def institution(self, org_number: str) -> Institution | None:
        key = codec.org_key(org_number)
        sealed = self._txn.get(key, db=self._db[INSTITUTIONS])
        if sealed is None:
            return None
        return codec.decode_institution(org_number, self._open(INSTITUTIONS, key, sealed))

    def institutions(self) -> Iterator[Institution]:
        for key, sealed in self._txn.cursor(db=self._db[INSTITUTIONS]):
            plaintext = self._open(INSTITUTIONS, key, sealed)
            yield codec.decode_institution(codec.org_from_key(key), plaintext)

    def collection_account_owner(self, account: str) -> str | None:
        key = account.encode("ascii")
        sealed = self._txn.get(key, db=self._db[COLLECTION_ACCOUNTS])
        if sealed is None:
            return None
        return self._open(COLLECTION_ACCOUNTS, key, sealed).decode("ascii")

    # --- request log and counters -------------------------------------------------------------

    def request_records(self, correlation_id: str) -> list[RequestRecord]:
        """Every record under ``correlation_id``, oldest first."""
        return [
            codec.decode_request(self._open(REQUEST_LOG, key, sealed))
            for key, sealed in self._range(REQUEST_LOG, codec.request_prefix(correlation_id))
        ]

    def count_request_records_before(self, before: datetime) -> int:
        return len(self._request_time_keys_before(before, limit=None))

    def _request_time_keys_before(self, before: datetime, limit: int | None) -> list[bytes]:
        first_kept = codec.time_key(before)
        keys = []
        for time_key in self._txn.cursor(db=self._db[REQUEST_LOG_BY_TIME]).iternext(values=False):
            if time_key >= first_kept or (limit is not None and len(keys) >= limit):
                break
            keys.append(time_key)
        return keys

    def lookup_counts(self) -> Iterator[tuple[date, str, str, dict[str, int]]]:
        """(day, agency, mandate, counts by status) for every counted day."""
        for key, sealed in self._txn.cursor(db=self._db[LOOKUP_COUNTS]):
            day, agency, mandate = codec.split_lookup_count_key(key)
            yield day, agency, mandate, codec.decode_counts(self._open(LOOKUP_COUNTS, key, sealed))

    # --- sealing --------------------------------------------------------------------------------

    def _range(self, database: bytes, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        cursor = self._txn.cursor(db=self._db[database])
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value

    def _open(self, database: bytes, key: bytes, sealed: bytes) -> bytes:
        try:
            return self._crypto.sealer.open(sealed, associated_data(database, key))
        except MissingKeyVersion:
            self._crypto = self._store._refreshed_crypto()  # a newer keyring may have it
        except SealError as error:
            raise CorruptRecord(f"a {database.decode()} record failed to open: {error}") from None
        try:
            return self._crypto.sealer.open(sealed, associated_data(database, key))
        except SealError as error:
            raise CorruptRecord(f"a {database.decode()} record failed to open: {error}") from None


class StoreTxn(StoreView):
    """Reads and writes within one write transaction."""

    def __init__(
        self,
        store: Store,
        txn: lmdb.Transaction,
        crypto: _Crypto,
        seal_version: int,
        pseudonym_version: int,
    ) -> None:
        super().__init__(store, txn, crypto)
        self.seal_version = seal_version
        self.pseudonym_version = pseudonym_version
        self._located: dict[tuple[str, str, Role], _Record | None] = {}
        self._current_keys: dict[tuple[str, str, Role], bytes] = {}
        self._next_slots: dict[str, int] = {}
        self._active_delta = 0

    # --- relationships -------------------------------------------------------------------------

    def put_history(
        self, customer: CustomerId, institution: str, role: Role, history: History
    ) -> None:
        """Stores ``history`` (an empty one deletes the record), keeping the indexes in step.

        A record found under an older pseudonym version moves to the current one.
        """
        memo = (customer.digits, institution, role)
        found = self._locate(customer, institution, role)
        was_active = found is not None and _is_active(found.history)
        if not history:
            if found is not None:
                self._delete_record(found)
            self._active_delta -= was_active
            self._located[memo] = None
            return
        key = self._current_key(customer, institution, role)
        moved = found is not None and found.key != key
        if moved:
            self._delete_record(found, keep_slot=True)
        slot = found.slot if found is not None else self._next_slot(institution)
        previous = found.history if found is not None and not moved else ()
        self._put(RELATIONSHIPS, key, codec.encode_relationship(customer, history, slot))
        self._active_delta += _is_active(history) - was_active
        if found is None or moved:
            self._put_index(BY_INSTITUTION, codec.slot_key(key, slot), key)
        if _any_ended(previous) or _any_ended(history):
            old_ended, new_ended = codec.ended_keys(key, previous), codec.ended_keys(key, history)
            for index_key in old_ended - new_ended:
                self._txn.delete(index_key, db=self._db[ENDED_BY_DATE])
            for index_key in new_ended - old_ended:
                self._put_index(ENDED_BY_DATE, index_key)
        self._located[memo] = _Record(key, history, slot)

    def move_relationship(self, key: bytes) -> None:
        """Moves one record to the current pseudonym version (key rotation)."""
        stored = self.stored_history(key)
        found = self._locate(stored.customer, stored.institution, stored.role)
        if found is not None and found.key != key:
            old = self._read_record(key)
            assert old is not None
            self._delete_record(old)  # a newer copy wins
            self._active_delta -= _is_active(old.history)
            return
        self.put_history(stored.customer, stored.institution, stored.role, stored.periods)

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

    def flush_counters(self) -> None:
        """Adds this transaction's change of the active count to ``meta`` (before commit)."""
        if self._active_delta:
            active = _meta_number(self._txn, self._db[META], ACTIVE_KEY) + self._active_delta
            self._txn.put(ACTIVE_KEY, str(active).encode(), db=self._db[META])
            self._active_delta = 0

    def drop_ended_entry(self, index_key: bytes) -> None:
        """Removes an ended-periods index entry whose period is gone (never expected)."""
        self._txn.delete(index_key, db=self._db[ENDED_BY_DATE])

    def _locate(self, customer: CustomerId, institution: str, role: Role) -> _Record | None:
        """As in a view, remembered for the transaction; the current version is tried first."""
        memo = (customer.digits, institution, role)
        if memo in self._located:
            return self._located[memo]
        found = self._read_record(self._current_key(customer, institution, role))
        for version, pseudonymiser in self._crypto.newest_first:
            if found is not None:
                break
            if version != self.pseudonym_version:
                pseudonym = pseudonymiser.pseudonym(customer.digits)
                key = codec.relationship_key(version, pseudonym, institution, role)
                found = self._read_record(key)
        self._located[memo] = found
        return found

    def _current_key(self, customer: CustomerId, institution: str, role: Role) -> bytes:
        """The record's key under the pseudonym version writes use (computed once)."""
        memo = (customer.digits, institution, role)
        key = self._current_keys.get(memo)
        if key is None:
            pseudonymiser = self._crypto.pseudonymisers[self.pseudonym_version]
            pseudonym = pseudonymiser.pseudonym(customer.digits)
            key = codec.relationship_key(self.pseudonym_version, pseudonym, institution, role)
            self._current_keys[memo] = key
        return key

    def _next_slot(self, institution: str) -> int:
        """The next free by-institution slot: one past the institution's last."""
        slot = self._next_slots.get(institution)
        if slot is None:
            slot = self._last_slot(institution) + 1
        self._next_slots[institution] = slot + 1
        return slot

    def _last_slot(self, institution: str) -> int:
        """The institution's highest slot in use, or -1."""
        prefix = codec.org_key(institution)
        cursor = self._txn.cursor(db=self._db[BY_INSTITUTION])
        if cursor.set_range(codec.org_key(str(int(institution) + 1))):
            positioned = cursor.prev()
        else:
            positioned = cursor.last()
        if positioned and cursor.key().startswith(prefix):
            return codec.slot_of(cursor.key())
        return -1

    def _delete_record(self, record: _Record, *, keep_slot: bool = False) -> None:
        self._txn.delete(record.key, db=self._db[RELATIONSHIPS])
        if not keep_slot:
            self._txn.delete(codec.slot_key(record.key, record.slot), db=self._db[BY_INSTITUTION])
        for index_key in codec.ended_keys(record.key, record.history):
            self._txn.delete(index_key, db=self._db[ENDED_BY_DATE])

    # --- institutions and collection accounts ----------------------------------------------------

    def put_institution(self, institution: Institution) -> None:
        key = codec.org_key(institution.org_number)
        self._put(INSTITUTIONS, key, codec.encode_institution(institution))

    def put_collection_account(self, account: str, org_number: str) -> None:
        self._put(COLLECTION_ACCOUNTS, account.encode("ascii"), org_number.encode("ascii"))

    def delete_collection_account(self, account: str) -> None:
        self._txn.delete(account.encode("ascii"), db=self._db[COLLECTION_ACCOUNTS])

    # --- request log and counters ----------------------------------------------------------------

    def put_request_record(self, record: RequestRecord) -> None:
        key = codec.request_key(record, next(self._store._request_sequence))
        self._put(REQUEST_LOG, key, codec.encode_request(record))
        self._put_index(REQUEST_LOG_BY_TIME, codec.request_time_key(key))

    def expire_request_records(self, before: datetime, limit: int) -> int:
        """Deletes up to ``limit`` request log records older than ``before``."""
        expired = self._request_time_keys_before(before, limit)
        for time_key in expired:
            self._txn.delete(time_key, db=self._db[REQUEST_LOG_BY_TIME])
            self._txn.delete(codec.request_of_time_key(time_key), db=self._db[REQUEST_LOG])
        return len(expired)

    def add_lookup_counts(
        self, day: date, agency: str, mandate: str, counts: dict[str, int]
    ) -> None:
        key = codec.lookup_count_key(day, agency, mandate)
        sealed = self._txn.get(key, db=self._db[LOOKUP_COUNTS])
        total = codec.decode_counts(self._open(LOOKUP_COUNTS, key, sealed)) if sealed else {}
        for status, count in counts.items():
            total[status] = total.get(status, 0) + count
        self._put(LOOKUP_COUNTS, key, codec.encode_counts(total))

    # --- key rotation ---------------------------------------------------------------------------

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
        """Re-seals values not under the current seal version, from the key after ``after``.

        Returns the last key looked at (None once the database is done), how many values
        were looked at and how many were re-sealed.
        """
        cursor = self._txn.cursor(db=self._db[database])
        positioned = cursor.set_range(after) if after is not None else cursor.first()
        if positioned and after is not None and cursor.key() == after:
            positioned = cursor.next()
        batch: list[tuple[bytes, bytes]] = []
        while positioned and len(batch) < limit:
            batch.append((cursor.key(), cursor.value()))
            positioned = cursor.next()
        stale = [(k, v) for k, v in batch if sealed_version(v) != self.seal_version]
        for key, sealed in stale:
            self._put(database, key, self._open(database, key, sealed))
        last = batch[-1][0] if batch and positioned else None
        return last, len(batch), len(stale)

    def seal_versions_in_use(self) -> set[int]:
        """Every seal key version some value is sealed with (a scan of the whole store)."""
        versions = {sealed_version(self._txn.get(CANARY_KEY, db=self._db[META]))}
        for database in SEALED_DATABASES:
            for sealed in self._txn.cursor(db=self._db[database]).iternext(keys=False):
                versions.add(sealed_version(sealed))
        return versions

    def reseal_canary(self) -> None:
        meta = self._db[META]
        canary = self._crypto.sealer.seal(
            _CANARY, associated_data(META, CANARY_KEY), self.seal_version
        )
        self._txn.put(CANARY_KEY, canary, db=meta)

    # --- writing ----------------------------------------------------------------------------------

    def _put(self, database: bytes, key: bytes, plaintext: bytes) -> None:
        sealed = self._crypto.sealer.seal(
            plaintext, associated_data(database, key), self.seal_version
        )
        self._txn.put(key, sealed, db=self._db[database])

    def _put_index(self, database: bytes, key: bytes, value: bytes = b"") -> None:
        self._txn.put(key, value, db=self._db[database])


def _is_active(history: History) -> bool:
    return bool(history) and history[-1].end is None


def _any_ended(history: History) -> bool:
    return any(period.end is not None for period in history)


def _meta_number(txn: lmdb.Transaction, meta: Any, key: bytes) -> int:
    return int(txn.get(key, db=meta))


def _check_or_initialise(
    env: lmdb.Environment, path: Path, keyring: Keyring, *, readonly: bool
) -> None:
    """Verifies the store belongs to ``keyring``, or stamps a new, empty store with it."""
    with env.begin() as txn:
        try:
            meta = env.open_db(META, txn=txn, create=False)
        except lmdb.NotFoundError:
            meta = None
            is_empty = env.stat()["entries"] == 0
        else:
            _verify_meta(txn, meta, path, keyring)
    if meta is not None:
        return
    if readonly or not is_empty:
        raise ConfigError(f"{path} holds an LMDB environment that is not a KFR store")
    sealer = keyring.sealer()
    with env.begin(write=True) as txn:
        meta = env.open_db(META, txn=txn)
        for name in _DATABASES:
            env.open_db(name, txn=txn)
        txn.put(_FORMAT_KEY, STORE_FORMAT, db=meta)
        txn.put(_KEYRING_ID_KEY, keyring.id.encode("ascii"), db=meta)
        txn.put(CANARY_KEY, sealer.seal(_CANARY, associated_data(META, CANARY_KEY)), db=meta)
        txn.put(SEAL_VERSION_KEY, str(keyring.seal.primary).encode(), db=meta)
        txn.put(PSEUDONYM_VERSION_KEY, str(keyring.pseudonym.primary).encode(), db=meta)
        txn.put(ACTIVE_KEY, b"0", db=meta)


def _verify_meta(txn: lmdb.Transaction, meta: Any, path: Path, keyring: Keyring) -> None:
    store_format = txn.get(_FORMAT_KEY, db=meta)
    if store_format != STORE_FORMAT:
        raise ConfigError(
            f"{path} has store format {store_format!r}; this version of kfr reads "
            f"{STORE_FORMAT!r}. Restore a backup made by a matching version, or start afresh."
        )
    written_under = (txn.get(_KEYRING_ID_KEY, db=meta) or b"").decode("ascii", "replace")
    if written_under != keyring.id:
        raise ConfigError(
            f"{path} was written under keyring {written_under}, but the configured keyring is "
            f"{keyring.id}; refusing to open it. Point `keyring` at the keyring this data "
            "directory was created with."
        )
    try:
        keyring.sealer().open(
            txn.get(CANARY_KEY, db=meta) or b"", associated_data(META, CANARY_KEY)
        )
    except SealError:
        raise ConfigError(
            f"the keyring's seal keys do not open {path} (keyring id {keyring.id} matches, but "
            "its keys differ); refusing to open it"
        ) from None
