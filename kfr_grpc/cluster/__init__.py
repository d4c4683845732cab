"""Cluster mode: the register's writes as a log in etcd, applied by every node to its own
LMDB store (README, Running a cluster). Knows nothing of gRPC's servicers or protobuf
messages of our own; speaks to etcd through ``etcd``."""
