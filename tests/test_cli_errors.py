"""No traceback ever reaches a user of ``kfr``: every command, run as a user would (the
real entry point, in a process of its own) with no arguments, with files and directories
that do not exist, and with files of the wrong kind, ends in a message and never in a
Python traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest

from kfr_grpc.cli import main

REPO = Path(__file__).resolve().parent.parent
WRONG_KIND = str(REPO / "README.md")  # exists, but is no config, certificate, key or CRL
_TEXT = {
    "org_number": "311000004", "institution": "311000004", "name": "Bank", "mandate": "m",
    "scope": "x", "day": "2020-01-01", "kek_spec": "file:/nonexistent/kek", "node": "n1",
    "customer_id": "not-an-id", "customer_ids": "not-an-id", "account_number": "1",
    "logged_id": "not-a-uuid", "accounts": "1",
}  # fmt: skip


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _arguments(command: click.Command, missing: str, wrong: str | None) -> list[str]:
    """Every required parameter, filled: text with something plausible, files and
    directories with ``missing`` (or ``wrong``: a file of the wrong kind) paths."""
    arguments: list[str] = []
    options: list[str] = []
    for parameter in command.params:
        if not parameter.required:
            continue
        kind = getattr(parameter.type, "name", "")
        if kind in ("file", "directory", "path"):
            value = wrong if wrong is not None else f"{missing}/{parameter.name}"
            if kind == "directory" and wrong is not None:
                value = wrong  # a file where a directory belongs
        else:
            value = _TEXT.get(parameter.name or "", "x")
        if isinstance(parameter, click.Argument):
            arguments.append(value)
        else:
            options += [parameter.opts[0], value]
    if any(p.name == "target" for p in command.params):
        options += ["--target", "127.0.0.1:1"]
    return [*options, *arguments]


def _cases(tmp: Path) -> list[list[str]]:
    cases = []
    for path, command in _commands(main):
        cases.append([*path])
        cases.append([*path, *_arguments(command, str(tmp / "missing"), None)])
        cases.append([*path, *_arguments(command, str(tmp / "missing"), WRONG_KIND)])
    return cases


@pytest.mark.timeout(600)
def test_no_command_shows_a_traceback_for_bad_arguments_files_or_directories(tmp_path: Path):
    environment = {
        **os.environ, "HOME": str(tmp_path), "KFR_DEV": str(tmp_path / "no-dev"),
        "KFR_CONFIG": "", "KFR_TARGET": "127.0.0.1:1",
    }  # fmt: skip
    environment.pop("KFR_CONFIG")

    def run(arguments: list[str]) -> tuple[list[str], subprocess.CompletedProcess]:
        completed = subprocess.run(
            [sys.executable, "-m", "kfr_grpc.cli", *arguments],
            capture_output=True, text=True, timeout=60, env=environment, cwd=tmp_path,
        )  # fmt: skip
        return arguments, completed

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, _cases(tmp_path)))
    tracebacks = [
        " ".join(arguments) for arguments, done in results
        if "Traceback" in done.stdout + done.stderr
    ]  # fmt: skip
    silent_failures = [
        " ".join(arguments) for arguments, done in results
        if done.returncode != 0 and not (done.stdout + done.stderr).strip()
    ]  # fmt: skip
    unforeseen = [  # caught only by the entry point's last resort: say what to do instead
        f"{' '.join(arguments)}: {done.stderr.strip()}" for arguments, done in results
        if "unexpected" in done.stderr
    ]  # fmt: skip
    assert tracebacks == [] and silent_failures == []
    assert unforeseen == []
    assert len(results) > 90  # every command, three ways


def test_a_wrong_client_file_is_named(tmp_path: Path):
    """The certificate given as key or key as certificate, a key of another certificate, a
    CA bundle that is no certificate: one line naming the file, before any connection."""
    dev = tmp_path / "dev"
    kfr = [sys.executable, "-m", "kfr_grpc.cli"]
    subprocess.run([*kfr, "dev", "init", str(dev), "--listen", "127.0.0.1:0"], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    cases = {
        "is not a PEM certificate": ("institution.key", "institution.key", "ca.crt"),
        "is not the key of --cert": ("institution.crt", "agency.key", "ca.crt"),
        "holds no PEM certificate": ("institution.crt", "institution.key", "kfr.toml"),
        "is not an unencrypted PEM private key": ("institution.crt", "ca.crt", "ca.crt"),
    }
    for expected, (cert, key, ca) in cases.items():
        done = subprocess.run(
            [*kfr, "list-own", "--dev", str(dev), "--cert", str(dev / cert), "--key",
             str(dev / key), "--ca", str(dev / ca), "--institution", "311000004",
             "--target", "127.0.0.1:1", "not-an-id"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1 and expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "tls_security_connector" not in done.stderr


def test_dev_commands_say_what_is_missing_and_write_nothing_on_a_bad_port(tmp_path: Path):
    kfr = [sys.executable, "-m", "kfr_grpc.cli"]
    missing = tmp_path / "no-dev"
    expectations = {
        ("dev", "token", "--org", "311000004", "--scope", "x", "--dev", str(missing)):
            f"no dev setup in {missing}: run `kfr dev init {missing}` first",
        ("dev", "revoke", str(REPO / "README.md"), "--dev", str(missing)):
            f"no dev setup in {missing}",
        ("dev", "init", str(tmp_path / "dev"), "--listen", "127.0.0.1:65535"):
            "--listen port 65535 leaves no port + 1 for metrics",
        ("dev", "init", "/proc/no/such/place"): "cannot create /proc/no/such/place",
    }  # fmt: skip
    for arguments, expected in expectations.items():
        done = subprocess.run([*kfr, *arguments], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and expected in done.stderr, (arguments, done.stderr)
    assert not (tmp_path / "dev").exists()  # the bad port was refused before writing anything
    version = subprocess.run([*kfr, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("kfr, version ")
