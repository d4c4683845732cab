"""Customer IDs: fødselsnummer, D-number and organisation number.

Organisation numbers are checked with python-stdnum. A person number's two check digits
and its date of birth follow python-stdnum's definitions (``fodselsnummer``) but are
computed here: stdnum's generic input cleaning was half the cost of validating a bulk
load. ``tests/test_properties.py`` holds the two to each other on random numbers.

The register adds its own rules on top: H-numbers and FH-numbers are not customer IDs
here, synthetic test IDs ("Tenor" style, month + 80) are accepted only in test mode, and
a birth date may not lie after the register's today.

A ``CustomerId`` never shows its digits in ``repr`` or ``str``, so it cannot leak into
a log line or a traceback by accident.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date

from stdnum.exceptions import ValidationError
from stdnum.no import orgnr

from kfr_grpc.register.values import InvalidValue

# Tenor, the Norwegian test-data service, marks synthetic persons with month + 80.
_SYNTHETIC_MONTH_OFFSET = 80
# Month + 40 marks an H-number (health-service auxiliary number): not a customer ID.
_H_NUMBER_MONTH_OFFSET = 40


class CustomerKind(enum.Enum):
    PERSON = "person"
    ORGANISATION = "organisation"

    __hash__ = object.__hash__  # (as ``Role``'s)


@dataclass(frozen=True, slots=True)
class CustomerId:
    """A validated customer ID in compact form (digits only)."""

    digits: str
    kind: CustomerKind

    def __repr__(self) -> str:
        return f"CustomerId(<{self.kind.value}>)"

    __str__ = __repr__


def parse_customer_id(raw: str, *, allow_synthetic: bool, today: date) -> CustomerId:
    """Validates ``raw`` (spaces allowed) and returns it in compact form.

    Raises ``InvalidValue`` with a reason that never contains the ID.
    """
    return parse_customer(raw, allow_synthetic=allow_synthetic, today=today)[0]


def parse_customer(
    raw: str, *, allow_synthetic: bool, today: date
) -> tuple[CustomerId, date | None]:
    """``parse_customer_id``, and a person's date of birth (None for an organisation)."""
    compact = raw if raw.isdigit() else "".join(raw.split())
    if not compact:
        raise InvalidValue("is required", "CUSTOMER_ID_MISSING")
    if not (compact.isascii() and compact.isdigit()):
        raise InvalidValue("must contain only digits (and spaces)", "CUSTOMER_ID_MALFORMED")
    if len(compact) == 9:
        try:
            return CustomerId(parse_org_number(compact), CustomerKind.ORGANISATION), None
        except InvalidValue as error:
            raise InvalidValue(str(error), "CUSTOMER_ID_CHECKSUM") from None
    if len(compact) == 11:
        born = _validate_person_number(compact, allow_synthetic, today)
        return CustomerId(compact, CustomerKind.PERSON), born
    raise InvalidValue(
        "must be 11 digits (fødselsnummer or D-number) or 9 digits (organisation number)",
        "CUSTOMER_ID_MALFORMED",
    )


def parse_org_number(raw: str) -> str:
    """Validates an organisation number (spaces allowed) and returns its 9 digits."""
    try:
        return orgnr.validate(raw)
    except ValidationError:
        raise InvalidValue(
            "is not a valid organisation number (9 digits, check digit)", "ORG_NUMBER_INVALID"
        ) from None


def _validate_person_number(compact: str, allow_synthetic: bool, today: date) -> date:
    """Checks a person number; returns its date of birth."""
    day, month = int(compact[0:2]), int(compact[2:4])
    if month > _SYNTHETIC_MONTH_OFFSET:
        if not allow_synthetic:
            raise InvalidValue(
                "is a synthetic test ID, accepted only by a server in test mode",
                "CUSTOMER_ID_SYNTHETIC",
            )
        month -= _SYNTHETIC_MONTH_OFFSET
    if month > _H_NUMBER_MONTH_OFFSET:
        raise InvalidValue(
            "is an H-number, which is not accepted as a customer ID", "CUSTOMER_ID_NOT_ACCEPTED"
        )
    if day >= 80:
        raise InvalidValue(
            "is an FH-number, which is not accepted as a customer ID", "CUSTOMER_ID_NOT_ACCEPTED"
        )
    if not check_digits_hold(compact):
        raise InvalidValue(
            "is not a valid fødselsnummer or D-number (check digits)", "CUSTOMER_ID_CHECKSUM"
        )
    birth_date = birth_date_of(compact, month)
    if birth_date is None:
        raise InvalidValue(
            "is not a valid fødselsnummer or D-number (date of birth)", "CUSTOMER_ID_BIRTH_DATE"
        )
    if birth_date > today:
        raise InvalidValue("has a date of birth in the future", "CUSTOMER_ID_BIRTH_DATE")
    return birth_date


def check_digits_hold(number: str) -> bool:
    """The two mod-11 check digits of an 11-digit person number (stdnum's
    ``calc_check_digit1`` and ``calc_check_digit2``)."""
    d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10 = (c - 48 for c in number.encode("ascii"))
    first = (11 - (3 * d0 + 7 * d1 + 6 * d2 + d3 + 8 * d4 + 9 * d5 + 4 * d6 + 5 * d7 + 2 * d8)) % 11
    if first != d9:  # (10 is no digit: such a number has no valid check digit)
        return False
    second = 11 - (5 * d0 + 4 * d1 + 3 * d2 + 2 * d3 + 7 * d4 + 6 * d5 + 5 * d6 + 4 * d7 + 3 * d8)
    return (second - 2 * d9) % 11 == d10


def birth_date_of(number: str, month: int) -> date | None:
    """The date of birth of a person number whose month (synthetic offset removed) is
    ``month``, or None if there is none (stdnum's ``get_birth_date``: a D-number's day
    is 40 on; the individual number gives the century)."""
    day, year, individual = int(number[0:2]), int(number[4:6]), int(number[6:9])
    if day > 40:
        day -= 40
    if individual < 500:
        year += 1900
    elif individual < 750 and year >= 54:
        year += 1800
    elif year < 40:
        year += 2000
    elif individual >= 900:
        year += 1900
    else:
        return None  # no century is defined for this individual number
    try:
        return date(year, month, day)
    except ValueError:
        return None
