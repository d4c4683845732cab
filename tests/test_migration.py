"""Store format 5 keeps names out of keys (tags instead of institutions, roles, accounts,
agencies and mandates; index values sealed), and ``kfr migrate`` brings a store of
format 4 (or 3) to it online: every answer the same before, during and after, the raw
file without the clear names afterwards."""

from __future__ import annotations

import json
import logging
import struct
from datetime import date

import lmdb
import pytest

from kfr_grpc.keyring import KeyringFile
from kfr_grpc.register.digest import content_digest
from kfr_grpc.register.model import Role
from kfr_grpc.register.service import EndItem, Register, ReportItem
from kfr_grpc.store import LmdbStore, rotation
from kfr_grpc.store.generations import store_directory
from kfr_grpc.store.layout import (
    BY_INSTITUTION,
    COLLECTION_ACCOUNTS,
    ENDED_BY_DATE,
    FORMAT_KEY,
    LOOKUP_COUNTS,
    META,
    RELATIONSHIPS,
    STORE_FORMAT,
    UNTAGGED_FORMAT,
)
from kfr_grpc.store.lmdb_store import compact
from tests.support import by
from tests.test_keys import (
    BANKS,
    answers,
    assert_indexes_consistent,
    keyring_path,
    populate,
    store,
)
from tests.test_padding import _unpadded

__all__ = ["keyring_path", "store"]  # fixtures used here


@pytest.fixture
def populated(store, ids):
    """As a store from before product kinds holds (the legacy layouts knew none)."""
    return populate(store, ids, kinds=False)


ACCOUNT = "86011117947"
MANDATE = "Skatteforvaltningsloven § 10-2"
AGENCY = "312000008"
_ROLE_BYTES = {Role.OWNER: 1, Role.DISPONENT: 2}


def _legacy_relationship_value(record, customer_digits: str) -> bytes:
    """A relationship value as format 4 wrote it (record format 2: no place inside)."""
    digits = customer_digits.encode()
    parts = [
        struct.pack(">BB", 2, len(digits)),
        digits,
        struct.pack(">QH", record.slot, len(record.history)),
    ]
    for period in record.history:
        end = period.end.toordinal() if period.end else 0
        parts.append(struct.pack(">II", period.start.toordinal(), end))
    return b"".join(parts)


def to_format_4(store: LmdbStore) -> None:
    """Rewrites ``store`` in the layout kfr wrote up to store format 4: institution and
    role in relationship keys, ``org | slot`` and ``day | relationship key`` index keys
    with clear values, accounts and (day, agency, mandate) as keys."""
    from kfr_grpc.store import codec

    def convert(txn) -> None:
        raw, db = txn._txn, txn._db
        records = [
            (key, codec.decode_relationship(key, txn._open(RELATIONSHIPS, key, sealed)))
            for key, sealed in raw.cursor(db=db[RELATIONSHIPS])
        ]
        for name in (RELATIONSHIPS, BY_INSTITUTION, ENDED_BY_DATE):
            raw.drop(db[name], delete=False)
        for key, record in records:
            place = struct.pack(">IB", int(record.institution), _ROLE_BYTES[record.role])
            legacy = key[:33] + place
            txn._put(
                RELATIONSHIPS, legacy, _legacy_relationship_value(record, record.customer.digits)
            )
            slot = struct.pack(">IQ", int(record.institution), record.slot)
            raw.put(slot, legacy, db=db[BY_INSTITUTION])
            for period in record.history:
                if period.end is not None:
                    raw.put(
                        struct.pack(">I", period.end.toordinal()) + legacy,
                        b"",
                        db=db[ENDED_BY_DATE],
                    )
        accounts = list(txn.collection_accounts())
        raw.drop(db[COLLECTION_ACCOUNTS], delete=False)
        for account, org in accounts:
            txn._put(COLLECTION_ACCOUNTS, account.encode(), org.encode())
        counts = list(txn.lookup_counts())
        raw.drop(db[LOOKUP_COUNTS], delete=False)
        for count in counts:
            key = codec.legacy_lookup_count_key(count.day, count.agency, count.mandate)
            txn._put(LOOKUP_COUNTS, key, json.dumps(count.by_status).encode())
        raw.put(FORMAT_KEY, UNTAGGED_FORMAT, db=db[META])

    store.write(convert)


