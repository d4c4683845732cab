"""The store: LMDB layout, transactions and sealing. Knows nothing of gRPC or protobuf."""

from kfr_grpc.store.lmdb_store import Store, StoreTxn, StoreView

__all__ = ["Store", "StoreTxn", "StoreView"]
