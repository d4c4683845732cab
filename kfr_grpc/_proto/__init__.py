"""Generated protobuf and gRPC stubs for kfr.v1 (see kfr_grpc/codegen.py)."""
