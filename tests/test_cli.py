"""The ``kfr`` command, including the README demo against a real ``kfr serve`` process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.common import start_server
from kfr_grpc.cli import main
from kfr_grpc.clock import FixedClock, SystemClock
from kfr_grpc.dev import pki
from kfr_grpc.dev.setup import (
    TEST_AGENCY_ORG,
    TEST_INSTITUTION_NAME,
    TEST_INSTITUTION_ORG,
    TEST_MANDATE,
    create_dev_setup,
)
from kfr_grpc.doctor import examine
from kfr_grpc.keyring import Keyring

KFR = str(Path(sys.executable).with_name("kfr"))


def run(*args: str, input: str | None = None):
    result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return result


def test_keys_init_writes_a_private_keyring_once(tmp_path: Path):
    path = tmp_path / "keyring.json"
    first = run("keys", "init", str(path))
    assert first.exit_code == 0, first.output
    assert path.stat().st_mode & 0o777 == 0o600
    assert Keyring.load(path).id in first.output
    second = run("keys", "init", str(path))
    assert second.exit_code == 1
    assert "refusing to overwrite" in second.output


def test_dev_init_makes_a_complete_setup(tmp_path: Path):
    directory = tmp_path / "dev"
    result = run("dev", "init", str(directory))
    assert result.exit_code == 0, result.output
    for name in (
        "ca.crt", "ca.key", "server.crt", "server.key", "institution.crt", "institution.key",
        "agency.crt", "agency.key", "keyring.json", "kfr.toml",
        "ca.crl", "jwks.json", "token-signing.key",
    ):  # fmt: skip
        assert (directory / name).is_file(), name
    private = ("ca.key", "server.key", "institution.key", "agency.key", "keyring.json")
    for key in (*private, "token-signing.key"):
        assert (directory / key).stat().st_mode & 0o077 == 0, key
    listed = run("institutions", "list", "--config", str(directory / "kfr.toml"))
    assert listed.exit_code == 0
    assert TEST_INSTITUTION_ORG in listed.output and TEST_INSTITUTION_NAME in listed.output
    again = run("dev", "init", str(directory))
    assert again.exit_code == 1 and "already exists" in again.output


def test_institutions_add_validates_and_refuses_duplicates(tmp_path: Path):
    run("dev", "init", str(tmp_path / "dev"))
    config = str(tmp_path / "dev" / "kfr.toml")
    added = run("institutions", "add", "313000001", "Andre bank", "--config", config)
    assert added.exit_code == 0 and "registered 313000001 Andre bank" in added.output
    again = run("institutions", "add", "313000001", "Andre bank", "--config", config)
    assert again.exit_code == 0 and "already registered: 313000001" in again.output
    renamed = run("institutions", "add", "313000001", "Nytt navn", "--config", config)
    assert renamed.exit_code == 1 and "already registered as 'Andre bank'" in renamed.output
    invalid = run("institutions", "add", "123456789", "Feil", "--config", config)
    assert invalid.exit_code == 1 and "org_number" in invalid.output


def test_dev_ids_are_synthetic_and_valid_in_test_mode_only():
    from datetime import date

    from kfr_grpc.register.customer_ids import parse_customer_id
    from kfr_grpc.register.values import InvalidValue

    result = run("dev", "ids", "--count", "5", "--seed", "3")
    values = result.output.split()
    assert len(values) == 5
    for value in values:
        parse_customer_id(value, allow_synthetic=True, today=date(2026, 6, 15))
        with pytest.raises(InvalidValue, match="test mode"):
            parse_customer_id(value, allow_synthetic=False, today=date(2026, 6, 15))


def test_admin_commands_explain_a_bad_config(tmp_path: Path):
    result = run("institutions", "list", "--config", str(tmp_path / "absent.toml"))
    assert result.exit_code == 1 and "does not exist" in result.output


# --- the demo against a real server process ---------------------------------------------------


class Served:
    """``kfr serve`` on a fresh dev setup, and the ``kfr`` client commands against it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.server = start_server(directory / "kfr.toml")
        self.stderr = ""

    def client(self, who: str, *args: str, input: str | None = None):
        command, *rest = args
        return run(command, *self.options(who), *rest, input=input)

    def options(self, who: str) -> list[str]:
        """The client options of a command run as ``who``."""
        return [
            "--target", self.server.target,
            "--ca", str(self.directory / "ca.crt"),
            "--cert", str(self.directory / f"{who}.crt"),
            "--key", str(self.directory / f"{who}.key"),
            "--dev", str(self.directory),
        ]  # fmt: skip

    def terminate(self) -> int:
        status = self.server.stop(timeout=20)
        self.stderr = self.server.log()
        return status


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    directory = tmp_path / "dev"
    init = run("dev", "init", str(directory), "--listen", "127.0.0.1:0")
    assert init.exit_code == 0, init.output
    served = Served(directory)
    yield served
    served.server.kill()


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_readme_demo_report_then_lookup(served: Served, ids):
    customer = ids.person()
    reported = served.client(
        "institution", "report", "--institution", TEST_INSTITUTION_ORG,
        "--start-date", "2024-01-15", "--kind", "payment_account", customer,
    )  # fmt: skip
    assert _json(reported) == {"registered_count": 1, "already_registered_count": 0}
    assert "correlation-id:" in reported.stderr

    found = served.client(
        "agency", "lookup", "--from", "2020-01-01", "--mandate", TEST_MANDATE, customer
    )
    assert _json(found) == {
        "institutions": [
            {
                "org_number": TEST_INSTITUTION_ORG,
                "name": TEST_INSTITUTION_NAME,
                "roles": ["ROLE_OWNER"],
                "active": True,
                "ownership_type": "OWNERSHIP_TYPE_PRIMARY_OWNER",
                "active_payment_account": True,
            }
        ],
        "joined_after_from_date": [
            {
                "org_number": TEST_INSTITUTION_ORG,
                "name": TEST_INSTITUTION_NAME,
                "joined_date": SystemClock().today().isoformat(),
                "closed_date": "",
                "has_collection_accounts": False,
            }
        ],
    }

    from_file = served.client(
        "agency", "lookup", "--from", "2020-01-01", "--mandate", TEST_MANDATE,
        "--ids-from", "-", input=customer + "\n",
    )  # fmt: skip
    assert _json(from_file) == _json(found)

    ended = served.client(
        "institution", "end", "--institution", TEST_INSTITUTION_ORG, "--ids-from", "-",
        input=customer + "\n",
    )  # fmt: skip
    assert _json(ended) == {"ended_count": 1, "already_ended_count": 0}

    own = served.client("institution", "list-own", "--institution", TEST_INSTITUTION_ORG, customer)
    (relationship,) = _json(own)["relationships"]
    assert relationship["role"] == "ROLE_OWNER"
    assert relationship["periods"][0]["start_date"] == "2024-01-15"
    assert relationship["periods"][0]["end_date"]  # ended today

    assert served.terminate() == 0, served.stderr
    assert "method=/kfr.v1.LookupService/Lookup" in served.stderr
    assert customer not in served.stderr, "a customer ID reached the server's log"
    if platform.libc_ver()[0] == "glibc" and not {"MALLOC_ARENA_MAX", "GLIBC_TUNABLES"} & set(
        os.environ
    ):
        assert "malloc: MALLOC_ARENA_MAX=2" in served.stderr  # kfr_grpc.allocator at work


