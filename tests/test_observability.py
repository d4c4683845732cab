"""Metrics and structured logs."""

from __future__ import annotations

import json
import logging
import re

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.logs import BackgroundHandler, JsonFormatter
from tests.support import INSTITUTION_ORG
from tests.test_server import end, lookup, report, rpc_error

OWNER = pb.ROLE_OWNER


def _value(text: str, name: str, **labels: str) -> float:
    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(f"{name}{{{label}}}" if label else name) + r" ([0-9.e+-]+)"
    found = re.search(rf"^{pattern}$", text, re.M)
    assert found, f"{name} {labels} not in the metrics"
    return float(found.group(1))


def test_metrics_count_calls_relationships_and_store(server_factory, ids):
    server = server_factory(metrics=True)
    institution = server.client(server.pki.institution)
    customers = [ids.person() for _ in range(3)]
    report(institution, INSTITUTION_ORG, *[(c, OWNER, "2020-01-01") for c in customers])
    end(institution, INSTITUTION_ORG, (customers[0], OWNER, "2021-01-01"))
    lookup(server.client(server.pki.agency), customers[1])
    rpc_error(report, institution, INSTITUTION_ORG, ("12", OWNER, ""))

    text = server.metrics()
    report_method = "/kfr.v1.InstitutionService/Report"
    assert _value(text, "kfr_requests_total", method=report_method, status="OK") == 1
    assert _value(text, "kfr_requests_total", method=report_method, status="INVALID_ARGUMENT") == 1
    assert _value(
        text, "kfr_request_duration_seconds_count",
        method="/kfr.v1.LookupService/Lookup", status="OK",
    ) == 1  # fmt: skip
    assert _value(text, "kfr_relationships") == 3
    assert _value(text, "kfr_relationships_active") == 2
    assert _value(text, "kfr_store_used_bytes") > 0
    assert 0 < _value(text, "kfr_store_map_used_ratio") < 1
    assert _value(text, "kfr_server_certificate_expiry_timestamp_seconds") > 1.7e9
    assert not any(customer in text for customer in customers)
    labels = set(re.findall(r'(\w+)="', text))
    assert labels <= {"method", "status", "le"}


def test_the_active_count_follows_every_change(server_factory, ids):
    from kfr_grpc.register.operations import Operations

    server = server_factory(metrics=True)
    institution = server.client(server.pki.institution)
    customers = [ids.person() for _ in range(4)]
    report(institution, INSTITUTION_ORG, *[(c, OWNER, "2000-01-01") for c in customers])
    report(institution, INSTITUTION_ORG, (customers[0], pb.ROLE_DISPONENT, "2001-01-01"))
    end(institution, INSTITUTION_ORG, (customers[1], OWNER, "2010-01-01"))
    assert _value(server.metrics(), "kfr_relationships_active") == 4
    Operations(server.server.store, server.clock).close_institution(INSTITUTION_ORG, "2026-06-01")
    assert _value(server.metrics(), "kfr_relationships_active") == 0
    Operations(server.server.store, server.clock).purge()  # customers[1] ended 2010: purged
    text = server.metrics()
    assert (_value(text, "kfr_relationships"), _value(text, "kfr_relationships_active")) == (4, 0)


def test_json_log_lines_carry_the_request_fields():
    record = logging.LogRecord(
        "kfr.requests", logging.INFO, __file__, 1, "request %s", ("x",), None
    )
    record.method, record.caller, record.status, record.duration_ms = "/m", "311000004", "OK", 1.5
    record.correlation_id = "c0ffee"
    line = json.loads(JsonFormatter(worker=2).format(record))
    assert line["message"] == "request x" and line["worker"] == 2
    expected = {
        "method": "/m", "caller": "311000004", "status": "OK", "duration_ms": 1.5,
        "correlation_id": "c0ffee",
    }  # fmt: skip
    assert {key: line[key] for key in expected} == expected
    assert line["time"].endswith("+00:00") and line["level"] == "INFO"


def test_the_background_handler_writes_in_order_with_the_arguments_as_they_were():
    """The server's lines leave from a writer thread: in order, each message as it was
    when logged (a later change to an argument does not show), a warning at once, and
    whatever is left when the handler closes."""
    import io

    stream = io.StringIO()
    handler = BackgroundHandler(stream, interval=60)  # no timed write during the test
    logger = logging.getLogger("kfr.test.background")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    try:
        mutable = ["before"]
        logger.info("first %s", mutable)
        mutable[0] = "after"
        logger.info("second")
        assert stream.getvalue() == ""  # handed over, not yet written
        logger.warning("third")
        assert stream.getvalue().splitlines() == ["first ['before']", "second", "third"]
        logger.info("fourth")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert stream.getvalue().splitlines()[-1] == "fourth"


def test_streams_are_counted_and_logged_with_the_status_the_client_saw(server_factory, caplog):
    import uuid

    import grpc

    server = server_factory(metrics=True)
    channel = server.client(server.pki.agency).channel
    reflect = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    )
    correlation = str(uuid.uuid4())
    responses = reflect(
        iter([b"\xff\xff\xff\xff\x0f"]), metadata=(("correlation-id", correlation),)
    )
    error = rpc_error(list, responses)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    text = server.metrics()
    method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    assert _value(text, "kfr_requests_total", method=method, status="INVALID_ARGUMENT") == 1
    assert f'kfr_requests_total{{method="{method}",status="OK"}}' not in text
    (line,) = [r for r in caplog.records if getattr(r, "method", None) == method]
    assert (line.status, line.correlation_id) == ("INVALID_ARGUMENT", correlation)


def test_a_stream_the_client_leaves_is_recorded_as_cancelled(server_factory, caplog):
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = server_factory(metrics=True)
    health = health_pb2_grpc.HealthStub(server.client(server.pki.agency).channel)
    watch = health.Watch(health_pb2.HealthCheckRequest())
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    method = "/grpc.health.v1.Health/Watch"
    deadline = time.monotonic() + 10
    while not [r for r in caplog.records if getattr(r, "method", None) == method]:
        assert time.monotonic() < deadline, "the cancelled Watch was never logged"
        time.sleep(0.02)
    (line,) = [r for r in caplog.records if getattr(r, "method", None) == method]
    assert line.status == "CANCELLED"
    assert _value(server.metrics(), "kfr_requests_total", method=method, status="CANCELLED") == 1


def test_a_lookups_log_line_carries_no_duration(server, ids, caplog):
    """How long a lookup took grows a little with what it found: its line omits it."""
    from tests.test_server import lookup

    lookup(server.client(server.pki.agency), ids.person())
    method = "/kfr.v1.LookupService/Lookup"
    (line,) = [r for r in caplog.records if getattr(r, "method", None) == method]
    assert line.duration_ms is None
    assert "duration_ms=-" in line.getMessage()
