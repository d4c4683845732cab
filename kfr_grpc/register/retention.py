"""How long the register keeps what: the agreement's ten years for ended relationships."""

from __future__ import annotations

from datetime import date

from kfr_grpc.register.model import History

RETENTION_YEARS = 10


def retention_cutoff(today: date) -> date:
    """The earliest end date still kept: periods that ended before it are deleted.

    "Older than ten years" means ended more than ten years before today; a period that
    ended exactly ten years ago today is kept one more day. (29 February counts from 28.)
    """
    try:
        return today.replace(year=today.year - RETENTION_YEARS)
    except ValueError:
        return today.replace(year=today.year - RETENTION_YEARS, day=28)


def kept_after_retention(history: History, cutoff: date) -> History:
    return tuple(period for period in history if period.end is None or period.end >= cutoff)
