"""Sync semantics (DESIGN 2.1, 4.1-4.6, 5): one suite, run against both targets.

Every test runs once on SQLite and once on PostgreSQL (`target_url`) and expects the same
counts, statuses and rows on both (DESIGN 4.6: "Both must give identical results on the
same input"). The source is a SQLite "legacy" file read through `source_type: sql`, or a
versioned YAML file (`config_file`).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import (
    AUTHORITATIVE,
    AUTO_DERIVED,
    KEY,
    RUN_KEY_RE,
    SCHEMA,
    T0,
    TABLE,
    LegacyDb,
    assert_counts,
    by_key,
    counts,
    create_tables,
    create_target,
    engine_for,
    execute,
    expected_row,
    has_state,
    insert_rows,
    is_pg,
    plan_columns,
    plan_row,
    quote,
    read_rows,
    read_state,
    settings_for,
    sql_table,
    state_table_names,
    table_result,
    tracking_columns,
    write_config,
    write_yaml_source,
    yaml_table,
)

from refsync import api
from refsync.errors import LockHeld
from refsync.targets import open_target

pytestmark = pytest.mark.integration

PRODUCT_LINES = "产品线"


@pytest.fixture
def legacy(tmp_path: Path) -> LegacyDb:
    return LegacyDb(tmp_path / "legacy.sqlite")


def plans_config(tmp_path: Path, legacy: LegacyDb, **options: Any) -> Any:
    """A config with the one `年金计划` table read from `legacy`."""
    return write_config(tmp_path, [sql_table(TABLE, legacy, **options)])


def sync_plans(config: Any, url: str, **kwargs: Any) -> Any:
    result = api.sync(config, settings_for(url), **kwargs)
    return result, table_result(result, TABLE)


def seeded(rows: list[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    return {r[0]: expected_row(r) for r in rows}


def assert_rows(url: str, expected: dict[str, dict[str, Any]], **where: Any) -> None:
    """The target table holds exactly `expected` (by key); shows the first differences."""
    actual = by_key(read_rows(url, **where), key=where.get("key", KEY))
    wrong = [(k, actual.get(k), expected.get(k)) for k in sorted(set(actual) | set(expected))
             if actual.get(k) != expected.get(k)]
    assert not wrong, f"{len(wrong)} rows differ, first: {wrong[:3]}"


def auto_derived(code: str, name: str, row: tuple[Any, ...] | None = None) -> dict[str, Any]:
    """A layer-2 row as the backfill job writes it (with `row`'s values when given)."""
    values = {"计划代码": code, "计划名称": name, "计划类型": None, "金额": None, "成立日期": None}
    if row is not None:
        values = {k: v for k, v in expected_row(row).items() if k in values}
    return {**values, "_source": "auto_derived", "_needs_review": True,
            "_derived_from_domain": "annuity", "_derived_at": datetime.now().astimezone()}


def auto_expected(code: str, name: str) -> dict[str, Any]:
    return {"计划代码": code, "计划名称": name, "计划类型": None, "金额": None, "成立日期": None,
            **AUTO_DERIVED}


# ---------------------------------------------------------------- 1-2: first run, rerun


def product_lines_table(url: str, name: str = PRODUCT_LINES) -> None:
    def build(md: sa.MetaData) -> None:
        sa.Table(name, md,
                 sa.Column("产品线代码", sa.String(10), primary_key=True),
                 sa.Column("产品线名称", sa.String(50), nullable=False),
                 sa.Column("排序", sa.Integer),
                 *tracking_columns())

    create_tables(url, build)


PRODUCT_LINE_DATA = [
    {"产品线代码": "PL01", "产品线名称": "企业年金", "排序": 1},
    {"产品线代码": "PL02", "产品线名称": "职业年金", "排序": 2,
     "_source": "auto_derived", "_needs_review": True, "_derived_from_domain": "annuity"},
    {"产品线代码": "PL03", "产品线名称": "养老金产品", "排序": None},
]


def test_sync_first_run_inserts_every_row_as_authoritative(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    rows = [plan_row(i) for i in range(1, 31)]
    legacy.create_plans(rows)
    create_target(target_url)
    product_lines_table(target_url)
    yml = write_yaml_source(tmp_path / "product_lines.yml", PRODUCT_LINE_DATA)
    config = write_config(tmp_path, [
        sql_table(TABLE, legacy),
        yaml_table(PRODUCT_LINES, yml, target_table=PRODUCT_LINES, key="产品线代码")])

    result = api.sync(config, settings_for(target_url))

    assert result.exit_code == 0
    assert re.fullmatch(RUN_KEY_RE, result.run_key), result.run_key
    assert [t.name for t in result.tables] == [TABLE, PRODUCT_LINES]
    plans = table_result(result, TABLE)
    assert (plans.status, plans.error_class, plans.error) == ("ok", None, None)
    assert plans.attempts == 1
    assert_counts(plans, read=30, inserted=30)
    lines = table_result(result, PRODUCT_LINES)
    assert (lines.status, lines.error_class) == ("ok", None)
    assert_counts(lines, read=3, inserted=3)
    assert_rows(target_url, seeded(rows))
    # the tracking values of layer 1, whatever the YAML row said (PL02 claims auto_derived)
    assert read_rows(target_url, table=PRODUCT_LINES, key="产品线代码") == [
        {"产品线代码": "PL01", "产品线名称": "企业年金", "排序": 1, **AUTHORITATIVE},
        {"产品线代码": "PL02", "产品线名称": "职业年金", "排序": 2, **AUTHORITATIVE},
        {"产品线代码": "PL03", "产品线名称": "养老金产品", "排序": None, **AUTHORITATIVE},
    ]
    doc = plans.as_json()
    assert {"name", "target", "source_type", "mode", "incremental", "status", "error_class",
            "error", "read", "inserted", "updated", "deleted", "unchanged", "promoted",
            "rejected", "rejects", "attempts", "duration_s", "watermark"} <= set(doc)
    assert doc["target"] == f"{SCHEMA}.{TABLE}" and doc["mode"] == "upsert"

    assert state_table_names(target_url) == (
        {"refsync.sync_state", "refsync.sync_runs"} if is_pg(target_url)
        else {"refsync_sync_state", "refsync_sync_runs"})
    st, runs = read_state(target_url)
    assert set(st) == {TABLE, PRODUCT_LINES}
    for name in (TABLE, PRODUCT_LINES):
        assert st[name]["last_run_key"] == result.run_key
        assert st[name]["last_status"] == "ok"
        assert st[name]["last_success_at"] is not None
    assert len(runs) == 2
    run = next(r for r in runs if r["table_name"] == TABLE)
    assert run["run_key"] == result.run_key
    assert run["status"] == "ok" and run["mode"] == "upsert" and run["error_class"] is None
    assert {k: run[k] for k in ("read", "inserted", "updated", "deleted", "unchanged",
                                "promoted", "rejected")} == counts(plans)
    assert run["attempts"] == 1


def test_sync_rerun_without_changes_is_unchanged(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    rows = [plan_row(i) for i in range(1, 51)]
    legacy.create_plans(rows)
    create_target(target_url)
    product_lines_table(target_url)
    yml = write_yaml_source(tmp_path / "product_lines.yml", PRODUCT_LINE_DATA)
    config = write_config(tmp_path, [
        sql_table(TABLE, legacy),
        yaml_table(PRODUCT_LINES, yml, target_table=PRODUCT_LINES, key="产品线代码",
                   mode="delete_insert")])
    api.sync(config, settings_for(target_url))
    before = read_rows(target_url)

    result = api.sync(config, settings_for(target_url))

    assert result.exit_code == 0
    plans = table_result(result, TABLE)
    assert plans.status == "unchanged"
    assert_counts(plans, read=50, unchanged=50)
    lines = table_result(result, PRODUCT_LINES)
    assert lines.status == "unchanged"
    assert_counts(lines, read=3, unchanged=3)
    assert read_rows(target_url) == before
    st, runs = read_state(target_url)
    assert st[TABLE]["last_status"] == "unchanged" and st[TABLE]["last_run_key"] == result.run_key
    assert [r["status"] for r in runs if r["table_name"] == TABLE] == ["ok", "unchanged"]


# ---------------------------------------------------------------- 3: the two layers, a mix

N = 10_000


@pytest.mark.parametrize(("mode", "deleted"), [pytest.param("upsert", 0, id="upsert"),
                                               pytest.param("delete_insert", 200,
                                                            id="delete_insert")])
def test_sync_mixed_changes_promote_and_keep_auto_derived_rows(
        target_url: str, legacy: LegacyDb, tmp_path: Path, mode: str, deleted: int) -> None:
    first = [plan_row(i) for i in range(N)]
    legacy.create_plans(first)
    create_target(target_url)
    config = plans_config(tmp_path, legacy, mode=mode)
    _, res = sync_plans(config, target_url)
    assert_counts(res, read=N, inserted=N)

    # layer 2: 50 rows the source is about to deliver (10 of them with the very values it
    # will bring), and 30 it never has
    insert_rows(target_url,
                [auto_derived(f"P{i:05d}", "", plan_row(i)) for i in range(N, N + 10)]
                + [auto_derived(f"P{i:05d}", f"回填{i}") for i in range(N + 10, N + 50)]
                + [auto_derived(f"P{i:05d}", f"回填{i}") for i in range(20_000, 20_030)])
    # authoritative rows whose values equal the source's but whose tracking values do not
    ref = quote(target_url, SCHEMA, TABLE)
    true = "true" if is_pg(target_url) else "1"
    execute(target_url, f"UPDATE {ref} SET \"_needs_review\" = {true} WHERE \"{KEY}\" = 'P00500'")
    execute(target_url, f"UPDATE {ref} SET \"_derived_from_domain\" = 'annuity' "
                        f"WHERE \"{KEY}\" = 'P00501'")
    # the source: 100 updated (NULL <-> value among them), 200 deleted, 300 new
    updated = [plan_row(i, name=f"企业年金计划{i}（更名）", amount="7.77" if i % 2 else None)
               for i in range(100)]
    legacy.put_plans(updated)
    legacy.delete_plans(f"P{i:05d}" for i in range(N - 200, N))
    new = [plan_row(i) for i in range(N, N + 300)]
    legacy.add_plans(new)

    result, res = sync_plans(config, target_url)

    assert result.exit_code == 0
    assert (res.status, res.error) == ("ok", None)
    assert_counts(res, read=N + 100, inserted=250, updated=102, promoted=50,
                  unchanged=N + 100 - 402, deleted=deleted)
    expected = seeded(first) | seeded(updated) | seeded(new)
    if mode == "delete_insert":
        for i in range(N - 200, N):
            del expected[f"P{i:05d}"]
    expected |= {f"P{i:05d}": auto_expected(f"P{i:05d}", f"回填{i}")
                 for i in range(20_000, 20_030)}
    assert_rows(target_url, expected)

    # and now the target is in step: nothing more to do
    _, res = sync_plans(config, target_url)
    assert res.status == "unchanged"
    assert_counts(res, read=N + 100, unchanged=N + 100)


WRITES = "写入日志"


def log_writes(url: str) -> None:
    """Record every row the target table receives (insert/update/delete) in `写入日志`."""
    ref, log = quote(url, SCHEMA, TABLE), quote(url, SCHEMA, WRITES)
    execute(url, f"CREATE TABLE {log} (op VARCHAR(1), k VARCHAR(20))")
    if is_pg(url):
        fn = quote(url, SCHEMA, "log_write")
        execute(url, f"""CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'DELETE' THEN
                INSERT INTO {log} VALUES ('D', OLD."{KEY}"); RETURN OLD;
              END IF;
              INSERT INTO {log} VALUES (left(TG_OP, 1), NEW."{KEY}"); RETURN NEW;
            END $$""")
        execute(url, f"CREATE TRIGGER log_write AFTER INSERT OR UPDATE OR DELETE ON {ref} "
                     f"FOR EACH ROW EXECUTE FUNCTION {fn}()")
        return
    for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        execute(url, f"CREATE TRIGGER log_{op.lower()} AFTER {op} ON {ref} BEGIN "
                     f"INSERT INTO {log} VALUES ('{op[0]}', {row}.\"{KEY}\"); END")


def logged_writes(url: str) -> list[tuple[str, str]]:
    with engine_for(url) as engine, engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT op, k FROM {quote(url, SCHEMA, WRITES)}").all()
    return sorted((op, k) for op, k in rows)


def test_sync_writes_only_the_rows_that_change(target_url: str, legacy: LegacyDb,
                                               tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1000)])
    create_target(target_url)
    config = plans_config(tmp_path, legacy, mode="delete_insert")
    sync_plans(config, target_url)
    insert_rows(target_url, [auto_derived("P01000", "", plan_row(1000)),
                             auto_derived("P01001", "回填")])
    log_writes(target_url)
    execute(target_url, f"UPDATE {quote(target_url, SCHEMA, TABLE)} SET \"_needs_review\" = "
                        f"{'true' if is_pg(target_url) else '1'} WHERE \"{KEY}\" = 'P00500'")
    legacy.put_plans([plan_row(i, name=f"更名{i}") for i in range(5)]
                     + [plan_row(i, amount=None, kind=None) for i in (12, 13)])
    legacy.delete_plans(["P00990", "P00991", "P00992"])
    legacy.add_plans([plan_row(i) for i in range(1000, 1004)])

    _, res = sync_plans(config, target_url)

    assert_counts(res, read=1001, inserted=2, updated=8, promoted=2, unchanged=989, deleted=3)
    updated = ["P00000", "P00001", "P00002", "P00003", "P00004", "P00012", "P00013", "P00500",
               "P01000", "P01001"]
    assert logged_writes(target_url) == sorted(
        [("U", "P00500")]  # the test's own update, flagging the row for review
        + [("U", k) for k in updated]
        + [("I", "P01002"), ("I", "P01003")]
        + [("D", k) for k in ("P00990", "P00991", "P00992")])

    execute(target_url, f"DELETE FROM {quote(target_url, SCHEMA, WRITES)}")
    _, res = sync_plans(config, target_url)
    assert res.status == "unchanged"
    assert logged_writes(target_url) == []  # not one row rewritten


def test_sync_null_key_is_a_rejected_row(target_url: str, legacy: LegacyDb,
                                         tmp_path: Path) -> None:
    """A NULL key never reaches the target, even where the key column admits NULL (a
    SQLite primary key declared without NOT NULL)."""
    rows = [plan_row(i) for i in range(1, 11)]
    legacy.create_plans([*rows, (None, "无代码", "DB", "1.00", "2020-01-01", T0)])
    cols = plan_columns()
    cols[0] = sa.Column(KEY, sa.String(20), primary_key=True, nullable=True)
    create_target(target_url, columns=cols)
    config = plans_config(tmp_path, legacy, on_invalid="skip")

    _, res = sync_plans(config, target_url)

    assert_counts(res, read=11, inserted=10, rejected=1)
    assert [(r["key"], r["column"]) for r in res.rejects] == [({KEY: None}, KEY)]
    _, res = sync_plans(config, target_url)
    assert_counts(res, read=11, unchanged=10, rejected=1)
    assert_rows(target_url, seeded(rows))


# ---------------------------------------------------------------- 4: the mass-delete guard


@pytest.mark.parametrize(("removed", "ratio", "guarded"), [
    pytest.param(6, 0.5, True, id="more-than-ratio"),
    pytest.param(5, 0.5, False, id="exactly-ratio"),
    pytest.param(10, 1.0, True, id="empty-source"),
])
def test_sync_mass_delete_guard(target_url: str, legacy: LegacyDb, tmp_path: Path,
                                removed: int, ratio: float, guarded: bool) -> None:
    rows = [plan_row(i) for i in range(1, 11)]
    legacy.create_plans(rows)
    create_target(target_url)
    config = plans_config(tmp_path, legacy, mode="delete_insert", max_delete_ratio=ratio)
    sync_plans(config, target_url)
    # auto-derived rows are not part of the ratio (and never deleted)
    insert_rows(target_url, [auto_derived(f"A{i:04d}", f"回填{i}") for i in range(20)])
    before = read_rows(target_url)
    legacy.delete_plans(f"P{i:05d}" for i in range(11 - removed, 11))
    changed = removed < 10
    if changed:
        legacy.put_plans([plan_row(1, name="更名")])
    kept = 10 - removed
    expect = {"read": kept, "deleted": removed, "updated": int(changed),
              "unchanged": kept - int(changed)}

    result, res = sync_plans(config, target_url)

    assert_counts(res, **expect)
    if not guarded:
        assert (res.status, result.exit_code) == ("ok", 0)
        assert len(read_rows(target_url)) == 20 + kept
        return
    assert (res.status, res.error_class, result.exit_code) == ("guarded", "guarded", 1)
    assert res.error and str(removed) in res.error
    assert read_rows(target_url) == before
    st, runs = read_state(target_url)
    assert (runs[-1]["status"], runs[-1]["error_class"]) == ("guarded", "guarded")
    assert st[TABLE]["last_status"] == "guarded"

    result, res = sync_plans(config, target_url, allow_mass_delete=True)

    assert (res.status, result.exit_code) == ("ok", 0)
    assert_counts(res, **expect)
    assert len(read_rows(target_url)) == 20 + kept
    assert all(r["_source"] == "auto_derived" for r in read_rows(target_url)
               if r[KEY].startswith("A"))


# ---------------------------------------------------------------- 5-6: bad rows, duplicate keys

BAD_ROWS = [
    ("B0001", "坏行1", "X" * 100, "1.00", "2020-01-01", T0),  # too long for varchar(20)
    ("B0002", "坏行2", "DB", "1.00", "not-a-date", T0),  # not a date
    ("B0003", None, "DB", "1.00", "2020-01-01", T0),  # NULL into NOT NULL
    ("B0004", "坏行4", "DB", 12345678901.5, "2020-01-01", T0),  # out of numeric(12,2)
    *((f"B{i:04d}", f"坏行{i}", "Y" * 21, "1.00", "2020-01-01", T0) for i in range(5, 26)),
]


@pytest.mark.parametrize("on_invalid", [pytest.param("fail", id="fail"),
                                        pytest.param("skip", id="skip")])
def test_sync_bad_rows_are_rejected(target_url: str, legacy: LegacyDb, tmp_path: Path,
                                    on_invalid: str) -> None:
    rows = [plan_row(i) for i in range(1, 11)]
    legacy.create_plans(rows)
    create_target(target_url)
    config = plans_config(tmp_path, legacy, on_invalid=on_invalid)
    sync_plans(config, target_url)
    before = read_rows(target_url)
    changes = [plan_row(1, name="更名"), plan_row(11)]
    legacy.put_plans(changes)
    legacy.add_plans(BAD_ROWS)

    result, res = sync_plans(config, target_url)

    assert_counts(res, read=36, inserted=1, updated=1, unchanged=9, rejected=25)
    assert len(res.rejects) == 20
    assert all(set(r) == {"key", "column", "value", "reason"} for r in res.rejects)
    assert all(len(r["value"]) <= 80 for r in res.rejects)
    first = [{k: r[k] for k in ("key", "column", "reason")} for r in res.rejects[:4]]
    assert first == [
        {"key": {KEY: "B0001"}, "column": "计划类型", "reason": "too long: 100 > 20 characters"},
        {"key": {KEY: "B0002"}, "column": "成立日期", "reason": "not a date"},
        {"key": {KEY: "B0003"}, "column": "计划名称", "reason": "NULL in NOT NULL column"},
        {"key": {KEY: "B0004"}, "column": "金额", "reason": "out of range for numeric(12,2)"},
    ]
    assert res.rejects[0]["value"] == "X" * 79 + "…"
    assert res.rejects[1]["value"] == "not-a-date"
    assert res.rejects[3]["value"] == "12345678901.5"
    assert res.as_json()["rejects"] == res.rejects
    if on_invalid == "fail":
        assert (res.status, res.error_class, result.exit_code) == ("failed", "invalid", 1)
        assert res.error and "25" in res.error and "B0001" in res.error
        assert read_rows(target_url) == before
        _, runs = read_state(target_url)
        assert (runs[-1]["status"], runs[-1]["error_class"], runs[-1]["rejected"]) == (
            "failed", "invalid", 25)
    else:
        assert (res.status, res.error_class, result.exit_code) == ("ok", None, 0)
        assert_rows(target_url, seeded(rows) | seeded(changes))


def test_sync_duplicate_keys_fail_the_table(target_url: str, legacy: LegacyDb,
                                            tmp_path: Path) -> None:
    rows = [plan_row(i) for i in range(1, 6)]
    legacy.create_plans(rows, primary_key=False)
    create_target(target_url)
    config = plans_config(tmp_path, legacy)
    sync_plans(config, target_url)
    before = read_rows(target_url)
    legacy.add_plans([plan_row(2, name="又一个2"), plan_row(4, name="又一个4"),
                      plan_row(4, name="第三个4"), plan_row(6)])

    result, res = sync_plans(config, target_url)

    assert (res.status, res.error_class, result.exit_code) == ("failed", "invalid", 1)
    assert res.read == 9
    assert res.error and "P00002" in res.error and "P00004" in res.error
    assert KEY in res.error
    assert "second time" not in res.error
    assert read_rows(target_url) == before


@pytest.mark.parametrize(("extra", "on_invalid", "expect"), [
    pytest.param([plan_row(2, name="又一个2"), plan_row(4), plan_row(4)], "fail",
                 ("failed", "invalid", 0), id="duplicate-keys"),
    pytest.param(BAD_ROWS[:4], "fail", ("failed", "invalid", 0), id="bad-rows-fail"),
    pytest.param(BAD_ROWS[:4], "skip", ("ok", None, 5), id="bad-rows-skip"),
])
def test_sync_first_load_into_an_empty_target_checks_rows_alike(
        target_url: str, legacy: LegacyDb, tmp_path: Path, extra: list[tuple[Any, ...]],
        on_invalid: str, expect: tuple[str, str | None, int]) -> None:
    """An empty target (a first load) gets the same checks as any other run."""
    rows = [plan_row(i) for i in range(1, 6)]
    legacy.create_plans([*rows, *extra], primary_key=False)
    create_target(target_url)
    config = plans_config(tmp_path, legacy, on_invalid=on_invalid, mode="delete_insert")

    result, res = sync_plans(config, target_url)

    status, error_class, written = expect
    assert (res.status, res.error_class) == (status, error_class), res.error
    assert result.exit_code == (0 if status == "ok" else 1)
    assert res.read == 5 + len(extra)
    if extra[0][0] == "P00002":
        assert res.error and "P00002" in res.error and "P00004" in res.error
    else:
        assert res.rejected == 4 and len(res.rejects) == 4
    assert len(read_rows(target_url)) == written
    if written:
        assert_counts(res, read=9, inserted=5, rejected=4)
        assert_rows(target_url, seeded(rows))


# ---------------------------------------------------------------- 7: incremental


def at(hh_mm: str, micro: bool = False) -> str:
    return f"2024-05-01 {hh_mm}:00" + (".250000" if micro else "")


def wm(hh_mm: str, micro: bool = False) -> str:
    return f"2024-05-01T{hh_mm}:00" + (".250000" if micro else "")


INCREMENTAL = {"updated_at_column": "updated_at"}


def test_incremental_reads_from_the_watermark_inclusive(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    times = ["09:00", "09:15", "09:30", "09:45", "10:00"]
    rows = [plan_row(i, updated_at=at(t)) for i, t in enumerate(times, 1)]
    legacy.create_plans(rows)
    create_target(target_url)
    config = plans_config(tmp_path, legacy, incremental=INCREMENTAL)

    _, res = sync_plans(config, target_url)  # the first run is full
    assert_counts(res, read=5, inserted=5)
    assert res.watermark == wm("10:00")
    st, _ = read_state(target_url)
    assert st[TABLE]["watermark"] == wm("10:00")

    _, res = sync_plans(config, target_url)  # the boundary row again, harmlessly
    assert res.incremental is True
    assert (res.status, res.watermark) == ("unchanged", wm("10:00"))
    assert_counts(res, read=1, unchanged=1)

    changed = [plan_row(2, name="更名", updated_at=at("11:00")),
               plan_row(6, updated_at=at("10:30"))]
    legacy.put_plans(changed)
    result, res = sync_plans(config, target_url)
    assert result.exit_code == 0
    assert_counts(res, read=3, inserted=1, updated=1, unchanged=1)
    assert res.watermark == wm("11:00")
    assert read_state(target_url)[0][TABLE]["watermark"] == wm("11:00")
    assert_rows(target_url, seeded(rows) | seeded(changed))

    _, res = sync_plans(config, target_url)
    assert_counts(res, read=1, unchanged=1)


def test_incremental_lookback_widens_the_window(target_url: str, legacy: LegacyDb,
                                                tmp_path: Path) -> None:
    rows = [plan_row(i, updated_at=at(t)) for i, t in enumerate(["08:30", "09:30", "10:00"], 1)]
    legacy.create_plans(rows)
    create_target(target_url)
    config = plans_config(tmp_path, legacy, incremental=INCREMENTAL, lookback="1h")
    sync_plans(config, target_url)

    _, res = sync_plans(config, target_url)

    assert_counts(res, read=2, unchanged=2)  # updated_at >= 09:00
    assert res.watermark == wm("10:00")


def test_incremental_configured_where_is_used_verbatim(target_url: str, legacy: LegacyDb,
                                                       tmp_path: Path) -> None:
    rows = [plan_row(i) for i in range(1, 7)]  # all at 10:00; odd codes are kind DC
    legacy.create_plans(rows)
    create_target(target_url)
    where = "updated_at >= :last_synced_at AND kind = 'DC'"
    config = plans_config(tmp_path, legacy, incremental={**INCREMENTAL, "where": where})
    _, res = sync_plans(config, target_url)
    assert_counts(res, read=6, inserted=6)  # the first run is full: no where

    legacy.put_plans([plan_row(3, name="更名", updated_at=at("10:30"))])
    _, res = sync_plans(config, target_url)

    assert_counts(res, read=3, updated=1, unchanged=2)  # P00001, P00003, P00005
    assert res.watermark == wm("10:30")


def test_incremental_reports_rows_without_a_cursor(target_url: str, legacy: LegacyDb,
                                                   tmp_path: Path) -> None:
    rows = [plan_row(i) for i in range(1, 5)] + [plan_row(i, updated_at=None) for i in (5, 6)]
    legacy.create_plans(rows)
    create_target(target_url)
    config = plans_config(tmp_path, legacy, incremental=INCREMENTAL)
    _, res = sync_plans(config, target_url)
    assert_counts(res, read=6, inserted=6)  # a full run reads them

    _, res = sync_plans(config, target_url)

    assert_counts(res, read=4, unchanged=4)
    assert res.as_json()["null_cursor_rows"] == 2
    assert res.status == "unchanged"


def test_incremental_full_reads_everything_and_deletes_nothing(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    times = ["09:00", "09:15", "09:30", "09:45", "10:00"]
    rows = [plan_row(i, updated_at=at(t)) for i, t in enumerate(times, 1)]
    legacy.create_plans(rows)
    create_target(target_url)
    config = plans_config(tmp_path, legacy, incremental=INCREMENTAL)
    sync_plans(config, target_url)
    legacy.delete_plans(["P00001"])
    legacy.put_plans([plan_row(2, name="悄悄更名", updated_at=at("09:15"))])  # behind the mark

    _, res = sync_plans(config, target_url)
    assert_counts(res, read=1, unchanged=1)  # the change is behind the watermark

    result, res = sync_plans(config, target_url, full=True)

    assert result.exit_code == 0
    assert res.incremental is False
    assert_counts(res, read=4, updated=1, unchanged=3)
    assert res.watermark == wm("10:00")
    assert_rows(target_url, seeded(rows) | seeded([plan_row(2, name="悄悄更名")]))


def test_incremental_failed_run_leaves_the_watermark(target_url: str, legacy: LegacyDb,
                                                     tmp_path: Path) -> None:
    """Also: watermarks keep microseconds, and the boundary stays inclusive with them."""
    times = ["09:00", "09:15", "09:30", "09:45", "10:00"]
    rows = [plan_row(i, updated_at=at(t, micro=True)) for i, t in enumerate(times, 1)]
    legacy.create_plans(rows)
    create_target(target_url)
    config = plans_config(tmp_path, legacy, incremental=INCREMENTAL)
    sync_plans(config, target_url)
    new = plan_row(6, updated_at=at("10:30", micro=True))
    legacy.add_plans([new, ("B0001", "坏行", "X" * 30, None, None, at("11:00", micro=True))])

    result, res = sync_plans(config, target_url)

    assert (res.status, res.error_class, result.exit_code) == ("failed", "invalid", 1)
    st, _ = read_state(target_url)
    assert st[TABLE]["watermark"] == wm("10:00", micro=True)
    assert st[TABLE]["last_status"] == "failed"
    assert_rows(target_url, seeded(rows))

    fixed = ("B0001", "修好了", "DB", None, None, at("11:00", micro=True))
    legacy.put_plans([fixed])
    _, res = sync_plans(config, target_url)

    assert_counts(res, read=3, inserted=2, unchanged=1)  # P00005 (boundary), P00006, B0001
    assert res.watermark == wm("11:00", micro=True)
    assert_rows(target_url, seeded([*rows, new, fixed]))


# ---------------------------------------------------------------- 8: plan


def test_plan_counts_what_sync_does_and_writes_nothing(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 21)])
    create_target(target_url)
    config = plans_config(tmp_path, legacy, mode="delete_insert")
    sync_plans(config, target_url)
    insert_rows(target_url, [auto_derived("P00021", "回填")])
    legacy.put_plans([plan_row(1, name="更名1"), plan_row(2, name="更名2")])
    legacy.delete_plans(["P00010", "P00011", "P00012"])
    legacy.add_plans([plan_row(i) for i in range(21, 25)])
    before = read_rows(target_url)
    runs_before = read_state(target_url)

    planned = api.plan(config, settings_for(target_url))

    assert planned.plan_only is True and planned.exit_code == 0
    p = table_result(planned, TABLE)
    assert p.status == "ok"
    assert_counts(p, read=21, inserted=3, updated=2, promoted=1, unchanged=15, deleted=3)
    assert read_rows(target_url) == before
    assert read_state(target_url) == runs_before

    result, res = sync_plans(config, target_url)

    assert counts(res) == counts(p) and res.status == p.status
    assert result.exit_code == planned.exit_code


def test_plan_on_a_fresh_database_creates_nothing(target_url: str, legacy: LegacyDb,
                                                  tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 21)])
    create_target(target_url)
    config = plans_config(tmp_path, legacy, incremental=INCREMENTAL)

    planned = api.plan(config, settings_for(target_url))

    assert planned.exit_code == 0
    p = table_result(planned, TABLE)
    assert (p.status, p.watermark) == ("ok", wm("10:00"))
    assert_counts(p, read=20, inserted=20)
    assert read_rows(target_url) == []
    assert not has_state(target_url)
    if not is_pg(target_url):  # plan takes no lock, so leaves no lock file
        assert not (tmp_path / "warehouse.sqlite.refsync.lock").exists()


