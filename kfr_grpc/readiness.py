"""``kfr serve --ready-file PATH``: a small JSON file that says the server is serving and
where, written once it is (and removed when it stops).

A process manager, a test or a benchmark waits for the file instead of probing a port,
so it never races the server's bind, and it learns the port the server got (with
``listen = "host:0"``) and the metrics port. ``kfr serve --workers N`` writes it once
every worker serves, with each worker's pid, and again after it restarts one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_ready(path: Path, document: dict[str, Any]) -> None:
    """Replaces ``path`` in one step, so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document) + "\n", encoding="utf-8")
    temporary.replace(path)


def read_ready(path: Path) -> dict[str, Any] | None:
    """The file's document, or None while there is none."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def remove_ready(path: Path) -> None:
    path.unlink(missing_ok=True)
