"""The suite's customer-ID leak detector.

Every log record a test produces is formatted the way production formats it (the JSON
formatter, with every ``extra`` field and any traceback, and the text formatter), and
every log file of a server the test ran in its own process is read. In all of that the
detector looks for two things:

- any value the test's ``ids`` fixture handed out, also with its spaces removed;
- any 11-digit number that could be a fødselsnummer or D-number (check digits right, a
  plausible date of birth, synthetic or not): no log line has a reason to hold one.

UUIDs (correlation-ids) are left out of the search: random hex holds such numbers.

``tests/test_privacy.py`` plants an ID in each channel and checks it is caught.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stdnum.no import fodselsnummer

from kfr_grpc.logs import JsonFormatter

_ELEVEN_DIGITS = re.compile(r"(?<!\d)\d{11}(?!\d)")
# Correlation-ids are random hex: their last group is 11 digits and a letter about once in
# 230 ids, and one such in 300 has check digits that fit (a bench's few thousand calls
# found one in about every tenth run). They are blanked out before the search.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TEXT = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")


@dataclass(frozen=True)
class Leak:
    where: str  # "log record kfr.requests" or a file name
    value: str

    def __str__(self) -> str:
        return f"{self.where}: {self.value[:4]}…"


def could_be_a_person(number: str) -> bool:
    """Check digits right and a day and month that a (synthetic, D-, H-) number can have."""
    if fodselsnummer.calc_check_digit1(number) != number[9]:
        return False
    if fodselsnummer.calc_check_digit2(number) != number[10]:
        return False
    day, month = int(number[:2]) % 40, int(number[2:4]) % 40
    return 1 <= day <= 31 and 1 <= month <= 12


def leaks_in(text: str, where: str, issued: Iterable[str]) -> list[Leak]:
    text = _UUID.sub("<uuid>", text)
    found = [Leak(where, value) for value in issued if value in text]
    squeezed = "".join(text.split())
    found += [
        Leak(where, value)
        for value in issued
        if value not in text and "".join(value.split()) in squeezed
    ]
    found += [
        Leak(where, number) for number in _ELEVEN_DIGITS.findall(text) if could_be_a_person(number)
    ]
    return found


def formatted(record: logging.LogRecord) -> str:
    """The record as production would write it: JSON with its extra fields and any
    traceback, and as text."""
    return JsonFormatter().format(record) + "\n" + _TEXT.format(record)


def find_leaks(
    issued: Iterable[str], records: Iterable[logging.LogRecord], log_dir: Path | None = None
) -> list[Leak]:
    issued = [value for value in issued if len("".join(value.split())) >= 9]
    leaks: list[Leak] = []
    for record in records:
        leaks += leaks_in(formatted(record), f"log record {record.name}", issued)
    if log_dir is not None:
        for path in sorted(log_dir.glob("*")):
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                leaks += leaks_in(text, path.name, issued)
    return leaks
