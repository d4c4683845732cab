"""Shared pieces of the ``kfr`` command: the group, options, error handling, store access."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import click

from kfr_grpc.clock import SystemClock
from kfr_grpc.config import Config, load_config
from kfr_grpc.errors import KfrError
from kfr_grpc.register.operations import Operations
from kfr_grpc.server import open_store, operations_for
from kfr_grpc.store import LmdbStore

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    required=True,
    envvar="KFR_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The server's TOML configuration file (env KFR_CONFIG).",
)

DEV_OPTION = click.option(
    "--dev",
    "dev_dir",
    default=str(Path("~/.kfr-dev")),
    envvar="KFR_DEV",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A `kfr dev init` directory, used to mint tokens (env KFR_DEV).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="kfr-grpc", prog_name="kfr")
def main() -> None:
    """KFR: the customer relationship register."""


def run() -> None:
    """The ``kfr`` command. A user never sees a traceback: an error the commands did not
    foresee still ends as one line naming what failed (with ``KFR_DEBUG=1``, the
    traceback too) and exit status 1."""
    try:
        main()
    except OSError as error:  # a file, directory or port
        where = f" {error.filename}" if error.filename else ""
        _exit_with(f"Error:{where}: {error.strerror or error}")
    except Exception as error:
        _exit_with(
            f"Error: unexpected {type(error).__name__}: {error} (KFR_DEBUG=1 shows where; "
            "please report it)"
        )


def _exit_with(message: str) -> NoReturn:
    if os.environ.get("KFR_DEBUG"):
        traceback.print_exc()
    click.echo(message, err=True)
    sys.exit(1)


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


@contextmanager
def kfr_errors() -> Iterator[None]:
    """Turns the register's errors into a one-line message and exit status 1."""
    try:
        yield
    except KfrError as error:
        fail(str(error))


def load(config_path: Path) -> Config:
    with kfr_errors():
        return load_config(config_path)


@contextmanager
def opened_store(config: Config, *, readonly: bool = False) -> Iterator[LmdbStore]:
    """The configured store, following keyring rotations, closed afterwards.
    ``readonly``: for commands that only read (they write nothing to the data directory)."""
    with kfr_errors():
        store = open_store(config, follow_keyring=True, readonly=readonly)
        try:
            yield store
        finally:
            store.close()


@contextmanager
def operations(config_path: Path, *, readonly: bool = False) -> Iterator[Operations]:
    config = load(config_path)
    with opened_store(config, readonly=readonly) as store:
        yield operations_for(config, store, SystemClock())
