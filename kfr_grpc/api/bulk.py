"""Book-keeping of one ReportStream: positions across chunks, totals, rejected items.

Memory stays bounded however long the stream: one chunk at a time, counts, and at most
``MAX_REJECTED_LISTED`` rejected items (the count goes on).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.errors import FieldViolation, InvalidArgument, KfrError, NotFound
from kfr_grpc.register.reports import Row
from kfr_grpc.register.service import ChunkResult

MAX_REJECTED_LISTED = 10_000
# The wire's role numbers are the register's (kfr.v1.Role: 0 unspecified, 1 owner, 2 disponent).
_KNOWN_ROLES = frozenset({pb.ROLE_UNSPECIFIED, pb.ROLE_OWNER, pb.ROLE_DISPONENT})
_MAX_REJECTED_RECORDED = 1000


@dataclass
class PreparedChunk:
    """A received chunk: rows to validate, their stream positions, and items already
    rejected as (position, field, code, reason)."""

    rows: list[Row] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str, str, str]] = field(default_factory=list)


class BulkLoad:
    def __init__(self) -> None:
        self.chunks = self.items = 0
        self.registered = self.already_registered = self.rejected_count = 0
        self._rejected: list[pb.RejectedItem] = []

    @property
    def accepted(self) -> int:
        return self.registered + self.already_registered

    def begin_chunk(self, chunk: pb.ReportRequest) -> PreparedChunk:
        """The chunk's items as rows for validation, with their positions in the stream;
        items with a role number outside the contract are rejected already here."""
        prepared = PreparedChunk()
        for offset, item in enumerate(chunk.relationships):
            position = self.items + offset
            if item.role in _KNOWN_ROLES:
                prepared.rows.append((item.customer_id, item.role, item.start_date))
                prepared.positions.append(position)
            else:
                reason = f"has unknown value {item.role}"
                prepared.rejected.append((position, "role", "ROLE_UNKNOWN", reason))
        self.items += len(chunk.relationships)
        return prepared

    def finish_chunk(self, prepared: PreparedChunk, result: ChunkResult) -> None:
        """Counts a written chunk and lists its rejected items, in stream order."""
        self.chunks += 1
        self.registered += result.registered
        self.already_registered += result.already_registered
        rejected = prepared.rejected + [
            (prepared.positions[p.index], p.field, p.code, p.reason) for p in result.rejected
        ]
        for item in sorted(rejected):
            self._reject(*item)

    def _reject(self, position: int, field: str, code: str, reason: str) -> None:
        self.rejected_count += 1
        if len(self._rejected) < MAX_REJECTED_LISTED:
            self._rejected.append(
                pb.RejectedItem(position=position, field=field, code=code, reason=reason)
            )

    def counts(self) -> dict[str, int]:
        return {
            "registered": self.registered,
            "already_registered": self.already_registered,
            "rejected": self.rejected_count,
            "chunks": self.chunks,
        }

    def violations(self) -> tuple[FieldViolation, ...]:
        """The first rejected items, for the request log."""
        return tuple(
            FieldViolation(f"stream[{item.position}].{item.field}", item.reason, item.code)
            for item in self._rejected[:_MAX_REJECTED_RECORDED]
        )

    def response(self) -> pb.ReportStreamResponse:
        return pb.ReportStreamResponse(
            accepted_count=self.accepted,
            registered_count=self.registered,
            already_registered_count=self.already_registered,
            rejected_count=self.rejected_count,
            rejected=self._rejected,
            rejected_truncated=self.rejected_count > len(self._rejected),
            chunk_count=self.chunks,
        )

    def annotate(self, error: KfrError) -> KfrError:
        """``error``, telling the caller what was committed before it (the chunks so far)."""
        if self.chunks == 0:
            return error
        note = f"{self.accepted} items in {self.chunks} chunks were committed before this"
        if isinstance(error, InvalidArgument | NotFound):
            return type(error)([*error.violations, FieldViolation("stream", note, "PARTIAL")])
        return type(error)(f"{error}; {note}")
