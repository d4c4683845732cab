"""The contract check `make lint` runs: `buf breaking` against the last released contract
passes for the protos as they are and fails for a change that would break a client."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUF = REPO / "node_modules" / ".bin" / "buf"
RELEASE = REPO / "protos" / "release" / "kfr-v1.binpb"


def _breaking(workspace: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BUF), "breaking", str(workspace), "--against", str(RELEASE)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.skipif(
    not BUF.exists() and not os.environ.get("CI"),  # in CI, `make test` must have installed it
    reason="buf is installed by `make lint` (npm)",
)
def test_buf_breaking_passes_today_and_catches_a_removed_field(tmp_path: Path):
    workspace = tmp_path / "contract"
    shutil.copytree(REPO / "protos", workspace / "protos", ignore=shutil.ignore_patterns("release"))
    shutil.copy(REPO / "buf.yaml", workspace / "buf.yaml")
    assert _breaking(workspace).returncode == 0  # the control
    proto = workspace / "protos" / "kfr" / "v1" / "kfr.proto"
    lines = proto.read_text().splitlines()
    removed = [line for line in lines if "string legal_mandate" not in line]
    assert len(removed) < len(lines)
    proto.write_text("\n".join(removed) + "\n")
    broken = _breaking(workspace)
    assert broken.returncode != 0 and "legal_mandate" in broken.stdout + broken.stderr
