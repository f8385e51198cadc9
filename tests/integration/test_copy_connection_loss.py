"""A target connection lost mid-COPY is worded as what it is (DESIGN 4.7): "connection lost
while loading rows", a `connection` error, never "cannot connect"."""

from __future__ import annotations

from pathlib import Path

from helpers import (
    KillTargetSessionOnce,
    LegacyDb,
    create_target,
    plan_row,
    settings_for,
    sql_table,
    table_result,
    write_config,
)

from refsync import api


def test_a_connection_lost_mid_copy_says_connection_lost_while_loading_rows(
        tmp_path: Path, pg_url: str) -> None:
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(20_000))
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table("plans", legacy, batch_size=1000)])
    hook = KillTargetSessionOnce(pg_url, "query LIKE 'COPY %'")
    res = table_result(api.sync(config, settings_for(pg_url), progress=hook), "plans")
    assert hook.killed == 1
    assert (res.status, res.error_class) == ("failed", "connection"), res.error
    assert "cannot connect" not in (res.error or "")
    assert "connection lost while loading rows (" in (res.error or ""), res.error
