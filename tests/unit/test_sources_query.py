"""Query building, error classification and source construction: no database needed."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from pydantic import SecretStr
from sqlalchemy import column, literal
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql, postgresql, sqlite

from refsync.config import MySQLPool, Settings, TableSpec
from refsync.errors import (
    AuthFailure,
    ConfigError,
    ConnectionFailure,
    ConstraintViolation,
    InvalidRows,
    NotConfigured,
    QueryFailure,
    ServerRefused,
    TransientConflict,
)
from refsync.sources import (
    LegacyMySQLSource,
    SqlSource,
    YamlFileSource,
    build_select,
    classify_db_error,
    dispose_engines,
    is_connection_error,
    open_source,
)
from refsync.sources.mysql import connect_args, get_engine, mysql_url
from refsync.sources.mysql_copy import escaped_text
from refsync.sources.mysql_read import build_chunk_bounds, build_chunk_select
from refsync.sources.sql import (
    build_count_null_cursor,
    resolve_url,
    split_table_name,
)

WHERE = "legacy_mysql annuity_plan on root@127.0.0.1:3306/test"
SECRET = "S3cr3t-Zebra-71"


def sql_of(stmt: Any, dialect: Any = None) -> str:
    return " ".join(str(stmt.compile(dialect=dialect or mysql.dialect())).split())


def spec(source_type: str = "legacy_mysql", **source_config: Any) -> TableSpec:
    sc: dict[str, Any] = {
        "table": "annuity_plan",
        "columns": [{"source": "plan_code", "target": "年金计划号"},
                    {"source": "plan_name", "target": "计划名称"}],
        **source_config,
    }
    return TableSpec.model_validate({
        "name": "年金计划", "target_table": "年金计划", "source_type": source_type,
        "source_config": sc, "primary_key": "年金计划号"})


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {"legacy_mysql_host": "127.0.0.1", "legacy_mysql_user": "root",
                            "legacy_mysql_database": "test"}
    return Settings(_env_file=None, **{**base, **kw})  # type: ignore[call-arg]


# ---------------------------------------------------------------- build_select


def test_build_select_full_read_quotes_every_identifier() -> None:
    stmt = build_select("annuity_plan", ["plan_code", "plan_name"], None, False, None)
    assert sql_of(stmt) == "SELECT `plan_code`, `plan_name` FROM `annuity_plan`"
    assert sql_of(stmt, sqlite.dialect()) == 'SELECT "plan_code", "plan_name" FROM "annuity_plan"'


def test_build_select_full_read_of_an_incremental_table_has_no_where_but_the_cursor() -> None:
    stmt = build_select("annuity_plan", ["plan_code"], "updated_at", False, None)
    assert sql_of(stmt) == "SELECT `plan_code`, `updated_at` FROM `annuity_plan`"


def test_build_select_incremental_is_inclusive_and_bound() -> None:
    stmt = build_select("annuity_plan", ["plan_code"], "updated_at", True, None)
    assert sql_of(stmt) == (
        "SELECT `plan_code`, `updated_at` FROM `annuity_plan` WHERE `updated_at` >= %s")
    assert sql_of(stmt, sqlite.dialect()) == (
        'SELECT "plan_code", "updated_at" FROM "annuity_plan" WHERE "updated_at" >= ?')
    assert "ORDER BY" not in sql_of(stmt)


def test_build_select_uses_the_configured_where_verbatim() -> None:
    where = "updated_at >= :last_synced_at AND plan_name LIKE 'A%'"
    stmt = build_select("annuity_plan", ["plan_code"], "updated_at", True, where)
    # the format paramstyle doubles the %, which PyMySQL undoubles: MySQL gets the text as written
    assert sql_of(stmt) == (
        "SELECT `plan_code`, `updated_at` FROM `annuity_plan` "
        "WHERE (updated_at >= %s AND plan_name LIKE 'A%%')")
    assert sql_of(stmt, sqlite.dialect()).endswith(
        "WHERE (updated_at >= ? AND plan_name LIKE 'A%')")


def test_an_or_in_where_is_one_term_inside_the_chunk_bounds() -> None:
    """Issue 8.3: `a OR b` ANDed with the chunk bounds must read `(a OR b) AND key ...`."""
    where = "updated_at >= :last_synced_at OR updated_at IS NULL"
    rows = build_select("annuity_plan", ["plan_code"], "updated_at", True, where)
    bounds = build_chunk_bounds(rows, "plan_code", None, after_given=True, limit=10)
    assert "WHERE (updated_at >= %s OR updated_at IS NULL) AND `plan_code` > %s" in sql_of(
        bounds)
    chunk = build_chunk_select(rows, "plan_code", None, "updated_at", literal("x"), literal(0),
                               after_given=True)
    assert ("WHERE (updated_at >= %s OR updated_at IS NULL) AND `plan_code` <= %s "
            "AND `plan_code` > %s") in sql_of(chunk)


@pytest.mark.parametrize(("since_given", "cursor"), [
    pytest.param(False, "updated_at", id="full-run"),
    pytest.param(True, None, id="no-cursor-column"),
])
def test_build_select_ignores_where_without_a_window(since_given: bool, cursor: str | None) -> None:
    stmt = build_select("t", ["a"], cursor, since_given, "updated_at >= :last_synced_at")
    assert "WHERE" not in sql_of(stmt)


@pytest.mark.parametrize(("name", "mysql_text", "sqlite_text"), [
    pytest.param("年金计划", "`年金计划`", '"年金计划"', id="chinese"),
    pytest.param("select", "`select`", '"select"', id="reserved-word"),
    pytest.param("plan code", "`plan code`", '"plan code"', id="space"),
    pytest.param("a`b", "`a``b`", '"a`b"', id="backtick"),
    pytest.param('a"b', '`a"b`', '"a""b"', id="double-quote"),
    pytest.param("Plan_Code", "`Plan_Code`", '"Plan_Code"', id="mixed-case"),
    pytest.param("x; DROP TABLE y", "`x; DROP TABLE y`", '"x; DROP TABLE y"', id="injection"),
])
def test_build_select_quotes_odd_identifiers(name: str, mysql_text: str, sqlite_text: str) -> None:
    stmt = build_select(name, [name], name, True, None)
    assert sql_of(stmt) == (
        f"SELECT {mysql_text} AS c0, {mysql_text} AS c1 FROM {mysql_text} "
        f"WHERE {mysql_text} >= %s")
    assert sql_of(stmt, sqlite.dialect()).startswith(f"SELECT {sqlite_text} AS c0")


def test_build_select_keeps_a_cursor_column_that_is_also_mapped() -> None:
    stmt = build_select("t", ["id", "updated_at"], "updated_at", False, None)
    assert sql_of(stmt) == "SELECT `id`, `updated_at` AS c1, `updated_at` AS c2 FROM `t`"
    assert len(stmt.selected_columns) == 3


def test_build_select_with_a_schema() -> None:
    schema, tbl = split_table_name("legacy.annuity_plan")
    stmt = build_select(tbl, ["plan_code"], None, False, None, schema=schema)
    assert sql_of(stmt) == "SELECT `plan_code` FROM `legacy`.`annuity_plan`"
    assert split_table_name("plain") == (None, "plain")
    assert split_table_name("a.b.c") == (None, "a.b.c")


def test_build_select_binds_values_never_inlines_them() -> None:
    stmt = build_select("t", ["a"], "u", True, None)
    compiled = stmt.compile(dialect=postgresql.dialect())
    assert str(compiled).endswith("WHERE \"u\" >= %(since)s")
    assert list(compiled.params) == ["since"]


def test_count_null_cursor_adds_zero_dates_on_mysql() -> None:
    stmt = build_count_null_cursor("t", "updated_at", zero_date="0000-00-00 00:00:00")
    assert sql_of(stmt) == (
        "SELECT count(*) AS count_1 FROM `t` "
        "WHERE `updated_at` IS NULL OR `updated_at` = %s")
    plain = build_count_null_cursor("t", "updated_at")
    assert sql_of(plain, sqlite.dialect()).endswith('WHERE "updated_at" IS NULL')


# ---------------------------------------------------------------- classify_db_error


def op(errno: int, msg: str) -> pymysql.err.OperationalError:
    return pymysql.err.OperationalError(errno, msg)


@pytest.mark.parametrize(("exc", "kind", "what"), [
    pytest.param(op(2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] "
                          "Connection refused)"), ConnectionFailure, "cannot connect",
                 id="2003-refused"),
    pytest.param(op(2002, "Can't connect to local server"), ConnectionFailure, "cannot connect",
                 id="2002"),
    pytest.param(op(2005, "Unknown MySQL server host 'nope'"), ConnectionFailure,
                 "unknown host", id="2005"),
    pytest.param(op(2006, "MySQL server has gone away"), ConnectionFailure,
                 "server has gone away", id="2006"),
    pytest.param(op(2013, "Lost connection to MySQL server during query (timed out)"),
                 ConnectionFailure, "read timed out", id="2013-timeout"),
    pytest.param(op(2055, "Lost connection to server at 'reading'"), ConnectionFailure,
                 "connection lost", id="2055"),
    pytest.param(op(1040, "Too many connections"), ConnectionFailure, "too many connections",
                 id="1040"),
    pytest.param(op(4031, "The client was disconnected"), ConnectionFailure,
                 "disconnected by the server (idle timeout)", id="4031"),
    pytest.param(pymysql.err.InterfaceError(0, ""), ConnectionFailure, "connection lost",
                 id="interface-0"),
    pytest.param(op(1045, "Access denied for user 'u'@'h' (using password: YES)"),
                 AuthFailure, "access denied", id="1045"),
    pytest.param(op(1044, "Access denied for user 'u'@'h' to database 'x'"), QueryFailure,
                 "access denied", id="1044"),
    pytest.param(pymysql.err.ProgrammingError(1142, "SELECT command denied"), QueryFailure,
                 "access denied", id="1142"),
    pytest.param(op(1054, "Unknown column 'x' in 'field list'"), QueryFailure,
                 "unknown column", id="1054"),
    pytest.param(pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax"),
                 QueryFailure, "SQL syntax error", id="1064"),
    pytest.param(pymysql.err.ProgrammingError(1146, "Table 'test.x' doesn't exist"),
                 QueryFailure, "no such table", id="1146"),
    pytest.param(op(1049, "Unknown database 'x'"), QueryFailure, "unknown database", id="1049"),
    pytest.param(pymysql.err.InternalError(1792, "Cannot execute statement in a READ ONLY "
                                                 "transaction"), QueryFailure,
                 "read-only transaction", id="1792"),
    pytest.param(pymysql.err.IntegrityError(1451, "Cannot delete or update a parent row"),
                 ConstraintViolation, "row is still referenced", id="1451"),
    pytest.param(psycopg.OperationalError('connection failed: connection to server at '
                                          '"127.0.0.1", port 1 failed: Connection refused'),
                 ConnectionFailure, "cannot connect", id="psycopg-refused"),
    pytest.param(psycopg.OperationalError('connection failed: FATAL:  password '
                                          'authentication failed for user "u"'),
                 AuthFailure, "access denied", id="psycopg-auth"),
    pytest.param(psycopg.errors.AdminShutdown("terminating connection"), ConnectionFailure,
                 "server is shutting down", id="pg-57P01"),
    pytest.param(psycopg.errors.UndefinedTable('relation "x" does not exist'), QueryFailure,
                 "no such table", id="pg-42P01"),
    pytest.param(psycopg.errors.UndefinedColumn('column "x" does not exist'), QueryFailure,
                 "unknown column", id="pg-42703"),
    pytest.param(psycopg.errors.InsufficientPrivilege("permission denied"), QueryFailure,
                 "access denied", id="pg-42501"),
    pytest.param(psycopg.errors.ForeignKeyViolation("still referenced"), ConstraintViolation,
                 "foreign key violation", id="pg-23503"),
    pytest.param(sqlite3.OperationalError("database is locked"), ConnectionFailure,
                 "database is locked", id="sqlite-locked"),
    pytest.param(sqlite3.OperationalError("no such table: x"), QueryFailure, "no such table",
                 id="sqlite-no-table"),
    pytest.param(sqlite3.OperationalError("no such column: x"), QueryFailure, "unknown column",
                 id="sqlite-no-column"),
    pytest.param(TimeoutError("timed out"), ConnectionFailure, "timed out", id="socket-timeout"),
    pytest.param(ConnectionResetError(104, "Connection reset by peer"), ConnectionFailure,
                 "connection failed", id="reset"),
    pytest.param(sa_exc.TimeoutError("QueuePool limit of size 5 overflow 2 reached"),
                 ConnectionFailure, "no free connection in the pool", id="pool-timeout"),
    pytest.param(sa_exc.NoSuchTableError("x"), QueryFailure, "no such table", id="no-such-table"),
])
def test_classify_db_error_by_cause(exc: BaseException, kind: type, what: str) -> None:
    err = classify_db_error(exc, WHERE)
    assert type(err) is kind
    assert err.message.startswith(f"{WHERE}: {what}")
    assert err.transient is (kind is ConnectionFailure)


@pytest.mark.parametrize(("exc", "kind", "what", "hint"), [
    pytest.param(op(1205, "Lock wait timeout exceeded; try restarting transaction"),
                 ServerRefused, "lock wait timeout", "SHOW PROCESSLIST", id="1205"),
    pytest.param(op(1969, "Query execution was interrupted (max_statement_time exceeded)"),
                 ServerRefused, "statement timed out (max_statement_time)",
                 "raise max_statement_time", id="1969"),
    pytest.param(op(3024, "Query execution was interrupted, maximum statement execution time "
                          "exceeded"), ServerRefused, "statement timed out (max_execution_time)",
                 "raise max_execution_time", id="3024"),
    pytest.param(op(1317, "Query execution was interrupted"), ServerRefused,
                 "query interrupted", "KILL QUERY", id="1317"),
    pytest.param(op(1213, "Deadlock found when trying to get lock"), TransientConflict,
                 "deadlock", "retried", id="1213"),
    pytest.param(psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
                 ServerRefused, "statement timed out or cancelled", "statement_timeout",
                 id="pg-57014"),
    pytest.param(psycopg.errors.SerializationFailure("could not serialize"), TransientConflict,
                 "serialization failure", "retried", id="pg-40001"),
])
def test_server_refusals_name_the_side_and_are_not_connection_errors(
        exc: BaseException, kind: type, what: str, hint: str) -> None:
    """Issue 11.5: timeouts, interrupts, a full disk and deadlocks get their own message and
    hint, name the side and the server, and are never retried as connection errors."""
    server = "MySQL" if isinstance(exc, pymysql.MySQLError) else "PostgreSQL"
    err = classify_db_error(exc, WHERE)
    assert type(err) is kind
    assert err.message.startswith(f"{WHERE}: {what} on the source {server} server (")
    assert hint in err.hint and "target" not in err.hint
    assert err.transient is (kind is TransientConflict)
    assert not is_connection_error(exc)
    on_target = classify_db_error(exc, "target postgresql://h/db (applying)")
    assert f"{what} on the target {server} server" in on_target.message


def test_query_errors_on_the_target_never_hint_at_the_source() -> None:
    err = classify_db_error(psycopg.errors.NumericValueOutOfRange("value out of range"),
                            "target postgresql://h/db (staging)")
    assert isinstance(err, QueryFailure)
    assert "source" not in err.hint and "target" in err.hint
    on_source = classify_db_error(pymysql.err.DataError(1264, "Out of range value"), WHERE)
    assert "source" in on_source.hint and "target" not in on_source.hint


def test_classify_db_error_message_names_what_and_where() -> None:
    orig = op(2013, "Lost connection to MySQL server during query")
    wrapped = sa_exc.OperationalError("SELECT `plan_code` FROM `annuity_plan`", {}, orig)
    err = classify_db_error(wrapped, WHERE, streaming=True)
    assert isinstance(err, ConnectionFailure)
    assert str(err) == (f"{WHERE}: connection lost mid-stream "
                        "(2013 Lost connection to MySQL server during query)")
    assert "SELECT" not in str(err)  # SQLAlchemy's [SQL: ...] trailer is dropped


def test_classify_db_error_hints_for_query_errors() -> None:
    err = classify_db_error(pymysql.err.ProgrammingError(1146, "Table 'x' doesn't exist"), WHERE)
    assert "table exists" in err.hint
    assert classify_db_error(op(1045, "Access denied"), WHERE).hint.startswith(
        "check WDH_LEGACY_MYSQL_USER and WDH_LEGACY_MYSQL_PASSWORD")


@pytest.mark.parametrize("crash", [
    pytest.param(AttributeError("'NoneType' object has no attribute 'read'"), id="attribute"),
    pytest.param(struct.error("unpack requires a buffer of 4 bytes"), id="struct"),
    pytest.param(IndexError("index out of range"), id="index"),
    pytest.param(pymysql.err.InterfaceError(0, ""), id="interface"),
])
def test_classify_db_error_crash_after_a_lost_connection_is_a_connection_failure(
        crash: BaseException) -> None:
    err = classify_db_error(crash, WHERE, streaming=True, connection_lost=True)
    assert isinstance(err, ConnectionFailure)
    assert "connection lost mid-stream" in str(err)


def test_classify_db_error_crash_chained_to_a_lost_connection() -> None:
    try:
        try:
            raise op(2013, "Lost connection to MySQL server during query")
        except pymysql.err.OperationalError:
            raise AttributeError("'NoneType' object has no attribute 'settimeout'") from None
    except AttributeError as exc:
        crash = exc
    assert crash.__context__ is not None  # `from None` hides it from tracebacks only
    assert isinstance(classify_db_error(crash, WHERE), ConnectionFailure)


def test_classify_db_error_plain_bug_is_not_retried() -> None:
    err = classify_db_error(AttributeError("no attribute 'x'"), WHERE)
    assert isinstance(err, QueryFailure)
    assert "unexpected AttributeError" in str(err)


def test_classify_db_error_passes_refsync_errors_through() -> None:
    mine = InvalidRows("bad")
    assert classify_db_error(mine, WHERE) is mine


def test_classify_db_error_scrubs_passwords_from_driver_text() -> None:
    exc = psycopg.OperationalError(
        f"could not parse postgresql://app:{SECRET}@db:5432/x; password={SECRET} host=db")
    err = classify_db_error(exc, WHERE)
    assert SECRET not in str(err)
    assert "postgresql://app:***@db:5432/x" in str(err)
    assert "password=***" in str(err)


# ---------------------------------------------------------------- legacy_mysql construction


def test_legacy_mysql_without_host_is_not_configured() -> None:
    with pytest.raises(NotConfigured) as info:
        LegacyMySQLSource(spec(), Settings(_env_file=None, legacy_mysql_host=None),  # type: ignore[call-arg]
                          MySQLPool(), batch_size=10)
    assert "WDH_LEGACY_MYSQL_HOST" in str(info.value)
    assert "年金计划" in str(info.value)
    assert "WDH_LEGACY_MYSQL_HOST" in info.value.hint
    assert info.value.error_class == "not_configured"


def test_legacy_mysql_names_every_missing_variable() -> None:
    with pytest.raises(NotConfigured) as info:
        mysql_url(settings(legacy_mysql_user=None, legacy_mysql_database=None), "年金计划")
    assert "WDH_LEGACY_MYSQL_USER, WDH_LEGACY_MYSQL_DATABASE" in str(info.value)


def test_legacy_mysql_url_keeps_the_password_out_of_text() -> None:
    url = mysql_url(settings(legacy_mysql_password=SecretStr(SECRET)), "t")
    assert url.password == SECRET
    assert SECRET not in str(url) and SECRET not in repr(url)
    src = LegacyMySQLSource(spec(), settings(legacy_mysql_password=SecretStr(SECRET)),
                            MySQLPool(), batch_size=10)
    try:
        assert src.describe() == "mysql://root@127.0.0.1:3306/test table annuity_plan"
        assert src.where_text == WHERE
    finally:
        dispose_engines()


def test_legacy_mysql_empty_password_is_allowed() -> None:
    assert mysql_url(settings(), "t").password is None


def test_legacy_mysql_connect_args() -> None:
    args = connect_args(settings(), MySQLPool(connect_timeout=7, read_timeout=9))
    assert args == {"connect_timeout": 7, "read_timeout": 9, "write_timeout": 9,
                    "charset": "utf8mb4", "init_command": "SET SESSION TRANSACTION READ ONLY"}


def test_legacy_mysql_tls_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    with pytest.raises(NotConfigured, match="WDH_LEGACY_MYSQL_SSL_CA"):
        connect_args(settings(legacy_mysql_ssl_ca=ca), MySQLPool())
    assert "ssl" not in connect_args(settings(legacy_mysql_ssl_ca=""), MySQLPool())
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert connect_args(settings(legacy_mysql_ssl_ca=ca), MySQLPool())["ssl"] == {"ca": str(ca)}


def test_legacy_mysql_engines_are_shared_and_disposed() -> None:
    pool = MySQLPool(pool_size=3, max_overflow=1)
    try:
        a = get_engine(settings(), pool)
        assert get_engine(settings(), pool) is a
        assert get_engine(settings(legacy_mysql_port=3307), pool) is not a
        assert a.pool.size() == 3  # type: ignore[attr-defined]
        assert a.pool._max_overflow == 1  # type: ignore[attr-defined]
        assert a.dialect.name == "mysql" and a.dialect.driver == "pymysql"
    finally:
        dispose_engines()
    assert get_engine(settings(), pool) is not a
    dispose_engines()


# ---------------------------------------------------------------- sql source and open_source


def test_sql_source_url_env_unset_is_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEGACY_URL", raising=False)
    with pytest.raises(NotConfigured, match="LEGACY_URL"):
        resolve_url(spec("sql", url_env="LEGACY_URL"))


def test_sql_source_bad_url_never_repeats_it() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_url(spec("sql", url=f"mysql+pymysql://u:{SECRET}@host:notaport/db"))
    assert SECRET not in str(info.value)
    assert "source_config.url" in str(info.value)


def test_sql_source_describe_has_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGACY_URL", f"mysql+pymysql://app:{SECRET}@db.internal:3306/legacy")
    src = SqlSource.from_spec(spec("sql", url_env="LEGACY_URL"), batch_size=10)
    try:
        assert src.describe() == "mysql://app@db.internal:3306/legacy table annuity_plan"
        assert src.where_text == "sql annuity_plan on app@db.internal:3306/legacy"
    finally:
        src.close()


def test_open_source_dispatches_on_source_type(tmp_path: Path) -> None:
    f = tmp_path / "pl.yml"
    f.write_text('schema_version: "1.0"\ndata:\n  - {产品线代码: PL001}\n', encoding="utf-8")
    yspec = TableSpec.model_validate({
        "name": "产品线", "target_table": "产品线", "source_type": "config_file",
        "source_config": {"file_path": str(f), "schema_version": "1.0"},
        "sync_mode": "delete_insert", "primary_key": "产品线代码"})
    src = open_source(yspec, settings(), MySQLPool(), 100)
    assert isinstance(src, YamlFileSource)
    assert list(src.iter_batches(None)) == [[("PL001",)]]


def test_open_source_closes_what_fails_to_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent.sqlite'}"
    with pytest.raises(Exception, match="SQLite database file not found"):
        open_source(spec("sql", url=url), settings(), MySQLPool(), 100)
    assert not (tmp_path / "absent.sqlite").exists()


def test_escaped_text_is_a_copy_text_field_made_by_the_server() -> None:
    sql = str(escaped_text(column("名称")).compile(dialect=mysql.dialect()))
    assert sql.startswith("replace(replace(replace(replace(`名称`")


def test_build_chunk_select_aggregates_one_keyset_page_into_one_row() -> None:
    import sqlalchemy as sa

    rows = build_select("t", ["a"], "u", False, None)
    bounds = build_chunk_bounds(rows, "a", None, after_given=True, limit=500)
    compiled = bounds.compile(dialect=mysql.dialect())
    # the index walk skips to the 500th key: no derived table is materialized for it
    assert " ".join(str(compiled).split()) == (
        "SELECT `a` FROM `t` WHERE `a` > %s ORDER BY `a` LIMIT %s, %s")
    assert [compiled.params[p] for p in compiled.positiontup if p != "after"] == [499, 1]
    last = build_chunk_select(rows, "a", None, None, sa.column("a"), sa.literal(0),
                              after_given=True, upto_given=False)
    assert "FROM `t` WHERE `a` > %s) AS x" in " ".join(  # the last range is open above
        str(last.compile(dialect=mysql.dialect())).split())
    stmt = build_chunk_select(rows, "a", None, "u", sa.column("a"), sa.literal(0),
                              after_given=True)
    sql = " ".join(str(stmt.compile(dialect=mysql.dialect())).split())
    assert "CAST(CONVERT(GROUP_CONCAT(x.line SEPARATOR '\\n') USING utf8mb4) AS BINARY)" in sql
    assert "count(*)" in sql and "max(x.cur)" in sql
    assert "FROM `t` WHERE `a` <= %s AND `a` > %s) AS x" in sql  # a plain range: no LIMIT
    assert "ORDER BY" not in sql and "CAST(`u` AS CHAR)" not in sql


def test_a_certificate_the_ca_does_not_trust_is_a_config_error_naming_the_setting() -> None:
    """The same certificate fails the same way on every retry: not a connection error, and
    the hint names the setting to fix, on either side."""
    import ssl

    from refsync.errors import ConfigError

    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                                            "verify failed: self-signed certificate")
    mysql_error = pymysql.err.OperationalError(2003, f"Can't connect to MySQL server ({cause})")
    mysql_error.__cause__ = cause
    err = classify_db_error(mysql_error, WHERE)
    assert type(err) is ConfigError and not err.transient
    assert err.message.startswith(f"{WHERE}: the source server's TLS certificate was not "
                                  "accepted (")
    assert "WDH_LEGACY_MYSQL_SSL_CA" in err.hint
    pg_error = psycopg.OperationalError(
        "connection failed: SSL error: certificate verify failed")
    on_target = classify_db_error(pg_error, "target postgresql://h/db (connecting)")
    assert type(on_target) is ConfigError and "sslrootcert" in on_target.hint
    plain = classify_db_error(pymysql.err.OperationalError(2003, "Can't connect"), WHERE)
    assert plain.transient  # an unreachable server is still retried
