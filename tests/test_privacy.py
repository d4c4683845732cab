"""No customer ID, in clear or pseudonymised, in logs, errors or the LMDB files."""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

import pytest

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.dev.synthetic import regular_person_id, synthetic_person_id
from kfr_grpc.keyring import Keyring
from tests.leaks import find_leaks
from tests.support import INSTITUTION_ORG, MANDATE
from tests.test_server import end, list_own, lookup, report, rpc_error

OWNER, DISPONENT = pb.ROLE_OWNER, pb.ROLE_DISPONENT


def _record(message: str = "request done", args: tuple = (), **extra) -> logging.LogRecord:
    """A record as ``log.info(message, *args, extra=extra)`` makes it (not emitted, so the
    suite's own check of this test stays clean)."""
    record = logging.LogRecord("kfr.requests", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def _with_exception(text: str) -> logging.LogRecord:
    try:
        raise ValueError(text)
    except ValueError:
        record = _record("unexpected error")
        record.exc_info = sys.exc_info()
    return record


CHANNELS = ("message", "arguments", "extra field", "traceback", "server log file")


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("kind", ["issued person", "issued company", "unissued person"])
def test_the_leak_detector_catches_an_id_in_every_channel(channel, kind, ids, tmp_path: Path):
    rng = random.Random(hash((channel, kind)))
    value = {
        "issued person": ids.person,
        "issued company": ids.company,
        "unissued person": lambda: rng.choice([synthetic_person_id, regular_person_id])(rng),
    }[kind]()
    issued = ids.issued if kind.startswith("issued") else []
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    records = [_record(), _record("caller=%s", ("311000004",), correlation_id="c0ffee")]
    assert find_leaks(issued, records, log_dir) == []  # the control: clean lines pass
    planted = {
        "message": lambda: records.append(_record(f"oops {value}")),
        "arguments": lambda: records.append(_record("oops %s", (value,))),
        "extra field": lambda: records.append(_record(detail=value)),
        "traceback": lambda: records.append(_with_exception(f"bad id {value}")),
        "server log file": lambda: (log_dir / "kfr-serve.log").write_text(
            f'{{"message": "request", "detail": "{value}"}}\n'
        ),
    }
    planted[channel]()
    leaks = find_leaks(issued, records, log_dir)
    assert leaks and all(leak.value == value for leak in leaks)


def test_the_leak_detector_sees_an_id_written_with_spaces(ids):
    customer = ids.person()
    spaced = f"{customer[:6]} {customer[6:]}"
    assert find_leaks([customer], [_record(f"oops {spaced}")])


def test_a_correlation_id_that_happens_to_hold_such_digits_is_no_leak(ids):
    """Random hex has 11 digits in a row now and then; a correlation-id is no customer ID
    (the detector once failed a clean bench run on one)."""
    person = ids.person()
    correlation_id = f"7590fe92-bd3a-49ef-9f57-a{person}"
    assert find_leaks([], [_record(f"request correlation_id={correlation_id}")]) == []
    assert find_leaks([], [_record(f"request detail={person}")])


def _exercise(server, ids) -> list[str]:
    """Every RPC, in success and failure, at DEBUG; returns the IDs used."""
    institution = server.client(server.pki.institution)
    agency = server.client(server.pki.agency)
    person, company, stranger = ids.person(), ids.company(), ids.person()
    report(institution, INSTITUTION_ORG, (person, OWNER, "2020-01-01"), (company, OWNER, ""))
    report(institution, INSTITUTION_ORG, (person, DISPONENT, "2021-01-01"))
    end(institution, INSTITUTION_ORG, (person, OWNER, "2022-01-01"))
    list_own(institution, INSTITUTION_ORG, person)
    lookup(agency, person, legal_mandate=MANDATE)
    lookup(agency, company)
    broken = person[:-1] + str((int(person[-1]) + 1) % 10)
    rpc_error(report, institution, INSTITUTION_ORG, (broken, OWNER, ""))
    rpc_error(end, institution, INSTITUTION_ORG, (stranger, OWNER, ""))
    rpc_error(lookup, institution, person)  # not an agency
    rpc_error(lookup, agency, person, legal_mandate="not allowed")
    return [person, company, stranger, broken]


def test_no_id_or_pseudonym_in_any_log_line_at_debug(server, ids, caplog):
    used = _exercise(server, ids)
    request_lines = [r for r in caplog.records if r.name == "kfr.requests"]
    assert len(request_lines) >= 10, "the server's request log was not captured"
    keyring = Keyring.load(server.keyring_path)
    pseudonyms = [keyring.pseudonymiser().pseudonym(value) for value in used]
    forms = used + [p.hex() for p in pseudonyms] + [repr(p) for p in pseudonyms]
    assert find_leaks(forms, caplog.records) == []


def test_lmdb_files_hold_no_reported_id(server, ids):
    used = _exercise(server, ids)
    server.stop()
    raw = b"".join(path.read_bytes() for path in server.data_dir.iterdir() if path.is_file())
    assert len(raw) > 0
    assert [value for value in used if value.encode() in raw] == []
