"""The KFR contract (``protos/kfr/v1/kfr.proto``, package ``kfr.v1``) for Python clients:
the messages (``kfr_pb2``, typed) and the service stubs (``kfr_pb2_grpc``).

    from kfr_grpc.v1 import kfr_pb2, kfr_pb2_grpc

This is the public import path; what it re-exports is generated (``make protos``).
"""

from kfr_grpc._proto import kfr_pb2, kfr_pb2_grpc

__all__ = ["kfr_pb2", "kfr_pb2_grpc"]
