"""Prometheus metrics, served on their own plain-HTTP port (loopback by default).

No label ever carries customer data: labels are method names, status codes and nothing
else. Store figures are read when Prometheus scrapes, not on the request path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kfr_grpc.config import host_port
from kfr_grpc.errors import StoreClosed
from kfr_grpc.register.storage import Storage, StoreUsage

log = logging.getLogger("kfr.metrics")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    """The server's metrics in a registry of their own (no process-global state)."""

    def __init__(self, storage: Storage, usage: Callable[[], StoreUsage]) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "kfr_requests", "Calls answered, by method and status.", ["method", "status"],
            registry=self.registry,
        )  # fmt: skip
        self._latency = Histogram(
            "kfr_request_duration_seconds", "Time to answer a call, by method and status.",
            ["method", "status"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        # (method, status) -> its two series: a label lookup per call costs more than the
        # count. Bounded: the server's methods times the status codes.
        self._call_series: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self.purge_runs = Counter(
            "kfr_purge_runs", "Retention runs by this server.", registry=self.registry
        )
        self.purged_periods = Counter(
            "kfr_purged_periods", "Periods removed by retention.", registry=self.registry
        )
        self._certificate_expiry = Gauge(
            "kfr_server_certificate_expiry_timestamp_seconds",
            "When the server's TLS certificate expires (Unix time).",
            registry=self.registry,
        )
        self._enumeration = Counter(
            "kfr_enumeration_suspected",
            "Windows in which an agency's lookups looked like trying IDs one after another, "
            "by agency and reason (rate, empty_share).",
            ["agency", "reason"], registry=self.registry,
        )  # fmt: skip
        self.integrity_problems = Gauge(
            "kfr_store_integrity_problems",
            "Inconsistencies the last walk over the store found (kfr doctor --verify's).",
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(storage, usage))

    def enumeration_suspected(self, agency: str, reason: str) -> None:
        self._enumeration.labels(agency, reason).inc()

    def observe_calls_in_progress(self, count: Callable[[], int]) -> None:
        """``kfr_calls_in_progress``: the calls the server has taken in and not ended."""
        gauge = Gauge(
            "kfr_calls_in_progress", "Calls taken in and not yet ended.", registry=self.registry
        )
        gauge.set_function(count)

    def observe_call(self, method: str, status: str, seconds: float) -> None:
        series = self._call_series.get((method, status))
        if series is None:
            series = (self._requests.labels(method, status), self._latency.labels(method, status))
            self._call_series[(method, status)] = series
        series[0].inc()
        series[1].observe(seconds)

    def observe_certificate(self, certificate_pem: bytes) -> None:
        expiry = x509.load_pem_x509_certificate(certificate_pem).not_valid_after_utc
        self._certificate_expiry.set(expiry.timestamp())

    def serve(self, listen: str) -> tuple[object, int]:
        """Starts the HTTP endpoint on ``host:port``; returns the server and its port."""
        host, port = host_port(listen)
        server, _ = start_http_server(port, addr=host.strip("[]"), registry=self.registry)
        return server, server.server_port


class _StoreCollector(Collector):
    """Store figures, read at scrape time. A scrape that cannot read them fails (the
    endpoint answers 500 and the error is logged), except while the store is closing at
    shutdown, when there is nothing to report."""

    def __init__(self, storage: Storage, usage: Callable[[], StoreUsage]) -> None:
        self._storage = storage
        self._usage = usage

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self._storage.read() as view:
                total, active = view.relationship_count(), view.active_relationship_count()
            usage = self._usage()
        except StoreClosed:
            return
        except Exception:
            log.exception("reading the store's figures for a metrics scrape failed")
            raise
        used, size = usage.used_bytes, usage.capacity_bytes
        yield GaugeMetricFamily("kfr_relationships", "Relationships in the register.", total)
        yield GaugeMetricFamily(
            "kfr_relationships_active", "Relationships with an active period.", active
        )
        yield GaugeMetricFamily("kfr_store_used_bytes", "Bytes of the store in use.", used)
        yield GaugeMetricFamily("kfr_store_map_bytes", "Bytes the store's map allows.", size)
        yield GaugeMetricFamily(
            "kfr_store_map_used_ratio", "Share of the store's map in use.", used / size
        )
