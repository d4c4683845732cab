"""Key rotation on a populated store: seal and pseudonym keys, interrupted and resumed,
with every Lookup and ListOwn answer compared with the answers before rotation."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import pytest

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.clock import FixedClock
from kfr_grpc.keyring import Keyring, KeyringFile
from kfr_grpc.register.corrections import CorrectItem
from kfr_grpc.register.model import CorrectionAction, CorrectionReason, ProductKind, Role
from kfr_grpc.register.operations import Operations
from kfr_grpc.register.service import EndItem, Register, ReportItem
from kfr_grpc.store import LmdbStore, rotation
from kfr_grpc.store.layout import BY_INSTITUTION, ENDED_BY_DATE, RELATIONSHIPS
from tests.support import INSTITUTION_ORG, OTHER_INSTITUTION_ORG, by, dump_store, register_lookup
from tests.test_server import list_own, lookup, report

TODAY = date(2026, 6, 15)
BANKS = ("311000004", "313000001")
LOAN = ProductKind.LOAN


def _LATER_LOAN(customer: str) -> CorrectItem:
    return CorrectItem(
        customer, Role.OWNER, LOAN, "2016-01-01", CorrectionAction.START_CORRECTED, "2016-02-01",
        CorrectionReason.WRONG_DATE,
    )  # fmt: skip


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    path = tmp_path / "secrets" / "keyring.json"
    path.parent.mkdir()
    Keyring.generate().save(path)
    return path


@pytest.fixture
def store(tmp_path: Path, keyring_path: Path):
    opened = LmdbStore.open(
        tmp_path / "data",
        KeyringFile(keyring_path, check_seconds=0),
        map_size=1 << 28,
        keyring_path=keyring_path,
    )
    yield opened
    opened.close()


@pytest.fixture
def populated(store, ids) -> tuple[Register, list[str]]:
    """300 customers with varied histories at two banks, plus the other kinds of record."""
    return populate(store, ids, kinds=True)


def populate(store, ids, *, kinds: bool) -> tuple[Register, list[str]]:
    """``populated``; ``kinds``: with loans beside, some corrected (else as a store from
    before kinds holds)."""
    clock = FixedClock.on(TODAY)
    operations = Operations(store, clock)
    for bank in BANKS:
        operations.add_institution(bank, f"Bank {bank}")
    operations.set_collection_accounts(BANKS[0], ["86011117947"])
    register = Register(store, clock, test_mode=True)
    rng = random.Random(4)
    customers = [ids.person() for _ in range(280)] + [ids.company() for _ in range(20)]
    for customer in customers:
        for bank in rng.sample(BANKS, rng.randint(1, 2)):
            register.report(by(bank), [ReportItem(customer, Role.OWNER, "2015-03-01")])
            if kinds and rng.random() < 0.3:  # a loan besides, its start corrected now and then
                register.report(by(bank), [ReportItem(customer, Role.OWNER, "2016-01-01", LOAN)])
                if rng.random() < 0.5:
                    register.correct(by(bank), [_LATER_LOAN(customer)])
            if rng.random() < 0.5:
                register.end(by(bank), [EndItem(customer, Role.OWNER, "2018-01-01")])
                if rng.random() < 0.5:
                    register.report(by(bank), [ReportItem(customer, Role.OWNER, "2020-01-01")])
    return register, customers


def repseudonymise(store: LmdbStore, keyring_path: Path, *, progress=None, **batches):
    """``kfr keys repseudonymise``, in batches of the test's size."""
    return rotation.repseudonymise(
        store.write, keyring_path, progress or (lambda _: None), **batches
    )


def answers(register: Register, customers: list[str]) -> list:
    """Every Lookup and ListOwn answer for ``customers``."""
    result = []
    for customer in customers:
        result.append(register_lookup(register, customer, "2010-01-01"))
        result.append([register.list_own(by(bank), customer) for bank in BANKS])
    return result


def assert_indexes_consistent(store: LmdbStore) -> None:
    """Every relationship has its by-institution slot (naming it), every ended period its
    ended-by-date entry, and the indexes name nothing else (the integrity walk, whose
    findings tests/test_integrity.py checks; the counts checked here too)."""
    assert store.problems() == []
    from kfr_grpc.store import codec

    records = dump_store(store)  # values opened
    relationships = [
        codec.decode_relationship(k, v) for (db, k), v in records.items() if db == RELATIONSHIPS
    ]
    ended = sum(1 for r in relationships for p in r.history if p.end is not None)
    assert sum(1 for (db, _) in records if db == BY_INSTITUTION) == len(relationships)
    assert sum(1 for (db, _) in records if db == ENDED_BY_DATE) == ended


def test_seal_rotation_keeps_everything_readable_and_retires_the_old_key(
    populated, store, keyring_path, ids
):
    register, customers = populated
    before = answers(register, customers)
    assert store.rotate_key(pseudonym=False) == 2
    assert store.write(lambda txn: txn.seal_version) == 2
    # The request records of the calls so far are sealed with version 1 too.
    assert store.write(lambda txn: txn.seal_versions_in_use()) == {1}
    assert answers(register, customers) == before  # old values still open

    register.report(by(BANKS[0]), [ReportItem(ids.person(), Role.OWNER, "2026-01-01")])
    assert store.write(lambda txn: txn.seal_versions_in_use()) == {1, 2}  # new writes: 2

    result = store.reseal(lambda _: None)
    assert result.finished and result.retired == (1,)
    assert result.changed > len(customers)  # relationships, institutions, accounts...
    assert store.write(lambda txn: txn.seal_versions_in_use()) == {2}
    assert set(Keyring.load(keyring_path).seal.keys) == {2}
    assert answers(register, customers) == before


