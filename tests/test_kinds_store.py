"""Product kinds and corrections in the store: existing stores read on unchanged (their data
is of unspecified kind), the store format goes up only when a record needs it, and
retention, closure and the integrity walk handle the new data."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from kfr_grpc.clock import FixedClock
from kfr_grpc.keyring import Keyring, KeyringFile
from kfr_grpc.register.corrections import CorrectItem, RetractItem
from kfr_grpc.register.digest import content_digest
from kfr_grpc.register.model import CorrectionAction, CorrectionReason, ProductKind, Role
from kfr_grpc.register.operations import Operations
from kfr_grpc.register.service import Register, ReportItem
from kfr_grpc.store import LmdbStore, codec
from kfr_grpc.store.layout import FORMAT_KEY, META, RELATIONSHIPS, STORE_FORMAT, TAGGED_FORMAT
from tests.support import by, dump_store

TODAY = date(2026, 6, 15)
BANK = "311000004"
OWNER, LOAN, ACCOUNT = Role.OWNER, ProductKind.LOAN, ProductKind.PAYMENT_ACCOUNT


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    path = tmp_path / "secrets" / "keyring.json"
    path.parent.mkdir()
    Keyring.generate().save(path)
    return path


def _open(tmp_path: Path, keyring_path: Path) -> LmdbStore:
    return LmdbStore.open(
        tmp_path / "data", KeyringFile(keyring_path, check_seconds=0), map_size=1 << 26,
        keyring_path=keyring_path,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path, keyring_path: Path):
    opened = _open(tmp_path, keyring_path)
    Operations(opened, FixedClock.on(TODAY)).add_institution(BANK, "Banken")
    yield opened
    opened.close()


def _format(store: LmdbStore) -> bytes:
    return store.write(lambda txn: txn._txn.get(FORMAT_KEY, db=txn._db[META]))


def _as_format_5(store: LmdbStore) -> None:
    """What a store of the version before kinds says of itself."""
    store.write(lambda txn: txn._txn.put(FORMAT_KEY, TAGGED_FORMAT, db=txn._db[META]))


def _record_formats(store: LmdbStore) -> list[int]:
    return sorted(v[0] for (db, _), v in dump_store(store).items() if db == RELATIONSHIPS)


def test_a_format_5_store_reads_on_and_goes_up_only_for_a_record_that_needs_it(
    store, tmp_path, keyring_path, ids
):
    register = Register(store, FixedClock.on(TODAY), test_mode=True)
    _as_format_5(store)
    customer = ids.person()
    register.report(by(BANK), [ReportItem(customer, OWNER, "2020-01-01")])
    # A relationship without a kind is stored byte for byte as format 5 stores it.
    assert _format(store) == TAGGED_FORMAT and _record_formats(store) == [3]
    (history,) = register.list_own(by(BANK), customer)
    assert history.kind is ProductKind.UNSPECIFIED

    register.report(by(BANK), [ReportItem(customer, OWNER, "2021-01-01", LOAN)])
    assert _format(store) == STORE_FORMAT and _record_formats(store) == [3, 4]
    assert [h.kind for h in register.list_own(by(BANK), customer)] == [
        ProductKind.UNSPECIFIED, LOAN,
    ]  # fmt: skip

    # kfr migrate brings a store of format 5 to 6 without moving anything.
    other = tmp_path / "other"
    other.mkdir()
    second = _open(other, keyring_path)
    try:
        _as_format_5(second)
        assert second.migrate(lambda _: None).finished and _format(second) == STORE_FORMAT
    finally:
        second.close()


def test_a_store_not_yet_migrated_takes_no_kinds_until_it_is(store, ids):
    from kfr_grpc.errors import FailedPrecondition
    from kfr_grpc.store.layout import UNTAGGED_FORMAT

    register = Register(store, FixedClock.on(TODAY), test_mode=True)
    store.write(lambda txn: txn._txn.put(FORMAT_KEY, UNTAGGED_FORMAT, db=txn._db[META]))
    customer = ids.person()
    register.report(by(BANK), [ReportItem(customer, OWNER, "2020-01-01")])  # as before
    with pytest.raises(FailedPrecondition, match="kfr migrate"):
        register.report(by(BANK), [ReportItem(customer, OWNER, "2020-01-01", LOAN)])
    assert _format(store) == UNTAGGED_FORMAT and _record_formats(store) == [3]
    assert store.migrate(lambda _: None).finished and _format(store) == STORE_FORMAT
    register.report(by(BANK), [ReportItem(customer, OWNER, "2020-01-01", LOAN)])


def test_retention_and_closure_handle_kinds_and_their_corrections(store, ids):
    clock = FixedClock.on(date(2014, 1, 1))
    register = Register(store, clock, test_mode=True)
    operations = Operations(store, clock)
    customer = ids.person()
    register.report(by(BANK), [ReportItem(customer, OWNER, "2013-01-01", LOAN)])
    register.end(by(BANK), [_end(customer, "2013-06-01")])
    register.report(by(BANK), [ReportItem(customer, OWNER, "2013-07-01", LOAN)])
    register.report(by(BANK), [ReportItem(customer, OWNER, "2013-02-01", ACCOUNT)])
    register.correct(by(BANK), [
        CorrectItem(customer, OWNER, LOAN, "2013-01-01", CorrectionAction.END_CORRECTED,
                    "2013-05-01", CorrectionReason.WRONG_DATE),
        CorrectItem(customer, OWNER, LOAN, "2013-07-01", CorrectionAction.START_CORRECTED,
                    "2013-08-01", CorrectionReason.WRONG_DATE),
    ])  # fmt: skip
    register.retract(by(BANK), [
        RetractItem(customer, OWNER, ACCOUNT, "2013-02-01", CorrectionReason.WRONG_KIND)
    ])  # fmt: skip
    loan = register.list_own(by(BANK), customer)
    assert [(h.kind, len(h.periods), len(h.corrections)) for h in loan] == [(LOAN, 2, 2)]
    assert store.problems() == []
    # The content digest (nodes and backups compared) covers the corrections too.
    with store.read() as view:
        before = content_digest(view).digest
    register.correct(by(BANK), [
        CorrectItem(customer, OWNER, LOAN, "2013-08-01", CorrectionAction.START_CORRECTED,
                    "2013-08-01", CorrectionReason.WRONG_DATE),  # as it is: no change
    ])  # fmt: skip
    with store.read() as view:
        assert content_digest(view).digest == before
    register.correct(by(BANK), [
        CorrectItem(customer, OWNER, LOAN, "2013-08-01", CorrectionAction.START_CORRECTED,
                    "2013-07-15", CorrectionReason.WRONG_DATE),
        CorrectItem(customer, OWNER, LOAN, "2013-07-15", CorrectionAction.START_CORRECTED,
                    "2013-08-01", CorrectionReason.WRONG_DATE),  # the periods as before
    ])  # fmt: skip
    with store.read() as view:
        assert content_digest(view).digest != before

    # Eleven years on the first loan period has expired: its correction goes with it.
    clock.set(FixedClock.on(date(2024, 6, 2)).now())
    operations.purge()
    (history,) = register.list_own(by(BANK), customer)
    assert [p.start for p in history.periods] == [date(2013, 8, 1)]
    assert [c.action for c in history.corrections] == [CorrectionAction.START_CORRECTED] * 3

    # Closure ends every kind.
    register.report(by(BANK), [ReportItem(customer, OWNER, "2024-01-01", ACCOUNT)])
    assert operations.close_institution(BANK, "2024-06-01") == 2
    assert {h.periods[-1].end for h in register.list_own(by(BANK), customer)} == {date(2024, 6, 1)}
    assert store.problems() == []
    raw = [v for (db, _), v in dump_store(store).items() if db == RELATIONSHIPS]
    assert sorted(codec.decode_relationship(b"", v).kind.value for v in raw) == [
        "loan", "payment_account",
    ]  # fmt: skip


def _end(customer: str, day: str):
    from kfr_grpc.register.service import EndItem

    return EndItem(customer, OWNER, day, LOAN)
