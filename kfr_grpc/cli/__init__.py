"""The ``kfr`` command: server, operator commands, dev tooling and client commands."""

import os

# gRPC's C core writes its own lines (``I1202 … Handshake failed …``) to stderr, in
# another format than ours, in the middle of the JSON log; only its errors, unless the
# operator asks for more. Set before gRPC is first imported, which reads it.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from kfr_grpc.cli import admin, client, dev
from kfr_grpc.cli.common import main, run

__all__ = ["admin", "client", "dev", "main", "run"]

if __name__ == "__main__":
    run()
