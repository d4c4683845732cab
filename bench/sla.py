"""``make sla``: the Locust SLA suite, headless, against a server of its own.

    python -m bench.sla [--duration 60] [--rate 10] [--cluster] [--rest]

Starts ``kfr serve`` on a fresh dev setup, runs ``bench/locustfile.py`` with ``--rate``
users at one request per second each, prints Locust's summary and the SLA line (p50,
p99, failures) and exits with Locust's status: non-zero if p99 > 500 ms or any request
failed.

``--cluster`` (``make sla CLUSTER=1``): against a local cluster of three etcd members and
three nodes instead, through the node list, and kills node2 (kill -9) half way.

``--rest`` (``make sla REST=1``): the same mix over the REST contract (Locust's
``RestUser``: HTTPS with the same certificates and tokens) against the server's REST
endpoint. (Not with ``--cluster``: REST clients reach one node; a load balancer in front
of the nodes is the operator's.)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from pathlib import Path

from bench.cluster import LocalCluster, local_cluster
from bench.common import bench_server, duration

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def main() -> None:
    parser = argparse.ArgumentParser(description="KFR SLA run (Locust, headless)")
    parser.add_argument(
        "--duration", type=duration, default=60.0, help="90, 90s, 10m, 1h (default 60 s)"
    )
    parser.add_argument("--rate", type=int, default=10, help="requests/s (default 10)")
    parser.add_argument("--cluster", action="store_true", help="a local cluster, node2 killed")
    parser.add_argument("--rest", action="store_true", help="over the REST contract")
    args = parser.parse_args()
    if args.rest and args.cluster:
        parser.error("--rest runs against one server, not --cluster")
    if args.cluster:
        with local_cluster() as cluster:
            half_way = threading.Timer(args.duration / 2, _kill_node2, [cluster])
            half_way.start()
            try:
                status = _locust(args, cluster.setup.directory, cluster.target)
            finally:
                half_way.cancel()
    else:
        with bench_server() as server:
            target = server.server.rest_url if args.rest else server.target
            status = _locust(args, server.setup.directory, target)
    sys.exit(status)


def _kill_node2(cluster: LocalCluster) -> None:
    print("SLA run: killing node2 (kill -9)", flush=True)
    cluster.kill_node(2)


def _locust(args: argparse.Namespace, dev_directory: Path, target: str) -> int:
    environment = {**os.environ, "KFR_DEV": str(dev_directory)}
    command = [
        str(Path(sys.executable).with_name("locust")), "-f", str(LOCUSTFILE),
        "--headless", "--users", str(args.rate), "--spawn-rate", str(args.rate),
        "--run-time", f"{args.duration:.0f}s", "--host", target, "--stop-timeout", "5",
        "RestUser" if args.rest else "RegisterUser",
    ]  # fmt: skip
    print(f"SLA run: {args.rate} requests/s for {args.duration:.0f} s against {target}")
    return subprocess.call(command, env=environment)


if __name__ == "__main__":
    main()
