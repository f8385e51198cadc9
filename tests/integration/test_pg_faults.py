"""Faults around the run on PostgreSQL (issue 11): the run lock across a server restart, stale
statistics, bounded waits, target error classes, cancelled statements on a signal, a trace of
killed runs and one snapshot for a plan. Restarts and role settings use a PRIVATE instance
(private_postgres.py); the rest a fresh database on the shared server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import (
    T0,
    LegacyDb,
    assert_counts,
    create_target,
    engine_for,
    plan_row,
    refsync_copying,
    refsync_sessions,
    settings_for,
    sql_table,
    table_result,
    wait_until,
    write_config,
)
from private_postgres import PrivatePostgres

from refsync import api
from refsync.model import TableResult

TARGET = 'business."年金计划"'
EXE = [sys.executable, "-m", "refsync"]


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "WDH_DATABASE_URL": url}


def _wait_for_event(proc: subprocess.Popen[str], event: str) -> list[str]:
    """Read the JSON log lines on stderr until `event`; the lines read."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("{") and json.loads(line).get("event") == event:
            return seen
    raise AssertionError(f"no {event} event: {''.join(seen)[-3000:]}")


def _no_refsync_sessions_within(url: str, seconds: float) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + seconds
    while True:
        left = refsync_sessions(url)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def blocker() -> Iterator[Any]:
    """Open sessions that hold locks, as another client would; closed at the end."""
    engines: list[sa.Engine] = []
    conns: list[sa.Connection] = []

    def open_(url: str, *statements: str, app: str = "watchdog") -> sa.Connection:
        engine = sa.create_engine(url, connect_args={"application_name": app},
                                  poolclass=sa.NullPool)
        engines.append(engine)
        conn = engine.connect()
        conns.append(conn)
        for s in statements:
            conn.exec_driver_sql(s)
        return conn

    yield open_
    for conn in conns:
        try:
            conn.rollback()
            conn.close()
        except sa.exc.SQLAlchemyError:
            pass
    for engine in engines:
        engine.dispose()


# ---------------------------------------------------------------- 1. the lock across a restart


def test_restart_mid_copy_never_lets_two_runs_apply(
        tmp_path: Path, private_pg: PrivatePostgres, private_pg_url: str) -> None:
    rows = 300_000  # the retried COPY must outlast the second run's start-up, under load too
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(rows))
    create_target(private_pg_url)
    write_config(tmp_path, [sql_table("plans", legacy, batch_size=2000)],
                 defaults={"retry": {"attempts": 3, "backoff": [0.5]}})
    cfg = str(tmp_path / "data_sources.yml")
    env = _env(private_pg_url)
    with subprocess.Popen([*EXE, "sync", "-c", cfg, "--json", "--log-format", "json", "-v"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as first:
        _wait_for_event(first, "table_start")
        wait_until(lambda: refsync_copying(private_pg_url), "the rows' COPY streams",
                   interval=0.05)
        assert first.poll() is None, "the run ended before the restart: make rows larger"
        private_pg.restart()
        second = subprocess.run([*EXE, "sync", "-c", cfg, "--json"], env=env,
                                capture_output=True, text=True, timeout=300)
        out, err = first.communicate(timeout=300)
    assert second.returncode in (0, 1, 3), second.stderr[-2000:]
    with engine_for(private_pg_url) as engine, engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {TARGET}").scalar() == rows
        applied = conn.exec_driver_sql(
            "SELECT run_key, inserted FROM refsync.sync_runs "
            "WHERE table_name = 'plans' AND status = 'ok'").fetchall()
    # exactly one run applied the rows: the other exited 3 or stopped without applying
    assert [r[1] for r in applied] == [rows], (applied, out[-1500:], second.stdout[-1500:])
    if second.returncode == 3:
        assert json.loads(second.stdout)["error_class"] == "locked"
    else:
        doc = json.loads(out)
        assert doc["tables"][0]["error_class"] == "locked", doc


# ---------------------------------------------------------------- 2. stale statistics


def test_a_first_load_is_analysed_and_the_diff_never_nests_loops_over_staging(
        tmp_path: Path, pg_url: str) -> None:
    rows = 50_000
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(rows))
    create_target(pg_url)
    with engine_for(pg_url) as engine, engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {TARGET} SET (autovacuum_enabled = false)")
    config = write_config(tmp_path, [sql_table("plans", legacy, mode="delete_insert")])
    first = table_result(api.sync(config, settings_for(pg_url)), "plans")
    assert_counts(first, read=rows, inserted=rows)
    with engine_for(pg_url) as engine, engine.begin() as conn:
        tuples = conn.exec_driver_sql(
            f"SELECT reltuples FROM pg_class WHERE oid = '{TARGET}'::regclass").scalar()
        assert tuples > rows * 0.9  # analysed with the load, not left at "empty"
        # now make them stale as the issue found them: 0 tuples over many pages
        conn.exec_driver_sql(
            f"UPDATE pg_class SET reltuples = 0 WHERE oid = '{TARGET}'::regclass")
    legacy.delete_plans([f"P{i:05d}" for i in range(0, rows, 100)])  # 1 % deleted
    plans: dict[str, str] = {}

    def explain(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "_refsync_stage" in statement and ("NOT EXISTS" in statement
                                              or statement.startswith("CREATE TEMP TABLE "
                                                                      "_refsync_changes")):
            cursor.execute("EXPLAIN " + statement)
            plans[statement] = "\n".join(r[0] for r in cursor.fetchall())

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", explain)
    try:
        second = table_result(api.sync(config, settings_for(pg_url)), "plans")
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", explain)
    assert_counts(second, read=rows - rows // 100, unchanged=rows - rows // 100,
                  deleted=rows // 100)
    assert len(plans) >= 2, plans.keys()  # the diff and the delete check
    for statement, plan in plans.items():
        assert "Nested Loop" not in plan, f"{statement}\n{plan}"


def test_a_small_window_looks_up_its_keys_unless_the_statistics_read_empty(
        tmp_path: Path, pg_url: str) -> None:
    """An incremental window of a few rows against a 50,000-row target: the diff looks each
    key up (no scan of the whole target, which a hash join must make: 0.1 s per million
    rows, every run). With the target's statistics forced to read 'empty' over its pages,
    nested loops stay off as above."""
    rows = 50_000  # the last row sets the watermark the first window starts from
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(
        plan_row(i, updated_at="2024-06-01 00:00:00" if i == rows - 1 else T0)
        for i in range(rows))
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table(
        "plans", legacy, incremental={"updated_at_column": "updated_at"})])
    first = table_result(api.sync(config, settings_for(pg_url)), "plans")
    assert_counts(first, read=rows, inserted=rows)
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("CREATE TEMP TABLE _refsync_changes"):
            cursor.execute("EXPLAIN " + statement)
            plans.append("\n".join(r[0] for r in cursor.fetchall()))

    def window(n: int, at: str) -> TableResult:
        legacy.execute("UPDATE plans SET name = name || '*', updated_at = ? WHERE code IN "
                       f"({', '.join('?' * n)})", [at, *(f"P{i:05d}" for i in range(n))])
        plans.clear()
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", explain)
        try:
            return table_result(api.sync(config, settings_for(pg_url)), "plans")
        finally:
            sa.event.remove(sa.engine.Engine, "before_cursor_execute", explain)

    second = window(20, "2025-01-01 00:00:00")
    assert (second.status, second.read, second.updated) == ("ok", 21, 20)
    [plan] = plans
    assert "Index" in plan and "Seq Scan on \"年金计划\"" not in plan, plan
    with engine_for(pg_url) as engine, engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE pg_class SET reltuples = 0 WHERE oid = '{TARGET}'::regclass")
    third = window(30, "2025-01-02 00:00:00")
    assert (third.status, third.read, third.updated) == ("ok", 30, 30)
    [plan] = plans
    assert "Nested Loop" not in plan, plan


# ---------------------------------------------------------------- 4. bounded waits


def test_a_lock_timeout_fails_that_table_naming_the_blocker_and_others_go_on(
        tmp_path: Path, pg_url: str, blocker: Any) -> None:
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(50))
    create_target(pg_url)
    create_target(pg_url, table="组合计划")
    config = write_config(tmp_path, [sql_table("plans", legacy),
                                     sql_table("portfolios", legacy, target_table="组合计划")],
                          defaults={"lock_timeout": "1s"})
    held = blocker(pg_url, "BEGIN", f"LOCK TABLE {TARGET} IN ACCESS EXCLUSIVE MODE")
    pid = held.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    start = time.monotonic()
    result = api.sync(config, settings_for(pg_url))
    assert time.monotonic() - start < 30
    plans, portfolios = table_result(result, "plans"), table_result(result, "portfolios")
    assert (plans.status, plans.error_class) == ("failed", "query") and plans.attempts <= 1
    assert "lock timeout" in (plans.error or "")
    assert f"pid {pid}" in (plans.error or "") and "watchdog" in (plans.error or "")
    assert "source" not in (plans.hint or "")
    assert (portfolios.status, portfolios.inserted) == ("ok", 50)


