"""The fast path for text tables (MySQL formats COPY text → PostgreSQL) gives exactly what the
values path gives: the same target rows, counts, rejects and watermark, across chunk
boundaries and for every kind of awkward value."""

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
    pg_rows,
    sibling_database,
    sync_section,
    table_summary,
)

from pg_databases import PgDatabases
from refsync.model import RunResult

AWKWARD = ["tab\there", "line\nfeed", "cr\rhere", "back\\slash", "\\N", "NULL", "", "quo'te\"",
           "😀 emoji", "𠀀 ext-B", "trailing ", "\\t literal", "a\\\\b"]
ROWS = 60


def _value(i: int) -> str | None:
    if i % 17 == 0:
        return None
    return AWKWARD[i % len(AWKWARD)] + f" {i}"


# the source table's key: ranges are walked on a one-column key; without one (no key, or a
# composite one) the table is read in one streaming statement, on the same fast path
KEYS = {"one-column": "PRIMARY KEY (code)", "none": "KEY (code)",
        "composite": "PRIMARY KEY (code, updated_at)"}


@pytest.fixture(params=list(KEYS))
def source(mysql_db_url: str, request: pytest.FixtureRequest) -> Iterator[sa.URL]:
    url = sa.engine.make_url(mysql_db_url)
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS plans")
            conn.exec_driver_sql(
                "CREATE TABLE plans (code VARCHAR(20) NOT NULL, name VARCHAR(100), "
                f"kind VARCHAR(20), updated_at DATETIME(6) NOT NULL, {KEYS[request.param]}) "
                "CHARACTER SET utf8mb4")
            rows = [(f"P{i:04d}", _value(i), f"k{i % 3}", f"2024-01-01 00:00:{i % 60:02d}.{i:06d}")
                    for i in range(ROWS)]
            rows += [("P9001", "x" * 31, "k", "2024-01-02 00:00:00"),  # too long for varchar(30)
                     ("P9002", "ok", None, "2024-01-02 00:00:00"),  # NULL in NOT NULL
                     ("P9003", "nul\x00char", "k", "2024-01-02 00:00:00"),
                     ("P9004", "\\" * 16, "k", "2024-01-03 00:00:00.5")]  # escapes look long
            conn.exec_driver_sql("INSERT INTO plans VALUES (%s, %s, %s, %s)", rows)
        yield url
    finally:
        engine.dispose()


def _target(pg_url: str) -> None:
    execute(pg_url, 'CREATE SCHEMA business; CREATE TABLE business."年金计划" ('
            '"年金计划号" varchar(20) PRIMARY KEY, "计划名称" varchar(30), '
            f'"计划类型" varchar(20) NOT NULL, {TRACKING_DDL})')


def _run(tmp_path: Path, pg_url: str, mysql: sa.URL, *, batch_size: int,
         incremental: bool | str = False) -> RunResult:
    source: dict[str, Any] = {
        "table": "plans",
        "columns": [{"source": "code", "target": "年金计划号"},
                    {"source": "name", "target": "计划名称"},
                    {"source": "kind", "target": "计划类型"}]}
    if incremental:
        source["incremental"] = {"updated_at_column": "updated_at"}
        if incremental == "where":  # operator-written SQL, bound by name
            source["incremental"]["where"] = "updated_at >= :last_synced_at AND kind <> 'x'"
    section = {"defaults": {"retry": {"attempts": 0, "backoff": [0]},
                                           "on_invalid": "skip", "batch_size": batch_size},
                              "tables": [{"name": "年金计划", "target_table": "年金计划",
                                          "target_schema": "business",
                                          "source_type": "legacy_mysql",
                                          "source_config": source, "primary_key": "年金计划号"}]}
    return sync_section(tmp_path, section, pg_url, mysql)


def _rows(pg_url: str) -> list[tuple[Any, ...]]:
    return pg_rows(pg_url, 'SELECT * FROM business."年金计划" ORDER BY 1')


def _summary(result: RunResult) -> dict[str, Any]:
    return table_summary(result, "status", "read", "inserted", "updated", "unchanged",
                         "rejected", "rejects", "watermark")


@pytest.mark.parametrize("incremental", [False, True, "where"],
                         ids=["full", "incremental", "incremental-where"])
