"""A local cluster for the cluster benches and the chaos run: ``kfr dev cluster`` in a
temporary directory, its etcd members and nodes as processes of their own (nodes through
``start_server``: waited for through their ready files), and ways to kill and restart any
one of them."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import ServerProcess, start_server
from kfr_grpc.cluster.connect import etcd_client
from kfr_grpc.cluster.log import ReplicatedLog
from kfr_grpc.config import load_config
from kfr_grpc.dev.clients import Clients
from kfr_grpc.dev.cluster import DevCluster, create_dev_cluster
from kfr_grpc.dev.etcd import LocalEtcd, find_etcd, unused_ports
from kfr_grpc.dev.setup import DevSetup


@dataclass
class LocalCluster:
    cluster: DevCluster
    etcd: LocalEtcd
    nodes: dict[int, ServerProcess] = field(default_factory=dict)

    @property
    def setup(self) -> DevSetup:
        return DevSetup(self.cluster.directory)

    @property
    def target(self) -> str:
        """Every node, for a client that spreads its calls over them."""
        return ",".join(self.cluster.nodes)

    def node_target(self, number: int) -> str:
        return self.cluster.nodes[number - 1]

    def clients(self, target: str | None = None) -> Clients:
        return self.setup.clients(target or self.target)

    def start_node(self, number: int) -> ServerProcess:
        self.nodes[number] = start_server(self.cluster.node_config(number))
        return self.nodes[number]

    def kill_node(self, number: int) -> None:
        self.nodes.pop(number).kill()

    def stop_node(self, number: int) -> None:
        self.nodes.pop(number).stop()

    def log(self) -> ReplicatedLog:
        settings = load_config(self.cluster.node_config(1)).cluster
        assert settings is not None
        return ReplicatedLog(etcd_client(settings), settings.prefix)

    def wait_serving(self, number: int, timeout: float = 60) -> None:
        """Until node ``number``'s health service says SERVING."""
        channel = self.clients(self.node_target(number)).channel(self.setup.identity("institution"))
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(grpc.RpcError):
                    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.1)
        finally:
            channel.close()
        raise RuntimeError(f"node{number} did not become SERVING in {timeout:.0f} s")

    def wait_caught_up(self, timeout: float = 120) -> int:
        """Until every running node has applied the log's head; returns the head."""
        replicated_log = self.log()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                head = replicated_log.head()
                states = {n.name: n.applied for n in replicated_log.nodes()}
                if all(states.get(f"node{n}", -1) >= head for n in self.nodes):
                    return head
                time.sleep(0.2)
        finally:
            replicated_log.etcd.close()
        raise RuntimeError("the nodes did not catch up with the log in time")


@contextlib.contextmanager
def local_cluster(nodes: int = 3, etcd_members: int = 3, extra: str = "") -> Iterator[LocalCluster]:
    """A running cluster; ``extra``: lines added to every node's [cluster] section."""
    with tempfile.TemporaryDirectory(prefix="kfr-cluster-") as workdir:
        base = _free_port_block(100 + 2 * etcd_members)
        binary = find_etcd()
        cluster = create_dev_cluster(
            Path(workdir) / "cluster",
            nodes=nodes,
            etcd_members=etcd_members,
            base_port=base,
            etcd_binary=binary,
        )
        if extra:
            for number in range(1, nodes + 1):
                config = cluster.node_config(number)
                text = config.read_text().replace("[cluster]\n", f"[cluster]\n{extra}\n")
                config.write_text(text)
        with LocalEtcd.on(cluster.etcd, binary, "kfr-dev-cluster") as etcd:
            running = LocalCluster(cluster, etcd)
            try:
                for number in range(1, nodes + 1):
                    running.start_node(number)
                yield running
            finally:
                for number in list(running.nodes):
                    running.stop_node(number)


def _ephemeral_start() -> int:
    """The first port of the kernel's range for outgoing connections (Linux), or 0."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _free_port_block(size: int, attempts: int = 50) -> int:
    """A base port whose next ``size`` ports are free right now (the dev cluster's ports
    are fixed, so that a restarted node is found where it was), below the kernel's range
    of ports for outgoing connections: a block inside it could be taken, between this
    check and a node's start, by any client connecting somewhere."""
    import random
    import socket

    below = _ephemeral_start()
    for _ in range(attempts):
        base = (
            random.randrange(10_000, below - size) if below > 10_000 + size else unused_ports(1)[0]
        )
        if base + size > 65000:
            continue
        sockets = []
        try:
            for port in range(base, base + size):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no block of free ports found")
