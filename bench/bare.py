"""The framework's own limit, for comparison: a bare ``grpc.aio`` server with the same
mutual TLS as KFR (its certificate, its client CA) and only the standard health service.
No interceptor, no token check, no register.

    python -m bench.bare --config DEV/kfr.toml --ready-file FILE

``make bench`` runs it beside KFR and measures both with the same client in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from kfr_grpc.config import load_config
from kfr_grpc.readiness import write_ready


async def serve(config_path: Path, ready_file: Path) -> None:
    config = load_config(config_path)
    server = grpc.aio.server()
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    credentials = grpc.ssl_server_credentials(
        [(config.tls.key.read_bytes(), config.tls.cert.read_bytes())],
        root_certificates=config.tls.client_ca.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    write_ready(ready_file, {"pid": os.getpid(), "port": port, "metrics_port": 0})
    await stopping.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description="a bare grpc.aio health server")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.config, args.ready_file))


if __name__ == "__main__":
    main()