def _everything(store: LmdbStore, register: Register, customers: list[str]) -> list:
    """Every answer the register gives from this store: Lookup and ListOwn of each
    customer, each bank's relationships (closure), what retention would remove, the
    collection account, the counters, and the content digest."""
    with store.read() as view:
        by_bank = [
            sorted((h.customer.digits, h.role, h.periods) for h in view.institution_histories(bank))
            for bank in BANKS
        ]
        expired = sorted((h.customer.digits, h.institution) for h in view.expired(date(2019, 1, 1)))
        account = view.collection_account_owner(ACCOUNT)
        counts = list(view.lookup_counts())
        digest = content_digest(view)
    return [answers(register, customers), by_bank, expired, account, counts, digest]


def _count_lookups(store: LmdbStore) -> None:
    store.write(
        lambda txn: txn.add_lookup_counts(date(2026, 6, 14), "312000008", MANDATE, {"OK": 3})
    )
    store.write(
        lambda txn: txn.add_lookup_counts(date(2026, 6, 15), "312000008", MANDATE, {"OK": 1})
    )


def _legacy_entries(store: LmdbStore) -> int:
    with store.read() as view:
        raw, db = view._txn, store._databases
        return (
            sum(len(k) == 38 for k in raw.cursor(db=db[RELATIONSHIPS]).iternext(values=False))
            + sum(len(k) == 12 for k in raw.cursor(db=db[BY_INSTITUTION]).iternext(values=False))
            + sum(len(k) == 42 for k in raw.cursor(db=db[ENDED_BY_DATE]).iternext(values=False))
            + sum(
                len(k) != 17 for k in raw.cursor(db=db[COLLECTION_ACCOUNTS]).iternext(values=False)
            )
        )


def _keys(raw, database) -> list[bytes]:
    return list(raw.cursor(db=database).iternext(values=False))


def _format(store: LmdbStore) -> bytes:
    with store.read() as view:
        return view._txn.get(FORMAT_KEY, db=store._databases[META])


def test_a_format_4_store_reads_the_same_migrates_online_and_answers_the_same(
    store, populated, keyring_path, caplog, tmp_path, ids
):
    register, customers = populated
    _count_lookups(store)
    before = _everything(store, register, customers)
    to_format_4(store)
    assert _legacy_entries(store) > len(customers)  # the control: the old layout is there
    store.close()

    caplog.set_level(logging.WARNING, "kfr.store")
    store = LmdbStore.open(
        tmp_path / "data", KeyringFile(keyring_path, check_seconds=0), map_size=1 << 28,
        keyring_path=keyring_path,
    )  # fmt: skip
    register = Register(store, register._clock, test_mode=True)
    assert "store of format 4" in caplog.text and "run `kfr migrate --config …` once" in caplog.text
    assert _everything(store, register, customers) == before
    assert store.problems() == []

    # Interrupted half way: records in both layouts, every answer still the same.
    half = rotation.repseudonymise(
        store.write, keyring_path, lambda _: None, stop_after_batches=1, batch=100
    )
    assert not half.finished and _legacy_entries(store) > 0
    assert _everything(store, register, customers) == before
    assert store.problems() == []
    assert _format(store) == UNTAGGED_FORMAT

    result = store.migrate(lambda _: None)
    assert result.finished
    assert _format(store) == STORE_FORMAT
    assert _legacy_entries(store) == 0
    assert _everything(store, register, customers) == before
    assert_indexes_consistent(store)

    # Writes after the migration (reports, ends, counters) land in the tagged layout.
    newcomer = ids.person()
    register.report(by(BANKS[0]), [ReportItem(newcomer, Role.OWNER, "2020-01-01")])
    register.end(by(BANKS[0]), [EndItem(newcomer, Role.OWNER, "2026-06-01")])
    _count_lookups(store)
    assert _legacy_entries(store) == 0
    assert_indexes_consistent(store)