def test_plan_exits_like_sync_for_a_guarded_table(target_url: str, legacy: LegacyDb,
                                                  tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 11)])
    create_target(target_url)
    config = plans_config(tmp_path, legacy, mode="delete_insert")
    sync_plans(config, target_url)
    legacy.delete_plans(f"P{i:05d}" for i in range(1, 9))

    planned = api.plan(config, settings_for(target_url))

    p = table_result(planned, TABLE)
    assert (p.status, p.error_class, planned.exit_code) == ("guarded", "guarded", 1)
    assert_counts(p, read=2, deleted=8, unchanged=2)


# ---------------------------------------------------------------- 9-11: tables and each other


def test_sync_one_failing_table_never_stops_the_others(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    rows = [plan_row(i) for i in range(1, 11)]
    legacy.create_plans(rows)
    create_target(target_url)
    create_target(target_url, table="计划副本")
    product_lines_table(target_url)
    product_lines_table(target_url, "产品线v2")
    v2 = write_yaml_source(tmp_path / "v2.yml", PRODUCT_LINE_DATA, version="2.0")
    config = write_config(tmp_path, [
        yaml_table(PRODUCT_LINES, tmp_path / "missing.yml", target_table=PRODUCT_LINES,
                   key="产品线代码"),
        yaml_table("产品线v2", v2, target_table="产品线v2", key="产品线代码"),
        sql_table("计划副本", legacy, table="no_such_table", target_table="计划副本"),
        sql_table(TABLE, legacy),
    ])

    result = api.sync(config, settings_for(target_url))

    assert result.exit_code == 1
    missing = table_result(result, PRODUCT_LINES)
    assert (missing.status, missing.error_class) == ("skipped", "file_missing")
    assert missing.error and str(tmp_path / "missing.yml") in missing.error
    version = table_result(result, "产品线v2")
    assert (version.status, version.error_class) == ("skipped", "schema_version")
    assert read_rows(target_url, table="产品线v2", key="产品线代码") == []
    bad = table_result(result, "计划副本")
    assert (bad.status, bad.error_class) == ("failed", "query")
    assert bad.attempts == 1  # a query error is not retried
    good = table_result(result, TABLE)
    assert good.status == "ok"
    assert_counts(good, read=10, inserted=10)
    assert_rows(target_url, seeded(rows))
    st, runs = read_state(target_url)
    assert {r["table_name"]: (r["status"], r["error_class"]) for r in runs} == {
        PRODUCT_LINES: ("skipped", "file_missing"), "产品线v2": ("skipped", "schema_version"),
        "计划副本": ("failed", "query"),
        TABLE: ("ok", None)}
    assert st[TABLE]["last_success_at"] is not None
    assert st["计划副本"]["last_success_at"] is None


PORTFOLIOS = "组合计划"


def with_portfolios(md: sa.MetaData, *, tracking: bool = True) -> None:
    parent = sa.Table(TABLE, md, *plan_columns(), *tracking_columns())
    sa.Table(PORTFOLIOS, md,
             sa.Column("组合代码", sa.String(20), primary_key=True),
             sa.Column(KEY, sa.String(20), sa.ForeignKey(parent.c[KEY]), nullable=False),
             sa.Column("组合名称", sa.String(100)),
             *(tracking_columns() if tracking else []))


def test_sync_runs_dependencies_first(target_url: str, legacy: LegacyDb,
                                      tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 6)])
    legacy.execute("CREATE TABLE portfolios (pcode VARCHAR(20) PRIMARY KEY, "
                   "plan_code VARCHAR(20), pname VARCHAR(100))")
    legacy.executemany("INSERT INTO portfolios VALUES (?, ?, ?)",
                       [(f"F{i:03d}", f"P{i % 5 + 1:05d}", f"组合{i}") for i in range(12)])
    create_tables(target_url, with_portfolios)
    child = sql_table(PORTFOLIOS, legacy, table="portfolios", target_table=PORTFOLIOS,
                      columns=[("pcode", "组合代码"), ("plan_code", KEY), ("pname", "组合名称")],
                      key="组合代码", depends_on=[TABLE])
    config = write_config(tmp_path, [child, sql_table(TABLE, legacy)])  # child listed first

    result = api.sync(config, settings_for(target_url))

    assert [t.name for t in result.tables] == [TABLE, PORTFOLIOS]
    assert [t.status for t in result.tables] == ["ok", "ok"], [t.error for t in result.tables]
    assert result.exit_code == 0
    assert len(read_rows(target_url, table=PORTFOLIOS, key="组合代码")) == 12
    _, runs = read_state(target_url)
    assert [r["table_name"] for r in runs] == [TABLE, PORTFOLIOS]


