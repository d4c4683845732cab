"""InstitutionService: reporting (one call or a bulk stream) and ending relationships,
listing one's own, and the request log.

The register's use cases write to the store, so they run in the store threads
(``blocking``); a bulk load's validation runs in the helper processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.api.blocking import Blocking
from kfr_grpc.api.calls import RequestContext, deadline_passed
from kfr_grpc.api.convert import (
    bulk_load_to_pb,
    end_items,
    period_to_pb,
    report_items,
    request_record_to_pb,
    role_to_pb,
)
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.errors import ClientGone, InvalidArgument, KfrError
from kfr_grpc.register.bulk import BulkLoad
from kfr_grpc.register.model import CallInfo
from kfr_grpc.register.reports import ValidatedReports, ValidatedRows, check_chunk_size
from kfr_grpc.register.service import Register


class InstitutionServicer(kfr_pb2_grpc.InstitutionServiceServicer):
    def __init__(
        self,
        register: Register,
        policy: AccessPolicy,
        blocking: Blocking,
        validation: Executor | None = None,
    ) -> None:
        self._register = register
        self._policy = policy
        self._blocking = blocking
        self._validation = validation

    async def Report(self, request: pb.ReportRequest, context: RequestContext) -> pb.ReportResponse:
        call = self._call(context, request.institution_org_number)
        items = report_items(request.relationships)
        result = await self._blocking.run(self._register.report, call, items)
        return pb.ReportResponse(
            registered_count=result.registered,
            already_registered_count=result.already_registered,
        )

    async def ReportStream(
        self, requests: AsyncIterator[pb.ReportRequest], context: RequestContext
    ) -> pb.ReportStreamResponse:
        """A pipeline: while chunk N is written (in a store thread), chunk N+1 is
        validated (in a helper process) and chunk N+2 is received. One transaction per
        chunk; the last one also holds the load's request record."""
        load = _Load(self, context)
        try:
            await load.run(requests)
        except asyncio.CancelledError:
            # The client cut the stream off: what was committed stays, and says so.
            committed = (await load.settle()).committed()
            raise ClientGone(deadline_passed(context), committed) from None
        except KfrError as error:
            raise (await load.settle()).annotate(error) from None
        return bulk_load_to_pb(load.done)

    async def End(self, request: pb.EndRequest, context: RequestContext) -> pb.EndResponse:
        call = self._call(context, request.institution_org_number)
        result = await self._blocking.run(self._register.end, call, end_items(request.endings))
        return pb.EndResponse(ended_count=result.ended, already_ended_count=result.already_ended)

    async def ListOwn(
        self, request: pb.ListOwnRequest, context: RequestContext
    ) -> pb.ListOwnResponse:
        call = self._call(context, request.institution_org_number)
        histories = await self._blocking.run(self._register.list_own, call, request.customer_id)
        return pb.ListOwnResponse(
            relationships=[
                pb.OwnRelationship(
                    role=role_to_pb(history.role),
                    periods=[period_to_pb(period) for period in history.periods],
                )
                for history in histories
            ]
        )

    async def GetRequestLog(
        self, request: pb.GetRequestLogRequest, context: RequestContext
    ) -> pb.GetRequestLogResponse:
        call = self._call(context, request.institution_org_number)
        records = await self._blocking.run(self._register.request_log, call, request.correlation_id)
        return pb.GetRequestLogResponse(records=[request_record_to_pb(r) for r in records])

    def _call(self, context: RequestContext, institution_org_number: str) -> CallInfo:
        """The call, for the institution it names once the caller may act for it."""
        institution = self._policy.acting_institution(context.caller, institution_org_number)
        return context.call_for(institution)


class _Load:
    """One ReportStream: its call, its chunks in flight, and what has been written."""

    def __init__(self, servicer: InstitutionServicer, context: RequestContext) -> None:
        self._servicer = servicer
        self._context = context
        self._register = servicer._register
        self._validate = self._register.row_validator()
        self.call: CallInfo | None = None
        self.done = BulkLoad()  # the chunks written so far
        self._validating: asyncio.Future | None = None  # the newest chunk, being validated
        self._writing: asyncio.Task | None = None  # the chunk before it, being written

    async def run(self, requests: AsyncIterator[pb.ReportRequest]) -> None:
        async for chunk in requests:
            self.call = self._stream_call(chunk)
            check_chunk_size(chunk.relationships)
            rows = [item.row() for item in report_items(chunk.relationships)]
            validating = self._submit(rows)
            await self._finish_writing()
            if self._validating is not None:
                self._writing = asyncio.ensure_future(self._write(self._validating, last=False))
            self._validating = validating
        if self.call is None:
            raise InvalidArgument.field("stream", "holds no chunk", "BATCH_EMPTY")
        await self._finish_writing()
        validating, self._validating = self._validating, None
        if validating is not None:
            self.done = await self._write(validating, last=True)

    async def settle(self) -> BulkLoad:
        """After a failure: the chunk being written is written (or fails), the chunk
        already received and validated is written too (it came before the bad one), and
        the load so far is what counts."""
        try:
            await self._finish_writing()
            validating, self._validating = self._validating, None
            if validating is not None and self.call is not None:
                self.done = await self._write(validating, last=False)
        except KfrError:
            pass  # the store refused it: the count stays what was committed
        return self.done

    async def _finish_writing(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            self.done = await asyncio.shield(writing)

    def _submit(self, rows: list) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        if self._servicer._validation is None:
            future = loop.create_future()
            future.set_result(self._validate(rows))
            return future
        return loop.run_in_executor(self._servicer._validation, self._validate, rows)

    async def _write(self, validating: asyncio.Future, *, last: bool) -> BulkLoad:
        rows: ValidatedRows = await validating
        validated = ValidatedReports.from_rows(rows)
        assert self.call is not None
        apply: Callable[..., Any] = self._register.apply_chunk
        return await self._servicer._blocking.run(
            lambda: apply(self.call, self.done, validated, last=last)
        )

    def _stream_call(self, chunk: pb.ReportRequest) -> CallInfo:
        """The stream's call, for the institution named in its first chunk."""
        if self.call is None:
            return self._servicer._call(self._context, chunk.institution_org_number)
        named = chunk.institution_org_number.replace(" ", "")
        if named and named != self.call.institution:
            raise InvalidArgument.field(
                "institution_org_number", "differs between chunks of one stream", "INVALID_VALUE"
            )
        return self.call