def test_client_errors_exit_non_zero_with_status_and_correlation_id(served: Served, ids):
    denied = served.client("agency", "report", "--institution", TEST_AGENCY_ORG, ids.person())
    assert denied.exit_code == 1
    assert "PERMISSION_DENIED" in denied.output
    assert "correlation-id:" in denied.stderr


def test_an_institution_added_while_the_server_runs_can_report_at_once(served: Served, ids):
    directory = served.directory
    added = run(
        "institutions", "add", "313000001", "Andre bank", "--config", str(directory / "kfr.toml")
    )
    assert added.exit_code == 0, added.output
    ca = pki.Issued.load(directory / "ca.crt", directory / "ca.key")
    pki.issue_enterprise(ca, "313000001", "Andre bank").write(
        directory / "other.crt", directory / "other.key"
    )
    result = served.client("other", "report", "--institution", "313000001", ids.person())
    assert _json(result)["registered_count"] == 1


def test_serve_refuses_to_start_without_its_keyring(tmp_path: Path):
    directory = tmp_path / "dev"
    run("dev", "init", str(directory))
    os.remove(directory / "keyring.json")
    assert "kfr keys init" in _serve_fails(directory)


def test_serve_refuses_a_data_directory_of_another_keyring(tmp_path: Path):
    directory = tmp_path / "dev"
    run("dev", "init", str(directory))
    os.remove(directory / "keyring.json")
    Keyring.generate().save(directory / "keyring.json")
    data_file = directory / "data" / "data.mdb"
    before = data_file.read_bytes()
    assert "refusing to open it" in _serve_fails(directory)
    assert data_file.read_bytes() == before


