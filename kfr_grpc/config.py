"""The server's configuration: one TOML file, documented in the README.

Relative paths are resolved against the directory of the configuration file. Unknown
keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfr_grpc.errors import ConfigError
from kfr_grpc.register.customer_ids import parse_org_number
from kfr_grpc.register.values import InvalidValue

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_MAP_SIZE_MB = 8192
DEFAULT_THREADS = 16
DEFAULT_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path
    client_ca: Path


@dataclass(frozen=True)
class AgencyConfig:
    """A public agency allowed to look up, with the legal mandates it may invoke."""

    org_number: str
    name: str
    mandates: frozenset[str]
    owner_only: bool


@dataclass(frozen=True)
class Config:
    path: Path
    listen: str
    data_dir: Path
    keyring: Path
    test_mode: bool
    tls: TlsConfig
    agencies: tuple[AgencyConfig, ...]
    map_size_mb: int = DEFAULT_MAP_SIZE_MB
    threads: int = DEFAULT_THREADS
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    log_level: str = "INFO"

    @property
    def map_size(self) -> int:
        return self.map_size_mb * 1024 * 1024


_TOP_KEYS = {
    "listen",
    "data_dir",
    "keyring",
    "test_mode",
    "log_level",
    "tls",
    "store",
    "server",
    "agencies",
}
_TLS_KEYS = {"cert", "key", "client_ca"}
_STORE_KEYS = {"map_size_mb"}
_SERVER_KEYS = {"threads", "grace_seconds"}
_AGENCY_KEYS = {"org_number", "name", "mandates", "owner_only"}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}


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
        config = Config(
            path=self._path,
            listen=self._get(document, "listen", str, DEFAULT_LISTEN),
            data_dir=self._file(document, "data_dir"),
            keyring=self._file(document, "keyring"),
            test_mode=self._get(document, "test_mode", bool, False),
            tls=TlsConfig(
                cert=self._file(tls, "cert", "tls."),
                key=self._file(tls, "key", "tls."),
                client_ca=self._file(tls, "client_ca", "tls."),
            ),
            agencies=self._agencies(document.get("agencies", [])),
            map_size_mb=self._positive(store, "map_size_mb", DEFAULT_MAP_SIZE_MB, "store."),
            threads=self._positive(server, "threads", DEFAULT_THREADS, "server."),
            grace_seconds=float(
                self._get(server, "grace_seconds", (int, float), DEFAULT_GRACE_SECONDS, "server.")
            ),
            log_level=self._get(document, "log_level", str, "INFO").upper(),
        )
        if config.log_level not in _LOG_LEVELS:
            raise self._error("log_level", f"must be one of {', '.join(sorted(_LOG_LEVELS))}")
        if config.keyring.resolve().is_relative_to(config.data_dir.resolve()):
            raise self._error(
                "keyring", "must not lie inside data_dir: keep secrets apart from data"
            )
        return config

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

    def _positive(self, table: dict, key: str, default: int, prefix: str) -> int:
        value = self._get(table, key, int, default, prefix)
        if value <= 0:
            raise self._error(prefix + key, "must be positive")
        return value

    def _file(self, table: dict, key: str, prefix: str = "") -> Path:
        raw = self._get(table, key, str, None, prefix)
        return (self._base / Path(raw).expanduser()).resolve()

    def _known(self, table: dict, known: set[str], prefix: str) -> None:
        unknown = sorted(set(table) - known)
        if unknown:
            raise self._error(prefix + unknown[0], "is not a known setting")

    def _error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self._path}: {key} {reason}")
