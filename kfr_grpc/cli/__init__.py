"""The ``kfr`` command: server, operator commands, dev tooling and client commands."""

from kfr_grpc.cli import admin, client, dev
from kfr_grpc.cli.common import main, run

__all__ = ["admin", "client", "dev", "main", "run"]

if __name__ == "__main__":
    run()
