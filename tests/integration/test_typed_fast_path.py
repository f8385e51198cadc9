"""Typed columns on the fast path (issue 9): MySQL formats COPY text, PostgreSQL parses it, and
the result is value for value what the values path (Python converters) writes, rejects and
watermarks included, on a table of awkward values of every supported type."""

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

UMAX = 2**64 - 1
COLUMNS = {  # source column: (MySQL type, PostgreSQL type)
    "k": ("VARCHAR(20) NOT NULL PRIMARY KEY", "varchar(20) PRIMARY KEY"),
    "amount": ("DECIMAL(18,4)", "numeric(18,4)"),
    "narrow": ("DECIMAL(18,4)", "numeric(10,2)"),
    "n": ("INT", "integer"),
    "nu": ("INT UNSIGNED", "integer"),
    "big": ("BIGINT UNSIGNED", "bigint"),
    "small": ("SMALLINT", "numeric(4,0)"),
    "d": ("DATE", "date"),
    "d_ts": ("DATE", "timestamptz"),
    "dt": ("DATETIME(6)", "timestamptz"),
    "dt_naive": ("DATETIME", "timestamp"),
    "ts": ("TIMESTAMP NULL", "timestamptz"),
    "flag": ("TINYINT(1)", "boolean"),
    "bit1": ("BIT(1)", "boolean"),
    "flagnum": ("TINYINT(1)", "numeric(2,0)"),  # TINYINT(1) holds -128..127
    "kind": ("ENUM('DB','DC','混合')", "varchar(10)"),
    "tags": ("SET('a','b','c')", "varchar(10)"),
    "doc": ("LONGTEXT", "jsonb"),
    "txt": ("TEXT", "text"),
    "upd": ("DATETIME", None),  # the cursor only
}
MAPPED = [c for c, (_, pg) in COLUMNS.items() if pg is not None]


def row(i: int, **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "k": f"K{i:03d}", "amount": f"{i}.{i % 10000:04d}", "narrow": f"{i}.50",
        "n": i - 50, "nu": i, "big": i * 1000, "small": i, "d": "2024-02-29",
        "d_ts": "2024-03-01", "dt": f"2024-01-01 08:00:{i % 60:02d}.{i:06d}",
        "dt_naive": "2024-01-01 23:59:59", "ts": "2024-01-01 00:00:00", "flag": i % 2,
        "bit1": i % 2, "flagnum": i % 2, "kind": ("DB", "DC", "混合")[i % 3], "tags": "a,c",
        "doc": '{"k": [1, "年"], "e": "😀"}', "txt": f"tab\there {i}\\n😀",
        "upd": f"2024-03-01 10:00:{i % 60:02d}"}
    base.update(values)
    return base


ROWS = [row(i) for i in range(1, 41)] + [
    row(41, amount=None, narrow=None, n=None, nu=None, big=None, d=None, dt=None, ts=None,
        flag=None, bit1=None, kind=None, tags=None, doc=None, txt=None, small=None),
    row(42, amount="-99999999999999.9999", n=-2147483648, nu=2147483647, big=2**63 - 1,
        small=9999, d="1000-01-01", dt="9999-12-31 23:59:59.999999", txt="", tags=""),
    row(43, dt="1986-09-14 01:30:00", dt_naive="1986-05-04 02:30:00",  # Shanghai DST hours
        d_ts="1988-04-10"),
    row(44, dt="1986-05-04 02:30:00.5", ts="1986-07-01 12:00:00"),
    row(45, narrow="1.2300", amount="0.0001"),  # trailing zeros fit numeric(10,2)
    # rows the converters reject, each for one reason
    row(50, narrow="1.2345", upd="2024-03-01 09:00:00"),  # more places than numeric(10,2)
    row(51, narrow="123456789.00"),  # out of range for numeric(10,2)
    row(52, nu=3000000000),  # does not fit integer
    row(53, big=UMAX),  # does not fit bigint
    row(54, flag=2),  # TINYINT(1) is not a boolean
    row(55, d="0000-00-00"),  # zero date
    row(56, d="2024-02-30"),  # invalid date (ALLOW_INVALID_DATES)
    row(57, dt="2024-00-10 00:00:00"),  # zero month
    row(58, doc="{not json"),
    row(59, doc='{"nul": "\\u0000"}'),  # jsonb refuses \u0000
    row(60, small=-10000),  # out of range for numeric(4,0)
    row(61, flagnum=100),  # out of range for numeric(2,0)
]
REJECTED = {"K050", "K051", "K052", "K053", "K054", "K055", "K056", "K057", "K058", "K059",
            "K060", "K061"}


