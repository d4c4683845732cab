"""The server's configuration: one TOML file, documented in the README.

The file is read with pydantic models that mirror its tables, so the names, types and
defaults of every setting are stated once, here. Relative paths are resolved against the
directory of the configuration file. Unknown keys are errors, so a typo never silently
falls back to a default; every error names the setting (``server.threads must be
positive``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kfr_grpc.auth.tokens import MAX_LEEWAY_SECONDS
from kfr_grpc.errors import ConfigError
from kfr_grpc.register.customer_ids import parse_org_number
from kfr_grpc.register.operations import DEFAULT_REQUEST_LOG_DAYS
from kfr_grpc.register.values import InvalidValue

DEFAULT_LISTEN = "127.0.0.1:50051"


def host_port(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:50051`` too) split into host and port; ValueError if not one."""
    host, separator, port = address.rpartition(":")
    number = int(port) if separator and port.isdigit() else -1
    if not host or not 0 <= number <= 65535:
        raise ValueError(f"not host:port: {address!r}")
    return host, number


# --- value types ---------------------------------------------------------------------------


def _address(value: str) -> str:
    try:
        host_port(value)
    except ValueError:
        raise ValueError("must be host:port") from None
    return value


def _resolved(value: Any, info: ValidationInfo) -> Path:
    """A path as written in the file, resolved against the file's directory."""
    if not isinstance(value, str):
        raise ValueError(f"has the wrong type ({type(value).__name__})")
    base: Path = (info.context or {}).get("base", Path.cwd())
    return (base / Path(value).expanduser()).resolve()


def _org_number(value: str) -> str:
    try:
        return parse_org_number(value)
    except InvalidValue as error:
        raise ValueError(str(error)) from None


def _tuple(value: Any) -> Any:
    """TOML arrays arrive as lists; the settings keep tuples (they never change)."""
    return tuple(value) if isinstance(value, list) else value


def _scopes(value: Any) -> Any:
    """A scope setting: one scope name, or a list of names of which a token needs one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError("must be a scope name or a non-empty list of them")
    if not all(isinstance(name, str) and name.strip() and " " not in name for name in value):
        raise ValueError("must be a scope name or a non-empty list of them (no spaces)")
    return tuple(value)


Address = Annotated[str, AfterValidator(_address)]
# Scopes a service accepts: a token carrying any one of them may call it.
Scopes = Annotated[tuple[str, ...], BeforeValidator(_scopes)]
ConfigPath = Annotated[Path, BeforeValidator(_resolved)]
OrgNumber = Annotated[str, AfterValidator(_org_number)]
Seconds = Annotated[float, Field(ge=0)]
Positive = Annotated[int, Field(gt=0)]


def _default_validation_processes() -> int:
    """One helper process for bulk-load validation when there is a second core."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- the tables ----------------------------------------------------------------------------


class TlsConfig(_Table):
    cert: ConfigPath  # the server's certificate chain (PEM)
    key: ConfigPath  # its private key
    client_ca: ConfigPath  # the CA bundle that issues client (enterprise) certificates
    crls: Annotated[tuple[ConfigPath, ...], BeforeValidator(_tuple)] = ()  # signed by client_ca


