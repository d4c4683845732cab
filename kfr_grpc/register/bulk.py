"""Book-keeping of one bulk load (a stream of chunks): positions across chunks, totals,
and the rejected items.

Memory stays bounded however long the stream: counts, and at most
``MAX_REJECTED_LISTED`` rejections (the count goes on). A ``BulkLoad`` is a value: each
chunk written gives the next one, so a transaction that runs again cannot count a chunk
twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kfr_grpc.errors import InvalidArgument, KfrError, NotFound, Rejection

MAX_REJECTED_LISTED = 10_000
STREAM = "stream"  # how a request record names the stream's items: stream[12].customer_id


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What writing one chunk did; rejections name their item by its place in the chunk."""

    size: int
    registered: int
    already_registered: int
    rejections: tuple[Rejection, ...]


@dataclass(frozen=True, slots=True)
class BulkLoad:
    chunks: int = 0
    items: int = 0  # items received in the chunks counted so far
    registered: int = 0
    already_registered: int = 0
    rejected_count: int = 0
    rejections: tuple[Rejection, ...] = ()  # the first ones, naming their stream position

    @property
    def accepted(self) -> int:
        return self.registered + self.already_registered

    def plus(self, chunk: ChunkOutcome) -> BulkLoad:
        """The load with one more chunk counted (its items follow the ones so far)."""
        room = MAX_REJECTED_LISTED - len(self.rejections)
        placed = tuple(
            rejection._replace(item=self.items + rejection.item)
            for rejection in sorted(chunk.rejections, key=lambda r: r.item)[: max(room, 0)]
        )
        return replace(
            self,
            chunks=self.chunks + 1,
            items=self.items + chunk.size,
            registered=self.registered + chunk.registered,
            already_registered=self.already_registered + chunk.already_registered,
            rejected_count=self.rejected_count + len(chunk.rejections),
            rejections=self.rejections + placed,
        )

    @property
    def truncated(self) -> bool:
        return self.rejected_count > len(self.rejections)

    def counts(self) -> dict[str, int]:
        return {
            "registered": self.registered,
            "already_registered": self.already_registered,
            "rejected": self.rejected_count,
            "chunks": self.chunks,
        }

    def committed(self) -> str:
        """What was committed, in words ("" if nothing was)."""
        if self.chunks == 0:
            return ""
        return f"{self.accepted} items in {self.chunks} chunks were committed before this"

    def annotate(self, error: KfrError) -> KfrError:
        """``error``, telling the caller what was committed before it (the chunks so far)."""
        return with_partial_note(error, self.committed())


def with_partial_note(error: KfrError, note: str) -> KfrError:
    """``error``, telling the caller (``note``) what a stream committed before it: a
    ``PARTIAL`` violation (and, for other errors than about fields, in the message)."""
    if not note:
        return error
    if isinstance(error, InvalidArgument | NotFound):
        return error.with_rejection(Rejection(STREAM, note, "PARTIAL"))
    annotated = type(error)(f"{error}; {note}")
    annotated.rejections = (*error.rejections, Rejection(STREAM, note, "PARTIAL"))
    return annotated
