"""``python -m kfr_grpc.cli``: the same as the ``kfr`` command."""

from kfr_grpc.cli import run

run()
