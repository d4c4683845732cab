"""A few seconds of the Locust SLA suite, so that the suite itself cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_sla_suite_runs_and_passes_briefly():
    result = subprocess.run(
        [sys.executable, "-m", "bench.sla", "--duration", "3", "--rate", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "SLA OK:" in output
    for name in ("Report", "Lookup"):
        assert f"grpc     {name}" in output


def test_the_rest_sla_suite_runs_and_passes_briefly():
    result = subprocess.run(
        [sys.executable, "-m", "bench.sla", "--duration", "5", "--rate", "5", "--rest"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "SLA OK:" in output
    for name in ("REST report", "REST lookup"):
        assert name in output
