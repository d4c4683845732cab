"""Where a data directory's store is, and the swap that makes a compaction online.

A data directory holds its store directly (``data.mdb``, ``lock.mdb``) until its first
compaction; from then on in a generation directory ``gen-…`` that the symbolic link
``current`` names. A compaction writes the next generation beside the current one and
swaps the link in one rename, then removes the old generation's files (processes that
still have them open keep them until they let go: the bytes are gone from the
directory at once, from the disk when the last process re-opens).

Every process checks in each transaction, after LMDB has given it the transaction, that
its environment is still the current one (``is_current``) and re-opens if not; a
compaction swaps while it holds the store's write transaction, so no write can land in a
generation that is no longer current. LMDB pairs a data file with the lock file beside
it; opening takes a shared lock on ``.kfr-open.lock`` and the swap an exclusive one, so
nobody opens the lock file of one generation and the data file of another.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kfr_grpc.durable import sync_directory
from kfr_grpc.errors import ConfigError

CURRENT = "current"
GENERATION_PREFIX = "gen-"
DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
_OPEN_LOCK = ".kfr-open.lock"
_COMPACTION_LOCK = ".kfr-compaction.lock"
_OLD_STAGING_PREFIX = ".kfr-compact-"  # copies of the offline compaction of before


def store_directory(data_dir: Path) -> Path:
    """The directory holding ``data_dir``'s current ``data.mdb``."""
    try:
        return data_dir / os.readlink(data_dir / CURRENT)
    except OSError:  # no link: the store is in the data directory itself
        return data_dir


def has_store(data_dir: Path) -> bool:
    return (store_directory(data_dir) / DATA_FILE).is_file()


@contextlib.contextmanager
def opening(data_dir: Path, *, exclusive: bool = False) -> Iterator[None]:
    """Held while a process opens the store in ``data_dir`` (shared) or swaps its
    generation (exclusive). A data directory not made yet needs no guard."""
    if not data_dir.is_dir():
        yield
        return
    with _locked(data_dir / _OPEN_LOCK, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH):
        yield


@contextlib.contextmanager
def compacting(data_dir: Path) -> Iterator[None]:
    """One compaction of ``data_dir`` at a time (refuses a second); leftovers of one that
    was killed are removed first."""
    try:
        with _locked(data_dir / _COMPACTION_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB):
            remove_leftovers(data_dir)
            yield
    except BlockingIOError:
        raise ConfigError(f"a compaction of {data_dir} is already running") from None


@contextlib.contextmanager
def _locked(path: Path, operation: int) -> Iterator[None]:
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError:  # a reader without write access to the directory
        descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, operation)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def new_generation(data_dir: Path) -> Path:
    """An empty directory (mode 0700) for the next generation."""
    return Path(tempfile.mkdtemp(prefix=GENERATION_PREFIX, dir=data_dir))


def swap(data_dir: Path, generation: Path) -> None:
    """Makes ``generation`` the current store of ``data_dir`` and removes the old one's
    files. The caller holds the old store's write transaction."""
    with opening(data_dir, exclusive=True):
        old = store_directory(data_dir)
        link = data_dir / f".{CURRENT}.new"
        link.unlink(missing_ok=True)
        os.symlink(generation.name, link)
        os.replace(link, data_dir / CURRENT)
        sync_directory(data_dir)
        _remove_store(old, data_dir)
        sync_directory(data_dir)


def remove_leftovers(data_dir: Path) -> None:
    """What a compaction killed half way left: its unfinished generation, or (killed
    between the swap and the removal) the old store's files. Either may hold what was
    purged since."""
    current = store_directory(data_dir)
    for leftover in data_dir.glob(f"{GENERATION_PREFIX}*"):
        if leftover != current:
            shutil.rmtree(leftover, ignore_errors=True)
    for leftover in data_dir.glob(f"{_OLD_STAGING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if current != data_dir:
        _remove_store(data_dir, data_dir)


def _remove_store(directory: Path, data_dir: Path) -> None:
    if directory == data_dir:  # the first generation: the files in the data directory
        for name in (DATA_FILE, LOCK_FILE):
            (data_dir / name).unlink(missing_ok=True)
    else:
        shutil.rmtree(directory, ignore_errors=True)
