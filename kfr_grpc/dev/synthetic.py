"""Synthetic customer IDs with valid check digits, for tests, demos and benchmarks.

Synthetic persons follow the Tenor convention (month + 80), so they can never be a real
person's number; the server accepts them only in test mode. ``regular_person_id`` makes
a number in the ordinary format, for the tests of a server outside test mode: it is
generated at random when a test runs and is never written to the repository.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, timedelta

from stdnum.no import fodselsnummer, orgnr

_SYNTHETIC_MONTH_OFFSET = 80
_D_NUMBER_DAY_OFFSET = 40


def synthetic_person_id(rng: random.Random, *, d_number: bool = False) -> str:
    """A Tenor-style synthetic fødselsnummer (or D-number) with valid check digits."""
    return _person_id(rng, month_offset=_SYNTHETIC_MONTH_OFFSET, d_number=d_number)


def regular_person_id(rng: random.Random, *, d_number: bool = False) -> str:
    """A fødselsnummer (or D-number) in the ordinary format with valid check digits."""
    return _person_id(rng, month_offset=0, d_number=d_number)


def unique_synthetic_person_ids(seed: int = 0) -> Iterator[str]:
    """Distinct Tenor-style synthetic fødselsnumre (then D-numbers), without end in
    practice (about 20 million): for building large test stores."""
    rng = random.Random(seed)
    individuals = list(range(500))
    rng.shuffle(individuals)
    for d_number in (False, True):
        for individual in individuals:
            for offset in range(365 * 70):
                birth = date(1930, 1, 1) + timedelta(days=offset)
                day = birth.day + (_D_NUMBER_DAY_OFFSET if d_number else 0)
                month = birth.month + _SYNTHETIC_MONTH_OFFSET
                body = f"{day:02d}{month:02d}{birth.year % 100:02d}{individual:03d}"
                number = _with_check_digits(body)
                if number is not None:
                    yield number


def synthetic_org_number(rng: random.Random) -> str:
    """A 9-digit organisation number with a valid check digit, in the 2xx/3xx test series."""
    while True:
        body = str(rng.choice((2, 3))) + "".join(str(rng.randrange(10)) for _ in range(7))
        for check in "0123456789":
            if orgnr.is_valid(body + check):
                return body + check


def _person_id(rng: random.Random, *, month_offset: int, d_number: bool) -> str:
    while True:
        # Born 1930 to 1999: adults, so relationships from 2000 on may start at any date.
        birth = date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 70))
        individual = _individual_number(rng, birth.year)
        day = birth.day + (_D_NUMBER_DAY_OFFSET if d_number else 0)
        body = f"{day:02d}{birth.month + month_offset:02d}{birth.year % 100:02d}{individual:03d}"
        number = _with_check_digits(body)
        if number is not None:
            return number


def _with_check_digits(body: str) -> str | None:
    """``body`` (9 digits) with its two check digits, or None if it cannot have them."""
    first = fodselsnummer.calc_check_digit1(body)
    if len(first) != 1:
        return None
    second = fodselsnummer.calc_check_digit2(body + first)
    return body + first + second if len(second) == 1 else None


def _individual_number(rng: random.Random, year: int) -> int:
    """An individual number whose range encodes ``year``'s century, as the standard says."""
    if year < 2000:
        return rng.randrange(0, 500)
    return rng.randrange(500, 1000)
