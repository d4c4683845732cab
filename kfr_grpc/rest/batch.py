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
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from kfr_grpc.api.blocking import Blocking
from kfr_grpc.api.institution import MAX_GROUP_ITEMS
from kfr_grpc.errors import (
    ClientGone,
    InvalidArgument,
    KfrError,
    MessageTooLarge,
    Overloaded,
    RequestTimeout,
)
from kfr_grpc.register.bulk import BulkLoad
from kfr_grpc.register.model import CallInfo, Role
from kfr_grpc.register.reports import ReportItem, Row, ValidatedRows
from kfr_grpc.register.service import Register
from kfr_grpc.rest.calls import RestCall

CUSTOMER_TYPE = "DSOPBANK"
_ENTRY = re.compile(r"[^,\r\n]+")
_READ_BYTES = 256 * 1024
_TYPE_BYTES = 64  # customer_type: "DSOPBANK"
_FORM_BYTES = 64 * 1024  # the form around the file: boundaries, part headers
_FIELD_NAMES = {"customer_id": "customerId", "start_date": "startDate"}


class BatchLoader:
    """Loads the uploads, one at a time per institution (state on the event loop's thread
    only)."""

    def __init__(
        self,
        register: Register,
        blocking: Blocking,
        validation: Executor | None,
        *,
        max_bytes: int,
        read_timeout: float,
        max_upload_seconds: float,
    ) -> None:
        self._register = register
        self._blocking = blocking
        self._validation = validation
        self._max_bytes = max_bytes
        self._read_timeout = read_timeout
        self._max_upload_seconds = max_upload_seconds
        self._loading: set[str] = set()  # institutions with an upload under way

    async def load(self, call: RestCall, info: CallInfo) -> dict[str, object]:
        """Reads the upload and loads it; returns the answer's body."""
        if info.institution in self._loading:
            raise Overloaded(
                "a batch of your institution is being loaded; send the next once it is answered"
            )
        self._loading.add(info.institution)
        try:
            text = await self._upload(call.request)
            return _summary(await self._write(info, _chunks(text, MAX_GROUP_ITEMS)))
        finally:
            self._loading.discard(info.institution)

    async def _upload(self, request: web.Request) -> str:
        """The upload's file, in full within ``max_upload_seconds``, each piece within the
        request timeout."""
        try:
            return await asyncio.wait_for(self._read(request), self._max_upload_seconds)
        except TimeoutError:
            raise RequestTimeout(
                f"the upload took longer than {self._max_upload_seconds:g} s "
                "([rest] max_upload_seconds)"
            ) from None
        except ConnectionError:
            raise ClientGone(deadline_passed=False) from None
        except (ValueError, AssertionError, LookupError, HttpProcessingError,
                RequestPayloadError):  # fmt: skip
            # (never the parser's message: it may quote the body's bytes)
            raise _invalid("body", "is not a valid multipart/form-data body",
                           "MULTIPART_MALFORMED") from None  # fmt: skip

    async def _read(self, request: web.Request) -> str:
        """The ``customers`` file as text, once ``customer_type`` is the contract's."""
        _check_headers(request, self._max_bytes)
        customer_type, data = None, None
        reader = await request.multipart()
        while (part := await self._timed(reader.next())) is not None:
            if not isinstance(part, BodyPartReader):
                raise ValueError("nested multipart")
            if part.name == "customer_type" and customer_type is None:
                customer_type = (await self._content(part, _TYPE_BYTES)).decode("utf-8").strip()
            elif part.name == "customers" and data is None:
                data = await self._content(part, self._max_bytes)
            else:
                raise _invalid("body", "holds a part other than one customer_type and one "
                               "customers", "MULTIPART_UNKNOWN_PART")  # fmt: skip
        if customer_type is None:
            raise _invalid("customer_type", "is required", "REQUIRED")
        if customer_type != CUSTOMER_TYPE:
            raise _wrong_type()
        if data is None:
            raise _invalid("customers", "is required (the file field)", "REQUIRED")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _invalid("customers", "is not UTF-8 text", "NOT_TEXT") from None

    async def _content(self, part: BodyPartReader, limit: int) -> bytes:
        """A part's bytes, read piece by piece (each within the request timeout)."""
        pieces, size = [], 0
        while piece := await self._timed(part.read_chunk(_READ_BYTES)):
            size += len(piece)
            if size > limit:
                raise _wrong_type() if limit == _TYPE_BYTES else _too_large(limit)
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

    async def _write(self, info: CallInfo, chunks: Iterator[list[str]]) -> BulkLoad:
        """Validates chunk N+1 while chunk N is written; returns the load. Chunks are cut
        from the text as they are needed: a 10 MB file may hold millions of entries."""
        current = next(chunks, None)
        if current is None:
            raise _invalid("customers", "holds no entry", "BATCH_EMPTY")
        validate = self._register.row_validator()  # (today's date: once per load)
        done = BulkLoad()
        validating = self._validate(validate, current)
        while True:
            validated = await validating
            following = next(chunks, None)
            if following is not None:
                validating = self._validate(validate, following)
            try:
                done = await self._blocking.run(
                    self._apply, info, done, validated, following is None
                )
            except KfrError as error:  # what was written before stays, and is said
                raise done.annotate(error) from None
            if following is None:
                return done

    def _apply(self, info: CallInfo, done: BulkLoad, chunk: ValidatedRows, last: bool) -> BulkLoad:
        return self._register.apply_chunks(info, done, [chunk], last=last)

    def _validate(
        self, validate: Callable[[list[Row]], ValidatedRows], entries: list[str]
    ) -> asyncio.Future[ValidatedRows]:
        rows = [_row(entry) for entry in entries]
        loop = asyncio.get_running_loop()
        if self._validation is None:
            future: asyncio.Future[ValidatedRows] = loop.create_future()
            future.set_result(validate(rows))
            return future
        return loop.run_in_executor(self._validation, validate, rows)


def _check_headers(request: web.Request, max_bytes: int) -> None:
    if request.content_type != "multipart/form-data":
        raise _invalid("body", "must be multipart/form-data with the fields customer_type "
                       "and customers", "NOT_MULTIPART")  # fmt: skip
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise _invalid("body", "must not be compressed (Content-Encoding)", "ENCODED")
    if request.content_length is not None and request.content_length > max_bytes + _FORM_BYTES:
        raise _too_large(max_bytes)


def _wrong_type() -> InvalidArgument:
    return _invalid("customer_type", f"must be {CUSTOMER_TYPE}", "RELATIONSHIP_TYPE_UNKNOWN")


def _too_large(limit: int) -> MessageTooLarge:
    return MessageTooLarge(
        f"the upload is larger than the {limit / 1024 / 1024:g} MB this server takes "
        "([rest] max_batch_mb); split the file, or load it over gRPC's ReportStream "
        "(kfr report-file)"
    )


def _row(entry: str) -> Row:
    """``customerId[#startDate]``: a relationship of role owner, no kind."""
    customer, _, start = entry.strip().partition("#")
    return ReportItem(customer.strip(), Role.OWNER, start.strip()).row()


def _chunks(text: str, size: int) -> Iterator[list[str]]:
    """The entries of ``text`` (comma- or line-separated, blanks skipped), ``size`` at a
    time."""
    chunk: list[str] = []
    for match in _ENTRY.finditer(text):
        entry = match.group().strip()
        if entry:
            chunk.append(entry)
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


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
