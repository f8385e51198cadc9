"""Issue 8, the engine's side: no silent loss (DESIGN 2.1, 3.2, 4.4, 4.5, 4.7).

Each test runs on both targets (`target_url`: SQLite and PostgreSQL) against a SQLite
"legacy" source or a YAML file, and fails on the engine before the fix.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from helpers import (
    AUTHORITATIVE,
    KEY,
    TABLE,
    LegacyDb,
    assert_counts,
    by_key,
    create_tables,
    create_target,
    expected_row,
    plan_row,
    read_rows,
    read_state,
    settings_for,
    sql_table,
    table_result,
    tracking_columns,
    write_config,
    yaml_table,
)

from refsync import api
from refsync.model import TableResult
from refsync.sources.yaml_file import YamlFileSource

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")
TOO_LONG = "长" * 101  # 计划名称 is varchar(100)


@pytest.fixture
def legacy(tmp_path: Path) -> LegacyDb:
    return LegacyDb(tmp_path / "legacy.sqlite")


def sync(config: Any, url: str, **kwargs: Any) -> tuple[Any, TableResult]:
    result = api.sync(config, settings_for(url), **kwargs)
    return result, table_result(result, TABLE)


# ---------------------------------------------------------------- 1: kept rejects


def test_delete_insert_skip_keeps_the_target_rows_of_rejected_rows(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    """A rejected row is still a source row: its target row stays as it was, whether it is
    listed (20) or not; the guard and `deleted` count only what is really gone."""
    rows = [plan_row(i) for i in range(1, 31)]
    legacy.create_plans(rows)
    create_target(target_url)
    config = write_config(tmp_path, [sql_table(TABLE, legacy, mode="delete_insert",
                                               on_invalid="skip")])
    assert sync(config, target_url)[1].inserted == 30

    legacy.put_plans([plan_row(i, name=TOO_LONG) for i in range(1, 26)])  # 25 rejects
    legacy.delete_plans(["P00030"])
    planned = sync(config, target_url, plan_only=True)[1]
    result, res = sync(config, target_url)

    assert (planned.status, planned.deleted) == ("ok", 1)
    assert res.status == "ok", res.error
    assert_counts(res, read=29, unchanged=4, rejected=25, deleted=1)
    assert len(res.rejects) == 20
    assert result.exit_code == 0
    assert by_key(read_rows(target_url)) == {r[0]: expected_row(r) for r in rows[:29]}


def test_delete_insert_skip_keeps_rejected_rows_in_the_first_run_after_a_direct_load(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    rows = [plan_row(i) for i in range(1, 4)]
    legacy.create_plans(rows)
    create_target(target_url)
    config = write_config(tmp_path, [sql_table(TABLE, legacy, mode="delete_insert",
                                               on_invalid="skip")])
    sync(config, target_url)
    legacy.put_plans([plan_row(2, name=TOO_LONG), plan_row(3, kind="X" * 21)])

    res = sync(config, target_url)[1]

    assert_counts(res, read=3, unchanged=1, rejected=2)
    assert by_key(read_rows(target_url)) == {r[0]: expected_row(r) for r in rows}


# ---------------------------------------------------------------- 10b: invalid before guarded


def test_invalid_rows_are_reported_before_the_mass_delete_guard(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    rows = [plan_row(i) for i in range(1, 11)]
    legacy.create_plans(rows)
    create_target(target_url)
    config = write_config(tmp_path, [sql_table(TABLE, legacy, mode="delete_insert")])
    sync(config, target_url)
    legacy.delete_plans([f"P{i:05d}" for i in range(1, 8)])
    legacy.put_plans([plan_row(8, name=TOO_LONG)])

    result, res = sync(config, target_url)

    assert (res.status, res.error_class) == ("failed", "invalid"), res.error
    assert res.rejects[0]["key"] == {KEY: "P00008"}
    assert result.exit_code == 1
    assert len(read_rows(target_url)) == 10


# ---------------------------------------------------------------- 10c: a NULL reject


def test_reject_of_a_null_shows_null(target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    legacy.create_plans([plan_row(1), plan_row(2, name=None)])
    legacy.execute("UPDATE plans SET name = NULL WHERE code = 'P00002'")
    create_target(target_url)
    config = write_config(tmp_path, [sql_table(TABLE, legacy, on_invalid="skip")])

    res = sync(config, target_url)[1]

    assert res.rejects == [{"key": {KEY: "P00002"}, "column": "计划名称", "value": "NULL",
                            "reason": "NULL in NOT NULL column"}]


# ---------------------------------------------------------------- 5: unexpected errors


def test_mixed_date_and_datetime_cursor_does_not_crash(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    """A SQLite DATETIME column holding `2024-01-01` and `2024-01-02 10:00:00`."""
    legacy.create_plans([plan_row(1, updated_at="2024-01-01"),
                         plan_row(2, updated_at="2024-01-02 10:00:00"),
                         plan_row(3, updated_at="2024-01-02")])
    create_target(target_url)
    config = write_config(tmp_path, [sql_table(
        TABLE, legacy, incremental={"updated_at_column": "updated_at"})])

    res = sync(config, target_url)[1]
    again = sync(config, target_url)[1]

    assert (res.status, res.inserted, res.watermark) == ("ok", 3, "2024-01-02T10:00:00")
    assert_counts(again, read=1, unchanged=1)


def test_an_unexpected_error_fails_only_its_table_as_internal(
        target_url: str, legacy: LegacyDb, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(self: YamlFileSource, since: Any = None) -> Any:
        raise RuntimeError("a bug in the reader")

    monkeypatch.setattr(YamlFileSource, "iter_batches", broken)
    product_lines = tmp_path / "product_lines.yml"
    product_lines.write_text('schema_version: "1.0"\ndata:\n  - {代码: A, 名称: a}\n',
                             encoding="utf-8")
    yaml_target(target_url)
    legacy.create_plans([plan_row(1), plan_row(2)])
    create_target(target_url)
    config = write_config(tmp_path, [
        yaml_table("产品线", product_lines, target_table="产品线", key="代码"),
        sql_table(TABLE, legacy)])

    with caplog.at_level("DEBUG", logger="refsync"):
        result = api.sync(config, settings_for(target_url))

    bad, good = table_result(result, "产品线"), table_result(result, TABLE)
    assert (bad.status, bad.error_class) == ("failed", "internal")
    assert "RuntimeError: a bug in the reader" in (bad.error or "")
    assert (good.status, good.inserted) == ("ok", 2)
    assert result.exit_code == 1
    assert any(r.exc_info and "a bug in the reader" in str(r.exc_info[1])
               for r in caplog.records if r.levelname == "DEBUG")
    state_rows, runs = read_state(target_url)
    assert state_rows["产品线"]["last_status"] == "failed"
    assert [(r["status"], r["error_class"]) for r in runs if r["table_name"] == "产品线"] == [
        ("failed", "internal")]


# ---------------------------------------------------------------- 6: YAML text


def yaml_target(url: str) -> None:
    def build(md: sa.MetaData) -> None:
        sa.Table("产品线", md,
                 sa.Column("代码", sa.String(10), primary_key=True),
                 sa.Column("名称", sa.String(20)),
                 sa.Column("版本", sa.String(10)),
                 sa.Column("时间", sa.String(10)),
                 sa.Column("开关", sa.String(5)),
                 sa.Column("排序", sa.Integer),
                 sa.Column("启用", sa.Boolean),
                 sa.Column("比例", sa.Numeric(5, 2)),
                 *tracking_columns())

    create_tables(url, build)


def test_yaml_scalars_keep_their_text_and_typed_columns_parse_it(
        target_url: str, tmp_path: Path) -> None:
    path = tmp_path / "product_lines.yml"
    path.write_text("""\
