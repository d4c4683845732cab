"""The register's LMDB environment.

Sub-databases:
- ``meta``: the store format and the id of the keyring the data was written under, plus
  a sealed canary proving that keyring's seal key opens this store.
- ``institutions``: org number (u32 BE) -> sealed institution record.
- ``relationships``: pseudonymised key (see ``codec``) -> sealed history of one
  (customer, institution, role).

Every value outside ``meta`` is sealed with ``database name || key`` as associated data.
Several processes (the server, ``kfr institutions …``) may open the same environment;
LMDB serialises their writers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import lmdb

from kfr_grpc.errors import ConfigError, CorruptRecord, StoreFull
from kfr_grpc.keyring import Keyring, Pseudonymiser, Sealer, SealError
from kfr_grpc.register.customer_ids import CustomerId
from kfr_grpc.register.model import History, Institution, Role, RoleHistory
from kfr_grpc.store import codec

STORE_FORMAT = b"1"
_META = b"meta"
_INSTITUTIONS = b"institutions"
_RELATIONSHIPS = b"relationships"
_FORMAT_KEY = b"format"
_KEYRING_ID_KEY = b"keyring_id"
_CANARY_KEY = b"canary"
_CANARY = b"kfr store canary"
_MAX_READERS = 1024


class Store:
    """An open LMDB environment with the register's layout. Thread-safe."""

    def __init__(
        self,
        env: lmdb.Environment,
        databases: dict[bytes, object],
        sealer: Sealer,
        pseudonymiser: Pseudonymiser,
    ) -> None:
        self._env = env
        self._databases = databases
        self._sealer = sealer
        self._pseudonymiser = pseudonymiser

    @classmethod
    def open(cls, path: Path, keyring: Keyring, *, map_size: int) -> Store:
        """Opens (or creates) the store in ``path``.

        Refuses, before writing anything, a directory written under another keyring.
        """
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=8,
                max_readers=_MAX_READERS,
                mode=0o600,
                readahead=False,
            )
        except lmdb.Error as error:
            raise ConfigError(f"cannot open the data directory {path}: {error}") from None
        sealer = keyring.sealer()
        try:
            _check_or_initialise(env, path, keyring, sealer)
            databases = {name: env.open_db(name) for name in (_INSTITUTIONS, _RELATIONSHIPS)}
        except BaseException:
            env.close()
            raise
        return cls(env, databases, sealer, keyring.pseudonymiser())

    def close(self) -> None:
        self._env.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[StoreView]:
        """A consistent snapshot for reading."""
        with self._env.begin(buffers=False) as txn:
            yield StoreView(self, txn)

    @contextlib.contextmanager
    def write(self) -> Iterator[StoreTxn]:
        """One write transaction: committed when the block ends, aborted if it raises."""
        txn = self._env.begin(write=True)
        try:
            yield StoreTxn(self, txn)
        except BaseException:
            txn.abort()
            raise
        try:
            txn.commit()
        except lmdb.MapFullError:
            raise StoreFull(_STORE_FULL) from None

    def _seal(self, database: bytes, key: bytes, plaintext: bytes) -> bytes:
        return self._sealer.seal(plaintext, database + b"\x00" + key)

    def _open(self, database: bytes, key: bytes, sealed: bytes) -> bytes:
        try:
            return self._sealer.open(sealed, database + b"\x00" + key)
        except SealError as error:
            raise CorruptRecord(f"a {database.decode()} record failed to open: {error}") from None


_STORE_FULL = "the register's store is full; the operator must raise store.map_size_mb"


