"""A target connection lost mid-COPY is worded as what it is (DESIGN 4.7): "connection lost
while loading rows", a `connection` error, never "cannot connect"."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from helpers import (
    LegacyDb,
    create_target,
    engine_for,
    plan_row,
    settings_for,
    sql_table,
    table_result,
    write_config,
)

from refsync import api
from refsync.model import TableResult


class KillTheCopyOnce:
    """Terminates refsync's session on the target once rows are streaming into its COPY."""

    def __init__(self, url: str) -> None:
        self.url = url
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
                "AND query LIKE 'COPY %' AND pid <> pg_backend_pid()")).fetchall())

    def finish(self, table: str, result: TableResult) -> None:
        pass


def test_a_connection_lost_mid_copy_says_connection_lost_while_loading_rows(
        tmp_path: Path, pg_url: str) -> None:
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(20_000))
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table("plans", legacy, batch_size=1000)])
    hook = KillTheCopyOnce(pg_url)
    res = table_result(api.sync(config, settings_for(pg_url), progress=hook), "plans")
    assert hook.killed == 1
    assert (res.status, res.error_class) == ("failed", "connection"), res.error
    assert "cannot connect" not in (res.error or "")
    assert "connection lost while loading rows (" in (res.error or ""), res.error
