"""The server's configuration: one TOML file, documented in the README.

Relative paths are resolved against the directory of the configuration file. Unknown
keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfr_grpc.errors import ConfigError
from kfr_grpc.register.customer_ids import parse_org_number
from kfr_grpc.register.values import InvalidValue

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_MAP_SIZE_MB = 1024  # where the LMDB map starts; it grows by itself
DEFAULT_MAX_MAP_SIZE_MB = 1024 * 1024
# Handlers hold the GIL for most of their work; a few threads serve more calls per second
# than many, which mostly wait for one another.
DEFAULT_THREADS = 4
DEFAULT_MAX_CONCURRENT_CALLS = 256
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_FILE_CHECK_SECONDS = 1.0
DEFAULT_INSTITUTION_SCOPE = "bits:kundeforhold.write"
DEFAULT_AGENCY_SCOPE = "bits:kundeforhold.read"
MAX_LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path
    client_ca: Path
    crls: tuple[Path, ...] = ()


@dataclass(frozen=True)
class TokenConfig:
    """Where access tokens come from and what they must say."""

    issuer: str
    jwks: str  # a file path (resolved) or an https URL
    audience: str | None = None
    institution_scope: str = DEFAULT_INSTITUTION_SCOPE
    agency_scope: str = DEFAULT_AGENCY_SCOPE
    leeway_seconds: int = MAX_LEEWAY_SECONDS
    jwks_ca: Path | None = None
    jwks_min_refresh_seconds: float = 30.0
    cache_size: int = 10_000


@dataclass(frozen=True)
class AgencyConfig:
    """A public agency allowed to look up, with the legal mandates it may invoke."""

    org_number: str
    name: str
    mandates: frozenset[str]
    owner_only: bool


@dataclass(frozen=True)
class MaintenanceConfig:
    """The server's own periodic work."""

    request_log_days: int = 90  # how long institutions' request records are kept
    purge_interval_seconds: float = 86400.0  # retention runs this often (daily)
    lookup_counts_flush_seconds: float = 60.0  # lookup counters are stored this often


@dataclass(frozen=True)
class Config:
    path: Path
    listen: str
    data_dir: Path
    keyring: Path
    test_mode: bool
    tls: TlsConfig
    tokens: TokenConfig
    agencies: tuple[AgencyConfig, ...]
    map_size_mb: int = DEFAULT_MAP_SIZE_MB
    max_map_size_mb: int = DEFAULT_MAX_MAP_SIZE_MB
    threads: int = DEFAULT_THREADS
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    drain_notice_seconds: float = 0.0
    file_check_seconds: float = DEFAULT_FILE_CHECK_SECONDS
    validation_processes: int = 1
    maintenance: MaintenanceConfig = MaintenanceConfig()
    metrics_listen: str | None = None  # host:port of the Prometheus endpoint; None: off
    log_level: str = "INFO"
    log_format: str = "json"

    @property
    def map_size(self) -> int:
        return self.map_size_mb * 1024 * 1024

    @property
    def max_map_size(self) -> int:
        return self.max_map_size_mb * 1024 * 1024


_TOP_KEYS = {
    "listen", "data_dir", "keyring", "test_mode", "log_level",
    "log_format", "tls", "tokens", "store", "server", "maintenance", "metrics", "agencies",
}  # fmt: skip
_TLS_KEYS = {"cert", "key", "client_ca", "crls"}
_TOKEN_KEYS = {
    "issuer", "jwks", "audience", "institution_scope", "agency_scope", "leeway_seconds",
    "jwks_ca", "jwks_min_refresh_seconds", "cache_size",
}  # fmt: skip
_STORE_KEYS = {"map_size_mb", "max_map_size_mb"}
_SERVER_KEYS = {
    "threads", "max_concurrent_calls", "grace_seconds", "drain_notice_seconds",
    "file_check_seconds", "validation_processes",
}  # fmt: skip
_METRICS_KEYS = {"listen"}
_LOG_FORMATS = {"json", "text"}
_MAINTENANCE_KEYS = {"request_log_days", "purge_interval_seconds", "lookup_counts_flush_seconds"}
_AGENCY_KEYS = {"org_number", "name", "mandates", "owner_only"}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}


def host_port(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:50051`` too) split into host and port; ValueError if not one."""
    host, separator, port = address.rpartition(":")
    number = int(port) if separator and port.isdigit() else -1
    if not host or not 0 <= number <= 65535:
        raise ValueError(f"not host:port: {address!r}")
    return host, number


def _default_validation_processes() -> int:
    """One helper process for bulk-load validation when there is a second core."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


