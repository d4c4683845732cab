"""Processes a test run leaves behind: every process the run starts inherits a marker in
its environment (set when the run begins), so any that is still alive when the run ends,
even one whose parent died and whose parent is now init, is found and named."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

MARKER_VARIABLE = "KFR_TEST_RUN"


def mark_this_run() -> bytes:
    """Sets the marker that every process started from now on inherits."""
    marker = uuid.uuid4().hex
    os.environ[MARKER_VARIABLE] = marker
    return f"{MARKER_VARIABLE}={marker}".encode()


def left_behind(marker: bytes, *, grace_seconds: float = 5.0) -> list[str]:
    """The command lines of processes carrying ``marker`` still alive (other than this
    one) after ``grace_seconds``; they are killed."""
    deadline = time.monotonic() + grace_seconds
    while True:
        alive = _marked(marker)
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return [alive[pid] for pid in sorted(alive)]


def _marked(marker: bytes) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state == "Z":  # a zombie is gone but for its parent's wait
            continue
        if int(parent) == os.getpid() and "multiprocessing.resource_tracker" in command:
            continue  # this process's own tracker (in-process servers): it ends with it
        found[int(entry.name)] = command.strip()[:200]
    return found