class TokenConfig(_Table):
    """Where access tokens come from and what they must say."""

    issuer: str
    jwks: str  # an https URL, or a JWKS file path (resolved)
    audience: str | None = None
    # The scopes of the operator's contract (README, Scopes). Each setting takes one name
    # or a list (any one of them will do): keep an older name accepted while clients move.
    institution_scope: Scopes = ("bits:kundeforhold.write",)  # reporting and own data
    agency_scope: Scopes = ("bits:kundeforhold",)  # Lookup, ListParticipants
    account_scope: Scopes = ("bits:kundeforhold.konto",)  # LookupCollectionAccount
    leeway_seconds: int = MAX_LEEWAY_SECONDS
    # Tokens valid for longer (exp minus iat) are refused; Maskinporten's default is 120 s.
    max_lifetime_seconds: Annotated[float, Field(gt=0)] = 300.0
    jwks_ca: ConfigPath | None = None
    jwks_min_refresh_seconds: Seconds = 30.0
    cache_size: Positive = 10_000

    def dev_scope(self, audience: str) -> str:
        """The scope a dev token for ``audience`` (institution or agency) carries: the
        first name each of its services accepts."""
        if audience == "institution":
            return self.institution_scope[0]
        return f"{self.agency_scope[0]} {self.account_scope[0]}"

    @field_validator("jwks")
    @classmethod
    def _jwks_location(cls, value: str, info: ValidationInfo) -> str:
        return value if value.startswith("https://") else str(_resolved(value, info))

    @field_validator("audience")
    @classmethod
    def _no_empty_audience(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("leeway_seconds")
    @classmethod
    def _leeway(cls, value: int) -> int:
        if not 0 <= value <= MAX_LEEWAY_SECONDS:
            raise ValueError(f"must be 0 to {MAX_LEEWAY_SECONDS}")
        return value


class StoreConfig(_Table):
    map_size_mb: Positive = 1024  # where the LMDB map starts; it grows by itself
    max_map_size_mb: Positive = 1024 * 1024  # the most it may grow to

    @property
    def map_size(self) -> int:
        return self.map_size_mb * 1024 * 1024

    @property
    def max_map_size(self) -> int:
        return max(self.max_map_size_mb, self.map_size_mb) * 1024 * 1024


class ServerConfig(_Table):
    # Calls are served on one asyncio event loop; these threads do what would stall it:
    # store writes, each ending in an fsync (LMDB takes one writer at a time anyway).
    threads: Positive = 4
    max_concurrent_calls: Positive = 256  # calls at once, in all
    max_calls_per_connection: Positive = 100  # calls at once on one connection
    max_calls_per_caller: Positive = 100  # calls at once made for one organisation
    max_bulk_streams: Positive = 2  # ReportStreams at once (each: a chunk + 20,000 waiting rows)
    max_requests_in_memory: Positive = 16  # requests received and not yet answered
    request_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0  # for each request message
    max_message_mb: Annotated[float, Field(gt=0, le=64)] = 4.0  # the largest request message
    idle_connection_seconds: Annotated[float, Field(gt=0)] = 300.0  # then it is closed
    max_connections: Positive = 1000  # connections at once
    grace_seconds: Seconds = 10.0
    drain_notice_seconds: Seconds = 0.0
    file_check_seconds: Seconds = 1.0
    validation_processes: Annotated[int, Field(ge=0)] = Field(
        default_factory=_default_validation_processes
    )


class MaintenanceConfig(_Table):
    """The server's own periodic work."""

    request_log_days: Positive = DEFAULT_REQUEST_LOG_DAYS  # institutions' request records
    purge_interval_seconds: Annotated[float, Field(gt=0)] = 86400.0  # retention: this often
    lookup_counts_flush_seconds: Annotated[float, Field(gt=0)] = 60.0  # counters stored so often
    # The store is walked for inconsistencies this often (0: never); each node its own copy.
    integrity_check_seconds: Seconds = 604800.0
    # A compaction swaps in a copy of the store without what was removed, this often (0:
    # never); each node its own copy.
    compact_seconds: Seconds = 604800.0


class RateLimitConfig(_Table):
    """Calls per second one organisation may make (a token bucket per organisation):
    the service level is 10 calls per second for the whole of a reporting API."""

    calls_per_second: Annotated[float, Field(gt=0)] = 100.0  # on average
    burst: Annotated[float, Field(ge=1)] = 200.0  # at once, after a quiet spell


class EnumerationConfig(_Table):
    """When an agency's lookups look like someone trying IDs one after another: a
    warning in the log and ``kfr_enumeration_suspected_total`` (no call is refused)."""

    window_seconds: Annotated[float, Field(gt=0)] = 60.0  # lookups are counted per window
    max_lookups: Positive = 3000  # more in one window from one agency is suspect
    min_lookups: Positive = 200  # from this many in a window, the share of empty answers
    max_empty_share: Annotated[float, Field(gt=0, le=1)] = 0.9  # above this is suspect


class MetricsConfig(_Table):
    listen: Address | None = None  # host:port of the Prometheus endpoint; None: off


class RestConfig(_Table):
    """The operator's REST contract (README, REST), served beside gRPC over mutual TLS."""

    listen: Address | None = None  # host:port of the HTTPS endpoint; None: off
    max_batch_mb: Annotated[float, Field(gt=0, le=64)] = 10.0  # a batch upload, at most
    max_upload_seconds: Annotated[float, Field(gt=0)] = 120.0  # to send a batch upload in
    # Connections at once (after their TLS handshake); past it a new one is closed at once.
    max_connections: Positive = 1000
    # An idle keep-alive connection is closed after this long.
    idle_connection_seconds: Annotated[float, Field(gt=0)] = 75.0


class ClusterConfig(_Table):
    """Cluster mode (README, Running a cluster): writes go through a log in etcd."""

    node: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]  # unique per cluster
    etcd_endpoints: Annotated[tuple[Address, ...], BeforeValidator(_tuple), Field(min_length=1)]
    prefix: Annotated[str, Field(pattern=r"^/.*/$")] = "/kfr/"  # the cluster's etcd keys
    etcd_ca: ConfigPath | None = None  # TLS to etcd: the CA that signed its certificates
    etcd_cert: ConfigPath | None = None  # and this node's client certificate and key
    etcd_key: ConfigPath | None = None
    etcd_timeout_seconds: Annotated[float, Field(gt=0)] = 2.0  # one etcd request, at most
    reads: Literal["linearizable", "local"] = "linearizable"
    max_entry_mb: Annotated[float, Field(gt=0, le=64)] = 8.0  # one write's changes
    compact_window_seconds: Seconds = 86400.0  # log entries younger are kept
    advertise: Address | None = None  # host:port clients reach this node at (status only)

    @model_validator(mode="after")
    def _tls_pairs(self) -> ClusterConfig:
        if (self.etcd_cert is None) != (self.etcd_key is None):
            raise ValueError("etcd_cert and etcd_key go together")
        if self.etcd_cert is not None and self.etcd_ca is None:
            raise ValueError("etcd_cert needs etcd_ca")
        return self


