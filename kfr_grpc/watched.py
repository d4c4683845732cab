"""Values loaded from files and reloaded when the files change, without a restart.

Used for the client CA bundle and CRLs, and for a JWKS file. A reload that fails (a file
half written, a CRL with a bad signature) keeps the previous value and logs why; the
files are looked at again when they change next.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger("kfr.reload")

T = TypeVar("T")
_Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> _Stamp:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)


class WatchedFiles(Generic[T]):
    """``load()``'s result, reloaded when one of ``paths`` changes.

    The files are looked at (one ``stat`` each) at most once per ``check_seconds``.
    The first load happens in the constructor and raises if it fails.
    """

    def __init__(
        self,
        name: str,
        paths: Sequence[Path],
        load: Callable[[], T],
        *,
        check_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._paths = tuple(paths)
        self._load = load
        self._check_seconds = check_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._stamps = self._current_stamps()
        self._value = load()
        self._checked_at = monotonic()

    def get(self) -> T:
        """The value; the files are looked at first if it is time, unless another thread is
        looking at them already (then the value as it is: a call never waits on a reload)."""
        if self._monotonic() - self._checked_at >= self._check_seconds:
            self.check(wait=False)
        return self._value

    def check(self, *, wait: bool = True) -> bool:
        """Looks at the files now; reloads if they changed. True when the value changed.
        ``wait=False``: returns False at once if another thread is looking."""
        if not self._lock.acquire(blocking=wait):
            return False
        try:
            return self._reload_if_changed()
        finally:
            self._lock.release()

    def _reload_if_changed(self) -> bool:
        self._checked_at = self._monotonic()
        stamps = self._current_stamps()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            value = self._load()
        except Exception as error:
            log.error("reloading %s failed, keeping the previous one: %s", self._name, error)
            return False
        self._value = value
        log.info("reloaded %s", self._name)
        return True

    def _current_stamps(self) -> tuple[_Stamp, ...]:
        return tuple(_stamp(path) for path in self._paths)
