"""`full_every` (DESIGN 4.4): when an incremental table is read in full, how it is configured,
and where the last full read is kept (the state tables, upgraded in place)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from refsync import state
from refsync.config import load_config
from refsync.errors import ConfigError
from refsync.model import TableResult

NOW = datetime(2026, 12, 7, 1, 0, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


@pytest.mark.parametrize(("last", "every", "due"), [
    pytest.param(None, None, False, id="not-configured"),
    pytest.param(NOW - timedelta(days=30), None, False, id="not-configured-old-read"),
    pytest.param(None, WEEK, True, id="no-full-read-recorded"),
    pytest.param(NOW - WEEK, WEEK, True, id="exactly-a-week"),
    pytest.param(NOW - timedelta(days=9), WEEK, True, id="overdue"),
    pytest.param(NOW - timedelta(days=6), WEEK, False, id="six-days"),
    pytest.param(NOW - WEEK + timedelta(minutes=5), WEEK, True,
                 id="a-nightly-run-that-started-5-min-earlier-last-week"),
    pytest.param(NOW - WEEK + timedelta(hours=2), WEEK, False, id="two-hours-short"),
    pytest.param(NOW - timedelta(seconds=1), timedelta(seconds=1), True, id="1s"),
    pytest.param(NOW - timedelta(seconds=0.5), timedelta(seconds=1), False, id="half-of-1s"),
])
def test_full_read_due(last: datetime | None, every: timedelta | None, due: bool) -> None:
    assert state.full_read_due(last, every, NOW) is due


def test_a_read_in_full_is_one_that_reports_no_null_cursor_rows() -> None:
    result = TableResult(name="t", target="s.t", source_type="sql", mode="upsert",
                         incremental=True)
    assert state.read_in_full(result)
    result.null_cursor_rows = 0  # an incremental read always says how many it cannot see
    assert not state.read_in_full(result)


def _table(name: str, *, incremental: bool, **options: Any) -> dict[str, Any]:
    source: dict[str, Any] = {"url": "sqlite:///legacy.db", "table": name,
                              "columns": [{"source": "k", "target": "k"}]}
    if incremental:
        source["incremental"] = {"updated_at_column": "updated_at"}
    return {"name": name, "target_table": name, "source_type": "sql",
            "source_config": source, "primary_key": "k", **options}


def _load(tmp_path: Path, tables: list[dict[str, Any]], **section: Any) -> Any:
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump({"reference_sync": {"tables": tables, **section}}),
                    encoding="utf-8")
    return load_config(path)


def test_full_every_from_defaults_reaches_incremental_tables_only(tmp_path: Path) -> None:
    loaded = _load(tmp_path, [_table("inc", incremental=True),
                              _table("whole", incremental=False),
                              _table("own", incremental=True, full_every="1d")],
                   defaults={"full_every": "7d"})
    every = {t.name: t.options.full_every for t in loaded.section.tables}
    assert every == {"inc": WEEK, "whole": None, "own": timedelta(days=1)}


def test_full_every_is_none_by_default(tmp_path: Path) -> None:
    loaded = _load(tmp_path, [_table("inc", incremental=True)])
    assert loaded.section.tables[0].options.full_every is None


@pytest.mark.parametrize(("options", "message"), [
    pytest.param({"full_every": "7d"}, "full_every is only for incremental tables",
                 id="not-incremental"),
    pytest.param({"full_every": "0"}, "must be more than 0", id="zero"),
    pytest.param({"full_every": "weekly"}, "'weekly' is not a duration", id="not-a-duration"),
])
def test_full_every_config_errors(tmp_path: Path, options: dict[str, Any],
                                  message: str) -> None:
    incremental = options["full_every"] != "7d"
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, [_table("t", incremental=incremental, **options)])
    assert message in str(info.value)
    assert "tables[0]" in str(info.value)


def test_old_sqlite_state_tables_get_the_new_column(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    try:
        with engine.begin() as conn:
            state.ensure(conn)
            conn.exec_driver_sql("ALTER TABLE refsync_sync_state DROP COLUMN last_full_at")
        with engine.begin() as conn:
            state.ensure(conn)
            names = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(refsync_sync_state)")]
        assert names[-1] == "last_full_at"
    finally:
        engine.dispose()


def test_status_text_shows_the_last_full_read_in_the_configured_zone() -> None:
    from rich.console import Console

    from refsync import render

    report = {"timezone": "Asia/Shanghai", "runs": [], "tables": [
        {"name": "年金计划", "last_status": "ok", "watermark": "2026-12-06T23:59:00",
         "last_full_read": "2026-11-30T17:00:00.000+00:00"},
        {"name": "产品线", "last_status": "never"}]}
    console = Console(record=True, width=250, color_system=None)
    for table in render.status_tables(report, now=NOW):
        console.print(table)
    text = console.export_text()
    assert "last full read" in text
    row = next(line for line in text.splitlines() if "年金计划" in line)
    assert "2026-12-01 01:00:00" in row  # 17:00 UTC is 01:00 the next day in Shanghai
