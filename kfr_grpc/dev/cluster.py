"""``kfr dev cluster``: a ready local cluster in one directory.

- the shared files of ``kfr dev init`` (CA, certificates, keyring, token signing key,
  JWKS), so ``kfr dev token --dev DIR`` and the client commands work against it;
- ``nodeN/kfr.toml`` (N from 1): each node's config, its own ports and data directory;
- ``etcdN/``: each etcd member's data directory;
- ``Procfile``: one ``name: command`` line per process (the foreman/honcho convention).

Ports from ``base_port``: node N serves on ``base + 2(N-1)`` and its metrics on the next
port, REST on ``base + 50 + (N-1)``; etcd member N takes ``base + 100 + 2(N-1)``
(clients) and the next (peers).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from kfr_grpc.dev.etcd import EtcdMember, LocalEtcd, find_etcd
from kfr_grpc.dev.setup import (
    CONFIG_NAME,
    DevSetup,
    config_text,
    register_test_institution,
    write_shared_files,
)
from kfr_grpc.errors import ConfigError

DEFAULT_BASE_PORT = 50100
ETCD_PORT_OFFSET = 100
REST_PORT_OFFSET = 50  # node N serves REST on base + 50 + (N-1)


@dataclass(frozen=True)
class DevCluster:
    directory: Path
    nodes: list[str]  # host:port of each node
    etcd: list[EtcdMember]

    @property
    def procfile(self) -> Path:
        return self.directory / "Procfile"

    def node_config(self, number: int) -> Path:
        return self.directory / f"node{number}" / CONFIG_NAME


def create_dev_cluster(
    directory: Path,
    *,
    nodes: int = 3,
    etcd_members: int = 3,
    base_port: int = DEFAULT_BASE_PORT,
    etcd_binary: Path | None = None,
    token: str = "kfr-dev-cluster",
) -> DevCluster:
    """Writes the directory (refusing one that has a Procfile) and registers the test
    institution through the log (etcd is started for that, then stopped)."""
    directory = directory.resolve()
    if (directory / "Procfile").exists():
        raise ConfigError(f"{directory} already holds a cluster; remove it to start afresh")
    if not 1 <= nodes <= 9 or not 1 <= etcd_members <= 9:
        raise ConfigError("--nodes and --etcd-members must be 1 to 9")
    if not 1024 <= base_port <= 65535 - ETCD_PORT_OFFSET - 20:
        raise ConfigError(f"--base-port {base_port} leaves no room for the cluster's ports")
    binary = find_etcd(etcd_binary)
    write_shared_files(DevSetup(directory))
    members = [
        EtcdMember(
            f"etcd{n}",
            directory / f"etcd{n}",
            base_port + ETCD_PORT_OFFSET + 2 * (n - 1),
            base_port + ETCD_PORT_OFFSET + 2 * (n - 1) + 1,
        )
        for n in range(1, etcd_members + 1)
    ]
    endpoints = ", ".join(f'"{member.endpoint}"' for member in members)
    cluster = DevCluster(directory, [], members)
    for n in range(1, nodes + 1):
        port = base_port + 2 * (n - 1)
        cluster.nodes.append(f"localhost:{port}")
        config = cluster.node_config(n)
        config.parent.mkdir(mode=0o700)
        section = f'\n[cluster]\nnode = "node{n}"\netcd_endpoints = [{endpoints}]\n'
        rest = f"127.0.0.1:{base_port + REST_PORT_OFFSET + n - 1}"
        text = config_text(
            f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}", rest, shared="../", cluster=section
        )
        config.write_text(text, encoding="utf-8")
    kfr = Path(sys.executable).parent / "kfr"
    lines = [f"{m.name}: {shlex.join(m.command(binary, members, token))}" for m in members]
    lines += [
        f"node{n}: {shlex.join([str(kfr), 'serve', '--config', str(cluster.node_config(n))])}"
        for n in range(1, nodes + 1)
    ]
    cluster.procfile.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with LocalEtcd.on(members, binary, token):
        register_test_institution(cluster.node_config(1))
    return cluster
