"""The `sql` source against SQLite files (no server needed): what the demo runs on."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from refsync.config import MySQLPool, Settings, TableSpec
from refsync.errors import FileMissing, QueryFailure
from refsync.sources import SqlSource, open_source

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456)
OLD = datetime(2024, 4, 1, 8, 0, 0)


def make_spec(url: str, table: str = "annuity_plan", *,
              columns: list[tuple[str, str]] | None = None, cursor: str | None = None,
              where: str | None = None) -> TableSpec:
    cols = columns or [("plan_code", "年金计划号"), ("plan_name", "计划名称")]
    sc: dict[str, Any] = {"url": url, "table": table,
                          "columns": [{"source": s, "target": t} for s, t in cols]}
    if cursor:
        sc["incremental"] = {"updated_at_column": cursor, **({"where": where} if where else {})}
    return TableSpec.model_validate({
        "name": "年金计划", "target_table": "年金计划", "source_type": "sql",
        "source_config": sc, "primary_key": cols[0][1]})


@pytest.fixture
def legacy(tmp_path: Path) -> Iterator[str]:
    """A SQLite legacy database written through SQLAlchemy (DateTime stored with microseconds)."""
    url = f"sqlite:///{tmp_path / 'legacy.sqlite'}"
    engine = sa.create_engine(url)
    md = sa.MetaData()
    t = sa.Table("annuity_plan", md,
                 sa.Column("plan_code", sa.String(20), primary_key=True),
                 sa.Column("plan_name", sa.String(100)),
                 sa.Column("amount", sa.Numeric(20, 6)),
                 sa.Column("updated_at", sa.DateTime))
    md.create_all(engine)
    rows = [{"plan_code": f"P{i:05}", "plan_name": f"计划{i}", "amount": Decimal("1.5"),
             "updated_at": OLD.replace(minute=i % 60) if i % 10 else None}
            for i in range(1, 1001)]
    rows.append({"plan_code": "EDGE", "plan_name": "边界", "amount": None, "updated_at": T0})
    with engine.begin() as conn:
        conn.execute(t.insert(), rows)
    engine.dispose()
    yield url


def read(src: SqlSource, since: Any = None) -> list[tuple[Any, ...]]:
    return [row for batch in src.iter_batches(since) for row in batch]


def test_sqlite_full_read_in_batches(legacy: str) -> None:
    src = SqlSource.from_spec(make_spec(legacy), batch_size=300)
    try:
        batches = list(src.open().iter_batches(None))
        assert [len(b) for b in batches] == [300, 300, 300, 101]
        assert ("P00001", "计划1") in {r for b in batches for r in b}
        assert all(type(r) is tuple for b in batches for r in b)
        assert src.columns == ["年金计划号", "计划名称"]
        assert src.cursor_column is None
    finally:
        src.close()


def test_sqlite_incremental_rows_carry_the_cursor_and_since_is_inclusive(legacy: str) -> None:
    src = SqlSource.from_spec(make_spec(legacy, cursor="updated_at"), batch_size=5000)
    try:
        rows = read(src)
        assert len(rows) == 1001
        assert rows[-1] == ("EDGE", "边界", T0)  # microseconds survive the round trip
        assert isinstance(rows[0][-1], datetime)
        assert sum(r[-1] is None for r in rows) == 100
        assert src.count_null_cursor() == 100
        assert [r[0] for r in read(src, T0)] == ["EDGE"]  # inclusive at the microsecond
        assert read(src, T0.replace(microsecond=123457)) == []
        later = read(src, OLD.replace(minute=58))
        assert {r[2] for r in later} == {OLD.replace(minute=58), OLD.replace(minute=59), T0}
        assert len(later) == 1 + 16 + 16  # EDGE, then i % 60 in (58, 59) for i in 1..1000
        mark = src.parse_watermark(T0.isoformat())
        assert mark == T0 and type(mark) is datetime
    finally:
        src.close()


def test_sqlite_where_is_used_verbatim(legacy: str) -> None:
    where = "updated_at >= :last_synced_at AND plan_name LIKE '边%'"
    src = SqlSource.from_spec(make_spec(legacy, cursor="updated_at", where=where), batch_size=10)
    try:
        assert read(src, datetime(2000, 1, 1)) == [("EDGE", "边界", T0)]
        assert len(read(src)) == 1001  # a full read ignores the where
    finally:
        src.close()


def test_sqlite_text_dates_without_microseconds_stay_inclusive(tmp_path: Path) -> None:
    path = tmp_path / "hand.sqlite"
    with sqlite3.connect(path) as db:
        db.execute('CREATE TABLE "组织" ("代码" TEXT, "名称" TEXT, "更新" DATETIME, "生效" DATE)')
        db.executemany('INSERT INTO "组织" VALUES (?, ?, ?, ?)', [
            ("A", "甲", "2024-05-01 12:00:00", "2024-05-01"),
            ("B", "乙", "2024-05-01 11:59:59", "2024-02-30"),
            ("C", "丙", "not a date", None),
        ])
    db.close()
    spec = make_spec(f"sqlite:///{path}", "组织", columns=[("代码", "code"), ("生效", "since")],
                     cursor="更新")
    src = SqlSource.from_spec(spec, batch_size=10)
    try:
        rows = read(src)
        # an unparsable mapped date stays text (for the transform to reject); the cursor → None
        assert rows == [("A", date(2024, 5, 1), datetime(2024, 5, 1, 12)),
                        ("B", "2024-02-30", datetime(2024, 5, 1, 11, 59, 59)),
                        ("C", None, None)]
        # SQLite compares text: the bad value sorts after any date, so it is read every time
        assert read(src, datetime(2024, 5, 1, 12)) == [rows[0], rows[2]]
        assert src.count_null_cursor() == 0  # NULL only: a bad text is not NULL to SQLite
    finally:
        src.close()


def test_sqlite_missing_cursor_column_warns_and_reads_in_full(legacy: str) -> None:
    src = SqlSource.from_spec(make_spec(legacy, cursor="modified_at"), batch_size=5000)
    try:
        src.open()
        assert src.cursor_column is None
        assert src.warnings == [
            "source table annuity_plan has no column modified_at: syncing in full"]
        rows = read(src, datetime(2030, 1, 1))
        assert len(rows) == 1001 and len(rows[0]) == 2
        assert src.count_null_cursor() == 0
    finally:
        src.close()


def test_sqlite_missing_source_column_is_a_query_failure(legacy: str) -> None:
    spec = make_spec(legacy, columns=[("plan_code", "a"), ("plan_nmae", "b"), ("x", "c")])
    src = SqlSource.from_spec(spec, batch_size=10)
    try:
        with pytest.raises(QueryFailure) as info:
            src.open()
        assert "annuity_plan has no column plan_nmae, x" in str(info.value)
        assert not info.value.transient
    finally:
        src.close()


def test_sqlite_column_names_match_case_insensitively(legacy: str) -> None:
    src = SqlSource.from_spec(make_spec(legacy, columns=[("PLAN_CODE", "a")]), batch_size=10)
    try:
        assert ("P00001",) in read(src)
    finally:
        src.close()


def test_sqlite_unknown_table_is_a_query_failure(legacy: str) -> None:
    src = SqlSource.from_spec(make_spec(legacy, "annuity_plans"), batch_size=10)
    try:
        with pytest.raises(QueryFailure, match="source table annuity_plans not found"):
            src.open()
    finally:
        src.close()


def test_sqlite_missing_file_is_reported_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.sqlite"
    src = SqlSource.from_spec(make_spec(f"sqlite:///{path}"), batch_size=10)
    with pytest.raises(FileMissing, match=str(path)):
        src.open()
    assert not path.exists()


def test_sqlite_early_stop_releases_the_connection(legacy: str) -> None:
    src = SqlSource.from_spec(make_spec(legacy), batch_size=10)
    try:
        gen = src.iter_batches(None)
        assert len(next(gen)) == 10
        gen.close()
        assert src.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert len(read(src)) == 1001
    finally:
        src.close()


def test_sqlite_column_types_and_open_source(legacy: str) -> None:
    spec = make_spec(legacy, columns=[("plan_code", "code"), ("amount", "amount"),
                                      ("updated_at", "updated")], cursor="updated_at")
    src = open_source(spec, Settings(_env_file=None), MySQLPool(), 400)  # type: ignore[call-arg]
    assert isinstance(src, SqlSource)
    try:
        types = src.column_types()
        assert isinstance(types["code"], sa.String) and isinstance(types["amount"], sa.Numeric)
        assert isinstance(types["updated"], sa.DateTime)
        # the cursor column is both mapped and carried last
        assert read(src, T0) == [("EDGE", None, T0, T0)]
        assert src.describe() == f"sqlite:///{legacy.removeprefix('sqlite:///')} table annuity_plan"
    finally:
        src.close()
