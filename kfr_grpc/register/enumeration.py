"""Signs that an agency is trying customer IDs one after another rather than looking up
the people its cases are about.

Someone with an agency's certificate and token could try every fødselsnummer of a
birth year in minutes; the daily lookup counters would show it only the next day. The
watch counts each agency's lookups in fixed windows and raises the alarm, once per
window, when there are more than ``max_lookups`` of them, or when at least
``min_lookups`` mostly found nothing (a share of empty answers above
``max_empty_share``: tried IDs are mostly nobody's). It refuses nothing: a rate limit
does that; this tells the operator who should look at what the agency is doing.
Nothing about the people looked up is kept, only counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class EnumerationSettings:
    window_seconds: float
    max_lookups: int
    min_lookups: int
    max_empty_share: float


@dataclass(frozen=True)
class Suspicion:
    """Why an agency's lookups in a window look like enumeration."""

    agency: str
    reason: str  # "rate" or "empty_share": a metric label
    lookups: int
    empty: int
    window_seconds: float

    def describe(self) -> str:
        return (
            f"agency {self.agency} made {self.lookups} lookups in {self.window_seconds:g} s, "
            f"{self.empty} of them found nothing: this looks like trying IDs one after "
            f"another ({self.reason}); check what the agency is doing"
        )


class _Window:
    __slots__ = ("empty", "lookups", "raised", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.lookups = 0
        self.empty = 0
        self.raised = False


class EnumerationWatch:
    def __init__(
        self,
        settings: EnumerationSettings,
        notify: Callable[[Suspicion], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._notify = notify
        self._monotonic = monotonic
        self._lock = threading.Lock()  # lookups are answered on the loop and in threads
        self._windows: dict[str, _Window] = {}

    def record(self, agency: str, found: bool) -> None:
        """One lookup by ``agency``, which found something or nothing."""
        with self._lock:
            suspicion = self._count(agency, found)
        if suspicion is not None:
            self._notify(suspicion)

    def _count(self, agency: str, found: bool) -> Suspicion | None:
        settings = self._settings
        now = self._monotonic()
        window = self._windows.get(agency)
        if window is None or now - window.started >= settings.window_seconds:
            window = self._windows[agency] = _Window(now)
        window.lookups += 1
        window.empty += not found
        if window.raised:
            return None
        reason = self._reason(window)
        if reason is None:
            return None
        window.raised = True
        return Suspicion(agency, reason, window.lookups, window.empty, settings.window_seconds)

    def _reason(self, window: _Window) -> str | None:
        settings = self._settings
        if window.lookups > settings.max_lookups:
            return "rate"
        if (
            window.lookups >= settings.min_lookups
            and window.empty > settings.max_empty_share * window.lookups
        ):
            return "empty_share"
        return None