def test_text_path_matches_the_values_path(tmp_path: Path, pg_url: str, pg_databases: PgDatabases,
                                           source: sa.URL, monkeypatch: pytest.MonkeyPatch,
                                           incremental: bool | str) -> None:
    _target(pg_url)
    as_text = count_copy_text(monkeypatch)
    fast = _run(tmp_path, pg_url, source, batch_size=7, incremental=incremental)
    assert sum(as_text) >= ROWS - 14  # all but the chunks holding a flagged row
    monkeypatch.setattr("refsync.targets.postgres.PostgresTarget.takes_copy_text", False)
    as_text.clear()
    with sibling_database(pg_databases) as other:
        _target(other)
        slow = _run(tmp_path, other, source, batch_size=7, incremental=incremental)
        assert as_text == []
        assert _summary(fast) == _summary(slow)
        assert _rows(pg_url) == _rows(other)
    summary = _summary(fast)
    assert summary["status"] == "ok"
    assert (summary["read"], summary["inserted"], summary["rejected"]) == (ROWS + 4, ROWS + 1, 3)
    assert sorted((r["key"]["年金计划号"], r["reason"]) for r in summary["rejects"]) == [
        ("P9001", "too long: 31 > 30 characters"), ("P9002", "NULL in NOT NULL column"),
        ("P9003", "contains a NUL character")]
    # DESIGN 4.4: under skip, never past the earliest rejected row (P9001-3, read again)
    assert summary["watermark"] == ("2024-01-02T00:00:00" if incremental else None)
    rows = {r[0]: r for r in _rows(pg_url)}
    assert rows["P9004"][1] == "\\" * 16
    for i in range(ROWS):
        assert rows[f"P{i:04d}"][1:5] == (_value(i), f"k{i % 3}", "authoritative", False)


def test_a_table_without_a_key_that_gains_a_duplicate_fails_naming_it(
        tmp_path: Path, pg_url: str, mysql_db_url: str) -> None:
    """The night a keyless legacy table gains a duplicate key (and a few changes): the full
    read compares digests first, reads in one streaming statement, and the table fails as
    `invalid` naming the key, the target as it was (it once hung here: DESIGN 4.9)."""
    url = sa.engine.make_url(mysql_db_url)
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS plans")
            conn.exec_driver_sql("CREATE TABLE plans (code VARCHAR(20) NOT NULL, "
                                 "name VARCHAR(100), kind VARCHAR(20), updated_at DATETIME(6))")
            conn.exec_driver_sql("INSERT INTO plans VALUES (%s, %s, %s, %s)",
                                 [(f"P{i:04d}", f"n{i}", "k", "2024-01-01") for i in range(3000)])
        _target(pg_url)
        assert table_summary(_run(tmp_path, pg_url, url, batch_size=500), "status", "read") == {
            "status": "ok", "read": 3000}
        before = _rows(pg_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO plans VALUES ('P0005', 'twice', 'k', NULL)")
            conn.exec_driver_sql("UPDATE plans SET name = CONCAT(name, '!') "
                                 "WHERE code IN ('P0001', 'P0100', 'P2999')")
        got = table_summary(_run(tmp_path, pg_url, url, batch_size=500),
                            "status", "error_class", "error")
        assert (got["status"], got["error_class"]) == ("failed", "invalid")
        assert "P0005" in got["error"] and "more than once" in got["error"]
        assert _rows(pg_url) == before
    finally:
        engine.dispose()


def test_keys_are_checked_for_duplicates_unless_the_source_key_rules_them_out(
        tmp_path: Path, pg_url: str, source: sa.URL, request: pytest.FixtureRequest) -> None:
    """DESIGN 4.5 costs a grouping of every staged row (`keys` in the phase timings): spent
    where the source's primary key does not hold the configured key alone."""
    _target(pg_url)
    _run(tmp_path, pg_url, source, batch_size=7)
    again = _run(tmp_path, pg_url, source, batch_size=7)  # into a target that holds rows
    assert table_summary(again, "status")["status"] == "unchanged"
    checked = request.node.callspec.params["source"] != "one-column"
    assert ("keys" in again.tables[0].timings) is checked
