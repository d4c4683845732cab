"""Backups and restores of the LMDB environment.

A backup is a live copy (``compaction.copy_live``: what is live, nothing freed), taken
from a read transaction while the server runs and writes: everything committed before
the copy began is in it, nothing purged or replaced before it is. It is
exactly as protected as the live store (pseudonymised keys, sealed values) and never
holds the keyring. A restore needs the server stopped and the same keyring.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from kfr_grpc.errors import ConfigError
from kfr_grpc.register.storage import CopySummary
from kfr_grpc.store.generations import DATA_FILE, GENERATION_PREFIX, LOCK_FILE, in_use

# Opens a copy of the store read-only and says what it holds (refusing one the
# configured keyring cannot open).
Check = Callable[[Path], CopySummary]


def backup(copy: Callable[[Path], None], destination: Path, check: Check) -> CopySummary:
    """Copies the live store (``copy`` writes it) into ``destination``, a new or empty
    directory, and checks the copy opens.

    The copy is written inside a directory of mode 0700 made for it (LMDB creates the
    file with the process's umask), made 0600, and only then moved into ``destination``:
    so no other user can read it while it is written, whatever ``destination``'s mode."""
    if destination.exists() and any(destination.iterdir()):
        raise ConfigError(f"backup destination {destination} is not empty")
    destination.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kfr-backup-", dir=destination))  # mode 0700
    try:
        copy(staging)
        os.chmod(staging / DATA_FILE, 0o600)
        os.replace(staging / DATA_FILE, destination / DATA_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return check(destination)


def restore(source: Path, data_dir: Path, check: Check) -> tuple[CopySummary, Path | None]:
    """Replaces the store in ``data_dir`` with the backup in ``source``.

    Refuses while any process has the store open. The current store is kept aside, not
    deleted: returns where it went (None if there was none).
    """
    if _in_use(data_dir):
        raise ConfigError(f"{data_dir} is in use (is the server running?); stop it first")
    check(source)  # refuses a copy this keyring cannot open
    kept_aside = None
    if data_dir.exists() and any(data_dir.iterdir()):
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        kept_aside = data_dir.with_name(f"{data_dir.name}.before-restore-{stamp}")
        try:
            data_dir.rename(kept_aside)
        except OSError as error:
            raise ConfigError(
                f"cannot move the current store aside to {kept_aside}: {error.strerror}. The "
                "data directory must be a directory of its own under a writable parent (not a "
                "mount point itself); nothing was changed"
            ) from None
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = data_dir / f"{DATA_FILE}.restoring"
    shutil.copyfile(source / DATA_FILE, temporary)
    os.chmod(temporary, 0o600)
    with open(temporary, "rb") as copied:
        os.fsync(copied.fileno())
    temporary.replace(data_dir / DATA_FILE)
    return check(data_dir), kept_aside


def _in_use(data_dir: Path) -> bool:
    """True when some process has the store open (its in-use lock, or LMDB's lock on a
    generation's lock file)."""
    if in_use(data_dir):
        return True
    directories = [data_dir, *data_dir.glob(f"{GENERATION_PREFIX}*")]
    for directory in directories:
        if not (directory / LOCK_FILE).exists():
            continue
        descriptor = locked_exclusively(directory)
        if descriptor is None:
            return True
        os.close(descriptor)
    return False


def locked_exclusively(data_dir: Path) -> int | None:
    """A descriptor of the store's lock file holding LMDB's lock on it exclusively (every
    process with the store open holds it shared; one that opens it meanwhile waits), or
    None if some process has the store open. Closing the descriptor releases the lock."""
    descriptor = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor
