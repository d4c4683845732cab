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
import errno
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
_IN_USE_LOCK = ".kfr-in-use.lock"
_COMPACTION_LOCK = ".kfr-compaction.lock"
_OLD_STAGING_PREFIX = ".kfr-compact-"  # copies of the offline compaction of before


# What the data directory's own data.mdb becomes once the store has moved into a
# generation: not an LMDB file, so a kfr from before generations refuses to open it
# instead of starting an empty register in its place.
_MOVED = b"KFR: this store has moved into the generation directory named by 'current'.\n"


def store_directory(data_dir: Path) -> Path:
    """The directory holding ``data_dir``'s current ``data.mdb``."""
    try:
        return data_dir / os.readlink(data_dir / CURRENT)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.EINVAL):  # no link: the first generation
            return data_dir
        raise ConfigError(f"cannot read {data_dir / CURRENT}: {error.strerror}") from None


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


def hold_in_use(data_dir: Path) -> int | None:
    """A descriptor holding a shared lock that says "this process uses the store in
    ``data_dir``" until it is closed (``kfr restore`` refuses while any is held, even by a
    process still on a generation a compaction has deleted). None if there is no data
    directory yet."""
    if not data_dir.is_dir():
        return None
    path = data_dir / _IN_USE_LOCK
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError:  # a reader without write access to the directory
        descriptor = os.open(path, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_SH)
    return descriptor


def in_use(data_dir: Path) -> bool:
    """Whether some process holds ``hold_in_use`` for ``data_dir``."""
    path = data_dir / _IN_USE_LOCK
    if not path.exists():
        return False
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def new_generation(data_dir: Path) -> Path:
    """An empty directory (mode 0700) for the next generation."""
    return Path(tempfile.mkdtemp(prefix=GENERATION_PREFIX, dir=data_dir))


def swap(data_dir: Path, generation: Path) -> None:
    """Makes ``generation`` the current store of ``data_dir`` and removes the old one's
    files. The caller holds the old store's write transaction."""
    sync_directory(generation)  # its data.mdb's name is on the disk before the link is
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
    if current != data_dir and not is_moved_marker(data_dir / DATA_FILE):
        _remove_store(data_dir, data_dir)


def is_moved_marker(path: Path) -> bool:
    """Whether ``path`` is the marker left where the first generation's data file was."""
    try:
        return path.read_bytes() == _MOVED
    except OSError:
        return False


def _remove_store(directory: Path, data_dir: Path) -> None:
    if directory == data_dir:  # the first generation: the files in the data directory
        (data_dir / LOCK_FILE).unlink(missing_ok=True)
        marker = data_dir / f".{DATA_FILE}.moved"
        marker.write_bytes(_MOVED)
        os.chmod(marker, 0o600)
        os.replace(marker, data_dir / DATA_FILE)  # the old file's name now holds no data
    else:
        shutil.rmtree(directory, ignore_errors=True)
