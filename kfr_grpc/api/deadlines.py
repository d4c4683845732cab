"""The request timeout: a call must send its request message (and, in a request stream,
each next one) within ``server.request_timeout_seconds``, else it ends with
DEADLINE_EXCEEDED.

One timer for all reads, not one per read: the reads in progress sit in a dict, and a
sweep every ``tick`` seconds (while any read is waiting) cancels those past their time.
A timer per read (``asyncio.timeout``) scheduled and cancelled a handle in the event
loop's heap for every call, a cost the bench could see. A read that waits too long
therefore ends between ``seconds`` and ``seconds + tick`` after it began.

For the event loop's thread only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio

from kfr_grpc.errors import RequestTimeout


class ReadDeadlines:
    def __init__(self, seconds: float, tick: float | None = None) -> None:
        self.seconds = seconds
        self._tick = tick if tick is not None else min(1.0, seconds / 4)
        self._reading: dict[asyncio.Task, float] = {}
        self._expired: set[asyncio.Task] = set()
        self._sweeping: asyncio.TimerHandle | None = None

    async def read(self, context: grpc.aio.ServicerContext) -> Any:
        """The call's next request message (or ``grpc.aio.EOF``), within the timeout."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._reading[task] = loop.time() + self.seconds
        if self._sweeping is None:
            self._sweeping = loop.call_later(self._tick, self._sweep, loop)
        try:
            return await context.read()
        except asyncio.CancelledError:
            # Ours, and only ours (the client may have cancelled at the same moment).
            if task in self._expired and task.uncancel() == 0:
                raise RequestTimeout(
                    f"no request message arrived within {self.seconds:g} s "
                    "(server.request_timeout_seconds)"
                ) from None
            raise
        finally:
            del self._reading[task]
            self._expired.discard(task)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in self._reading.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._sweeping = loop.call_later(self._tick, self._sweep, loop) if self._reading else None