def test_sync_delete_refused_by_a_foreign_key_fails_as_constraint(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    rows = [plan_row(i) for i in range(1, 11)]
    legacy.create_plans(rows)
    create_tables(target_url, lambda md: with_portfolios(md, tracking=False))
    config = plans_config(tmp_path, legacy, mode="delete_insert")
    sync_plans(config, target_url)
    insert_rows(target_url, [{"组合代码": "F001", KEY: "P00003", "组合名称": "组合1"}],
                table=PORTFOLIOS)
    before = read_rows(target_url)
    legacy.delete_plans(["P00003", "P00004"])

    result, res = sync_plans(config, target_url)

    assert (res.status, res.error_class, result.exit_code) == ("failed", "constraint", 1)
    assert res.error and PORTFOLIOS in res.error and "P00003" in res.error, res.error
    assert_counts(res, read=8, unchanged=8, deleted=2)
    assert read_rows(target_url) == before


# ---------------------------------------------------------------- 12: the run lock


def test_sync_refuses_while_the_run_lock_is_held(target_url: str, legacy: LegacyDb,
                                                 tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 11)])
    create_target(target_url)
    config = plans_config(tmp_path, legacy)
    holder = open_target(target_url)
    try:
        with holder.run_lock():
            with pytest.raises(LockHeld):
                api.sync(config, settings_for(target_url))
            assert read_rows(target_url) == []
            assert not has_state(target_url)
            planned = api.plan(config, settings_for(target_url))  # plan takes no lock
            assert_counts(table_result(planned, TABLE), read=10, inserted=10)
    finally:
        holder.close()

    result, res = sync_plans(config, target_url)  # released: runs again
    assert result.exit_code == 0
    assert_counts(res, read=10, inserted=10)


