"""Time as the register sees it: injectable, so periods and retention can be tested."""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

# Dates in the register are Norwegian calendar dates.
REGISTER_TIMEZONE = ZoneInfo("Europe/Oslo")


class Clock(Protocol):
    def now(self) -> datetime:
        """The current moment, timezone-aware."""
        ...

    def today(self) -> date:
        """Today's date in Norway."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(REGISTER_TIMEZONE)

    def today(self) -> date:
        return self.now().date()


class FixedClock:
    """A clock that stands still until moved; for tests."""

    def __init__(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=REGISTER_TIMEZONE)
        self._moment = moment

    @classmethod
    def on(cls, day: date) -> FixedClock:
        return cls(datetime(day.year, day.month, day.day, 12, tzinfo=REGISTER_TIMEZONE))

    def now(self) -> datetime:
        return self._moment

    def today(self) -> date:
        return self._moment.astimezone(REGISTER_TIMEZONE).date()

    def set(self, moment: datetime) -> None:
        self._moment = moment
