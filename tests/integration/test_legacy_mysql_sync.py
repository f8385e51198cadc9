"""The legacy MySQL source end to end (issue 3; DESIGN 3.1, 3.2, 4.4, 4.5, 4.7, 4.8).

Source: a fresh MariaDB database for the module holding the seed's three legacy tables
(`annuity_plan`, `portfolio_plan`, `organization`, shaped as bench/gen_mysql.py makes them,
rows from refsync.demo_data's generators, dirty on purpose). Target: a fresh PostgreSQL
database per test with the production DDL (`reference_tables_postgres_ddl()`). Config: the
shipped config/data_sources.yml, either as it is or as a copy with short retry back-offs and
the product lines file given by its absolute path. Runs go through `refsync.api.sync`, and
through the CLI (`refsync sync --json`) where exit codes and captured output matter.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import os
import random
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import yaml
from pydantic import SecretStr
from tcp_proxy import CuttingProxy
from typer.testing import CliRunner

from refsync import api
from refsync import demo_data as dd
from refsync.cli import app
from refsync.config import LoadedConfig, Settings, SqlSourceConfig, load_config
from refsync.model import RunResult, TableResult
from refsync.sources import dispose_engines

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SEED_CONFIG = REPO / "config" / "data_sources.yml"
PRODUCT_LINES_FILE = REPO / "config" / "reference_data" / "product_lines.yml"
ROWS = 10_000
SHORT_RETRY = {"attempts": 3, "backoff": [0.1, 0.1, 0.1]}
LEGACY = ("年金计划", "组合计划", "组织架构")
YAML_TABLE = "产品线"
COUNT_NAMES = ("read", "inserted", "updated", "deleted", "unchanged", "promoted", "rejected")
AUTHORITATIVE = ("authoritative", False, None, None)
SECRET = "Zebra-Secret-4711"
SECRET_USER = f"refsync_zebra_{os.getpid()}"  # test sessions may run side by side

# The seed's mapping (Story 6.2.4), as config/data_sources.yml ships it.
SEED_MAPPING: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "年金计划": ("annuity_plan", [("plan_code", "年金计划号"), ("plan_name", "计划名称"),
                              ("plan_type", "计划类型"), ("customer_name", "客户名称")],
              "年金计划号"),
    "组合计划": ("portfolio_plan", [("portfolio_code", "组合代码"), ("plan_code", "年金计划号"),
                                ("portfolio_name", "组合名称"), ("portfolio_type", "组合类型")],
              "组合代码"),
    "组织架构": ("organization", [("org_code", "组织代码"), ("org_name", "组织名称")], "组织代码"),
}
NAME_COLUMN = {"annuity_plan": "plan_name", "portfolio_plan": "portfolio_name",
               "organization": "org_name"}

# Values that must round-trip exactly (the seed's legacy data is full of them).
SPECIAL_TEXTS: list[str | None] = [
    None, "", " ", "\t", "tab\tinside", "line1\nline2", "cr\rcrlf\r\n", "back\\slash", "\\N",
    "NULL", "null", "it's", '"double"', "`backtick`", "emoji 🚀👍🏽", "CJK-B 𠀀𪚥", "  padded  ",
    "\u3000全角空格\u3000", "年金\\t计划", "a\u00a0b", "%s %(x)s {}", "ends with backslash\\",
]

DIRT = dd.Dirt(null_customer_rate=0.02, null_updated_at_rate=0.0, dirty_rate=0.01,
               kinds=tuple(dd.DIRTY_KINDS))


def _load_gen_mysql() -> ModuleType:
    """bench/gen_mysql.py (not a package): its DDL is the legacy tables' shape."""
    spec = importlib.util.spec_from_file_location("refsync_bench_gen_mysql",
                                                  REPO / "bench" / "gen_mysql.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gen_mysql = _load_gen_mysql()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def db(mysql_db_url: str) -> sa.URL:
    return sa.engine.make_url(mysql_db_url)


@pytest.fixture(scope="module")
def admin(db: sa.URL) -> Iterator[sa.Engine]:
    """A read-write engine on the module's MariaDB database, for building and changing tables."""
    engine = sa.create_engine(db, connect_args={"charset": "utf8mb4"}, poolclass=sa.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _isolate() -> Iterator[None]:
    """Records of the `refsync` logger reach caplog (a CLI run elsewhere may have pointed its
    handler at a closed stream); every legacy engine is disposed after each test."""
    logger = logging.getLogger("refsync")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    for h in saved[0]:
        logger.removeHandler(h)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
    try:
        yield
    finally:
        dispose_engines()
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()
        for h in saved[0]:
            logger.addHandler(h)
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
        gc.collect()  # a PyMySQL cursor left half-read would complain here, failing the test


def _rows(table: str) -> list[list[Any]]:
    if table == "annuity_plan":
        rows = [list(r) for r in dd.iter_annuity_plan_rows(ROWS, 7, DIRT)]
    elif table == "portfolio_plan":
        rows = [list(r) for r in dd.iter_portfolio_plan_rows(ROWS, ROWS, 7, DIRT)]
    else:
        rows = [list(r) for r in dd.iter_organization_rows(ROWS, 7, DIRT)]
    name_at = 2 if table == "portfolio_plan" else 1
    for i, text in enumerate(SPECIAL_TEXTS):  # the first rows carry every trap for sure
        rows[i][name_at] = text
        if table == "annuity_plan":  # customer_name too, in another order
            rows[i][3] = SPECIAL_TEXTS[-1 - i]
    if table == "organization":
        for r in rows[100:103]:  # no cursor: only full runs read them
            r[-1] = None
        rows[103][-1] = "0000-00-00 00:00:00"  # a zero-date cursor, as legacy data has
    return rows


@pytest.fixture(scope="module")
def seed(admin: sa.Engine) -> dict[str, int]:
    """The three legacy tables, ROWS rows each, as bench/gen_mysql.py shapes them.

    test_seed_tables_sync_full_incremental_and_full_again changes 1% of them; the other tests
    compare the target with whatever the source holds when they run."""
    counts = {}
    with admin.begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = ''")  # lets the zero date in
        for table in dd.LEGACY_TABLES:
            conn.exec_driver_sql(gen_mysql.mysql_ddl(table.name, 0))
            rows = _rows(table.name)
            marks = ", ".join("%s" for _ in table.columns)
            conn.exec_driver_sql(
                f"INSERT INTO `{table.name}` ({', '.join(table.columns)}) VALUES ({marks})",
                [tuple(r) for r in rows])
            conn.exec_driver_sql(
                f"ALTER TABLE `{table.name}` ADD INDEX `ix_{table.name}_updated_at` (updated_at)")
            counts[table.name] = len(rows)
    return counts


@pytest.fixture
def warehouse(pg_url: str) -> str:
    """A fresh PostgreSQL database with the production DDL of the four reference tables."""
    pg_execute(pg_url, dd.reference_tables_postgres_ddl())
    return pg_url


# ---------------------------------------------------------------- helpers


def pg_execute(url: str, sql: str) -> None:
    conninfo = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[call-overload]  # no parameters: several statements


def pg_query(url: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params or {}))
    finally:
        engine.dispose()


def seed_doc() -> dict[str, Any]:
    return yaml.safe_load(SEED_CONFIG.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def seed_config(tmp_path: Path, change: Callable[[dict[str, Any]], None] | None = None, *,
                retry: dict[str, Any] | None = SHORT_RETRY, name: str = "data_sources.yml",
                ) -> LoadedConfig:
    """config/data_sources.yml with short back-offs (`defaults.retry`) and the product lines
    file by its absolute path; `change(section)` may edit the section further."""
    doc = seed_doc()
    section = doc["reference_sync"]
    if retry is not None:
        section["defaults"] = {"retry": retry}
    for t in section["tables"]:
        if t["source_type"] == "config_file":
            t["source_config"]["file_path"] = str(REPO / t["source_config"]["file_path"])
    if change is not None:
        change(section)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_config(path)


def table_entry(section: dict[str, Any], name: str) -> dict[str, Any]:
    [entry] = [t for t in section["tables"] if t["name"] == name]
    return entry  # type: ignore[no-any-return]


def make_settings(pg: str, db: sa.URL | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": SecretStr(pg), "reference_sync_enabled": True}
    if db is not None:
        values.update(legacy_mysql_host=db.host, legacy_mysql_port=db.port or 3306,
                      legacy_mysql_user=db.username,
                      legacy_mysql_password=SecretStr(db.password or ""),
                      legacy_mysql_database=db.database)
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def closed_port() -> int:
    """A port nothing listens on: a listening socket's port, just closed."""
    s = socket.create_server(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def result_of(result: RunResult, name: str) -> TableResult:
    hits = [t for t in result.tables if t.name == name]
    assert len(hits) == 1, [t.name for t in result.tables]
    return hits[0]


def assert_counts(res: TableResult, **expected: int) -> None:
    """The counts given (the others 0); `read` is the sum of the five outcomes."""
    got = {n: getattr(res, n) for n in COUNT_NAMES}
    assert got == {n: expected.get(n, 0) for n in COUNT_NAMES}, (res.status, res.error)
    assert res.read == res.inserted + res.updated + res.promoted + res.unchanged + res.rejected


def source_rows(admin: sa.Engine, name: str) -> dict[str, tuple[Any, ...]]:
    """A legacy table's rows as the seed maps them: key → mapped values, in config order."""
    table, cols, _ = SEED_MAPPING[name]
    names = ", ".join(f"`{s}`" for s, _ in cols)
    with admin.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT {names} FROM `{table}`").all()
    return {r[0]: tuple(r) for r in rows}


def target_rows(pg: str, name: str) -> dict[str, tuple[Any, ...]]:
    """A target table's rows: key → mapped values; asserts the tracking values and the key."""
    _, cols, key = SEED_MAPPING[name]
    names = ", ".join(f'"{t}"' for _, t in cols)
    rows = pg_query(pg, f'SELECT {names}, "_source", "_needs_review", "_derived_from_domain", '
                        f'"_derived_at" FROM business."{name}"')
    n = len(cols)
    tracking = {tuple(r[n:]) for r in rows}
    assert tracking <= {AUTHORITATIVE}, tracking
    [(total, distinct)] = pg_query(pg, f'SELECT count(*), count(DISTINCT "{key}") '
                                       f'FROM business."{name}"')
    assert total == distinct == len(rows)
    out = {r[0]: tuple(r[:n]) for r in rows}
    assert len(out) == len(rows)
    return out


def assert_same_rows(got: dict[Any, tuple[Any, ...]], want: dict[Any, tuple[Any, ...]]) -> None:
    """Every key and every value equal; on failure, show a few differences, not 10,000 rows."""
    if got == want:
        return
    missing = sorted(set(want) - set(got))[:5]
    extra = sorted(set(got) - set(want))[:5]
    differ = [(k, want[k], got[k]) for k in sorted(set(got) & set(want)) if got[k] != want[k]]
    pytest.fail(f"target differs from the source: {len(set(want) - set(got))} missing "
                f"{missing}, {len(set(got) - set(want))} extra {extra}, {len(differ)} "
                f"different {differ[:5]}")


def read_state(pg: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(refsync.sync_state by table name, refsync.sync_runs rows)."""
    state = {r.table_name: r._asdict() for r in pg_query(pg, "SELECT * FROM refsync.sync_state")}
    runs = [r._asdict() for r in pg_query(pg, "SELECT * FROM refsync.sync_runs")]
    return state, runs


def max_updated_at(admin: sa.Engine, table: str) -> datetime:
    with admin.connect() as conn:
        value = conn.exec_driver_sql(f"SELECT MAX(updated_at) FROM `{table}`").scalar_one()
    assert isinstance(value, datetime)
    return value


def count_where(admin: sa.Engine, sql: str, *params: Any) -> int:
    with admin.connect() as conn:
        return int(conn.exec_driver_sql(sql, params).scalar_one())


# ---------------------------------------------------------------- changing the source


@dataclass
class Mutation:
    """What changed in one legacy table between two runs."""

    updated: list[str] = field(default_factory=list)  # new values, updated_at = stamp
    touched: list[str] = field(default_factory=list)  # same values, updated_at = stamp
    silent: list[str] = field(default_factory=list)  # new values, updated_at left alone
    inserted: list[str] = field(default_factory=list)  # updated_at = stamp
    deleted: list[str] = field(default_factory=list)


NEW_TEXTS: list[str | None] = [None, "", "🚀 新名称\t\n", "\\N", "NULL", "it's \"new\"\\"]


def mutate(admin: sa.Engine, name: str, stamp: datetime, keep: set[str],
           seed: int = 11) -> Mutation:
    """Change 1% of a legacy table: 75 renames, 4 touches, 1 silent rename, 10 inserts,
    10 deletes; rows in `keep` (and the special-value and cursor-less rows) are left alone."""
    table, cols, _ = SEED_MAPPING[name]
    code_col, name_col = cols[0][0], NAME_COLUMN[table]
    rng = random.Random(f"{name}:{seed}")
    with admin.begin() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT `{code_col}`, `{name_col}` FROM `{table}` WHERE updated_at > '1000-01-01' "
            f"ORDER BY `{code_col}`").all()
        old = dict(rows)
        top = conn.exec_driver_sql(f"SELECT MAX(`{code_col}`) FROM `{table}`").scalar_one()
        candidates = [c for c, _ in rows[len(SPECIAL_TEXTS):] if c not in keep]
        picked = rng.sample(candidates, 100 - 10)
        m = Mutation(deleted=picked[:10], updated=picked[10:85], touched=picked[85:89],
                     silent=picked[89:90])
        for i, code in enumerate(m.updated + m.silent):
            new = NEW_TEXTS[i] if i < len(NEW_TEXTS) else None
            if i >= len(NEW_TEXTS) or new == old[code]:  # a real change, whatever the old value
                new = f"{dd.new_name(rng, table, old[code])}#{i}"
            stamp_sql = ", updated_at = %s" if code in m.updated else ""
            params: tuple[Any, ...] = (new, stamp, code) if stamp_sql else (new, code)
            conn.exec_driver_sql(
                f"UPDATE `{table}` SET `{name_col}` = %s{stamp_sql} WHERE `{code_col}` = %s",
                params)
            if table == "annuity_plan" and i % 10 == 1:
                conn.exec_driver_sql("UPDATE annuity_plan SET customer_name = NULL "
                                     "WHERE plan_code = %s", (code,))
        for code in m.touched:
            conn.exec_driver_sql(
                f"UPDATE `{table}` SET updated_at = %s WHERE `{code_col}` = %s", (stamp, code))
        conn.exec_driver_sql(
            f"DELETE FROM `{table}` WHERE `{code_col}` IN ({', '.join(['%s'] * 10)})",
            tuple(m.deleted))
        prefix = top.rstrip("0123456789")
        width = len(top) - len(prefix)
        number = int(top[len(prefix):])
        new_rows = []
        for i in range(1, 11):
            code = f"{prefix}{number + i:0{width}d}"
            m.inserted.append(code)
            if table == "annuity_plan":
                new_rows.append(dd.annuity_plan_row(rng, code, None, DIRT)[:-1])
            elif table == "portfolio_plan":
                new_rows.append(dd.portfolio_plan_row(rng, code, "P000001", None, DIRT)[:-1])
            else:
                new_rows.append(dd.organization_row(rng, code, None, DIRT)[:-1])
        names = [s for s, _ in cols]
        marks = ", ".join(["%s"] * (len(names) + 1))
        conn.exec_driver_sql(
            f"INSERT INTO `{table}` ({', '.join(names)}, updated_at) VALUES ({marks})",
            [(*r, stamp) for r in new_rows])
    return m


# ---------------------------------------------------------------- 1. the seed's tables


def test_seed_config_as_shipped_maps_the_three_legacy_tables() -> None:
    config = load_config(SEED_CONFIG)
    specs = {t.name: t for t in config.section.tables}
    assert list(specs) == [*LEGACY, YAML_TABLE]
    for name, (table, cols, key) in SEED_MAPPING.items():
        spec = specs[name]
        sc = spec.source_config
        assert isinstance(sc, SqlSourceConfig)
        assert (spec.source_type, spec.target_schema, spec.target_table, spec.sync_mode) == (
            "legacy_mysql", "business", name, "upsert")
        assert (sc.table, [(c.source, c.target) for c in sc.columns], spec.primary_key) == (
            table, cols, [key])
        assert spec.options.retry.backoff == [2, 4, 8] and spec.options.retry.attempts == 3
    org = specs["组织架构"].incremental
    assert org is not None
    assert (org.updated_at_column, org.where) == ("updated_at", "updated_at >= :last_synced_at")
    assert specs["年金计划"].incremental is None and specs["组合计划"].incremental is None


def test_seed_tables_sync_full_incremental_and_full_again(
        seed: dict[str, int], warehouse: str, admin: sa.Engine, db: sa.URL,
        tmp_path: Path) -> None:
    assert set(seed.values()) == {ROWS}
    config = seed_config(tmp_path)
    settings = make_settings(warehouse, db)
    before = {name: source_rows(admin, name) for name in LEGACY}
    for name in LEGACY:  # the traps are really in the source
        values = {v for row in before[name].values() for v in row}
        assert set(SPECIAL_TEXTS) <= values, name
        assert len(before[name]) == ROWS
    w1 = max_updated_at(admin, "organization")
    null_cursor = count_where(admin, "SELECT COUNT(*) FROM organization WHERE updated_at IS NULL"
                                     " OR updated_at = '0000-00-00 00:00:00'")
    assert null_cursor == 4

    # -- first run: everything is new
    r1 = api.sync(config, settings)
    assert r1.exit_code == 0, [(t.name, t.status, t.error) for t in r1.tables]
    assert [t.name for t in r1.tables] == [*LEGACY, YAML_TABLE]
    for name in LEGACY:
        res = result_of(r1, name)
        assert (res.status, res.attempts, res.source_type, res.mode) == (
            "ok", 1, "legacy_mysql", "upsert"), res.error
        assert_counts(res, read=ROWS, inserted=ROWS)
        assert res.rejects == []
        assert_same_rows(target_rows(warehouse, name), before[name])
    assert [result_of(r1, n).incremental for n in LEGACY] == [False, False, True]
    assert result_of(r1, "年金计划").watermark is None
    assert result_of(r1, "组合计划").watermark is None
    assert result_of(r1, "组织架构").watermark == w1.isoformat()  # naive, no microseconds
    assert "." not in w1.isoformat() and "+" not in w1.isoformat()
    pl = result_of(r1, YAML_TABLE)
    assert pl.status == "ok", pl.error
    assert_counts(pl, read=len(dd.PRODUCT_LINES), inserted=len(dd.PRODUCT_LINES))
    assert {r[0]: r[1] for r in pg_query(warehouse, 'SELECT "产品线代码", "产品线名称" '
                                                    'FROM business."产品线"')} == dict(
        dd.PRODUCT_LINES)
    state, runs = read_state(warehouse)
    assert state["组织架构"]["watermark"] == w1.isoformat()
    assert {n: state[n]["last_status"] for n in (*LEGACY, YAML_TABLE)} == dict.fromkeys(
        (*LEGACY, YAML_TABLE), "ok")
    assert sorted((r["table_name"], r["read"], r["inserted"], r["attempts"]) for r in runs) == \
        sorted([(n, ROWS, ROWS, 1) for n in LEGACY] + [(YAML_TABLE, 8, 8, 1)])

    # -- change 1% of each table: updates, inserts, deletes (and a touch, a silent update)
    stamp = datetime(2026, 3, 1, 9, 30, 0)
    assert stamp > w1
    with admin.connect() as conn:
        boundary = set(conn.exec_driver_sql(
            "SELECT org_code FROM organization WHERE updated_at = %s", (w1,)).scalars())
    assert boundary
    muts = {name: mutate(admin, name, stamp, boundary) for name in LEGACY}
    after = {name: source_rows(admin, name) for name in LEGACY}

    # -- second run: upserts read everything, 组织架构 only from its watermark (inclusive)
    r2 = api.sync(config, settings)
    assert r2.exit_code == 0, [(t.name, t.status, t.error) for t in r2.tables]
    for name in ("年金计划", "组合计划"):
        m, res = muts[name], result_of(r2, name)
        assert (res.status, res.incremental, res.watermark) == ("ok", False, None), res.error
        changed = len(m.updated) + len(m.silent)
        assert_counts(res, read=ROWS, inserted=10, updated=changed,
                      unchanged=ROWS - 10 - changed)  # deletes are never applied by upsert
        deleted_rows = {k: before[name][k] for k in m.deleted}
        assert_same_rows(target_rows(warehouse, name), {**after[name], **deleted_rows})
    m, res = muts["组织架构"], result_of(r2, "组织架构")
    window = count_where(admin, "SELECT COUNT(*) FROM organization WHERE updated_at >= %s", w1)
    assert window == len(m.updated) + len(m.touched) + len(m.inserted) + len(boundary)
    assert (res.status, res.incremental, res.null_cursor_rows) == ("ok", True, null_cursor)
    assert_counts(res, read=window, inserted=10, updated=len(m.updated),
                  unchanged=len(m.touched) + len(boundary))
    assert res.watermark == "2026-03-01T09:30:00"
    silent = {k: before["组织架构"][k] for k in m.silent}  # not in the window: not seen yet
    deleted_rows = {k: before["组织架构"][k] for k in m.deleted}
    assert_same_rows(target_rows(warehouse, "组织架构"),
                     {**after["组织架构"], **silent, **deleted_rows})
    pl = result_of(r2, YAML_TABLE)
    assert pl.status == "unchanged"
    assert_counts(pl, read=8, unchanged=8)
    state, _ = read_state(warehouse)
    assert state["组织架构"]["watermark"] == "2026-03-01T09:30:00"

    # -- --full: every row read, the silent update found, still nothing deleted
    xmin_sql = 'SELECT "年金计划号", xmin::text FROM business."年金计划"'
    xmin_before = dict(pg_query(warehouse, xmin_sql))
    r3 = api.sync(config, settings, full=True)
    assert r3.exit_code == 0, [(t.name, t.status, t.error) for t in r3.tables]
    rows_now = ROWS - 10 + 10
    for name in ("年金计划", "组合计划"):
        res = result_of(r3, name)
        assert res.status == "unchanged", res.error
        assert_counts(res, read=rows_now, unchanged=rows_now)
    res = result_of(r3, "组织架构")
    assert (res.status, res.incremental) == ("ok", False), res.error
    assert_counts(res, read=rows_now, updated=1, unchanged=rows_now - 1)
    assert res.watermark == "2026-03-01T09:30:00"
    for name in LEGACY:
        deleted_rows = {k: before[name][k] for k in muts[name].deleted}
        assert_same_rows(target_rows(warehouse, name), {**after[name], **deleted_rows})
    xmin_after = dict(pg_query(warehouse, xmin_sql))
    assert xmin_after == xmin_before  # unchanged rows are not rewritten

    # -- incremental again: only the rows at or after the watermark
    r4 = api.sync(config, settings, tables=["组织架构"])
    res = result_of(r4, "组织架构")
    m = muts["组织架构"]
    assert (res.status, res.incremental, res.watermark) == (
        "unchanged", True, "2026-03-01T09:30:00"), res.error
    assert_counts(res, read=len(m.updated) + len(m.touched) + len(m.inserted),
                  unchanged=len(m.updated) + len(m.touched) + len(m.inserted))
    _, runs = read_state(warehouse)
    assert len(runs) == 4 * 3 + 1
    assert {r["run_key"] for r in runs} == {r1.run_key, r2.run_key, r3.run_key, r4.run_key}


# ---------------------------------------------------------------- 2. cut mid-stream


def test_connection_cut_mid_stream_is_retried_from_scratch(
        seed: dict[str, int], warehouse: str, admin: sa.Engine, db: sa.URL, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="refsync")
    config = seed_config(tmp_path)
    with CuttingProxy((db.host or "127.0.0.1", db.port or 3306), limit=300_000) as proxy:
        settings = make_settings(warehouse, db, legacy_mysql_host="127.0.0.1",
                                 legacy_mysql_port=proxy.port)
        result = api.sync(config, settings, tables=["年金计划"])
        assert proxy.cut.is_set()
        assert proxy.connections >= 2
    res = result_of(result, "年金计划")
    assert (res.status, res.error_class) == ("ok", None), res.error
    assert res.attempts >= 2
    source = source_rows(admin, "年金计划")
    assert_counts(res, read=len(source), inserted=len(source))  # only the last read counts
    assert_same_rows(target_rows(warehouse, "年金计划"), source)
    retries = [r for r in caplog.records if getattr(r, "event", None) == "retry"]
    assert retries and "connection lost mid-stream" in retries[0].getMessage()
    assert retries[0].error_class == "connection"  # type: ignore[attr-defined]
    _, runs = read_state(warehouse)
    assert [(r["status"], r["attempts"], r["inserted"]) for r in runs] == [
        ("ok", res.attempts, len(source))]


# ---------------------------------------------------------------- 3. unreachable


def cli_env(pg: str, db: sa.URL, **overrides: str | None) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "WDH_DATABASE_URL": pg, "WDH_LEGACY_MYSQL_HOST": db.host,
        "WDH_LEGACY_MYSQL_PORT": str(db.port or 3306), "WDH_LEGACY_MYSQL_USER": db.username,
        "WDH_LEGACY_MYSQL_PASSWORD": db.password or "", "WDH_LEGACY_MYSQL_DATABASE": db.database,
        "WDH_LEGACY_MYSQL_SSL_CA": None, "WDH_REFERENCE_SYNC_ENABLED": "true",
        "WDH_REFERENCE_SYNC_CONFIG": None}
    env.update(overrides)
    return env


def run_cli(args: list[str], env: dict[str, str | None]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_mysql_unreachable_fails_the_legacy_tables_only(
        warehouse: str, db: sa.URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = seed_config(tmp_path)
    port = closed_port()
    started = time.monotonic()
    result = api.sync(config, make_settings(warehouse, db, legacy_mysql_host="127.0.0.1",
                                            legacy_mysql_port=port))
    assert time.monotonic() - started < 10
    assert result.exit_code == 1
    for name in LEGACY:
        res = result_of(result, name)
        assert (res.status, res.error_class, res.attempts) == ("failed", "connection", 4)
        assert res.error is not None
        assert f"@127.0.0.1:{port}/{db.database}: cannot connect" in res.error
        assert 0.3 <= res.duration_s < 5  # three short back-offs
        assert_counts(res)
    pl = result_of(result, YAML_TABLE)
    assert (pl.status, pl.attempts) == ("ok", 1), pl.error
    assert_counts(pl, read=8, inserted=8)
    state, runs = read_state(warehouse)
    assert sorted((r["table_name"], r["status"], r["error_class"], r["attempts"])
                  for r in runs) == sorted(
        [(n, "failed", "connection", 4) for n in LEGACY] + [(YAML_TABLE, "ok", None, 1)])
    assert state["组织架构"]["watermark"] is None
    for name in LEGACY:
        assert target_rows(warehouse, name) == {}

    # the same through the CLI: exit 1, one JSON document on stdout
    monkeypatch.chdir(tmp_path)
    code, out, _err = run_cli(["sync", "-c", str(config.path), "--json"],
                              cli_env(warehouse, db, WDH_LEGACY_MYSQL_HOST="127.0.0.1",
                                      WDH_LEGACY_MYSQL_PORT=str(port)))
    doc = json.loads(out)
    assert code == doc["exit_code"] == 1
    assert {t["name"]: (t["status"], t["error_class"], t["attempts"]) for t in doc["tables"]} == {
        **{n: ("failed", "connection", 4) for n in LEGACY}, YAML_TABLE: ("unchanged", None, 1)}


@pytest.mark.slow
def test_mysql_unreachable_retries_after_2_4_8_seconds(
        warehouse: str, db: sa.URL, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="refsync")
    monkeypatch.chdir(REPO)
    config = load_config(SEED_CONFIG)  # as shipped: the default back-off, 2, 4 and 8 s
    waits: list[float] = []
    started = time.monotonic()
    result = api.sync(config, make_settings(warehouse, db, legacy_mysql_host="127.0.0.1",
                                            legacy_mysql_port=closed_port()),
                      tables=["年金计划"], sleep=waits.append)
    res = result_of(result, "年金计划")
    assert (res.status, res.error_class, res.attempts) == ("failed", "connection", 4)
    assert waits == [2.0, 4.0, 8.0]  # between the four attempts; none after the last
    assert time.monotonic() - started < 10  # the hook waited, not the clock
    assert result.exit_code == 1
    retries = [r for r in caplog.records if getattr(r, "event", None) == "retry"]
    assert [r.attempts for r in retries] == [1, 2, 3]  # type: ignore[attr-defined]
    assert [f"retrying in {s}.0s" in r.getMessage() for s, r in zip((2, 4, 8), retries,
                                                                      strict=True)] == [True] * 3


# ---------------------------------------------------------------- 4. query errors


def test_query_errors_are_not_retried(seed: dict[str, int], warehouse: str, db: sa.URL,
                                      tmp_path: Path) -> None:
    settings = make_settings(warehouse, db)
    good = seed_config(tmp_path, name="good.yml")
    first = api.sync(good, settings, tables=["组织架构"])  # a watermark, so `where` is used
    assert result_of(first, "组织架构").status == "ok"
    mark = result_of(first, "组织架构").watermark

    def break_it(section: dict[str, Any]) -> None:
        table_entry(section, "年金计划")["source_config"]["columns"][1]["source"] = "plan_nmae"
        table_entry(section, "组合计划")["source_config"]["table"] = "portfolio_plans"
        table_entry(section, "组织架构")["source_config"]["incremental"]["where"] = (
            "updated_att >= :last_synced_at")

    broken = seed_config(tmp_path, break_it, retry={"attempts": 3, "backoff": [1, 1, 1]},
                         name="broken.yml")
    started = time.monotonic()
    result = api.sync(broken, settings)
    assert time.monotonic() - started < 3  # no back-off was waited
    assert result.exit_code == 1
    expected = {"年金计划": "annuity_plan has no column plan_nmae",
                "组合计划": "source table portfolio_plans not found",
                "组织架构": "unknown column (1054"}
    for name, what in expected.items():
        res = result_of(result, name)
        assert (res.status, res.error_class, res.attempts) == ("failed", "query", 1), res.error
        assert res.error is not None and what in res.error
        assert res.hint
    pl = result_of(result, YAML_TABLE)
    assert pl.status == "ok", pl.error
    state, _ = read_state(warehouse)
    assert state["组织架构"]["watermark"] == mark  # the failed run moved nothing
    assert target_rows(warehouse, "年金计划") == {}


# ---------------------------------------------------------------- 5. not configured


def test_no_mysql_host_fails_at_once_as_not_configured(
        warehouse: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the shipped config, its relative product lines path
    config = load_config(SEED_CONFIG)
    settings = make_settings(warehouse, None, legacy_mysql_host=None, legacy_mysql_user="root",
                             legacy_mysql_database="legacy")
    started = time.monotonic()
    result = api.sync(config, settings)
    assert time.monotonic() - started < 5  # the default back-off (2/4/8 s) was not used
    assert result.exit_code == 1
    for name in LEGACY:
        res = result_of(result, name)
        assert (res.status, res.error_class, res.attempts) == ("failed", "not_configured", 0)
        assert res.error is not None and "WDH_LEGACY_MYSQL_HOST" in res.error
        assert res.hint is not None and "WDH_LEGACY_MYSQL_HOST" in res.hint
    pl = result_of(result, YAML_TABLE)
    assert pl.status == "ok", pl.error
    assert_counts(pl, read=8, inserted=8)
    _, runs = read_state(warehouse)
    assert sorted((r["table_name"], r["error_class"], r["attempts"]) for r in runs) == sorted(
        [(n, "not_configured", 0) for n in LEGACY] + [(YAML_TABLE, None, 1)])


# ---------------------------------------------------------------- 6. the password, nowhere


@pytest.fixture
def zebra(admin: sa.Engine, db: sa.URL, seed: dict[str, int]) -> Iterator[sa.URL]:
    """A MariaDB user with a distinctive password and SELECT on the module's database."""
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{SECRET_USER}'@'%%'")
            conn.exec_driver_sql(f"CREATE USER '{SECRET_USER}'@'%%' IDENTIFIED BY '{SECRET}'")
            conn.exec_driver_sql(f"GRANT SELECT ON `{db.database}`.* TO '{SECRET_USER}'@'%%'")
    except sa.exc.DBAPIError as exc:
        pytest.skip(f"cannot create a MySQL user here: {exc.orig}")
    try:
        yield db.set(username=SECRET_USER, password=SECRET)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{SECRET_USER}'@'%%'")


def test_password_appears_nowhere(zebra: sa.URL, warehouse: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    good = seed_config(tmp_path, name="good.yml")

    def wrong_table(section: dict[str, Any]) -> None:
        table_entry(section, "年金计划")["source_config"]["table"] = "annuity_plan_gone"

    bad = seed_config(tmp_path, wrong_table, name="bad.yml")
    env = cli_env(warehouse, zebra)
    texts: list[str] = []
    docs: list[dict[str, Any]] = []
    levels: set[str] = set()
    runs = [
        (["-c", str(bad.path)], env, 1),  # a query error
        (["-c", str(good.path), "-t", "组合计划"],  # a connection error, retried
         {**env, "WDH_LEGACY_MYSQL_HOST": "127.0.0.1",
          "WDH_LEGACY_MYSQL_PORT": str(closed_port())}, 1),
        (["-c", str(good.path)], env, 0),  # success
    ]
    for args, run_env, want in runs:
        code, out, err = run_cli(["sync", *args, "--json", "--log-format", "json", "-v"], run_env)
        assert code == want, (out, err)
        doc = json.loads(out)
        assert doc["exit_code"] == want
        docs.append(doc)
        texts += [out, err]
        logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert logs
        levels.update(entry["level"] for entry in logs)
    assert {"DEBUG", "INFO", "WARNING", "ERROR"} <= levels  # -v: everything was logged
    statuses = [{t["name"]: (t["status"], t["error_class"]) for t in d["tables"]} for d in docs]
    assert statuses[0]["年金计划"] == ("failed", "query")
    assert statuses[1] == {"组合计划": ("failed", "connection")}
    assert set(statuses[2].values()) <= {("ok", None), ("unchanged", None)}
    errors = [t["error"] for d in docs for t in d["tables"] if t["error"]]
    assert all(f"{SECRET_USER}@" in e for e in errors), errors  # the user is named, not the secret
    # every column of refsync's state tables
    for table in ("refsync.sync_runs", "refsync.sync_state"):
        for row in pg_query(warehouse, f"SELECT * FROM {table}"):
            texts += [str(v) for v in row]
    texts += [json.dumps(d, ensure_ascii=False) for d in docs]
    assert len(texts) > 20
    leaks = [t for t in texts if SECRET in t or SECRET.lower() in t.lower()]
    assert leaks == []


# ---------------------------------------------------------------- 7. MySQL type traps


W = datetime(2024, 3, 1, 10, 0, 0, 123456)
UMAX = 18446744073709551615
TRAP_TEXT = "😀 𠀀 tab\there nl\nthere cr\r bs\\ \\N 'q' \"dq\" `bt` 年金\u3000"
TRAP_DDL = """
CREATE TABLE type_traps (
    id INT PRIMARY KEY, d DATE NULL, dt DATETIME NULL, dt6 DATETIME(6) NULL,
    flag TINYINT(1) NULL, big BIGINT UNSIGNED NULL, big2 BIGINT UNSIGNED NULL,
    amount DECIMAL(20,6) NULL, doc JSON NULL, kind ENUM('DB','DC') NULL,
    tags SET('a','b','c') NULL, bit1 BIT(1) NULL, txt TEXT NULL, upd DATETIME(6) NULL
) CHARACTER SET utf8mb4"""
TRAP_COLUMNS = ["id", "d", "dt", "dt6", "flag", "big", "big2", "amount", "doc", "kind", "tags",
                "bit1", "txt", "upd"]
TARGET_DDL = """
CREATE TABLE business."{name}" (
    id integer PRIMARY KEY, d date, dt timestamptz, dt6 timestamp(6), flag boolean,
    big numeric(20,0), big2 bigint, amount numeric(20,6), doc jsonb, kind text, tags text,
    bit1 boolean, txt text,
    "_source" varchar(20) NOT NULL DEFAULT 'authoritative',
    "_needs_review" boolean NOT NULL DEFAULT false,
    "_derived_from_domain" varchar(50), "_derived_at" timestamptz)"""


def trap_row(i: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(TRAP_COLUMNS)
    row.update({"id": i, "upd": W - timedelta(seconds=1), **values})
    return row


TRAP_ROWS = [
    trap_row(1, d="2024-02-29", dt="2024-01-01 08:00:00", dt6="2024-01-02 03:04:05.000001",
             flag=1, big=UMAX, big2=2**63 - 1, amount="12345678901234.123456",
             doc='{"k": [1, "年"], "e": "😀", "n": null}', kind="DC", tags="a,c", bit1=1,
             txt=TRAP_TEXT, upd=W),
    trap_row(2, d="0000-00-00"),  # zero date
    trap_row(3, dt="0000-00-00 00:00:00"),  # zero date-time
    trap_row(4, d="2024-02-30"),  # invalid date (stored as is under ALLOW_INVALID_DATES)
    trap_row(5, flag=2),  # TINYINT(1) is not a boolean
    trap_row(6, flag=-1),
    trap_row(7, big2=UMAX),  # BIGINT UNSIGNED max does not fit bigint
    trap_row(8, flag=0, bit1=0, big=0, big2=0, amount="-99999999999999.999999", txt="",
             kind="DB", tags="", upd=W - timedelta(microseconds=1)),
    trap_row(9, upd=W),  # a second row on the boundary
    trap_row(10, upd=None),  # no cursor: only full runs read it
]
EXPECTED_REJECTS = [
    {"key": {"id": 2}, "column": "d", "value": "0000-00-00", "reason": "zero date"},
    {"key": {"id": 3}, "column": "dt", "value": "0000-00-00 00:00:00", "reason": "zero date"},
    {"key": {"id": 4}, "column": "d", "value": "2024-02-30", "reason": "not a date"},
    {"key": {"id": 5}, "column": "flag", "value": "2",
     "reason": "only 0/1 are valid for boolean"},
    {"key": {"id": 6}, "column": "flag", "value": "-1",
     "reason": "only 0/1 are valid for boolean"},
    {"key": {"id": 7}, "column": "big2", "value": str(UMAX), "reason": "out of range for bigint"},
]


def insert_traps(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    marks = ", ".join(["%s"] * len(TRAP_COLUMNS))
    conn.exec_driver_sql(
        f"INSERT INTO type_traps ({', '.join(TRAP_COLUMNS)}) VALUES ({marks})",
        [tuple(r[c] for c in TRAP_COLUMNS) for r in rows])


@pytest.fixture(scope="module")
def traps(admin: sa.Engine) -> str:
    with admin.begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
        conn.exec_driver_sql(TRAP_DDL)
        insert_traps(conn, TRAP_ROWS)
        stored = conn.exec_driver_sql("SELECT CAST(d AS CHAR) FROM type_traps WHERE id = 4")
        assert stored.scalar_one() == "2024-02-30"
    return "type_traps"


def traps_config(tmp_path: Path) -> LoadedConfig:
    def entry(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "target_table": name, "target_schema": "business",
                "source_type": "legacy_mysql", "sync_mode": "upsert", "primary_key": "id",
                "source_config": {"table": "type_traps", "columns": [
                    {"source": c, "target": c} for c in TRAP_COLUMNS[:-1]],
                    **extra.pop("source", {})}, **extra}

    doc = {"reference_sync": {
        "timezone": "Asia/Shanghai",
        "defaults": {"retry": SHORT_RETRY, "source_timezone": "Asia/Shanghai"},
        "tables": [
            entry("traps_skip", on_invalid="skip",
                  source={"incremental": {"updated_at_column": "upd"}}),
            entry("traps_fail"),  # on_invalid: fail, the default
        ]}}
    path = tmp_path / "traps.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_config(path)


def trap_target(pg: str, name: str) -> dict[int, dict[str, Any]]:
    cols = TRAP_COLUMNS[:-1]
    rows = pg_query(pg, f'SELECT {", ".join(cols)}, "_source", "_needs_review", '
                        f'"_derived_from_domain", "_derived_at" FROM business."{name}"')
    assert {tuple(r[len(cols):]) for r in rows} <= {AUTHORITATIVE}
    return {r[0]: dict(zip(cols, r[:len(cols)], strict=True)) for r in rows}


def test_mysql_type_traps_end_to_end(traps: str, warehouse: str, db: sa.URL, admin: sa.Engine,
                                     tmp_path: Path) -> None:
    for name in ("traps_skip", "traps_fail"):
        pg_execute(warehouse, TARGET_DDL.format(name=name))
    config = traps_config(tmp_path)
    settings = make_settings(warehouse, db)

    r1 = api.sync(config, settings)
    assert r1.exit_code == 1
    skip = result_of(r1, "traps_skip")
    assert (skip.status, skip.error_class, skip.attempts) == ("ok", None, 1), skip.error
    assert_counts(skip, read=10, inserted=4, rejected=6)
    assert sorted(skip.rejects, key=lambda r: r["key"]["id"]) == EXPECTED_REJECTS
    # held at the earliest rejected row (W - 1 s), microseconds kept: read again until fixed
    assert skip.watermark == "2024-03-01T09:59:59.123456"

    fail = result_of(r1, "traps_fail")
    assert (fail.status, fail.error_class, fail.attempts) == ("failed", "invalid", 1)
    assert fail.rejected == 6 and len(fail.rejects) == 6
    assert fail.error is not None and "6 row(s) do not fit the target" in fail.error
    assert trap_target(warehouse, "traps_fail") == {}  # nothing written
    state, _ = read_state(warehouse)
    assert state["traps_fail"]["watermark"] is None
    assert state["traps_skip"]["watermark"] == "2024-03-01T09:59:59.123456"

    got = trap_target(warehouse, "traps_skip")
    assert sorted(got) == [1, 8, 9, 10]
    shanghai_8am_utc_midnight = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    assert got[1] == {
        "id": 1, "d": datetime(2024, 2, 29).date(), "dt": shanghai_8am_utc_midnight,
        "dt6": datetime(2024, 1, 2, 3, 4, 5, 1), "flag": True, "big": Decimal(UMAX),
        "big2": 2**63 - 1, "amount": Decimal("12345678901234.123456"),
        "doc": {"k": [1, "年"], "e": "😀", "n": None}, "kind": "DC", "tags": "a,c",
        "bit1": True, "txt": TRAP_TEXT}
    assert str(got[1]["big"]) == str(UMAX)  # exact: no float on the way
    assert got[8] == {
        "id": 8, "d": None, "dt": None, "dt6": None, "flag": False, "big": Decimal(0),
        "big2": 0, "amount": Decimal("-99999999999999.999999"), "doc": None, "kind": "DB",
        "tags": "", "bit1": False, "txt": ""}
    assert got[9] == {"id": 9, **dict.fromkeys(TRAP_COLUMNS[1:-1])}
    [(same_instant,)] = pg_query(
        warehouse, "SELECT dt = '2024-01-01 00:00:00+00'::timestamptz "
                   "AND dt = '2024-01-01 08:00:00+08'::timestamptz "
                   "FROM business.traps_skip WHERE id = 1")
    assert same_instant is True

    # incremental: the rejected rows are read again (with every row at or after them)
    r2 = api.sync(config, settings, tables=["traps_skip"])
    res = result_of(r2, "traps_skip")
    assert (res.status, res.incremental, res.null_cursor_rows) == ("unchanged", True, 1)
    assert_counts(res, read=9, unchanged=3, rejected=6)
    assert res.watermark == "2024-03-01T09:59:59.123456"

    bad = [r for r in TRAP_ROWS if 2 <= r["id"] <= 7]
    with admin.begin() as conn:  # the rejected rows are fixed (here: removed at the source)
        conn.exec_driver_sql("DELETE FROM type_traps WHERE id BETWEEN 2 AND 7")
    try:
        r3 = api.sync(config, settings, tables=["traps_skip"])
        res = result_of(r3, "traps_skip")
        assert_counts(res, read=3, unchanged=3)
        assert res.watermark == "2024-03-01T10:00:00.123456"  # now it moves on

        # only the two rows on the watermark (not the one a microsecond before)
        r4 = api.sync(config, settings, tables=["traps_skip"])
        res = result_of(r4, "traps_skip")
        assert_counts(res, read=2, unchanged=2)
        assert res.watermark == "2024-03-01T10:00:00.123456"

        # one row a microsecond after, one silently changed a microsecond before
        with admin.begin() as conn:
            insert_traps(conn, [trap_row(11, txt="new 🚀", upd=W + timedelta(microseconds=1))])
            conn.exec_driver_sql("UPDATE type_traps SET txt = 'silent' WHERE id = 8")
        r5 = api.sync(config, settings, tables=["traps_skip"])
        res = result_of(r5, "traps_skip")
        assert res.status == "ok", res.error
        assert_counts(res, read=3, inserted=1, unchanged=2)
        assert res.watermark == "2024-03-01T10:00:00.123457"
        got = trap_target(warehouse, "traps_skip")
        assert got[11]["txt"] == "new 🚀" and got[8]["txt"] == ""
        state, _ = read_state(warehouse)
        assert state["traps_skip"]["watermark"] == "2024-03-01T10:00:00.123457"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql("DELETE FROM type_traps WHERE id = 11")
            conn.exec_driver_sql("UPDATE type_traps SET txt = '' WHERE id = 8")
            conn.exec_driver_sql("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
            insert_traps(conn, bad)


def test_mysql_timestamp_column_keeps_its_instant(admin: sa.Engine, warehouse: str, db: sa.URL,
                                                  tmp_path: Path) -> None:
    """A TIMESTAMP is an instant: whatever the MySQL server's time zone, the timestamptz written
    must be that instant (2024-01-01 00:00:00 UTC here)."""
    with admin.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ts_trap (id INT PRIMARY KEY, ts TIMESTAMP NULL)")
        conn.exec_driver_sql("INSERT INTO ts_trap VALUES (1, FROM_UNIXTIME(1704067200))")
        server_zone = conn.exec_driver_sql("SELECT @@session.time_zone, @@system_time_zone").one()
    pg_execute(warehouse, """CREATE TABLE business.ts_trap (id integer PRIMARY KEY,
        ts timestamptz, "_source" varchar(20) NOT NULL DEFAULT 'authoritative',
        "_needs_review" boolean NOT NULL DEFAULT false, "_derived_from_domain" varchar(50),
        "_derived_at" timestamptz)""")
    doc = {"reference_sync": {"defaults": {"retry": SHORT_RETRY}, "tables": [{
        "name": "ts_trap", "target_table": "ts_trap", "target_schema": "business",
        "source_type": "legacy_mysql", "primary_key": "id",
        "source_config": {"table": "ts_trap", "columns": [
            {"source": "id", "target": "id"}, {"source": "ts", "target": "ts"}]}}]}}
    path = tmp_path / "ts.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    result = api.sync(load_config(path), make_settings(warehouse, db))
    res = result_of(result, "ts_trap")
    assert res.status == "ok", res.error
    [(value,)] = pg_query(warehouse, "SELECT ts FROM business.ts_trap")
    assert value == datetime(2024, 1, 1, tzinfo=UTC), (
        f"MySQL session time zone {server_zone}: TIMESTAMP read as a {value} instant")
