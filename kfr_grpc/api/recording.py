"""What the register keeps about calls once they have ended.

- InstitutionService calls the register carried out are recorded by the register itself,
  in the transaction of their changes. A call refused before or inside the register
  (and so changing nothing) is recorded here, in its own transaction: time, method,
  institution, status, message and the positions and reasons of rejected items. Never a
  customer ID. Not recorded: calls of an organisation that is no registered institution
  (the register's rule) and calls refused by a limit on calls, so that a flood of calls
  is not a flood of disk writes.
- LookupService calls: one tick of a counter per agency, mandate and outcome. Nothing
  about the person looked up, not the ID and not its pseudonym.
- Every call: a count and a latency in the metrics, by method and status.
"""

from __future__ import annotations

from collections.abc import Awaitable

import grpc

from kfr_grpc._proto import kfr_pb2
from kfr_grpc.api.blocking import Blocking
from kfr_grpc.api.observability import FinishedCall
from kfr_grpc.auth.policy import AccessPolicy
from kfr_grpc.metrics import Metrics
from kfr_grpc.register.model import CallInfo
from kfr_grpc.register.service import Register
from kfr_grpc.register.statistics import LookupStatistics

INSTITUTION_SERVICE = kfr_pb2.DESCRIPTOR.services_by_name["InstitutionService"].full_name
LOOKUP_SERVICE = kfr_pb2.DESCRIPTOR.services_by_name["LookupService"].full_name
UNKNOWN_MANDATE = "(none)"
NOT_ALLOWED_MANDATE = "(not allowed)"


class RegisterRecorder:
    """Refusals go to the request log from a store thread: the record's fsync must not
    stall the event loop."""

    def __init__(
        self,
        register: Register,
        statistics: LookupStatistics,
        policy: AccessPolicy,
        blocking: Blocking,
    ) -> None:
        self._register = register
        self._statistics = statistics
        self._policy = policy
        self._blocking = blocking

    def record(self, call: FinishedCall) -> Awaitable[None] | None:
        if call.caller is None:
            return None  # no identity: nobody could ever ask for this record
        refused = call.code is not grpc.StatusCode.OK
        if call.service == INSTITUTION_SERVICE and refused and not call.over_limit:
            info = CallInfo(
                call.correlation_id, call.method, call.caller.org_number, call.caller.supplier
            )
            return self._blocking.run(
                self._register.record_refusal, info, call.code.name, call.message, call.rejections
            )
        if call.service == LOOKUP_SERVICE:
            self._statistics.count(call.caller.org_number, self._mandate(call), call.code.name)
        return None

    def _mandate(self, call: FinishedCall) -> str:
        """The mandate as the counters record it: only ever one configured for the agency."""
        mandate = getattr(call.request, "legal_mandate", None)
        if not isinstance(mandate, str) or not mandate.strip():
            return UNKNOWN_MANDATE
        assert call.caller is not None
        if not self._policy.is_agency(call.caller):
            return UNKNOWN_MANDATE
        if not self._policy.allows_mandate(call.caller, mandate.strip()):
            return NOT_ALLOWED_MANDATE
        if call.caller.supplier is not None:  # a vendor acting for the agency is named
            return f"{mandate.strip()} (supplier {call.caller.supplier})"
        return mandate.strip()


class MetricsRecorder:
    """Counts every call and its latency by method and status."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def record(self, call: FinishedCall) -> None:
        self._metrics.observe_call(call.method, call.code.name, call.seconds)
