"""Sealed values are padded to size classes, so their length no longer tells a person
from an organisation or one period from a few; a store of format 3 (unpadded) still
opens (``_unpadded`` makes one; tests/test_migration.py migrates it)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from kfr_grpc.clock import FixedClock
from kfr_grpc.keyring import KeyringFile
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
from kfr_grpc.register.model import Period, ProductKind, Role
from kfr_grpc.register.operations import Operations
from kfr_grpc.register.service import Register, ReportItem
from kfr_grpc.store import LmdbStore
from kfr_grpc.store.layout import (
    FORMAT_KEY,
    META,
    RELATIONSHIPS,
    SEALED_DATABASES,
    UNPADDED_FORMAT,
    associated_data,
    is_unsealed_entry,
    pad,
    unpad,
)
from tests.support import by, dump_store

UNSPECIFIED = ProductKind.UNSPECIFIED

BANK = "311000004"


@pytest.mark.parametrize("length", [0, 1, 30, 31, 32, 63, 64, 500, 1023, 1024, 5000])
def test_padding_round_trips_to_a_size_class(length: int):
    plaintext = bytes(range(256)) * 20
    plaintext = plaintext[:length]
    padded = pad(plaintext)
    assert len(padded) in (32, 64, 128, 256, 512, 1024) or len(padded) % 1024 == 0
    assert len(padded) > length and unpad(padded) == plaintext


def _open(directory: Path, keyring_path: Path) -> LmdbStore:
    return LmdbStore.open(
        directory, KeyringFile(keyring_path, check_seconds=0), map_size=1 << 26,
        keyring_path=keyring_path,
    )  # fmt: skip


def _relationship_value_lengths(store: LmdbStore) -> set[int]:
    with store.read() as view:
        return {
            len(v)
            for v in view._txn.cursor(db=store._databases[RELATIONSHIPS]).iternext(keys=False)
        }


def test_persons_and_organisations_look_alike_and_two_to_five_periods_too(
    tmp_path, keyring_path, ids
):
    store = _open(tmp_path / "data", keyring_path)
    clock = FixedClock.on(date(2026, 6, 15))
    Operations(store, clock).add_institution(BANK, "Testbanken")
    register = Register(store, clock, test_mode=True)
    register.report(by(BANK), [ReportItem(ids.person(), Role.OWNER, "2020-01-01")])
    register.report(by(BANK), [ReportItem(ids.company(), Role.OWNER, "2020-01-01")])
    one_period = _relationship_value_lengths(store)
    assert len(one_period) == 1  # a person's 11 digits and a company's 9 in the same size
    periods = [Period(date(2000 + 2 * n, 1, 1), date(2001 + 2 * n, 1, 1)) for n in range(5)]
    for count in (2, 5):  # two to five periods, each in a record of its own
        history = tuple(periods[:count])
        customer = _id(ids.person())
        store.write(
            lambda txn, c=customer, h=history: txn.put_history(c, BANK, Role.OWNER, UNSPECIFIED, h)
        )
    all_lengths = _relationship_value_lengths(store)
    assert len(all_lengths - one_period) == 1  # 2 and 5 periods alike, unlike 1
    store.close()


def _id(digits: str) -> CustomerId:
    return CustomerId(digits, CustomerKind.PERSON)


def _unpadded(store: LmdbStore) -> None:
    """Turns ``store`` into a store of format 3: every value sealed without padding."""

    def legacy(txn) -> None:
        sealer = txn._crypto.sealer
        for database in SEALED_DATABASES:
            for key, sealed in list(txn._txn.cursor(db=txn._db[database])):
                if is_unsealed_entry(database, key):
                    continue
                plaintext = txn._open(database, key, sealed)
                legacy_value = sealer.seal(plaintext, associated_data(database, key))
                txn._txn.put(key, legacy_value, db=txn._db[database])
        txn._txn.put(FORMAT_KEY, UNPADDED_FORMAT, db=txn._db[META])

    store.write(legacy)


def _content(store: LmdbStore) -> dict:
    """Every record opened, but ``meta`` (the format, a canary sealed again)."""
    return {entry: value for entry, value in dump_store(store).items() if entry[0] != META}
