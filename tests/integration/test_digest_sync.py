"""Unchanged data never leaves the source (issue 12): a full re-sync compares digests computed
inside MySQL and PostgreSQL and reads only the parts that differ, and counts and writes
exactly what reading everything does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import (
    TRACKING_DDL,
    count_copy_text,
    execute,
    sibling_database,
    sync_section,
    table_summary,
    wait_until,
)

from pg_databases import PgDatabases
from refsync.model import RunResult

ROWS = 3000


@pytest.fixture
def source(mysql_db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(mysql_db_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS plans")
        conn.exec_driver_sql(
            "CREATE TABLE plans (code VARCHAR(20) COLLATE utf8mb4_general_ci PRIMARY KEY, "
            "name VARCHAR(100), amount DECIMAL(18,4), dt DATETIME, flag TINYINT(1)) "
            "CHARACTER SET utf8mb4")
        conn.exec_driver_sql(
            "INSERT INTO plans VALUES (%s, %s, %s, %s, %s)",
            [(f"K{i:04d}", f"计划 {i}" if i % 13 else None, f"{i}.{i % 10000:04d}",
              f"2024-01-01 {i % 24:02d}:00:00", i % 2) for i in range(ROWS)])
    yield engine
    engine.dispose()


def _target(pg_url: str) -> None:
    execute(pg_url, "CREATE SCHEMA business; CREATE TABLE business.plans (code varchar(20) "
            "PRIMARY KEY, name varchar(100), amount numeric(18,4), dt timestamptz, "
            f"flag boolean, {TRACKING_DDL})")


def _run(tmp_path: Path, pg_url: str, mysql: sa.Engine, *, full: bool = True,
         plan_only: bool = False, on_invalid: str = "fail", retries: int = 0) -> RunResult:
    section = {
        "defaults": {"retry": {"attempts": retries, "backoff": [0]}, "batch_size": 500,
                     "max_delete_ratio": 1.0, "on_invalid": on_invalid},
        "tables": [{"name": "plans", "target_table": "plans", "target_schema": "business",
                    "source_type": "legacy_mysql", "sync_mode": "delete_insert",
                    "primary_key": "code",
                    "source_config": {"table": "plans", "columns": [
                        {"source": c, "target": c}
                        for c in ("code", "name", "amount", "dt", "flag")]}}]}
    return sync_section(tmp_path, section, pg_url, mysql.url, full=full, plan_only=plan_only)


def _pg(pg_url: str, *statements: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            out: list[tuple[Any, ...]] = []
            for st in statements:
                result = conn.exec_driver_sql(st)
                if result.returns_rows:
                    out = [tuple(r) for r in result]
            return out
    finally:
        engine.dispose()


def _summary(result: RunResult) -> dict[str, Any]:
    return table_summary(result, "status", "error", "read", "inserted", "updated",
                         "unchanged", "promoted", "deleted", "rejected")


MUTATIONS = [
    "UPDATE plans SET name = 'changed' WHERE code = 'K0007'",  # one changed row
    "DELETE FROM plans WHERE code = 'K0011'",  # a deleted row
    "UPDATE plans SET name = '' WHERE code = 'K0013'",  # NULL -> ''
    "UPDATE plans SET name = CONCAT(name, ' ') WHERE code = 'K0017'",  # a trailing space
    "UPDATE plans SET code = 'k0019' WHERE code = 'K0019'",  # case only, under a _ci key
    "UPDATE plans SET dt = '1986-09-14 01:30:00' WHERE code = 'K0023'",  # ambiguous hour
    "UPDATE plans SET dt = '1988-07-01 12:00:00' WHERE code = 'K0029'",  # summer time
    "UPDATE plans SET name = '计划 31 😀' WHERE code = 'K0031'",  # an emoji
    "UPDATE plans SET amount = amount + 0.0001 WHERE code = 'K0037'",
    "INSERT INTO plans VALUES ('K9999', 'new', 1, '2024-01-01', 1)",
]
# a backfill job made K0041 an auto-derived row: it must be promoted, not counted unchanged
AUTO_DERIVED = ("UPDATE business.plans SET _source = 'auto_derived', _needs_review = true, "
                "_derived_from_domain = 'annuity', _derived_at = now() WHERE code = 'K0041'")


def test_digests_read_only_what_differs_and_match_reading_everything(
        tmp_path: Path, pg_url: str, pg_databases: PgDatabases, source: sa.Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with sibling_database(pg_databases) as other:
        for url in (pg_url, other):
            _target(url)
            first = _run(tmp_path, url, source)
            assert _summary(first)["inserted"] == ROWS
            _pg(url, AUTO_DERIVED)

        staged = count_copy_text(monkeypatch)
        unchanged = _run(tmp_path, pg_url, source)  # nothing changed at the source
        # only the auto-derived row's part is read (the other parts agree)
        assert sum(staged) < ROWS / 10, sum(staged)
        assert _summary(unchanged) == {
            "status": "ok", "error": None, "read": ROWS, "inserted": 0, "updated": 0,
            "unchanged": ROWS - 1, "promoted": 1, "deleted": 0, "rejected": 0}
        _pg(pg_url, AUTO_DERIVED)  # again, for the comparison below

        with source.begin() as conn:
            for st in MUTATIONS:
                conn.exec_driver_sql(st)
        planned = _run(tmp_path, pg_url, source, plan_only=True)  # the same path, nothing written
        staged.clear()
        digested = _run(tmp_path, pg_url, source)
        assert _summary(planned) == _summary(digested)
        assert "target_digest" in digested.tables[0].timings
        assert 0 < sum(staged) < ROWS / 3, sum(staged)
        monkeypatch.setattr("refsync.sources.mysql.MySQLSource.digest_plan",
                            lambda self, *a, **kw: None)
        everything = _run(tmp_path, other, source)
        assert "target_digest" not in everything.tables[0].timings
        assert _summary(digested) == _summary(everything)
        assert _summary(digested) == {
            "status": "ok", "error": None, "read": ROWS, "inserted": 2, "updated": 7,
            "unchanged": ROWS - 10, "promoted": 1, "deleted": 2, "rejected": 0}
        query = "SELECT * FROM business.plans ORDER BY code COLLATE \"C\""
        assert _pg(pg_url, query) == _pg(other, query)

        monkeypatch.undo()
        staged = count_copy_text(monkeypatch)
        again = _run(tmp_path, pg_url, source)  # every part agrees now: nothing is read
        assert staged == []
        assert _summary(again) == {
            "status": "unchanged", "error": None, "read": ROWS, "inserted": 0, "updated": 0,
            "unchanged": ROWS, "promoted": 0, "deleted": 0, "rejected": 0}


def test_a_table_whose_last_run_left_it_in_step_is_compared_whole_first(
        tmp_path: Path, pg_url: str, source: sa.Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After an `unchanged` run, with the source quiet since, the next full read compares the
    whole table first (cheaper on both servers); when the wholes differ (the target was
    changed) it compares the parts and counts and writes exactly what the parts alone do. A
    source that changed after the last run's read goes to the parts at once: a change, a
    delete, an insert."""
    _target(pg_url)
    assert _summary(_run(tmp_path, pg_url, source))["inserted"] == ROWS
    _touch(source, "K0001")  # changed after that run's read: the parts at once
    after_a_change = _run(tmp_path, pg_url, source)
    assert _summary(after_a_change)["updated"] == 1
    assert {"source_digest", "target_digest"} <= set(after_a_change.tables[0].timings)
    assert "source_total" not in after_a_change.tables[0].timings
    wait_until(lambda: _a_second_since_the_last_commit(source),
               "the source's last commit is a whole second before the next read")
    assert _summary(_run(tmp_path, pg_url, source))["status"] == "unchanged"

    staged = count_copy_text(monkeypatch)
    whole = _run(tmp_path, pg_url, source)  # after an `unchanged` run, the source quiet
    timings = whole.tables[0].timings
    assert {"source_total", "target_total"} <= set(timings), timings
    assert "source_digest" not in timings and "target_digest" not in timings
    assert _summary(whole) == {
        "status": "unchanged", "error": None, "read": ROWS, "inserted": 0, "updated": 0,
        "unchanged": ROWS, "promoted": 0, "deleted": 0, "rejected": 0}
    assert staged == []  # nothing left MySQL but the two numbers

    planned = _run(tmp_path, pg_url, source, plan_only=True)  # a plan reads the hint too
    assert "source_total" in planned.tables[0].timings
    _pg(pg_url, AUTO_DERIVED)  # only the target changed: the wholes differ, then the parts
    target_changed = _run(tmp_path, pg_url, source)
    assert {"source_total", "source_digest"} <= set(target_changed.tables[0].timings)
    assert _summary(target_changed) == {
        "status": "ok", "error": None, "read": ROWS, "inserted": 0, "updated": 0,
        "unchanged": ROWS - 1, "promoted": 1, "deleted": 0, "rejected": 0}
    with source.begin() as conn:
        for st in MUTATIONS[:2] + MUTATIONS[-1:]:  # changed, deleted, inserted
            conn.exec_driver_sql(st)
    changed = _run(tmp_path, pg_url, source)
    assert "source_total" not in changed.tables[0].timings  # the parts at once
    assert _summary(changed) == {
        "status": "ok", "error": None, "read": ROWS, "inserted": 1, "updated": 1,
        "unchanged": ROWS - 2, "promoted": 0, "deleted": 1, "rejected": 0}
    assert 0 < sum(staged) < ROWS / 3, sum(staged)


