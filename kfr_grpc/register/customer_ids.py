"""Customer IDs: fødselsnummer, D-number and organisation number.

Check digits and birth dates are verified with python-stdnum. The register adds its
own rules on top: H-numbers and FH-numbers are not customer IDs here, synthetic test
IDs ("Tenor" style, month + 80) are accepted only in test mode, and a birth date may
not lie after the register's today.

A ``CustomerId`` never shows its digits in ``repr`` or ``str``, so it cannot leak into
a log line or a traceback by accident.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date

from stdnum.exceptions import ValidationError
from stdnum.no import fodselsnummer, orgnr

from kfr_grpc.register.values import InvalidValue

# Tenor, the Norwegian test-data service, marks synthetic persons with month + 80.
_SYNTHETIC_MONTH_OFFSET = 80
# Month + 40 marks an H-number (health-service auxiliary number): not a customer ID.
_H_NUMBER_MONTH_OFFSET = 40


class CustomerKind(enum.Enum):
    PERSON = "person"
    ORGANISATION = "organisation"


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
    compact = raw if raw.isdigit() else "".join(raw.split())
    if not compact:
        raise InvalidValue("is required", "CUSTOMER_ID_MISSING")
    if not (compact.isascii() and compact.isdigit()):
        raise InvalidValue("must contain only digits (and spaces)", "CUSTOMER_ID_MALFORMED")
    if len(compact) == 9:
        try:
            return CustomerId(parse_org_number(compact), CustomerKind.ORGANISATION)
        except InvalidValue as error:
            raise InvalidValue(str(error), "CUSTOMER_ID_CHECKSUM") from None
    if len(compact) == 11:
        return CustomerId(
            _validate_person_number(compact, allow_synthetic, today), CustomerKind.PERSON
        )
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


def _validate_person_number(compact: str, allow_synthetic: bool, today: date) -> str:
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
    if (
        fodselsnummer.calc_check_digit1(compact) != compact[9]
        or fodselsnummer.calc_check_digit2(compact) != compact[10]
    ):
        raise InvalidValue(
            "is not a valid fødselsnummer or D-number (check digits)", "CUSTOMER_ID_CHECKSUM"
        )
    natural = compact if month == int(compact[2:4]) else compact[:2] + f"{month:02d}" + compact[4:]
    try:
        birth_date = fodselsnummer.get_birth_date(natural)
    except ValidationError:
        raise InvalidValue(
            "is not a valid fødselsnummer or D-number (date of birth)", "CUSTOMER_ID_BIRTH_DATE"
        ) from None
    if birth_date > today:
        raise InvalidValue("has a date of birth in the future", "CUSTOMER_ID_BIRTH_DATE")
    return compact
