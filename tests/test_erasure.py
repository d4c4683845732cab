"""Erasure that is physical: after a purge, re-sealing or re-pseudonymisation and
``kfr compact``, the old bytes are nowhere in the data directory; backups never hold
them. Forensic checks on the raw files, each with its control (before compaction the
bytes are there: LMDB keeps what it frees)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from kfr_grpc.clock import FixedClock
from kfr_grpc.keyring import Keyring, KeyringFile
from kfr_grpc.register.operations import Operations
from kfr_grpc.register.service import Register, ReportItem
from kfr_grpc.store import LmdbStore
from kfr_grpc.store.layout import CANARY_KEY, DATABASES, META, RELATIONSHIPS, SEALED_DATABASES
from kfr_grpc.store.lmdb_store import compact
from tests.support import by, register_lookup
from tests.test_lifecycle import BANK, OTHER_BANK, OWNER, report_and_end

TODAY = date(2026, 6, 15)
KFR = str(Path(sys.executable).with_name("kfr"))

Raw = dict[tuple[bytes, bytes], bytes]


def _open(data_dir: Path, keyring_path: Path) -> LmdbStore:
    return LmdbStore.open(
        data_dir,
        KeyringFile(keyring_path, check_seconds=0),
        map_size=1 << 27,
        keyring_path=keyring_path,
    )


def _raw(store: LmdbStore) -> Raw:
    """Every key and value as stored (values sealed)."""
    with store.read() as view:
        return {
            (name, key): value
            for name in (*DATABASES, META)
            for key, value in view._txn.cursor(db=store._databases[name])
        }


def _traces(directory: Path, needles: set[bytes]) -> int:
    """How many of ``needles`` occur anywhere in the files of ``directory``."""
    content = b"".join(path.read_bytes() for path in directory.rglob("*") if path.is_file())
    return sum(1 for needle in needles if needle in content)


def _fingerprints(before: Raw, after: Raw) -> set[bytes]:
    """What identifies the records that were removed or replaced in a raw file: keys
    that are gone (and the pseudonyms in them; the tests' customers whose relationships
    go have no other), index values that changed (relationship keys),
    and of each sealed value replaced its nonce and tag (random: found only where that
    value is)."""
    marks = set()
    for (database, key), value in before.items():
        if (database, key) not in after and len(key) >= 16:
            marks.add(key)
            if database == RELATIONSHIPS:
                marks.add(key[1:33])  # the pseudonym alone
        if after.get((database, key)) == value:
            continue
        if database in SEALED_DATABASES or key == CANARY_KEY:
            marks.update((value[1:13], value[-16:]))
        elif len(value) >= 16:
            marks.add(value)
    return marks


@pytest.fixture
def populated(tmp_path: Path, keyring_path: Path, ids):
    """A store with 60 relationships that the purge removes and 60 it keeps."""
    store = _open(tmp_path / "data", keyring_path)
    clock = FixedClock.on(TODAY)
    operations = Operations(store, clock)
    operations.add_institution(BANK, "Testbanken")
    operations.add_institution(OTHER_BANK, "Andre bank")
    register = Register(store, clock, test_mode=True)
    old = [ids.person() for _ in range(60)]
    kept = [ids.person() for _ in range(60)]
    for customer in old:
        report_and_end(register, customer, "2001-01-01", "2012-12-31")
    for customer in kept:
        register.report(by(OTHER_BANK), [ReportItem(customer, OWNER, "2015-01-01")])
    yield store, operations, register, old, kept
    store.close()


def test_purged_records_are_gone_from_the_data_file_after_compaction(
    populated, tmp_path: Path, keyring_path: Path
):
    store, operations, register, old, kept = populated
    before = _raw(store)
    assert operations.purge().relationships_removed == len(old)
    after = _raw(store)
    assert len(before) - len(after) >= len(old)  # the relationships and their index entries
    marks = _fingerprints(before, after)
    store.close()
    data_dir = tmp_path / "data"
    assert _traces(data_dir, marks) > 0  # the control: LMDB kept them

    summary, size_before = compact(data_dir, Keyring.load(keyring_path))

    assert _traces(data_dir, marks) == 0
    assert summary.relationships == len(kept) and summary.bytes <= size_before
    reopened = _open(data_dir, keyring_path)
    try:
        register = Register(reopened, FixedClock.on(TODAY), test_mode=True)
        assert all(register_lookup(register, customer) for customer in kept)
        assert not any(register_lookup(register, customer) for customer in old)
    finally:
        reopened.close()


def test_after_resealing_repseudonymising_and_compaction_no_old_key_opens_anything(
    populated, tmp_path: Path, keyring_path: Path
):
    store = populated[0]
    before = _raw(store)  # every value sealed with seal key 1, every key pseudonym 1
    store.rotate_key(pseudonym=False)
    store.rotate_key(pseudonym=True)
    assert store.reseal(lambda _: None).retired == (1,)
    assert store.repseudonymise(lambda _: None).finished
    marks = _fingerprints(before, _raw(store))
    store.close()
    data_dir = tmp_path / "data"
    assert _traces(data_dir, marks) > 0  # the control

    compact(data_dir, Keyring.load(keyring_path))

    assert _traces(data_dir, marks) == 0
    keyring = Keyring.load(keyring_path)
    assert set(keyring.seal.keys) == {2} and set(keyring.pseudonym.keys) == {2}


def test_a_backup_holds_nothing_purged(populated, tmp_path: Path):
    store, operations, _, _, _ = populated
    before = _raw(store)
    operations.purge()
    marks = _fingerprints(before, _raw(store))
    store.backup(tmp_path / "backup")
    assert _traces(tmp_path / "backup", marks) == 0
    assert _traces(tmp_path / "data", marks) > 0  # the control


def test_kfr_compact_refuses_a_running_server_and_compacts_a_stopped_one(server, ids):
    """(``kfr compact`` in a process of its own: a process's file locks never conflict
    with its own, so only another process can show the refusal.)"""
    from tests.test_server import report

    client = server.client(server.pki.institution)
    report(client, "311000004", *[(ids.person(), 1, "") for _ in range(20)])
    command = [KFR, "compact", "--config", str(server.config_path)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "in use" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    server.stop()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "20 relationships" in done.stdout
    server.start()
    assert server.relationship_count() == 20


_WAITING_OPENER = """
import sys, lmdb
names = [name.encode() for name in sys.argv[2:]]

