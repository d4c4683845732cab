"""Files that hold secrets: private to their owner, and surviving a power cut."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kfr_grpc.errors import ConfigError


def sync_directory(directory: Path) -> None:
    """fsync ``directory``, so that a file created, renamed or replaced in it stays so."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def require_private(path: Path, what: str, missing: str = "") -> None:
    """Refuses (``ConfigError``) a secret file ``path`` that is missing (``missing`` says
    what to do) or that group or others can access."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist{missing}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what} {path} is accessible to group or others (mode {stat.filemode(mode)}); "
            f"run `chmod 600 {path}`"
        )
