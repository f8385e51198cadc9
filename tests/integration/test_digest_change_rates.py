"""Digests at every change rate (issue 20): a `--full` re-sync with `digests: auto` counts
and writes exactly what the same re-sync with `digests: off` does, whatever share of the
rows changed (none, one, 0.01 %, 1 %, half), with deletes, inserts, NULLs and auto-derived
rows; it reads only the parts that differ, and not even the digests where the last full
read found so much changed that reading everything is cheaper."""

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
)

from pg_databases import PgDatabases
from refsync.model import RunResult

ROWS = 10_000
# rows changed a night, per case: 0.01 % of the table is one row
CHANGES = {"none": 0, "one-row": 1, "0.01pct": ROWS // 10_000, "1pct": ROWS // 100,
           "half": ROWS // 2}
TARGET_ROWS = "SELECT * FROM business.plans ORDER BY code COLLATE \"C\""


@pytest.fixture
def source(mysql_db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(mysql_db_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS plans")
        conn.exec_driver_sql(
            "CREATE TABLE plans (code VARCHAR(20) COLLATE utf8mb4_general_ci PRIMARY KEY, "
            "name VARCHAR(100), amount DECIMAL(18,4), note VARCHAR(200)) CHARACTER SET utf8mb4")
        conn.exec_driver_sql(
            "INSERT INTO plans SELECT CONCAT('P', LPAD(seq, 7, '0')), "
            "IF(MOD(seq, 17) = 0, NULL, CONCAT('plan ', seq)), seq / 100, REPEAT('x', 100) "
            f"FROM seq_1_to_{ROWS}")
        conn.exec_driver_sql("ANALYZE TABLE plans")  # the statistics the buckets are sized by
    yield engine
    engine.dispose()


def _target(pg_url: str) -> None:
    execute(pg_url, "CREATE SCHEMA business; CREATE TABLE business.plans (code varchar(20) "
            f"PRIMARY KEY, name varchar(100), amount numeric(18,4), note varchar(200), "
            f"{TRACKING_DDL})")


def _run(tmp_path: Path, pg_url: str, mysql: sa.Engine, digests: str = "auto") -> RunResult:
    section = {
        "defaults": {"retry": {"attempts": 0, "backoff": [0]}, "batch_size": 2000,
                     "max_delete_ratio": 1.0},
        "tables": [{"name": "plans", "target_table": "plans", "target_schema": "business",
                    "source_type": "legacy_mysql", "sync_mode": "delete_insert",
                    "primary_key": "code", "digests": digests,
                    "source_config": {"table": "plans", "columns": [
                        {"source": c, "target": c} for c in ("code", "name", "amount", "note")]}}]}
    return sync_section(tmp_path, section, pg_url, mysql.url, full=True)


def _summary(result: RunResult) -> dict[str, Any]:
    return table_summary(result, "status", "error", "read", "inserted", "updated",
                         "unchanged", "promoted", "deleted", "rejected")


def _pg(pg_url: str, query: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            result = conn.exec_driver_sql(query)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _change(source: sa.Engine, rows: int, night: int) -> None:
    """About `rows` rows changed, spread over the table: updated (NULLs made and filled),
    a tenth as many deleted and as many inserted."""
    if not rows:
        return
    step = max(1, ROWS // rows)
    n = "IF(LEFT(code, 1) = 'P', CAST(SUBSTRING(code, 2) AS UNSIGNED), 1)"
    with source.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE plans SET name = IF(name IS NULL, 'was null', IF(MOD({n}, 3) = 0, NULL, "
            f"CONCAT(name, ' n{night}'))) WHERE MOD({n}, {step}) = 0")
        conn.exec_driver_sql(f"DELETE FROM plans WHERE MOD({n}, {10 * step}) = {night}")
        conn.exec_driver_sql(
            f"INSERT INTO plans SELECT CONCAT('N{night}-', seq), 'new', seq, NULL "
            f"FROM seq_1_to_{max(1, rows // 10)}")


@pytest.mark.parametrize("parts", ["key-bytes", "key-ranges"])
@pytest.mark.parametrize("case", list(CHANGES))
def test_every_change_rate_counts_and_writes_what_reading_everything_does(
        tmp_path: Path, pg_url: str, pg_databases: PgDatabases, source: sa.Engine,
        monkeypatch: pytest.MonkeyPatch, case: str, parts: str) -> None:
    changed = CHANGES[case]
    monkeypatch.setattr("refsync.digest.plan.EVIDENCE_FROM_ROWS", 0)  # as a large table
    ranges = parts == "key-ranges"
    # key ranges from this many rows on (a large table's parts): ~200 rows a part here
    monkeypatch.setattr("refsync.digest.ranges.RANGES_FROM_ROWS", 0 if ranges else 10**9)
    with sibling_database(pg_databases) as off_url:
        for url in (pg_url, off_url):
            _target(url)
            loaded = _summary(_run(tmp_path, url, source))
            assert loaded["inserted"] == ROWS, loaded
        # a backfill job made a row auto-derived on both targets: it is promoted
        for url in (pg_url, off_url):
            execute(url, "UPDATE business.plans SET _source = 'auto_derived', "
                    "_derived_from_domain = 'annuity' WHERE code = 'P0000005'")
        for night in (1, 2):
            if case == "one-row":
                with source.begin() as conn:
                    conn.exec_driver_sql(f"UPDATE plans SET name = 'night {night}' "
                                         "WHERE code = 'P0006789'")
            else:
                _change(source, changed, night)
            with pytest.MonkeyPatch.context() as counting:
                staged = count_copy_text(counting)
                auto = _run(tmp_path, pg_url, source)
            read = sum(staged)
            off = _run(tmp_path, off_url, source, digests="off")
            assert _summary(auto) == _summary(off)
            assert _pg(pg_url, TARGET_ROWS) == _pg(off_url, TARGET_ROWS)
            assert "source_digest" not in off.tables[0].timings
            timings = auto.tables[0].timings
            assert ("ranges" in timings) == (ranges and "source_digest" in timings), timings
            if changed >= ROWS // 100 and (night == 2 or ranges):
                # the last full read (or, before key ranges, a sample of the target) found so
                # much changed that reading everything is cheaper
                assert "source_digest" not in timings and read == _summary(auto)["read"]
                assert ("sample" in timings) == ranges, timings
            else:
                assert "source_digest" in timings or "source_total" in timings, timings
            # only the parts that differ are read (a bytes part holds ~32 rows, a key range
            # ~200, sampled; the first night, the auto-derived row's part too)
            derived = (600 if ranges else 200) if night == 1 else 0
            most = ({"none": 0, "one-row": 600, "0.01pct": 1200, "1pct": ROWS + 100}
                    if ranges else {"none": 0, "one-row": 200, "0.01pct": 400,
                                    "1pct": ROWS // 2 if night == 1 else ROWS + 100})
            if case in most:
                assert read <= most[case] + derived, read
        summary = _summary(auto)
        if case == "none":
            assert summary["status"] == "unchanged" and read == 0
        elif case == "one-row":
            assert (summary["updated"], summary["inserted"], summary["deleted"]) == (1, 0, 0)
        else:
            assert summary["inserted"] == max(1, changed // 10) and summary["updated"] > 0
            assert summary["deleted"] > 0 or changed < 10
