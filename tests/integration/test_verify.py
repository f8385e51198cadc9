"""`refsync verify` against the real MariaDB and PostgreSQL (DESIGN 2, 4.6; issue 12 item 2).

Source: a typed legacy table in a fresh MariaDB database (rebuilt for every test: Chinese
text, NULL, '', trailing blanks, DECIMAL, INT, DATE, DATETIME), read as `legacy_mysql` through
the WDH_LEGACY_MYSQL_* settings; beside it a table with a DOUBLE column (no canonical text:
unsupported) and a YAML table (unsupported). Target: a fresh PostgreSQL database per test with
the target tables and their tracking columns, filled by a real `api.sync`; then the source or
the target is changed behind refsync's back and `verify` must name exactly those keys.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from helpers import execute, pg_rows
from pydantic import SecretStr
from typer.testing import CliRunner

from refsync import api
from refsync.cli import app
from refsync.config import LoadedConfig, Settings, load_config
from refsync.verify import TableVerify, VerifyReport, verify

pytestmark = pytest.mark.integration

ROWS = 300
PLAN = "年金计划"
RATIO = "费率"
LINES = "产品线"
KEY = "计划代码"

MY_DDL = """CREATE TABLE plan_src (
  code VARCHAR(20) NOT NULL PRIMARY KEY, name VARCHAR(100) NULL, amount DECIMAL(12,2) NULL,
  qty INT NULL, d DATE NULL, updated_at DATETIME NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"""
MY_RATIO_DDL = """CREATE TABLE ratio_src (code VARCHAR(20) NOT NULL PRIMARY KEY, ratio DOUBLE NULL)
  ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
TRACKING = """, "_source" varchar(20) NOT NULL DEFAULT 'authoritative',
  "_needs_review" boolean NOT NULL DEFAULT false, "_derived_from_domain" varchar(50),
  "_derived_at" timestamptz"""
PG_DDL = f"""CREATE SCHEMA business;
CREATE TABLE business."{PLAN}" ("{KEY}" varchar(20) PRIMARY KEY, "计划名称" varchar(100),
  "金额" numeric(12,2), "数量" integer, "日期" date, "更新时间" timestamptz{TRACKING});
CREATE TABLE business.ref_ratio (code varchar(20) PRIMARY KEY,
  ratio double precision{TRACKING});
CREATE TABLE business.ref_product_line (code varchar(20) PRIMARY KEY,
  name varchar(100){TRACKING});"""


def _name(i: int) -> str | None:
    if i % 37 == 0:
        return None
    if i % 41 == 0:
        return ""
    if i % 43 == 0:
        return f"计划 {i} "  # a trailing blank is a value of its own
    return f"年金计划 {i}"


def _source_rows() -> list[tuple[Any, ...]]:
    return [(f"K{i:04}", _name(i), None if i % 29 == 0 else f"{(i - 150) * 3.25:.2f}",
             None if i % 31 == 0 else i * 7, f"2020-01-{i % 28 + 1:02}",
             None if i % 23 == 0 else f"2024-05-{i % 28 + 1:02} 12:{i % 60:02}:{i % 59:02}")
            for i in range(1, ROWS + 1)]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def db(mysql_db_url: str) -> sa.URL:
    return sa.engine.make_url(mysql_db_url)


@pytest.fixture
def admin(db: sa.URL) -> Iterator[sa.Engine]:
    """Read-write access to the MariaDB database; the source tables rebuilt for each test."""
    engine = sa.create_engine(db, connect_args={"charset": "utf8mb4"}, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS plan_src, ratio_src")
        conn.exec_driver_sql(MY_DDL)
        conn.exec_driver_sql("INSERT INTO plan_src VALUES (%s, %s, %s, %s, %s, %s)",
                             _source_rows())
        conn.exec_driver_sql(MY_RATIO_DDL)
        conn.exec_driver_sql("INSERT INTO ratio_src VALUES (%s, %s)",
                             [(f"R{i}", i / 3) for i in range(1, 11)])
    yield engine
    engine.dispose()


@pytest.fixture
def warehouse(pg_url: str) -> str:
    execute(pg_url, PG_DDL)
    return pg_url


@pytest.fixture
def config(tmp_path: Path) -> LoadedConfig:
    lines = tmp_path / "product_lines.yml"
    lines.write_text('schema_version: "1.0"\ndata:\n  - {code: "PL01", name: "企业年金"}\n',
                     encoding="utf-8")
    section = {
        "timezone": "Asia/Shanghai",
        "defaults": {"retry": {"attempts": 0, "backoff": [0]}},
        "tables": [
            {"name": PLAN, "target_table": PLAN, "target_schema": "business",
             "source_type": "legacy_mysql", "sync_mode": "delete_insert", "primary_key": KEY,
             "source_config": {"table": "plan_src", "columns": [
                 {"source": "code", "target": KEY}, {"source": "name", "target": "计划名称"},
                 {"source": "amount", "target": "金额"}, {"source": "qty", "target": "数量"},
                 {"source": "d", "target": "日期"},
                 {"source": "updated_at", "target": "更新时间"}]}},
            {"name": RATIO, "target_table": "ref_ratio", "target_schema": "business",
             "source_type": "legacy_mysql", "sync_mode": "delete_insert",
             "primary_key": "code",
             "source_config": {"table": "ratio_src", "columns": [
                 {"source": "code", "target": "code"},
                 {"source": "ratio", "target": "ratio"}]}},
            {"name": LINES, "target_table": "ref_product_line", "target_schema": "business",
             "source_type": "config_file", "sync_mode": "delete_insert",
             "primary_key": "code",
             "source_config": {"file_path": str(lines), "schema_version": "1.0"}},
        ],
    }
    path = tmp_path / "refsync.yml"
    path.write_text(yaml.safe_dump({"reference_sync": section}, allow_unicode=True),
                    encoding="utf-8")
    return load_config(path)


def make_settings(pg: str, db: sa.URL, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": SecretStr(pg), "legacy_mysql_host": db.host,
        "legacy_mysql_port": db.port or 3306, "legacy_mysql_user": db.username,
        "legacy_mysql_password": SecretStr(db.password or ""),
        "legacy_mysql_database": db.database, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(warehouse: str, db: sa.URL) -> Settings:
    return make_settings(warehouse, db)


@pytest.fixture
def synced(admin: sa.Engine, config: LoadedConfig, settings: Settings) -> LoadedConfig:
    """Every table synced once by the real engine."""
    result = api.sync(config, settings)
    assert result.exit_code == 0, [(t.name, t.error) for t in result.tables]
    return config


# ---------------------------------------------------------------- helpers


def pg_scalar(url: str, sql: str) -> Any:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql(sql).scalar()
    finally:
        engine.dispose()


def my_execute(engine: sa.Engine, *sql: str) -> None:
    with engine.begin() as conn:
        for statement in sql:
            conn.exec_driver_sql(statement)


def table(report: VerifyReport, name: str) -> TableVerify:
    [hit] = [t for t in report.tables if t.name == name]
    return hit


def cli_env(pg: str, db: sa.URL, **overrides: str | None) -> dict[str, str | None]:
    return {"WDH_DATABASE_URL": pg, "WDH_LEGACY_MYSQL_HOST": db.host,
            "WDH_LEGACY_MYSQL_PORT": str(db.port or 3306), "WDH_LEGACY_MYSQL_USER": db.username,
            "WDH_LEGACY_MYSQL_PASSWORD": db.password or "",
            "WDH_LEGACY_MYSQL_DATABASE": db.database, "WDH_LEGACY_MYSQL_SSL_CA": None,
            "WDH_REFERENCE_SYNC_CONFIG": None, **overrides}


# ---------------------------------------------------------------- tests


def test_a_synced_table_is_in_step(synced: LoadedConfig, settings: Settings,
                                   warehouse: str) -> None:
    runs = pg_scalar(warehouse, "SELECT count(*) FROM refsync.sync_runs")
    report = verify(synced, settings)
    plan = table(report, PLAN)
    assert plan.status == "in_step", plan
    assert (plan.source_rows, plan.target_rows) == (ROWS, ROWS)
    assert (plan.differ, plan.missing, plan.extra) == (0, 0, 0)
    assert plan.differ_keys == plan.missing_keys == plan.extra_keys == []
    assert plan.error_class is None and plan.attempts == 1
    # digests cannot compare these: shown with the reason, never counted as failing
    ratio, lines = table(report, RATIO), table(report, LINES)
    assert ratio.status == lines.status == "unsupported"
    assert "ratio" in (ratio.reason or "") and "float" in (ratio.reason or ""), ratio.reason
    assert "config_file" in (lines.reason or ""), lines.reason
    assert ratio.source_rows is None and ratio.differ is None
    assert report.exit_code == 0
    # read-only: no run recorded
    assert pg_scalar(warehouse, "SELECT count(*) FROM refsync.sync_runs") == runs


def test_a_target_session_digests_cannot_run_in_is_unsupported_not_an_error(
        synced: LoadedConfig, settings: Settings, warehouse: str) -> None:
    """A target whose sessions print dates in another style (a database setting): the
    digests cannot compare, so the table is `unsupported` with the reason, and exit 0."""
    database = sa.engine.make_url(warehouse).database
    execute(warehouse, f'ALTER DATABASE "{database}" SET DateStyle = \'SQL, DMY\'')
    report = verify(synced, settings)
    plan = table(report, PLAN)
    assert (plan.status, plan.error_class) == ("unsupported", None), plan
    assert "DateStyle" in (plan.reason or ""), plan.reason
    assert report.exit_code == 0


def test_changed_deleted_and_added_source_rows_are_named(
        synced: LoadedConfig, settings: Settings, admin: sa.Engine) -> None:
    my_execute(admin,
               "UPDATE plan_src SET name = '改过的名称' WHERE code = 'K0007'",
               "UPDATE plan_src SET amount = amount + 0.01 WHERE code = 'K0100'",
               "DELETE FROM plan_src WHERE code = 'K0042'",
               "INSERT INTO plan_src VALUES ('K9999', '新计划', 1.00, 1, '2024-01-01', NULL)")
    report = verify(synced, settings, tables=[PLAN])
    assert [t.name for t in report.tables] == [PLAN]
    plan = report.tables[0]
    assert plan.status == "differs"
    assert (plan.source_rows, plan.target_rows) == (ROWS, ROWS)
    assert (plan.differ, plan.missing, plan.extra) == (2, 1, 1)
    assert plan.differ_keys == [{KEY: "K0007"}, {KEY: "K0100"}]
    assert plan.missing_keys == [{KEY: "K9999"}]  # in the source, not yet in the target
    assert plan.extra_keys == [{KEY: "K0042"}]  # deleted from the source, still in the target
    assert report.exit_code == 1
    # a sync puts it right: verify agrees
    assert api.sync(synced, settings, tables=[PLAN]).exit_code == 0
    again = verify(synced, settings, tables=[PLAN])
    assert again.tables[0].status == "in_step" and again.exit_code == 0


def test_only_twenty_keys_are_listed_but_all_are_counted(
        synced: LoadedConfig, settings: Settings, admin: sa.Engine) -> None:
    my_execute(admin, "UPDATE plan_src SET qty = IFNULL(qty, 0) + 1 WHERE code <= 'K0030'")
    plan = verify(synced, settings, tables=[PLAN]).tables[0]
    assert plan.differ == 30 and len(plan.differ_keys) == 20
    assert plan.differ_keys[0] == {KEY: "K0001"}


def test_an_auto_derived_row_with_a_source_key_is_missing(
        synced: LoadedConfig, settings: Settings, warehouse: str) -> None:
    execute(warehouse, f"""
        UPDATE business."{PLAN}" SET _source = 'auto_derived', _needs_review = true,
          _derived_from_domain = 'annuity_performance', _derived_at = now()
        WHERE "{KEY}" = 'K0005';
        INSERT INTO business."{PLAN}" ("{KEY}", _source, _needs_review, _derived_from_domain,
          _derived_at) VALUES ('X0001', 'auto_derived', true, 'annuity_performance', now());
        UPDATE business."{PLAN}" SET _needs_review = true WHERE "{KEY}" = 'K0006';""")
    plan = verify(synced, settings).tables[0]
    assert plan.name == PLAN and plan.status == "differs"
    # a sync would promote K0005: it is not an authoritative row yet; layer 2 is not "extra"
    assert plan.missing_keys == [{KEY: "K0005"}] and plan.extra == 0
    # an authoritative row whose tracking values are not layer 1's is not in step
    assert plan.differ_keys == [{KEY: "K0006"}]
    assert (plan.source_rows, plan.target_rows) == (ROWS, ROWS - 1)


def test_a_sql_source_on_mysql_is_verified_too(
        synced: LoadedConfig, warehouse: str, db: sa.URL, admin: sa.Engine,
        tmp_path: Path) -> None:
    """`source_type: sql` with a MySQL URL: the same digests, on an engine of its own."""
    doc = yaml.safe_load(synced.path.read_text(encoding="utf-8"))
    [entry] = [t for t in doc["reference_sync"]["tables"] if t["name"] == PLAN]
    entry.update(source_type="sql")
    entry["source_config"]["url"] = db.render_as_string(hide_password=False)
    doc["reference_sync"]["tables"] = [entry]
    path = tmp_path / "sql.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    my_execute(admin, "DELETE FROM plan_src WHERE code = 'K0003'")
    report = verify(load_config(path), make_settings(warehouse, db, legacy_mysql_host=None))
    [plan] = report.tables
    assert (plan.source_type, plan.status, plan.extra_keys) == ("sql", "differs", [{KEY: "K0003"}])
    assert (plan.differ, plan.missing, plan.extra) == (0, 0, 1)


def test_verify_takes_no_lock(synced: LoadedConfig, warehouse: str, db: sa.URL) -> None:
    """Another run holds the run lock: `refsync verify` still compares the legacy MySQL table
    with the target, exits 0, and no session of its asks for the lock while it runs."""
    from refsync.targets.lock import LOCK_KEY

    run_lock = ("SELECT pid, mode, granted FROM pg_locks WHERE locktype = 'advisory' "
                f"AND classid = {LOCK_KEY >> 32} AND objid = {LOCK_KEY & 0xFFFFFFFF} "
                "AND objsubid = 1 AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())")
    env = {k: v for k, v in {**os.environ, **cli_env(warehouse, db)}.items() if v is not None}
    engine = sa.create_engine(warehouse, poolclass=sa.NullPool)
    try:
        with engine.connect() as holder:  # another run holds the run lock
            holder.exec_driver_sql(f"SELECT pg_advisory_lock({LOCK_KEY})")
            holder_pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with subprocess.Popen([sys.executable, "-m", "refsync", "verify", "--json", "-c",
                                   str(synced.path)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) as proc:
                seen: list[tuple[Any, ...]] = []
                deadline = time.monotonic() + 120
                while proc.poll() is None and time.monotonic() < deadline:
                    seen += pg_rows(warehouse, run_lock)  # the lock's holders and waiters
                    time.sleep(0.02)
                proc.kill()  # when it is still waiting: a verify that waits fails below
                out, err = proc.communicate(timeout=60)
    finally:
        engine.dispose()
    assert proc.returncode == 0, (out, err[-2000:])
    doc = json.loads(out)
    assert [(t["name"], t["status"]) for t in doc["tables"]][0] == (PLAN, "in_step"), doc
    assert len(seen) > 0  # the sampling ran
    assert {row[0] for row in seen} == {holder_pid}, seen


def test_a_table_that_cannot_be_read_fails_alone(
        synced: LoadedConfig, warehouse: str, db: sa.URL) -> None:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    report = verify(synced, make_settings(warehouse, db, legacy_mysql_host="127.0.0.1",
                                          legacy_mysql_port=port))
    plan = table(report, PLAN)
    assert plan.status == "failed" and plan.error_class == "connection", plan
    assert table(report, LINES).status == "unsupported"
    assert report.exit_code == 1


def test_a_missing_target_table_fails_as_config(
        admin: sa.Engine, config: LoadedConfig, settings: Settings, warehouse: str) -> None:
    execute(warehouse, f'DROP TABLE business."{PLAN}"')
    plan = verify(config, settings, tables=[PLAN]).tables[0]
    assert plan.status == "failed" and plan.error_class == "config"
    assert "init-db" in (plan.hint or "")


# ---------------------------------------------------------------- the command line


def test_cli_json_document(synced: LoadedConfig, warehouse: str, db: sa.URL,
                           admin: sa.Engine) -> None:
    my_execute(admin, "DELETE FROM plan_src WHERE code = 'K0042'")
    env = cli_env(warehouse, db)
    result = CliRunner().invoke(app, ["verify", "--json", "-c", str(synced.path)], env=env)
    assert result.exit_code == 1, result.stderr
    doc = json.loads(result.stdout)
    assert list(doc) == ["exit_code", "tables", "version"]
    assert doc["exit_code"] == 1
    by_name = {t["name"]: t for t in doc["tables"]}
    assert list(by_name) == [PLAN, RATIO, LINES]
    plan = by_name[PLAN]
    assert list(plan) == list(TableVerify.JSON_KEYS)
    assert plan["target"] == f"business.{PLAN}" and plan["source_type"] == "legacy_mysql"
    assert plan["status"] == "differs" and plan["reason"] is None
    assert (plan["source_rows"], plan["target_rows"]) == (ROWS - 1, ROWS)
    assert (plan["differ"], plan["missing"], plan["extra"]) == (0, 0, 1)
    assert plan["extra_keys"] == [{KEY: "K0042"}]
    assert by_name[LINES]["status"] == "unsupported" and by_name[LINES]["reason"]
    # by target_table too; in step again after a sync
    assert api.sync(synced, make_settings(warehouse, db), tables=[PLAN]).exit_code == 0
    result = CliRunner().invoke(app, ["verify", "--json", "-t", PLAN, "-t", "ref_ratio",
                                      "-c", str(synced.path)], env=env)
    doc = json.loads(result.stdout)
    assert result.exit_code == doc["exit_code"] == 0, result.stdout
    assert [(t["name"], t["status"]) for t in doc["tables"]] == [
        (PLAN, "in_step"), (RATIO, "unsupported")]


def test_cli_text_names_the_keys(synced: LoadedConfig, warehouse: str, db: sa.URL,
                                 admin: sa.Engine) -> None:
    my_execute(admin, "UPDATE plan_src SET name = NULL WHERE code = 'K0008'")
    result = CliRunner().invoke(app, ["verify", "-v", "-c", str(synced.path)],
                                env=cli_env(warehouse, db))
    assert result.exit_code == 1, result.stderr
    assert "buckets" in result.stderr and "source_digest" in result.stderr  # -v: plan, times
    assert "Traceback" not in result.stdout + result.stderr
    assert "differs" in result.stdout and "unsupported" in result.stdout
    assert "differ 1" in result.stdout and "K0008" in result.stdout
    assert "not verified" in result.stdout


def test_cli_unknown_table_exits_2_and_lists_the_names(
        config: LoadedConfig, warehouse: str, db: sa.URL) -> None:
    env = cli_env(warehouse, db)
    result = CliRunner().invoke(app, ["verify", "-t", "nope", "-c", str(config.path)], env=env)
    assert result.exit_code == 2
    assert "nope" in result.stderr and PLAN in result.stderr and LINES in result.stderr
    result = CliRunner().invoke(app, ["verify", "--json", "-t", "nope", "-c", str(config.path)],
                                env=env)
    doc = json.loads(result.stdout)
    assert result.exit_code == doc["exit_code"] == 2
    assert doc["error_class"] == "config" and PLAN in doc["error"]


@pytest.mark.parametrize("side", ["source", "target"])
def test_a_signal_cancels_the_statement_in_flight(
        synced: LoadedConfig, warehouse: str, db: sa.URL, admin: sa.Engine, side: str) -> None:
    """SIGINT while verify waits on a server: the statement is cancelled there (KILL QUERY,
    PostgreSQL cancel), verify stops at once with 130 and leaves nothing running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("WDH_")}
    env.update({k: v for k, v in cli_env(warehouse, db).items() if v is not None})
    pg = sa.create_engine(warehouse, poolclass=sa.NullPool)
    blocker = (admin if side == "source" else pg).connect()
    try:
        if side == "source":
            blocker.exec_driver_sql("LOCK TABLES plan_src WRITE")
        else:
            blocker.exec_driver_sql(f'LOCK TABLE business."{PLAN}" IN ACCESS EXCLUSIVE MODE')
        proc = subprocess.Popen(
            [sys.executable, "-m", "refsync", "verify", "--json", "-t", PLAN,
             "-c", str(synced.path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            deadline = time.monotonic() + 60
            while not _waiting(side, admin, pg):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "verify never blocked"
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, err
        doc = json.loads(out)
        assert doc["exit_code"] == 130
        assert doc["tables"][0]["error_class"] == "interrupted"
        assert "Traceback" not in err
        assert not _waiting(side, admin, pg)  # nothing left running on the server
    finally:
        if side == "source":
            blocker.exec_driver_sql("UNLOCK TABLES")
        else:
            blocker.rollback()
        blocker.close()
        pg.dispose()


def _waiting(side: str, admin: sa.Engine, pg: sa.Engine) -> bool:
    """Whether a verify statement waits for the lock the test holds (in this test's
    databases: other tests may run on the same servers at once)."""
    if side == "source":
        with admin.connect() as conn:
            return bool(conn.exec_driver_sql(
                "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
                "AND STATE LIKE 'Waiting for table%%' AND INFO LIKE '%%plan_src%%'").scalar())
    with pg.connect() as conn:
        return bool(conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'refsync' "
            "AND datname = current_database() AND wait_event_type = 'Lock'").scalar())
