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

    A customer who comes back gets a new period after the earlier ones; it may begin on
    the day the previous one ended, not before.
    """
    if history and history[-1].is_active:
        return history, False
    if history and start < history[-1].end:
        raise InvalidValue(
            "is before the end of this customer's previous period with this role",
            "START_BEFORE_PREVIOUS_END",
        )
    return (*history, Period(start)), True


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