def test_a_source_unchanged_since_the_last_full_read_is_compared_whole_first(
        tmp_path: Path, pg_url: str, source: sa.Engine) -> None:
    """The night after a changing night: the last run wrote rows, but the source table's
    last commit (information_schema UPDATE_TIME, whole seconds) came before that run's read
    began, so the target most likely still equals it."""
    _target(pg_url)
    wait_until(lambda: _a_second_since_the_last_commit(source),
               "the source's last commit is a whole second before the first read")
    first = _run(tmp_path, pg_url, source)
    assert _summary(first)["inserted"] == ROWS
    quiet = _run(tmp_path, pg_url, source)
    timings = quiet.tables[0].timings
    assert "source_total" in timings and "source_digest" not in timings, timings
    assert _summary(quiet)["status"] == "unchanged"
    _touch(source, "K0002")
    noisy = _run(tmp_path, pg_url, source)  # changed since the unchanged run: the parts
    assert "source_digest" in noisy.tables[0].timings
    assert "source_total" not in noisy.tables[0].timings
    assert _summary(noisy)["updated"] == 1


def _a_second_since_the_last_commit(source: sa.Engine) -> bool:
    """The server's clock is a whole second past the table's last commit (UPDATE_TIME)."""
    with source.connect() as conn:
        return bool(conn.exec_driver_sql(
            "SELECT UPDATE_TIME + INTERVAL 1 SECOND <= NOW(6) FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'plans'").scalar())


