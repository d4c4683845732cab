"""The LMDB store: layout, range reads, sealing, keyring binding."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from datetime import date
from pathlib import Path

import lmdb
import pytest

from kfr_grpc.errors import ConfigError, CorruptRecord, StoreClosed, StoreFull
from kfr_grpc.keyring import Keyring, KeySet
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
from kfr_grpc.register.model import Institution, Period, ProductKind, Role
from kfr_grpc.store import LmdbStore

MAP_SIZE = 64 * 1024 * 1024
BANK_A, BANK_B = "311000004", "313000001"

UNSPECIFIED = ProductKind.UNSPECIFIED


def person(ids) -> CustomerId:
    return CustomerId(ids.person(), CustomerKind.PERSON)


def put(store, *histories: tuple) -> None:
    """Stores each (customer, institution, role, kind, periods) in one transaction."""

    def work(txn) -> None:
        for customer, institution, role, kind, periods in histories:
            txn.put_history(customer, institution, role, kind, periods)

    store.write(work)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


@pytest.fixture
def store(tmp_path: Path, keyring: Keyring):
    opened = LmdbStore.open(tmp_path / "data", keyring, map_size=MAP_SIZE)
    yield opened
    opened.close()


def test_histories_round_trip_and_range_reads_stay_within_one_customer(store, ids):
    alice, bob = person(ids), person(ids)
    history = (Period(date(2020, 1, 1), date(2021, 1, 1)), Period(date(2022, 1, 1)))
    put(
        store,
        (alice, BANK_A, Role.OWNER, UNSPECIFIED, history),
        (alice, BANK_B, Role.DISPONENT, UNSPECIFIED, (Period(date(2023, 5, 5)),)),
        (bob, BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2019, 1, 1)),)),
    )
    with store.read() as view:
        assert view.history(alice, BANK_A, Role.OWNER, UNSPECIFIED) == history
        assert view.history(alice, BANK_A, Role.DISPONENT, UNSPECIFIED) == ()
        everything = {(h.institution, h.role) for h in view.relationships(alice)}
        assert everything == {(BANK_A, Role.OWNER), (BANK_B, Role.DISPONENT)}
        at_b = list(view.relationships(alice, BANK_B))
        assert [(h.institution, h.role) for h in at_b] == [(BANK_B, Role.DISPONENT)]
        assert view.relationship_count() == 3


def test_failed_write_transaction_leaves_nothing(store, ids):
    customer = person(ids)

    def fail(txn) -> None:
        txn.put_history(customer, BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2020, 1, 1)),))
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        store.write(fail)
    with store.read() as view:
        assert view.relationship_count() == 0


def test_institutions_round_trip(store):
    institution = Institution(BANK_A, "Testbanken KFR ÆØÅ", date(2026, 1, 2))
    store.write(lambda txn: txn.put_institution(institution))
    with store.read() as view:
        assert view.institution(BANK_A) == institution
        assert view.institution(BANK_B) is None
        assert list(view.institutions()) == [institution]


def test_raw_files_contain_no_customer_id(tmp_path: Path, store, ids):
    rng = random.Random(7)
    customers = [person(ids) for _ in range(200)]
    customers += [CustomerId(ids.company(), CustomerKind.ORGANISATION) for _ in range(50)]
    roles = [rng.choice([Role.OWNER, Role.DISPONENT]) for _ in customers]
    put(
        store,
        *[
            (c, BANK_A, r, rng.choice(list(ProductKind)), (Period(date(2020, 1, 1)),))
            for c, r in zip(customers, roles, strict=True)
        ],
    )
    store.close()
    raw = b"".join(path.read_bytes() for path in (tmp_path / "data").iterdir())
    assert raw, "the store wrote nothing"
    leaked = [c for c in customers if c.digits.encode() in raw]
    assert not leaked, f"{len(leaked)} customer IDs found in clear in the LMDB files"


def test_a_value_moved_to_another_key_fails_to_open(tmp_path: Path, store, keyring, ids):
    first, second = person(ids), person(ids)
    put(
        store,
        (first, BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2020, 1, 1)),)),
        (second, BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2021, 1, 1)),)),
    )
    store.close()
    env = lmdb.open(str(tmp_path / "data"), max_dbs=8, map_size=MAP_SIZE)
    relationships = env.open_db(b"relationships")
    with env.begin(write=True, db=relationships) as txn:
        (_, value_a), (key_b, _) = list(txn.cursor())
        txn.put(key_b, value_a)
    env.close()
    reopened = LmdbStore.open(tmp_path / "data", keyring, map_size=MAP_SIZE)
    try:
        with reopened.read() as view:
            moved_to = [c for c in (first, second) if _opens(view, c) is False]
        assert len(moved_to) == 1, "exactly the overwritten record must fail to open"
    finally:
        reopened.close()


def _opens(view, customer: CustomerId) -> bool:
    try:
        view.history(customer, BANK_A, Role.OWNER, UNSPECIFIED)
    except CorruptRecord:
        return False
    return True


def _fingerprint(directory: Path) -> str:
    return hashlib.sha256((directory / "data.mdb").read_bytes()).hexdigest()


def test_another_keyring_is_refused_without_writing(tmp_path: Path, store, ids):
    put(store, (person(ids), BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2020, 1, 1)),)))
    store.close()
    data = tmp_path / "data"
    before = _fingerprint(data)
    with pytest.raises(ConfigError, match="written under keyring"):
        LmdbStore.open(data, Keyring.generate(), map_size=MAP_SIZE)
    assert _fingerprint(data) == before


def test_same_keyring_id_with_other_keys_is_refused(tmp_path: Path, store, keyring):
    store.close()
    impostor = dataclasses.replace(keyring, seal=KeySet.generate())
    before = _fingerprint(tmp_path / "data")
    with pytest.raises(ConfigError, match="do not open"):
        LmdbStore.open(tmp_path / "data", impostor, map_size=MAP_SIZE)
    assert _fingerprint(tmp_path / "data") == before


def test_a_foreign_lmdb_environment_is_refused(tmp_path: Path, keyring):
    env = lmdb.open(str(tmp_path / "foreign"), map_size=MAP_SIZE)
    with env.begin(write=True) as txn:
        txn.put(b"something", b"else")
    env.close()
    with pytest.raises(ConfigError, match="not a KFR store"):
        LmdbStore.open(tmp_path / "foreign", keyring, map_size=MAP_SIZE)


def test_reopening_with_the_right_keyring_reads_everything(tmp_path: Path, store, keyring, ids):
    customer = person(ids)
    put(store, (customer, BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2020, 1, 1)),)))
    store.close()
    reopened = LmdbStore.open(tmp_path / "data", keyring, map_size=MAP_SIZE)
    try:
        with reopened.read() as view:
            assert view.history(customer, BANK_A, Role.OWNER, UNSPECIFIED) == (
                Period(date(2020, 1, 1)),
            )
    finally:
        reopened.close()


def test_a_full_store_raises_store_full_at_its_maximum(tmp_path: Path, keyring, ids):
    size = 256 * 1024
    tiny = LmdbStore.open(tmp_path / "tiny", keyring, map_size=size, max_map_size=size)
    try:
        many = [
            (person(ids), BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2020, 1, 1)),))
        ] * 10_000
        with pytest.raises(StoreFull, match="max_map_size_mb"):
            put(tiny, *[(person(ids), *rest) for _, *rest in many])
        with tiny.read() as view:
            assert view.relationship_count() == 0
    finally:
        tiny.close()


def test_the_map_grows_by_itself_far_past_its_initial_size(tmp_path: Path, keyring, ids):
    from kfr_grpc.dev.synthetic import unique_synthetic_person_ids

    customers = unique_synthetic_person_ids(seed=5)
    grows = LmdbStore.open(tmp_path / "grows", keyring, map_size=64 * 1024)
    try:
        for _ in range(40):
            batch = [CustomerId(next(customers), CustomerKind.PERSON) for _ in range(1000)]
            put(
                grows,
                *[(c, BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2020, 1, 1)),)) for c in batch],
            )
        with grows.read() as view:
            assert view.relationship_count() == 40_000
        usage = grows.usage()
        used, size = usage.used_bytes, usage.capacity_bytes
        assert used > 100 * 64 * 1024 and size > used  # far past the initial 64 KiB
    finally:
        grows.close()


def test_another_process_growing_the_map_is_adopted(tmp_path: Path, keyring, ids):
    """Two environments on one store stand in for two processes (the server, kfr admin)."""
    import subprocess
    import sys

    first = LmdbStore.open(tmp_path / "shared", keyring, map_size=64 * 1024)
    try:
        put(first, (person(ids), BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2020, 1, 1)),)))
        keyring_file = tmp_path / "keyring.json"
        keyring.save(keyring_file)
        grower = f"""