# ---------------------------------------------------------------- 13: config against target


@pytest.mark.parametrize(("build", "problem"), [
    pytest.param(lambda: plan_columns(drop=["计划类型"]), "计划类型", id="mapped-column-missing"),
    pytest.param(None, "tracking columns missing", id="tracking-missing"),
    pytest.param(lambda: plan_columns(primary_key=False), "primary key", id="no-primary-key"),
])
def test_sync_config_is_checked_against_the_target_per_table(
        target_url: str, legacy: LegacyDb, tmp_path: Path, build: Any, problem: str) -> None:
    """DESIGN 3.2: a table that does not match its target fails alone (config), recorded;
    the others sync; exit 1."""
    rows = [plan_row(i) for i in range(1, 11)]
    legacy.create_plans(rows)
    if build is None:
        create_target(target_url, tracking=False)
    else:
        create_target(target_url, columns=build())
    create_target(target_url, table="计划副本")  # a valid table, run in the same sync
    config = write_config(tmp_path, [sql_table(TABLE, legacy),
                                     sql_table("计划副本", legacy, target_table="计划副本")])

    result = api.sync(config, settings_for(target_url))

    bad, good = table_result(result, TABLE), table_result(result, "计划副本")
    assert (bad.status, bad.error_class) == ("failed", "config")
    assert problem in (bad.error or ""), bad.error
    assert "refsync init-db --create-tables" in (bad.hint or "")
    assert (good.status, good.inserted) == ("ok", 10)
    assert result.exit_code == 1
    assert read_rows(target_url) == []
    assert_rows(target_url, seeded(rows), table="计划副本")
    state_rows, runs = read_state(target_url)
    assert state_rows[TABLE]["last_status"] == "failed"
    assert {(r["table_name"], r["status"], r["error_class"]) for r in runs} == {
        (TABLE, "failed", "config"), ("计划副本", "ok", None)}


