"""Growing the LMDB map by itself, so that no write fails because of its initial size.

LMDB's map is the most the environment can hold. Before each write transaction the
store makes sure the map is at least twice what is in use plus a margin: a transaction
copies each page it changes, so it can need at most about as much again as the store
holds (plus its new data). Growing needs every transaction of this process out of the
way (py-lmdb invalidates them), so transactions hold a shared claim and growing takes
an exclusive one. Another process that grew the map makes this one's next transaction
start fail with MapResizedError; the new size is adopted and the start retried.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import lmdb

from kfr_grpc.errors import StoreClosed

log = logging.getLogger("kfr.store")

_MARGIN = 64 * 1024 * 1024
_T = TypeVar("_T")


class MapGuard:
    def __init__(self, env: lmdb.Environment, *, max_bytes: int) -> None:
        self._env = env
        self._page_size = env.stat()["psize"]
        self._max = max_bytes
        self._condition = threading.Condition()
        self._active = 0
        self._resizing = False
        self._closed = False
        self._depth = threading.local()

    @contextlib.contextmanager
    def transaction(self, begin: Callable[[], _T]) -> Iterator[_T]:
        """``begin()``'s transaction, under a shared claim; a map another process grew is
        adopted first."""
        while True:
            self._acquire()
            try:
                txn = begin()
            except lmdb.MapResizedError:
                self._release()
                self._resize(lambda: 0)  # 0: adopt the size another process set
                continue
            try:
                yield txn
            finally:
                self._release()
            return

    def ensure_headroom(self) -> None:
        """Grows the map, before a write, when less than half of it would stay free (up to
        the maximum: past it, a write that does not fit fails as the store being full)."""
        used, size = self.usage()
        if used * 2 + _MARGIN > size and size < self._max:
            self._resize(self._grown_size)

    def reserve_for_long_read(self) -> None:
        """Grows the map, before a long read transaction of this process (a compaction's
        copy), to four times what is in use: the map cannot grow while that transaction
        lasts, and the writes meanwhile cannot reuse the pages it sees."""
        used, size = self.usage()
        if used * 4 + _MARGIN > size and size < self._max:
            self._resize(lambda: min(max(size, used * 4 + 2 * _MARGIN), self._max))

    def grow(self) -> bool:
        """Grows the map at once (a write found it full after all), up to the maximum.
        False when it is at the maximum already."""
        if self.usage()[1] >= self._max:
            return False
        self._resize(lambda: self._grown_size(force=True))
        return True

    def usage(self) -> tuple[int, int]:
        info = self._env.info()
        return (info["last_pgno"] + 1) * self._page_size, info["map_size"]

    def _grown_size(self, *, force: bool = False) -> int:
        used, size = self.usage()
        if not force and used * 2 + _MARGIN <= size:
            return size  # another thread grew it meanwhile
        return min(max(size * 2, used * 2 + 2 * _MARGIN), self._max)

    def _resize(self, new_size: Callable[[], int]) -> None:
        if getattr(self._depth, "value", 0):
            raise RuntimeError("the map cannot grow while this thread is inside a transaction")
        with self._condition:
            while self._resizing:
                self._condition.wait()
            self._resizing = True
            while self._active:
                self._condition.wait()
        try:
            before = self._env.info()["map_size"]
            size = new_size()
            if size != before:
                self._env.set_mapsize(size)
                log.info("store map grown from %d MB to %d MB", before >> 20, size >> 20)
        finally:
            with self._condition:
                self._resizing = False
                self._condition.notify_all()

    def close(self, wait_seconds: float) -> bool:
        """Refuses new transactions (``StoreClosed``) and waits up to ``wait_seconds`` for
        the ones under way to end. True when none is left: only then may the environment
        be closed (closing it under a commit in another thread is not safe)."""
        with self._condition:
            self._closed = True
            return self._condition.wait_for(lambda: self._active == 0, timeout=wait_seconds)

    def _acquire(self) -> None:
        depth = getattr(self._depth, "value", 0)
        if depth == 0:
            with self._condition:
                while self._resizing:
                    self._condition.wait()
                if self._closed:
                    raise StoreClosed("the store is closed: the server is shutting down")
                self._active += 1
        self._depth.value = depth + 1

    def _release(self) -> None:
        self._depth.value -= 1
        if self._depth.value == 0:
            with self._condition:
                self._active -= 1
                if self._active == 0:
                    self._condition.notify_all()