def load_config(path: Path) -> Config:
    """Reads and validates the configuration file at ``path``."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"configuration file {path}: {error}") from None
    return _Reader(path).config(document)


class _Reader:
    def __init__(self, path: Path) -> None:
        self._path = path.resolve()
        self._base = self._path.parent

    def config(self, document: dict[str, Any]) -> Config:
        self._known(document, _TOP_KEYS, "")
        tls = self._table(document, "tls", required=True)
        self._known(tls, _TLS_KEYS, "tls.")
        store = self._table(document, "store")
        self._known(store, _STORE_KEYS, "store.")
        server = self._table(document, "server")
        self._known(server, _SERVER_KEYS, "server.")
        tokens = self._table(document, "tokens", required=True)
        self._known(tokens, _TOKEN_KEYS, "tokens.")
        maintenance = self._table(document, "maintenance")
        self._known(maintenance, _MAINTENANCE_KEYS, "maintenance.")
        metrics = self._table(document, "metrics")
        self._known(metrics, _METRICS_KEYS, "metrics.")
        config = Config(
            path=self._path,
            listen=self._address(document, "listen", DEFAULT_LISTEN, ""),
            data_dir=self._file(document, "data_dir"),
            keyring=self._file(document, "keyring"),
            test_mode=self._get(document, "test_mode", bool, False),
            tls=TlsConfig(
                cert=self._file(tls, "cert", "tls."),
                key=self._file(tls, "key", "tls."),
                client_ca=self._file(tls, "client_ca", "tls."),
                crls=self._files(tls, "crls", "tls."),
            ),
            tokens=self._tokens(tokens),
            agencies=self._agencies(document.get("agencies", [])),
            map_size_mb=self._positive(store, "map_size_mb", DEFAULT_MAP_SIZE_MB, "store."),
            max_map_size_mb=self._positive(
                store, "max_map_size_mb", DEFAULT_MAX_MAP_SIZE_MB, "store."
            ),
            threads=self._positive(server, "threads", DEFAULT_THREADS, "server."),
            max_concurrent_calls=self._positive(
                server, "max_concurrent_calls", DEFAULT_MAX_CONCURRENT_CALLS, "server."
            ),
            grace_seconds=self._seconds(server, "grace_seconds", DEFAULT_GRACE_SECONDS, "server."),
            drain_notice_seconds=self._seconds(server, "drain_notice_seconds", 0.0, "server."),
            file_check_seconds=self._seconds(
                server, "file_check_seconds", DEFAULT_FILE_CHECK_SECONDS, "server."
            ),
            validation_processes=self._count(
                server, "validation_processes", _default_validation_processes(), "server."
            ),
            maintenance=self._maintenance(maintenance),
            metrics_listen=self._address(metrics, "listen", "", "metrics.") or None,
            log_level=self._get(document, "log_level", str, "INFO").upper(),
            log_format=self._get(document, "log_format", str, "json").lower(),
        )
        if config.log_level not in _LOG_LEVELS:
            raise self._error("log_level", f"must be one of {', '.join(sorted(_LOG_LEVELS))}")
        if config.log_format not in _LOG_FORMATS:
            raise self._error("log_format", "must be json or text")
        if config.keyring.resolve().is_relative_to(config.data_dir.resolve()):
            raise self._error(
                "keyring", "must not lie inside data_dir: keep secrets apart from data"
            )
        return config

    def _tokens(self, table: dict) -> TokenConfig:
        prefix = "tokens."
        jwks = self._get(table, "jwks", str, None, prefix)
        if not jwks.startswith("https://"):
            jwks = str(self._file(table, "jwks", prefix))
        leeway = self._get(table, "leeway_seconds", int, MAX_LEEWAY_SECONDS, prefix)
        if not 0 <= leeway <= MAX_LEEWAY_SECONDS:
            raise self._error(prefix + "leeway_seconds", f"must be 0 to {MAX_LEEWAY_SECONDS}")
        audience = self._get(table, "audience", str, "", prefix)
        return TokenConfig(
            issuer=self._get(table, "issuer", str, None, prefix),
            jwks=jwks,
            audience=audience or None,
            institution_scope=self._get(
                table, "institution_scope", str, DEFAULT_INSTITUTION_SCOPE, prefix
            ),
            agency_scope=self._get(table, "agency_scope", str, DEFAULT_AGENCY_SCOPE, prefix),
            leeway_seconds=leeway,
            jwks_ca=self._file(table, "jwks_ca", prefix) if "jwks_ca" in table else None,
            jwks_min_refresh_seconds=self._seconds(table, "jwks_min_refresh_seconds", 30.0, prefix),
            cache_size=self._positive(table, "cache_size", 10_000, prefix),
        )

    def _maintenance(self, table: dict) -> MaintenanceConfig:
        prefix, defaults = "maintenance.", MaintenanceConfig()
        return MaintenanceConfig(
            request_log_days=self._positive(
                table, "request_log_days", defaults.request_log_days, prefix
            ),
            purge_interval_seconds=self._seconds(
                table, "purge_interval_seconds", defaults.purge_interval_seconds, prefix
            ),
            lookup_counts_flush_seconds=self._seconds(
                table, "lookup_counts_flush_seconds", defaults.lookup_counts_flush_seconds, prefix
            ),
        )

    def _agencies(self, entries: Any) -> tuple[AgencyConfig, ...]:
        if not isinstance(entries, list):
            raise self._error("agencies", "must be an array of tables ([[agencies]])")
        agencies: dict[str, AgencyConfig] = {}
        for index, entry in enumerate(entries):
            prefix = f"agencies[{index}]."
            if not isinstance(entry, dict):
                raise self._error(f"agencies[{index}]", "must be a table")
            self._known(entry, _AGENCY_KEYS, prefix)
            raw_org = self._get(entry, "org_number", str, None, prefix)
            try:
                org_number = parse_org_number(raw_org)
            except InvalidValue as error:
                raise self._error(prefix + "org_number", str(error)) from None
            mandates = self._get(entry, "mandates", list, None, prefix)
            if not mandates or not all(isinstance(m, str) and m.strip() for m in mandates):
                raise self._error(prefix + "mandates", "must be a non-empty list of strings")
            if org_number in agencies:
                raise self._error(prefix + "org_number", "is configured twice")
            agencies[org_number] = AgencyConfig(
                org_number=org_number,
                name=self._get(entry, "name", str, "", prefix),
                mandates=frozenset(m.strip() for m in mandates),
                owner_only=self._get(entry, "owner_only", bool, False, prefix),
            )
        return tuple(agencies.values())

    def _table(self, document: dict[str, Any], key: str, *, required: bool = False) -> dict:
        if key not in document:
            if required:
                raise self._error(key, "is required")
            return {}
        value = document[key]
        if not isinstance(value, dict):
            raise self._error(key, "must be a table")
        return value

    def _get(self, table: dict, key: str, kind: Any, default: Any, prefix: str = "") -> Any:
        if key not in table:
            if default is None:
                raise self._error(prefix + key, "is required")
            return default
        value = table[key]
        if not isinstance(value, kind) or (kind in (int, (int, float)) and isinstance(value, bool)):
            raise self._error(prefix + key, f"has the wrong type ({type(value).__name__})")
        return value

    def _count(self, table: dict, key: str, default: int, prefix: str) -> int:
        value = self._get(table, key, int, default, prefix)
        if value < 0:
            raise self._error(prefix + key, "must not be negative")
        return value

    def _positive(self, table: dict, key: str, default: int, prefix: str) -> int:
        value = self._get(table, key, int, default, prefix)
        if value <= 0:
            raise self._error(prefix + key, "must be positive")
        return value

    def _seconds(self, table: dict, key: str, default: float, prefix: str) -> float:
        value = float(self._get(table, key, (int, float), default, prefix))
        if value < 0:
            raise self._error(prefix + key, "must not be negative")
        return value

    def _address(self, table: dict, key: str, default: str, prefix: str) -> str:
        value = self._get(table, key, str, default, prefix)
        if value:
            try:
                host_port(value)
            except ValueError:
                raise self._error(prefix + key, "must be host:port") from None
        return value

    def _files(self, table: dict, key: str, prefix: str) -> tuple[Path, ...]:
        raw = self._get(table, key, list, [], prefix)
        if not all(isinstance(item, str) for item in raw):
            raise self._error(prefix + key, "must be a list of file paths")
        return tuple((self._base / Path(item).expanduser()).resolve() for item in raw)

    def _file(self, table: dict, key: str, prefix: str = "") -> Path:
        raw = self._get(table, key, str, None, prefix)
        return (self._base / Path(raw).expanduser()).resolve()

    def _known(self, table: dict, known: set[str], prefix: str) -> None:
        unknown = sorted(set(table) - known)
        if unknown:
            raise self._error(prefix + unknown[0], "is not a known setting")

    def _error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self._path}: {key} {reason}")