def _serve_fails(directory: Path) -> str:
    """Runs ``kfr serve`` on the dev setup in ``directory``; returns what it said when it
    refused to start."""
    result = subprocess.run(
        [KFR, "serve", "--config", str(directory / "kfr.toml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    return result.stderr


def test_dev_token_revocation_and_explicit_tokens(served: Served, ids):
    directory = served.directory
    token = run(
        "dev", "token", "--org", TEST_INSTITUTION_ORG, "--scope", "bits:kundeforhold.write",
        "--cnf-cert", str(directory / "institution.crt"), "--dev", str(directory),
    ).output.strip()  # fmt: skip
    assert token.count(".") == 2
    result = served.client(
        "institution", "report", "--institution", TEST_INSTITUTION_ORG, "--token", token,
        ids.person(),
    )  # fmt: skip
    assert _json(result)["registered_count"] == 1
    read_only = run(
        "dev", "token", "--org", TEST_INSTITUTION_ORG, "--scope", "bits:kundeforhold",
        "--dev", str(directory),
    ).output.strip()  # fmt: skip
    denied = served.client(
        "institution", "report", "--institution", TEST_INSTITUTION_ORG, "--token", read_only,
        ids.person(),
    )  # fmt: skip
    assert denied.exit_code == 1 and "PERMISSION_DENIED" in denied.output

    revoked = run("dev", "revoke", str(directory / "institution.crt"), "--dev", str(directory))
    assert revoked.exit_code == 0, revoked.output
    deadline = time.monotonic() + 5  # the dev server looks at its files once a second
    while True:
        result = served.client(
            "institution", "report", "--institution", TEST_INSTITUTION_ORG, ids.person()
        )
        if result.exit_code != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result.exit_code == 1
    assert "UNAUTHENTICATED: the client certificate has been revoked" in result.output

    restored = run("dev", "unrevoke", str(directory / "institution.crt"), "--dev", str(directory))
    assert restored.exit_code == 0, restored.output
    deadline = time.monotonic() + 5
    while True:
        result = served.client(
            "institution", "report", "--institution", TEST_INSTITUTION_ORG, ids.person()
        )
        if result.exit_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result.exit_code == 0, result.output  # the certificate works again


def test_client_commands_without_token_or_dev_setup_say_what_to_do(tmp_path: Path, ids):
    run("dev", "init", str(tmp_path / "dev"))
    directory = tmp_path / "dev"
    result = run(
        "lookup", "--ca", str(directory / "ca.crt"), "--cert", str(directory / "agency.crt"),
        "--key", str(directory / "agency.key"), "--dev", str(tmp_path / "nothing-here"),
        "--mandate", TEST_MANDATE, ids.person(),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "pass --token" in result.output


def test_operator_commands_against_a_running_server(served: Served, ids, tmp_path: Path):
    config = str(served.directory / "kfr.toml")
    customer = ids.person()
    reported = served.client("institution", "report", "--institution", TEST_INSTITUTION_ORG,
                             "--start-date", "2020-01-01", "--correlation-id",
                             "6f1c2f3e-1111-4a4a-9b9b-123456789abc", customer)  # fmt: skip
    assert _json(reported)["registered_count"] == 1

    # Keys rotate under the running server; it keeps reading and writing.
    for command in (["keys", "rotate"], ["keys", "rotate", "--pseudonym"], ["keys", "reseal"],
                    ["keys", "repseudonymise"]):  # fmt: skip
        result = run(*command, "--config", config)
        assert result.exit_code == 0, result.output
    assert "retired pseudonym key versions: 1" in result.output
    found = served.client(
        "agency", "lookup", "--from", "2020-01-01", "--mandate", TEST_MANDATE, customer
    )
    assert _json(found)["institutions"][0]["org_number"] == TEST_INSTITUTION_ORG
    assert _json(served.client("institution", "report", "--institution", TEST_INSTITUTION_ORG,
                               ids.person()))["registered_count"] == 1  # fmt: skip

    # The request log of the first call, through the client command.
    log = _json(served.client("institution", "request-log", "--institution", TEST_INSTITUTION_ORG,
                              "6f1c2f3e-1111-4a4a-9b9b-123456789abc"))  # fmt: skip
    assert log["records"][0]["counts"] == {"registered": 1, "already_registered": 0}

    # Collection accounts.
    accounts = ["86011117947", "12345678903"]
    command = ["institutions", "collection-accounts", TEST_INSTITUTION_ORG]
    assert run(*command, "--set", *accounts, "--config", config).output.split() == accounts
    assert run(*command, "--config", config).output.split() == accounts
    owner = served.client("agency", "lookup-account", "--mandate", TEST_MANDATE, "8601.11.17947")
    assert _json(owner)["institutions"] == [
        {"org_number": TEST_INSTITUTION_ORG, "name": TEST_INSTITUTION_NAME}
    ]

    # Retention and closure.
    dry = run("purge", "--dry-run", "--config", config)
    assert dry.exit_code == 0 and dry.output.startswith("would remove 0 periods")
    closed = run(
        "institutions", "close", TEST_INSTITUTION_ORG, "--date", "2026-01-31", "--config", config
    )
    assert closed.exit_code == 1 and "before the start" in closed.output  # one began today
    today = SystemClock().today().isoformat()  # the register's (Norwegian) today
    closed = run("institutions", "close", TEST_INSTITUTION_ORG, "--date", today, "--config", config)
    assert closed.exit_code == 0 and "2 active relationships ended" in closed.output
    listed = run("institutions", "list", "--config", config).output
    assert listed.startswith("org_number\tregistered\tclosed\tname\n")
    assert f"{TEST_INSTITUTION_ORG}\t{today}\t{today}\t{TEST_INSTITUTION_NAME}" in listed
    refused = served.client(
        "institution", "report", "--institution", TEST_INSTITUTION_ORG, ids.person()
    )
    assert refused.exit_code == 1 and "closed on" in refused.output

    # Backups: taken while it runs; a restore must wait for it to stop.
    backup_dir = tmp_path / "backup"
    assert run("backup", str(backup_dir), "--config", config).exit_code == 0
    refused = run("restore", str(backup_dir), "--config", config)
    assert refused.exit_code == 1 and "is in use" in refused.output
    assert served.terminate() == 0  # stores the lookup counters on the way out
    counts = run("lookup-counts", "--config", config)
    assert counts.output.startswith("day\tagency\tmandate\toutcomes\n")
    assert f"{TEST_AGENCY_ORG}\t{TEST_MANDATE}\tOK=2" in counts.output
    assert run("restore", str(backup_dir), "--config", config).exit_code == 0


def test_report_file_loads_a_batch_file_and_names_the_lines_it_rejected(
    served: Served, ids, tmp_path: Path
):
    good = [ids.person() for _ in range(5)]
    broken = good[0][:-1] + str((int(good[0][-1]) + 1) % 10)
    batch = tmp_path / "load.txt"
    batch.write_text(
        f"{good[0]}#2020-01-01,{good[1]},\n{broken}#2020-01-01,\n{good[2]}#2099-01-01,{good[3]}\n"
    )
    result = served.client("institution", "report-file", "--institution", TEST_INSTITUTION_ORG,
                           "--chunk-size", "2", str(batch))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "accepted 3 entries (registered 3, already registered 0) in 3 chunks; rejected 2" in (
        result.stdout
    )
    assert "line 2, entry 3: customer_id: is not a valid fødselsnummer or D-number (check " in (
        result.stdout
    )
    assert "line 3, entry 4: start_date: is in the future [DATE_IN_FUTURE]" in result.stdout
    assert not any(value in result.output for value in [*good, broken])

    csv_file = tmp_path / "load.csv"
    csv_file.write_text(
        f"customer_id,role,start_date\n{good[4]},disponent,2021-01-01\n{good[0]},owner\n"
    )
    result = served.client("institution", "report-file", "--institution", TEST_INSTITUTION_ORG,
                           str(csv_file))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "registered 1, already registered 1" in result.stdout


def test_kinds_primary_owners_and_participants_from_the_command_line(served: Served, ids):
    customer = ids.person()
    for kind in ("loan", "payment_account"):
        reported = served.client(
            "institution", "report", "--institution", TEST_INSTITUTION_ORG, "--kind", kind,
            "--start-date", "2024-01-15", customer,
        )  # fmt: skip
        assert _json(reported)["registered_count"] == 1
    ended = served.client("institution", "end", "--institution", TEST_INSTITUTION_ORG,
                          "--kind", "loan", customer)  # fmt: skip
    assert _json(ended)["ended_count"] == 1
    listed = _json(served.client("institution", "list-own", "--institution",
                                 TEST_INSTITUTION_ORG, customer))  # fmt: skip
    assert [(r["kind"], r["periods"][0]["end_date"] != "") for r in listed["relationships"]] == [
        ("PRODUCT_KIND_PAYMENT_ACCOUNT", False), ("PRODUCT_KIND_LOAN", True),
    ]  # fmt: skip
    found = _json(served.client("agency", "lookup", "--from", "2020-01-01", "--mandate",
                                TEST_MANDATE, "--only-primary-owner", customer))  # fmt: skip
    assert [(i["ownership_type"], i["active_payment_account"]) for i in found["institutions"]] == [
        ("OWNERSHIP_TYPE_PRIMARY_OWNER", True)
    ]
    participants = _json(served.client("agency", "participants"))["participants"]
    assert [p["org_number"] for p in participants if p["joined_date"]] == [TEST_INSTITUTION_ORG]


def test_kfr_reconcile_compares_applies_and_is_run_again_after_a_kill(
    served: Served, ids, tmp_path: Path
):
    current = [ids.person() for _ in range(5)]
    leaver = ids.person()
    reported = tmp_path / "reported.csv"
    reported.write_text(
        "".join(f"{c},owner,2020-01-01,payment_account\n" for c in [*current[:3], leaver])
    )
    loaded = served.client("institution", "report-file", "--institution", TEST_INSTITUTION_ORG,
                           str(reported))  # fmt: skip
    assert loaded.exit_code == 0, loaded.output
    whole = tmp_path / "all.txt"  # the batch format, with the kind as the entries' suffix
    whole.write_text(",".join(f"{c}##payment_account" for c in current) + "\n")

    compared = served.client("institution", "reconcile", "--institution", TEST_INSTITUTION_ORG,
                             str(whole))  # fmt: skip
    assert compared.exit_code == 2, compared.output
    assert (
        "matched 3; missing from the register 2; active in the register but not in the file 1"
        in compared.stdout
    )
    assert "line 1, entry 4: missing from the register" in compared.stdout
    assert "nothing was changed: run again with --apply" in compared.stdout
    assert not any(value in compared.output for value in [*current, leaver])

    # With --apply, an unreadable line stops it before anything is sent.
    typo = tmp_path / "typo.txt"
    typo.write_text(",".join(f"{c}##payment_account" for c in current) + f",{leaver}##loans\n")
    refused = served.client("institution", "reconcile", "--institution", TEST_INSTITUTION_ORG,
                            "--apply", str(typo))  # fmt: skip
    assert refused.exit_code == 1 and "1 lines of typo.txt cannot be read (line 1: kind" in (
        refused.output
    )
    assert "correlation-id" not in refused.output  # nothing was sent

    # A long reconciliation killed part way, then run again: the same end state.
    many = [ids.person() for _ in range(20_000)]
    big = tmp_path / "big.txt"
    big.write_text(",".join(f"{c}##payment_account" for c in [*current, *many]) + "\n")
    command = [KFR, "reconcile", *served.options("institution"), "--institution",
               TEST_INSTITUTION_ORG, "--apply", "--chunk-size", "100", str(big)]  # fmt: skip
    killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    killed.kill()
    assert killed.wait(timeout=10) == -9
    applied = served.client("institution", "reconcile", "--institution", TEST_INSTITUTION_ORG,
                            "--apply", str(big))  # fmt: skip
    assert applied.exit_code == 0, applied.output
    assert "applied: reported" in applied.stdout  # what the killed run had not done
    again = served.client("institution", "reconcile", "--institution", TEST_INSTITUTION_ORG,
                          str(big))  # fmt: skip
    assert again.exit_code == 0, again.output
    assert (
        "matched 20,005; missing from the register 0; active in the register but not in "
        "the file 0" in again.stdout
    )


def test_doctor_checks_a_deployment(served: Served):
    config = str(served.directory / "kfr.toml")
    healthy = run("doctor", "--config", config, "--target", served.server.target, "--verify")
    assert healthy.exit_code == 0, healthy.output
    for subject in ("config", "keyring", "data directory", "store integrity",
                    "server certificate", "client CA bundle", "token keys", "server"):  # fmt: skip
        assert f"OK   {subject}:" in healthy.output
    assert "says SERVING" in healthy.output
    served.terminate()
    (served.directory / "keyring.json").chmod(0o644)
    sick = run("doctor", "--config", config, "--target", served.server.target)
    assert sick.exit_code == 1
    assert "FAIL keyring:" in sick.output and "chmod 600" in sick.output
    assert "FAIL server:" in sick.output and "UNAVAILABLE" in sick.output


def test_doctor_reports_a_broken_config(tmp_path: Path):
    (tmp_path / "kfr.toml").write_text("listen = ")
    result = run("doctor", "--config", str(tmp_path / "kfr.toml"))
    assert result.exit_code == 1 and result.output.startswith("FAIL config:")


def test_doctor_judges_certificates_at_its_clock(tmp_path: Path):
    setup = create_dev_setup(tmp_path / "dev")
    now = datetime.now(UTC)

    def server_certificate(days_ahead: int) -> str:
        findings = examine(setup.config, None, FixedClock(now + timedelta(days=days_ahead)))
        (finding,) = [f for f in findings if f.subject == "server certificate"]
        return str(finding)

    assert server_certificate(0).startswith("OK   server certificate: valid until")
    assert server_certificate(810).startswith("WARN server certificate: valid until")
    assert server_certificate(900).startswith("FAIL server certificate: expired")


def test_a_wrong_ca_is_named_and_the_servers_log_stays_its_own(served: Served, ids):
    """A --ca that did not issue the server's certificate: the error says so, naming the
    file. The handshakes the server refuses leave no raw gRPC lines in its log."""
    import re
    import subprocess

    directory = served.directory
    done = subprocess.run(
        [KFR, "list-own", "--target", served.server.target, "--dev", str(directory),
         "--ca", str(directory / "institution.crt"), "--cert", str(directory / "institution.crt"),
         "--key", str(directory / "institution.key"), "--institution", TEST_INSTITUTION_ORG,
         ids.person()],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"does not chain to --ca {directory / 'institution.crt'}" in done.stderr
    _connect_without_a_certificate(served.server.target, directory / "ca.crt")
    assert served.terminate() == 0
    raw = [line for line in served.stderr.splitlines() if re.match(r"[IWE]\d{4} ", line)]
    assert raw == []


def _connect_without_a_certificate(target: str, ca: Path) -> None:
    """A TLS client that presents no certificate: the server refuses the handshake."""
    import socket
    import ssl

    host, port = target.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass  # refused, as it should be
    time.sleep(0.5)  # the server has logged whatever it logs about it
