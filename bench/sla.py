"""``make sla``: the Locust SLA suite, headless, against a server of its own.

    python -m bench.sla [--duration 60] [--rate 10]

Starts ``kfr serve`` on a fresh dev setup, runs ``bench/locustfile.py`` with ``--rate``
users at one request per second each, prints Locust's summary and the SLA line (p50,
p99, failures) and exits with Locust's status: non-zero if p99 > 500 ms or any request
failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench.common import bench_server, duration

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def main() -> None:
    parser = argparse.ArgumentParser(description="KFR SLA run (Locust, headless)")
    parser.add_argument(
        "--duration", type=duration, default=60.0, help="90, 90s, 10m, 1h (default 60 s)"
    )
    parser.add_argument("--rate", type=int, default=10, help="requests/s (default 10)")
    args = parser.parse_args()
    with bench_server() as server:
        environment = {**os.environ, "KFR_DEV": str(server.setup.directory)}
        command = [
            str(Path(sys.executable).with_name("locust")), "-f", str(LOCUSTFILE),
            "--headless", "--users", str(args.rate), "--spawn-rate", str(args.rate),
            "--run-time", f"{args.duration:.0f}s", "--host", server.target,
            "--stop-timeout", "5",
        ]  # fmt: skip
        print(f"SLA run: {args.rate} requests/s for {args.duration:.0f} s against {server.target}")
        status = subprocess.call(command, env=environment)
    sys.exit(status)


if __name__ == "__main__":
    main()
