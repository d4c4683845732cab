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
from kfr_grpc.register.model import ProductKind
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

UNSPECIFIED = ProductKind.UNSPECIFIED


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


_COUNT_TRACES = """
import sys
from pathlib import Path
needles = [bytes.fromhex(n) for n in sys.argv[2:]]
files = [p for p in Path(sys.argv[1]).rglob("*") if p.is_file()]
content = b"".join(p.read_bytes() for p in files)
print(sum(1 for needle in needles if needle in content))
"""


def _traces(directory: Path, needles: set[bytes]) -> int:
    """How many of ``needles`` occur anywhere in the files of ``directory``. Read by another
    process: a process that has the store open must not open and close LMDB's lock file
    itself (closing any descriptor of it drops the process's locks on it, and the next
    process to open the store would set the lock file up afresh under it)."""
    command = [sys.executable, "-c", _COUNT_TRACES, str(directory), *(n.hex() for n in needles)]
    return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


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


def test_purge_and_compaction_beside_a_running_server_erase_for_good_while_it_answers(server, ids):
    """``kfr purge`` and then ``kfr compact`` in processes of their own, the server taking
    reports and lookups without pause during the compactions: no call fails; afterwards the purged
    relationships' pseudonyms are nowhere in the data directory (before compaction they
    are: the control); writes the server took after the swap survive its restart."""
    import threading

    from kfr_grpc.store.generations import is_moved_marker
    from tests.test_server import end, lookup, report

    institution = server.client(server.pki.institution)
    agency = server.client(server.pki.agency)
    purged = [ids.person() for _ in range(5)]
    report(institution, "311000004", *[(c, 1, "2005-01-01") for c in purged])
    end(institution, "311000004", *[(c, 1, "2012-01-01") for c in purged])
    kept = [ids.person() for _ in range(20)]
    report(institution, "311000004", *[(c, 1, "2020-01-01") for c in kept])
    pseudonymiser = Keyring.load(server.keyring_path).pseudonymiser()
    marks = {pseudonymiser.pseudonym(c) for c in purged}

    stop, failures, calls, later = threading.Event(), [], [0], []

    def keep_calling() -> None:
        while not stop.is_set():
            try:
                newcomer = ids.person()
                report(institution, "311000004", (newcomer, 1, "2021-01-01"))
                later.append(newcomer)
                assert lookup(agency, kept[calls[0] % len(kept)])
                calls[0] += 1
            except Exception as error:
                failures.append(repr(error))

    config = ["--config", str(server.config_path)]
    purge = subprocess.run([KFR, "purge", *config], capture_output=True, text=True, timeout=60)
    assert purge.returncode == 0 and "5 relationships" in purge.stdout, purge.stdout
    assert _traces(server.data_dir, marks) > 0  # the control: a purge alone leaves them
    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        for _ in range(2):  # the second compacts a generation made by the first
            done = subprocess.run(
                [KFR, "compact", *config], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            assert "Traceback" not in done.stderr
        time.sleep(0.5)  # calls on the new generation too
    finally:
        stop.set()
        caller.join()
    assert failures == [] and calls[0] > 0
    assert _traces(server.data_dir, marks) == 0
    generation_dirs = [p for p in server.data_dir.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(generation_dirs) == 1 and is_moved_marker(server.data_dir / "data.mdb")
    server.restart()
    assert server.relationship_count() == len(kept) + len(later)


_OTHER_PROCESS_WRITES = """
import sys
from pathlib import Path
from kfr_grpc.keyring import Keyring
from kfr_grpc.store import LmdbStore


store = LmdbStore.open(Path(sys.argv[1]), Keyring.load(Path(sys.argv[2])), map_size=1 << 27)
for n in range(int(sys.argv[3])):
    key = b"probe-%06d" % n
    store.write(lambda txn, key=key: txn._txn.put(key, b"1", db=txn._db[b"meta"]))
    with store.read() as view:  # its own write, seen at once
        assert view._txn.get(key, db=view._db[b"meta"]) == b"1", n
store.close()
print("done")
"""


def test_writes_of_another_process_during_compactions_are_never_lost(
    populated, tmp_path: Path, keyring_path: Path
):
    """A process that writes while this one compacts again and again: every one of its
    writes is in the store afterwards (none went to a generation swapped out), and it
    read each back at once."""
    store = populated[0]
    writes = 300
    writer = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS_WRITES, str(tmp_path / "data"), str(keyring_path),
         str(writes)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    compactions = 0
    try:
        while writer.poll() is None or compactions == 0:
            store.compact()
            compactions += 1
        output, _ = writer.communicate(timeout=60)
    finally:
        writer.kill()
        writer.wait()
    assert "done" in output, output
    assert compactions >= 2
    with store.read() as view:
        probes = [k for k, _ in view._txn.cursor(db=view._db[META]) if k.startswith(b"probe-")]
    assert len(probes) == writes


def test_after_the_first_compaction_an_older_kfr_finds_no_store_to_start_afresh_in(
    populated, tmp_path: Path
):
    """The data directory's own data.mdb becomes a marker that is no LMDB file (an older
    kfr, or LMDB itself, refuses it instead of making an empty register there), and a
    'current' link naming a generation without its data file is refused too."""
    import lmdb

    from kfr_grpc.errors import ConfigError
    from kfr_grpc.store.generations import CURRENT, store_directory

    store = populated[0]
    store.compact()
    data_dir = tmp_path / "data"
    assert store_directory(data_dir) != data_dir
    with pytest.raises(lmdb.Error):
        lmdb.open(str(data_dir), max_dbs=16, readonly=True, lock=False)
    keyring_path = store.keyring_file()
    store.close()
    _open(data_dir, keyring_path).close()  # this kfr opens it
    (store_directory(data_dir) / "data.mdb").unlink()  # a generation lost its file
    with pytest.raises(ConfigError, match=f"{CURRENT} names gen-"):
        _open(data_dir, keyring_path)


def test_restore_refuses_while_a_process_still_uses_the_store(populated, tmp_path: Path):
    """Even a process on a generation a compaction has deleted holds the store's in-use
    lock: kfr restore waits for it to let go."""
    from kfr_grpc.errors import ConfigError
    from kfr_grpc.store.lmdb_store import restore

    store = populated[0]
    store.backup(tmp_path / "backup")
    keyring = store.keyring
    with pytest.raises(ConfigError, match="in use"):
        restore(tmp_path / "backup", tmp_path / "data", keyring)
    store.close()
    restored, _ = restore(tmp_path / "backup", tmp_path / "data", keyring)
    assert restored.relationships == 120


def test_writes_made_while_the_copy_is_written_reach_the_new_generation(
    populated, monkeypatch, ids
):
    """The copy is of a snapshot while writers go on: what they change while it is
    written is noted and brought over under the write lock, and the notes themselves
    stay behind."""
    import threading

    from kfr_grpc.register.customer_ids import CustomerId, CustomerKind
    from kfr_grpc.register.model import Period, Role
    from kfr_grpc.store import compaction
    from kfr_grpc.store.layout import CHANGED_PREFIX, COMPACTING_KEY

    store = populated[0]
    newcomer = CustomerId(ids.person(), CustomerKind.PERSON)
    copy_live = compaction.copy_live

    def copy_while_someone_writes(*args) -> None:
        writer = threading.Thread(
            target=store.write,
            args=(
                lambda txn: txn.put_history(
                    newcomer, BANK, Role.OWNER, UNSPECIFIED, (Period(TODAY),)
                ),
            ),
        )
        writer.start()
        writer.join()  # committed after the snapshot the copy is of
        copy_live(*args)

    monkeypatch.setattr(compaction, "copy_live", copy_while_someone_writes)
    copy, _ = store.compact()
    assert copy.relationships == 121
    with store.read() as view:
        assert view.history(newcomer, BANK, Role.OWNER, UNSPECIFIED)
        meta = view._db[META]
        assert view._txn.get(COMPACTING_KEY, db=meta) is None
        notes = [k for k in view._txn.cursor(db=meta).iternext(values=False)]
        assert not [k for k in notes if k.startswith(CHANGED_PREFIX)]
