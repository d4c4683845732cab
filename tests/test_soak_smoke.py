"""A few seconds of the soak run (``make soak`` runs it for ten minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_soak_run_passes_briefly():
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--duration", "8s", "--warm-up", "3s",
         "--rate", "200"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "calls: 1,600; errors: 0" in output
    assert "SOAK OK" in output
