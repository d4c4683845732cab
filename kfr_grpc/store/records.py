"""The request log (institutions' calls, by correlation-id and by time) and the lookup
counters (per day, agency, mandate and outcome).

Request records expire by time through the ``request_log_by_time`` index, so expiring
costs what it removes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date, datetime

from kfr_grpc.register.model import LookupCount, RequestRecord
from kfr_grpc.store import codec
from kfr_grpc.store.layout import LOOKUP_COUNTS, REQUEST_LOG, REQUEST_LOG_BY_TIME
from kfr_grpc.store.txn import TxnBase, WriteTxnBase


class RecordReads(TxnBase):
    def request_records(self, correlation_id: str) -> list[RequestRecord]:
        """Every record under ``correlation_id``, oldest first."""
        return [
            codec.decode_request(self._open(REQUEST_LOG, key, sealed))
            for key, sealed in self._range(REQUEST_LOG, codec.request_prefix(correlation_id))
        ]

    def count_request_records_before(self, before: datetime) -> int:
        return sum(1 for _ in self._request_time_keys_before(before))

    def _request_time_keys_before(self, before: datetime) -> Iterator[bytes]:
        first_kept = codec.time_key(before)
        for time_key in self._txn.cursor(db=self._db[REQUEST_LOG_BY_TIME]).iternext(values=False):
            if time_key >= first_kept:
                return
            yield time_key

    def lookup_counts(self) -> Iterator[LookupCount]:
        """The counters of every counted day, agency and mandate (by day, then agency and
        mandate)."""
        day_counts: list[LookupCount] = []
        for key, sealed in self._txn.cursor(db=self._db[LOOKUP_COUNTS]):
            count = LookupCount(
                *codec.decode_lookup_count(key, self._open(LOOKUP_COUNTS, key, sealed))
            )
            if day_counts and day_counts[0].day != count.day:
                yield from _in_order(day_counts)
                day_counts = []
            day_counts.append(count)
        yield from _in_order(day_counts)

    def _lookup_count_keys(self, day: date, agency: str, mandate: str) -> list[bytes]:
        """Every key the counter may be under: one per pseudonym version, newest first,
        and the legacy one while those may remain."""
        data = codec.lookup_tag_data(agency, mandate)
        keys = [
            codec.lookup_count_key(day, version, self._tag(version, data))
            for version, _ in self._crypto.newest_first
        ]
        if self._legacy:
            keys.append(codec.legacy_lookup_count_key(day, agency, mandate))
        return keys


class RecordWrites(WriteTxnBase, RecordReads):
    def _begin_record_writes(self, sequence: Iterator[int]) -> None:
        self._request_sequence = sequence

    def put_request_record(self, record: RequestRecord) -> None:
        key = codec.request_key(record, next(self._request_sequence))
        self._put(REQUEST_LOG, key, codec.encode_request(record))
        self._put_index(REQUEST_LOG_BY_TIME, codec.request_time_key(key))

    def expire_request_records(self, before: datetime, limit: int) -> int:
        """Deletes up to ``limit`` request log records older than ``before``."""
        expired = list(itertools.islice(self._request_time_keys_before(before), limit))
        for time_key in expired:
            self._delete(REQUEST_LOG_BY_TIME, time_key)
            self._delete(REQUEST_LOG, codec.request_of_time_key(time_key))
        return len(expired)

    def add_lookup_counts(
        self, day: date, agency: str, mandate: str, counts: dict[str, int]
    ) -> None:
        """Adds ``counts`` to the counter, which moves to the current pseudonym version."""
        total: dict[str, int] = {}
        for key in self._lookup_count_keys(day, agency, mandate):
            opened = self._get_opened(LOOKUP_COUNTS, key)
            if opened is not None:
                _add(total, codec.decode_lookup_count(key, opened)[3])
                self._delete(LOOKUP_COUNTS, key)
        _add(total, counts)
        data = codec.lookup_tag_data(agency, mandate)
        key = codec.lookup_count_key(
            day, self.pseudonym_version, self._tag(self.pseudonym_version, data)
        )
        self._put(LOOKUP_COUNTS, key, codec.encode_lookup_count(agency, mandate, total))


def _add(total: dict[str, int], counts: dict[str, int]) -> None:
    for status, count in counts.items():
        total[status] = total.get(status, 0) + count


def _in_order(counts: list[LookupCount]) -> list[LookupCount]:
    return sorted(counts, key=lambda count: (count.agency, count.mandate))