class StoreView:
    """Reads within one transaction."""

    def __init__(self, store: Store, txn: lmdb.Transaction) -> None:
        self._store = store
        self._txn = txn

    def relationship_count(self) -> int:
        """How many (customer, institution, role) records the store holds."""
        return self._txn.stat(self._store._databases[_RELATIONSHIPS])["entries"]

    def institution(self, org_number: str) -> Institution | None:
        key = codec.org_key(org_number)
        sealed = self._txn.get(key, db=self._store._databases[_INSTITUTIONS])
        if sealed is None:
            return None
        return codec.decode_institution(org_number, self._store._open(_INSTITUTIONS, key, sealed))

    def institutions(self) -> Iterator[Institution]:
        cursor = self._txn.cursor(db=self._store._databases[_INSTITUTIONS])
        for key, sealed in cursor:
            plaintext = self._store._open(_INSTITUTIONS, key, sealed)
            yield codec.decode_institution(codec.org_from_key(key), plaintext)

    def relationships(
        self, customer: CustomerId, institution: str | None = None
    ) -> Iterator[RoleHistory]:
        """Every role history of ``customer`` (at ``institution``, if given): a range read."""
        pseudonym = self._store._pseudonymiser.pseudonym(customer.digits)
        prefix = codec.relationship_prefix(pseudonym, institution)
        cursor = self._txn.cursor(db=self._store._databases[_RELATIONSHIPS])
        if not cursor.set_range(prefix):
            return
        for key, sealed in cursor:
            if not key.startswith(prefix):
                return
            org_number, role = codec.split_relationship_key(key)
            _, history = codec.decode_relationship(self._store._open(_RELATIONSHIPS, key, sealed))
            yield RoleHistory(org_number, role, history)

    def history(self, customer: CustomerId, institution: str, role: Role) -> History:
        """The periods of one (customer, institution, role); empty if never reported."""
        key = self._relationship_key(customer, institution, role)
        sealed = self._txn.get(key, db=self._store._databases[_RELATIONSHIPS])
        if sealed is None:
            return ()
        _, history = codec.decode_relationship(self._store._open(_RELATIONSHIPS, key, sealed))
        return history

    def _relationship_key(self, customer: CustomerId, institution: str, role: Role) -> bytes:
        pseudonym = self._store._pseudonymiser.pseudonym(customer.digits)
        return codec.relationship_key(pseudonym, institution, role)


class StoreTxn(StoreView):
    """Reads and writes within one write transaction."""

    def put_history(
        self, customer: CustomerId, institution: str, role: Role, history: History
    ) -> None:
        key = self._relationship_key(customer, institution, role)
        plaintext = codec.encode_relationship(customer.digits, history)
        self._put(_RELATIONSHIPS, key, plaintext)

    def put_institution(self, institution: Institution) -> None:
        key = codec.org_key(institution.org_number)
        self._put(_INSTITUTIONS, key, codec.encode_institution(institution))

    def _put(self, database: bytes, key: bytes, plaintext: bytes) -> None:
        sealed = self._store._seal(database, key, plaintext)
        try:
            self._txn.put(key, sealed, db=self._store._databases[database])
        except lmdb.MapFullError:
            raise StoreFull(_STORE_FULL) from None


def _check_or_initialise(
    env: lmdb.Environment, path: Path, keyring: Keyring, sealer: Sealer
) -> None:
    """Verifies the store belongs to ``keyring``, or stamps a new, empty store with it."""
    with env.begin() as txn:
        try:
            meta = env.open_db(_META, txn=txn, create=False)
        except lmdb.NotFoundError:
            meta = None
            is_empty = env.stat()["entries"] == 0
        else:
            _verify_meta(txn, meta, path, keyring, sealer)
    if meta is not None:
        return
    if not is_empty:
        raise ConfigError(f"{path} holds an LMDB environment that is not a KFR store")
    with env.begin(write=True) as txn:
        meta = env.open_db(_META, txn=txn)
        txn.put(_FORMAT_KEY, STORE_FORMAT, db=meta)
        txn.put(_KEYRING_ID_KEY, keyring.id.encode("ascii"), db=meta)
        txn.put(_CANARY_KEY, sealer.seal(_CANARY, _META + b"\x00" + _CANARY_KEY), db=meta)


def _verify_meta(
    txn: lmdb.Transaction, meta: object, path: Path, keyring: Keyring, sealer: Sealer
) -> None:
    store_format = txn.get(_FORMAT_KEY, db=meta)
    if store_format != STORE_FORMAT:
        raise ConfigError(
            f"{path} has store format {store_format!r}; this version of kfr reads {STORE_FORMAT!r}"
        )
    written_under = (txn.get(_KEYRING_ID_KEY, db=meta) or b"").decode("ascii", "replace")
    if written_under != keyring.id:
        raise ConfigError(
            f"{path} was written under keyring {written_under}, but the configured keyring is "
            f"{keyring.id}; refusing to open it. Point `keyring` at the keyring this data "
            "directory was created with."
        )
    try:
        sealer.open(txn.get(_CANARY_KEY, db=meta) or b"", _META + b"\x00" + _CANARY_KEY)
    except SealError:
        raise ConfigError(
            f"the keyring's seal keys do not open {path} (keyring id {keyring.id} matches, but "
            "its keys differ); refusing to open it"
        ) from None
