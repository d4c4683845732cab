"""The rules for a relationship's periods: starting, ending, and re-entry.

Pure functions over ``History`` tuples; they return the new history and whether it
changed, or raise ``InvalidValue`` with a reason for the caller.
"""

from __future__ import annotations

from datetime import date

from kfr_grpc.register.model import History, Period
from kfr_grpc.register.values import InvalidValue


def start_period(history: History, start: date) -> tuple[History, bool]:
    """Begins a period; a no-op when one is already active.

    A customer who comes back gets a new period after the earlier ones (``_check_after``).
    """
    if history and history[-1].is_active:
        return history, False
    if history:
        _check_after(history[-1], start)
    return (*history, Period(start)), True


def _check_after(previous: Period, start: date) -> None:
    """A period may begin on the day the one before it ended, not before; and not on the
    day the one before began (a period of one day, then another that day: two periods
    one could not tell apart by their start, which names a period in a correction)."""
    if start < previous.end:
        raise InvalidValue(
            "is before the end of this customer's previous period with this role",
            "START_BEFORE_PREVIOUS_END",
        )
    if start == previous.start:
        raise InvalidValue(
            "is the day this customer's previous period with this role began and ended",
            "START_ON_PREVIOUS_START",
        )


def end_period(history: History, end: date) -> tuple[History, bool]:
    """Ends the active period on ``end``; a no-op when none is active.

    ``history`` must not be empty: ending what was never reported is the caller's
    NOT_FOUND.
    """
    current = history[-1]
    if not current.is_active:
        return history, False
    if end < current.start:
        raise InvalidValue("is before the start of the period it ends", "END_BEFORE_START")
    return (*history[:-1], Period(current.start, end)), True


# --- corrections: an institution fixing what it reported ----------------------------------


def period_starting(history: History, start: date) -> int | None:
    """The index of the period that starts on ``start`` (periods never share a start)."""
    for index, period in enumerate(history):
        if period.start == start:
            return index
    return None


def retract_period(history: History, index: int) -> History:
    """The history without its period ``index``, as if it had never been reported."""
    return (*history[:index], *history[index + 1 :])


def correct_start(history: History, index: int, start: date) -> tuple[History, bool]:
    """Moves the start of period ``index``: not past its end, not before the end of the
    period before it."""
    period = history[index]
    if start == period.start:
        return history, False
    if period.end is not None and start > period.end:
        raise InvalidValue("is after the end of the period it corrects", "START_AFTER_END")
    if index > 0:
        _check_after(history[index - 1], start)
    if index + 1 < len(history) and start == history[index + 1].start:
        raise InvalidValue(
            "is the day this customer's next period with this role begins",
            "START_ON_NEXT_START",
        )
    return _replaced(history, index, Period(start, period.end)), True


def correct_end(history: History, index: int, end: date) -> tuple[History, bool]:
    """Moves the end of an ended period ``index``: not before its start, not past the start
    of the period after it."""
    period = history[index]
    if period.end is None:
        raise InvalidValue(
            "names an active period: end it with End, or correct an ended one", "PERIOD_ACTIVE"
        )
    if end == period.end:
        return history, False
    if end < period.start:
        raise InvalidValue("is before the start of the period it corrects", "END_BEFORE_START")
    if index + 1 < len(history) and end > history[index + 1].start:
        raise InvalidValue(
            "is after the start of this customer's next period with this role",
            "END_AFTER_NEXT_START",
        )
    return _replaced(history, index, Period(period.start, end)), True


def reopen_period(history: History, index: int) -> tuple[History, bool]:
    """Makes the last period active again (its ending was a mistake); a no-op when it is."""
    period = history[index]
    if period.end is None:
        return history, False
    if index + 1 < len(history):
        raise InvalidValue(
            "names a period with a later period after it; only the last can be reopened",
            "NOT_LAST_PERIOD",
        )
    return _replaced(history, index, Period(period.start)), True


def _replaced(history: History, index: int, period: Period) -> History:
    return (*history[:index], period, *history[index + 1 :])
