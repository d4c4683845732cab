"""Two rounds of the chaos run (``make chaos ROUNDS=N`` runs more): three etcd members and
three nodes under load, one of them killed -9 and restarted each round, every node's
store checked against what the clients were told."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_two_rounds_of_chaos_lose_nothing_and_show_nothing_refused():
    # Seed 3 kills a node in the first round and an etcd member in the second.
    result = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--rounds", "2", "--round-seconds", "4",
         "--seed", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "CHAOS OK" in output
    rounds = re.findall(r"round \d: killed (\w+?)\d;.*; OK", output)
    assert rounds == ["node", "etcd"], output
    acknowledged = re.search(r"([\d,]+) relationships acknowledged", output)
    assert acknowledged and int(acknowledged.group(1).replace(",", "")) > 100, output
