"""Incremental runs on a real MariaDB never lose a row whose transaction commits after the
read's snapshot (DESIGN 4.4): the watermark is held at the oldest write open on the source
when the snapshot began, or, for a source user without the PROCESS privilege, five minutes
behind the source's clock.

Writers stamp rows with `NOW(6)` in the source's own wall time (session time zone +08:00,
`source_timezone: Asia/Shanghai`), while refsync's session runs in UTC and InnoDB shows
transaction starts in the server's system time: the three clocks meet in the cap."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pymysql
import pytest
import sqlalchemy as sa
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner

from refsync import api
from refsync.cli import app
from refsync.config import Settings, load_config

SHANGHAI = ZoneInfo("Asia/Shanghai")
PAST = datetime(2024, 3, 1, 9, 0, 0)
TABLE_DDL = ("CREATE TABLE big (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, "
             "updated_at DATETIME(6) NULL, KEY (updated_at))")
TARGET_DDL = """
CREATE TABLE business.{name} (
    id integer PRIMARY KEY, name text NOT NULL, updated_at timestamp(6),
    "_source" varchar(20) NOT NULL DEFAULT 'authoritative',
    "_needs_review" boolean NOT NULL DEFAULT false,
    "_derived_from_domain" varchar(50), "_derived_at" timestamptz)"""


@pytest.fixture(autouse=True)
def _keep_refsync_logging() -> Iterator[None]:
    """A CLI run points the `refsync` logger at its own streams: restore it afterwards."""
    logger = logging.getLogger("refsync")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield
    finally:
        for h in list(logger.handlers):
            if h not in saved[0]:
                logger.removeHandler(h)
                h.close()
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


def make_big(url: sa.URL) -> None:
    """Table `big`: ten rows stamped in the past, one second apart (id 10 the latest)."""
    with writer(url) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS big")
        cur.execute(TABLE_DDL)
        cur.executemany("INSERT INTO big VALUES (%s, %s, %s)",
                        [(i, f"row {i}", PAST + timedelta(seconds=i)) for i in range(1, 11)])


@pytest.fixture
def source(mysql_db_url: str) -> sa.URL:
    url = sa.engine.make_url(mysql_db_url)
    make_big(url)
    return url


@pytest.fixture
def no_process_user(source: sa.URL) -> Iterator[sa.URL]:
    """A throwaway MariaDB user that may read the database but lacks PROCESS; dropped after."""
    name, password = f"refsync_np_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with writer(source) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE USER '{name}'@'%%' IDENTIFIED BY '{password}'")
        try:
            cur.execute(f"GRANT SELECT ON `{source.database}`.* TO '{name}'@'%%'")
            yield source.set(username=name, password=password)
        finally:
            cur.execute(f"DROP USER '{name}'@'%%'")


@pytest.fixture
def warehouse(pg_url: str) -> str:
    with psycopg.connect(pg_conninfo(pg_url), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA business")
        for name in ("big_inc", "big_a", "big_b"):
            conn.execute(TARGET_DDL.format(name=name))  # type: ignore[arg-type]
    return pg_url


# ---------------------------------------------------------------- helpers


def pg_conninfo(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)


def writer(url: sa.URL) -> pymysql.connections.Connection[Any]:
    """An application session on the source: autocommit, stamping in Shanghai wall time."""
    conn = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                           password=url.password or "", database=url.database, autocommit=True,
                           init_command="SET time_zone = '+08:00'")
    return conn


def write_config(tmp_path: Path, names: list[str]) -> Path:
    doc = {"reference_sync": {
        "timezone": "Asia/Shanghai",
        "defaults": {"retry": {"attempts": 0}, "source_timezone": "Asia/Shanghai"},
        "tables": [{
            "name": name, "target_table": name, "target_schema": "business",
            "source_type": "legacy_mysql", "sync_mode": "upsert", "primary_key": "id",
            "source_config": {"table": "big", "columns": [
                {"source": c, "target": c} for c in ("id", "name", "updated_at")],
                "incremental": {"updated_at_column": "updated_at"}}} for name in names]}}
    path = tmp_path / "late.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def sync_json(config: Path, pg: str, db: sa.URL, table: str = "big_inc") -> dict[str, Any]:
    """`refsync sync -t big_inc --json`: exit 0, the table's entry of the document."""
    env = {"WDH_DATABASE_URL": pg, "WDH_LEGACY_MYSQL_HOST": db.host,
           "WDH_LEGACY_MYSQL_PORT": str(db.port or 3306), "WDH_LEGACY_MYSQL_USER": db.username,
           "WDH_LEGACY_MYSQL_PASSWORD": db.password or "",
           "WDH_LEGACY_MYSQL_DATABASE": db.database, "WDH_LEGACY_MYSQL_SSL_CA": None,
           "WDH_REFERENCE_SYNC_ENABLED": "true", "WDH_REFERENCE_SYNC_CONFIG": None}
    result = CliRunner().invoke(app, ["sync", "-c", str(config), "-t", table, "--json"],
                                env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    doc = json.loads(result.stdout)
    assert result.exit_code == doc["exit_code"] == 0, doc
    [entry] = doc["tables"]
    return {**entry, "run_key": doc["run_key"]}


def counts(entry: dict[str, Any]) -> dict[str, int]:
    return {n: entry[n] for n in ("read", "inserted", "updated", "unchanged")}


def snapshot_of(pg: str, entry: dict[str, Any]) -> datetime:
    """The source's clock when that run's read began, as its run record keeps it."""
    with psycopg.connect(pg_conninfo(pg)) as conn:
        row = conn.execute("SELECT source_snapshot FROM refsync.sync_runs "
                           "WHERE run_key = %s AND table_name = %s",
                           (entry["run_key"], entry["name"])).fetchone()
    assert row is not None and row[0] is not None
    snapshot: datetime = row[0]
    return snapshot if snapshot.tzinfo else snapshot.replace(tzinfo=UTC)


def target_names(pg: str) -> dict[int, str]:
    with psycopg.connect(pg_conninfo(pg)) as conn:
        return dict(conn.execute("SELECT id, name FROM business.big_inc").fetchall())


def wait_for_clock(cur: Any, moment: datetime, deadline_s: float = 5.0) -> None:
    """Until the source's clock (Shanghai wall time) reaches `moment`, or fail."""
    give_up = time.monotonic() + deadline_s
    while True:
        cur.execute("SELECT NOW(6)")
        (now,) = cur.fetchone()
        if now >= moment:
            return
        assert time.monotonic() < give_up, f"the source's clock stays at {now}"


def late_and_early_writes(db: sa.URL) -> tuple[Any, datetime, datetime]:
    """Session A stamps id 7 and stays open; session B stamps id 8 and commits.
    (A's open session, A's stamp, B's stamp), stamps in Shanghai wall time."""
    a = writer(db)
    try:
        with a.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("UPDATE big SET name = 'late-commit', updated_at = NOW(6) WHERE id = 7")
            cur.execute("SELECT updated_at FROM big WHERE id = 7")
            (a_stamp,) = cur.fetchone()  # type: ignore[misc]
        with writer(db) as b, b.cursor() as cur:
            # B in a later second than A: the snapshot's clock (whole seconds) alone
            # would then let the watermark pass A's stamp
            wait_for_clock(cur, a_stamp.replace(microsecond=0) + timedelta(seconds=1))
            cur.execute("UPDATE big SET name = 'early-commit', updated_at = NOW(6) WHERE id = 8")
            cur.execute("SELECT updated_at FROM big WHERE id = 8")
            (b_stamp,) = cur.fetchone()  # type: ignore[misc]
    except BaseException:
        a.rollback()
        a.close()
        raise
    assert a_stamp < b_stamp
    return a, a_stamp, b_stamp


def late_commit_is_read(tmp_path: Path, pg: str, db: sa.URL,
                        reader: sa.URL | None = None) -> list[dict[str, Any]]:
    """The recipe: full run; A open, B committed; incremental run; A commits; two more
    incremental runs (refsync as `reader`, the writers as `db`'s user). Returns the four
    runs' entries; asserts id 7 arrives."""
    reader = reader or db
    config = write_config(tmp_path, ["big_inc"])
    first = sync_json(config, pg, reader)
    assert counts(first) == {"read": 10, "inserted": 10, "updated": 0, "unchanged": 0}
    assert first["watermark"] == "2024-03-01T09:00:10"

    a, a_stamp, b_stamp = late_and_early_writes(db)
    try:
        held = sync_json(config, pg, reader)
        # id 10 on the old watermark and B's id 8; A's row is not visible yet
        assert counts(held) == {"read": 2, "inserted": 0, "updated": 1, "unchanged": 1}
        assert target_names(pg)[8] == "early-commit"
        mark = datetime.fromisoformat(held["watermark"])
        assert mark <= a_stamp, (mark, a_stamp)
        a.commit()
    finally:
        a.rollback()  # a no-op once committed
        a.close()

    after = sync_json(config, pg, reader)
    assert after["status"] == "ok"
    assert counts(after) == {"read": 2, "inserted": 0, "updated": 1, "unchanged": 1}
    assert target_names(pg)[7] == "late-commit"
    again = sync_json(config, pg, reader)
    assert again["status"] == "unchanged"
    assert datetime.fromisoformat(again["watermark"]) <= b_stamp
    return [first, held, after, again]


# ---------------------------------------------------------------- tests


def test_late_commit_is_read_by_the_next_incremental_run(
        tmp_path: Path, warehouse: str, source: sa.URL) -> None:
    late_commit_is_read(tmp_path, warehouse, source)


def test_watermark_held_at_the_oldest_open_write_in_source_wall_time(
        tmp_path: Path, warehouse: str, private_mariadbs: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Three clocks: a private server whose system time is Kolkata's (+05:30, InnoDB's
    `trx_started` is in it) and whose default zone is +05:00, writers stamping Shanghai wall
    time, refsync's session in UTC. Nothing else writes there: the mark is A's transaction
    start less one second, as Shanghai wall time, whole seconds."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # inherited by the server process
    server = private_mariadbs.get("--default-time-zone=+05:00")
    db = server.create_database(f"late_{uuid.uuid4().hex[:8]}")
    make_big(db)
    config = write_config(tmp_path, ["big_inc"])
    sync_json(config, warehouse, db)
    a, a_stamp, _ = late_and_early_writes(db)
    try:
        with writer(db) as probe, probe.cursor() as cur:
            cur.execute("SELECT @@system_time_zone, trx_started FROM information_schema.INNODB_TRX"
                        " WHERE trx_rows_modified > 0")
            (system_zone, started), = cur.fetchall()  # type: ignore[misc]
        held = sync_json(config, warehouse, db)
    finally:
        a.rollback()
        a.close()
    assert system_zone == "IST"
    started_utc = started.replace(tzinfo=ZoneInfo("Asia/Kolkata")).astimezone(UTC)
    expected = (started_utc - timedelta(seconds=1)).astimezone(SHANGHAI).replace(tzinfo=None)
    assert held["watermark"] == expected.isoformat()
    assert expected <= a_stamp < expected + timedelta(seconds=3)


def test_without_process_the_watermark_stays_five_minutes_behind(
        tmp_path: Path, warehouse: str, source: sa.URL, no_process_user: sa.URL,
        caplog: pytest.LogCaptureFixture) -> None:
    """innodb_trx refuses a user without PROCESS: the watermark then stays five minutes
    behind the source's clock (a late commit within them is still read), and the run warns
    once, not once per table."""
    caplog.set_level(logging.WARNING, logger="refsync")
    config = write_config(tmp_path, ["big_a", "big_b"])
    user = no_process_user
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=SecretStr(warehouse), reference_sync_enabled=True,
        legacy_mysql_host=user.host, legacy_mysql_port=user.port or 3306,
        legacy_mysql_user=user.username, legacy_mysql_password=SecretStr(user.password or ""),
        legacy_mysql_database=user.database)
    result = api.sync(load_config(config), settings)
    assert result.exit_code == 0, [(t.name, t.error) for t in result.tables]
    warned = [r for r in caplog.records if getattr(r, "event", None) == "no_process_privilege"]
    assert len(warned) == 1
    assert warned[0].getMessage().endswith(
        "the source user lacks the PROCESS privilege, so the transactions open on the source "
        "are not visible: incremental watermarks stay 5 minutes behind the source's clock "
        "(GRANT PROCESS ON *.* to end this)")

    runs = late_commit_is_read(tmp_path, warehouse, source, no_process_user)
    for entry in runs[1:]:
        snapshot = snapshot_of(warehouse, entry)
        behind = (snapshot - timedelta(minutes=5)).astimezone(SHANGHAI).replace(
            tzinfo=None, microsecond=0)
        assert datetime.fromisoformat(entry["watermark"]) == behind, entry


def test_rows_stamped_at_the_watermark_are_read_again(
        tmp_path: Path, warehouse: str, source: sa.URL) -> None:
    """The watermark stays inclusive: an application stamps one time it chose on a change
    made in two transactions, the second commits after the snapshot; its rows carry the
    watermark itself, so only `>=` finds them."""
    config = write_config(tmp_path, ["big_inc"])
    sync_json(config, warehouse, source)
    chosen = PAST + timedelta(seconds=20)
    with writer(source) as first, first.cursor() as cur:
        cur.execute("UPDATE big SET name = 'batch 1', updated_at = %s WHERE id = 1", (chosen,))
    second = writer(source)
    try:
        with second.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("UPDATE big SET name = 'batch 2', updated_at = %s WHERE id = 2",
                        (chosen,))
        held = sync_json(config, warehouse, source)
        assert counts(held) == {"read": 2, "inserted": 0, "updated": 1, "unchanged": 1}
        assert held["watermark"] == chosen.isoformat()
        second.commit()
    finally:
        second.rollback()
        second.close()
    after = sync_json(config, warehouse, source)
    assert counts(after) == {"read": 2, "inserted": 0, "updated": 1, "unchanged": 1}
    assert target_names(warehouse)[2] == "batch 2"