def test_sync_missing_target_table_fails_alone(target_url: str, legacy: LegacyDb,
                                               tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 4)])
    create_target(target_url, table="计划副本")
    config = write_config(tmp_path, [sql_table(TABLE, legacy),
                                     sql_table("计划副本", legacy, target_table="计划副本")])

    result = api.sync(config, settings_for(target_url))

    bad = table_result(result, TABLE)
    assert (bad.status, bad.error_class) == ("failed", "config")
    assert "does not exist" in (bad.error or "")
    assert "refsync init-db --create-tables" in (bad.hint or "")
    assert table_result(result, "计划副本").inserted == 3
    assert result.exit_code == 1


# ---------------------------------------------------------------- 14: disabled


def test_sync_disabled_table_is_reported_and_left_alone(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 11)])
    create_target(target_url)
    create_target(target_url, table="计划副本")
    config = write_config(tmp_path, [
        sql_table(TABLE, legacy),
        sql_table("计划副本", legacy, target_table="计划副本", enabled=False)])

    result = api.sync(config, settings_for(target_url))

    assert result.exit_code == 0
    off = table_result(result, "计划副本")
    assert off.status == "disabled"
    assert_counts(off)
    assert_counts(table_result(result, TABLE), read=10, inserted=10)
    assert read_rows(target_url, table="计划副本") == []


