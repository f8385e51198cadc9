"""The one home for configuration: environment settings and the `reference_sync` section.

Every model forbids unknown keys, so a typo such as `primary_keys` is an error, not a silent
default. `load_config` reports every problem at once, each with its YAML path.
"""

from __future__ import annotations

import difflib
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from refsync.database_url import target_url
from refsync.errors import ConfigError, UsageError
from refsync.table_graph import table_graph_problems, topological_order
from refsync.tracking import TRACKING_COLUMNS

DEFAULT_CONFIG_PATH = Path("config/data_sources.yml")


class Settings(BaseSettings):
    """`WDH_*` environment variables (and `.env`); read lazily, reported only when needed."""

    model_config = SettingsConfigDict(env_prefix="WDH_", env_file=".env", extra="ignore")

    database_url: SecretStr | None = None
    legacy_mysql_host: str | None = None
    legacy_mysql_port: int = 3306
    legacy_mysql_user: str | None = None
    legacy_mysql_password: SecretStr | None = None
    legacy_mysql_database: str | None = None
    legacy_mysql_ssl_ca: Path | None = None
    reference_sync_enabled: bool = True
    reference_sync_config: Path | None = None
    reference_sync_metrics_file: Path | None = None
    reference_sync_ping_url: str | None = None
    reference_sync_max_run_time: str | None = None  # overrides the config's max_run_time

    def require_database_url(self) -> str:
        """The target URL, checked (`target_url`); its absence or a malformed URL is a config
        error (exit 2), found before any I/O."""
        if self.database_url is None or not self.database_url.get_secret_value():
            raise ConfigError(
                "no target database: WDH_DATABASE_URL is not set",
                hint="set WDH_DATABASE_URL=postgresql://user@host/db (or sqlite:///path.db)",
            )
        return target_url(self.database_url.get_secret_value())

    def run_deadline(self, configured: timedelta) -> timedelta:
        """The run's max_run_time: WDH_REFERENCE_SYNC_MAX_RUN_TIME over the config's."""
        value = self.reference_sync_max_run_time
        if value is None or not value.strip():
            return configured
        try:
            return positive_duration(value)
        except ValueError as exc:
            raise ConfigError(f"WDH_REFERENCE_SYNC_MAX_RUN_TIME: {exc}") from None


