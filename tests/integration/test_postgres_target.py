"""PostgreSQL-only behaviour of the target (DESIGN 4.2, 4.5, 4.6): unchanged rows are not
rewritten (same row version, next to no WAL), the advisory run lock, quoted identifiers,
and the PostgreSQL types SQLite does not have."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from helpers import (
    KEY,
    SCHEMA,
    TABLE,
    TARGETS,
    LegacyDb,
    assert_counts,
    create_tables,
    create_target,
    engine_for,
    execute,
    expected_row,
    has_state,
    insert_rows,
    plan_row,
    quote,
    read_rows,
    read_state,
    settings_for,
    sql_table,
    table_result,
    tracking_columns,
    wait_until,
    write_config,
)
from sqlalchemy.dialects import postgresql

from refsync import api
from refsync.errors import LockHeld, RefsyncError
from refsync.targets.lock import LOCK_KEY

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def legacy(tmp_path: Path) -> LegacyDb:
    return LegacyDb(tmp_path / "legacy.sqlite")


def sync_one(config: Any, url: str, name: str = TABLE, **kwargs: Any) -> Any:
    result = api.sync(config, settings_for(url), **kwargs)
    return result, table_result(result, name)


def xmins(url: str, schema: str = SCHEMA, table: str = TABLE, key: str = KEY) -> dict[str, str]:
    """Each row's version (xmin): it changes exactly when the row is rewritten."""
    ref = quote(url, schema, table)
    with engine_for(url) as engine, engine.connect() as conn:
        return dict(conn.exec_driver_sql(f'SELECT "{key}", xmin::text FROM {ref}').all())


def wal_lsn(url: str) -> str:
    """Where the WAL ends now, once flushed that far: pg_walinspect reads only flushed WAL,
    and the insert position runs ahead of the flush while other sessions write."""
    with engine_for(url) as engine, engine.connect() as conn:
        lsn = str(conn.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar())
        wait_until(lambda: conn.exec_driver_sql(
            "SELECT pg_current_wal_flush_lsn() >= %(lsn)s::pg_lsn", {"lsn": lsn}).scalar(),
            f"the WAL is flushed up to {lsn}", timeout=10, interval=0.05)
        return lsn


def wal_bytes(url: str, start: str, end: str, relation: str | None = None) -> int:
    """WAL written between two LSNs for this test's database only (other sessions may share
    the server), or for one relation of it (its heap and indexes), read with pg_walinspect.
    Full-page images are left out: how many there are depends on when the server last
    checkpointed, not on what refsync wrote."""
    with engine_for(url) as engine, engine.connect() as conn:
        db = conn.exec_driver_sql(
            "SELECT oid FROM pg_database WHERE datname = current_database()").scalar()
        pattern = f"rel [0-9]+/{db}/"
        if relation is not None:
            nodes = conn.execute(sa.text(
                "SELECT pg_relation_filenode(c.oid) FROM pg_class c "
                "WHERE c.oid = CAST(:r AS regclass) OR c.oid IN "
                "(SELECT indexrelid FROM pg_index WHERE indrelid = CAST(:r AS regclass))"),
                {"r": relation}).scalars().all()
            pattern += "(" + "|".join(str(n) for n in nodes) + ") "
        return int(conn.execute(sa.text(
            "SELECT coalesce(sum(record_length - fpi_length), 0) "
            "FROM pg_get_wal_records_info(:s, :e) "
            "WHERE block_ref ~ :p"), {"s": start, "e": end, "p": pattern}).scalar() or 0)


def test_postgres_unchanged_rows_keep_their_row_version(pg_url: str, legacy: LegacyDb,
                                                       tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(2000)])
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table(TABLE, legacy)])
    sync_one(config, pg_url)
    first = xmins(pg_url)

    _, res = sync_one(config, pg_url)

    assert res.status == "unchanged"
    assert xmins(pg_url) == first  # not one row rewritten

    insert_rows(pg_url, [{KEY: "P02000", "计划名称": "回填", "_source": "auto_derived",
                          "_needs_review": True, "_derived_from_domain": "annuity",
                          "_derived_at": datetime.now(SHANGHAI)}])
    execute(pg_url, f'UPDATE {quote(pg_url, SCHEMA, TABLE)} SET "_needs_review" = true '
                    f"WHERE \"{KEY}\" = 'P00500'")
    seeded = xmins(pg_url)
    legacy.put_plans([plan_row(i, name=f"更名{i}") for i in range(10)])
    legacy.add_plans([plan_row(i) for i in range(2000, 2005)])

    _, res = sync_one(config, pg_url)

    assert_counts(res, read=2005, inserted=4, updated=11, promoted=1, unchanged=1989)
    after = xmins(pg_url)
    changed = {f"P{i:05d}" for i in [*range(10), 500, *range(2000, 2005)]}
    assert {k for k in after if after[k] != seeded.get(k)} == changed


