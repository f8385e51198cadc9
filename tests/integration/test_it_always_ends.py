"""A run always ends (DESIGN 4.9): SIGTERM ends it within 10 s whatever it waits on (a source
or a target that stopped answering, a frozen backend), the run deadline fails the table in
flight as `timeout`, and a target that stopped answering is noticed and retried. Servers that
freeze or stall are PRIVATE instances or sit behind a test proxy; nothing is left open on the
shared servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
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
from tcp_proxy import StallingProxy

from refsync import api

EXE = [sys.executable, "-m", "refsync"]
ENDS_WITHIN_S = 10.0  # DESIGN 4.9: a signal ends the process within 10 s
COPYING = "starts_with(query, 'COPY') AND state = 'active'"


def _until(condition: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
    """Poll `condition` until it is true; fail naming `what` past `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        got = condition()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _sessions(url: str, where: str) -> list[tuple[Any, ...]]:
    with engine_for(url) as engine, engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT pid, state, query, wait_event_type FROM pg_stat_activity "
            f"WHERE application_name = 'refsync' AND datname = current_database() AND {where}")]


def _via(proxy: StallingProxy, url: str) -> str:
    return sa.engine.make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)


@pytest.fixture
def proxied_pg(private_pg_url: str) -> Iterator[tuple[str, StallingProxy]]:
    """(the private database's URL, a stalling proxy in front of its server)."""
    parsed = sa.engine.make_url(private_pg_url)
    with StallingProxy((parsed.host or "127.0.0.1", parsed.port or 5432)) as proxy:
        yield private_pg_url, proxy


def _start(cfg: Path, url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*EXE, "sync", "-c", str(cfg), "--json", "--log-format", "json", "-v", *args],
        env={**os.environ, "WDH_DATABASE_URL": url, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)


def _ends_on_sigterm(proc: subprocess.Popen[str]) -> tuple[float, str, str]:
    """SIGTERM; (seconds until the process ended, stdout, stderr)."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=ENDS_WITHIN_S + 20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"SIGTERM did not end the run: {err[-3000:]}") from None
    return time.monotonic() - sent, out, err


def _count(url: str) -> int:
    with engine_for(url) as engine, engine.connect() as conn:
        return int(conn.exec_driver_sql('SELECT count(*) FROM business."年金计划"').scalar_one())


def _lock_is_free(url: str, cfg: Path) -> None:
    """The run lock was let go: a new run takes it (exit 0, not 3)."""
    done = subprocess.run([*EXE, "sync", "-c", str(cfg), "--json"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "WDH_DATABASE_URL": url})
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_sigterm_ends_a_run_whose_target_stopped_answering_mid_copy(
        tmp_path: Path, proxied_pg: tuple[str, StallingProxy]) -> None:
    url, proxy = proxied_pg
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(200_000))
    create_target(url)
    write_config(tmp_path, [sql_table("plans", legacy, batch_size=5000)])
    cfg = tmp_path / "data_sources.yml"
    with _start(cfg, _via(proxy, url)) as proc:
        _until(lambda: _sessions(url, COPYING), "the COPY")
        proxy.stall()
        _until(proxy.holding.is_set, "the COPY's data to stop at the proxy")
        took, out, err = _ends_on_sigterm(proc)
    assert proc.returncode == 143, err[-3000:]
    assert took <= ENDS_WITHIN_S, (took, err[-3000:])
    proxy.close()  # the server sees the dead sessions end
    _until(lambda: not _sessions(url, "true"), "the server to end refsync's sessions")
    assert _count(url) == 0
    # the clean path could not record through the stalled proxy in time: the process left
    # at once, and status names its running record abandoned (DESIGN 4.9)
    assert '"event":"exit_now"' in err, err[-3000:]
    status = subprocess.run([*EXE, "status", "-c", str(cfg), "--json", "--no-fail"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "WDH_DATABASE_URL": url})
    assert json.loads(status.stdout)["runs"][0]["status"] == "abandoned", status.stdout
    legacy.execute("DELETE FROM plans WHERE rowid > 10")  # the next run: quick, same lock
    _lock_is_free(url, cfg)


def test_sigterm_ends_a_run_whose_target_backend_is_frozen_mid_update(
        tmp_path: Path, private_pg_url: str) -> None:
    url = private_pg_url
    rows = [plan_row(i) for i in range(2000)]
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(rows)
    create_target(url)
    write_config(tmp_path, [sql_table("plans", legacy)])
    cfg = tmp_path / "data_sources.yml"
    _lock_is_free(url, cfg)  # a first load
    legacy.put_plans(plan_row(i, name=f"changed {i}") for i in range(1000))
    frozen: list[int] = []
    with engine_for(url) as engine, engine.connect() as blocker:
        blocker.exec_driver_sql('LOCK TABLE business."年金计划" IN SHARE MODE')  # UPDATE waits
        try:
            with _start(cfg, url) as proc:
                pid = _until(lambda: _sessions(url, "starts_with(query, 'UPDATE')"),
                             "the UPDATE")[0][0]
                os.kill(pid, signal.SIGSTOP)  # the backend freezes, its socket stays open
                frozen.append(pid)
                blocker.rollback()  # the lock is free; the frozen backend cannot take it
                took, out, err = _ends_on_sigterm(proc)
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
    assert proc.returncode == 143, err[-3000:]
    assert took <= ENDS_WITHIN_S, (took, err[-3000:])
    assert json.loads(out)["tables"][0]["status"] == "interrupted"
    _until(lambda: not _sessions(url, "true"), "the server to end refsync's sessions")
    with engine_for(url) as engine, engine.connect() as conn:
        changed = conn.exec_driver_sql(
            "SELECT count(*) FROM business.\"年金计划\" WHERE \"计划名称\" LIKE 'changed%%'"
        ).scalar_one()
    assert changed == 0  # rolled back


@pytest.fixture
def proxied_mysql(mysql_db_url: str) -> Iterator[tuple[sa.URL, StallingProxy]]:
    url = sa.engine.make_url(mysql_db_url)
    with StallingProxy((url.host or "127.0.0.1", url.port or 3306)) as proxy:
        yield url, proxy


def _mysql_plans(url: sa.URL, rows: int, *, view_sleep: float | None = None,
                 keyed: bool = True) -> None:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP VIEW IF EXISTS slow_plans")
            conn.exec_driver_sql("DROP TABLE IF EXISTS plans")
            key = " PRIMARY KEY" if keyed else ""  # keyless: read in one streaming statement
            conn.exec_driver_sql(f"CREATE TABLE plans (code VARCHAR(20){key}, "
                                 "name VARCHAR(100), updated_at DATETIME)")
            conn.exec_driver_sql(
                "INSERT INTO plans SELECT CONCAT('P', LPAD(seq, 7, '0')), CONCAT('n', seq), "
                f"'2024-01-01' FROM seq_1_to_{rows}")
            if view_sleep is not None:  # every row read costs the server a nap
                conn.exec_driver_sql(f"CREATE VIEW slow_plans AS SELECT * FROM plans "
                                     f"WHERE SLEEP({view_sleep}) = 0")
    finally:
        engine.dispose()


def _mysql_config(tmp_path: Path, mysql: sa.URL, table: str = "plans", **section: Any) -> Path:
    source = {"table": table, "columns": [{"source": "code", "target": "计划代码"},
                                          {"source": "name", "target": "计划名称"}]}
    write_config(tmp_path, [{"name": "年金计划", "target_table": "年金计划",
                             "target_schema": "business", "source_type": "legacy_mysql",
                             "source_config": source, "primary_key": "计划代码",
                             "retry": {"attempts": 0, "backoff": [0]}}], **section)
    return tmp_path / "data_sources.yml"


def _mysql_env(mysql: sa.URL, port: int | None = None) -> dict[str, str]:
    return {"WDH_LEGACY_MYSQL_HOST": mysql.host or "127.0.0.1",
            "WDH_LEGACY_MYSQL_PORT": str(port or mysql.port or 3306),
            "WDH_LEGACY_MYSQL_USER": mysql.username or "root",
            "WDH_LEGACY_MYSQL_PASSWORD": mysql.password or "",
            "WDH_LEGACY_MYSQL_DATABASE": mysql.database or ""}


@contextmanager
def _stalled_source_run(tmp_path: Path, pg_url: str,
                        proxied_mysql: tuple[sa.URL, StallingProxy],
                        keyed: bool = True) -> Iterator[Any]:
    """A sync of 300,000 legacy rows whose source stops answering once its read began."""
    mysql, proxy = proxied_mysql
    _mysql_plans(mysql, 300_000, keyed=keyed)
    create_target(pg_url)
    cfg = _mysql_config(tmp_path, mysql)
    with _start(cfg, pg_url, **_mysql_env(mysql, proxy.port)) as proc:
        # 1 MB of the ~6 MB of rows: the start-up queries' answers are a few kB
        _until(lambda: proxy.from_server > 1 << 20, "the source read")
        proxy.stall()
        yield proc


@pytest.mark.parametrize("keyed", [True, False], ids=["key-ranges", "one-stream"])
def test_sigterm_ends_a_run_whose_source_stopped_answering(
        tmp_path: Path, pg_url: str, proxied_mysql: tuple[sa.URL, StallingProxy],
        keyed: bool) -> None:
    """Both ways the source's COPY text is read: key ranges, and one streaming statement
    (a table without a key, and the parts a comparison found different)."""
    with _stalled_source_run(tmp_path, pg_url, proxied_mysql, keyed) as proc:
        _until(proxied_mysql[1].holding.is_set, "the read to stop at the proxy")
        took, out, err = _ends_on_sigterm(proc)
    assert proc.returncode == 143, err[-3000:]
    assert took <= ENDS_WITHIN_S, (took, err[-3000:])
    assert _count(pg_url) == 0


def test_the_run_deadline_fails_the_table_in_flight_as_timeout(
        tmp_path: Path, pg_url: str, mysql_db_url: str) -> None:
    mysql = sa.engine.make_url(mysql_db_url)
    _mysql_plans(mysql, 20_000, view_sleep=0.001)  # 20 s to read
    create_target(pg_url)
    cfg = _mysql_config(tmp_path, mysql, table="slow_plans")
    started = time.monotonic()
    done = subprocess.run(
        [*EXE, "sync", "-c", str(cfg), "--json"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "WDH_DATABASE_URL": pg_url, "WDH_REFERENCE_SYNC_MAX_RUN_TIME": "2s",
             **_mysql_env(mysql)})
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-3000:]
    assert took < 15, (took, done.stderr[-2000:])
    table = json.loads(done.stdout)["tables"][0]
    assert (table["status"], table["error_class"]) == ("failed", "timeout"), table
    assert "max_run_time (2s)" in table["error"]
    assert _count(pg_url) == 0
    with engine_for(pg_url) as engine, engine.connect() as conn:
        recorded = conn.exec_driver_sql(
            "SELECT status, error_class FROM refsync.sync_runs").all()
    assert [tuple(r) for r in recorded] == [("failed", "timeout")]


def _sample_waits(admin: sa.Connection) -> bool:
    """Whether the comparison's change sample (its key lookups, `IN (…)`) waits behind the
    test's table lock (in this test's database: other tests may share the server)."""
    return bool(admin.exec_driver_sql(
        "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
        "AND STATE LIKE 'Waiting for table%%' AND INFO LIKE '%%`code` IN (%%'").scalar())


@pytest.mark.parametrize("stop", ["sigterm", "deadline"])
def test_a_run_waiting_on_the_source_during_the_comparison_ends(
        tmp_path: Path, pg_url: str, mysql_db_url: str, stop: str) -> None:
    """A re-sync's comparison asks the source first for the rows of a sample of the target
    (the change sample, DESIGN 4.6): where that waits behind a table lock, SIGTERM ends the
    run within 10 s (143, interrupted) and the run deadline fails the table as `timeout`;
    the statement is cancelled on the server and nothing is written."""
    mysql = sa.engine.make_url(mysql_db_url)
    _mysql_plans(mysql, 20_000)  # compared in key ranges (digest.RANGES_FROM_ROWS)
    create_target(pg_url)
    cfg = _mysql_config(tmp_path, mysql)
    env = {"WDH_DATABASE_URL": pg_url, **_mysql_env(mysql)}
    first = subprocess.run([*EXE, "sync", "-c", str(cfg), "--json"], capture_output=True,
                           text=True, timeout=120, env={**os.environ, **env})
    assert first.returncode == 0, first.stdout + first.stderr[-2000:]
    engine = sa.create_engine(mysql, poolclass=sa.NullPool)
    try:
        with engine.connect() as admin:
            admin.exec_driver_sql("UPDATE plans SET name = 'changed' WHERE code = 'P0000007'")
            admin.commit()  # a change since the last run: compared in parts, sample first
            admin.exec_driver_sql("LOCK TABLES plans WRITE")
            try:
                if stop == "deadline":
                    env["WDH_REFERENCE_SYNC_MAX_RUN_TIME"] = "5s"
                with _start(cfg, pg_url, **env) as proc:
                    with engine.connect() as watch:
                        _until(lambda: _sample_waits(watch), "the change sample to wait")
                        if stop == "sigterm":
                            took, out, err = _ends_on_sigterm(proc)
                        else:
                            began = time.monotonic()
                            out, err = proc.communicate(timeout=60)
                            took = time.monotonic() - began  # the deadline is 5 s
                        # cancelled on the server while the lock is still held
                        _until(lambda: not _sample_waits(watch), "the statement to go", 5)
            finally:
                admin.exec_driver_sql("UNLOCK TABLES")
    finally:
        engine.dispose()
    table = json.loads(out)["tables"][0]
    assert took <= ENDS_WITHIN_S, (took, err[-3000:])
    if stop == "sigterm":
        assert proc.returncode == 143, err[-3000:]
        assert table["status"] == "interrupted", table
    else:
        assert proc.returncode == 1, err[-3000:]
        assert (table["status"], table["error_class"]) == ("failed", "timeout"), table
    assert "sampled target rows" not in err  # it stopped inside the sample
    with engine_for(pg_url) as pg, pg.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM business.\"年金计划\" "
                                    "WHERE \"计划名称\" = 'changed'").scalar_one() == 0


def test_the_deadline_skips_the_tables_not_started(tmp_path: Path, pg_url: str) -> None:
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(10))
    create_target(pg_url)
    create_target(pg_url, table="组合计划")
    config = write_config(tmp_path, [sql_table("年金计划", legacy),
                                     sql_table("组合计划", legacy, target_table="组合计划")],
                          max_run_time="0.001s")
    result = api.sync(config, settings_for(pg_url))
    assert result.exit_code == 1
    assert [(t.status, t.error_class) for t in result.tables] in (
        [("failed", "timeout"), ("skipped", "timeout")],
        [("skipped", "timeout"), ("skipped", "timeout")])
    with engine_for(pg_url) as engine, engine.connect() as conn:  # recorded as reported
        recorded = {tuple(r) for r in conn.exec_driver_sql(
            "SELECT table_name, status, error_class FROM refsync.sync_runs")}
    assert recorded == {(t.name, t.status, t.error_class) for t in result.tables}


def test_a_target_that_stopped_answering_is_cut_and_retried(
        tmp_path: Path, proxied_pg: tuple[str, StallingProxy],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from refsync.targets import pg_liveness

    monkeypatch.setattr(pg_liveness, "CHECK_EVERY_S", 0.2)
    monkeypatch.setattr(pg_liveness, "PROBE_AFTER_S", 0.5)
    monkeypatch.setattr(pg_liveness, "PROBE_TIMEOUT_S", 1.0)
    url, proxy = proxied_pg
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(plan_row(i) for i in range(100_000))
    create_target(url)
    config = write_config(tmp_path, [sql_table("plans", legacy, batch_size=5000)],
                          defaults={"retry": {"attempts": 1, "backoff": [0]}})

    def stall_then_resume() -> None:
        _until(lambda: _sessions(url, COPYING), "the COPY")
        proxy.stall()
        _until(lambda: any(getattr(r, "event", None) == "target_unresponsive"
                           for r in caplog.records), "the watchdog", seconds=30)
        proxy.resume()

    helper = threading.Thread(target=stall_then_resume, daemon=True)
    helper.start()
    with caplog.at_level("WARNING"):
        result = api.sync(config, settings_for(_via(proxy, url)))
    helper.join(5)
    res = table_result(result, "plans")
    assert (res.status, res.attempts) == ("ok", 2), (res.error_class, res.error)
    assert _count(url) == 100_000


def test_a_second_signal_ends_the_process_at_once(
        tmp_path: Path, pg_url: str, proxied_mysql: tuple[sa.URL, StallingProxy]) -> None:
    with _stalled_source_run(tmp_path, pg_url, proxied_mysql) as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        for line in proc.stderr:  # the first signal is being handled: cancels under way
            if '"event":"signal"' in line:
                break
        else:
            raise AssertionError("the first signal was never logged")
        assert proc.poll() is None  # still stopping when the second signal comes
        took, _, err = _ends_on_sigterm(proc)  # the second one
    assert proc.returncode == 143, err[-3000:]
    assert took < 2.5, (took, err[-3000:])  # not the 3 s before sockets are closed
