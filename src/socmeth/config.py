"""Load and validate the server's configuration.

Sources, strongest first: command-line flags, the environment, `config.yaml`, defaults.
The environment names `POSTGRES_URL` and `REDIS_URL` (the README's container variables)
and `SOCMETH_<SECTION>_<KEY>` for every key, e.g. `SOCMETH_WORKERS_COUNT=4`. A key or
value that is wrong stops the start with a `ConfigError` naming it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pydantic
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    Strict,
    field_validator,
    model_validator,
)

from socmeth.auth.access_tokens import MIN_SECRET_BYTES
from socmeth.errors import ConfigError, ScheduleError
from socmeth.schedule import validate_timezone

# Numbers and switches must be numbers and switches in the file (YAML `port: true` is
# not port 1); values from the environment are read as YAML scalars first.
Int = Annotated[int, Strict()]
Number = Annotated[float, Strict()]
Switch = Annotated[bool, Strict()]

ENV_PREFIX = "SOCMETH_"
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A host name (RFC 1123 labels) or an IPv4 address, which has the same letters.
HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
ENV_ALIASES = {"POSTGRES_URL": ("database", "url"), "REDIS_URL": ("redis", "url")}
# Keys whose values no message may show.
SECRET_KEYS = frozenset({"auth.jwt_secret"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    port: Int = Field(8080, ge=1, le=65535)
    host: str | None = None  # None: loopback unless auth is on
    data_dir: Path = Path("socmeth-data")
    max_request_bytes: Int = Field(256 * 1024, ge=1024)


class DatabaseConfig(_Section):
    url: str | None = None  # None: SQLite in the data dir

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is None or url.startswith(("sqlite:", "postgresql:", "postgres:")):
            return url
        raise ValueError("must start with sqlite:// or postgresql://")


class RedisConfig(_Section):
    url: str | None = None
    prefix: str = Field("socmeth", pattern=r"^[^\s{}*?\[\]]+$")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is None or url.startswith(("redis://", "rediss://", "unix://")):
            return url
        raise ValueError("must start with redis://, rediss:// or unix://")


class SchedulerConfig(_Section):
    max_concurrent_jobs: Int = Field(50, ge=1)
    job_timeout: Int = Field(600, ge=1)
    max_job_timeout: Int = Field(3600, ge=1)
    timezone: str = "UTC"
    kill_grace: Number = Field(5.0, ge=0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            validate_timezone(name)
        except ScheduleError as exc:
            raise ValueError(exc.reason) from exc
        return name

    @model_validator(mode="after")
    def _timeout_within_cap(self) -> SchedulerConfig:
        if self.job_timeout > self.max_job_timeout:
            raise ValueError(
                f"job_timeout {self.job_timeout} is above max_job_timeout "
                f"{self.max_job_timeout}; lower it or raise the cap"
            )
        return self


class WorkersConfig(_Section):
    count: Int = Field(10, ge=1, le=10_000)
    shutdown_grace: Number = Field(10.0, ge=0)


class HistoryConfig(_Section):
    retention_days: Int = Field(30, ge=1)


class LimitsConfig(_Section):
    max_jobs: Int = Field(100_000, ge=1)
    output_bytes: Int = Field(1024 * 1024, ge=1024)


class ClusterConfig(_Section):
    """Name this node and the peers the operator expects (cluster mode)."""

    node_id: str | None = None  # None: the host name
    # Other nodes as host:port; from the environment or a flag, comma-separated.
    peers: tuple[str, ...] = ()
    # host:port other nodes and the UI reach this node at; None: derived from
    # server.host (the host name when it listens on every address) and server.port.
    advertise: str | None = None

    @field_validator("node_id")
    @classmethod
    def _plain_id(cls, node_id: str | None) -> str | None:
        if node_id is None:
            return None
        if not NODE_ID.fullmatch(node_id):
            raise ValueError(
                "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        return node_id

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, peers: Any) -> Any:
        if not isinstance(peers, str):
            return peers
        split = tuple(p.strip() for p in peers.split(",") if p.strip())
        if peers.strip() and not split:
            raise ValueError(f"{peers!r} names no host:port")
        return split

    @field_validator("peers")
    @classmethod
    def _peer_addresses(cls, peers: tuple[str, ...]) -> tuple[str, ...]:
        for peer in peers:
            _check_address(peer)
        return peers

    @field_validator("advertise")
    @classmethod
    def _advertise_address(cls, address: str | None) -> str | None:
        if address is not None:
            _check_address(address)
        return address


def _check_address(address: str) -> None:
    """Accept `host:port`: a host name, an IPv4 address or a bracketed IPv6 one."""
    host, colon, port = address.rpartition(":")
    port_ok = port.isascii() and port.isdigit() and 1 <= int(port) <= 65535
    if not colon or not port_ok or not _is_host(host):
        raise ValueError(
            f"{address!r} is not host:port (for example node2:8080 or [::1]:8080)"
        )


def _is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            return ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            return False
    return HOST_NAME.fullmatch(host) is not None


class AuthConfig(_Section):
    """Authentication (socmeth.auth; docs/auth.md). Durations are in seconds."""

    # None (unset): on when the server listens beyond loopback (socmeth.server).
    enabled: Switch | None = None
    provider: Literal["jwt-basic"] = "jwt-basic"
    # None: generated and kept in the data dir (one node); cluster mode needs it set.
    jwt_secret: SecretStr | None = None
    token_ttl: Int = Field(3600, ge=60, le=86_400)
    login_failures_per_user: Int = Field(5, ge=1, le=1000)
    login_failures_per_address: Int = Field(20, ge=1, le=10_000)
    login_window: Int = Field(300, ge=1, le=86_400)
    # True: /metrics answers anyone, as Prometheus scrapers expect by default.
    metrics_public: Switch = True

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None:
            return None
        size = len(secret.get_secret_value().encode())
        if size < MIN_SECRET_BYTES:
            raise ValueError(
                f"has {size} bytes; HS256 needs at least {MIN_SECRET_BYTES}: make one "
                "with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        return secret


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class Config(_Section):
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    workers: WorkersConfig = WorkersConfig()
    history: HistoryConfig = HistoryConfig()
    limits: LimitsConfig = LimitsConfig()
    cluster: ClusterConfig = ClusterConfig()
    auth: AuthConfig = AuthConfig()
    logging: LoggingConfig = LoggingConfig()

    @property
    def database_url(self) -> str:
        """Return the SQLAlchemy URL of the store, SQLite in the data dir by default."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.server.data_dir / 'socmeth.db').resolve()}"

    @property
    def clustered(self) -> bool:
        """Tell whether the state lives in PostgreSQL, shared by any number of nodes."""
        return not self.database_url.startswith("sqlite:")


