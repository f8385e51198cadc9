"""What a person sees, pinned through Rich's console capture (no screenshots)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from refsync import render
from refsync.model import RunResult, TableResult

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def _report() -> dict[str, Any]:
    counts = dict(read=10000, inserted=10, updated=80, deleted=0, unchanged=9910, promoted=0,
                  rejected=0)
    return {
        "tables": [
            {"name": "年金计划", "target": "business.年金计划", "last_status": "ok",
             "last_run_key": "reference_sync_2026-11-28T01:00:00.000+08:00",
             "last_started_at": "2026-11-28T01:00:00.000+08:00",
             "last_finished_at": "2026-11-28T01:00:02.000+08:00",
             "last_success_at": "2026-11-28T01:00:02.000+08:00", "watermark": None,
             **counts, "attempts": 1, "duration_s": 2.0, "error_class": None, "error": None},
            {"name": "组织架构", "target": "business.组织架构", "last_status": "failed",
             "last_run_key": "reference_sync_2026-11-28T01:00:00.000+08:00",
             "last_started_at": "2026-11-28T01:00:02.000+08:00",
             "last_finished_at": "2026-11-28T01:00:16.000+08:00",
             "last_success_at": "2026-11-26T01:00:03.000+08:00",
             "watermark": "2026-11-25T18:03:11", **{k: 0 for k in counts},
             "attempts": 4, "duration_s": 14.1, "error_class": "connection",
             "error": "legacy_mysql organization on ro@db:3306/hub: connection refused"},
            {"name": "产品线", "target": "business.产品线", "last_status": "never",
             "last_run_key": None, "last_started_at": None, "last_finished_at": None,
             "last_success_at": None, "watermark": None, **{k: None for k in counts},
             "attempts": None, "duration_s": None, "error_class": None, "error": None},
        ],
        "runs": [
            {"run_key": "reference_sync_2026-11-28T01:00:00.000+08:00", "table": "组织架构",
             "status": "failed", **{k: 0 for k in counts}, "attempts": 4, "duration_s": 14.1,
             "error": "legacy_mysql organization on ro@db:3306/hub: connection refused"},
            {"run_key": "reference_sync_2026-11-28T01:00:00.000+08:00", "table": "年金计划",
             "status": "ok", **counts, "attempts": 1, "duration_s": 2.0, "error": None},
        ],
        "warnings": ["组织架构: last success 56 hours ago (more than 26): a night was missed"],
    }


def _text(tables: list[Any]) -> str:
    console = Console(record=True, width=220, color_system=None)
    for t in tables:
        console.print(t)
    return console.export_text()


def test_status_tables_show_outcome_age_counts_and_error() -> None:
    text = _text(render.status_tables(_report(), now=NOW))
    lines = text.splitlines()
    row = next(x for x in lines if "年金计划" in x and "ok" in x)
    assert "2026-11-28 01:00:00" in row and "8h ago" in row and "9,910" in row
    failed = next(x for x in lines if "组织架构" in x and "failed" in x)
    assert "connection: legacy_mysql organization on ro@db:3306/hub: connection refused" in failed
    assert "2026-11-25T18:03:11" in failed and " 4 " in failed
    assert next(x for x in lines if "产品线" in x).split("│")[2].strip() == "never"
    runs = text[text.index("recent runs"):]
    assert runs.index("组织架构") < runs.index("年金计划")  # newest first, as given
    assert "10,000" in runs and "90" in runs  # read and changed (10 + 80)


def test_status_times_are_in_the_configured_zone_with_the_zone_named() -> None:
    text = _text(render.status_tables({**_report(), "timezone": "Europe/Berlin"}, now=NOW))
    assert "when (Europe/Berlin)" in text
    row = next(x for x in text.splitlines() if "年金计划" in x and "ok" in x)
    assert "2026-11-27 18:00:00" in row  # 01:00 in Shanghai


def test_print_status_warns_about_a_missed_night(capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(record=True, width=220, color_system=None)
    render.print_status(_report(), console=console)
    assert "warning: 组织架构: last success 56 hours ago (more than 26): a night was missed" \
        in console.export_text()


def test_run_summary_lists_counts_and_errors() -> None:
    ok = TableResult(name="年金计划", target="business.年金计划", source_type="legacy_mysql",
                     mode="upsert", incremental=False, status="ok", read=100, inserted=100,
                     attempts=1, duration_s=0.5)
    bad = TableResult(name="产品线", target="business.产品线", source_type="config_file",
                      mode="delete_insert", incremental=False, status="guarded",
                      error_class="guarded", error="would delete 6 of 8 authoritative rows")
    text = _text([render.run_table(RunResult(run_key="k", plan_only=True, tables=[ok, bad]))])
    assert "plan: what a sync would do (nothing written)" in text
    assert "guarded: would delete 6 of 8 authoritative rows" in text
    row = next(x for x in text.splitlines() if "年金计划" in x)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[:5] == ["年金计划", "upsert", "ok", "100", "100"]


@pytest.mark.parametrize(("as_json", "terminal", "enabled"), [
    pytest.param(False, True, True, id="terminal"),
    pytest.param(False, False, False, id="cron"),
    pytest.param(True, True, False, id="json"),
])
def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, as_json: bool,
                                          terminal: bool, enabled: bool) -> None:
    fake = Console(force_terminal=terminal, width=100, record=True)
    monkeypatch.setattr(render, "err_console", fake)
    progress = render.progress_for(as_json)
    assert progress.enabled is enabled
    with progress:
        progress.start("年金计划", None)
        progress.advance("年金计划", 5000)
        progress.finish("年金计划", TableResult(
            name="年金计划", target="t", source_type="sql", mode="upsert", incremental=False,
            read=5000, duration_s=0.5))
    shown = fake.export_text()
    assert ("年金计划" in shown and "5,000" in shown and "10,000 rows/s" in shown) is enabled
    if enabled:  # the finished table is one result line, printed once
        assert shown.count("✓ 年金计划 ok  5,000 rows in 0.50s") == 1


def test_progress_marks_an_estimated_total_and_shows_the_phase(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Console(force_terminal=True, width=120, record=True)
    monkeypatch.setattr(render, "err_console", fake)
    progress = render.progress_for(False)
    with progress:
        progress.start("组织架构", 12_000)
        progress.advance("组织架构", 3000)
        assert "3,000/~12,000" in str(progress.bar.tasks[0].fields["count"])
        progress.phase("组织架构", "applying")
        assert "applying" in progress.bar.tasks[0].description
        progress.finish("组织架构", TableResult(
            name="组织架构", target="t", source_type="sql", mode="upsert", incremental=False,
            read=3000, duration_s=1.0, status="failed", error_class="connection"))
        assert progress.bar.tasks == [], "a finished table leaves the live display"
    assert "✗ 组织架构 failed  3,000 rows in 1.00s (3,000 rows/s) connection" in fake.export_text()
