"""InstitutionService: reporting (one call or a bulk stream) and ending relationships,
listing one's own, and the request log.

The register's use cases write to the store, so they run in the store threads
(``blocking``); a bulk load's validation runs in the helper processes.
"""

from __future__ import annotations

import asyncio
import pickle
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.api.blocking import Blocking
from kfr_grpc.api.calls import RequestContext, deadline_passed
from kfr_grpc.api.convert import (
    bulk_load_to_pb,
    correct_items,
    end_items,
    own_relationship_to_pb,
    reconciliation_to_pb,
    report_items,
    report_rows,
    request_record_to_pb,
    retract_items,
)
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.errors import ClientGone, InvalidArgument, KfrError
from kfr_grpc.register.bulk import BulkLoad, with_partial_note
from kfr_grpc.register.model import CallInfo
from kfr_grpc.register.reconcile import Reconciliation
from kfr_grpc.register.reports import Row, ValidatedRows, check_chunk_size
from kfr_grpc.register.service import Register

# A bulk load's writes: at most this many relationships in one transaction (which holds
# the store's write lock: other writers wait up to about 0.1 s), and at most this many
# received and not yet written, per stream (they are in memory).
MAX_GROUP_ITEMS = 10_000
MAX_PENDING_ITEMS = 2 * MAX_GROUP_ITEMS


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

    async def Reconcile(
        self, requests: AsyncIterator[pb.ReconcileRequest], context: RequestContext
    ) -> pb.ReconcileResponse:
        """ReportStream's pipeline, comparing instead of writing (``_Reconcile``); once
        the whole set is in, what was not sent is counted (and with apply, ended)."""
        load = _Reconcile(self, context)
        try:
            await load.run(requests)
            reconciliation = load.reconciliation
            assert reconciliation is not None
            await self._blocking.run(self._register.finish_reconciliation, reconciliation)
        except asyncio.CancelledError:
            await load.settle()
            raise ClientGone(deadline_passed(context), load.applied_note()) from None
        except KfrError as error:
            await load.settle()
            raise with_partial_note(error, load.applied_note()) from None
        return reconciliation_to_pb(reconciliation)

    async def Retract(
        self, request: pb.RetractRequest, context: RequestContext
    ) -> pb.RetractResponse:
        call = self._call(context, request.institution_org_number)
        items = retract_items(request.retractions)
        result = await self._blocking.run(self._register.retract, call, items)
        return pb.RetractResponse(retracted_count=result.changed)

    async def Correct(
        self, request: pb.CorrectRequest, context: RequestContext
    ) -> pb.CorrectResponse:
        call = self._call(context, request.institution_org_number)
        items = correct_items(request.corrections)
        result = await self._blocking.run(self._register.correct, call, items)
        return pb.CorrectResponse(corrected_count=result.changed, unchanged_count=result.unchanged)

    async def End(self, request: pb.EndRequest, context: RequestContext) -> pb.EndResponse:
        call = self._call(context, request.institution_org_number)
        result = await self._blocking.run(self._register.end, call, end_items(request.endings))
        return pb.EndResponse(ended_count=result.ended, already_ended_count=result.already_ended)

    async def ListOwn(
        self, request: pb.ListOwnRequest, context: RequestContext
    ) -> pb.ListOwnResponse:
        call = self._call(context, request.institution_org_number)
        histories = await self._blocking.run(self._register.list_own, call, request.customer_id)
        return pb.ListOwnResponse(relationships=[own_relationship_to_pb(h) for h in histories])

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


def validate_chunk(
    serialized: bytes,
    validate: Callable[[list[Row]], ValidatedRows],
    message: str = "ReportRequest",
) -> bytes:
    """A bulk-load chunk as it came over the wire, validated, the result pickled. Runs in
    a helper process: the server's own threads, which share one interpreter lock with
    the store thread writing the chunks before, only send bytes one way and unpickle
    the result in the store thread (rows pickled and unpickled by the server slowed its
    writes by half, measured with ``make bench``)."""
    chunk = getattr(pb, message).FromString(serialized)  # by name: the class does not pickle
    rows = validate(report_rows(chunk.relationships))
    return pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)


