"""Settings: the only place that reads the environment (prefix ``TENANTS_``), validated once at startup."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

import yaml
from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.identifiers import validate_prefix

# How a tenant's schema is made: replaying every migration file into it, or cloning a template database that
# was built by replaying them once (service.template).
Strategy = Literal["replay", "clone"]

_PLACEHOLDERS = frozenset({"changeme", "changemechangeme", "secretsecretsecret", "xxxxxxxxxxxxxxxx"})

# The one server of a deployment that configures none: the catalog's own. Tenant rows made before servers could be
# configured say so too (catalog_0005.sql), so keep a server of this name when moving to several.
DEFAULT_SERVER: Final = "default"
SERVER_NAME_PATTERN: Final = r"^[a-z][a-z0-9_-]{0,30}$"
_SERVER_KEYS: Final = frozenset({"name", "url", "capacity"})


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """A PostgreSQL server tenants live on: its admin URL (CREATEDB, CREATEROLE) and how many tenants it may hold
    (``None``: no limit)."""

    name: str
    url: str = field(repr=False)  # holds the admin password
    capacity: int | None = None


def parse_servers(raw: Any, source: str) -> tuple[ServerSpec, ...]:
    """The server list of ``TENANTS_SERVERS`` or of the file; ValueError naming every problem at once, so that an
    operator fixes the list in one go."""
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{source}: must be a non-empty list of {{name, url, capacity}} objects")
    raw = [{"name": i.name, "url": i.url, "capacity": i.capacity} if isinstance(i, ServerSpec) else i for i in raw]
    problems: list[str] = []
    specs: list[ServerSpec] = []
    for i, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            problems.append(f"server {i}: must be an object with name, url and capacity")
            continue
        found = _server_problems(item)
        problems += [f"server {i} ({item.get('name', '?')!s:.40}): {p}" for p in found]
        if not found:
            specs.append(ServerSpec(item["name"], item["url"], item.get("capacity")))
    names = [str(item["name"]) for item in raw if isinstance(item, dict) and isinstance(item.get("name"), str)]
    problems += [f"server name {n!r} is used more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return tuple(specs)


def _server_problems(item: dict[str, Any]) -> list[str]:
    problems = [f"unknown key {k!r}" for k in sorted(set(item) - _SERVER_KEYS, key=str)]
    name, url, capacity = item.get("name"), item.get("url"), item.get("capacity")
    if not isinstance(name, str) or not re.fullmatch(SERVER_NAME_PATTERN, name):
        problems.append(f"name must match {SERVER_NAME_PATTERN}")
    if not isinstance(url, str) or (found := _url_problem(url)) is not None:
        problems.append(found if isinstance(url, str) and found else "url must be a postgresql:// URL")
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1):
        problems.append("capacity must be a whole number of at least 1 (or left out: no limit)")
    return problems


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"url is malformed: {exc}"
    if parts.scheme not in ("postgresql", "postgres"):
        return "url must start with postgresql://"
    if not parts.hostname and "host" not in parse_qs(parts.query):
        return "url names no host"
    return None


def load_servers_file(path: Path) -> tuple[ServerSpec, ...]:
    """A YAML (or JSON, which YAML reads too) file holding the same list as ``TENANTS_SERVERS``."""
    source = f"TENANTS_SERVERS_FILE {path}"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{source}: cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML or JSON: {exc}") from None
    return parse_servers(raw, source)


class Settings(BaseSettings):
    """Service settings; every field can be set as ``TENANTS_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TENANTS_", extra="ignore")
    _server_specs: tuple[ServerSpec, ...] = PrivateAttr(default=())

    database_url: SecretStr | None = Field(
        default=None,
        description="Admin URL of the PostgreSQL server (role with CREATEDB and CREATEROLE). "
        "Unset: start an embedded PostgreSQL in data_dir.",
    )
    data_dir: Path = Field(default=Path(".tenants"), description="Embedded PostgreSQL data (when no database_url).")
    embedded_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of the embedded PostgreSQL on 127.0.0.1. Unset: a free port chosen at the first start and "
        "kept in data_dir, so tenant connection URLs stay valid across restarts.",
    )
    migrations_dir: Path = Field(default=Path("migrations"), description="Folder of NNNN_name.sql files.")
    seeds_dir: Path | None = Field(
        default=None, description="Seed files, run in name order; default <migrations_dir>/seeds."
    )
    db_prefix: str = Field(default="tenant_", description="Prefix of tenant database names (at most 23 characters).")
    catalog_database: str = Field(default="tenants_catalog", description="Database holding the control catalog.")
    busy_timeout: float = Field(
        default=60.0, gt=0, description="Seconds a request waits for another operation on the same tenant."
    )
    statement_timeout: float = Field(default=0, ge=0, description="Per-statement timeout in migrations (0: none).")
    pool_size: int = Field(default=10, ge=2, le=200, description="Connections to the catalog database.")
    max_parallel: int = Field(
        default=4,
        ge=1,
        le=100,
        description="Operations that change tenants (create, migrate, delete, rotate) running at once; more wait in "
        "line. Each holds a catalog connection and a tenant connection: must be below pool_size.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="json: one JSON object per line; text: one readable line. Unset: text when the logs go to a "
        "terminal, else json.",
    )
    drift_interval: float = Field(
        default=0, ge=0, description="Seconds between drift checks of every tenant (0: never; POST /drift-checks)."
    )
    drift_concurrency: int = Field(default=4, ge=1, le=50, description="Tenants a drift sweep checks at once.")
    recovery_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between looks for tenants left in flight (provisioning, deleting) by an outage or a dead "
        "process; the first look runs at start, in the background.",
    )
    queue_workers: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Queued creations (Prefer: respond-async) this process builds at once; each also takes one of "
        "max_parallel's slots (0: this process only queues them, other replicas build them).",
    )
    queue_builder: Literal["process", "inline"] = Field(
        default="process",
        description="Where `tenantctl serve` runs its queue workers: process (a child process it supervises: "
        "restarted if it dies, stopped with it; builds never hold up the HTTP answers) or inline (in the HTTP "
        "process's event loop).",
    )
    queue_poll_interval: float = Field(
        default=0.5, gt=0, le=60, description="Seconds an idle queue worker waits before looking for work again."
    )
    queue_attempts: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Starts of a queued creation before an interrupted one is failed instead of queued again.",
    )
    rollout_poll_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between looks for running rollouts whose driving process died (any replica takes one).",
    )
    strategy: Strategy = Field(
        default="replay",
        description="How POST /tenants makes a tenant's schema when the request names no strategy: replay (every "
        "file runs in the new database) or clone (a copy of a checked template database, built by replaying once).",
    )
    journal: Literal["strict", "ignore"] = Field(
        default="strict",
        description="strict: a folder with meta/_journal.json runs the journal's entries in journal order, and the "
        "service refuses to start on a journal problem; ignore: run the folder as NNNN_name.sql files, journal unread.",
    )
    layout: Literal["auto", "nnnn", "drizzle", "golang-migrate", "flyway", "dbmate", "goose", "prisma"] = Field(
        default="auto",
        description="The tool that wrote migrations_dir (auto: recognised from the folder): nnnn (NNNN_name.sql), "
        "drizzle, golang-migrate, flyway, dbmate, goose or prisma.",
    )
    tool_table: bool = Field(
        default=True,
        description="Keep the tool's own history table (schema_migrations, flyway_schema_history, goose_db_version, "
        "_prisma_migrations) in each tenant database as the tool writes it, in the same transaction as each file.",
    )
    fleet_cache_seconds: float = Field(
        default=1.0, ge=0, description="GET /fleet and /metrics counts may be this many seconds old (0: always fresh)."
    )
    servers: Annotated[tuple[ServerSpec, ...] | None, NoDecode] = Field(
        default=None,
        description='Servers tenants live on, a JSON list: [{"name": "a", "url": "postgresql://...", '
        '"capacity": 500}]. Unset: the catalog\'s server, named default, with no limit.',
    )
    servers_file: Path | None = Field(default=None, description="A YAML or JSON file holding the servers list.")
    tenant_connections: int = Field(
        default=50,
        ge=0,
        le=10_000,
        description="Idle tenant-database connections kept for reads (schema, drift, status), all servers together "
        "(0: open one per read).",
    )
    revoke_connect: tuple[str, ...] = Field(
        default=(),
        description='Databases (a JSON list, e.g. ["postgres", "template1"]) on each server whose CONNECT the service '
        "revokes from PUBLIC at start, so tenant roles cannot log in there; needs their owner or a superuser. The "
        "embedded cluster always gets postgres and template1.",
    )
    tenant_connection_idle: float = Field(
        default=60.0, gt=0, le=86_400, description="Seconds a kept tenant-database connection may stay idle."
    )
    connection_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Fraction of each server's usable connections (max_connections minus the reserved slots, read "
        "from the server) this process may hold open, pools included; with several replicas, give each its share "
        "(their sum below 1).",
    )
    connection_ceiling: int = Field(
        default=0, ge=0, le=100_000, description="Connections this process may hold open per server (0: by share)."
    )
    connection_wait: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Seconds a request waits for a connection when a server's budget is spent, then answers 503.",
    )
    schema_cache_seconds: float = Field(
        default=0,
        ge=0,
        le=86_400,
        description="0: GET /tenants/{id}/schema reads each tenant's history live. Above 0: a level read before is "
        "answered from memory and re-read in the background once this old (for dashboards cycling through many "
        "tenants); any change made through the service is seen at once.",
    )
    backup_dir: Path | None = Field(
        default=None,
        description="Folder of tenant backups (pg_dump archives and manifests); default <data_dir>/backups.",
    )
    backup_retention: int = Field(
        default=7, ge=1, le=10_000, description="Backups kept per tenant: a new one removes the oldest past this."
    )
    delete_retention: float = Field(
        default=7 * 86_400,
        ge=0,
        description="Seconds a deleted tenant can be undeleted; then it is purged (database, role, backups).",
    )
    failpoint: str | None = Field(
        default=None, description="Test only: a step name at which the process kills itself (crash tests)."
    )
    admin_token: SecretStr | None = Field(default=None, description="Bearer token that may do everything.")
    read_token: SecretStr | None = Field(default=None, description="Bearer token that may only read (GET).")

    @field_validator("db_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        return validate_prefix(value)

    @field_validator("catalog_database")
    @classmethod
    def _check_catalog(cls, value: str) -> str:
        if not value.replace("_", "").isalnum() or not value.islower() or len(value) > 63:
            raise ValueError("catalog_database must be lower-case letters, digits and _")
        return value

    @field_validator("servers", mode="before")
    @classmethod
    def _check_servers(cls, value: Any) -> tuple[ServerSpec, ...] | None:
        return None if value is None else parse_servers(value, "TENANTS_SERVERS")

    @model_validator(mode="after")
    def _load_servers(self) -> Settings:
        if self.servers is not None and self.servers_file is not None:
            raise ValueError("set TENANTS_SERVERS or TENANTS_SERVERS_FILE, not both")
        if self.servers_file is not None:
            self._server_specs = load_servers_file(self.servers_file)
        else:
            self._server_specs = self.servers or ()
        return self

    @field_validator("admin_token", "read_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("tokens must be at least 16 characters")
        if value is not None and value.get_secret_value().lower() in _PLACEHOLDERS:
            raise ValueError("refusing a placeholder token; generate one (e.g. `openssl rand -hex 32`)")
        return value

    @model_validator(mode="after")
    def _check_parallel(self) -> Settings:
        if self.max_parallel >= self.pool_size:
            raise ValueError("max_parallel must be below pool_size: each running operation holds a catalog connection")
        return self

    @property
    def server_specs(self) -> tuple[ServerSpec, ...]:
        """The configured servers, in configuration order; empty when none are (one server: the catalog's)."""
        return self._server_specs

    @property
    def auth_enabled(self) -> bool:
        return self.admin_token is not None or self.read_token is not None

    @property
    def backup_path(self) -> Path:
        return self.backup_dir if self.backup_dir is not None else self.data_dir / "backups"

    @property
    def seeds_path(self) -> Path:
        return self.seeds_dir if self.seeds_dir is not None else self.migrations_dir / "seeds"


class ClientSettings(BaseSettings):
    """What the CLI needs to reach a running service."""

    model_config = SettingsConfigDict(env_prefix="TENANTS_", extra="ignore")

    url: str = Field(default="http://127.0.0.1:8000", description="Base URL of the service.")
    token: SecretStr | None = Field(default=None, description="Bearer token sent to the service.")
    timeout: float = Field(default=300.0, gt=0, description="Seconds to wait for an answer.")


def builder_environment(workers: int, ceiling: int) -> dict[str, str]:
    """The environment of ``tenantctl serve``'s queue builder process: this process's, with the builder's own
    settings: ``workers`` queue workers each with one of as many slots, a catalog pool to match, no kept tenant
    connections, and ``ceiling`` connections per server (lent out of this process's budget). The catalog's URL is
    not here: it goes on the child's standard input (it may carry the embedded cluster's password)."""
    env = dict(os.environ)
    env.update(
        TENANTS_QUEUE_WORKERS=str(workers),
        TENANTS_QUEUE_BUILDER="inline",
        TENANTS_MAX_PARALLEL=str(workers),
        TENANTS_POOL_SIZE=str(workers + 1),
        TENANTS_TENANT_CONNECTIONS="0",
        TENANTS_CONNECTION_CEILING=str(ceiling),
    )
    env.pop("TENANTS_DATABASE_URL", None)
    return env
