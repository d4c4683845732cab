"""The stores: how the register's data is kept. Knows nothing of gRPC or protobuf.

``LmdbStore`` keeps it in an embedded LMDB environment on one machine.
"""

from kfr_grpc.store.lmdb_store import LmdbStore

__all__ = ["LmdbStore"]
