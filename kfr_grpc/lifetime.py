"""Processes that must not outlive the process that started them: the workers of
``kfr serve --workers N`` (their supervisor) and the bulk-load validation helpers (their
server).

A process started by another only learns of its parent's death by looking: when the
parent is killed (``kill -9``, the OOM killer, a crash), nothing else tells it, and it
would go on holding the port, memory and, for a worker, the store. ``follow_parent``
looks twice a second and, once the parent is gone, ends this process the way that suits
it: a worker drains like on SIGTERM, a helper just exits.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

_CHECK_SECONDS = 0.5


def follow_parent(parent_pid: int, on_orphaned: Callable[[], None]) -> None:
    """Calls ``on_orphaned`` (once, from a daemon thread) when ``parent_pid`` is no longer
    this process's parent."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            stop.wait(_CHECK_SECONDS)
        on_orphaned()

    stop = threading.Event()
    threading.Thread(target=watch, name="kfr-follow-parent", daemon=True).start()


def stop_when_orphaned(parent_pid: int) -> None:
    """A worker: SIGTERM to itself, so it drains and stops as when told to."""
    follow_parent(parent_pid, lambda: os.kill(os.getpid(), signal.SIGTERM))


def exit_when_orphaned(parent_pid: int) -> None:
    """A helper with nothing to finish: exits at once. (A process pool's initializer.)"""
    follow_parent(parent_pid, lambda: os._exit(0))