class _Load:
    """One ReportStream: its call, its chunks in flight, and what has been written.

    A pipeline: chunks are received on the event loop, validated in a helper process and
    written in a store thread, all at once. The chunks waiting (validated) when a write
    ends are written together by the next, in one transaction of up to
    ``MAX_GROUP_ITEMS`` relationships: a commit writes a page for nearly every
    relationship (their keys are random) and fsyncs, about as costly for one chunk as
    for several, so a load that arrives faster than a commit per chunk gets fewer,
    larger commits. At most ``MAX_PENDING_ITEMS`` relationships wait: then the stream is
    not read until they are written (gRPC's flow control holds the client back).
    """

    def __init__(self, servicer: InstitutionServicer, context: RequestContext) -> None:
        self._servicer = servicer
        self._context = context
        self._register = servicer._register
        self._validate = self._register.row_validator()
        self.call: CallInfo | None = None
        self.done = BulkLoad()  # the chunks written so far
        # Chunks received and not yet written, in order: (validation, size).
        self._pending: deque[tuple[asyncio.Future, int]] = deque()
        self._pending_items = 0
        self._writing: asyncio.Task | None = None

    async def run(self, requests: AsyncIterator[pb.ReportRequest]) -> None:
        async for chunk in requests:
            self.call = self._stream_call(chunk)
            check_chunk_size(chunk.relationships)
            size = len(chunk.relationships)
            self._pending.append((self._submit(chunk), size))
            self._pending_items += size
            await self._keep_writing(MAX_PENDING_ITEMS)
        if self.call is None:
            raise InvalidArgument.field("stream", "holds no chunk", "BATCH_EMPTY")
        await self._finish_writing()
        while self._pending:
            self.done = await self._write_group(last=True)

    # The newest chunk received always waits for the next (or the end of the stream):
    # the load's request record goes in the transaction of its last chunk.

    async def settle(self) -> BulkLoad:
        """After a failure: the chunks being written are written (or fail), those already
        received and validated are written too (they came before the bad one), and the
        load so far is what counts."""
        try:
            await self._finish_writing()
            while self._pending and self.call is not None:
                self.done = await self._write_group(last=False, keep_newest=False)
        except KfrError:
            pass  # the store refused it: the count stays what was committed
        return self.done

    async def _keep_writing(self, limit: int) -> None:
        """Starts the next write when none is running; while more than ``limit``
        relationships wait, waits for writes."""
        while True:
            if self._writing is not None and self._writing.done():
                await self._finish_writing()
            if self._writing is None and len(self._pending) > 1:
                self._writing = asyncio.ensure_future(self._write_group(last=False))
            if self._pending_items <= limit or self._writing is None:
                return
            await self._finish_writing()

    async def _finish_writing(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            self.done = await asyncio.shield(writing)

    _message = "ReportRequest"  # the stream's chunks

    def _submit(self, chunk: pb.ReportRequest) -> asyncio.Future:
        """The chunk's validation, in a helper process (see ``validate_chunk``)."""
        loop = asyncio.get_running_loop()
        serialized = chunk.SerializeToString()
        if self._servicer._validation is None:
            future = loop.create_future()
            future.set_result(validate_chunk(serialized, self._validate, self._message))
            return future
        return loop.run_in_executor(
            self._servicer._validation, validate_chunk, serialized, self._validate, self._message
        )

    async def _write_group(self, *, last: bool, keep_newest: bool = True) -> BulkLoad:
        """Writes the first waiting chunk once validated, with the ones after it already
        validated (up to ``MAX_GROUP_ITEMS`` relationships), in one transaction; the
        load's last transaction (``last`` and none left) holds its request record.
        Unless ``last``, the newest chunk stays (``keep_newest``)."""
        group: list[bytes] = []
        items = 0
        keep = 1 if keep_newest and not last else 0
        while len(self._pending) > keep:
            validating, size = self._pending[0]
            if group and (not validating.done() or items + size > MAX_GROUP_ITEMS):
                break
            group.append(await validating)
            self._pending.popleft()
            self._pending_items -= size
            items += size
        assert self.call is not None
        call, done, ends = self.call, self.done, last and not self._pending
        return await self._servicer._blocking.run(
            lambda: self._apply(call, done, [pickle.loads(rows) for rows in group], ends)
        )

    def _apply(
        self, call: CallInfo, done: BulkLoad, chunks: list[ValidatedRows], last: bool
    ) -> BulkLoad:
        """Writes a group of validated chunks (in a store thread); the load after them."""
        return self._register.apply_chunks(call, done, chunks, last=last)

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


class _Reconcile(_Load):
    """One Reconcile stream: ReportStream's pipeline (receive, validate in a helper
    process, handle in a store thread), each group of chunks compared with the register
    (and with apply, what is lacking reported) instead of written."""

    _message = "ReconcileRequest"

    def __init__(self, servicer: InstitutionServicer, context: RequestContext) -> None:
        super().__init__(servicer, context)
        self.reconciliation: Reconciliation | None = None
        self._apply_changes = False
        self._as_of = ""
        self._max_ends = 0

    def _stream_call(self, chunk: pb.ReconcileRequest) -> CallInfo:
        if self.call is None:
            self._apply_changes, self._as_of = chunk.apply, chunk.as_of_date
            self._max_ends = chunk.max_ends
        return super()._stream_call(chunk)

    def _apply(
        self, call: CallInfo, done: BulkLoad, chunks: list[ValidatedRows], last: bool
    ) -> BulkLoad:
        if self.reconciliation is None:
            self.reconciliation = self._register.start_reconciliation(
                call, apply=self._apply_changes, as_of=self._as_of, max_ends=self._max_ends
            )
        self._register.reconcile_chunks(self.reconciliation, chunks)
        return done

    def applied_note(self) -> str:
        """What an interrupted reconciliation changed, in words."""
        reconciliation = self.reconciliation
        if reconciliation is None or not (reconciliation.registered or reconciliation.ended):
            return ""
        return (
            f"{reconciliation.registered} missing relationships were reported and "
            f"{reconciliation.ended} not sent were ended before this: run the reconciliation "
            "again"
        )
