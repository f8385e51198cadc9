"""Losing the target connection mid-table is retried like a lost source (DESIGN 4.7): the
table's transaction is gone, the read restarts, and the target ends exactly right."""

from __future__ import annotations

from pathlib import Path

from helpers import (
    KillTargetSessionOnce,
    LegacyDb,
    assert_counts,
    create_target,
    plan_row,
    read_rows,
    settings_for,
    sql_table,
    table_result,
    write_config,
)

from refsync import api

ROWS = 20_000


def test_sync_retries_a_lost_target_connection(tmp_path: Path, pg_url: str) -> None:
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(ROWS))
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table("plans", legacy, batch_size=1000)],
                          defaults={"retry": {"attempts": 2, "backoff": [0.1]}})
    hook = KillTargetSessionOnce(pg_url, "xact_start IS NOT NULL")
    result = api.sync(config, settings_for(pg_url), progress=hook)
    assert hook.killed == 1
    res = table_result(result, "plans")
    assert (res.status, res.attempts, result.exit_code) == ("ok", 2, 0)
    assert_counts(res, read=ROWS, inserted=ROWS)  # only the last, complete read counts
    assert len(read_rows(pg_url)) == ROWS


def test_unreachable_target_is_retried_then_one_line_and_exit_1(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from refsync.cli import app

    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans([plan_row(1)])
    write_config(tmp_path, [sql_table("plans", legacy)],
                 defaults={"retry": {"attempts": 2, "backoff": [0.05]}})
    url = "postgresql://etl:Pw-Zebra-99@127.0.0.1:1/wh"
    result = CliRunner().invoke(app, ["sync", "-c", str(tmp_path / "data_sources.yml"),
                                      "--json"], env={"WDH_DATABASE_URL": url})
    assert result.exit_code == 1
    doc = __import__("json").loads(result.stdout)
    assert doc["exit_code"] == 1 and doc["error_class"] == "connection"
    assert doc["hint"] == "check WDH_DATABASE_URL and that the target server is up"
    assert result.stderr.count("retrying in 0.1s") == 2 or "attempt 2 failed" in result.stderr
    assert "Pw-Zebra-99" not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
