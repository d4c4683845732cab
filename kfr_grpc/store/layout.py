"""The LMDB environment's layout: its databases, its ``meta`` records, and opening it.

Sub-databases (key and value layouts in ``codec``):
- ``meta``: store format, keyring id, a sealed canary proving the keyring opens the
  store, the seal and pseudonym key versions that every new write must use, the
  count of active relationships, and (cluster mode) the log position applied. Writers
  read the key versions inside their own transaction, so a rotation takes effect in
  every process at the same instant.
- ``institutions``: org number -> sealed institution record (the participants, a
  public list).
- ``relationships``: pseudonymised key -> sealed history of one (customer, institution,
  role).
- ``by_institution``, ``ended_by_date``: indexes over relationships, so that closing an
  institution costs what it has and retention costs what it deletes.
- ``collection_accounts``: tag of the account -> sealed account and org number.
- ``request_log`` (+ ``request_log_by_time``): sealed records of institutions' calls.
- ``lookup_counts``: sealed per-day counters of lookups by agency and mandate.

Keys carry tags, not names (``codec``). Every value outside ``meta`` and
``request_log_by_time`` is padded to a size class (``pad``) and sealed with ``database
name || 0x01 || key`` as associated data (``sealed_place``), so a value copied to another
key does not open and its length tells little (not a person from an organisation; one
period, two to five, six to thirteen...). Older stores, still read:
- format 3 sealed values without padding under ``database name || 0x00 || key``;
- formats 3 and 4 kept institution, role, account, agency and mandate in clear keys and
  left index values unsealed (``codec``'s legacy layouts).
``kfr migrate`` (online) pads and moves everything to the tagged layout (format 5).
Opening an existing store writes nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lmdb

from kfr_grpc.errors import ConfigError
from kfr_grpc.keyring import Keyring, SealError
from kfr_grpc.store import codec

log = logging.getLogger("kfr.store")

STORE_FORMAT = b"6"
# Format 5: as 6, without relationships of a named kind or with corrections (record format
# 4): read as it is; the first such write marks the store format 6.
TAGGED_FORMAT = b"5"
# Format 4: clear names in keys, unsealed index values (still read; ``kfr migrate`` moves
# them). Format 3 besides that sealed values without padding (resealing pads).
UNTAGGED_FORMAT = b"4"
UNPADDED_FORMAT = b"3"
READABLE_FORMATS = (STORE_FORMAT, TAGGED_FORMAT, UNTAGGED_FORMAT, UNPADDED_FORMAT)
TAGGED_FORMATS = (STORE_FORMAT, TAGGED_FORMAT)  # nothing left in the legacy layout
MIGRATE_COMMAND = "kfr migrate --config …"
META = b"meta"
INSTITUTIONS = b"institutions"
RELATIONSHIPS = b"relationships"
BY_INSTITUTION = b"by_institution"
ENDED_BY_DATE = b"ended_by_date"
COLLECTION_ACCOUNTS = b"collection_accounts"
REQUEST_LOG = b"request_log"
REQUEST_LOG_BY_TIME = b"request_log_by_time"
LOOKUP_COUNTS = b"lookup_counts"
INDEXES = (BY_INSTITUTION, ENDED_BY_DATE)
SEALED_DATABASES = (
    INSTITUTIONS, RELATIONSHIPS, COLLECTION_ACCOUNTS, REQUEST_LOG, LOOKUP_COUNTS, *INDEXES
)  # fmt: skip
DATABASES = (*SEALED_DATABASES, REQUEST_LOG_BY_TIME)

FORMAT_KEY = b"format"
KEYRING_ID_KEY = b"keyring_id"
CANARY_KEY = b"canary"
CANARY = b"kfr store canary"
SEAL_VERSION_KEY = b"seal_version"
PSEUDONYM_VERSION_KEY = b"pseudonym_version"
ACTIVE_KEY = b"active_relationships"  # how many relationships have an active period
INSTITUTIONS_CHANGED_KEY = b"institutions_changed"  # counts changes of institution records
# Cluster mode: the position in the replicated log of the last entry this store applied
# (absent: none), written in the transaction that applies it.
LOG_POSITION_KEY = b"log_position"
# While a compaction copies the store (``compaction``): set, and every write also notes
# the keys it changed under ``CHANGED_PREFIX || database || 0x00 || key``, so that the
# copy can catch up with them at the end. Neither is ever copied.
COMPACTING_KEY = b"compacting"
CHANGED_PREFIX = b"compaction-changed\x00"


def changed_key(database: bytes, key: bytes) -> bytes:
    return CHANGED_PREFIX + database + b"\x00" + key


def split_changed_key(noted: bytes) -> tuple[bytes, bytes]:
    database, _, key = noted[len(CHANGED_PREFIX) :].partition(b"\x00")
    return database, key


def is_compaction_note(key: bytes) -> bool:
    return key == COMPACTING_KEY or key.startswith(CHANGED_PREFIX)


_MAX_READERS = 1024

Databases = dict[bytes, Any]


def associated_data(database: bytes, key: bytes) -> bytes:
    """Where an unpadded value (the canary, and values of format 3) is sealed."""
    return database + b"\x00" + key


def sealed_place(database: bytes, key: bytes) -> bytes:
    """Where a padded value is sealed."""
    return database + b"\x01" + key


# Sizes a padded plaintext takes: the smallest class it fits, then multiples of 1 KiB.
_SIZE_CLASSES = (32, 64, 128, 256, 512, 1024)
_PAD_MARK = b"\x80"
# The size class of each length up to 1 KiB (a lookup: padding is on every write's path).
_CLASS_OF = [next(c for c in _SIZE_CLASSES if length <= c) for length in range(1025)]


def pad(plaintext: bytes) -> bytes:
    """``plaintext``, a 0x80 byte and zeros up to its size class (ISO/IEC 7816-4)."""
    length = len(plaintext) + 1
    size = _CLASS_OF[length] if length <= 1024 else -(-length // 1024) * 1024
    return b"".join((plaintext, _PAD_MARK, bytes(size - length)))


def unpad(padded: bytes) -> bytes:
    """The plaintext ``pad`` padded."""
    end = len(padded.rstrip(b"\x00")) - 1
    if end < 0 or padded[end : end + 1] != _PAD_MARK:
        raise ValueError("padding is malformed")
    return padded[:end]


def is_unsealed_entry(database: bytes, key: bytes) -> bool:
    """An index entry of the legacy layout (formats 3 and 4), whose value is not sealed."""
    if database == BY_INSTITUTION:
        return codec.is_legacy_slot_key(key)
    if database == ENDED_BY_DATE:
        return codec.is_legacy_ended_key(key)
    return False


def meta_number(txn: lmdb.Transaction, databases: Databases, key: bytes) -> int:
    return int(txn.get(key, db=databases[META]))


def existing_map_size(path: Path) -> int:
    """A map size to open the store in ``path`` with: its data file's size (1 MiB at least)."""
    return max((path / "data.mdb").stat().st_size, 1 << 20)


