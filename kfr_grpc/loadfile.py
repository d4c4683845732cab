"""Reading bulk-load files for ``kfr report-file``, in constant memory.

Two formats:
- ``batch``: the reference register's format, comma-separated ``customerId#startDate``
  entries (start date optional) with line breaks anywhere between entries; every
  entry gets the role given on the command line. Our addition: an entry may end in a
  product kind, ``customerId#startDate#kind`` (``customerId##loan`` without a date);
  entries without one get the kind given on the command line.
- ``csv``: one ``customer_id,role,start_date[,kind]`` per line (role ``owner`` or
  ``disponent``, start date and kind optional); a header line is skipped.

Kinds: ``payment_account`` (also ``account``, ``deposit``), ``loan`` (also ``credit``),
``other``, ``unspecified`` (or empty).

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


KINDS = {
    "": pb.PRODUCT_KIND_UNSPECIFIED,
    "unspecified": pb.PRODUCT_KIND_UNSPECIFIED,
    "payment_account": pb.PRODUCT_KIND_PAYMENT_ACCOUNT,
    "account": pb.PRODUCT_KIND_PAYMENT_ACCOUNT,
    "deposit": pb.PRODUCT_KIND_PAYMENT_ACCOUNT,
    "loan": pb.PRODUCT_KIND_LOAN,
    "credit": pb.PRODUCT_KIND_LOAN,
    "other": pb.PRODUCT_KIND_OTHER,
}
KIND_CHOICES = ("unspecified", "payment_account", "loan", "other")
_BAD_KIND = "kind must be payment_account, loan, other or unspecified"


class Entry(NamedTuple):
    """One entry of the file (a tuple: a load makes a million of them)."""

    line: int
    customer_id: str
    role: int
    start_date: str
    kind: int = pb.PRODUCT_KIND_UNSPECIFIED


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
            is_row = len(fields) in (3, 4) and fields[1] in _ROLES
            return "csv" if is_header or is_row else "batch"
    return "batch"


def read_entries(
    lines: Iterable[str], file_format: str, role: int, kind: int = pb.PRODUCT_KIND_UNSPECIFIED
) -> Iterator[Entry | Malformed]:
    """Entries (and unreadable lines) in file order; ``role`` and ``kind`` for batch
    entries that name none."""
    if file_format == "csv":
        return _csv_entries(lines)
    return _batch_entries(lines, role, kind)


def _batch_entries(lines: Iterable[str], role: int, kind: int) -> Iterator[Entry | Malformed]:
    for number, line in enumerate(lines, 1):
        for part in line.split(","):
            entry = part.strip()
            if not entry:
                continue
            customer_id, _, rest = entry.partition("#")
            start_date, _, named_kind = rest.partition("#")
            if not named_kind:
                yield Entry(number, customer_id.strip(), role, start_date.strip(), kind)
                continue
            entry_kind = KINDS.get(named_kind.strip().lower())
            if entry_kind is None:
                yield Malformed(number, _BAD_KIND)
                continue
            yield Entry(number, customer_id.strip(), role, start_date.strip(), entry_kind)


def _csv_entries(lines: Iterable[str]) -> Iterator[Entry | Malformed]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if number == 1 and [f.lower() for f in fields[:2]] == ["customer_id", "role"]:
            continue
        if len(fields) not in (2, 3, 4):
            yield Malformed(number, "expected customer_id,role[,start_date[,kind]]")
            continue
        role = _ROLES.get(fields[1].lower())
        if role is None:
            yield Malformed(number, "role must be owner or disponent")
            continue
        kind = KINDS.get(fields[3].lower() if len(fields) == 4 else "")
        if kind is None:
            yield Malformed(number, _BAD_KIND)
            continue
        yield Entry(number, fields[0], role, fields[2] if len(fields) >= 3 else "", kind)


def chunks(
    entries: Iterable[Entry], institution: str, size: int, message: type = pb.ReportRequest,
    **first: object,
) -> Iterator:  # fmt: skip
    """ReportStream (or Reconcile) messages of ``size`` entries; the first names the
    institution and carries ``first``'s fields. (Each entry is added into its message in
    place: no message per entry to copy.)"""
    chunk = message(institution_org_number=institution, **first)
    add = chunk.relationships.add
    count = 0
    for _, customer_id, role, start_date, kind in entries:
        add(customer_id=customer_id, role=role, start_date=start_date, kind=kind)
        count += 1
        if count >= size:
            yield chunk
            chunk = message()
            add = chunk.relationships.add
            count = 0
    if count or chunk.institution_org_number:
        yield chunk


def lines_of_positions(
    source: TextIO, file_format: str, role: int, positions: set[int], kind: int = 0
) -> dict[int, int]:
    """Second pass: the line of each stream position in ``positions``."""
    found: dict[int, int] = {}
    if not positions:
        return found
    position = 0
    for entry in read_entries(source, file_format, role, kind):
        if isinstance(entry, Malformed):
            continue
        if position in positions:
            found[position] = entry.line
            if len(found) == len(positions):
                break
        position += 1
    return found