def test_a_write_to_a_legacy_record_moves_it_with_its_index_entries(store, populated):
    register, customers = populated
    to_format_4(store)
    legacy = _legacy_entries(store)
    active = [c for c in customers if any(p.end is None for p in _periods(register, c))]
    register.end(by(BANKS[0]), [EndItem(c, Role.OWNER, "2026-06-01") for c in active[:40]])
    assert _legacy_entries(store) < legacy
    assert store.problems() == []
    assert_indexes_consistent(store)


def _periods(register: Register, customer: str) -> list:
    return [p for r in register.list_own(by(BANKS[0]), customer) for p in r.periods]


def test_a_format_3_store_is_padded_and_tagged_by_one_command(store, populated):
    register, customers = populated
    before = _everything(store, register, customers)
    to_format_4(store)
    _unpadded(store)
    result = store.migrate(lambda _: None)
    assert result.finished and _format(store) == STORE_FORMAT and _legacy_entries(store) == 0
    assert _everything(store, register, customers) == before
    with store.read() as view:
        from kfr_grpc.store.layout import SEALED_DATABASES

        for database in SEALED_DATABASES:
            for key, sealed in view._txn.cursor(db=store._databases[database]):
                assert view._open_marked(database, key, sealed)[1], database  # padded


def test_the_raw_file_names_no_institution_account_agency_or_mandate_outside_institutions(
    store, populated, tmp_path
):
    """After a migration and a compaction, the data file holds no collection account or
    mandate text, no relationship or index key holds an org number, and no index value
    is a relationship key (so the report order links to no pseudonym)."""
    _count_lookups(store)
    to_format_4(store)
    keyring = store.keyring
    raw_before = (tmp_path / "data" / "data.mdb").read_bytes()
    assert ACCOUNT.encode() in raw_before  # the control
    store.migrate(lambda _: None)
    store.close()
    compact(tmp_path / "data", keyring)

    compacted = store_directory(tmp_path / "data")
    assert compacted != tmp_path / "data"  # a new generation
    raw = (compacted / "data.mdb").read_bytes()
    assert ACCOUNT.encode() not in raw
    assert MANDATE.encode() not in raw and b"Skatteforvaltningsloven" not in raw
    orgs = [struct.pack(">I", int(org)) for org in (*BANKS, AGENCY)]
    env = lmdb.open(str(compacted), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            relationships = set()
            for name in (RELATIONSHIPS, BY_INSTITUTION, ENDED_BY_DATE, LOOKUP_COUNTS):
                for key, value in txn.cursor(db=env.open_db(name, txn=txn, create=False)):
                    assert not any(org in key for org in orgs), name
                    if name == RELATIONSHIPS:
                        relationships.add(key)
                    else:
                        assert value not in relationships and len(value) > 41, name
    finally:
        env.close()


def test_no_record_at_a_scan_boundary_is_passed_over(store, populated, monkeypatch):
    """The move pass looks at a bounded number of keys per transaction and goes on after
    the last one it looked at: with a bound of 7 keys, every legacy record still moves,
    and orphaned legacy index entries go too."""
    monkeypatch.setattr(rotation, "_SCAN", 7)
    to_format_4(store)

    def orphan(txn) -> None:  # a legacy index entry whose record is gone
        txn._txn.put(b"\x12\x89\x7b\xc4" + b"\xff" * 8, b"\x01" * 38, db=txn._db[BY_INSTITUTION])

    store.write(orphan)
    assert store.migrate(lambda _: None).finished
    assert _legacy_entries(store) == 0 and _format(store) == STORE_FORMAT
    assert_indexes_consistent(store)