def _touch(source: sa.Engine, code: str) -> None:
    with source.begin() as conn:
        conn.exec_driver_sql(f"UPDATE plans SET name = CONCAT(IFNULL(name, ''), '+') "
                             f"WHERE code = '{code}'")


def test_a_table_that_rejects_a_row_every_night_is_not_compared_whole_first(
        tmp_path: Path, pg_url: str, source: sa.Engine) -> None:
    """A rejected row's target stays behind its source, so the wholes would differ every
    night and both passes be paid: after a run that rejected rows, the parts at once."""
    with source.begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = ''")
        conn.exec_driver_sql("UPDATE plans SET dt = '0000-00-00 00:00:00' WHERE code = 'K0003'")
    _target(pg_url)
    first = _run(tmp_path, pg_url, source, on_invalid="skip")
    assert _summary(first)["rejected"] == 1 and _summary(first)["inserted"] == ROWS - 1
    for _ in range(2):
        again = _run(tmp_path, pg_url, source, on_invalid="skip")
        assert (_summary(again)["status"], _summary(again)["rejected"]) == ("unchanged", 1)
        timings = again.tables[0].timings
        assert "source_digest" in timings and "source_total" not in timings, timings


@pytest.mark.parametrize("side", ["target", "source"])
def test_a_connection_lost_in_the_whole_table_comparison_is_retried(
        tmp_path: Path, pg_url: str, source: sa.Engine, monkeypatch: pytest.MonkeyPatch,
        side: str) -> None:
    """The server ends the session computing the whole table's digest (PostgreSQL's
    `pg_terminate_backend`, MySQL's `KILL CONNECTION`, from another session, just before the
    query): a connection error, retried from scratch; the retry finds the table in step."""
    from refsync.sources import mysql_digest
    from refsync.targets import pg_digest

    _target(pg_url)
    _run(tmp_path, pg_url, source)
    wait_until(lambda: _a_second_since_the_last_commit(source),
               "the source's last commit is a whole second before the next read")
    assert _summary(_run(tmp_path, pg_url, source))["status"] == "unchanged"
    killed: list[int] = []

    def kill_first(real: Any, conn: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("whole") and not killed:
            if side == "target":
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                with sa.create_engine(pg_url, poolclass=sa.NullPool).connect() as other:
                    other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            else:
                pid = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
                with source.connect() as other:
                    other.exec_driver_sql(f"KILL CONNECTION {pid}")
            killed.append(pid)
        return real(conn, *args, **kwargs)

    module = pg_digest if side == "target" else mysql_digest
    real = getattr(module, f"{side}_digests")
    monkeypatch.setattr(module, f"{side}_digests", lambda *a, **kw: kill_first(real, *a, **kw))
    result = _run(tmp_path, pg_url, source, retries=1)
    (table,) = result.tables
    assert killed and table.attempts == 2, (table.error, killed)
    assert _summary(result) == {
        "status": "unchanged", "error": None, "read": ROWS, "inserted": 0, "updated": 0,
        "unchanged": ROWS, "promoted": 0, "deleted": 0, "rejected": 0}
    assert "source_total" in table.timings
