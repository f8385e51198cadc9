"""Builders shared by the sync tests: a SQLite "legacy" source, the target table, the config
file, and readers for the target's rows and refsync's state tables.

Everything works the same on both targets (`target_url` is a PostgreSQL or a SQLite URL);
values read back are normalised so that one expectation fits both.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from pydantic import SecretStr
from sqlalchemy.dialects import postgresql, sqlite

from pg_databases import PgDatabases
from refsync import state
from refsync.config import LoadedConfig, Settings, load_config
from refsync.demo_data import TRACKING_COLUMN_DDL
from refsync.model import RunResult, TableResult

SCHEMA = "business"
TABLE = "年金计划"
KEY = "计划代码"
# source column -> target column of the `plans` source table
PLAN_COLUMNS = [("code", "计划代码"), ("name", "计划名称"), ("kind", "计划类型"),
                ("amount", "金额"), ("start_date", "成立日期")]
TARGETS = [t for _, t in PLAN_COLUMNS]
TRACKING = ("_source", "_needs_review", "_derived_from_domain", "_derived_at")
AUTHORITATIVE = {"_source": "authoritative", "_needs_review": False,
                 "_derived_from_domain": None, "_derived_at": None}
AUTO_DERIVED = {"_source": "auto_derived", "_needs_review": True,
                "_derived_from_domain": "annuity", "_derived_at": "set"}
COUNT_NAMES = ("read", "inserted", "updated", "deleted", "unchanged", "promoted", "rejected")
RUN_KEY_RE = r"reference_sync_\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+08:00"
T0 = "2024-05-01 10:00:00"
# the four tracking columns as the production DDL declares them, for CREATE TABLE
TRACKING_DDL = ", ".join(f'"{c}" {ddl}' for c, ddl in TRACKING_COLUMN_DDL.items())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0,
               interval: float = 0.02) -> float:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds. The
    seconds waited. Tests synchronise on a condition, never on a fixed sleep."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout:g} s waiting until {what}", pytrace=False)
        time.sleep(interval)
    return time.monotonic() - started


def is_pg(url: str) -> bool:
    return url.startswith("postgres")


@contextmanager
def engine_for(url: str) -> Iterator[sa.Engine]:
    """An engine that is always disposed (pytest runs with filterwarnings=error)."""
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def quote(url: str, *parts: str) -> str:
    """A quoted, schema-qualified (PostgreSQL only) table reference."""
    dialect = postgresql.dialect() if is_pg(url) else sqlite.dialect()
    q = dialect.identifier_preparer.quote
    return ".".join(q(p) for p in (parts if is_pg(url) else parts[-1:]))


# ---------------------------------------------------------------- the legacy source (SQLite)


def plan_row(i: int, *, name: str | None = None, kind: str | None = "",
             amount: Any = "", start: Any = "2020-01-01",
             updated_at: str | None = T0) -> tuple[Any, ...]:
    """A row of `plans`: (code, name, kind, amount, start_date, updated_at)."""
    return (f"P{i:05d}",
            name if name is not None else f"企业年金计划{i}",
            (None if i % 7 == 0 else ("DB", "DC")[i % 2]) if kind == "" else kind,
            (None if i % 11 == 0 else f"{i}.{i % 100:02d}") if amount == "" else amount,
            start, updated_at)


def expected_row(row: tuple[Any, ...], **tracking: Any) -> dict[str, Any]:
    """The target row (normalised as `read_rows` gives it) a source row becomes."""
    code, name, kind, amount, start, _ = row
    return {"计划代码": code, "计划名称": name, "计划类型": kind,
            "金额": None if amount is None else Decimal(str(amount)),
            "成立日期": start, **(tracking or AUTHORITATIVE)}


class LegacyDb:
    """A SQLite file standing in for the legacy database, written with the stdlib driver."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        con = sqlite3.connect(self.path)
        try:
            con.execute(sql, params)
            con.commit()
        finally:
            con.close()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        con = sqlite3.connect(self.path)
        try:
            con.executemany(sql, rows)
            con.commit()
        finally:
            con.close()

    def create_plans(self, rows: Iterable[tuple[Any, ...]] = (), *, table: str = "plans",
                     primary_key: bool = True) -> LegacyDb:
        pk = " PRIMARY KEY" if primary_key else ""
        self.execute(f'CREATE TABLE "{table}" (code VARCHAR(20){pk}, name VARCHAR(100), '
                     "kind VARCHAR(20), amount NUMERIC(12,2), start_date DATE, "
                     "updated_at DATETIME)")
        self.add_plans(rows, table=table)
        return self

    def add_plans(self, rows: Iterable[tuple[Any, ...]], *, table: str = "plans") -> None:
        self.executemany(f'INSERT INTO "{table}" VALUES (?, ?, ?, ?, ?, ?)', rows)

    def put_plans(self, rows: Iterable[tuple[Any, ...]], *, table: str = "plans") -> None:
        self.executemany(f'INSERT OR REPLACE INTO "{table}" VALUES (?, ?, ?, ?, ?, ?)', rows)

    def delete_plans(self, codes: Iterable[str], *, table: str = "plans") -> None:
        self.executemany(f'DELETE FROM "{table}" WHERE code = ?', [(c,) for c in codes])


