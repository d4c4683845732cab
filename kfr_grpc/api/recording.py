"""What the register keeps about calls once they are answered.

- InstitutionService calls: a request log record under the call's correlation-id, for the
  institution's troubleshooting (``GetRequestLog``): time, method, institution, outcome,
  counts, and the positions and reasons of rejected items. Never a customer ID.
- LookupService calls: one tick of a counter per agency, mandate and outcome. Nothing
  about the person looked up, not the ID and not its pseudonym.
"""

from __future__ import annotations

from kfr_grpc._proto import kfr_pb2
from kfr_grpc.api.interceptor import FinishedCall
from kfr_grpc.clock import Clock
from kfr_grpc.metrics import Metrics
from kfr_grpc.register.model import RequestRecord
from kfr_grpc.register.service import Register
from kfr_grpc.register.statistics import LookupStatistics

_INSTITUTION_SERVICE = kfr_pb2.DESCRIPTOR.services_by_name["InstitutionService"].full_name
_LOOKUP_SERVICE = kfr_pb2.DESCRIPTOR.services_by_name["LookupService"].full_name
UNKNOWN_MANDATE = "(none)"
_MAX_REJECTED_RECORDED = 1000


class RegisterRecorder:
    def __init__(self, register: Register, statistics: LookupStatistics, clock: Clock) -> None:
        self._register = register
        self._statistics = statistics
        self._clock = clock

    def record(self, call: FinishedCall) -> None:
        if call.caller is None:
            return  # no identity: nobody could ever ask for this record
        service = call.method.strip("/").split("/", 1)[0]
        if service == _INSTITUTION_SERVICE:
            self._register.record_request(self._request_record(call))
        elif service == _LOOKUP_SERVICE:
            mandate = call.outcome.mandate or UNKNOWN_MANDATE
            self._statistics.count(call.caller.org_number, mandate, call.code.name)

    def _request_record(self, call: FinishedCall) -> RequestRecord:
        assert call.caller is not None
        return RequestRecord(
            correlation_id=call.correlation_id,
            time=self._clock.now(),
            method=call.method,
            institution=call.caller.org_number,
            supplier=call.caller.supplier,
            status=call.code.name,
            message=call.message,
            counts=dict(call.outcome.counts),
            rejected=(call.violations or call.outcome.rejected)[:_MAX_REJECTED_RECORDED],
        )


class MetricsRecorder:
    """Counts every call and its latency by method and status."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def record(self, call: FinishedCall) -> None:
        self._metrics.observe_call(call.method, call.code.name, call.seconds)
