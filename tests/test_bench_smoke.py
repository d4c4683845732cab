"""A short run of each benchmark, gating on the smoke targets (``make bench`` and
``make bench-scale`` run them in full with the issue's targets): a bench that misses its
targets exits non-zero, and this test fails with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("module", "verdict"), [("capacity", "CAPACITY"), ("scale", "SCALE")])
def test_the_bench_meets_its_smoke_targets(module: str, verdict: str):
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--smoke"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"{verdict} OK (smoke targets)" in output
    assert "| NO |" not in output


def test_the_cluster_bench_runs_and_meets_its_targets_briefly():
    result = subprocess.run(
        [sys.executable, "-m", "bench.cluster_bench", "--smoke"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "CLUSTER BENCH OK" in output
    assert "catch-up of a restarted node" in output


def test_the_compaction_bench_runs_briefly_without_a_failed_call():
    result = subprocess.run(
        [sys.executable, "-m", "bench.compaction", "--relationships", "20000"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "COMPACTION OK" in output and "| failed calls | 0 |" in output