def open_environment(
    path: Path, *, map_size: int, readonly: bool, shared: bool
) -> lmdb.Environment:
    """The LMDB environment in ``path`` (created unless ``readonly``).

    ``shared``: other processes may have it open (LMDB's reader lock table is used);
    only a copy no one else opens (a backup being checked) may go without.
    """
    if readonly and not (path / "data.mdb").is_file():
        raise ConfigError(f"{path} holds no KFR store (no data.mdb)")
    if not readonly:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=len(DATABASES) + 1,
            max_readers=_MAX_READERS,
            mode=0o600,
            readahead=False,
            readonly=readonly,
            lock=shared,
        )
    except lmdb.Error as error:
        raise ConfigError(f"cannot open the data directory {path}: {error}") from None


def check_or_initialise(
    env: lmdb.Environment, path: Path, keyring: Keyring, *, readonly: bool
) -> Databases:
    """Verifies the store belongs to ``keyring`` (or stamps a new, empty store with it)
    and returns its database handles."""
    with env.begin() as txn:
        try:
            meta = env.open_db(META, txn=txn, create=False)
        except lmdb.NotFoundError:
            meta = None
            is_empty = env.stat()["entries"] == 0
        else:
            _verify_meta(txn, meta, path, keyring)
    if meta is None:
        if readonly or not is_empty:
            raise ConfigError(f"{path} holds an LMDB environment that is not a KFR store")
        _initialise(env, keyring)
    # Handles opened outside a transaction stay valid for the environment's life (opening
    # existing databases writes nothing).
    return {name: env.open_db(name, create=False) for name in (*DATABASES, META)}


def _initialise(env: lmdb.Environment, keyring: Keyring) -> None:
    sealer = keyring.sealer()
    with env.begin(write=True) as txn:
        meta = env.open_db(META, txn=txn)
        for name in DATABASES:
            env.open_db(name, txn=txn)
        txn.put(FORMAT_KEY, STORE_FORMAT, db=meta)
        txn.put(KEYRING_ID_KEY, keyring.id.encode("ascii"), db=meta)
        txn.put(CANARY_KEY, sealer.seal(CANARY, associated_data(META, CANARY_KEY)), db=meta)
        txn.put(SEAL_VERSION_KEY, str(keyring.seal.primary).encode(), db=meta)
        txn.put(PSEUDONYM_VERSION_KEY, str(keyring.pseudonym.primary).encode(), db=meta)
        txn.put(ACTIVE_KEY, b"0", db=meta)


def _verify_meta(txn: lmdb.Transaction, meta: Any, path: Path, keyring: Keyring) -> None:
    store_format = txn.get(FORMAT_KEY, db=meta)
    if store_format not in READABLE_FORMATS:
        raise ConfigError(
            f"{path} has store format {store_format!r}; this version of kfr reads "
            f"{b' and '.join(READABLE_FORMATS)!r}. Restore a backup made by a matching "
            "version, or start afresh."
        )
    if store_format not in TAGGED_FORMATS:
        log.warning(
            "%s is a store of format %s, whose raw file shows more than it should (%s): run "
            "`%s` once (online) to migrate it to format %s",
            path,
            store_format.decode(),
            "institutions, roles and accounts in clear keys"
            + (", value lengths" if store_format == UNPADDED_FORMAT else ""),
            MIGRATE_COMMAND,
            STORE_FORMAT.decode(),
        )
    written_under = (txn.get(KEYRING_ID_KEY, db=meta) or b"").decode("ascii", "replace")
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