@pytest.mark.parametrize("how", [pytest.param("env", id="WDH_REFERENCE_SYNC_ENABLED"),
                                 pytest.param("config", id="config-enabled-false")])
def test_sync_disabled_touches_nothing_unless_forced(
        target_url: str, legacy: LegacyDb, tmp_path: Path, how: str) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 11)])
    create_target(target_url)
    if how == "env":
        config = plans_config(tmp_path, legacy)
        settings = settings_for(target_url, reference_sync_enabled=False)
    else:
        config = write_config(tmp_path, [sql_table(TABLE, legacy)], enabled=False)
        settings = settings_for(target_url)

    result = api.sync(config, settings)

    assert result.disabled_reason
    assert ("WDH_REFERENCE_SYNC_ENABLED" if how == "env" else "enabled") in result.disabled_reason
    assert (result.tables, result.exit_code) == ([], 0)
    assert "disabled" in result.as_json()
    assert not has_state(target_url)
    assert read_rows(target_url) == []
    if not is_pg(target_url):
        assert not (tmp_path / "warehouse.sqlite.refsync.lock").exists()

    planned = api.plan(config, settings)  # plan always works
    assert_counts(table_result(planned, TABLE), read=10, inserted=10)

    result = api.sync(config, settings, force=True)
    assert result.exit_code == 0 and result.disabled_reason is None
    assert_counts(table_result(result, TABLE), read=10, inserted=10)