# ---------------------------------------------------------------- the target


def tracking_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("_source", sa.String(20), nullable=False, server_default="authoritative"),
        sa.Column("_needs_review", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("_derived_from_domain", sa.String(50)),
        sa.Column("_derived_at", sa.DateTime(timezone=True)),
    ]


def plan_columns(*, primary_key: bool = True, drop: Sequence[str] = ()) -> list[sa.Column[Any]]:
    cols = [
        sa.Column("计划代码", sa.String(20), primary_key=primary_key, nullable=False),
        sa.Column("计划名称", sa.String(100), nullable=False),
        sa.Column("计划类型", sa.String(20)),
        sa.Column("金额", sa.Numeric(12, 2)),
        sa.Column("成立日期", sa.Date),
    ]
    return [c for c in cols if c.name not in drop]


def create_tables(url: str, build: Any, *, schema: str = SCHEMA) -> None:
    """`build(metadata)` defines tables; they are created in `schema` (PostgreSQL only)."""
    with engine_for(url) as engine, engine.begin() as conn:
        md = sa.MetaData(schema=schema if is_pg(url) else None)
        if is_pg(url):
            conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
        build(md)
        md.create_all(conn)


def create_target(url: str, *, table: str = TABLE, schema: str = SCHEMA,
                  columns: list[sa.Column[Any]] | None = None,
                  tracking: bool = True) -> None:
    """The plans target table: mapped columns (primary key 计划代码) and tracking columns."""
    cols = plan_columns() if columns is None else columns

    def build(md: sa.MetaData) -> None:
        sa.Table(table, md, *cols, *(tracking_columns() if tracking else []))

    create_tables(url, build, schema=schema)


def _to_db(value: Any, pg: bool) -> Any:
    if pg:
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def insert_rows(url: str, rows: list[dict[str, Any]], *, table: str = TABLE,
                schema: str = SCHEMA) -> None:
    """Write rows straight into a target table, as another tool (the backfill job) would."""
    if not rows:
        return
    pg = is_pg(url)
    t = sa.table(table, *(sa.column(c) for c in rows[0]), schema=schema if pg else None)
    with engine_for(url) as engine, engine.begin() as conn:
        conn.execute(t.insert(), [{k: _to_db(v, pg) for k, v in r.items()} for r in rows])


def execute(url: str, sql: str) -> None:
    with engine_for(url) as engine, engine.begin() as conn:
        conn.exec_driver_sql(sql)


