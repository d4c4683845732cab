"""The request timeout (``api.deadlines``): one sweep for every read in progress."""

from __future__ import annotations

import asyncio
import time

import pytest

from kfr_grpc.api.deadlines import ReadDeadlines
from kfr_grpc.errors import RequestTimeout


class _Context:
    """A call whose next message arrives when ``arrive`` is called (or never)."""

    def __init__(self) -> None:
        self._message: asyncio.Future = asyncio.get_running_loop().create_future()

    async def read(self) -> object:
        return await self._message

    def arrive(self, message: object) -> None:
        self._message.set_result(message)


def test_a_read_that_waits_too_long_ends_with_the_timeout_within_a_tick():
    async def scenario() -> float:
        deadlines = ReadDeadlines(0.2, tick=0.05)
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match=r"0\.2 s"):
            await deadlines.read(_Context())
        return time.monotonic() - started

    assert 0.2 <= asyncio.run(scenario()) < 0.2 + 0.05 + 0.1


def test_a_message_in_time_is_read_and_the_sweep_stops_when_no_read_waits():
    async def scenario() -> None:
        deadlines = ReadDeadlines(0.2, tick=0.05)
        context = _Context()
        asyncio.get_running_loop().call_later(0.1, context.arrive, "message")
        assert await deadlines.read(context) == "message"
        await asyncio.sleep(0.1)
        assert deadlines._sweeping is None  # nothing waits: no timer left behind

    asyncio.run(scenario())


@pytest.mark.parametrize("client_cancels", [True, False])
def test_a_call_cancelled_as_its_time_runs_out_stays_cancelled(client_cancels):
    """The sweep and the client cancel the same read in the same moment: the client's
    cancellation wins (it is no timeout of ours). Without it, the timeout."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadlines = ReadDeadlines(0.05, tick=60)  # sweeps only when the test says
        reading = asyncio.ensure_future(deadlines.read(_Context()))
        await asyncio.sleep(0.1)
        deadlines._sweep(loop)  # the read is past its time: the sweep cancels it
        if client_cancels:
            reading.cancel()  # and the client too, before the read runs again
        await asyncio.sleep(0)
        if client_cancels:
            assert reading.cancelled()
        else:
            assert isinstance(reading.exception(), RequestTimeout)

    asyncio.run(scenario())