SECTIONS: dict[str, type[_Section]] = {
    name: info.annotation  # type: ignore[misc]
    for name, info in Config.model_fields.items()
}


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Merge defaults, the file, the environment and flag overrides, and validate.

    `overrides` maps dotted keys (`server.port`) to values given on the command line;
    None values are ignored so that unset flags do not shadow other sources.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, dict[str, Any]] = {}
    if path is not None:
        _merge(merged, _read_file(path), source=str(path))
    _merge(merged, _from_environ(environ), source="environment")
    for key, value in (overrides or {}).items():
        if value is not None:
            section, _, name = key.partition(".")
            merged.setdefault(section, {})[name] = value
    return _validate(merged)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "must hold a mapping of sections")
    return data


def _from_environ(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Collect overrides from the environment.

    `SOCMETH_*` names whose section is unknown are ignored, because socmeth itself sets
    `SOCMETH_JOB`, `SOCMETH_RUN_ID` and others for jobs; a known section with an
    unknown key is an error.
    """
    found: dict[str, dict[str, Any]] = {}
    for alias, (section, key) in ENV_ALIASES.items():
        if environ.get(alias):
            found.setdefault(section, {})[key] = environ[alias]
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        if section not in SECTIONS or not key:
            continue
        fields = SECTIONS[section].model_fields
        if key not in fields:
            raise ConfigError(name, f"{section} has no key {key!r}")
        typed = _is_scalar(fields[key].annotation)
        found.setdefault(section, {})[key] = _scalar(value) if typed else value
    return found


def _is_scalar(annotation: Any) -> bool:
    """Tell whether a key holds a number or a switch, unset (None) allowed."""
    scalars = (int, float, bool)
    if annotation in scalars:
        return True
    if get_origin(annotation) not in (Union, UnionType):
        return False
    # An optional key's type keeps its Annotated wrapper (Switch | None).
    kinds = [
        get_args(arg)[0] if get_origin(arg) is Annotated else arg
        for arg in get_args(annotation)
    ]
    return any(kind in scalars for kind in kinds)


def _scalar(text: str) -> Any:
    """Read an environment value as YAML does a scalar: "4" is 4, "true" is True."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _merge(
    into: dict[str, dict[str, Any]], data: Mapping[str, Any], source: str
) -> None:
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(str(section), f"unknown section in {source}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(str(section), f"must be a mapping in {source}")
        into.setdefault(section, {}).update(values)


def _validate(merged: dict[str, dict[str, Any]]) -> Config:
    try:
        return Config.model_validate(merged)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        shown = f" (got {first.get('input')!r})"
        if key in SECRET_KEYS:  # a refused secret is still a secret
            shown = ""
        elif first["type"] == "extra_forbidden":
            message, shown = "is not a known key", ""
        elif len(first["loc"]) < 2:  # a rule across keys: the message names them
            shown = ""
        raise ConfigError(key, f"{message}{shown}") from exc