def test_postgres_no_change_resync_writes_next_to_no_wal(pg_url: str, legacy: LegacyDb,
                                                        tmp_path: Path) -> None:
    try:
        execute(pg_url, "CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    except sa.exc.DBAPIError as exc:
        pytest.skip(f"pg_walinspect is not available: {exc.orig}")
    legacy.create_plans([plan_row(i) for i in range(10_000)])
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table(TABLE, legacy)])
    target = f"{SCHEMA}.{TABLE}"
    start = wal_lsn(pg_url)
    sync_one(config, pg_url)
    loaded = wal_lsn(pg_url)
    # read each window at once: a busy server recycles WAL segments quickly
    first, first_target = wal_bytes(pg_url, start, loaded), wal_bytes(pg_url, start, loaded, target)

    _, res = sync_one(config, pg_url)

    resynced = wal_lsn(pg_url)
    again, again_target = (wal_bytes(pg_url, loaded, resynced),
                           wal_bytes(pg_url, loaded, resynced, target))
    assert_counts(res, read=10_000, unchanged=10_000)
    assert first_target > 1_000_000
    assert again_target == 0  # not one row of the target written, or locked
    assert again < 0.05 * first, f"first load {first} bytes of WAL, no-change resync {again}"


def test_postgres_second_sync_while_the_advisory_lock_is_held(
        pg_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 6)])
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table(TABLE, legacy)])
    assert LOCK_KEY == 32199638043422307  # the documented key (README, DESIGN 4.5)
    with engine_for(pg_url) as engine, engine.connect() as other:
        assert other.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                             {"k": LOCK_KEY}).scalar() is True
        other.commit()
        with pytest.raises(LockHeld):
            api.sync(config, settings_for(pg_url))
        assert read_rows(pg_url) == []
        assert not has_state(pg_url)
        other.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
        other.commit()

    result, res = sync_one(config, pg_url)
    assert result.exit_code == 0
    assert_counts(res, read=5, inserted=5)


def test_postgres_lock_is_held_for_the_whole_run(pg_url: str, legacy: LegacyDb,
                                                 tmp_path: Path) -> None:
    """While a sync streams its rows, another session cannot take the advisory lock."""
    legacy.create_plans([plan_row(i) for i in range(1, 6)])
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table(TABLE, legacy)])
    seen: list[bool] = []

    class Probe:
        def start(self, table: str, total: int | None) -> None:
            with engine_for(pg_url) as engine, engine.connect() as conn:
                got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                   {"k": LOCK_KEY}).scalar()
                if got:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                seen.append(bool(got))

        def advance(self, table: str, rows: int) -> None:
            pass

        def finish(self, table: str, result: Any) -> None:
            pass

    result = api.sync(config, settings_for(pg_url), progress=Probe())

    assert result.exit_code == 0
    assert seen == [False]


ODD_SCHEMA = "参考 Data-1"
ODD_TABLE = "年金计划 (旧)"


