"""InstitutionService: reporting (one call or a bulk stream) and ending relationships,
listing one's own, and the request log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc._proto import kfr_pb2_grpc
from kfr_grpc.api.bulk import BulkLoad, PreparedChunk
from kfr_grpc.api.convert import (
    period_to_pb,
    request_record_to_pb,
    role_to_pb,
    roles_from_pb,
)
from kfr_grpc.api.interceptor import RequestContext
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.errors import InvalidArgument, KfrError
from kfr_grpc.register.reports import ValidatedReports
from kfr_grpc.register.service import EndItem, Register, ReportItem, check_chunk_size


class InstitutionServicer(kfr_pb2_grpc.InstitutionServiceServicer):
    def __init__(
        self, register: Register, policy: AccessPolicy, validation: Executor | None = None
    ) -> None:
        self._register = register
        self._policy = policy
        self._validation = validation or InlineExecutor()

    def Report(self, request: pb.ReportRequest, context: RequestContext) -> pb.ReportResponse:
        institution = self._policy.acting_institution(
            context.caller, request.institution_org_number
        )
        roles = roles_from_pb([item.role for item in request.relationships], "relationships")
        items = [
            ReportItem(item.customer_id, role, item.start_date)
            for item, role in zip(request.relationships, roles, strict=True)
        ]
        result = self._register.report(institution, items)
        context.outcome.counts = {
            "registered": result.registered,
            "already_registered": result.already_registered,
        }
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
        institution = None
        validate = self._register.row_validator()
        pending: tuple[PreparedChunk, Future] | None = None
        try:
            chunks = iter(request_iterator)
            while True:
                try:
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    institution = self._stream_institution(context, chunk, institution)
                    prepared = load.begin_chunk(chunk)
                    check_chunk_size(chunk.relationships)
                except KfrError:
                    self._write_chunk(load, institution, pending)  # it came before the bad one
                    raise
                submitted = (prepared, self._validation.submit(validate, prepared.rows))
                self._write_chunk(load, institution, pending)
                pending = submitted
            self._write_chunk(load, institution, pending)
        except KfrError as error:
            raise load.annotate(error) from None
        if institution is None:
            raise InvalidArgument.field("stream", "holds no chunk", "BATCH_EMPTY")
        context.outcome.counts = load.counts()
        context.outcome.rejected = load.violations()
        return load.response()

    def _write_chunk(
        self, load: BulkLoad, institution: str | None, pending: tuple[PreparedChunk, Future] | None
    ) -> None:
        if pending is None or institution is None:
            return
        prepared, validation = pending
        validated = ValidatedReports.from_rows(validation.result())
        load.finish_chunk(prepared, self._register.apply_chunk(institution, validated))

    def _stream_institution(
        self, context: RequestContext, chunk: pb.ReportRequest, institution: str | None
    ) -> str:
        """The institution the stream reports for: named in the first chunk."""
        if institution is None:
            return self._policy.acting_institution(context.caller, chunk.institution_org_number)
        named = chunk.institution_org_number.replace(" ", "")
        if named and named != institution:
            raise InvalidArgument.field(
                "institution_org_number", "differs between chunks of one stream", "INVALID_VALUE"
            )
        return institution

    def End(self, request: pb.EndRequest, context: RequestContext) -> pb.EndResponse:
        institution = self._policy.acting_institution(
            context.caller, request.institution_org_number
        )
        roles = roles_from_pb([item.role for item in request.endings], "endings")
        items = [
            EndItem(item.customer_id, role, item.end_date)
            for item, role in zip(request.endings, roles, strict=True)
        ]
        result = self._register.end(institution, items)
        context.outcome.counts = {"ended": result.ended, "already_ended": result.already_ended}
        return pb.EndResponse(ended_count=result.ended, already_ended_count=result.already_ended)

    def ListOwn(self, request: pb.ListOwnRequest, context: RequestContext) -> pb.ListOwnResponse:
        institution = self._policy.acting_institution(
            context.caller, request.institution_org_number
        )
        histories = self._register.list_own(institution, request.customer_id)
        context.outcome.counts = {"relationships": len(histories)}
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
        institution = self._policy.acting_institution(
            context.caller, request.institution_org_number
        )
        records = self._register.request_log(institution, request.correlation_id)
        return pb.GetRequestLogResponse(records=[request_record_to_pb(r) for r in records])


class InlineExecutor(Executor):
    """Runs submitted work at once, in the calling thread (no helper process)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future
