"""A few seconds of the Locust SLA suite, over gRPC and over REST, so that the suite itself
cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("options", "names"),
    [
        (["--duration", "3"], ["grpc     Report", "grpc     Lookup"]),
        (["--duration", "5", "--rest"], ["REST report", "REST lookup"]),
    ],
    ids=["grpc", "rest"],
)
def test_the_sla_suite_runs_and_passes_briefly(options, names):
    result = subprocess.run(
        [sys.executable, "-m", "bench.sla", "--rate", "5", *options],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "SLA OK:" in output
    for name in names:
        assert name in output
