"""No customer ID, in clear or pseudonymised, in logs, errors or the LMDB files."""

from __future__ import annotations

import logging

from kfr_grpc._proto import kfr_pb2 as pb
from kfr_grpc.keyring import Keyring
from tests.support import INSTITUTION_ORG, MANDATE, find_leaks
from tests.test_server import end, list_own, lookup, report, rpc_error

OWNER, DISPONENT = pb.ROLE_OWNER, pb.ROLE_DISPONENT


def test_the_leak_detector_sees_a_logged_id(caplog, ids):
    customer = ids.person()
    logging.getLogger("kfr.test").debug("oops %s", customer)
    assert find_leaks([customer], caplog) == [customer]
    caplog.clear()  # keep the autouse check for this test meaningful, not failing


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
    assert find_leaks(forms, caplog) == []


def test_lmdb_files_hold_no_reported_id(server, ids):
    used = _exercise(server, ids)
    server.stop()
    raw = b"".join(path.read_bytes() for path in server.data_dir.iterdir() if path.is_file())
    assert len(raw) > 0
    assert [value for value in used if value.encode() in raw] == []
