"""Work that must not run on the event loop: store writes (each ends in an fsync) and
anything else that waits on the disk. It runs in a small pool of threads; the loop goes
on serving other calls meanwhile.

Lookups read the store on the loop itself: an LMDB read of one customer's records takes
tens of microseconds, less than handing it to a thread and back (measured in
``make bench``; README, Performance).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")


class Blocking:
    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kfr-store")

    async def run(self, work: Callable[..., _T], *args: object) -> _T:
        """``work(*args)`` in a store thread, awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(work, *args))

    @property
    def executor(self) -> Executor:
        return self._pool

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