def load_settings(env_file: Path | None = None) -> Settings:
    """Read the environment; `env_file` replaces the default `.env`."""
    if env_file is not None and not env_file.exists():
        raise ConfigError(f"env file not found: {env_file.resolve()}")
    try:
        return Settings(_env_file=env_file or ".env")
    except ValidationError as exc:
        errors = [f"WDH_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                  for e in exc.errors()]
        raise ConfigError("invalid environment", errors=errors) from None


# ---------------------------------------------------------------- the reference_sync section


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """`90`, `90s`, `5m`, `1h`, `1d` → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected seconds or a duration like 90s, 5m, 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration: use seconds or 90s, 5m, 1h")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


def positive_duration(value: Any) -> timedelta:
    """A duration that must be more than zero."""
    duration = parse_duration(value)
    if duration <= timedelta(0):
        raise ValueError("must be more than 0")
    return duration


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)b?\s*$", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """`1048576`, `512KB`, `64MB`, `1GB` (binary units: 1 MB = 1024 KB) → bytes."""
    if isinstance(value, bool):
        raise ValueError("expected bytes or a size like 64MB")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size: use bytes or 512KB, 64MB, 1GB")
    return int(float(match[1]) * 1024 ** " kmg".index(match[2].lower() or " "))


def known_zone(name: str) -> str:
    """A time zone name the zone database knows (`Asia/Shanghai`, `UTC`)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


# settings written as text in the YAML (`lookback: 2h`, `max_yaml_bytes: 64MB`); each field
# declared `X | None` takes None as it is
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[timedelta, BeforeValidator(positive_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
ZoneName = Annotated[str, AfterValidator(known_zone)]


class RetryPolicy(_Strict):
    attempts: int = Field(3, ge=0, le=20, description="retries after the first try")
    backoff: list[float] = Field(default_factory=lambda: [2.0, 4.0, 8.0], min_length=1)

    @field_validator("backoff")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if any(x < 0 for x in v):
            raise ValueError("backoff seconds must not be negative")
        return v



class TableOptions(_Strict):
    """Settings a table inherits from `defaults` unless it sets its own."""

    batch_size: int = Field(5000, ge=1, le=1_000_000)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    max_delete_ratio: float = Field(0.5, ge=0, le=1)
    on_invalid: Literal["fail", "skip"] = "fail"
    lookback: Duration = timedelta(0)
    lock_timeout: Duration = timedelta(minutes=5)  # waiting for a target table lock
    statement_timeout: Duration = timedelta(0)  # 0: none, whatever the role says
    source_timezone: ZoneName = "Asia/Shanghai"
    max_yaml_bytes: ByteSize = Field(64 * 1024 * 1024, ge=1)  # a larger config_file is refused
    full_every: PositiveDuration | None = None  # incremental tables: read in full this often
    # a full re-sync compares digests first (auto: when it is cheaper than reading all; off:
    # always read, stage and diff everything)
    digests: Literal["auto", "off"] = "auto"


class MySQLPool(_Strict):
    """Pool and timeouts for the legacy MySQL engine (seed AC 2)."""

    pool_size: int = Field(5, ge=1)
    max_overflow: int = Field(2, ge=0)
    connect_timeout: float = Field(30, gt=0)
    read_timeout: float = Field(30, gt=0)


# column types `init-db --create-tables` accepts in a mapping's `type` (ddl.declared_type)
DECLARABLE_TYPES = frozenset((
    "varchar", "character varying", "char", "character", "text", "smallint", "integer", "int",
    "bigint", "numeric", "decimal", "real", "double precision", "boolean", "date", "time",
    "timestamp", "timestamptz", "timestamp with time zone", "json", "jsonb"))
_DECLARED_TYPE = re.compile(r"^\s*([a-z][a-z ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")


class ColumnMap(_Strict):
    source: str = Field(min_length=1)
    target: str = Field(min_length=1)
    # the target column's type for `init-db --create-tables` where the source cannot tell
    # (a YAML file) or should not decide; e.g. varchar(20)
    type: str | None = None

    @field_validator("type")
    @classmethod
    def _declarable(cls, v: str | None) -> str | None:
        match = _DECLARED_TYPE.match(v.lower()) if v is not None else None
        if v is not None and (match is None or match[1] not in DECLARABLE_TYPES):
            raise ValueError(f"type {v!r} is not one of {', '.join(sorted(DECLARABLE_TYPES))} "
                             "(with a length or precision in parentheses where it takes one)")
        return v


class Incremental(_Strict):
    updated_at_column: str = Field(min_length=1)
    where: str | None = None

    @field_validator("where")
    @classmethod
    def _placeholder(cls, v: str | None) -> str | None:
        if v is not None and ":last_synced_at" not in v:
            raise ValueError("incremental.where must use the :last_synced_at placeholder")
        return v


class SqlSourceConfig(_Strict):
    """`legacy_mysql` and `sql`: a table read through SQLAlchemy."""

    table: str = Field(min_length=1)
    columns: list[ColumnMap] = Field(min_length=1)
    incremental: Incremental | None = None
    url: SecretStr | None = None
    url_env: str | None = None

    @field_validator("columns")
    @classmethod
    def _unique_targets(cls, v: list[ColumnMap]) -> list[ColumnMap]:
        seen: set[str] = set()
        for c in v:
            if c.target in seen:
                raise ValueError(f"target column {c.target!r} is mapped twice")
            if c.target in TRACKING_COLUMNS:
                raise ValueError(f"{c.target!r} is a tracking column: refsync sets it itself")
            seen.add(c.target)
        return v


class FileSourceConfig(_Strict):
    """`config_file`: a versioned YAML file holding `schema_version`, `description`, `data`."""

    file_path: Path
    schema_version: str
    columns: list[ColumnMap] | None = None

    @field_validator("schema_version", mode="before")
    @classmethod
    def _as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) else v


SourceType = Literal["legacy_mysql", "config_file", "sql"]
_SOURCE_MODELS: dict[str, type[BaseModel]] = {
    "legacy_mysql": SqlSourceConfig,
    "sql": SqlSourceConfig,
    "config_file": FileSourceConfig,
}


class TableSpec(_Strict):
    """One reference table: where it comes from, where it goes, and how."""

    name: str = Field(min_length=1)
    target_table: str = Field(min_length=1)
    target_schema: str = "public"
    source_type: SourceType
    source_config: SqlSourceConfig | FileSourceConfig
    sync_mode: Literal["upsert", "delete_insert"] = "upsert"
    primary_key: list[str] = Field(min_length=1)
    depends_on: list[str] = Field(default_factory=list)
    enabled: bool = True
    # per-table overrides of `defaults` (None: inherit)
    batch_size: int | None = Field(None, ge=1, le=1_000_000)
    retry: RetryPolicy | None = None
    max_delete_ratio: float | None = Field(None, ge=0, le=1)
    on_invalid: Literal["fail", "skip"] | None = None
    lookback: Duration | None = None
    lock_timeout: Duration | None = None
    statement_timeout: Duration | None = None
    source_timezone: ZoneName | None = None
    max_yaml_bytes: ByteSize | None = Field(None, ge=1)
    full_every: PositiveDuration | None = None
    digests: Literal["auto", "off"] | None = None
    # filled in by ReferenceSyncConfig from `defaults` + the overrides above
    options: TableOptions = Field(default_factory=TableOptions, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _no_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and "options" in data:
            raise ValueError("'options' is not a table setting")
        return data

    @field_validator("source_config", mode="before")
    @classmethod
    def _pick_source_model(cls, v: Any, info: ValidationInfo) -> Any:
        """Validate source_config by source_type, so errors keep their source_config path."""
        model = _SOURCE_MODELS.get(str(info.data.get("source_type")))
        if model is not None and isinstance(v, dict):
            return model.model_validate(v)
        return v

    @field_validator("primary_key", mode="before")
    @classmethod
    def _key_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self) -> TableSpec:
        sc = self.source_config
        if self.source_type == "config_file" and not isinstance(sc, FileSourceConfig):
            raise ValueError("source_config for config_file needs file_path and schema_version")
        if self.source_type != "config_file" and not isinstance(sc, SqlSourceConfig):
            raise ValueError(f"source_config for {self.source_type} needs table and columns")
        if isinstance(sc, SqlSourceConfig):
            if sc.incremental is not None and self.sync_mode != "upsert":
                raise ValueError("an incremental block is only allowed with sync_mode: upsert")
            if self.source_type == "sql" and not (sc.url or sc.url_env):
                raise ValueError("a sql source needs source_config.url or source_config.url_env")
            if self.source_type == "legacy_mysql" and (sc.url or sc.url_env):
                raise ValueError(
                    "legacy_mysql reads WDH_LEGACY_MYSQL_*; use source_type: sql for a URL")
        if self.full_every is not None and self.incremental is None:
            raise ValueError("full_every is only for incremental tables (a table without "
                             "source_config.incremental reads every row on every run)")
        mapped = self.mapped_columns
        if mapped is not None:
            missing = [k for k in self.primary_key if k not in mapped]
            if missing:
                raise ValueError(
                    f"primary_key {missing} is not among the mapped target columns {mapped}")
        if len(set(self.primary_key)) != len(self.primary_key):
            raise ValueError("primary_key lists a column twice")
        return self

    @property
    def mapped_columns(self) -> list[str] | None:
        """Target columns in source order, or None when a YAML file's keys decide them."""
        cols = self.source_config.columns
        return None if cols is None else [c.target for c in cols]

    @property
    def incremental(self) -> Incremental | None:
        sc = self.source_config
        return sc.incremental if isinstance(sc, SqlSourceConfig) else None

    @property
    def qualified_target(self) -> str:
        return f"{self.target_schema}.{self.target_table}"


_CRON_FIELD_MAX = (59, 23, 31, 12, 7)  # minute hour day-of-month month day-of-week
_CRON_FIELD_MIN = (0, 0, 1, 1, 0)


def _plain_cron(expr: str) -> bool:
    """Five fields, each `*` or one number in its range: valid for croniter and every cron.
    Anything else (lists, ranges, steps, names, a sixth field) is left to croniter."""
    fields = expr.split()
    return len(fields) == 5 and all(
        f == "*" or (f.isascii() and f.isdigit() and lo <= int(f) <= hi)
        for f, lo, hi in zip(fields, _CRON_FIELD_MIN, _CRON_FIELD_MAX, strict=True))


class ReferenceSyncConfig(_Strict):
    """The `reference_sync` section."""

    enabled: bool = True
    schedule: str = "0 1 * * *"
    timezone: ZoneName = "Asia/Shanghai"
    defaults: TableOptions = Field(default_factory=TableOptions)
    legacy_mysql: MySQLPool = Field(default_factory=MySQLPool)
    tables: list[TableSpec] = Field(default_factory=list)
    max_run_time: PositiveDuration = timedelta(hours=4)  # the run deadline (DESIGN 4.9)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if _plain_cron(v):  # the usual `0 1 * * *` needs no croniter (its import: 10-30 ms)
            return v
        from croniter import croniter

        if not croniter.is_valid(v):
            raise ValueError(f"{v!r} is not a cron expression (e.g. '0 1 * * *')")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> ReferenceSyncConfig:
        problems = table_graph_problems(
            [(t.name, t.qualified_target, t.depends_on) for t in self.tables])
        if problems:  # load_config finds these in the raw document, with the other errors
            raise PydanticCustomError(_GRAPH_ERROR, "; ".join(problems))
        for t in self.tables:
            overrides = {
                k: getattr(t, k)
                for k in ("batch_size", "retry", "max_delete_ratio", "on_invalid", "lookback",
                          "lock_timeout", "statement_timeout", "source_timezone",
                          "max_yaml_bytes", "full_every", "digests")
                if getattr(t, k) is not None
            }
            if t.incremental is None:  # `defaults.full_every` concerns incremental tables
                overrides["full_every"] = None
            merged = TableOptions.model_validate({**self.defaults.model_dump(), **overrides})
            object.__setattr__(t, "options", merged)
        return self

    def select(self, names: list[str] | None) -> list[TableSpec]:
        """Tables named by `name` or `target_table` (all when none), in dependency order."""
        ordered = topological_order(self.tables)
        if not names:
            return ordered
        wanted: set[str] = set()
        for n in names:
            hits = [t.name for t in self.tables
                    if n in (t.name, t.target_table, t.qualified_target)]
            if not hits:
                known = ", ".join(t.name for t in self.tables) or "(none configured)"
                raise UsageError(f"unknown table {n!r}; known tables: {known}")
            wanted.update(hits)
        return [t for t in ordered if t.name in wanted]


_GRAPH_ERROR = "table_graph"


def _raw_graph_problems(doc: dict[str, Any], prefix: str) -> list[str]:
    """`table_graph_problems` of the tables as written, so they are reported together with
    every other error (pydantic checks between tables only once each table is valid)."""
    tables = doc.get("tables")
    if not isinstance(tables, list):
        return []
    entries: list[tuple[str, str, list[str]]] = []
    for t in tables:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            continue
        depends = t.get("depends_on")
        entries.append((t["name"], f"{t.get('target_schema', 'public')}.{t.get('target_table')}"
                        if isinstance(t.get("target_table"), str) else f"?{len(entries)}",
                        [d for d in depends if isinstance(d, str)]
                        if isinstance(depends, list) else []))
    return [f"{prefix}tables: {p}" for p in table_graph_problems(entries)]


# ---------------------------------------------------------------- loading


class LoadedConfig(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    path: Path
    section: ReferenceSyncConfig


def resolve_config_path(cli_path: Path | None, settings: Settings | None = None) -> Path:
    if cli_path is not None:
        return cli_path
    env = os.environ.get("WDH_REFERENCE_SYNC_CONFIG")
    if env:
        return Path(env)
    if settings is not None and settings.reference_sync_config is not None:
        return settings.reference_sync_config
    return DEFAULT_CONFIG_PATH


def load_config(path: Path) -> LoadedConfig:
    """Parse and validate the config file; every problem at once, as a ConfigError."""
    shown = path.resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file not found: {shown}",
            hint="pass --config PATH or set WDH_REFERENCE_SYNC_CONFIG",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {shown}: {exc.strerror}") from None
    try:
        # libyaml's loader where PyYAML has it: the same documents, a tenth of the time
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{shown}{where}: not valid YAML: {problem}") from None
    if isinstance(doc, dict) and "reference_sync" in doc:
        doc = doc["reference_sync"]
        prefix = "reference_sync."
    else:
        prefix = ""
        if isinstance(doc, dict) and doc and not set(doc) & set(ReferenceSyncConfig.model_fields):
            # neither the section nor the section alone: a misspelled `reference_sync:`
            found = ", ".join(map(str, doc))
            close = difflib.get_close_matches("reference_sync", [str(k) for k in doc], 1)
            raise ConfigError(
                f"no reference_sync section in {shown} (found: {found})",
                hint=f"did you mean reference_sync instead of {close[0]}?" if close
                else "put the settings under a top-level 'reference_sync:' key")
    if not isinstance(doc, dict):
        raise ConfigError(f"{shown}: expected a mapping with a 'reference_sync' section")
    try:
        section = ReferenceSyncConfig.model_validate(doc)
    except ValidationError as exc:
        errors = _format_errors(exc, prefix=prefix, doc=doc) + _raw_graph_problems(doc, prefix)
        raise ConfigError(f"{shown}: {len(errors)} configuration error(s)", errors=errors) from None
    return LoadedConfig(path=path, section=section)


def _format_errors(exc: ValidationError, *, prefix: str = "", doc: Any = None) -> list[str]:
    out: list[str] = []
    for err in exc.errors():
        if err["type"] == _GRAPH_ERROR:  # found in the raw document instead
            continue
        loc = list(err["loc"])
        # pydantic reports union members as extra path parts; drop the model names
        loc = [p for p in loc if not (isinstance(p, str) and p[:1].isupper())]
        path = prefix.rstrip(".")
        for part in loc:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += f".{part}" if path else str(part)
        label = _table_label(doc, loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        out.append(f"{path}{label}: {msg}")
    return out


def _table_label(doc: Any, loc: list[Any]) -> str:
    if isinstance(doc, dict) and len(loc) >= 2 and loc[0] == "tables" and isinstance(loc[1], int):
        tables = doc.get("tables")
        if isinstance(tables, list) and loc[1] < len(tables) and isinstance(tables[loc[1]], dict):
            name = tables[loc[1]].get("name")
            if name:
                return f" (table {name})"
    return ""
