"""A few seconds of the fuzzer (``make fuzz`` runs it for minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_fuzzer_finds_nothing_in_a_few_seconds():
    result = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--duration", "5s"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "OK: no INTERNAL or UNKNOWN" in output
    tried = next(line for line in output.splitlines() if line.startswith("inputs tried: "))
    assert int(tried.split(": ")[1].replace(",", "")) > 50
