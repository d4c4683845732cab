"""Generates the Python stubs in ``kfr_grpc/_proto`` from ``protos/``.

The stubs are committed so that a plain ``pip install`` works without grpcio-tools;
``tests/test_stubs_current.py`` regenerates them and fails when they are stale.
Run ``make protos`` after editing a ``.proto`` file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_FILE = "kfr/v1/kfr.proto"
STUB_DIR = Path(__file__).resolve().parent / "_proto"
STUB_NAMES = ("kfr_pb2.py", "kfr_pb2.pyi", "kfr_pb2_grpc.py")

# protoc writes imports for the proto's own package path; the stubs live flat in
# kfr_grpc/_proto, so the one cross-module import becomes relative.
_ABSOLUTE_IMPORT = "from kfr.v1 import kfr_pb2 as"
_RELATIVE_IMPORT = "from . import kfr_pb2 as"


def render_stubs() -> dict[str, bytes]:
    """Runs protoc and returns the stub files' contents by file name."""
    from grpc_tools import protoc  # dev dependency: only needed when generating

    with tempfile.TemporaryDirectory() as out:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{_well_known_protos()}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_ROOT / PROTO_FILE),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO_FILE}")
        generated = Path(out) / "kfr" / "v1"
        stubs = {}
        for name in STUB_NAMES:
            text = (generated / name).read_text(encoding="utf-8")
            stubs[name] = text.replace(_ABSOLUTE_IMPORT, _RELATIVE_IMPORT).encode("utf-8")
        return stubs


def _well_known_protos() -> Path:
    import grpc_tools

    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def write_stubs() -> None:
    STUB_DIR.mkdir(exist_ok=True)
    for name, content in render_stubs().items():
        (STUB_DIR / name).write_bytes(content)


if __name__ == "__main__":
    write_stubs()
    sys.stdout.write(f"stubs written to {STUB_DIR}\n")