def test_a_role_statement_timeout_cannot_fail_a_slow_table(
        tmp_path: Path, private_pg_url: str, blocker: Any) -> None:
    """refsync sets statement_timeout itself (default none): a role's 1 s does not apply."""
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(50))
    create_target(private_pg_url)
    role = f"etl_{os.getpid()}"
    with engine_for(private_pg_url) as engine, engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN SUPERUSER")
        conn.exec_driver_sql(f"ALTER ROLE {role} SET statement_timeout = '1s'")
        conn.commit()
    try:
        url = sa.engine.make_url(private_pg_url).set(username=role).render_as_string(
            hide_password=False)
        config = write_config(tmp_path, [sql_table("plans", legacy)])
        # SHARE lets the checks read, and holds the rows' COPY until it has waited longer
        # than the role's 1 s
        held = blocker(private_pg_url, "BEGIN", f"LOCK TABLE {TARGET} IN SHARE MODE")
        waited: list[float] = []

        def release_after_a_long_wait() -> None:
            def long_lock_wait() -> bool:
                return any(s[3] == "Lock" and s[4] > 1.5 for s in refsync_sessions(private_pg_url))

            try:
                waited.append(wait_until(long_lock_wait, "refsync's COPY has waited 1.5 s on "
                                         "the lock", interval=0.05))
            finally:
                held.rollback()

        releaser = threading.Thread(target=release_after_a_long_wait)
        releaser.start()
        res = table_result(api.sync(config, settings_for(url)), "plans")
        releaser.join(timeout=60)
        assert waited, "refsync's COPY never waited longer than the role's statement_timeout"
        assert (res.status, res.inserted, res.error) == ("ok", 50, None)
    finally:
        with engine_for(private_pg_url) as engine, engine.connect() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
            conn.commit()