import sys
from datetime import date
from pathlib import Path
from kfr_grpc.keyring import Keyring
from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
from kfr_grpc.register.model import Period, ProductKind, Role
from kfr_grpc.store import LmdbStore
UNSPECIFIED = ProductKind.UNSPECIFIED
store = LmdbStore.open(Path({str(tmp_path / "shared")!r}),
                       Keyring.load(Path({str(keyring_file)!r})), map_size=64 * 1024)


def batch_of(batch):
    def work(txn):
        for n in range(1000):
            digits = f"{{310000000 + batch * 1000 + n:09d}}"
            txn.put_history(CustomerId(digits, CustomerKind.ORGANISATION), "311000004",
                            Role.OWNER, UNSPECIFIED, (Period(date(2020, 1, 1)),))
    return work

for batch in range(10):
    store.write(batch_of(batch))
store.close()
"""
        subprocess.run([sys.executable, "-c", grower], check=True, timeout=120)
        # This process adopts the bigger map and goes on.
        put(first, (person(ids), BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2020, 1, 1)),)))
        with first.read() as view:
            assert view.relationship_count() == 10_002
    finally:
        first.close()


def test_close_waits_for_the_write_under_way_then_refuses_new_ones(tmp_path, keyring, ids):
    import threading

    store = LmdbStore.open(tmp_path / "data", keyring, map_size=MAP_SIZE)
    customer = person(ids)
    inside, release = threading.Event(), threading.Event()

    def slow_write() -> None:
        def work(txn) -> None:
            txn.put_history(customer, BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2020, 1, 1)),))
            inside.set()
            release.wait(5)

        store.write(work)

    writer = threading.Thread(target=slow_write)
    writer.start()
    assert inside.wait(5)
    closing = threading.Thread(target=store.close)
    closing.start()
    closing.join(0.3)
    assert closing.is_alive()  # the write is still under way: close waits for it
    release.set()
    writer.join(5)
    closing.join(5)
    assert not closing.is_alive()
    with pytest.raises(StoreClosed), store.read():
        pass
    reopened = LmdbStore.open(tmp_path / "data", keyring, map_size=MAP_SIZE)
    with reopened.read() as view:
        assert view.history(customer, BANK_A, Role.OWNER, UNSPECIFIED) == (
            Period(date(2020, 1, 1)),
        )
    reopened.close()


def test_close_leaves_a_stuck_transaction_to_the_process_exit(tmp_path, keyring, caplog):
    store = LmdbStore.open(tmp_path / "data", keyring, map_size=MAP_SIZE)
    with store.read():
        store.close(wait_seconds=0.1)  # this thread's own transaction: it cannot end first
    assert "still running at close" in caplog.text


def test_a_write_that_finds_the_map_full_below_its_maximum_grows_it_and_runs_again(
    tmp_path: Path, keyring, ids, monkeypatch
):
    """As when another process filled the map between this one's look at it and its write."""
    store = LmdbStore.open(tmp_path / "data", keyring, map_size=256 * 1024)
    try:
        monkeypatch.setattr(store._gen.map, "ensure_headroom", lambda: None)  # no look ahead
        runs = []

        def work(txn) -> None:
            runs.append(1)
            for _ in range(3000):
                txn.put_history(
                    person(ids), BANK_A, Role.OWNER, UNSPECIFIED, (Period(date(2020, 1, 1)),)
                )

        store.write(work)
        assert len(runs) >= 2  # the first run found the map full; it grew; the next fitted
        with store.read() as view:
            assert view.relationship_count() == 3000
    finally:
        store.close()
