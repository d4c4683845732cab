"""What a REST call of the benchmarks fails with (apart from ``bench.rest_load``, which
imports aiohttp: the load loops catch it without importing that)."""


class RestFailed(Exception):
    """A REST call that failed: an unexpected status, or the connection's error."""
