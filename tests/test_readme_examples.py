"""The README's examples that talk to a server are run here, as written, against
``kfr serve`` on a fresh dev setup: the Python client of "Calling KFR from your code",
the ``buf curl`` commands of "Health and reflection" and the ``curl`` commands of
"REST: the operator's contract"."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import Served, run, served

__all__ = ["served"]  # the fixture
REPO = Path(__file__).resolve().parent.parent
BUF = REPO / "node_modules" / ".bin" / "buf"


AGENCY_SCOPES = "bits:kundeforhold bits:kundeforhold.konto"


def _block(after: str, language: str) -> str:
    """The first ``language`` code block of the README after the line starting ``after``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(after)
    match = re.search(rf"```{language}\n(.*?)```", text[start:], re.DOTALL)
    assert match, f"no {language} block after {after!r}"
    return match.group(1)


def _token(directory: Path, org: str, scope: str, who: str) -> str:
    minted = run(
        "dev", "token", "--org", org, "--scope", scope, "--dev", str(directory),
        "--cnf-cert", str(directory / f"{who}.crt"),
    )  # fmt: skip
    assert minted.exit_code == 0, minted.output
    return minted.output.strip()


def test_the_python_client_runs_as_written(served: Served, ids):
    directory = served.directory
    customer = ids.person()
    environment = {
        **os.environ,
        "KFR_TARGET": served.server.target, "KFR_CA": str(directory / "ca.crt"),
        "INSTITUTION_CERT": str(directory / "institution.crt"),
        "INSTITUTION_KEY": str(directory / "institution.key"),
        "INSTITUTION_TOKEN": _token(
            directory, "311000004", "bits:kundeforhold.write", "institution"
        ),
        "AGENCY_CERT": str(directory / "agency.crt"),
        "AGENCY_KEY": str(directory / "agency.key"),
        "AGENCY_TOKEN": _token(directory, "312000008", AGENCY_SCOPES, "agency"),
        "CUSTOMER_ID": customer,
    }  # fmt: skip
    code = _block("### Calling KFR from your code", "python")
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "registered 1"
    assert lines[1].startswith("INVALID_ARGUMENT ") and "correlation-id" in lines[1]
    assert lines[2].split() == ["relationships[0].customer_id", "CUSTOMER_ID_CHECKSUM"]
    assert lines[3] == "311000004 Testbanken KFR True"


def _run_as_written(served: Served, commands: str, *path: Path) -> str:
    """``commands`` run by bash (-euo pipefail) against ``served``'s dev setup, with the
    venv's ``kfr`` (and ``path``) first on PATH; returns what they printed."""
    environment = {
        **os.environ, "KFR_DEV": str(served.directory),
        "PATH": os.pathsep.join(
            (*map(str, path), str(Path(sys.executable).parent), os.environ["PATH"])
        ),
    }  # fmt: skip
    done = subprocess.run(
        [shutil.which("bash") or "bash", "-euo", "pipefail", "-c", commands],
        env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(
    not BUF.exists() and not os.environ.get("CI"),  # in CI, `make test` must have installed it
    reason="buf is installed by `make lint` (npm)",
)
def test_the_buf_curl_commands_run_as_written(served: Served):
    commands = _block("Server reflection (`grpc.reflection.v1alpha`) lets `buf curl`", "sh")
    port = served.server.target.rsplit(":", 1)[1]
    printed = _run_as_written(
        served, commands.replace("localhost:50051", f"localhost:{port}"), BUF.parent
    )
    assert "kfr.v1.LookupService" in printed and '"status": "SERVING"' in printed
    assert printed.rstrip().endswith("{}")  # the Lookup: nobody with that synthetic ID


def test_the_rest_curl_commands_run_as_written(served: Served):
    heading = "### REST: the operator's contract"
    commands = _block(heading, "sh")
    rest_port = served.server.ready["rest_port"]
    printed = _run_as_written(served, commands.replace("localhost:50053", f"localhost:{rest_port}"))
    text = (REPO / "README.md").read_text(encoding="utf-8")
    said = re.search(r"\nprints\n\n```\n(.*?)```", text[text.index(heading) :], re.DOTALL)
    assert said, "the README says what the commands print"
    assert printed == said.group(1)