# ---------------------------------------------------------------- 5. a target error's class


def test_a_statement_timeout_is_a_target_query_error_not_a_retried_connection_loss(
        tmp_path: Path, pg_url: str, blocker: Any) -> None:
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(50))
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table("plans", legacy, statement_timeout="1s")],
                          defaults={"retry": {"attempts": 3, "backoff": [0.1]}})
    blocker(pg_url, "BEGIN", f"LOCK TABLE {TARGET} IN SHARE MODE")  # the writes wait
    res = table_result(api.sync(config, settings_for(pg_url)), "plans")
    assert (res.status, res.error_class, res.attempts) == ("failed", "query", 1)
    assert "statement timed out on the target" in (res.error or "")
    assert "statement_timeout" in (res.hint or "") and "source" not in (res.hint or "")


# ---------------------------------------------------------------- 3. signals cancel on the server


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_cancels_the_statement_in_flight_on_the_server(
        tmp_path: Path, pg_url: str, blocker: Any, signum: int) -> None:
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(50))
    create_target(pg_url)
    write_config(tmp_path, [sql_table("plans", legacy)])
    blocker(pg_url, "BEGIN", f"LOCK TABLE {TARGET} IN SHARE MODE")  # the rows' COPY waits
    with subprocess.Popen([*EXE, "sync", "-c", str(tmp_path / "data_sources.yml"), "--json",
                           "--log-format", "json", "-v"], env=_env(pg_url),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        _wait_for_event(proc, "table_start")
        wait_until(lambda: any(s[1] == "active" and "COPY" in (s[2] or "")
                               for s in refsync_sessions(pg_url)),
                   "refsync's COPY waits on the lock", timeout=20, interval=0.05)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert json.loads(out)["tables"][0]["status"] == "interrupted"
    # the blocker still holds its lock: refsync's statement was cancelled, not left waiting
    assert _no_refsync_sessions_within(pg_url, 5) == []


def test_a_signal_during_the_start_up_checks_exits_143(
        tmp_path: Path, pg_url: str, blocker: Any) -> None:
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(5))
    create_target(pg_url)
    write_config(tmp_path, [sql_table("plans", legacy)])
    # a schema created in an open transaction: refsync's CREATE SCHEMA IF NOT EXISTS waits
    blocker(pg_url, "BEGIN", "CREATE SCHEMA refsync")
    with subprocess.Popen([*EXE, "sync", "-c", str(tmp_path / "data_sources.yml"), "--json"],
                          env=_env(pg_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        wait_until(lambda: any(s[1] == "active" and "SCHEMA" in (s[2] or "").upper()
                               for s in refsync_sessions(pg_url)),
                   "refsync's start-up waits on the schema", interval=0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (out, err[-2000:])
    assert "internal" not in out + err
    assert _no_refsync_sessions_within(pg_url, 5) == []


# ---------------------------------------------------------------- 6. a killed run's trace


def test_a_killed_run_shows_as_abandoned_in_status(tmp_path: Path, pg_url: str) -> None:
    rows = 100_000
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(rows))
    create_target(pg_url)
    write_config(tmp_path, [sql_table("plans", legacy, batch_size=2000)])
    cfg = str(tmp_path / "data_sources.yml")
    with subprocess.Popen([*EXE, "sync", "-c", cfg, "--log-format", "json", "-v"],
                          env=_env(pg_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        _wait_for_event(proc, "table_start")
        wait_until(lambda: refsync_copying(pg_url), "the rows' COPY streams", interval=0.05)
        assert proc.poll() is None
        proc.kill()
        proc.communicate(timeout=30)
    deadline = time.monotonic() + 20
    while True:
        status = subprocess.run([*EXE, "status", "-c", cfg, "--json", "--no-fail"],
                                env=_env(pg_url), capture_output=True, text=True, timeout=60)
        doc = json.loads(status.stdout)
        if doc["tables"][0]["last_status"] == "abandoned" or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # the server notices the dead client's sessions
    assert doc["tables"][0]["last_status"] == "abandoned", doc
    assert doc["runs"][0]["status"] == "abandoned"
    with engine_for(pg_url) as engine, engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version FROM refsync.sync_runs").scalar()
    assert version and version[0].isdigit()


def test_a_running_record_of_a_live_run_is_not_abandoned(tmp_path: Path, pg_url: str) -> None:
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(20))
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table("plans", legacy)])
    seen: list[str] = []

    class Look:
        def start(self, table: str, total: int | None) -> None:
            report = api.status(config, settings_for(pg_url))
            seen.append(report["tables"][0]["last_status"])

        def advance(self, table: str, rows: int) -> None:
            pass

        def finish(self, table: str, result: TableResult) -> None:
            pass

    api.sync(config, settings_for(pg_url), progress=Look())
    assert seen == ["running"]
    assert api.status(config, settings_for(pg_url))["tables"][0]["last_status"] == "ok"


# ---------------------------------------------------------------- 7. a plan's one snapshot


def test_a_plan_reads_the_target_in_one_snapshot(tmp_path: Path, pg_url: str) -> None:
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(3000))
    create_target(pg_url)
    config = write_config(tmp_path, [sql_table("plans", legacy, batch_size=500,
                                               mode="delete_insert")])
    assert table_result(api.sync(config, settings_for(pg_url)), "plans").inserted == 3000

    class DeleteMidway:  # a concurrent sync commits while the plan stages
        done = False

        def start(self, table: str, total: int | None) -> None:
            pass

        def advance(self, table: str, rows: int) -> None:
            if not self.done:
                self.done = True
                with engine_for(pg_url) as engine, engine.begin() as conn:
                    conn.exec_driver_sql(f"DELETE FROM {TARGET} WHERE \"计划代码\" < 'P00100'")

        def finish(self, table: str, result: TableResult) -> None:
            pass

    res = table_result(api.plan(config, settings_for(pg_url), progress=DeleteMidway()), "plans")
    assert_counts(res, read=3000, unchanged=3000)  # the snapshot from before the delete