# ---------------------------------------------------------------- init-db and status


def test_init_db_creates_state_and_missing_tables(target_url: str, legacy: LegacyDb,
                                                  tmp_path: Path) -> None:
    rows = [plan_row(i) for i in range(1, 11)]
    legacy.create_plans(rows)
    config = plans_config(tmp_path, legacy)

    actions = api.init_db(config, settings_for(target_url), create_tables=True)

    assert any("created" in a for a in actions), actions
    assert has_state(target_url)
    assert read_rows(target_url) == []
    _, res = sync_plans(config, target_url)
    assert_counts(res, read=10, inserted=10)
    assert_rows(target_url, seeded(rows))
    _, res = sync_plans(config, target_url)
    assert_counts(res, read=10, unchanged=10)
    again = api.init_db(config, settings_for(target_url), create_tables=True)
    assert any("exists" in a for a in again), again
    assert_rows(target_url, seeded(rows))


def test_status_reports_the_last_run_and_creates_nothing(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 11)])
    create_target(target_url)
    config = plans_config(tmp_path, legacy, incremental=INCREMENTAL)

    doc = api.status(config, settings_for(target_url))
    assert [t["last_status"] for t in doc["tables"]] == ["never"]
    assert doc["runs"] == []
    assert not has_state(target_url)

    result, _ = sync_plans(config, target_url)
    doc = api.status(config, settings_for(target_url))

    (table,) = doc["tables"]
    assert (table["last_run_key"], table["last_status"]) == (result.run_key, "ok")
    assert (table["read"], table["inserted"], table["watermark"]) == (10, 10, wm("10:00"))
    assert [r["run_key"] for r in doc["runs"]] == [result.run_key]


