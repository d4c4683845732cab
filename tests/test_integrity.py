"""``kfr doctor --verify``: every inconsistency between records, indexes and counts is
found, each tampering with its own line; a clean store has none (the control)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path

import lmdb
import pytest

from kfr_grpc.clock import FixedClock
from kfr_grpc.keyring import Keyring
from kfr_grpc.register.operations import Operations
from kfr_grpc.register.service import Register, ReportItem
from kfr_grpc.store import LmdbStore
from kfr_grpc.store.layout import (
    ACTIVE_KEY,
    BY_INSTITUTION,
    ENDED_BY_DATE,
    INSTITUTIONS,
    META,
    RELATIONSHIPS,
)
from kfr_grpc.store.lmdb_store import verify
from tests.support import by
from tests.test_lifecycle import BANK, OTHER_BANK, OWNER, report_and_end

Tamper = Callable[[lmdb.Transaction, dict], None]


@pytest.fixture
def store_dir(tmp_path: Path, ids) -> tuple[Path, Keyring]:
    keyring = Keyring.generate()
    store = LmdbStore.open(tmp_path / "data", keyring, map_size=1 << 26)
    clock = FixedClock.on(date(2026, 6, 15))
    operations = Operations(store, clock)
    operations.add_institution(BANK, "Testbanken")
    operations.add_institution(OTHER_BANK, "Andre bank")
    register = Register(store, clock, test_mode=True)
    for _ in range(20):
        report_and_end(register, ids.person(), "2010-01-01", "2020-01-01")
        register.report(by(OTHER_BANK), [ReportItem(ids.person(), OWNER, "2015-01-01")])
    store.close()
    return tmp_path / "data", keyring


def _tampered(directory: Path, tamper: Tamper) -> None:
    env = lmdb.open(str(directory), max_dbs=16)
    databases = {
        name: env.open_db(name, create=False)
        for name in (META, INSTITUTIONS, RELATIONSHIPS, BY_INSTITUTION, ENDED_BY_DATE)
    }
    with env.begin(write=True) as txn:
        tamper(txn, databases)
    env.close()


def _first(txn: lmdb.Transaction, database) -> tuple[bytes, bytes]:
    cursor = txn.cursor(db=database)
    assert cursor.first()
    return cursor.item()


def _delete_ended(txn, db):
    txn.delete(_first(txn, db[ENDED_BY_DATE])[0], db=db[ENDED_BY_DATE])


def _point_elsewhere(txn, db):
    cursor = txn.cursor(db=db[BY_INSTITUTION])
    cursor.first()
    first_key = cursor.key()
    cursor.next()
    txn.put(first_key, cursor.value(), db=db[BY_INSTITUTION])


def _add_bogus_slot(txn, db):
    key, value = _first(txn, db[BY_INSTITUTION])
    txn.put(key[:9] + b"\xff" * 8, value, db=db[BY_INSTITUTION])  # version, tag, slot


def _change_count(txn, db):
    txn.put(ACTIVE_KEY, b"7", db=db[META])


def _flip_a_bit(txn, db):
    key, value = _first(txn, db[RELATIONSHIPS])
    txn.put(key, value[:-1] + bytes([value[-1] ^ 1]), db=db[RELATIONSHIPS])


def _move_a_value(txn, db):
    cursor = txn.cursor(db=db[RELATIONSHIPS])
    cursor.first()
    value = cursor.value()
    cursor.next()
    txn.put(cursor.key(), value, db=db[RELATIONSHIPS])


def _drop_an_institution(txn, db):
    txn.delete(_first(txn, db[INSTITUTIONS])[0], db=db[INSTITUTIONS])


@pytest.mark.parametrize(
    ("tamper", "found"),
    [
        (_delete_ended, "ended_by_date: 1 ended periods missing from it (retention would never"),
        (_point_elsewhere, "by_institution: entries that do not match their relationships"),
        (_add_bogus_slot, "by_institution: 1 entries without their relationship"),
        (_change_count, "meta: the active count says 7, the records 20"),
        (_flip_a_bit, "relationships: 1 value(s) do not open"),
        (_move_a_value, "relationships: 1 value(s) do not open"),
        (_drop_an_institution, "relationships: 1 institution(s) that are not registered"),
    ],
)
def test_each_tampering_is_found(store_dir, tamper: Tamper, found: str):
    directory, keyring = store_dir
    assert verify(directory, keyring) == []  # the control
    _tampered(directory, tamper)
    problems = verify(directory, keyring)
    assert any(problem.startswith(found) for problem in problems), problems


def test_the_server_walks_its_store_on_a_schedule_and_raises_the_alarm(server_factory, ids, caplog):
    from tests.support import INSTITUTION_ORG, wait_for
    from tests.test_server import OWNER as WIRE_OWNER
    from tests.test_server import end, report

    server = server_factory(
        metrics=True,
        maintenance_toml="integrity_check_seconds = 0.3\nlookup_counts_flush_seconds = 0.1",
    )
    caplog.set_level(logging.INFO, "kfr.server")
    client = server.client(server.pki.institution)
    customer = ids.person()
    report(client, INSTITUTION_ORG, (customer, WIRE_OWNER, "2015-01-01"))
    end(client, INSTITUTION_ORG, (customer, WIRE_OWNER, "2020-01-01"))
    wait_for(lambda: "every record, index entry and count agrees" in caplog.text, "a clean walk")
    assert "kfr_store_integrity_problems 0.0" in server.metrics()
    store = server.server.store
    with store._env.begin(write=True) as txn:  # retention quietly stopped
        _delete_ended(txn, store._databases)
    wait_for(lambda: "kfr_store_integrity_problems 1.0" in server.metrics(), "the alarm")
    assert "store integrity: ended_by_date: 1 ended periods missing" in caplog.text
