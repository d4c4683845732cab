"""InstitutionService: reporting (one call or a bulk stream) and ending relationships,
listing one's own, and the request log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.api.calls import RequestContext
from kfr_grpc.api.convert import (
    bulk_load_to_pb,
    end_items,
    period_to_pb,
    report_items,
    request_record_to_pb,
    role_to_pb,
)
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.errors import InvalidArgument, KfrError
from kfr_grpc.register.bulk import BulkLoad
from kfr_grpc.register.model import CallInfo
from kfr_grpc.register.reports import ValidatedReports, check_chunk_size
from kfr_grpc.register.service import Register


class InstitutionServicer(kfr_pb2_grpc.InstitutionServiceServicer):
    def __init__(
        self, register: Register, policy: AccessPolicy, validation: Executor | None = None
    ) -> None:
        self._register = register
        self._policy = policy
        self._validation = validation or InlineExecutor()

    def Report(self, request: pb.ReportRequest, context: RequestContext) -> pb.ReportResponse:
        call = self._call(context, request.institution_org_number)
        result = self._register.report(call, report_items(request.relationships))
        return pb.ReportResponse(
            registered_count=result.registered,
            already_registered_count=result.already_registered,
        )

    def ReportStream(
        self, request_iterator: Iterator[pb.ReportRequest], context: RequestContext
    ) -> pb.ReportStreamResponse:
        """Chunk N is written while chunk N+1 is validated (in the validation executor,
        another process when the server has one): one transaction per chunk."""
        load = BulkLoad()
        call: CallInfo | None = None
        validate = self._register.row_validator()
        pending: Future | None = None
        try:
            while True:
                try:
                    chunk = next(request_iterator, None)
                    if chunk is None:
                        break
                    call = self._stream_call(context, chunk, call)
                    check_chunk_size(chunk.relationships)
                except KfrError:
                    load = self._write(call, load, pending)  # it came before the bad one
                    raise
                rows = [item.row() for item in report_items(chunk.relationships)]
                submitted = self._validation.submit(validate, rows)
                load = self._write(call, load, pending)
                pending = submitted
            if call is None:
                raise InvalidArgument.field("stream", "holds no chunk", "BATCH_EMPTY")
            load = self._write(call, load, pending, last=True)
        except KfrError as error:
            raise load.annotate(error) from None
        return bulk_load_to_pb(load)

    def _write(
        self, call: CallInfo | None, load: BulkLoad, pending: Future | None, *, last: bool = False
    ) -> BulkLoad:
        if pending is None or call is None:
            return load
        validated = ValidatedReports.from_rows(pending.result())
        return self._register.apply_chunk(call, load, validated, last=last)

    def _stream_call(
        self, context: RequestContext, chunk: pb.ReportRequest, call: CallInfo | None
    ) -> CallInfo:
        """The stream's call, for the institution named in its first chunk."""
        if call is None:
            return self._call(context, chunk.institution_org_number)
        named = chunk.institution_org_number.replace(" ", "")
        if named and named != call.institution:
            raise InvalidArgument.field(
                "institution_org_number", "differs between chunks of one stream", "INVALID_VALUE"
            )
        return call

    def End(self, request: pb.EndRequest, context: RequestContext) -> pb.EndResponse:
        call = self._call(context, request.institution_org_number)
        result = self._register.end(call, end_items(request.endings))
        return pb.EndResponse(ended_count=result.ended, already_ended_count=result.already_ended)

    def ListOwn(self, request: pb.ListOwnRequest, context: RequestContext) -> pb.ListOwnResponse:
        call = self._call(context, request.institution_org_number)
        histories = self._register.list_own(call, request.customer_id)
        return pb.ListOwnResponse(
            relationships=[
                pb.OwnRelationship(
                    role=role_to_pb(history.role),
                    periods=[period_to_pb(period) for period in history.periods],
                )
                for history in histories
            ]
        )

    def GetRequestLog(
        self, request: pb.GetRequestLogRequest, context: RequestContext
    ) -> pb.GetRequestLogResponse:
        call = self._call(context, request.institution_org_number)
        records = self._register.request_log(call, request.correlation_id)
        return pb.GetRequestLogResponse(records=[request_record_to_pb(r) for r in records])

    def _call(self, context: RequestContext, institution_org_number: str) -> CallInfo:
        """The call, for the institution it names once the caller may act for it."""
        institution = self._policy.acting_institution(context.caller, institution_org_number)
        return context.call_for(institution)


class InlineExecutor(Executor):
    """Runs submitted work at once, in the calling thread (no helper process)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future