def test_rotating_both_keys_interrupted_once_gives_the_same_answers(populated, store, keyring_path):
    register, customers = populated
    before = answers(register, customers)
    store.rotate_key(pseudonym=False)
    store.rotate_key(pseudonym=True)

    stopped = repseudonymise(store, keyring_path, batch=100, stop_after_batches=1)
    assert not stopped.finished and stopped.changed == 100
    assert answers(register, customers) == before  # half moved: still right
    assert_indexes_consistent(store)

    finished = repseudonymise(store, keyring_path, batch=100)
    assert finished.finished and finished.retired == (1,)
    store.reseal(lambda _: None)
    assert answers(register, customers) == before
    assert_indexes_consistent(store)
    relationship_keys = [k for (db, k) in dump_store(store) if db == RELATIONSHIPS]
    assert {key[0] for key in relationship_keys} == {2}
    keyring = Keyring.load(keyring_path)
    assert (set(keyring.seal.keys), set(keyring.pseudonym.keys)) == ({2}, {2})


def test_writes_during_repseudonymisation_land_under_the_new_key(populated, store, keyring_path):
    register, customers = populated
    store.rotate_key(pseudonym=True)
    repseudonymise(store, keyring_path, batch=50, stop_after_batches=1)
    # Customers still under the old key get their relationships ended: the records move.
    at_bank = [
        c
        for c in customers
        if any(h.periods[-1].end is None for h in register.list_own(by(BANKS[1]), c))
    ]
    register.end(by(BANKS[1]), [EndItem(c, None, "2026-06-01") for c in at_bank])
    repseudonymise(store, keyring_path)
    for customer in at_bank:
        ends = {h.periods[-1].end for h in register.list_own(by(BANKS[1]), customer)}
        assert date(2026, 6, 1) in ends and None not in ends  # every kind ended
    assert_indexes_consistent(store)


def test_retention_and_closure_still_work_after_repseudonymisation(populated, store, keyring_path):
    store.rotate_key(pseudonym=True)
    repseudonymise(store, keyring_path)
    operations = Operations(store, FixedClock.on(date(2030, 1, 2)))
    assert operations.purge().periods_removed > 0  # the ended-by-date index was rebuilt
    assert Operations(store, FixedClock.on(TODAY)).close_institution(BANKS[0], "2026-06-01") > 0
    assert_indexes_consistent(store)


def test_the_server_answers_correctly_while_keys_rotate(server, ids):
    institution = server.client(server.pki.institution)
    agency = server.client(server.pki.agency)
    customers = [ids.person() for _ in range(120)]
    for offset in range(0, len(customers), 40):
        batch = [(c, pb.ROLE_OWNER, "2020-01-01") for c in customers[offset : offset + 40]]
        report(institution, INSTITUTION_ORG, *batch)
    report(server.client(server.pki.other_institution), OTHER_INSTITUTION_ORG,
           (customers[0], pb.ROLE_DISPONENT, "2021-01-01"))  # fmt: skip

    def everything() -> list:
        return [lookup(agency, c) for c in customers] + [
            list_own(institution, INSTITUTION_ORG, c) for c in customers[:10]
        ]

    before = everything()
    store, keyring_path = server.server.store, server.keyring_path
    store.rotate_key(pseudonym=False)
    store.rotate_key(pseudonym=True)
    during = []
    repseudonymise(
        store, keyring_path, batch=30, progress=lambda _: during.append(everything() == before)
    )
    store.reseal(lambda _: None)
    assert during and all(during)
    assert everything() == before
    report(institution, INSTITUTION_ORG, (ids.person(), pb.ROLE_OWNER, ""))  # writes still work


def test_two_rotations_at_once_each_add_a_version_and_lose_no_key(store, keyring_path, monkeypatch):
    """Both read the keyring, then write it back with "the next" version: without the
    keyring's lock, one of the two keys (and whatever it sealed) would be lost."""
    import threading
    import time

    load = Keyring.load

    def slow_load(path: Path) -> Keyring:
        keyring = load(path)
        time.sleep(0.2)  # both rotations would have read the same keyring by now
        return keyring

    monkeypatch.setattr(Keyring, "load", staticmethod(slow_load))
    versions: list[int] = []
    rotations = [
        threading.Thread(
            target=lambda: versions.append(
                rotation.rotate(store.write, keyring_path, pseudonym=False)
            )
        )
        for _ in range(2)
    ]
    for thread in rotations:
        thread.start()
    for thread in rotations:
        thread.join(timeout=10)
    monkeypatch.undo()
    assert sorted(versions) == [2, 3]
    keyring = Keyring.load(keyring_path)
    assert set(keyring.seal.keys) == {1, 2, 3} and keyring.seal.primary == 3
    assert store.write(lambda txn: txn.seal_version) == 3
