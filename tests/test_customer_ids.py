"""Customer ID validation: python-stdnum's check digits plus the register's own rules."""

from __future__ import annotations

import random
from datetime import date

import pytest
from stdnum.no import fodselsnummer, orgnr

from kfr_grpc.dev.synthetic import regular_person_id, synthetic_org_number, synthetic_person_id
from kfr_grpc.register.customer_ids import CustomerKind, parse_customer_id
from kfr_grpc.register.values import InvalidValue

TODAY = date(2026, 6, 15)


def parse(raw: str, *, synthetic: bool = False):
    return parse_customer_id(raw, allow_synthetic=synthetic, today=TODAY)


def _with_bad_check_digit(value: str) -> str:
    return value[:-1] + str((int(value[-1]) + 1) % 10)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20261125)


def test_regular_person_and_d_number_are_accepted(rng):
    for d_number in (False, True):
        value = regular_person_id(rng, d_number=d_number)
        parsed = parse(value)
        assert parsed.digits == value
        assert parsed.kind is CustomerKind.PERSON


def test_organisation_number_is_accepted(rng):
    value = synthetic_org_number(rng)
    assert orgnr.is_valid(value)
    assert parse(value).kind is CustomerKind.ORGANISATION


def test_spaces_are_tolerated(rng):
    value = regular_person_id(rng)
    assert parse(f" {value[:6]} {value[6:]} ").digits == value


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: regular_person_id(rng),
        lambda rng: regular_person_id(rng, d_number=True),
        lambda rng: synthetic_org_number(rng),
    ],
)
def test_wrong_check_digit_is_refused_without_echoing_the_id(rng, make):
    value = _with_bad_check_digit(make(rng))
    with pytest.raises(InvalidValue) as raised:
        parse(value, synthetic=True)
    assert value not in str(raised.value)
    assert "check digit" in str(raised.value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "required"),
        ("1234567890", "11 digits"),
        ("123456789012", "11 digits"),
        ("1234567890a", "only digits"),
        ("12345-67890", "only digits"),
        ("١٢٣٤٥٦٧٨٩٠١", "only digits"),  # non-ASCII digits
    ],
)
def test_malformed_ids_are_refused(raw, reason):
    with pytest.raises(InvalidValue, match=reason):
        parse(raw)


def test_synthetic_ids_only_in_test_mode(rng):
    value = synthetic_person_id(rng)
    with pytest.raises(InvalidValue, match="test mode"):
        parse(value, synthetic=False)
    assert parse(value, synthetic=True).digits == value
    d_number = synthetic_person_id(rng, d_number=True)
    assert parse(d_number, synthetic=True).kind is CustomerKind.PERSON


def _with_check_digits(body: str) -> str | None:
    first = fodselsnummer.calc_check_digit1(body)
    second = fodselsnummer.calc_check_digit2(body + first)
    value = body + first + second
    return value if len(value) == 11 else None


def _first_valid(bodies) -> str:
    return next(v for v in (_with_check_digits(b) for b in bodies) if v is not None)


def test_h_numbers_are_refused():
    # month + 40 marks an H-number: valid for stdnum, not a customer ID here.
    value = _first_valid(f"0145{year:02d}123" for year in range(50, 99))
    assert fodselsnummer.is_valid(value)
    with pytest.raises(InvalidValue, match="H-number"):
        parse(value, synthetic=True)


def test_fh_numbers_are_refused():
    value = _first_valid(f"8{n:08d}" for n in range(1000, 2000))
    with pytest.raises(InvalidValue, match="FH-number"):
        parse(value)


def test_impossible_birth_dates_are_refused():
    value = _first_valid(f"3102{year:02d}123" for year in range(50, 99))  # 31 February
    with pytest.raises(InvalidValue, match="date of birth"):
        parse(value)


def test_birth_date_after_the_registers_today_is_refused():
    # Born 2026-12-01 (individual number 5xx: 2000s): after TODAY.
    value = _first_valid(f"011226{n:03d}" for n in range(500, 600))
    with pytest.raises(InvalidValue, match="future"):
        parse(value)


def test_repr_never_shows_the_digits(rng):
    value = regular_person_id(rng)
    parsed = parse(value)
    assert value not in repr(parsed)
    assert value not in str(parsed)
    assert value not in f"{parsed}"
