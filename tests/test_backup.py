"""Backups taken while the server runs and writes, and restores of them."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from click.testing import CliRunner

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.cli import main
from kfr_grpc.keyring import Keyring
from tests.support import INSTITUTION_NAME, INSTITUTION_ORG
from tests.test_server import lookup, report

KFR = str(Path(sys.executable).with_name("kfr"))
OWNER = pb.ROLE_OWNER


def kfr_process(*args: str) -> subprocess.CompletedProcess:
    """``kfr`` in its own process: it opens the LMDB environment beside the server's."""
    return subprocess.run([KFR, *args], capture_output=True, text=True, timeout=60)


class WriteLoad:
    """Threads reporting new relationships one by one; remembers what was acknowledged.

    A thread that fails stops the load and its error is raised in the test's thread
    (by ``wait_for`` and on leaving the block), so a dead writer can never leave the test
    waiting for writes that will not come."""

    def __init__(self, server, ids, threads: int = 3) -> None:
        self._server, self._ids = server, ids
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.acknowledged: list[str] = []
        self.errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> WriteLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self._threads), "a writer hangs"
        self._raise_errors()

    def _run(self) -> None:
        try:
            client = self._server.client(self._server.pki.institution)
            while not self._stop.is_set():
                with self._lock:
                    customer = self._ids.person()
                report(client, INSTITUTION_ORG, (customer, OWNER, "2020-01-01"), timeout=10)
                with self._changed:
                    self.acknowledged.append(customer)
                    self._changed.notify_all()
        except BaseException as error:
            with self._changed:
                self.errors.append(error)
                self._changed.notify_all()
            self._stop.set()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        with self._changed:
            done = self._changed.wait_for(
                lambda: len(self.acknowledged) >= count or self.errors, timeout
            )
        self._raise_errors()
        assert done, f"only {len(self.acknowledged)} of {count} writes within {timeout} s"

    def _raise_errors(self) -> None:
        if self.errors:
            raise AssertionError(f"a writer failed: {self.errors[0]!r}") from self.errors[0]

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.acknowledged)


def test_a_backup_under_write_load_holds_everything_acknowledged_before_it(
    server, ids, tmp_path: Path
):
    destination = tmp_path / "backup"
    with WriteLoad(server, ids) as load:
        load.wait_for(50)
        before_backup = load.snapshot()
        result = kfr_process("backup", str(destination), "--config", str(server.config_path))
        assert result.returncode == 0, result.stderr
        assert "relationships" in result.stdout
        load.wait_for(len(before_backup) + 20)  # writes go on during and after the backup
    written_in_all = len(load.snapshot())
    server.stop()

    restored = CliRunner().invoke(
        main, ["restore", str(destination), "--config", str(server.config_path)]
    )
    assert restored.exit_code == 0, restored.output
    assert "previous store was moved to" in restored.output
    server.start()
    agency = server.client(server.pki.agency)
    missing = [c for c in before_backup if not lookup(agency, c)]
    assert missing == []
    assert server.relationship_count() < written_in_all  # it is the backup, not the live store
    assert lookup(agency, before_backup[0]) == [(INSTITUTION_ORG, INSTITUTION_NAME, [OWNER], True)]


def test_a_backup_is_sealed_like_the_store_and_never_holds_the_keyring(server, ids, tmp_path: Path):
    customers = [ids.person() for _ in range(30)]
    report(server.client(server.pki.institution), INSTITUTION_ORG,
           *[(c, OWNER, "2020-01-01") for c in customers])  # fmt: skip
    destination = tmp_path / "backup"
    result = kfr_process("backup", str(destination), "--config", str(server.config_path))
    assert result.returncode == 0, result.stderr
    assert [p.name for p in destination.iterdir()] == ["data.mdb"]
    assert (destination / "data.mdb").stat().st_mode & 0o077 == 0
    raw = (destination / "data.mdb").read_bytes()
    assert not [c for c in customers if c.encode() in raw]
    keyring = Keyring.load(server.keyring_path)
    for key in (*keyring.seal.keys.values(), *keyring.pseudonym.keys.values()):
        assert key not in raw


def test_backup_refuses_a_non_empty_destination_or_one_inside_the_data(server, tmp_path: Path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "something").write_text("x")
    result = kfr_process("backup", str(occupied), "--config", str(server.config_path))
    assert result.returncode == 1 and "not empty" in result.stderr
    inside = server.data_dir / "backup"
    result = kfr_process("backup", str(inside), "--config", str(server.config_path))
    assert result.returncode == 1 and "inside data_dir" in result.stderr


def test_restore_refuses_a_backup_of_another_keyring(server, tmp_path: Path, keyring_path):
    destination = tmp_path / "backup"
    assert (
        kfr_process("backup", str(destination), "--config", str(server.config_path)).returncode == 0
    )
    server.stop()
    keyring_path.unlink()
    Keyring.generate().save(keyring_path)  # the operator points at the wrong keyring
    result = CliRunner().invoke(
        main, ["restore", str(destination), "--config", str(server.config_path)]
    )
    assert result.exit_code == 1
    assert "written under keyring" in result.output
    assert (server.data_dir / "data.mdb").exists()  # the live store was left alone


def test_a_backup_is_written_where_no_other_user_can_read_it_even_into_an_open_directory(
    tmp_path: Path,
):
    """Into an existing 0755 directory: the copy is made inside a 0700 directory, as a
    0600 file, before it is moved into place; nothing else is left behind."""
    from kfr_grpc.register.storage import CopySummary
    from kfr_grpc.store import backup as backups

    destination = tmp_path / "open"
    destination.mkdir(mode=0o755)
    destination.chmod(0o755)
    seen = []

    def copy(directory: Path) -> None:
        seen.append(directory.stat().st_mode & 0o777)
        (directory / backups.DATA_FILE).write_bytes(b"sealed pages")

    summary = backups.backup(copy, destination, lambda d: CopySummary(d, 0, 0, 0))
    assert seen == [0o700]
    assert (destination / backups.DATA_FILE).stat().st_mode & 0o777 == 0o600
    assert [p.name for p in destination.iterdir()] == [backups.DATA_FILE]
    assert summary.path == destination
