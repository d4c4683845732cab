"""Admission: how many calls the server takes at once, in all, per connection, and of
bulk loads, and how many per second from one organisation (a token bucket each), so
that no caller, however idle, slow, many or fast, can take the server from the others.

A call over a limit is refused at once with RESOURCE_EXHAUSTED, naming the limit and how
to retry, and (like every refusal) counted in the metrics and logged. The counts live on
the event loop's thread: no lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from kfr_grpc.auth.policy import Rate
from kfr_grpc.errors import Overloaded, RateLimited

# Buckets kept at most; past it, those that have filled up again (callers gone quiet)
# are dropped: a full bucket is what a new caller gets anyway.
_MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class Limits:
    max_calls: int  # server.max_concurrent_calls
    max_calls_per_connection: int  # server.max_calls_per_connection
    max_calls_per_caller: int  # server.max_calls_per_caller: per organisation, once known
    # Calls at once of methods that may each hold several large messages, by full method
    # name, with the setting that says so: ReportStream (server.max_bulk_streams),
    # reflection.
    per_method: dict[str, tuple[int, str]]
    rate_of: Callable[[str], Rate]  # an organisation's rate (the agencies' may change)


class Admission:
    def __init__(self, limits: Limits, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._monotonic = monotonic
        self._calls = 0
        self._per_method: dict[str, int] = {}
        self._per_connection: dict[str, int] = {}
        self._per_caller: dict[str, int] = {}
        self._buckets: dict[str, list[float]] = {}  # organisation -> [tokens, when]

    def admit(self, method: str, connection: str) -> Admitted:
        """Takes the call in, or raises ``Overloaded`` saying which limit it met."""
        limits = self._limits
        if self._calls >= limits.max_calls:
            raise Overloaded(
                f"the server is at its limit of {limits.max_calls} calls at once "
                "(server.max_concurrent_calls); retry after a moment, with backoff"
            )
        on_connection = self._per_connection.get(connection, 0)
        if on_connection >= limits.max_calls_per_connection:
            raise Overloaded(
                f"this connection has {limits.max_calls_per_connection} calls in progress, "
                "its limit (server.max_calls_per_connection); wait for some to finish, or "
                "open another connection"
            )
        capped = limits.per_method.get(method)
        if capped is not None and self._per_method.get(method, 0) >= capped[0]:
            raise Overloaded(
                f"{capped[0]} calls of {method} are running, the limit ({capped[1]}); call "
                "again in a few seconds (reporting is idempotent)"
            )
        self._calls += 1
        self._per_connection[connection] = on_connection + 1
        if capped is not None:
            self._per_method[method] = self._per_method.get(method, 0) + 1
        return Admitted(self, connection, method if capped is not None else None)

    def _admit_caller(self, organisation: str) -> None:
        limit = self._limits.max_calls_per_caller
        calls = self._per_caller.get(organisation, 0)
        if calls >= limit:
            raise Overloaded(
                f"your organisation has {limit} calls in progress, its limit "
                "(server.max_calls_per_caller); wait for some to finish"
            )
        self._take_token(organisation)
        self._per_caller[organisation] = calls + 1

    def _take_token(self, organisation: str) -> None:
        """One call from ``organisation``'s bucket, or ``RateLimited``."""
        rate = self._limits.rate_of(organisation)
        now = self._monotonic()
        bucket = self._buckets.get(organisation)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._drop_full_buckets(now)
            bucket = self._buckets[organisation] = [rate.burst, now]
        tokens = min(rate.burst, bucket[0] + (now - bucket[1]) * rate.per_second)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            wait = (1 - tokens) / rate.per_second
            raise RateLimited(
                f"your organisation calls more often than its limit of {rate.per_second:g} "
                f"calls per second ({rate.setting}); retry in {wait:.2f} s",
                retry_after=wait,
            )
        bucket[0] = tokens - 1

    def _drop_full_buckets(self, now: float) -> None:
        for organisation, (tokens, when) in list(self._buckets.items()):
            rate = self._limits.rate_of(organisation)
            if tokens + (now - when) * rate.per_second >= rate.burst:
                del self._buckets[organisation]

    def _release(self, connection: str, capped: str | None, caller: str | None) -> None:
        self._calls -= 1
        _decrement(self._per_connection, connection)
        if capped is not None:
            _decrement(self._per_method, capped)
        if caller is not None:
            _decrement(self._per_caller, caller)

    @property
    def calls(self) -> int:
        return self._calls


class Admitted:
    """A call taken in; ``release`` (once, more calls do nothing) when it ends."""

    def __init__(
        self, admission: Admission | None = None, connection: str = "", capped: str | None = None
    ) -> None:
        self._admission = admission
        self._connection = connection
        self._capped = capped  # the method, when it is one with a limit of its own
        self._caller: str | None = None

    def identified(self, organisation: str) -> None:
        """The caller is known: counts it against its organisation's limit (or raises
        ``Overloaded``)."""
        if self._admission is not None:
            self._admission._admit_caller(organisation)
            self._caller = organisation

    def release(self) -> None:
        if self._admission is not None:
            self._admission._release(self._connection, self._capped, self._caller)
            self._admission = None


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left > 0:
        counts[key] = left
    else:
        del counts[key]


class Turns:
    """Turns to hold a request in memory, from receiving it to its answer: so many at
    once in all, and so many of them for any one organisation, so that one caller's
    idle or slow calls, which hold their turn while they wait for their request, leave
    the others theirs."""

    def __init__(self, in_all: int, per_caller: int) -> None:
        self._in_all = asyncio.Semaphore(in_all)
        self._per_caller = per_caller
        self._callers: dict[str, tuple[asyncio.Semaphore, int]] = {}

    def turn(self, caller: str) -> _Turn:
        """``async with turns.turn(organisation)``: waits for a turn, holds it inside."""
        return _Turn(self, caller)

    def _join(self, caller: str) -> asyncio.Semaphore:
        own, users = self._callers.get(caller) or (asyncio.Semaphore(self._per_caller), 0)
        self._callers[caller] = (own, users + 1)
        return own

    def _leave(self, caller: str) -> None:
        own, users = self._callers[caller]
        if users == 1:
            del self._callers[caller]
        else:
            self._callers[caller] = (own, users - 1)


class _Turn:
    """One call's turn (a class, not a generator: it is on every call's path)."""

    __slots__ = ("_caller", "_held", "_own", "_turns")

    def __init__(self, turns: Turns, caller: str) -> None:
        self._turns = turns
        self._caller = caller
        self._held = 0

    async def __aenter__(self) -> None:
        self._own = self._turns._join(self._caller)
        try:
            await self._own.acquire()
            self._held = 1
            await self._turns._in_all.acquire()
            self._held = 2
        except BaseException:
            self._give_back()
            raise

    async def __aexit__(self, *_: object) -> None:
        self._give_back()

    def _give_back(self) -> None:
        if self._held == 2:
            self._turns._in_all.release()
        if self._held >= 1:
            self._own.release()
        self._held = 0
        self._turns._leave(self._caller)
