"""The operator's REST contract (README, REST), served beside gRPC from the same register:
``routes`` (the paths, translating JSON and headers to the register's plain values and
back), ``calls`` (what every call shares: CorrelationID, admission, identity, the log and
the records), ``errors`` (errors to the contract's bodies and codes), ``batch`` (the
multipart bulk upload), ``server`` (aiohttp over mutual TLS)."""