def _norm(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "_needs_review":
        return bool(value)
    if name == "_derived_at":
        return "set"
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def read_rows(url: str, *, table: str = TABLE, schema: str = SCHEMA,
              key: str = KEY) -> list[dict[str, Any]]:
    """All rows of a target table, normalised (numbers as Decimal, dates as ISO text, the
    `_derived_at` timestamp as "set"), sorted by `key`."""
    ref = quote(url, schema, table)
    with engine_for(url) as engine, engine.connect() as conn:
        result = conn.exec_driver_sql(f"SELECT * FROM {ref}")
        rows = [{k: _norm(k, v) for k, v in r._mapping.items()} for r in result]
    return sorted(rows, key=lambda r: r[key])


def by_key(rows: list[dict[str, Any]], key: str = KEY) -> dict[Any, dict[str, Any]]:
    return {r[key]: r for r in rows}


# ---------------------------------------------------------------- config and settings


def sql_table(name: str, legacy: LegacyDb, *, table: str = "plans", target_table: str = TABLE,
              mode: str = "upsert", columns: Sequence[tuple[str, str]] = PLAN_COLUMNS,
              key: str | list[str] = KEY, incremental: dict[str, Any] | None = None,
              **options: Any) -> dict[str, Any]:
    """A `source_type: sql` table entry reading `table` of the legacy SQLite file."""
    source: dict[str, Any] = {
        "url": legacy.url, "table": table,
        "columns": [{"source": s, "target": t} for s, t in columns]}
    if incremental is not None:
        source["incremental"] = incremental
    return {"name": name, "target_table": target_table, "target_schema": SCHEMA,
            "source_type": "sql", "source_config": source, "sync_mode": mode,
            "primary_key": key, **options}


def yaml_table(name: str, path: Path, *, target_table: str, key: str, mode: str = "upsert",
               **options: Any) -> dict[str, Any]:
    return {"name": name, "target_table": target_table, "target_schema": SCHEMA,
            "source_type": "config_file",
            "source_config": {"file_path": str(path), "schema_version": "1.0"},
            "sync_mode": mode, "primary_key": key, **options}


def write_yaml_source(path: Path, data: list[dict[str, Any]] | None, *,
                      version: str = "1.0") -> Path:
    doc = {"schema_version": version, "description": "产品线", "data": data}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def write_config(directory: Path, tables: list[dict[str, Any]], **section: Any) -> LoadedConfig:
    """A config file with a `reference_sync` section (no retries, no waits), loaded."""
    defaults = {"retry": {"attempts": 0, "backoff": [0]}, **section.pop("defaults", {})}
    doc = {"reference_sync": {"enabled": True, "timezone": "Asia/Shanghai",
                              "defaults": defaults, "tables": tables, **section}}
    path = directory / "data_sources.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_config(path)


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"reference_sync_enabled": True, **overrides}
    return Settings(_env_file=None, database_url=SecretStr(url), **values)  # type: ignore[call-arg]


# ---------------------------------------------------------------- results and state


def table_result(result: RunResult, name: str) -> TableResult:
    hits = [t for t in result.tables if t.name == name]
    assert len(hits) == 1, [t.name for t in result.tables]
    return hits[0]


def counts(res: TableResult) -> dict[str, int]:
    return {n: getattr(res, n) for n in COUNT_NAMES}


def assert_counts(res: TableResult, **expected: int) -> None:
    """The counts given (the others 0), and `read` the sum of the five outcomes."""
    want = {n: expected.get(n, 0) for n in COUNT_NAMES}
    got = counts(res)
    assert got == want, f"counts {got}, expected {want} (status {res.status}: {res.error})"
    assert res.read == (res.inserted + res.updated + res.promoted + res.unchanged
                        + res.rejected)


def has_state(url: str) -> bool:
    """Whether refsync created anything of its own: state tables (or, on PG, its schema)."""
    with engine_for(url) as engine, engine.connect() as conn:
        insp = sa.inspect(conn)
        if is_pg(url):
            return "refsync" in insp.get_schema_names()
        names = insp.get_table_names()
        return any(n.startswith("refsync_") for n in names)


def state_table_names(url: str) -> set[str]:
    """refsync's own tables as they are named in the target."""
    with engine_for(url) as engine, engine.connect() as conn:
        insp = sa.inspect(conn)
        if is_pg(url):
            if "refsync" not in insp.get_schema_names():
                return set()
            return {f"refsync.{n}" for n in insp.get_table_names(schema="refsync")}
        return {n for n in insp.get_table_names() if n.startswith("refsync")}


