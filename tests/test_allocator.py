"""The server's glibc malloc settings (see kfr_grpc.allocator for the measurement)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from kfr_grpc.allocator import ARENA_MAX, MMAP_THRESHOLD, tune_malloc

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8


class RecordingMallopt:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def __call__(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return self.answer


def test_both_settings_are_applied_by_default():
    mallopt = RecordingMallopt()
    applied = tune_malloc({}, mallopt)
    assert sorted(mallopt.calls) == sorted(
        [(M_ARENA_MAX, ARENA_MAX), (M_MMAP_THRESHOLD, MMAP_THRESHOLD)]
    )
    assert applied == {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 262144}


def test_an_operators_environment_variable_wins():
    mallopt = RecordingMallopt()
    applied = tune_malloc({"MALLOC_ARENA_MAX": "8"}, mallopt)
    assert mallopt.calls == [(M_MMAP_THRESHOLD, MMAP_THRESHOLD)]
    assert applied == {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}


def test_glibc_tunables_for_malloc_leave_everything_alone():
    mallopt = RecordingMallopt()
    assert tune_malloc({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}, mallopt) == {}
    assert mallopt.calls == []


def test_a_refused_setting_is_not_reported_as_applied():
    assert tune_malloc({}, RecordingMallopt(answer=0)) == {}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_accepts_the_settings():
    # In a child process: the test runner's own allocator stays as it is.
    script = (
        "import json; from kfr_grpc.allocator import tune_malloc; "
        "print(json.dumps(tune_malloc({})))"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(output) == {
        "MALLOC_ARENA_MAX": ARENA_MAX,
        "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD,
    }