def entries(env):
    databases = [env.open_db(name, create=False) for name in names]
    with env.begin() as txn:
        return sum(txn.stat(database)["entries"] for database in databases)

env = lmdb.open(sys.argv[1], max_dbs=16, map_size=1 << 27)  # waits for the compaction
first = entries(env)
meta = env.open_db(b"meta", create=False)
with env.begin(write=True) as txn:  # a write, as a server started meanwhile would make
    txn.put(b"probe", b"1", db=meta)
env.close()
env = lmdb.open(sys.argv[1], max_dbs=16, map_size=1 << 27)
print(first, entries(env) - 1)
"""


def _entries(store: LmdbStore) -> int:
    with store.read() as view:
        return sum(view._txn.stat(store._databases[name])["entries"] for name in (*DATABASES, META))


@pytest.mark.parametrize("extra_transactions", [0, 1])
def test_a_process_opening_the_store_during_compaction_waits_and_loses_nothing(
    populated, tmp_path: Path, keyring_path: Path, extra_transactions: int
):
    """LMDB's lock file carries the old file's transaction id: an opener that waited
    through the swap must not take it for the new file's (it could pick an older meta
    page, and its first write overwrite the newer one). Run with both parities of the
    old file's transaction id."""
    from kfr_grpc.store import compaction
    from kfr_grpc.store.layout import open_environment
    from kfr_grpc.store.lmdb_store import summarise

    store = populated[0]
    for _ in range(extra_transactions):
        store.write(lambda txn: txn._txn.put(b"parity", b"", db=txn._db[META]))
    expected = _entries(store)
    store.close()
    data_dir = tmp_path / "data"
    keyring = Keyring.load(keyring_path)
    names = [name.decode() for name in (*DATABASES, META)]
    opener: list[subprocess.Popen] = []

    def open_source(directory: Path):
        opener.append(
            subprocess.Popen(
                [sys.executable, "-c", _WAITING_OPENER, str(directory), *names],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        time.sleep(1.0)  # it is waiting for the lock by now
        assert opener[0].poll() is None, "the opener did not wait"
        return open_environment(directory, map_size=1 << 27, readonly=True, shared=False)

    try:
        compaction.compact(data_dir, open_source, lambda d: summarise(d, keyring, live=False))
        output, _ = opener[0].communicate(timeout=60)
    finally:
        for process in opener:  # gone when the test ends, whatever happened
            process.kill()
            process.wait()
    assert output.split() == [str(expected)] * 2, output
