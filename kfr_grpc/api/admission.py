"""Admission: how many calls the server takes at once, in all, per connection, and of
bulk loads, so that no caller, however idle, slow or many, can take the server from the
others.

A call over a limit is refused at once with RESOURCE_EXHAUSTED, naming the limit and how
to retry, and (like every refusal) counted in the metrics and logged. The counts live on
the event loop's thread: no lock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from kfr_grpc.errors import Overloaded


@dataclass(frozen=True)
class Limits:
    max_calls: int  # server.max_concurrent_calls
    max_calls_per_connection: int  # server.max_calls_per_connection
    max_bulk_streams: int  # server.max_bulk_streams
    bulk_methods: frozenset[str]  # full method names of bulk loads (ReportStream)


class Admission:
    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._calls = 0
        self._bulk = 0
        self._per_connection: Counter[str] = Counter()

    def admit(self, method: str, connection: str) -> Admitted:
        """Takes the call in, or raises ``Overloaded`` saying which limit it met."""
        limits = self._limits
        if self._calls >= limits.max_calls:
            raise Overloaded(
                f"the server is at its limit of {limits.max_calls} calls at once "
                "(server.max_concurrent_calls); retry after a moment, with backoff"
            )
        if self._per_connection[connection] >= limits.max_calls_per_connection:
            raise Overloaded(
                f"this connection has {limits.max_calls_per_connection} calls in progress, "
                "its limit (server.max_calls_per_connection); wait for some to finish, or "
                "open another connection"
            )
        bulk = method in limits.bulk_methods
        if bulk and self._bulk >= limits.max_bulk_streams:
            raise Overloaded(
                f"{limits.max_bulk_streams} bulk loads are running, the limit "
                "(server.max_bulk_streams); send this stream again in a few seconds (reporting "
                "is idempotent)"
            )
        self._calls += 1
        self._per_connection[connection] += 1
        self._bulk += bulk
        return Admitted(self, connection, bulk)

    def _release(self, connection: str, bulk: bool) -> None:
        self._calls -= 1
        self._bulk -= bulk
        self._per_connection[connection] -= 1
        if self._per_connection[connection] <= 0:
            del self._per_connection[connection]

    @property
    def calls(self) -> int:
        return self._calls


class Admitted:
    """A call taken in; ``release`` (once, more calls do nothing) when it ends."""

    def __init__(
        self, admission: Admission | None = None, connection: str = "", bulk: bool = False
    ) -> None:
        self._admission = admission
        self._connection = connection
        self._bulk = bulk

    def release(self) -> None:
        if self._admission is not None:
            self._admission._release(self._connection, self._bulk)
            self._admission = None