def test_sync_tables_selects_by_name_or_target(target_url: str, legacy: LegacyDb,
                                               tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 4)])
    create_target(target_url)
    create_target(target_url, table="计划副本")
    config = write_config(tmp_path, [
        sql_table("副本", legacy, target_table="计划副本"), sql_table(TABLE, legacy)])

    result = api.sync(config, settings_for(target_url), tables=["计划副本"])

    assert [t.name for t in result.tables] == ["副本"]
    assert read_rows(target_url) == []
    assert len(read_rows(target_url, table="计划副本")) == 3


def test_state_tables_an_older_release_made_are_upgraded_by_sync_not_by_plan(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    """DESIGN 5: `sync` brings the state tables up to date (this release adds
    `sync_runs.source_snapshot`, the read's start that the next run's choice of digests
    reads); a `plan` on the old tables works and changes nothing of them."""
    legacy.create_plans([plan_row(i) for i in range(1, 6)])
    create_target(target_url)
    config = plans_config(tmp_path, legacy)
    api.init_db(config, settings_for(target_url))
    schema, name = ("refsync", "sync_runs") if is_pg(target_url) else (None, "refsync_sync_runs")
    runs = quote(target_url, "refsync", name)
    for column in ("source_snapshot", "version", "detail"):  # what older releases lacked
        execute(target_url, f"ALTER TABLE {runs} DROP COLUMN {column}")

    def run_columns() -> set[str]:
        with engine_for(target_url) as engine, engine.connect() as conn:
            return {c["name"] for c in sa.inspect(conn).get_columns(name, schema=schema)}

    before = run_columns()
    planned, _ = sync_plans(config, target_url, plan_only=True)
    assert planned.exit_code == 0 and run_columns() == before
    _, res = sync_plans(config, target_url)
    assert_counts(res, read=5, inserted=5)
    assert {"source_snapshot", "version", "detail"} <= run_columns()
    _, runs_rows = read_state(target_url)
    assert runs_rows[-1]["source_snapshot"] is not None and runs_rows[-1]["status"] == "ok"
