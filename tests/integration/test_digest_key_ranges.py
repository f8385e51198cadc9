"""Digests in key ranges (issue 20): the parts of a table in its key's order, each side
assigning a row by its own comparison (MySQL in the key's collation, through its index;
PostgreSQL by an integer of the key's bytes). Where the two orders agree the parts are the
same on both sides; where they do not (a `_ci` collation and mixed-case keys) a re-sync
must still write exactly what reading everything writes, and `verify` must still name
exactly the keys that differ."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import (
    TRACKING_DDL,
    count_copy_text,
    execute,
    legacy_settings,
    sibling_database,
    sync_section,
    table_summary,
)

from pg_databases import PgDatabases
from refsync.config import load_config
from refsync.digest import KeyRanges, SourceColumn, plan_digest
from refsync.digest.ranges import key_prefix, text_ranges
from refsync.model import ColumnInfo, RunResult
from refsync.sources.mysql_digest import ordered_ranges, read_source_columns, source_digests
from refsync.verify import verify

ROWS = 6000


def _varchar_key(name: str) -> SourceColumn:
    return SourceColumn(name, "varchar", "varchar(20)", "utf8mb4",
                        collation="utf8mb4_general_ci")
ALPHABET = "aAbBzZ09_-."  # lower case and '_' sort otherwise in utf8mb4_general_ci


def _codes(n: int, seed: int) -> list[str]:
    """`n` keys, one per case-insensitive value (a _ci primary key allows no more): codes,
    one in ten with '_' or another character inside (ordered alike in bytes and in
    utf8mb4_general_ci) and one in 600 in lower case ('p…' sorts after every 'P…' in
    bytes, among them in general_ci: MySQL and PostgreSQL put it in different ranges)."""
    rng = random.Random(seed)
    seen: dict[str, str] = {}
    while len(seen) < n:
        code = f"P{rng.randrange(10**6):06d}"
        if rng.random() < 0.1:
            code = rng.choice([code + "_", code[:3] + "_" + code[3:], code + rng.choice(ALPHABET)])
        elif rng.random() < 1 / 600:
            code = code.lower()
        seen.setdefault(code.lower(), code)
    return sorted(seen.values())


SHAPES = {
    "text-ci": ("code VARCHAR(20) COLLATE utf8mb4_general_ci", "varchar(20)"),
    "text-bin": ("code VARCHAR(20) COLLATE utf8mb4_bin", "varchar(20)"),
    "integer": ("code BIGINT", "bigint"),
}


@pytest.fixture(params=list(SHAPES))
def shape(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def source(mysql_db_url: str, shape: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(mysql_db_url, poolclass=sa.NullPool)
    codes: list[Any] = (list(range(-ROWS, ROWS * 3, 4)) if shape == "integer"
                        else _codes(ROWS, 7))
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS plans")
        conn.exec_driver_sql(f"CREATE TABLE plans ({SHAPES[shape][0]} PRIMARY KEY, "
                             "name VARCHAR(100)) CHARACTER SET utf8mb4")
        conn.execute(sa.text("INSERT INTO plans VALUES (:c, :n)"),
                     [{"c": c, "n": f"plan {i}"} for i, c in enumerate(codes)])
    yield engine
    engine.dispose()


def _target(pg_url: str, shape: str) -> None:
    execute(pg_url, "CREATE SCHEMA business; CREATE TABLE business.plans "
            f"(code {SHAPES[shape][1]} PRIMARY KEY, name varchar(100), {TRACKING_DDL})")


def _section(digests: str = "auto") -> dict[str, Any]:
    return {"defaults": {"retry": {"attempts": 0, "backoff": [0]}, "batch_size": 500,
                         "max_delete_ratio": 1.0},
            "tables": [{"name": "plans", "target_table": "plans", "target_schema": "business",
                        "source_type": "legacy_mysql", "sync_mode": "delete_insert",
                        "primary_key": "code", "digests": digests,
                        "source_config": {"table": "plans", "columns": [
                            {"source": c, "target": c} for c in ("code", "name")]}}]}


def _run(tmp_path: Path, pg_url: str, mysql: sa.Engine, digests: str = "auto") -> RunResult:
    return sync_section(tmp_path, _section(digests), pg_url, mysql.url, full=True)


def _summary(result: RunResult) -> dict[str, Any]:
    return table_summary(result, "status", "error", "read", "inserted", "updated",
                         "unchanged", "deleted")


def _rows(pg_url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(
                "SELECT code, name, _source FROM business.plans ORDER BY code::text "
                "COLLATE \"C\"")]
    finally:
        engine.dispose()


def _night(source: sa.Engine, night: int, shape: str) -> set[str]:
    """A few rows updated, deleted and inserted, spread over the key order; their keys."""
    rng = random.Random(night)
    with source.begin() as conn:
        keys = [r[0] for r in conn.exec_driver_sql("SELECT code FROM plans")]
        picked = rng.sample(keys, 12)
        conn.execute(sa.text("UPDATE plans SET name = :n WHERE code = :c"),
                     [{"n": f"night {night}", "c": c} for c in picked[:8]])
        conn.execute(sa.text("DELETE FROM plans WHERE code = :c"),
                     [{"c": c} for c in picked[8:]])
        new: list[Any] = ([ROWS * 5 + night * 10 + i for i in range(3)] if shape == "integer"
                          else [f"new{night}-{i}" for i in range(3)] + [f"Zz{night}"])
        conn.execute(sa.text("INSERT INTO plans VALUES (:c, 'new')"), [{"c": c} for c in new])
    return {str(k) for k in [*picked, *new]}


def test_key_ranges_write_what_reading_everything_writes(
        tmp_path: Path, pg_url: str, pg_databases: PgDatabases, source: sa.Engine,
        shape: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("refsync.digest.ranges.RANGES_FROM_ROWS", 0)  # as a large table
    monkeypatch.setattr("refsync.digest.ranges.EXPECTED_CHANGE", 0.01)  # ~20 rows a range
    # a quarter of 6,000 rows sampled can find a night's dozen changes above the share that
    # reads everything (about 1 % of runs): this test is about the ranges
    monkeypatch.setattr("refsync.digest.ranges.RANGE_READ_ALL_SHARE", 1.0)
    monkeypatch.setattr("refsync.digest.ranges.SPANS_A_STATEMENT", 2)  # several statements
    with sibling_database(pg_databases) as off_url:
        for url in (pg_url, off_url):
            _target(url, shape)
            assert _summary(_run(tmp_path, url, source))["inserted"] == ROWS
        for night in (1, 2, 3):
            changed = _night(source, night, shape)
            with caplog.at_level(logging.DEBUG, logger="refsync.table_sync"), \
                    pytest.MonkeyPatch.context() as counting:
                caplog.clear()
                staged = count_copy_text(counting)
                auto = _run(tmp_path, pg_url, source)
            # compared in key ranges (not the key's bytes: most bounds order alike)
            assert "key ranges (" in caplog.text, caplog.text
            off = _run(tmp_path, off_url, source, digests="off")
            assert _summary(auto) == _summary(off)
            assert _rows(pg_url) == _rows(off_url)
            timings = auto.tables[0].timings
            assert "ranges" in timings and "source_digest" in timings, timings
            summary = _summary(auto)
            assert summary["updated"] == 8 and summary["deleted"] == 4, summary
            assert summary["inserted"] == len(changed) - 12, summary
            assert summary["read"] == ROWS + night * (len(changed) - 16)
            # only the differing ranges were read: ~20 rows each (sampled: some twice that),
            # one a changed key, and in the ci table two a lower-case key, every night
            assert 0 < sum(staged) <= ROWS // 4, (sum(staged), caplog.text)
        # verify names exactly the keys that differ, through the same key ranges
        with source.begin() as conn:
            keys = [str(r[0]) for r in conn.exec_driver_sql("SELECT code FROM plans")][::997]
            conn.execute(sa.text("UPDATE plans SET name = 'drifted' WHERE code = :c"),
                         [{"c": c} for c in keys])
        report = verify(load_config(tmp_path / "cfg.yml"),
                        legacy_settings(pg_url, source.url)).tables[0]
        assert report.status == "differs", report
        assert sorted(str(k["code"]) for k in report.differ_keys) == sorted(keys)
        assert (report.missing, report.extra) == (0, 0)


def test_bounds_are_kept_only_where_mysql_orders_them_as_postgresql_does(
        source: sa.Engine, shape: str) -> None:
    if shape != "text-ci":
        pytest.skip("the orders differ in a case-insensitive collation only")
    with source.connect() as conn:
        cols = read_source_columns(conn, "plans")
        plan, why = plan_digest([cols["code"], cols["name"]],
                                [ColumnInfo("code", "text", type_sql="varchar(20)"),
                                 ColumnInfo("name", "text", type_sql="varchar(100)")],
                                ["code"], "UTC", rows=ROWS)
        assert plan is not None and plan.range_key is not None, why
        # in bytes 'B' < '_' < 'a' < 'c'; in general_ci 'a' < 'B' < 'c' < '_': after 'B' and
        # '_', neither 'a' nor 'c' comes later in both orders
        texts = ["B", "_", "a", "c"]
        ranges = text_ranges(sorted(key_prefix(t) for t in texts))
        assert ranges.texts == ("B", "_", "a", "c")
        kept = ordered_ranges(conn, plan.with_ranges(ranges))
        assert kept is not None and kept.ranges is not None
        assert kept.ranges.texts == ("B", "_"), kept.ranges
        # its parts hold every row once
        digests = source_digests(conn, kept, "plans")
        assert sum(d.rows for d in digests.values()) == ROWS
        assert set(digests) <= {0, 1, 2}


def test_text_bounds_are_whole_characters_and_their_prefixes_agree() -> None:
    ranges = text_ranges(sorted(key_prefix(t) for t in
                                ["年金计划-0001", "P0000123456", "ab", "ab", "P0000123"]))
    # a bound is at most 8 bytes, never cut inside a character; duplicates go
    assert ranges.texts == ("P0000123", "ab", "年金")
    assert ranges.bounds == tuple(key_prefix(t) for t in ranges.texts)
    assert list(ranges.bounds) == sorted(ranges.bounds)
    assert KeyRanges((1, 5, 9)).spans([0, 1, 3]) == [(None, 5), (9, None)]


def test_postgresql_orders_a_text_key_by_the_same_integer(pg_url: str) -> None:
    """`key_prefix` (the bounds, in Python) is PostgreSQL's integer of a key's order, and it
    orders keys as their bytes do."""
    plan, _ = plan_digest([_varchar_key("code")], [ColumnInfo("code", "text")], ["code"],
                          "UTC", rows=1)
    assert plan is not None and plan.range_key is not None
    keys = ["", "a", "a ", "a\t", "ab", "P0000001", "P00000010", "年金计划-1", "Ünïcode", "~~~",
            "\U0001f600x", "zzzzzzzzzz"]
    expr = plan.range_key.target.replace("\x1d", "")
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            got = [int(conn.execute(sa.text(f"SELECT {expr} FROM (SELECT CAST(:k AS text) "
                                            "AS code) AS t"), {"k": k}).scalar_one())
                   for k in keys]
    finally:
        engine.dispose()
    assert got == [key_prefix(k) for k in keys]
    by_bytes = sorted(keys, key=lambda k: k.encode())
    assert sorted(keys, key=key_prefix) == sorted(by_bytes, key=lambda k: k.encode()[:8])


def test_bounds_fit_the_servers_largest_statement(
        source: sa.Engine, shape: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server whose max_allowed_packet is small gets fewer, larger ranges, never a digest
    statement it refuses; every row is still in exactly one range."""
    if shape != "integer":
        pytest.skip("the same for every key")
    with source.connect() as conn:
        cols = read_source_columns(conn, "plans")
        plan, why = plan_digest([cols["code"], cols["name"]],
                                [ColumnInfo("code", "integer", int_bits=64),
                                 ColumnInfo("name", "text")], ["code"], "UTC", rows=ROWS)
        assert plan is not None and plan.range_key is not None, why
        wide = plan.with_ranges(KeyRanges(tuple(range(-ROWS, ROWS * 3, 8))))  # 1,000 ranges
        monkeypatch.setattr("refsync.sources.mysql_digest._packet_limit", lambda _: 4096)
        kept = ordered_ranges(conn, wide)
        assert kept is not None and kept.ranges is not None
        assert 2 <= len(kept.ranges.bounds) <= 1000 // 8, len(kept.ranges.bounds)
        assert 4 * len(json.dumps(list(kept.ranges.bounds))) <= 4096 * 2
        digests = source_digests(conn, kept, "plans")
        assert sum(d.rows for d in digests.values()) == ROWS


