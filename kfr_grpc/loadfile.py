"""Reading bulk-load files for ``kfr report-file``, in constant memory.

Two formats:
- ``batch``: the reference register's format, comma-separated ``customerId#startDate``
  entries (start date optional) with line breaks anywhere between entries; every
  entry gets the role given on the command line.
- ``csv``: one ``customer_id,role,start_date`` per line (role ``owner`` or
  ``disponent``, start date optional); a header line is skipped.

Entries are numbered in file order (their position in the stream), so the server's
rejections by position can be traced back to lines with a second pass over the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TextIO

from kfr_grpc._proto import kfr_pb2 as pb

FORMATS = ("auto", "batch", "csv")
_ROLES = {
    "owner": pb.ROLE_OWNER,
    "role_owner": pb.ROLE_OWNER,
    "disponent": pb.ROLE_DISPONENT,
    "role_disponent": pb.ROLE_DISPONENT,
}


class Entry(NamedTuple):
    """One entry of the file (a tuple: a load makes a million of them)."""

    line: int
    customer_id: str
    role: int
    start_date: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line the client could not read as an entry (never sent)."""

    line: int
    reason: str


def detect_format(path: Path) -> str:
    """``csv`` when the first non-empty line has three comma-separated fields, the second a
    role; else ``batch``."""
    with path.open(encoding="utf-8-sig") as lines:
        for line in lines:
            fields = [f.strip().lower() for f in line.split(",")]
            if not any(fields):
                continue
            is_header = fields[:2] == ["customer_id", "role"]
            return "csv" if is_header or (len(fields) == 3 and fields[1] in _ROLES) else "batch"
    return "batch"


def read_entries(lines: Iterable[str], file_format: str, role: int) -> Iterator[Entry | Malformed]:
    """Entries (and unreadable lines) in file order."""
    if file_format == "csv":
        return _csv_entries(lines)
    return _batch_entries(lines, role)


def _batch_entries(lines: Iterable[str], role: int) -> Iterator[Entry | Malformed]:
    for number, line in enumerate(lines, 1):
        for part in line.split(","):
            entry = part.strip()
            if not entry:
                continue
            customer_id, _, start_date = entry.partition("#")
            yield Entry(number, customer_id.strip(), role, start_date.strip())


def _csv_entries(lines: Iterable[str]) -> Iterator[Entry | Malformed]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if number == 1 and [f.lower() for f in fields[:2]] == ["customer_id", "role"]:
            continue
        if len(fields) not in (2, 3):
            yield Malformed(number, "expected customer_id,role[,start_date]")
            continue
        role = _ROLES.get(fields[1].lower())
        if role is None:
            yield Malformed(number, "role must be owner or disponent")
            continue
        yield Entry(number, fields[0], role, fields[2] if len(fields) == 3 else "")


def chunks(entries: Iterable[Entry], institution: str, size: int) -> Iterator[pb.ReportRequest]:
    """ReportStream messages of ``size`` entries; the first names the institution. (Each
    entry is added into its message in place: no message per entry to copy.)"""
    chunk = pb.ReportRequest(institution_org_number=institution)
    add = chunk.relationships.add
    count = 0
    for _, customer_id, role, start_date in entries:
        add(customer_id=customer_id, role=role, start_date=start_date)
        count += 1
        if count >= size:
            yield chunk
            chunk = pb.ReportRequest()
            add = chunk.relationships.add
            count = 0
    if count or chunk.institution_org_number:
        yield chunk


def lines_of_positions(
    source: TextIO, file_format: str, role: int, positions: set[int]
) -> dict[int, int]:
    """Second pass: the line of each stream position in ``positions``."""
    found: dict[int, int] = {}
    if not positions:
        return found
    position = 0
    for entry in read_entries(source, file_format, role):
        if isinstance(entry, Malformed):
            continue
        if position in positions:
            found[position] = entry.line
            if len(found) == len(positions):
                break
        position += 1
    return found