schema_version: 1.0
description: 产品线
data:
  - {代码: 0701, 名称: 企业年金, 版本: 1.10, 时间: 12:30, 开关: on, 排序: 0701, 启用: on,
     比例: 1.10}
  - {代码: 0702, 名称: ~, 版本: null, 时间: , 开关: off, 排序: 010, 启用: off, 比例: 2}
""", encoding="utf-8")
    yaml_target(target_url)
    config = write_config(tmp_path, [yaml_table("产品线", path, target_table="产品线",
                                                key="代码")])

    result = api.sync(config, settings_for(target_url))

    assert table_result(result, "产品线").inserted == 2
    assert read_rows(target_url, table="产品线", key="代码") == [
        {"代码": "0701", "名称": "企业年金", "版本": "1.10", "时间": "12:30", "开关": "on",
         "排序": Decimal(701), "启用": True, "比例": Decimal("1.10"), **AUTHORITATIVE},
        {"代码": "0702", "名称": None, "版本": None, "时间": None, "开关": "off",
         "排序": Decimal(10), "启用": False, "比例": Decimal("2.00"), **AUTHORITATIVE},
    ]


# ---------------------------------------------------------------- 7: honest watermarks


def incremental_config(tmp_path: Path, legacy: LegacyDb, **options: Any) -> Any:
    return write_config(tmp_path, [sql_table(
        TABLE, legacy, incremental={"updated_at_column": "updated_at"}, **options)])


def test_watermark_never_passes_the_source_clock(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    """A future-dated row (2099) must not pin the watermark: later changes are still read."""
    legacy.create_plans([plan_row(1), plan_row(2), plan_row(3, updated_at="2099-01-01 00:00:00")])
    create_target(target_url)
    config = incremental_config(tmp_path, legacy)
    before = datetime.now(SHANGHAI).replace(tzinfo=None, microsecond=0)

    res = sync(config, target_url)[1]

    mark = datetime.fromisoformat(res.watermark or "")
    after = datetime.now(SHANGHAI).replace(tzinfo=None)
    assert before <= mark <= after, res.watermark
    assert any("future" in w for w in res.warnings), res.warnings
    assert read_state(target_url)[0][TABLE]["watermark"] == res.watermark

    changed = plan_row(2, name="改名", updated_at=(after + timedelta(seconds=1)).isoformat(" "))
    legacy.put_plans([changed])
    again = sync(config, target_url)[1]

    assert_counts(again, read=2, updated=1, unchanged=1)  # the change, and 2099 again
    assert by_key(read_rows(target_url))["P00002"] == expected_row(changed)


def test_watermark_stops_at_the_earliest_rejected_row(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    """Under on_invalid: skip a rejected row is read again by every incremental run until
    it is fixed (even when the fix does not touch its cursor)."""
    legacy.create_plans([plan_row(1), plan_row(2, name=TOO_LONG, updated_at="2024-05-01 09:00:00"),
                         plan_row(3, updated_at="2024-05-01 11:00:00")])
    create_target(target_url)
    config = incremental_config(tmp_path, legacy, on_invalid="skip")

    first = sync(config, target_url)[1]
    second = sync(config, target_url)[1]
    fixed = plan_row(2, updated_at="2024-05-01 09:00:00")
    legacy.put_plans([fixed])
    third = sync(config, target_url)[1]

    assert (first.inserted, first.rejected, first.watermark) == (2, 1, "2024-05-01T09:00:00")
    assert any("rejected" in w for w in first.warnings), first.warnings
    assert_counts(second, read=3, unchanged=2, rejected=1)
    assert second.watermark == "2024-05-01T09:00:00"
    assert_counts(third, read=3, inserted=1, unchanged=2)
    assert third.watermark == "2024-05-01T11:00:00"
    assert by_key(read_rows(target_url))["P00002"] == expected_row(fixed)


# ---------------------------------------------------------------- 10a: signal after commit


class SignalAfter:
    """Progress that sends SIGTERM to this process once `table` has finished (committed)."""

    def __init__(self, table: str) -> None:
        self.table = table

    def start(self, table: str, total: int | None) -> None:
        pass

    def advance(self, table: str, rows: int) -> None:
        pass

    def finish(self, table: str, result: TableResult) -> None:
        if table == self.table:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_after_a_commit_reports_the_table_as_applied(
        target_url: str, legacy: LegacyDb, tmp_path: Path) -> None:
    legacy.create_plans([plan_row(i) for i in range(1, 4)])
    create_target(target_url)
    create_target(target_url, table="计划副本")
    config = write_config(tmp_path, [sql_table(TABLE, legacy),
                                     sql_table("计划副本", legacy, target_table="计划副本")])

    result = api.sync(config, settings_for(target_url), progress=SignalAfter(TABLE))

    first = table_result(result, TABLE)
    assert (first.status, first.inserted, first.error) == ("ok", 3, None)
    assert result.interrupted_by == signal.SIGTERM
    assert result.exit_code == 128 + signal.SIGTERM
    assert len(read_rows(target_url)) == 3
    assert read_rows(target_url, table="计划副本") == []
    state_rows, runs = read_state(target_url)
    assert state_rows[TABLE]["last_status"] == "ok"
    assert [r["status"] for r in runs if r["table_name"] == TABLE] == ["ok"]
