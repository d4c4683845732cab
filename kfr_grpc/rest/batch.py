"""The contract's bulk upload: ``POST …/financialInstitutions/{fid}/batch``, a
``multipart/form-data`` body with a field ``customer_type`` (``DSOPBANK``) and a file
field ``customers``: comma-separated entries ``customerId`` or ``customerId#YYYY-MM-DD``
(the start date; none: today), line breaks allowed between entries.

Unlike the old register, which queued the file, the load is synchronous: the answer (201)
comes once every accepted entry is written and visible to lookups, and lists the rejected
entries by position (0-based, in file order). It runs the same validation and writes as a
gRPC ReportStream: chunks of at most ``MAX_GROUP_ITEMS`` entries, each validated (in a
helper process when the server has them) while the one before is written, one
transaction per chunk, the last holding the load's request record. Entries are
relationships of role owner and no kind, as the old register's customers were.

aiohttp parses the multipart body; the file is read in pieces, each within the request
timeout, up to ``[rest] max_batch_mb``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Executor

from aiohttp import BodyPartReader, web

from kfr_grpc.api.blocking import Blocking
from kfr_grpc.api.institution import MAX_GROUP_ITEMS
from kfr_grpc.errors import InvalidArgument, MessageTooLarge, RequestTimeout
from kfr_grpc.register.bulk import BulkLoad
from kfr_grpc.register.model import CallInfo, Role
from kfr_grpc.register.reports import ReportItem, Row, ValidatedRows
from kfr_grpc.register.service import Register
from kfr_grpc.rest.calls import RestCall

CUSTOMER_TYPE = "DSOPBANK"
_ENTRY_SEPARATORS = re.compile(r"[,\r\n]+")
_READ_BYTES = 256 * 1024
_FIELD_NAMES = {"customer_id": "customerId", "start_date": "startDate"}


class BatchLoader:
    def __init__(
        self,
        register: Register,
        blocking: Blocking,
        validation: Executor | None,
        *,
        max_bytes: int,
        read_timeout: float,
    ) -> None:
        self._register = register
        self._blocking = blocking
        self._validation = validation
        self._max_bytes = max_bytes
        self._read_timeout = read_timeout

    async def load(self, call: RestCall, info: CallInfo) -> dict[str, object]:
        """Reads the upload and loads it; returns the answer's body."""
        entries = await self._read(call.request)
        return _summary(await self._write(info, entries))

    async def _read(self, request: web.Request) -> list[str]:
        """The entries of the upload, once ``customer_type`` is the contract's."""
        if request.content_type != "multipart/form-data":
            raise _invalid("body", "must be multipart/form-data with the fields customer_type "
                           "and customers", "NOT_MULTIPART")  # fmt: skip
        customer_type, data = None, None
        try:
            reader = await request.multipart()
            while (part := await self._next(reader)) is not None:
                if not isinstance(part, BodyPartReader):
                    raise ValueError("nested multipart")
                if part.name == "customer_type":
                    customer_type = (await self._content(part, 64)).decode("utf-8").strip()
                elif part.name == "customers":
                    data = await self._content(part, self._max_bytes)
                else:
                    await part.release()
        except (ValueError, AssertionError, UnicodeDecodeError, LookupError):
            raise _invalid("body", "is not a valid multipart/form-data body",
                           "MULTIPART_MALFORMED") from None  # fmt: skip
        if customer_type is None:
            raise _invalid("customer_type", "is required", "REQUIRED")
        if customer_type != CUSTOMER_TYPE:
            raise _invalid("relationshipType", f"customer_type must be {CUSTOMER_TYPE}",
                           "RELATIONSHIP_TYPE_UNKNOWN")  # fmt: skip
        if data is None:
            raise _invalid("customers", "is required (the file field)", "REQUIRED")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _invalid("customers", "is not UTF-8 text", "NOT_TEXT") from None
        entries = [raw for raw in _ENTRY_SEPARATORS.split(text) if raw.strip()]
        if not entries:
            raise _invalid("customers", "holds no entry", "BATCH_EMPTY")
        return entries

    async def _next(self, reader):
        return await self._timed(reader.next())

    async def _content(self, part: BodyPartReader, limit: int) -> bytes:
        """A part's bytes, read piece by piece (each within the request timeout)."""
        pieces, size = [], 0
        while piece := await self._timed(part.read_chunk(_READ_BYTES)):
            size += len(piece)
            if size > limit:
                raise MessageTooLarge(
                    f"the upload is larger than the {limit / 1024 / 1024:g} MB this server "
                    "takes ([rest] max_batch_mb); split the file, or load it over gRPC's "
                    "ReportStream (kfr report-file)"
                )
            pieces.append(piece)
        return b"".join(pieces)

    async def _timed(self, awaitable):
        try:
            return await asyncio.wait_for(awaitable, self._read_timeout)
        except TimeoutError:
            raise RequestTimeout(
                f"the upload stalled: nothing arrived for {self._read_timeout:g} s "
                "(server.request_timeout_seconds)"
            ) from None

    async def _write(self, info: CallInfo, entries: list[str]) -> BulkLoad:
        """Validates chunk N+1 while chunk N is written; returns the load. (Rows are made
        a chunk at a time: a 10 MB file holds some 800,000 entries.)"""
        chunks = list(_chunks(entries, MAX_GROUP_ITEMS))
        done = BulkLoad()
        validating = self._validate(chunks[0])
        for index in range(len(chunks)):
            validated = await validating
            last = index == len(chunks) - 1
            if not last:
                validating = self._validate(chunks[index + 1])
            done = await self._blocking.run(self._apply, info, done, validated, last)
        return done

    def _apply(self, info: CallInfo, done: BulkLoad, chunk: ValidatedRows, last: bool) -> BulkLoad:
        return self._register.apply_chunks(info, done, [chunk], last=last)

    def _validate(self, entries: list[str]) -> asyncio.Future[ValidatedRows]:
        rows = [_row(entry) for entry in entries]
        validate: Callable[[list[Row]], ValidatedRows] = self._register.row_validator()
        loop = asyncio.get_running_loop()
        if self._validation is None:
            future: asyncio.Future[ValidatedRows] = loop.create_future()
            future.set_result(validate(rows))
            return future
        return loop.run_in_executor(self._validation, validate, rows)


def _row(entry: str) -> Row:
    """``customerId[#startDate]``: a relationship of role owner, no kind."""
    customer, _, start = entry.strip().partition("#")
    return ReportItem(customer.strip(), Role.OWNER, start.strip()).row()


def _chunks(entries: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(entries), size):
        yield entries[start : start + size]


def _summary(load: BulkLoad) -> dict[str, object]:
    """The 201's body (ours: the old register answered with none)."""
    return {
        "entries": load.items,
        "registered": load.registered,
        "alreadyRegistered": load.already_registered,
        "rejectedCount": load.rejected_count,
        "rejected": [
            {
                "index": rejection.item,
                "field": _FIELD_NAMES.get(rejection.field, rejection.field),
                "code": rejection.code,
                "reason": rejection.reason,
            }
            for rejection in load.rejections
        ],
    }


def _invalid(field: str, reason: str, code: str) -> InvalidArgument:
    return InvalidArgument.field(field, reason, code)  # type: ignore[return-value]
