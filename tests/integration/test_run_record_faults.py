"""A connection lost while the run record is written (DESIGN 4.7): the table's last statement,
the `INSERT … ON CONFLICT` into refsync.sync_runs, is classified like every other statement:
`connection`, retried per `retry`, and stored as a short classified message, never
SQLAlchemy's statement-and-parameters dump. On a PRIVATE PostgreSQL (it is restarted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from helpers import (
    LegacyDb,
    create_target,
    plan_row,
    settings_for,
    sql_table,
    table_result,
    write_config,
)
from private_postgres import PrivatePostgres

from refsync import api
from refsync.errors import MAX_ERROR_CHARS
from refsync.model import TableResult

EXE = [sys.executable, "-m", "refsync"]

_RECORD_WAITS = """
SELECT count(*) FROM pg_stat_activity
WHERE application_name = 'refsync' AND datname = current_database()
  AND wait_event_type = 'Lock' AND query LIKE '%%sync_runs%%'
"""


class HoldTheRunRecord:
    """A progress object that, when the table starts applying (the first time only), locks its
    `running` record in another session, as an operator's `SELECT … FOR UPDATE` would; a
    thread then restarts the server once the run's record write waits on that lock (or, when
    it never does, ends the locking session, so that the run ends and the test fails)."""

    def __init__(self, private_pg: PrivatePostgres, url: str, table: str) -> None:
        self.pg, self.url, self.table = private_pg, url, table
        self.engine = sa.create_engine(url, poolclass=sa.NullPool)
        self.holder: sa.Connection | None = None
        self.restarted = threading.Event()
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def start(self, table: str, total: int | None) -> None:
        pass

    def advance(self, table: str, rows: int) -> None:
        pass

    def finish(self, table: str, result: TableResult) -> None:
        pass

    def phase(self, table: str, name: str) -> None:
        if name != "applying" or self.holder is not None:
            return
        self.holder = self.engine.connect()
        locked = self.holder.exec_driver_sql(
            "SELECT run_key FROM refsync.sync_runs WHERE status = 'running' "
            "AND table_name = %(t)s FOR UPDATE", {"t": self.table}).fetchall()
        assert len(locked) == 1, locked
        self.thread = threading.Thread(target=self._restart_when_waiting, daemon=True)
        self.thread.start()

    def _restart_when_waiting(self) -> None:
        try:
            deadline = time.monotonic() + 60
            while not self._query(_RECORD_WAITS):
                assert time.monotonic() < deadline, "the run record never waited"
                time.sleep(0.05)
            self.pg.restart()
            self.restarted.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self._query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                        "datname = current_database() AND query LIKE '%%FOR UPDATE'")

    def _query(self, sql: str) -> object:
        """One statement in a transaction of its own: a transaction reads pg_stat_activity
        once and keeps what it read (a wait that began after would never be seen)."""
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(sql).scalar()

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=120)
        if self.holder is not None:
            try:
                self.holder.close()
            except sa.exc.SQLAlchemyError:
                pass
        self.engine.dispose()


def _run(tmp_path: Path, private_pg: PrivatePostgres, url: str, attempts: int) -> TableResult:
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(50))
    create_target(url)
    config = write_config(tmp_path, [sql_table("plans", legacy)],
                          defaults={"retry": {"attempts": attempts, "backoff": [1.0, 2.0, 4.0]},
                                    # should the restart not come, the wait ends in a minute
                                    # (the default, 5 min a try, once held a run 10 min)
                                    "lock_timeout": "60s"})
    hold = HoldTheRunRecord(private_pg, url, "plans")
    try:
        result = api.sync(config, settings_for(url), progress=hold)
    finally:
        hold.close()
    assert hold.error is None, hold.error
    assert hold.restarted.is_set()
    return table_result(result, "plans")


def test_a_connection_lost_writing_the_run_record_is_retried_and_ends_ok(
        tmp_path: Path, private_pg: PrivatePostgres, private_pg_url: str) -> None:
    res = _run(tmp_path, private_pg, private_pg_url, attempts=3)
    # the first retry may still meet the server starting up: a connection error too
    assert (res.status, res.inserted, res.error) == ("ok", 50, None)
    assert res.attempts >= 2
    engine = sa.create_engine(private_pg_url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        assert conn.exec_driver_sql('SELECT count(*) FROM business."年金计划"').scalar() == 50
        assert conn.exec_driver_sql(
            "SELECT status, attempts FROM refsync.sync_runs WHERE table_name = 'plans'").all() \
            == [("ok", res.attempts)]
    engine.dispose()


def test_without_retries_the_lost_record_write_fails_as_connection_with_a_short_error(
        tmp_path: Path, private_pg: PrivatePostgres, private_pg_url: str) -> None:
    res = _run(tmp_path, private_pg, private_pg_url, attempts=0)
    assert (res.status, res.error_class, res.attempts) == ("failed", "connection", 1), res.error
    error = res.error or ""
    assert "shutting down" in error and "recording the run" in error, error
    assert "[SQL:" not in error and "INSERT INTO" not in error and len(error) <= MAX_ERROR_CHARS
    status = subprocess.run(
        [*EXE, "status", "-c", str(tmp_path / "data_sources.yml"), "--json", "--no-fail"],
        env={**os.environ, "WDH_DATABASE_URL": private_pg_url}, capture_output=True,
        text=True, timeout=60)
    doc: dict[str, Any] = json.loads(status.stdout)
    run = doc["runs"][0]
    assert (run["status"], run["error_class"]) == ("failed", "connection"), run
    assert run["error"] == error
