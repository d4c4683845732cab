"""The register: domain rules for relationships, periods and lookups (no gRPC, no LMDB)."""
