"""Period rules: start, end, no-ops and re-entry."""

from __future__ import annotations

from datetime import date

import pytest

from kfr_grpc.register.model import Period
from kfr_grpc.register.periods import correct_start, end_period, start_period
from kfr_grpc.register.values import InvalidValue, parse_date

JAN = date(2024, 1, 1)
MAR = date(2024, 3, 1)
JUN = date(2024, 6, 1)


def test_start_on_empty_history_opens_a_period():
    assert start_period((), JAN) == ((Period(JAN),), True)


def test_start_while_active_is_a_no_op():
    history = (Period(JAN),)
    assert start_period(history, MAR) == (history, False)


def test_re_entry_appends_a_new_period():
    history = (Period(JAN, MAR),)
    assert start_period(history, JUN) == ((Period(JAN, MAR), Period(JUN)), True)


def test_re_entry_may_start_on_the_previous_end_day_but_not_before():
    history = (Period(JAN, MAR),)
    assert start_period(history, MAR)[1] is True
    with pytest.raises(InvalidValue, match="previous period"):
        start_period(history, date(2024, 2, 1))


def test_no_two_periods_begin_on_one_day():
    """A period of one day and another begun that day could not be told apart by their
    start, which names a period in a correction."""
    one_day = (Period(JAN, JAN),)
    with pytest.raises(InvalidValue) as refused:
        start_period(one_day, JAN)
    assert refused.value.code == "START_ON_PREVIOUS_START"
    assert start_period(one_day, MAR)[1] is True
    two = (Period(JAN, MAR), Period(JUN))
    for index, day in ((1, JAN), (0, JUN)):
        with pytest.raises(InvalidValue) as refused:
            correct_start(
                ((Period(JAN, JAN), Period(MAR)) if index else (Period(MAR, JUN), Period(JUN))),
                index,
                day,
            )
        assert refused.value.code in ("START_ON_PREVIOUS_START", "START_ON_NEXT_START")
    assert correct_start(two, 1, MAR)[1] is True


def test_end_closes_the_active_period():
    assert end_period((Period(JAN),), MAR) == ((Period(JAN, MAR),), True)


def test_end_of_ended_is_a_no_op():
    history = (Period(JAN, MAR),)
    assert end_period(history, JUN) == (history, False)


def test_end_before_start_is_refused():
    with pytest.raises(InvalidValue, match="before the start"):
        end_period((Period(MAR),), JAN)


def test_end_on_start_day_is_allowed():
    assert end_period((Period(MAR),), MAR) == ((Period(MAR, MAR),), True)


def test_overlap_and_ongoing():
    period = Period(JAN, MAR)
    assert period.overlaps(MAR, JUN)  # the end day counts
    assert period.overlaps(date(2023, 1, 1), JAN)
    assert not period.overlaps(date(2024, 3, 2), JUN)
    assert period.ongoing_at(date(2024, 2, 1))
    assert not period.ongoing_at(MAR)  # ended that day
    assert Period(JAN).ongoing_at(JUN)
    assert not Period(JUN).ongoing_at(MAR)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("2024-02-30", "real calendar date"),
        ("2024-2-3", "YYYY-MM-DD"),
        ("20240203", "YYYY-MM-DD"),
        ("2024-W05-1", "YYYY-MM-DD"),
        ("2024-06-02", "future"),
    ],
)
def test_bad_dates(raw, reason):
    with pytest.raises(InvalidValue, match=reason):
        parse_date(raw, JUN)


def test_empty_date_is_today():
    assert parse_date("", JUN) == JUN
