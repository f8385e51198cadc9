"""The MySQL source under hostile server settings and faults, on a PRIVATE MariaDB (issue 8:
2, 3, 4, 8; issue 11: 3, 4/5; DESIGN 4.1, 4.4, 4.7).

One private server runs with every setting that used to change what refsync reads: READ
COMMITTED, `NO_BACKSLASH_ESCAPES,ANSI_QUOTES` and a 1 MB `max_allowed_packet`. Syncs go
through the real engine (`refsync.api.sync`) into a fresh PostgreSQL database.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
import yaml
from helpers import TRACKING_DDL, execute, wait_until
from private_mariadb import PrivateMariaDB, PrivateMariaDBs
from pydantic import SecretStr
from sqlalchemy.dialects import mysql as mysql_dialect

from refsync import api
from refsync.config import Settings, TableSpec, load_config
from refsync.errors import QueryFailure
from refsync.model import ColumnInfo, TableResult
from refsync.sources import LegacyMySQLSource
from refsync.sources.sql import SqlSource

pytestmark = pytest.mark.integration

HOSTILE = ("--transaction-isolation=READ-COMMITTED", "--sql-mode=NO_BACKSLASH_ESCAPES,ANSI_QUOTES",
           "--max-allowed-packet=1M")
AWKWARD = ["tab\there", "line\nfeed", "cr\rhere", "back\\slash", "\\N", "'quote'", '"dq"',
           "a\\\\b", "ends\\", "年金\\t计划", ""]


@pytest.fixture(scope="module")
def server(private_mariadbs: PrivateMariaDBs) -> PrivateMariaDB:
    return private_mariadbs.get(*HOSTILE)


@pytest.fixture(scope="module")
def mysql(server: PrivateMariaDB) -> sa.URL:
    return server.create_database(f"refsync_t_{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def admin(mysql: sa.URL) -> Iterator[sa.Engine]:
    engine = sa.create_engine(mysql, connect_args={"charset": "utf8mb4"}, poolclass=sa.NullPool)
    yield engine
    engine.dispose()


def raw(mysql: sa.URL, autocommit: bool = True) -> pymysql.Connection[Any]:
    return pymysql.connect(host=mysql.host, port=mysql.port, user=mysql.username,
                           database=mysql.database, charset="utf8mb4", autocommit=autocommit)


def make_source_table(admin: sa.Engine, name: str, rows: list[tuple[Any, ...]], *,
                      value_type: str = "VARCHAR(200)", engine: str = "InnoDB") -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{name}`")
        conn.exec_driver_sql(
            f"CREATE TABLE `{name}` (k VARCHAR(40) PRIMARY KEY, v {value_type}, "
            f"updated_at DATETIME(6)) ENGINE={engine} CHARACTER SET utf8mb4")
        if rows:
            conn.exec_driver_sql(f"INSERT INTO `{name}` VALUES (%s, %s, %s)", rows)


def make_target(pg_url: str) -> None:
    execute(pg_url, "CREATE SCHEMA IF NOT EXISTS business; CREATE TABLE business.t ("
            f"k varchar(40) PRIMARY KEY, v text, {TRACKING_DDL})")


def sync(tmp_path: Path, pg_url: str, mysql: sa.URL, table: str, *, batch_size: int,
         mode: str = "delete_insert", incremental: dict[str, Any] | None = None,
         pool: dict[str, Any] | None = None, retry: dict[str, Any] | None = None,
         ) -> TableResult:
    source: dict[str, Any] = {"table": table, "columns": [{"source": "k", "target": "k"},
                                                          {"source": "v", "target": "v"}]}
    if incremental is not None:
        source["incremental"] = incremental
    section: dict[str, Any] = {
        "defaults": {"retry": retry or {"attempts": 0, "backoff": [0]}, "batch_size": batch_size,
                     "max_delete_ratio": 1.0},
        "tables": [{"name": "t", "target_table": "t", "target_schema": "business",
                    "source_type": "legacy_mysql", "sync_mode": mode, "source_config": source,
                    "primary_key": "k"}]}
    if pool is not None:
        section["legacy_mysql"] = pool
    path = tmp_path / f"cfg-{uuid.uuid4().hex[:6]}.yml"
    path.write_text(yaml.safe_dump({"reference_sync": section}, allow_unicode=True),
                    encoding="utf-8")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=SecretStr(pg_url), legacy_mysql_host=mysql.host,
        legacy_mysql_port=mysql.port, legacy_mysql_user=mysql.username,
        legacy_mysql_password=SecretStr(""), legacy_mysql_database=mysql.database)
    [result] = api.sync(load_config(path), settings).tables
    return result


def target_rows(pg_url: str) -> dict[str, str | None]:
    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return {k: v for k, v in conn.exec_driver_sql("SELECT k, v FROM business.t")}
    finally:
        engine.dispose()


def source_rows(admin: sa.Engine, table: str) -> dict[str, str | None]:
    with admin.connect() as conn:
        return {k: v for k, v in conn.exec_driver_sql(f"SELECT k, v FROM `{table}`")}


# ---------------------------------------------------------------- server settings (8.8)


def test_sql_mode_of_the_server_does_not_change_the_text(
        tmp_path: Path, pg_url: str, mysql: sa.URL, admin: sa.Engine,
        caplog: pytest.LogCaptureFixture) -> None:
    """NO_BACKSLASH_ESCAPES and ANSI_QUOTES on the server: a multi-chunk text table with tabs,
    newlines and backslashes arrives exactly, in whole chunks (refsync sets the session's
    sql_mode: else SEPARATOR '\\n' is two characters and every chunk looks cut off)."""
    caplog.set_level("DEBUG", logger="refsync.sources")
    rows = [(f"K{i:04d}", None if i % 13 == 0 else f"{AWKWARD[i % len(AWKWARD)]} {i}",
             "2024-01-01") for i in range(120)]
    make_source_table(admin, "awkward", rows)
    make_target(pg_url)
    res = sync(tmp_path, pg_url, mysql, "awkward", batch_size=25)
    assert (res.status, res.error, res.read, res.inserted) == ("ok", None, 120, 120)
    assert not [r for r in caplog.records if "overflows" in r.getMessage()]
    assert target_rows(pg_url) == source_rows(admin, "awkward")


# ---------------------------------------------------------------- wide rows (8.4)


def wide(i: int, copy_bytes: int) -> str:
    """A value of about `copy_bytes` bytes of COPY text: escapes (backslash, tab) at both
    ends, plain text between. Not escapes throughout: MariaDB's REPLACE moves the rest of
    the value for every match, so a value full of them costs the server time quadratic in
    its length (the escaping is the text tests' subject; here it is the size)."""
    ends = "x\\y\t" * 25  # 100 characters, 150 bytes of COPY text
    return f"{i}:{ends}" + "w" * (copy_bytes - 300 - len(str(i)) - 1) + ends


def test_wide_rows_are_chunked_by_bytes_and_split_when_they_overflow(
        tmp_path: Path, pg_url: str, mysql: sa.URL, admin: sa.Engine,
        caplog: pytest.LogCaptureFixture) -> None:
    """~9 KB rows (of COPY text) under a 1 MB max_allowed_packet: a 1,000-row chunk would be
    3.6 MB. Small rows first, so the size learnt from them is wrong for the wide ones and a
    chunk overflows and is split."""
    rows = [(f"K{i:04d}", f"small {i}", "2024-01-01") for i in range(300)]
    rows += [(f"L{i:04d}", wide(i, 9000), "2024-01-01") for i in range(300)]
    make_source_table(admin, "wide", rows, value_type="TEXT")
    make_target(pg_url)
    caplog.set_level("DEBUG", logger="refsync.sources")
    res = sync(tmp_path, pg_url, mysql, "wide", batch_size=1000)
    assert (res.status, res.error, res.read, res.inserted) == ("ok", None, 600, 600)
    messages = [r.getMessage() for r in caplog.records]
    assert any("overflows max_allowed_packet" in m for m in messages), messages
    assert target_rows(pg_url) == source_rows(admin, "wide")


def test_a_digest_filtered_read_of_wide_rows_fits_the_packet(
        tmp_path: Path, pg_url: str, mysql: sa.URL, admin: sa.Engine,
        caplog: pytest.LogCaptureFixture) -> None:
    """A --full re-sync reads only the parts that differ, in one streaming statement (a line
    a row, so wide rows, ~15 KB of COPY text each, never add up past the 1 MB packet). Every
    change arrives, and the deletes are looked for only in the parts read."""
    caplog.set_level("DEBUG", logger="refsync")
    rows = [(f"K{i:05d}", f"small {i}", "2024-01-01") for i in range(3000)]
    rows += [(f"L{i:04d}", wide(i, 15000), "2024-01-01") for i in range(300)]
    make_source_table(admin, "wide_diff", rows, value_type="MEDIUMTEXT")
    make_target(pg_url)
    first = sync(tmp_path, pg_url, mysql, "wide_diff", batch_size=1000)
    assert (first.status, first.inserted) == ("ok", 3300)
    with admin.begin() as conn:  # 30 wide rows change, one small row goes
        conn.exec_driver_sql("UPDATE wide_diff SET v = CONCAT('changed ', v) WHERE "
                             "LEFT(k, 1) = 'L' AND MOD(CAST(SUBSTRING(k, 2) AS UNSIGNED), 10) = 0")
        conn.exec_driver_sql("DELETE FROM wide_diff WHERE k = 'K00007'")
        conn.exec_driver_sql("ANALYZE TABLE wide_diff").all()
    caplog.clear()
    res = sync(tmp_path, pg_url, mysql, "wide_diff", batch_size=1000)
    assert (res.status, res.error, res.read, res.updated, res.deleted, res.inserted) == (
        "ok", None, 3299, 30, 1, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert any("parts differ: reading" in m for m in messages), messages
    assert not any("overflows max_allowed_packet" in m for m in messages), messages
    assert target_rows(pg_url) == source_rows(admin, "wide_diff")


def test_one_row_larger_than_the_packet_is_named(mysql: sa.URL, admin: sa.Engine) -> None:
    """A 1.1 MB row (written while this private server allowed 4 MB packets): no chunk can
    carry it, and the error says which row and why."""
    make_source_table(admin, "huge", [], value_type="MEDIUMTEXT")
    with admin.begin() as conn:
        conn.exec_driver_sql("SET GLOBAL max_allowed_packet = 4194304")
    try:
        with admin.begin() as conn:  # a new session: it sees the new global
            conn.exec_driver_sql("INSERT INTO huge VALUES ('K1', REPEAT('x', 1100000), NULL)")
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql("SET GLOBAL max_allowed_packet = 1048576")
    src = legacy_source(mysql, "huge")
    try:
        with pytest.raises(QueryFailure, match=r"row k='K1' is larger than the source server's "
                                               r"max_allowed_packet \(1048576 bytes\)"):
            list(src.chunks(None, [ColumnInfo("k", "text", False), ColumnInfo("v", "text")],
                            copy_text=True))
    finally:
        src.close()


def legacy_source(mysql: sa.URL, table: str, *, batch_size: int = 100,
                  where: str | None = None) -> SqlSource:
    from refsync.config import MySQLPool

    sc: dict[str, Any] = {"table": table, "columns": [{"source": "k", "target": "k"},
                                                      {"source": "v", "target": "v"}]}
    if where is not None:
        sc["incremental"] = {"updated_at_column": "updated_at", "where": where}
    spec = TableSpec.model_validate({"name": table, "target_table": table,
                                     "source_type": "legacy_mysql", "source_config": sc,
                                     "primary_key": "k"})
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, legacy_mysql_host=mysql.host, legacy_mysql_port=mysql.port,
        legacy_mysql_user=mysql.username, legacy_mysql_database=mysql.database)
    return LegacyMySQLSource(spec, settings, MySQLPool(), batch_size=batch_size).open()


def test_the_pre_check_leaves_out_what_the_source_columns_rule_out(admin: sa.Engine,
                                                                   mysql: sa.URL) -> None:
    """The server checks per row only what the source's declared types allow: the NOT NULL
    VARCHAR(40) key into varchar(40) and VARCHAR(200) into varchar(200) need no check; a
    narrower target, or a NOT NULL target for a nullable source column, still does."""
    make_source_table(admin, "prechecked", [("K1", "v", "2024-01-01")])
    src = legacy_source(mysql, "prechecked")
    try:
        def flag(v: ColumnInfo) -> str:
            plan = src.copy_plan([ColumnInfo("k", "text", False, max_length=40), v])
            assert plan is not None
            return str(plan.flag.compile(dialect=mysql_dialect.dialect(),
                                         compile_kwargs={"literal_binds": True}))
        assert flag(ColumnInfo("v", "text", max_length=200)) == "0"
        assert "char_length(`v`) > 10" in flag(ColumnInfo("v", "text", max_length=10))
        assert flag(ColumnInfo("v", "text", False, max_length=200)) == (
            "CASE WHEN (`v` IS NULL) THEN 1 ELSE 0 END")
    finally:
        src.close()


# ---------------------------------------------------------------- an OR in where (8.3)


def test_an_or_in_incremental_where_reads_every_chunk_of_changes(
        tmp_path: Path, pg_url: str, mysql: sa.URL, admin: sa.Engine) -> None:
    rows = [(f"K{i:04d}", f"v{i}", "2024-01-01") for i in range(200)]
    make_source_table(admin, "ored", rows)
    make_target(pg_url)
    incremental = {"updated_at_column": "updated_at",
                   "where": "updated_at >= :last_synced_at OR updated_at IS NULL"}
    first = sync(tmp_path, pg_url, mysql, "ored", batch_size=40, mode="upsert",
                 incremental=incremental)
    assert (first.status, first.inserted) == ("ok", 200)
    with admin.begin() as conn:  # 120 changes (3 chunks), 30 of them with no cursor
        conn.exec_driver_sql("UPDATE ored SET v = CONCAT(v, '!'), updated_at = '2024-02-01' "
                             "WHERE k < 'K0090'")
        conn.exec_driver_sql("UPDATE ored SET v = CONCAT(v, '?'), updated_at = NULL "
                             "WHERE k >= 'K0170'")
    second = sync(tmp_path, pg_url, mysql, "ored", batch_size=40, mode="upsert",
                  incremental=incremental)
    # the 80 unchanged rows sit on the inclusive boundary (2024-01-01) and are read again
    assert (second.status, second.error, second.read, second.updated, second.unchanged) == (
        "ok", None, 200, 120, 80)
    assert target_rows(pg_url) == source_rows(admin, "ored")


# ---------------------------------------------------------------- snapshot reads (8.2)


PAIRS = 600
MOVERS = 100


def _snapshot_rows() -> list[tuple[Any, ...]]:
    """Pairs `A-n`/`B-n` (far apart in key order) always hold the same value; movers hold
    `mover-n` and live either under `0-n` or `Z-n` (the two ends of the key order)."""
    rows = [(f"{side}-{n:04d}", "0", "2024-01-01") for n in range(PAIRS) for side in "AB"]
    rows += [(f"0-{n:04d}", f"mover-{n}", "2024-01-01") for n in range(MOVERS)]
    return rows


def _writer(mysql: sa.URL, stop: threading.Event, done: list[int]) -> None:
    """Commits, as fast as it can: a pair updated in one transaction (A then B), and a mover
    renamed (delete + insert) from one end of the key order to the other."""
    rng = random.Random(7)
    conn = raw(mysql, autocommit=False)
    where = {n: "0" for n in range(MOVERS)}
    try:
        with conn.cursor() as cur:
            while not stop.is_set():
                n = rng.randrange(PAIRS)
                value = str(rng.randrange(10**9))
                cur.execute("UPDATE pairs SET v = %s WHERE k = %s", (value, f"A-{n:04d}"))
                cur.execute("UPDATE pairs SET v = %s WHERE k = %s", (value, f"B-{n:04d}"))
                m = rng.randrange(MOVERS)
                new = "Z" if where[m] == "0" else "0"
                cur.execute("DELETE FROM pairs WHERE k = %s", (f"{where[m]}-{m:04d}",))
                cur.execute("INSERT INTO pairs VALUES (%s, %s, '2024-01-01')",
                            (f"{new}-{m:04d}", f"mover-{m}"))
                conn.commit()
                where[m] = new
                done[0] += 1
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["chunks", "values"])
def test_a_read_is_one_snapshot_under_read_committed(
        tmp_path: Path, pg_url: str, mysql: sa.URL, admin: sa.Engine,
        monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """The server defaults to READ COMMITTED; a writer moves keys and updates pairs during a
    multi-chunk read. The target must be one state of the source: every pair equal, every
    mover exactly once (a `delete_insert` target would lose a moved key otherwise)."""
    make_source_table(admin, "pairs", _snapshot_rows())
    make_target(pg_url)
    if path == "values":  # one streamed statement, fetched in small batches
        monkeypatch.setattr("refsync.targets.postgres.PostgresTarget.takes_copy_text", False)
    stop, done = threading.Event(), [0]
    writer = threading.Thread(target=_writer, args=(mysql, stop, done))
    writer.start()
    try:
        wait_until(lambda: done[0] >= 20, "the writer has committed 20 transactions",
                   interval=0.01)
        before = done[0]
        res = sync(tmp_path, pg_url, mysql, "pairs", batch_size=10)
        during = done[0] - before
    finally:
        stop.set()
        writer.join(timeout=30)
    assert (res.status, res.error) == ("ok", None)
    assert during > 20, f"the writer committed only {during} transactions during the read"
    rows = target_rows(pg_url)
    assert res.read == len(rows) == 2 * PAIRS + MOVERS
    torn = [n for n in range(PAIRS) if rows[f"A-{n:04d}"] != rows[f"B-{n:04d}"]]
    assert torn == [], f"{len(torn)} pairs torn"
    movers = Counter(v for k, v in rows.items() if k[0] in "0Z")
    assert movers == Counter(f"mover-{m}" for m in range(MOVERS))


def test_a_table_without_transactions_is_read_in_one_statement_with_a_warning(
        tmp_path: Path, pg_url: str, mysql: sa.URL, admin: sa.Engine) -> None:
    make_source_table(admin, "myisam", [(f"K{i:03d}", f"v{i}", "2024-01-01") for i in range(50)],
                      engine="MyISAM")
    src = legacy_source(mysql, "myisam", batch_size=10)
    try:
        cols = [ColumnInfo("k", "text", False), ColumnInfo("v", "text")]
        assert src.copy_plan(cols) is None  # no chunks: they would not read one snapshot
        assert any("MyISAM engine" in w for w in src.warnings)
    finally:
        src.close()
    make_target(pg_url)
    res = sync(tmp_path, pg_url, mysql, "myisam", batch_size=10)
    assert (res.status, res.read) == ("ok", 50)
    assert any("MyISAM engine, which has no transactions" in w for w in res.warnings)


def test_snapshot_clock_is_the_servers_and_estimated_rows_come_from_statistics(
        mysql: sa.URL, admin: sa.Engine) -> None:
    make_source_table(admin, "clock", [(f"K{i:03d}", f"v{i}", "2024-01-01") for i in range(30)])
    with admin.begin() as conn:
        conn.exec_driver_sql("ANALYZE TABLE clock")
        server_now = conn.exec_driver_sql("SELECT UTC_TIMESTAMP(6)").scalar_one()
    src = legacy_source(mysql, "clock")
    try:
        assert src.estimated_rows() == 30
        list(src.iter_batches(None))
        assert src.snapshot_utc is not None and src.snapshot_utc.tzinfo is not None
        assert abs((src.snapshot_utc.replace(tzinfo=None) - server_now).total_seconds()) < 30
    finally:
        src.close()


# ---------------------------------------------------------------- a frozen server (11.4/5)


def test_a_frozen_server_is_a_retried_read_timeout_then_the_run_completes(
        tmp_path: Path, pg_url: str, server: PrivateMariaDB, mysql: sa.URL, admin: sa.Engine,
        caplog: pytest.LogCaptureFixture) -> None:
    """SIGSTOP past read_timeout (2 s) while a chunk is read: a `connection` error, retried;
    after SIGCONT the run completes with the whole table."""
    rows = [(f"K{i:05d}", f"v{i}", "2024-01-01") for i in range(3000)]
    make_source_table(admin, "frozen", rows)
    make_target(pg_url)
    watcher = raw(mysql)
    results: list[TableResult] = []

    def run() -> None:
        results.append(sync(tmp_path, pg_url, mysql, "frozen", batch_size=5,
                            pool={"read_timeout": 2, "connect_timeout": 2},
                            retry={"attempts": 4, "backoff": [0.5, 1, 2]}))

    def reading() -> bool:
        with watcher.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s "
                        "AND INFO LIKE %s AND ID <> CONNECTION_ID()",
                        (mysql.database, "%GROUP_CONCAT%"))
            return bool(cur.fetchone()[0])

    thread = threading.Thread(target=run)
    caplog.set_level("WARNING", logger="refsync")
    thread.start()
    try:
        wait_until(reading, "a chunk is read", interval=0.005)
        server.freeze()
        frozen_at = time.monotonic()
        wait_until(lambda: any("timed out" in r.getMessage() for r in caplog.records),
                   "the frozen read times out and is retried")
    finally:
        server.thaw()
        watcher.close()
    thread.join(timeout=60)
    assert time.monotonic() - frozen_at < 40
    [res] = results
    assert (res.status, res.error, res.read) == ("ok", None, 3000)
    assert res.attempts >= 2
    retried = " ".join(r.getMessage() for r in caplog.records)
    assert "timed out" in retried, retried
    assert target_rows(pg_url) == source_rows(admin, "frozen")


# ---------------------------------------------------------------- cancel (11.3)


def test_cancel_kills_the_query_in_flight(mysql: sa.URL, admin: sa.Engine) -> None:
    make_source_table(admin, "slow", [("K1", "v", "2024-01-01")])
    src = legacy_source(mysql, "slow", where="SLEEP(30) = 0 AND updated_at >= :last_synced_at")
    src.cancel()  # nothing in flight: a no-op
    errors: list[BaseException] = []

    def read() -> None:
        try:
            list(src.iter_batches(datetime(2020, 1, 1)))
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            errors.append(exc)

    watcher = raw(mysql)

    def in_flight() -> int:
        with watcher.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                        "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()", ("%SLEEP(30)%",))
            return int(cur.fetchone()[0])

    thread = threading.Thread(target=read)
    thread.start()
    try:
        wait_until(lambda: in_flight() == 1, "the query runs", interval=0.005)
        started = time.monotonic()
        src.cancel()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert time.monotonic() - started < 5
        wait_until(lambda: in_flight() == 0, "the query is killed", timeout=5, interval=0.005)
    finally:
        watcher.close()
        src.close()
    [error] = errors
    assert isinstance(error, QueryFailure), error
    assert "query interrupted" in error.message and "source MySQL" in error.message
