"""Error classes by cause (DESIGN 4.7): a full disk is `disk_full` on the side it happened,
never retried; a server-side temporary-file error is retried once with no config hint; a
connection lost mid-statement says "connection lost while …"; printed and stored errors are
bounded and never carry SQLAlchemy's statement-and-parameters dump."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pymysql
import pytest
from pydantic import SecretStr
from sqlalchemy import exc as sa_exc

from refsync.config import RetryPolicy, Settings, load_config
from refsync.dberrors import classify_db_error
from refsync.errors import (
    MAX_ERROR_CHARS,
    ConnectionFailure,
    DiskFull,
    InternalError,
    RefsyncError,
    ServerTransient,
    bounded,
)
from refsync.retry import is_transient, retrying
from refsync.targets.postgres import classify_target_error

WHERE = "legacy_mysql annuity_plan on root@127.0.0.1:3306/test"


def mysql_error(errno: int, message: str) -> pymysql.err.OperationalError:
    return pymysql.err.OperationalError(errno, message)


# ---------------------------------------------------------------- a full disk


@pytest.mark.parametrize(("exc", "path"), [
    pytest.param(mysql_error(1021, "Disk full (/tmp/#sql_1.MAI); waiting for someone to free "
                                   "some space... (errno: 28 \"No space left on device\")"),
                 None, id="1021-ER_DISK_FULL"),
    pytest.param(mysql_error(3, "Error writing file '/tmp/MYfd=42' (Errcode: 28 \"No space "
                                "left on device\")"), "/tmp/MYfd=42", id="3-write-errcode-28"),
    pytest.param(pymysql.err.InternalError(1030, "Got error 28 \"No space left on device\" "
                                                 "from storage engine Aria"), None,
                 id="1030-engine-error-28"),
    pytest.param(mysql_error(1114, "The table '/tmp/#sql-temptable-1' is full"),
                 "/tmp/#sql-temptable-1", id="1114-table-full"),
    pytest.param(mysql_error(20, "Disk is full writing './test/x.MAD' (Errcode: 28)"), None,
                 id="20-EE_DISK_FULL"),
])
def test_a_full_disk_on_the_mysql_source_is_disk_full_on_the_source(
        exc: BaseException, path: str | None) -> None:
    err = classify_db_error(exc, WHERE, side="source")
    assert type(err) is DiskFull and err.error_class == "disk_full"
    assert err.side == "source" and not is_transient(err)
    assert err.message.startswith(f"{WHERE}: the source MySQL server's disk is full")
    if path:
        assert f"(writing {path})" in err.message
    assert "free disk space on the MySQL server" in err.hint
    assert "source_config" not in err.hint and "target" not in err.message


def test_a_full_disk_on_the_postgresql_target_names_the_target_and_the_file() -> None:
    exc = psycopg.errors.DiskFull('could not extend file "base/16384/16390": No space left '
                                  "on device")
    wrapped = sa_exc.OperationalError("COPY x FROM STDIN", {"p": 1}, exc)
    err = classify_target_error(wrapped, "postgresql://etl@db/wh", "loading rows")
    assert type(err) is DiskFull and err.error_class == "disk_full" and err.side == "target"
    assert err.message == ("target postgresql://etl@db/wh (loading rows): the target server's "
                           'disk is full (53100 could not extend file "base/16384/16390": No '
                           "space left on device)")
    assert not is_transient(err) and "source" not in err.hint


def test_a_full_disk_on_a_postgresql_source_is_the_source_s() -> None:
    exc = psycopg.errors.DiskFull('could not write to file "base/pgsql_tmp/pgsql_tmp1.0": '
                                  "No space left on device")
    err = classify_db_error(exc, "sql plans on db/src", side="source")
    assert type(err) is DiskFull and err.side == "source"
    assert "the source PostgreSQL server's disk is full (writing base/pgsql_tmp/pgsql_tmp1.0)" \
        in err.message
    assert "target" not in err.hint


# ---------------------------------------------------------------- a transient server file error


@pytest.mark.parametrize("exc", [
    pytest.param(pymysql.err.InternalError(6, "Error on delete of '/tmp/#sql-temptable-1a-3-"
                                              "4.MAI' (Errcode: 2 \"No such file or "
                                              "directory\")"), id="6-EE_DELETE"),
    pytest.param(pymysql.err.InternalError(1030, "Got error 2 \"No such file or directory\" "
                                                 "from storage engine Aria"),
                 id="1030-engine-error-2"),
    pytest.param(mysql_error(1011, "Error on delete of '/tmp/#sql_1.MAI' (errno: 2)"),
                 id="1011-ER_CANT_DELETE_FILE"),
    pytest.param(mysql_error(1, "Can't create/write to file '/tmp/#sql_2.MAI' (Errcode: 13)"),
                 id="1-EE_CANTCREATEFILE"),
])
def test_a_temporary_file_error_on_the_mysql_server_is_retried_once_without_config_hint(
        exc: BaseException) -> None:
    err = classify_db_error(exc, WHERE, side="source")
    assert type(err) is ServerTransient and is_transient(err) and err.max_retries == 1
    assert err.error_class == "query" and err.side == "source"
    assert err.message.startswith(f"{WHERE}: file error on the source MySQL server (")
    assert "source_config" not in err.hint and "retried once" in err.hint


def _attempts(error: RefsyncError, policy: RetryPolicy) -> int:
    calls = 0
    with pytest.raises(type(error)):
        for attempt in retrying(policy, table="t", where=lambda: "h", sleep=lambda _: None):
            with attempt:
                calls += 1
                raise error
    return calls


def test_a_transient_server_error_is_retried_once_a_connection_error_per_the_policy() -> None:
    policy = RetryPolicy(attempts=3, backoff=[0])
    temp = classify_db_error(pymysql.err.InternalError(6, "Error on delete of '/tmp/#sql-x'"),
                             WHERE)
    assert _attempts(temp, policy) == 2
    assert _attempts(ConnectionFailure("lost"), policy) == 4
    assert _attempts(DiskFull("full", side="target"), policy) == 1
    assert _attempts(temp, RetryPolicy(attempts=0, backoff=[0])) == 1


# ---------------------------------------------------------------- a connection lost mid-statement


@pytest.mark.parametrize("text", [
    "sending copy data failed: server closed the connection unexpectedly",
    "consuming input failed: server closed the connection unexpectedly",
    "the connection is closed",
])
def test_a_target_connection_lost_mid_statement_says_connection_lost_while(text: str) -> None:
    err = classify_target_error(psycopg.OperationalError(text), "postgresql://etl@db/wh",
                                "loading rows")
    assert type(err) is ConnectionFailure and err.side == "target"
    assert err.message == (f"target postgresql://etl@db/wh: connection lost while loading rows "
                           f"({text})")


def test_a_refused_connection_still_says_cannot_connect() -> None:
    exc = psycopg.OperationalError('connection failed: connection to server at "10.0.0.1", '
                                   "port 5432 failed: Connection refused")
    err = classify_target_error(exc, "postgresql://etl@db/wh", "connecting")
    assert type(err) is ConnectionFailure
    assert err.message.startswith("target postgresql://etl@db/wh (connecting): cannot connect")


# ---------------------------------------------------------------- bounded messages


def test_an_unexpected_error_keeps_no_statement_dump_and_is_bounded() -> None:
    dump = sa_exc.OperationalError("INSERT INTO refsync.sync_runs (" + "x, " * 900 + ")",
                                   {"run_key": "k" * 900}, RuntimeError("boom"))
    err = InternalError(f"unexpected OperationalError: {dump}")
    assert err.message == "unexpected OperationalError: (builtins.RuntimeError) boom"
    long = InternalError("unexpected ValueError: " + "v" * 2000)
    assert len(long.message) == MAX_ERROR_CHARS and long.message.endswith("…")


def test_bounded_leaves_a_short_message_alone() -> None:
    assert bounded("target x (applying): deadlock") == "target x (applying): deadlock"


def test_status_shows_a_stored_statement_dump_bounded(tmp_path: Path) -> None:
    """A record an older release wrote with SQLAlchemy's whole statement: `status` shows the
    message, not the statement and its parameters."""
    import sqlalchemy as sa

    from refsync import report, state
    from refsync.model import TableResult

    db = tmp_path / "w.sqlite"
    engine = sa.create_engine(f"sqlite:///{db}")
    dump = ("unexpected OperationalError: (psycopg.errors.AdminShutdown) terminating connection"
            "\n[SQL: INSERT INTO refsync.sync_runs (" + "col, " * 500 + ")]\n[parameters: {}]")
    res = TableResult(name="产品线", target="ref_product_line", source_type="config_file",
                      mode="delete_insert", incremental=False, status="failed",
                      error_class="internal", error=dump)
    now = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    with engine.begin() as conn:
        state.ensure(conn)
        state.record(conn, "k1", res, started=now, finished=now, watermark_moves=False)
        conn.execute(sa.text("UPDATE refsync_sync_runs SET error = :e"), {"e": dump})
    engine.dispose()
    lines = tmp_path / "product_lines.yml"
    lines.write_text('schema_version: "1.0"\ndata:\n  - {code: "PL01", name: "企业年金"}\n',
                     encoding="utf-8")
    config = tmp_path / "cfg.yml"
    config.write_text(json.dumps({"reference_sync": {"timezone": "Asia/Shanghai", "tables": [
        {"name": "产品线", "target_table": "ref_product_line", "source_type": "config_file",
         "source_config": {"file_path": str(lines), "schema_version": "1.0"},
         "sync_mode": "delete_insert", "primary_key": "code"}]}}), encoding="utf-8")
    settings = Settings(_env_file=None, database_url=SecretStr(f"sqlite:///{db}"),  # type: ignore[call-arg]
                        reference_sync_enabled=True)
    doc = report.status(load_config(config), settings)
    assert doc["runs"][0]["error"] == ("unexpected OperationalError: (psycopg.errors."
                                       "AdminShutdown) terminating connection")


def test_a_stored_error_is_bounded(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from refsync import state
    from refsync.model import TableResult

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    res = TableResult(name="t", target="t", source_type="sql", mode="upsert",
                      incremental=False, status="failed", error_class="invalid",
                      error="x" * 3000)
    now = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    with engine.begin() as conn:
        state.ensure(conn)
        state.record(conn, "k1", res, started=now, finished=now, watermark_moves=False)
        stored = conn.execute(sa.text("SELECT error FROM refsync_sync_runs")).scalar()
    engine.dispose()
    assert len(stored) == MAX_ERROR_CHARS


def test_every_error_class_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Errors and what to do", 1)[1].split("\n## ", 1)[0]

    def classes(cls: type[RefsyncError]) -> set[str]:
        return {cls.error_class}.union(*(classes(sub) for sub in cls.__subclasses__()))

    documented = {c for c in classes(RefsyncError) - {"error"} if f"`{c}`" in section}
    assert documented == classes(RefsyncError) - {"error"}
    assert "`disk_full`" in section


def test_a_full_disk_under_a_sqlite_target_is_disk_full_not_a_retried_lock() -> None:
    import sqlite3

    err = classify_db_error(sqlite3.OperationalError("database or disk is full"),
                            "target sqlite:///w.sqlite (loading rows)")
    assert type(err) is DiskFull and err.side == "target" and not is_transient(err)
    assert "the target SQLite server's disk is full" in err.message