class AgencyConfig(_Table):
    """A public agency allowed to look up, with the legal mandates it may invoke."""

    org_number: OrgNumber
    name: str = ""
    mandates: frozenset[str]
    owner_only: bool = False
    allow_suppliers: bool = False  # whether a vendor's token (supplier) may look up for it
    calls_per_second: Annotated[float, Field(gt=0)] | None = None  # else [rate_limits]
    burst: Annotated[float, Field(ge=1)] | None = None  # else [rate_limits]

    @field_validator("mandates", mode="before")
    @classmethod
    def _mandates(cls, value: Any) -> frozenset[str]:
        if not isinstance(value, list) or not value:
            raise ValueError("must be a non-empty list of strings")
        if not all(isinstance(m, str) and m.strip() for m in value):
            raise ValueError("must be a non-empty list of strings")
        return frozenset(m.strip() for m in value)


class Config(_Table):
    listen: Address = DEFAULT_LISTEN
    data_dir: ConfigPath
    keyring: ConfigPath
    test_mode: bool = False  # accepts synthetic (Tenor) customer IDs; never in production
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    tls: TlsConfig
    tokens: TokenConfig
    store: StoreConfig = StoreConfig()
    server: ServerConfig = Field(default_factory=ServerConfig)
    maintenance: MaintenanceConfig = MaintenanceConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    enumeration: EnumerationConfig = EnumerationConfig()
    metrics: MetricsConfig = MetricsConfig()
    rest: RestConfig = RestConfig()
    cluster: ClusterConfig | None = None  # none: one node on its own LMDB store
    agencies: Annotated[tuple[AgencyConfig, ...], BeforeValidator(_tuple)] = ()
    _path: Path = PrivateAttr(default=Path("kfr.toml"))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _apart(self) -> Config:
        if self.keyring.is_relative_to(self.data_dir):
            raise ValueError("keyring must not lie inside data_dir: keep secrets apart from data")
        return self

    @model_validator(mode="after")
    def _audience_in_production(self) -> Config:
        if not self.test_mode and self.tokens.audience is None:
            raise ValueError(
                "tokens.audience must be set (test_mode is off): without it any token from "
                "the issuer, meant for any service, is taken"
            )
        return self

    @field_validator("agencies")
    @classmethod
    def _distinct(cls, agencies: tuple[AgencyConfig, ...]) -> tuple[AgencyConfig, ...]:
        seen = set()
        for agency in agencies:
            if agency.org_number in seen:
                raise ValueError(f"lists organisation {agency.org_number} twice")
            seen.add(agency.org_number)
        return agencies

    @property
    def path(self) -> Path:
        """The file this configuration was read from."""
        return self._path


def load_config(path: Path) -> Config:
    """Reads and validates the configuration file at ``path``."""
    path = path.resolve()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"configuration file {path}: {error}") from None
    try:
        config = Config.model_validate(document, context={"base": path.parent})
    except ValidationError as error:
        raise ConfigError(f"{path}: {_first_problem(error)}") from None
    config._path = path
    return config


def _first_problem(error: ValidationError) -> str:
    """The first problem pydantic found, in the words the README uses."""
    problem = error.errors(include_url=False)[0]
    where = _setting(problem["loc"])
    kind = problem["type"]
    context = problem.get("ctx") or {}
    if kind == "missing":
        return f"{where} is required"
    if kind == "extra_forbidden":
        return f"{where} is not a known setting"
    if kind == "greater_than":
        return f"{where} must be positive"
    if kind == "greater_than_equal":
        return f"{where} must not be negative"
    if kind == "literal_error":
        return f"{where} must be one of {context.get('expected', '')}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{where} must be a table"
    if kind == "value_error":
        reason = str(context.get("error", problem["msg"]))
        return f"{where} {reason}" if where else reason
    return f"{where} has the wrong type ({type(problem['input']).__name__})"


def _setting(location: tuple[int | str, ...]) -> str:
    """``("agencies", 0, "org_number")`` -> ``agencies[0].org_number``."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith(("function-", "json-or-python")):
            text += f".{part}" if text else part
    return text