def _update(source: sa.Engine, every: int, name: str) -> int:
    """Rename every `every`-th row (in key order); how many."""
    with source.begin() as conn:
        keys = [r[0] for r in conn.exec_driver_sql("SELECT code FROM plans ORDER BY code")]
        conn.execute(sa.text("UPDATE plans SET name = :n WHERE code = :c"),
                     [{"n": name, "c": c} for c in keys[::every]])
    return len(keys[::every])


def test_a_sample_of_the_target_decides_how_to_compare_tonight(
        tmp_path: Path, pg_url: str, pg_databases: PgDatabases, source: sa.Engine,
        shape: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A heavy night after quiet ones reads everything without comparing first, and a quiet
    night after a heavy one compares in key ranges: a sample of the target's rows looked up
    in the source says how much changed tonight, not the last night's share. Either way it
    writes what reading everything writes."""
    if shape == "integer":
        pytest.skip("a text key's sample is the same lookup")
    monkeypatch.setattr("refsync.digest.ranges.RANGES_FROM_ROWS", 0)  # as a large table
    monkeypatch.setattr("refsync.digest.ranges.EXPECTED_CHANGE", 0.01)  # ~20 rows a range
    with sibling_database(pg_databases) as off_url:
        for url in (pg_url, off_url):
            _target(url, shape)
            _run(tmp_path, url, source)
        for night, every in ((1, 5), (2, 1500)):  # 20 % of the rows, then 4 rows
            changed = _update(source, every, f"night {night}")
            with caplog.at_level(logging.DEBUG, logger="refsync.table_sync"), \
                    pytest.MonkeyPatch.context() as counting:
                caplog.clear()
                staged = count_copy_text(counting)
                auto = _run(tmp_path, pg_url, source)
            off = _run(tmp_path, off_url, source, digests="off")
            assert _summary(auto) == _summary(off)
            assert _summary(auto)["updated"] == changed
            assert _rows(pg_url) == _rows(off_url)
            timings = auto.tables[0].timings
            assert "sample" in timings, timings
            assert "a sample of the target found changed" in caplog.text, caplog.text
            if night == 1:  # read whole, no digest computed
                assert "source_digest" not in timings, timings
                assert sum(staged) == ROWS
            else:  # compared in key ranges, only the differing ones read
                assert "key ranges (" in caplog.text and "source_digest" in timings, timings
                assert 0 < sum(staged) <= ROWS // 4, sum(staged)


def test_bounds_for_the_last_nights_change_are_sampled_again_for_a_night_unlike_it(
        tmp_path: Path, pg_url: str, pg_databases: PgDatabases, source: sa.Engine,
        shape: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target's bounds are sampled for the last night's change while the source looks
    tonight's sample up: kept where tonight wants about as many ranges, sampled again for
    tonight's where it wants more than twice as many. Either way the night writes what
    reading everything writes."""
    if shape != "text-bin":
        pytest.skip("the same for every key")
    from refsync.targets import pg_digest

    monkeypatch.setattr("refsync.digest.ranges.RANGES_FROM_ROWS", 0)  # as a large table
    monkeypatch.setattr("refsync.digest.ranges.EXPECTED_CHANGE", 0.01)  # 300 ranges, quiet
    monkeypatch.setattr("refsync.digest.ranges.RANGE_READ_ALL_SHARE", 1.0)  # always compare
    sampled: list[int] = []
    real = pg_digest.sample_ranges

    def counting(*args: Any, parts: int, **kwargs: Any) -> Any:
        sampled.append(parts)
        return real(*args, parts=parts, **kwargs)

    monkeypatch.setattr(pg_digest, "sample_ranges", counting)
    with sibling_database(pg_databases) as off_url:
        for url in (pg_url, off_url):
            _target(url, shape)
            _run(tmp_path, url, source)
        for night, every, bounds in ((1, 1500, 1), (2, 10, 2)):  # 4 rows, then 10 %
            changed = _update(source, every, f"night {night}")
            sampled.clear()
            auto = _run(tmp_path, pg_url, source)
            off = _run(tmp_path, off_url, source, digests="off")
            assert _summary(auto) == _summary(off) and _summary(auto)["updated"] == changed
            assert _rows(pg_url) == _rows(off_url)
            assert len(sampled) == bounds, sampled  # the first sampling sized by last night
    assert sampled[0] == ROWS // 20 and sampled[1] > 2 * sampled[0], sampled


def test_a_server_without_json_table_compares_in_buckets_of_the_key(
        tmp_path: Path, pg_url: str, pg_databases: PgDatabases, source: sa.Engine,
        shape: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """MySQL before 8.0.4 and MariaDB before 10.6 cannot join their bounds (no JSON_TABLE):
    the table is compared in buckets of its key's bytes, and writes what reading everything
    writes."""
    if shape != "text-bin":
        pytest.skip("the same for every key")
    monkeypatch.setattr("refsync.digest.ranges.RANGES_FROM_ROWS", 0)  # as a large table
    # a quarter of 6,000 rows sampled can find a night's dozen changes above the share that
    # reads everything: this test is about the buckets that replace the ranges
    monkeypatch.setattr("refsync.digest.ranges.RANGE_READ_ALL_SHARE", 1.0)
    monkeypatch.setattr("refsync.sources.mysql_digest._bounds_table",  # as the old servers say
                        lambda plan, alias="b": "JSON_TABLE_UNKNOWN() AS b")
    with sibling_database(pg_databases) as off_url:
        for url in (pg_url, off_url):
            _target(url, shape)
            _run(tmp_path, url, source)
        _night(source, 1, shape)
        with caplog.at_level(logging.DEBUG, logger="refsync.table_sync"):
            auto = _run(tmp_path, pg_url, source)
        off = _run(tmp_path, off_url, source, digests="off")
        assert _summary(auto) == _summary(off) and _summary(auto)["updated"] == 8
        assert _rows(pg_url) == _rows(off_url)
    assert "key ranges (" not in caplog.text and "parts differ" in caplog.text, caplog.text
    assert "source_digest" in auto.tables[0].timings


def test_the_change_sample_stays_small_where_the_statistics_lag(pg_url: str) -> None:
    """The sample's share comes from the statistics' row count; where they lag far behind
    (a table grown since its last ANALYZE) it still takes at most twice the rows wanted,
    so the source's lookup statement stays small."""
    from refsync.targets.pg_digest import sample_row_hashes

    plan, _ = plan_digest([_varchar_key("code"), SourceColumn("name", "varchar",
                                                              "varchar(100)", "utf8mb4")],
                          [ColumnInfo("code", "text"), ColumnInfo("name", "text")], ["code"],
                          "UTC", rows=3000)
    assert plan is not None
    execute(pg_url, f"CREATE TABLE plans (code varchar(20) PRIMARY KEY, name varchar(100), "
                    f"{TRACKING_DDL}); INSERT INTO plans (code, name) SELECT 'P' || i, "
                    "'n' || i FROM generate_series(1, 3000) i")
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            assert len(sample_row_hashes(conn, plan, None, "plans", rows=3000,
                                         wanted=3000)) == 3000
            lagging = sample_row_hashes(conn, plan, None, "plans", rows=10, wanted=100)
    finally:
        engine.dispose()
    assert 0 < len(lagging) <= 200, len(lagging)


@pytest.mark.parametrize("packet", ["fits", "overflows", "many-rows"])
def test_the_parts_read_arrive_as_reading_everything_gives_them(
        tmp_path: Path, pg_url: str, pg_databases: PgDatabases, source: sa.Engine,
        shape: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        packet: str) -> None:
    """The rows of the differing key ranges come a few ranges a statement, aggregated by
    MySQL into one row of COPY text; ranges holding a row the pre-check flags (a NUL) are
    read again as values, and text too long for the packet (or for a few chunks of
    `batch_size` rows: memory stays flat) is streamed instead: the same rows, counts and
    rejects as reading everything."""
    monkeypatch.setattr("refsync.digest.ranges.RANGES_FROM_ROWS", 0)  # as a large table
    monkeypatch.setattr("refsync.digest.ranges.EXPECTED_CHANGE", 0.01)  # ~20 rows a range
    # a quarter of 6,000 rows sampled can find a night's dozen changes above the share that
    # reads everything (about 1 % of runs): this test is about the ranges
    monkeypatch.setattr("refsync.digest.ranges.RANGE_READ_ALL_SHARE", 1.0)
    monkeypatch.setattr("refsync.digest.ranges.SPANS_A_STATEMENT", 2)  # several statements

    def run(url: str, digests: str, batch_size: int = 500) -> RunResult:
        section = _section(digests)
        section["defaults"].update(on_invalid="skip", batch_size=batch_size)
        return sync_section(tmp_path, section, url, source.url, full=True)

    with sibling_database(pg_databases) as off_url:
        for url in (pg_url, off_url):
            _target(url, shape)
            assert _summary(run(url, "auto"))["inserted"] == ROWS
        _night(source, 5, shape)
        with source.begin() as conn:
            middle = conn.exec_driver_sql("SELECT code FROM plans ORDER BY code "
                                          "LIMIT 1 OFFSET 3000").scalar()
            conn.execute(sa.text("UPDATE plans SET name = CONCAT('nul', CHAR(0), 'x') "
                                 "WHERE code = :c"), {"c": middle})
        off = run(off_url, "off")
        if packet == "overflows":  # GROUP_CONCAT cuts the text short, as a packet would
            monkeypatch.setattr("refsync.sources.mysql_read.GROUP_CONCAT_MAX_LEN", 300)
        with caplog.at_level(logging.DEBUG, logger="refsync"), \
                pytest.MonkeyPatch.context() as counting:
            staged = count_copy_text(counting)
            auto = run(pg_url, "auto", batch_size=1 if packet == "many-rows" else 500)
        assert _rows(pg_url) == _rows(off_url)
    assert "parts differ: reading" in caplog.text, caplog.text
    assert ("they are streamed" in caplog.text) is (packet != "fits"), caplog.text
    assert 0 < sum(staged) <= ROWS // 4, sum(staged)
    got = table_summary(auto, "status", "read", "inserted", "updated", "unchanged", "deleted",
                        "rejected", "rejects")
    assert got == table_summary(off, *got)
    assert (got["status"], got["rejected"]) == ("ok", 1), got
    assert got["rejects"][0]["reason"] == "contains a NUL character", got