def read_state(url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(sync_state rows by table name, sync_runs rows oldest first)."""
    with engine_for(url) as engine, engine.connect() as conn:
        t = state.tables_for(conn.dialect.name)
        st = {r.table_name: dict(r._mapping) for r in conn.execute(sa.select(t.state))}
        runs = [dict(r._mapping) for r in conn.execute(
            sa.select(t.runs).order_by(t.runs.c.started_at, t.runs.c.table_name))]
    return st, runs


def count_copy_text(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows staged as server-made COPY text, counted (the fast path was really taken)."""
    from refsync.targets.base import SqlTableWriter

    staged: list[int] = []
    real = SqlTableWriter.stage_text

    def counting(self: SqlTableWriter, text: str | bytes, rows: int) -> None:
        staged.append(rows)
        real(self, text, rows)

    monkeypatch.setattr(SqlTableWriter, "stage_text", counting)
    return staged


# ---------------------------------------------------------------- legacy MySQL → PostgreSQL runs


def legacy_settings(pg_url: str, mysql: sa.URL, **overrides: Any) -> Settings:
    """Settings for a run from the MySQL database `mysql` into `pg_url`."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=SecretStr(pg_url), legacy_mysql_host=mysql.host,
        legacy_mysql_port=mysql.port or 3306, legacy_mysql_user=mysql.username,
        legacy_mysql_password=SecretStr(mysql.password or ""),
        legacy_mysql_database=mysql.database, **overrides)


def sync_section(tmp_path: Path, section: dict[str, Any], pg_url: str, mysql: sa.URL,
                 **kwargs: Any) -> RunResult:
    """Write a `reference_sync` section to a file and run `api.sync` on it."""
    from refsync import api

    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump({"reference_sync": section}, allow_unicode=True),
                    encoding="utf-8")
    return api.sync(load_config(path), legacy_settings(pg_url, mysql), **kwargs)


@contextmanager
def sibling_database(pg_databases: PgDatabases) -> Iterator[str]:
    """A second, empty PostgreSQL database beside the test's `pg_url` (its URL): the same
    sync, another way, for a side-by-side comparison."""
    with pg_databases.database() as url:
        yield url


def refsync_sessions(url: str) -> list[tuple[Any, ...]]:
    """refsync's sessions on `url`'s database: (pid, state, last query, wait event type,
    seconds since that query started)."""
    return pg_rows(url, "SELECT pid, state, query, wait_event_type, "
                        "extract(epoch FROM clock_timestamp() - query_start)::float "
                        "FROM pg_stat_activity WHERE application_name = 'refsync' "
                        "AND datname = current_database()")


def refsync_copying(url: str) -> bool:
    """A refsync session on `url` has started a COPY: rows are streaming to the target."""
    return any("COPY" in (s[2] or "") for s in refsync_sessions(url))


def pg_rows(pg_url: str, query: str) -> list[tuple[Any, ...]]:
    """The rows of one query on `pg_url`."""
    with engine_for(pg_url) as engine, engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(query)]


def table_summary(result: RunResult, *keys: str) -> dict[str, Any]:
    """The first table's `--json` fields `keys` (rejects sorted, for comparison)."""
    doc = result.as_json()["tables"][0]
    doc["rejects"] = sorted(doc["rejects"], key=lambda r: sorted(r["key"].items()))
    return {k: doc[k] for k in keys}


class KillTargetSessionOnce:
    """A progress hook that terminates refsync's session on the target once, at the first
    rows, picking the session by `where` (a condition on pg_stat_activity)."""

    def __init__(self, url: str, where: str) -> None:
        self.url, self.where = url, where
        self.killed = 0

    def start(self, table: str, total: int | None) -> None:
        pass

    def advance(self, table: str, rows: int) -> None:
        if self.killed:
            return
        with engine_for(self.url) as engine, engine.connect() as conn:
            self.killed = len(conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'refsync' AND datname = current_database() "
                f"AND pid <> pg_backend_pid() AND {self.where}")).fetchall())

    def finish(self, table: str, result: TableResult) -> None:
        pass