@pytest.fixture
def source(mysql_db_url: str) -> Iterator[sa.URL]:
    url = sa.engine.make_url(mysql_db_url)
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    cols = ", ".join(f"`{c}` {t}" for c, (t, _) in COLUMNS.items())
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SET SESSION sql_mode = 'ALLOW_INVALID_DATES', time_zone = "
                                 "'+00:00'")
            conn.exec_driver_sql("DROP TABLE IF EXISTS typed")
            conn.exec_driver_sql(f"CREATE TABLE typed ({cols}) CHARACTER SET utf8mb4")
            names = ", ".join(f"`{c}`" for c in COLUMNS)
            marks = ", ".join("%s" for _ in COLUMNS)
            conn.exec_driver_sql(f"INSERT INTO typed ({names}) VALUES ({marks})",
                                 [tuple(r[c] for c in COLUMNS) for r in ROWS])
        yield url
    finally:
        engine.dispose()


def _target(pg_url: str) -> None:
    cols = ", ".join(f'"{c}" {pg}' for c, (_, pg) in COLUMNS.items() if pg is not None)
    execute(pg_url, f"CREATE SCHEMA business; CREATE TABLE business.typed ({cols}, "
            f"{TRACKING_DDL})")


def _run(tmp_path: Path, pg_url: str, mysql: sa.URL, *, incremental: bool) -> RunResult:
    source: dict[str, Any] = {"table": "typed",
                              "columns": [{"source": c, "target": c} for c in MAPPED]}
    if incremental:
        source["incremental"] = {"updated_at_column": "upd"}
    section = {
        "defaults": {"retry": {"attempts": 0, "backoff": [0]}, "on_invalid": "skip",
                     "batch_size": 6, "source_timezone": "Asia/Shanghai"},
        "tables": [{"name": "typed", "target_table": "typed", "target_schema": "business",
                    "source_type": "legacy_mysql",
                    "sync_mode": "upsert" if incremental else "delete_insert",
                    "source_config": source, "primary_key": "k"}]}
    return sync_section(tmp_path, section, pg_url, mysql)


def _rows(pg_url: str) -> list[tuple[Any, ...]]:
    return pg_rows(pg_url, "SELECT * FROM business.typed ORDER BY k")


def _summary(result: RunResult) -> dict[str, Any]:
    return table_summary(result, "status", "error", "read", "inserted", "updated",
                         "unchanged", "deleted", "rejected", "rejects", "watermark")


@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
def test_typed_fast_path_matches_the_values_path(
        tmp_path: Path, pg_url: str, pg_databases: PgDatabases, source: sa.URL,
        monkeypatch: pytest.MonkeyPatch, incremental: bool) -> None:
    _target(pg_url)
    as_text = count_copy_text(monkeypatch)
    fast = _run(tmp_path, pg_url, source, incremental=incremental)
    # every chunk without a row the converters reject travels as COPY text (NULLs included)
    assert sum(as_text) >= 42, as_text
    monkeypatch.setattr("refsync.targets.postgres.PostgresTarget.takes_copy_text", False)
    as_text.clear()
    with sibling_database(pg_databases) as other:
        _target(other)
        slow = _run(tmp_path, other, source, incremental=incremental)
        assert as_text == []
        assert _summary(fast) == _summary(slow)
        assert _rows(pg_url) == _rows(other)
    summary = _summary(fast)
    assert summary["status"] == "ok", summary["error"]
    assert {r["key"]["k"] for r in summary["rejects"]} == REJECTED
    assert summary["read"] == len(ROWS)
    assert summary["inserted"] == len(ROWS) - len(REJECTED)
    # under skip, never past the earliest rejected row (K050, an hour before the others)
    assert summary["watermark"] == ("2024-03-01T09:00:00" if incremental else None)
    got = {r[0]: dict(zip(MAPPED, r, strict=False)) for r in _rows(pg_url)}
    # the ambiguous autumn hour takes standard time (+08), as PostgreSQL reads it; the
    # skipped spring half hour takes the offset before the change (+08 too)
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            instants = dict(conn.exec_driver_sql(
                "SELECT k, to_char(dt AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                "FROM business.typed WHERE k IN ('K043', 'K044')").all())
    finally:
        engine.dispose()
    assert instants == {"K043": "1986-09-13 17:30:00", "K044": "1986-05-03 18:30:00"}
    assert got["K042"]["big"] == 2**63 - 1 and str(got["K042"]["amount"]) == (
        "-99999999999999.9999")
    assert got["K045"]["narrow"] is not None and str(got["K045"]["narrow"]) == "1.23"
    assert got["K001"]["flag"] is True and got["K002"]["bit1"] is False