def test_postgres_quotes_chinese_identifiers_and_odd_schema_names(
        pg_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    rows = [plan_row(i) for i in range(1, 11)]
    legacy.create_plans(rows, table="旧系统 计划")
    create_target(pg_url, schema=ODD_SCHEMA, table=ODD_TABLE)
    entry = sql_table("年金计划（旧）", legacy, table="旧系统 计划", target_table=ODD_TABLE,
                      mode="delete_insert")
    entry["target_schema"] = ODD_SCHEMA
    config = write_config(tmp_path, [entry])

    result, res = sync_one(config, pg_url, "年金计划（旧）")
    assert (result.exit_code, res.error) == (0, None)
    assert_counts(res, read=10, inserted=10)
    assert res.target == f"{ODD_SCHEMA}.{ODD_TABLE}"
    got = read_rows(pg_url, schema=ODD_SCHEMA, table=ODD_TABLE)
    assert got == [expected_row(r) for r in rows]

    legacy.delete_plans(["P00001"], table="旧系统 计划")
    legacy.put_plans([plan_row(2, name="更名")], table="旧系统 计划")
    _, res = sync_one(config, pg_url, "年金计划（旧）")
    assert_counts(res, read=9, updated=1, unchanged=8, deleted=1)
    _, res = sync_one(config, pg_url, "年金计划（旧）")
    assert_counts(res, read=9, unchanged=9)
    st, _ = read_state(pg_url)
    assert st["年金计划（旧）"]["target"] == f"{ODD_SCHEMA}.{ODD_TABLE}"


def test_postgres_round_trips_json_numeric_and_timestamptz(
        pg_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    legacy.execute("CREATE TABLE settings (code VARCHAR(20) PRIMARY KEY, cfg TEXT, raw TEXT, "
                   "rate TEXT, effective DATETIME, local DATETIME)")
    source = [
        ("S1", '{"b": [1, 2], "a": "年金"}', '{"z": 1,  "a": null}', "12345678901234.123456",
         "2024-05-01 10:00:00", "2024-05-01 10:00:00.123456"),
        ("S2", "[]", '"text"', "0.5", "2024-12-31 23:59:59.999999", "2024-01-01 00:00:00"),
        ("S3", None, None, "-0.000001", None, None),
    ]
    legacy.executemany("INSERT INTO settings VALUES (?, ?, ?, ?, ?, ?)", source)

    def build(md: sa.MetaData) -> None:
        sa.Table("参数", md,
                 sa.Column("代码", sa.String(20), primary_key=True),
                 sa.Column("配置", postgresql.JSONB),
                 sa.Column("原文", postgresql.JSON),
                 sa.Column("费率", sa.Numeric(20, 6)),
                 sa.Column("生效时间", sa.DateTime(timezone=True)),
                 sa.Column("本地时间", sa.DateTime(timezone=False)),
                 *tracking_columns())

    create_tables(pg_url, build)
    config = write_config(tmp_path, [sql_table(
        "参数", legacy, table="settings", target_table="参数", key="代码",
        columns=[("code", "代码"), ("cfg", "配置"), ("raw", "原文"), ("rate", "费率"),
                 ("effective", "生效时间"), ("local", "本地时间")])])

    _, res = sync_one(config, pg_url, "参数")
    assert_counts(res, read=3, inserted=3)

    ref = quote(pg_url, SCHEMA, "参数")
    with engine_for(pg_url) as engine, engine.connect() as conn:
        got = conn.exec_driver_sql(
            f'SELECT "代码", "配置", "原文", "费率", "生效时间", "本地时间", '
            f'"原文"::text FROM {ref} ORDER BY "代码"').all()
    assert [tuple(r) for r in got] == [
        ("S1", {"a": "年金", "b": [1, 2]}, {"z": 1, "a": None},
         Decimal("12345678901234.123456"),
         datetime(2024, 5, 1, 10, 0, tzinfo=SHANGHAI),
         datetime(2024, 5, 1, 10, 0, 0, 123456), '{"z": 1,  "a": null}'),
        ("S2", [], "text", Decimal("0.500000"),
         datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=SHANGHAI),
         datetime(2024, 1, 1), '"text"'),
        ("S3", None, None, Decimal("-0.000001"), None, None, None),
    ]
    assert got[0][4].utcoffset() is not None
    assert got[0][4] == datetime(2024, 5, 1, 2, 0, tzinfo=ZoneInfo("UTC"))

    _, res = sync_one(config, pg_url, "参数")
    assert (res.status, res.error) == ("unchanged", None)
    assert_counts(res, read=3, unchanged=3)

    # json equal as a value but written differently, and a real change
    legacy.execute("UPDATE settings SET cfg = ?, raw = ? WHERE code = 'S1'",
                   ('{"a":"年金","b":[1,2]}', '{"z": 1, "a": null}'))
    legacy.execute("UPDATE settings SET rate = '0.5000001' WHERE code = 'S3'")
    _, res = sync_one(config, pg_url, "参数")
    assert (res.status, res.error_class) == ("failed", "invalid")  # 7 places into numeric(20,6)
    assert res.rejects[0]["column"] == "费率"
    legacy.execute("UPDATE settings SET rate = '0.500001' WHERE code = 'S3'")
    _, res = sync_one(config, pg_url, "参数")
    assert_counts(res, read=3, updated=1, unchanged=2)


SECRET = "S3cr3t-Zebra-71"


def test_postgres_password_never_appears(pg_url: str, legacy: LegacyDb, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """DESIGN 4.5: not in results, errors, logs or the state tables (the local server trusts
    any password, so the URL can carry one)."""
    url = sa.engine.make_url(pg_url).set(password=SECRET).render_as_string(hide_password=False)
    legacy.create_plans([plan_row(i) for i in range(1, 11)])
    create_target(pg_url)
    create_target(pg_url, table="计划副本")
    config = write_config(tmp_path, [
        sql_table(TABLE, legacy, mode="delete_insert"),
        sql_table("计划副本", legacy, table="no_such_table", target_table="计划副本")])
    caplog.set_level("DEBUG")
    shown: list[str] = []

    result = api.sync(config, settings_for(url))
    shown.append(str(result.as_json()))
    legacy.delete_plans(f"P{i:05d}" for i in range(1, 10))
    result = api.sync(config, settings_for(url))  # guarded, and a failing table
    shown.append(str(result.as_json()))
    assert [t.status for t in result.tables] == ["guarded", "failed"]
    with engine_for(pg_url) as engine, engine.connect() as other:
        other.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
        with pytest.raises(LockHeld) as held:
            api.sync(config, settings_for(url))
        shown.append(str(held.value))
        other.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
    unreachable = sa.engine.make_url(url).set(port=1).render_as_string(hide_password=False)
    with pytest.raises(RefsyncError) as down:
        api.sync(config, settings_for(unreachable))
    shown.append(f"{down.value!r} {down.value}")
    with pytest.raises(RefsyncError) as status_down:  # status reads through psycopg alone
        api.status(config, settings_for(unreachable))
    assert status_down.value.transient and "WDH_DATABASE_URL" in status_down.value.hint
    shown.append(f"{status_down.value!r} {status_down.value}")
    st, runs = read_state(pg_url)
    shown += [str(st), str(runs), str(api.status(config, settings_for(url)))]
    shown.append(caplog.text)

    assert all(SECRET not in text for text in shown), [t for t in shown if SECRET in t][0]


STATUS_HARNESS = """
import json, sys
from refsync.cli import main
sys.argv = ["refsync", *sys.argv[1:]]
try:
    main()
except SystemExit as stop:
    print(json.dumps([stop.code, sorted(m for m in sys.modules if m.startswith("sqlalchemy"))]),
          file=sys.stderr)
"""


def test_postgres_status_reads_the_state_through_psycopg_alone(
        pg_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    """Issue 9: `refsync status` answers without importing SQLAlchemy (its import alone costs
    more than the answer), from a URL in SQLAlchemy's own form, and sees a run that died
    holding no lock as abandoned."""
    import json
    import os
    import subprocess
    import sys

    legacy.create_plans([plan_row(i) for i in range(1, 6)])
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table(TABLE, legacy)])
    api.sync(config, settings_for(pg_url))
    with engine_for(pg_url) as engine, engine.begin() as conn:  # a run killed mid-table
        conn.execute(sa.text(
            "UPDATE refsync.sync_state SET last_status = 'running', last_run_key = 'reference_"
            "sync_2099-01-01T00:00:00.000+08:00' WHERE table_name = :t"), {"t": TABLE})
    url = sa.engine.make_url(pg_url).set(drivername="postgresql+psycopg")
    env = {**os.environ, "WDH_DATABASE_URL": url.render_as_string(hide_password=False),
           "WDH_REFERENCE_SYNC_ENABLED": "true"}
    proc = subprocess.run(
        [sys.executable, "-c", STATUS_HARNESS, "status", "--json", "-c", str(config.path)],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    code, sqlalchemy_modules = json.loads(proc.stderr.strip().splitlines()[-1])
    doc = json.loads(proc.stdout)
    assert sqlalchemy_modules == []
    assert doc["tables"][0]["last_status"] == "abandoned"
    assert [(r["table"], r["status"], r["inserted"]) for r in doc["runs"]] == [(TABLE, "ok", 5)]
    assert code == doc["exit_code"] == 1  # a table needs attention


def test_postgres_catalogue_describes_a_table_as_reflection_does(pg_url: str) -> None:
    """Issue 9: one catalogue query instead of nine reflection statements. Every column type
    is described as SQLAlchemy's reflection describes it (kind, length, precision, scale,
    bits, nullability), apart from two deliberate differences: a domain is read as its base
    type, and a unique index that cannot serve ON CONFLICT (partial, on an expression, or
    its INCLUDE columns) is not a key."""
    from refsync.targets import open_target
    from refsync.targets.base import SqlTarget

    execute(pg_url, """
        CREATE SCHEMA business;
        CREATE TYPE business.mood AS ENUM ('ok', 'sad');
        CREATE DOMAIN business.code5 AS varchar(5) CHECK (VALUE <> '');
        CREATE TABLE business."类型" (
            "键" varchar(20) PRIMARY KEY, v varchar, c char(3), c1 character, t text,
            n numeric(18, 4), n0 numeric, nn numeric(5, -2), i2 smallint NOT NULL, i4 integer,
            i8 bigint, f4 real, f8 double precision, b boolean, d date, tm time, tz timetz,
            ts timestamp(3), tstz timestamptz, j json, jb jsonb, u uuid, by bytea,
            e business.mood, dom business.code5, iv interval, arr integer[], u1 integer,
            u2a integer, u2b text, p integer, x text, inc integer,
            UNIQUE (u1), UNIQUE (u2a, u2b));
        CREATE UNIQUE INDEX ON business."类型" (p) WHERE p > 0;
        CREATE UNIQUE INDEX ON business."类型" (lower(x));
        CREATE UNIQUE INDEX ON business."类型" (i8) INCLUDE (inc);
        ALTER TABLE business."类型" DROP COLUMN c1;
    """)
    target = open_target(pg_url)
    try:
        columns, keys = target.describe_table("business", "类型")
        reflected, reflected_keys = SqlTarget.describe_table(target, "business", "类型")
        assert target.describe_table("business", "no_such_table") == (None, [])
    finally:
        target.close()
    assert columns is not None and reflected is not None
    assert list(columns) == list(reflected)  # the table's order, dropped column gone

    def shape(c: Any) -> tuple[Any, ...]:
        return (c.kind, c.nullable, c.max_length, c.precision, c.scale, c.int_bits)

    differs = {n for n in columns if shape(columns[n]) != shape(reflected[n])}
    assert differs == {"dom"}, {n: (columns[n], reflected[n]) for n in differs}
    assert shape(columns["dom"]) == ("text", True, 5, None, None, None)
    assert shape(columns["nn"]) == ("numeric", True, None, 5, -2, None)
    assert shape(columns["i2"]) == ("integer", False, None, None, None, 16)
    assert columns["j"].type_sql == "json" and columns["c"].type_sql == "character(3)"
    assert sorted(map(sorted, keys)) == [["i8"], ["u1"], ["u2a", "u2b"], ["键"]]
    assert {frozenset(k) for k in keys} < {frozenset(k) for k in reflected_keys}


def test_postgres_few_rows_are_joined_to_the_target_by_key_lookups(pg_url: str) -> None:
    """After a comparison (or for an update), a few rows join the target by lookups of its
    key index, not by a hash join that scans the whole target; the join settings are as
    before once the statement is done, and the diff's counts are the same."""
    from refsync.targets import open_target
    from refsync.targets.postgres import LOOKUP_SHARE

    create_target(pg_url)
    ref = quote(pg_url, SCHEMA, TABLE)
    rows = 20_000
    execute(pg_url, f"INSERT INTO {ref} (\"计划代码\", \"计划名称\") SELECT 'P' || "
                    f"lpad(i::text, 6, '0'), 'n' || i FROM generate_series(1, {rows}) i")
    execute(pg_url, f"ANALYZE {ref}")
    target = open_target(pg_url)
    try:
        infos = target.check_table(SCHEMA, TABLE, TARGETS, [KEY])
        with target.table_writer(SCHEMA, TABLE, [infos[n] for n in TARGETS], [KEY],
                                 commit=False) as w:
            w.stage([(f"P{i:06d}", "n" + str(i) + ("x" if i % 5 == 0 else ""), None, None,
                      None) for i in range(1, 51)])
            counts = w.diff(deletes=False, only="true")
            assert (counts.updated, counts.unchanged) == (10, 40)
            join = (f"EXPLAIN SELECT * FROM _refsync_stage s JOIN {ref} t "
                    f"ON t.\"{KEY}\" = s.\"{KEY}\"")

            def plan() -> str:
                return "\n".join(str(r[0]) for r in w.sql(join))

            def settings() -> list[str]:
                return [w.sql(f"SHOW {n}").scalar() for n in
                        ("enable_nestloop", "enable_hashjoin", "enable_mergejoin")]

            before = settings()
            with w.by_key(50, cached=True):
                looked_up = plan()
                assert settings() == ["on", "off", "off"]
            assert "Index" in looked_up and "Nested Loop" in looked_up, looked_up
            assert "Hash" not in looked_up, looked_up
            assert settings() == before
            for n, cached in ((50, False), (int(LOOKUP_SHARE * rows) + 1, True)):
                with w.by_key(n, cached=cached):  # not cached, or too many: the planner's
                    assert settings() == before
    finally:
        target.close()
