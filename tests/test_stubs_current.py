"""The committed stubs in kfr_grpc/_proto must be what protos/ generates today."""

from __future__ import annotations

from kfr_grpc import codegen


def test_committed_stubs_match_the_proto():
    for name, expected in codegen.render_stubs().items():
        committed = (codegen.STUB_DIR / name).read_bytes()
        assert committed == expected, f"kfr_grpc/_proto/{name} is stale: run `make protos`"
