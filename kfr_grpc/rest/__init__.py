"""The operator's REST contract (README, REST), served beside gRPC from the same register:
``routes`` (the paths, translating JSON and headers to the register's plain values and
back), ``calls`` (what every call shares: CorrelationID, admission, identity, the log and
the records), ``errors`` (errors to the contract's bodies and codes), ``batch`` (the
multipart bulk upload), ``server`` (aiohttp over mutual TLS).

What the server needs before it loads any of them (it loads them only to serve REST) is
here."""

BASE_PATH = "/kar-ws/api/v1"
INSTITUTION_PATH = "/customers/financialInstitutions/{fid}"
BATCH_PATH = f"{INSTITUTION_PATH}/batch"


def route_name(method: str, path: str) -> str:
    """A route as logs, metrics, admission and the request log name it."""
    return f"REST {method} {path}"


BATCH_ROUTE = route_name("POST", BATCH_PATH)  # (admission caps these)
