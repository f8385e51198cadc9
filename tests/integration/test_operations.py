"""What an operator relies on, on the real MariaDB and PostgreSQL (DESIGN 2.2a, 4.4, 4.5):
metrics that say how every run ended, a sync by a role with only DML, a plan by a read-only
role, `full_every` (the weekly reconcile) and `verify --metrics-file`.

Source: a legacy_mysql table in a fresh MariaDB database (rebuilt for every test), plus a
product-lines YAML table. Target: a fresh PostgreSQL database per test. Everything runs
through the command line, as cron would.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from refsync.cli import app
from refsync.targets.lock import LOCK_KEY

pytestmark = pytest.mark.integration

PLAN = "年金计划"
LINES = "产品线"
ROWS = 20
MY_DDL = """CREATE TABLE plan_src (code VARCHAR(20) NOT NULL PRIMARY KEY, name VARCHAR(100),
  updated_at DATETIME NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
TRACKING = """, "_source" varchar(20) NOT NULL DEFAULT 'authoritative',
  "_needs_review" boolean NOT NULL DEFAULT false, "_derived_from_domain" varchar(50),
  "_derived_at" timestamptz"""
PG_DDL = f"""CREATE SCHEMA business;
CREATE TABLE business."{PLAN}" ("计划代码" varchar(20) PRIMARY KEY, "计划名称" varchar(100),
  "更新时间" timestamp{TRACKING});
CREATE TABLE business.ref_product_line ("产品线代码" varchar(20) PRIMARY KEY,
  "产品线名称" varchar(100){TRACKING});"""


def libpq(url: str, **changes: Any) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql", **changes).render_as_string(
        hide_password=False)


def pg(url: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements on `url` (autocommit); the last one's rows."""
    rows: list[tuple[Any, ...]] = []
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        for sql in statements:
            cur = conn.execute(sql)  # type: ignore[call-overload]
            rows = cur.fetchall() if cur.description else []
    return rows


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mysql(mysql_db_url: str) -> sa.URL:
    return sa.engine.make_url(mysql_db_url)


@pytest.fixture
def source(mysql: sa.URL) -> Iterator[sa.Engine]:
    """The legacy table, rebuilt for each test: ROWS rows, all with a cursor value."""
    engine = sa.create_engine(mysql, connect_args={"charset": "utf8mb4"}, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS plan_src")
        conn.exec_driver_sql(MY_DDL)
        conn.exec_driver_sql("INSERT INTO plan_src VALUES (%s, %s, %s)", [
            (f"P{i:03}", f"年金计划 {i}", f"2024-05-01 12:00:{i:02}") for i in range(ROWS)])
    yield engine
    engine.dispose()


@pytest.fixture
def warehouse(pg_url: str) -> str:
    pg(pg_url, PG_DDL)
    return pg_url


def section(tmp_path: Path, **plan_options: Any) -> dict[str, Any]:
    lines = tmp_path / "product_lines.yml"
    lines.write_text('schema_version: "1.0"\ndata:\n'
                     '  - {产品线代码: "PL01", 产品线名称: "企业年金"}\n'
                     '  - {产品线代码: "PL02", 产品线名称: "职业年金"}\n', encoding="utf-8")
    return {
        "timezone": "Asia/Shanghai",
        "defaults": {"retry": {"attempts": 0, "backoff": [0]}},
        "tables": [
            {"name": PLAN, "target_table": PLAN, "target_schema": "business",
             "source_type": "legacy_mysql",
             "source_config": {
                 "table": "plan_src",
                 "columns": [{"source": "code", "target": "计划代码"},
                             {"source": "name", "target": "计划名称"},
                             {"source": "updated_at", "target": "更新时间"}],
                 "incremental": {"updated_at_column": "updated_at"}},
             "sync_mode": "upsert", "primary_key": "计划代码", **plan_options},
            {"name": LINES, "target_table": "ref_product_line", "target_schema": "business",
             "source_type": "config_file",
             "source_config": {"file_path": str(lines), "schema_version": "1.0"},
             "sync_mode": "delete_insert", "primary_key": "产品线代码"},
        ]}


def write_config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "data_sources.yml"
    path.write_text(yaml.safe_dump({"reference_sync": doc}, allow_unicode=True),
                    encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, section(tmp_path))


class Cli:
    """`refsync ...` in-process, as cron runs it: the target and the MySQL settings from the
    environment, JSON logs."""

    def __init__(self, url: str, mysql: sa.URL, config: Path) -> None:
        self.env: dict[str, str | None] = {
            "WDH_DATABASE_URL": url, "WDH_LEGACY_MYSQL_HOST": mysql.host,
            "WDH_LEGACY_MYSQL_PORT": str(mysql.port or 3306),
            "WDH_LEGACY_MYSQL_USER": mysql.username,
            "WDH_LEGACY_MYSQL_PASSWORD": mysql.password or "",
            "WDH_LEGACY_MYSQL_DATABASE": mysql.database, "WDH_REFERENCE_SYNC_PING_URL": None,
            "WDH_REFERENCE_SYNC_CONFIG": None, "WDH_REFERENCE_SYNC_METRICS_FILE": None,
            "WDH_REFERENCE_SYNC_MAX_RUN_TIME": None, "WDH_REFERENCE_SYNC_ENABLED": None}
        self.config = config

    def __call__(self, *args: str, **env: str | None) -> tuple[int, dict[str, Any], str]:
        """(exit code, the --json document, stderr)."""
        argv = [*args, "-c", str(self.config), "--json", "--log-format", "json"]
        result = CliRunner().invoke(app, argv, env={**self.env, **env})
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result.exit_code, json.loads(result.stdout), result.stderr


@pytest.fixture
def cli(warehouse: str, mysql: sa.URL, source: sa.Engine, config: Path) -> Cli:
    return Cli(warehouse, mysql, config)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prom(path: Path) -> dict[str, float]:
    """The textfile's samples: {series: value}."""
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in path.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")}


def up(table: str) -> str:
    return f'refsync_up{{table="{table}"}}'


READ_ONLY_HINT = (
    "sync and plan stage rows in temporary tables: they need a session that may write (the "
    "primary server, default_transaction_read_only off) and TEMP on the database; plan "
    "changes nothing else. verify and status work read-only")
RUN_EXIT = "refsync_run_last_exit_code"
RUN_AT = "refsync_run_last_timestamp_seconds"
RUN_OK_AT = "refsync_run_last_success_timestamp_seconds"


# ---------------------------------------------------------------- metrics on every run


@pytest.fixture
def metrics(cli: Cli, tmp_path: Path) -> tuple[Path, dict[str, float]]:
    """A textfile after one successful sync of both tables: (its path, its samples)."""
    path = tmp_path / "metrics" / "refsync.prom"
    path.parent.mkdir()
    code, doc, err = cli("sync", "--metrics-file", str(path))
    assert code == 0, (doc, err)
    first = prom(path)
    assert (first[up(PLAN)], first[up(LINES)], first[RUN_EXIT]) == (1, 1, 0)
    assert first[RUN_OK_AT] == first[RUN_AT] > 0
    return path, first


def assert_stopped(path: Path, before: dict[str, float], exit_code: int, down: list[str],
                   *, reached: bool = False) -> None:
    """The file after a failed run: the tables in `down` at `refsync_up 0` (their other lines
    as before, unless the run `reached` them), every other table's lines as before, the
    run-level series telling the exit code and a newer time, the last success kept."""
    after = prom(path)
    assert {k: after[k] for k in (RUN_EXIT, RUN_OK_AT)} == {
        RUN_EXIT: exit_code, RUN_OK_AT: before[RUN_OK_AT]}
    assert after[RUN_AT] > before[RUN_AT]
    assert {t: after[up(t)] for t in (PLAN, LINES)} == {
        t: 0 if t in down else 1 for t in (PLAN, LINES)}
    changed = {k for k in before.keys() | after.keys() if after.get(k) != before.get(k)}
    of_down = {k for k in changed if any(f'table="{t}"' in k for t in down)}
    assert changed - of_down == {RUN_EXIT, RUN_AT}
    if not reached:
        assert of_down == {up(t) for t in down}
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temp file left"


def test_metrics_say_so_when_the_config_cannot_be_read(
        cli: Cli, metrics: tuple[Path, dict[str, float]], config: Path) -> None:
    path, before = metrics
    config.write_text(config.read_text(encoding="utf-8") + "  primary_keys: x\n",
                      encoding="utf-8")
    code, doc, _ = cli("sync", "--metrics-file", str(path))
    assert (code, doc["error_class"]) == (2, "config")
    assert_stopped(path, before, 2, down=[PLAN, LINES])


def test_metrics_say_so_when_the_target_is_unreachable(
        cli: Cli, metrics: tuple[Path, dict[str, float]]) -> None:
    path, before = metrics
    url = f"postgresql://root@127.0.0.1:{closed_port()}/db?connect_timeout=2"
    code, doc, _ = cli("sync", "--metrics-file", str(path), WDH_DATABASE_URL=url)
    assert (code, doc["error_class"]) == (1, "connection")
    assert_stopped(path, before, 1, down=[PLAN, LINES])


def test_metrics_say_so_when_another_run_holds_the_lock(
        cli: Cli, metrics: tuple[Path, dict[str, float]], warehouse: str) -> None:
    path, before = metrics
    with psycopg.connect(libpq(warehouse), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        # the setting names the file as the option does; only the table asked for goes down
        code, doc, _ = cli("sync", "-t", PLAN, WDH_REFERENCE_SYNC_METRICS_FILE=str(path))
    assert (code, doc["error_class"]) == (3, "locked")
    assert_stopped(path, before, 3, down=[PLAN])


def test_metrics_say_so_when_the_run_passes_its_deadline(
        cli: Cli, metrics: tuple[Path, dict[str, float]]) -> None:
    path, before = metrics
    code, doc, _ = cli("sync", "--metrics-file", str(path),
                       WDH_REFERENCE_SYNC_MAX_RUN_TIME="0.001s")
    assert code == 1
    assert {t["error_class"] for t in doc["tables"]} == {"timeout"}
    assert_stopped(path, before, 1, down=[PLAN, LINES], reached=True)


def test_a_successful_run_after_a_failed_one_moves_the_last_success(
        cli: Cli, metrics: tuple[Path, dict[str, float]]) -> None:
    path, before = metrics
    url = f"postgresql://root@127.0.0.1:{closed_port()}/db?connect_timeout=2"
    assert cli("sync", "--metrics-file", str(path), WDH_DATABASE_URL=url)[0] == 1
    assert cli("sync", "--metrics-file", str(path))[0] == 0
    after = prom(path)
    assert (after[RUN_EXIT], after[up(PLAN)], after[up(LINES)]) == (0, 1, 1)
    assert after[RUN_OK_AT] == after[RUN_AT] > before[RUN_OK_AT]


# ---------------------------------------------------------------- least privilege


@pytest.fixture
def dml_role(warehouse: str, cli: Cli) -> Iterator[str]:
    """The target URL for a role that may only use its schemas, read and write their rows and
    create temporary tables: no CREATE on the database, owner of nothing. The owner (the
    superuser) has run `init-db` first."""
    code, doc, err = cli("init-db")
    assert code == 0, (doc, err)
    role = f"refsync_dml_{uuid.uuid4().hex[:8]}"
    database = sa.engine.make_url(warehouse).database
    pg(warehouse, f'CREATE ROLE "{role}" LOGIN NOSUPERUSER',
       f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC',
       f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO "{role}"',
       f'GRANT USAGE ON SCHEMA business, refsync TO "{role}"',
       f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA business, refsync '
       f'TO "{role}"')
    try:
        assert pg(warehouse, f"SELECT has_database_privilege('{role}', '{database}', 'CREATE'),"
                             f" has_schema_privilege('{role}', 'refsync', 'CREATE')") == [
            (False, False)]
        yield libpq(warehouse, username=role)
    finally:
        pg(warehouse, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


def test_a_role_with_only_dml_and_temp_runs_every_command(cli: Cli, dml_role: str) -> None:
    for command, want in ((["sync"], 0), (["sync"], 0), (["plan"], 0), (["verify"], 0),
                          (["status"], 0)):
        code, doc, err = cli(*command, WDH_DATABASE_URL=dml_role)
        assert code == want, (command, doc, err)
    assert doc["tables"][0]["name"] == PLAN
    assert doc["tables"][0]["last_status"] == "unchanged"
    assert doc["tables"][0]["inserted"] == 0


def test_state_tables_from_an_older_release_name_who_can_upgrade_them(
        cli: Cli, dml_role: str, warehouse: str) -> None:
    pg(warehouse, "ALTER TABLE refsync.sync_state DROP COLUMN last_full_at")
    code, doc, _ = cli("status", "--no-fail", WDH_DATABASE_URL=dml_role)
    assert (code, doc["tables"][0]["last_full_read"]) == (0, None)
    code, doc, _ = cli("sync", WDH_DATABASE_URL=dml_role)
    assert (code, doc["error_class"]) == (1, "query")
    assert doc["error"].startswith("the state tables need an upgrade this role may not make: "
                                   "could not add the column last_full_at to "
                                   "refsync.sync_state (must be owner of table sync_state)")
    assert doc["hint"].startswith("run `refsync init-db` once as the owner")
    assert cli("init-db")[0] == 0  # the owner upgrades them
    code, doc, err = cli("sync", WDH_DATABASE_URL=dml_role)
    assert code == 0, (doc, err)
    assert [t["inserted"] for t in doc["tables"]] == [ROWS, 2]


# ---------------------------------------------------------------- a read-only role


@pytest.fixture
def read_only_role(warehouse: str, cli: Cli) -> Iterator[str]:
    """A role whose sessions are read-only (`default_transaction_read_only`), with SELECT on
    the target and state tables and TEMP on the database."""
    code, doc, err = cli("sync")
    assert code == 0, (doc, err)
    role = f"refsync_ro_{uuid.uuid4().hex[:8]}"
    database = sa.engine.make_url(warehouse).database
    pg(warehouse, f'CREATE ROLE "{role}" LOGIN NOSUPERUSER',
       f'ALTER ROLE "{role}" SET default_transaction_read_only = on',
       f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO "{role}"',
       f'GRANT USAGE ON SCHEMA business, refsync TO "{role}"',
       f'GRANT SELECT ON ALL TABLES IN SCHEMA business, refsync TO "{role}"')
    try:
        yield libpq(warehouse, username=role)
    finally:
        pg(warehouse, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


def test_plan_on_a_read_only_role_says_what_it_needs(cli: Cli, read_only_role: str,
                                                     warehouse: str) -> None:
    code, doc, _ = cli("plan", WDH_DATABASE_URL=read_only_role)
    assert code == 1
    for table in doc["tables"]:
        assert (table["status"], table["error_class"]) == ("failed", "query")
        assert table["error"].endswith(
            "(writing): the target session is read-only (a standby, or "
            "default_transaction_read_only=on) (25006 cannot execute DROP TABLE in a "
            "read-only transaction)"), table["error"]
        assert table["hint"] == READ_ONLY_HINT
    role = sa.engine.make_url(read_only_role).username
    pg(warehouse, f'ALTER ROLE "{role}" RESET default_transaction_read_only')
    code, doc, err = cli("plan", WDH_DATABASE_URL=read_only_role)  # SELECT and TEMP: enough
    assert code == 0, (doc, err)
    assert [t["status"] for t in doc["tables"]] == ["unchanged", "unchanged"]


def test_verify_and_status_work_on_a_read_only_role(cli: Cli, read_only_role: str) -> None:
    code, doc, err = cli("verify", WDH_DATABASE_URL=read_only_role)
    assert code == 0, (doc, err)
    assert [(t["name"], t["status"]) for t in doc["tables"]] == [
        (PLAN, "in_step"), (LINES, "unsupported")]
    code, doc, err = cli("status", WDH_DATABASE_URL=read_only_role)
    assert code == 0, (doc, err)
    assert [t["last_status"] for t in doc["tables"]] == ["ok", "ok"]


# ---------------------------------------------------------------- full_every


def events(stderr: str, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def last_full_read(cli: Cli) -> str | None:
    code, doc, _ = cli("status", "-t", PLAN)
    assert code == 0, doc
    value = doc["tables"][0]["last_full_read"]
    assert value is None or isinstance(value, str)
    return value


def test_full_every_reads_the_rows_an_incremental_run_cannot_see(
        warehouse: str, mysql: sa.URL, source: sa.Engine, tmp_path: Path) -> None:
    cli = Cli(warehouse, mysql, write_config(tmp_path, section(tmp_path, full_every="7d")))
    code, doc, err = cli("sync", "-t", PLAN)
    assert (code, doc["tables"][0]["inserted"]) == (0, ROWS), err
    first_full = last_full_read(cli)
    assert first_full is not None and first_full.endswith("+08:00")
    with source.begin() as conn:  # a row no incremental read can see
        conn.exec_driver_sql("INSERT INTO plan_src VALUES ('P900', '迟到的计划', NULL)")

    code, doc, err = cli("sync", "-t", PLAN)  # the last full read is fresh: incremental
    table = doc["tables"][0]
    assert (code, table["inserted"], table["null_cursor_rows"]) == (0, 0, 1), err
    assert events(err, "full_every") == []
    assert last_full_read(cli) == first_full

    pg(warehouse, "UPDATE refsync.sync_state SET last_full_at = last_full_at - interval '8 days'"
                  f" WHERE table_name = '{PLAN}'")
    code, doc, err = cli("plan", "-t", PLAN)  # a plan shows what the due full read would do
    assert (code, doc["tables"][0]["inserted"]) == (0, 1), err
    code, doc, err = cli("sync", "-t", PLAN)
    table = doc["tables"][0]
    assert (code, table["inserted"], table["unchanged"]) == (0, 1, ROWS), err
    assert "null_cursor_rows" not in table, "a full read sees every row"
    [why] = events(err, "full_every")
    assert (why["level"], why["table"]) == ("INFO", PLAN)
    assert why["msg"].startswith(f"{PLAN}: reading every row this run (full_every 7d: last "
                                 "full read ")
    assert pg(warehouse, 'SELECT "计划名称" FROM business."年金计划" WHERE "计划代码" = '
                         "'P900'") == [("迟到的计划",)]
    moved = last_full_read(cli)
    assert moved is not None and datetime.fromisoformat(moved) > datetime.fromisoformat(first_full)

    code, doc, err = cli("sync", "-t", PLAN)  # due again only in a week
    assert (code, doc["tables"][0]["null_cursor_rows"]) == (0, 1), err
    assert last_full_read(cli) == moved


# ---------------------------------------------------------------- verify's metrics


def test_verify_adds_its_result_to_the_metrics_and_a_sync_keeps_it(
        cli: Cli, metrics: tuple[Path, dict[str, float]], warehouse: str,
        source: sa.Engine) -> None:
    path, synced = metrics
    with source.begin() as conn:  # one row changed, one new, one extra: 3 rows out of step
        conn.exec_driver_sql("UPDATE plan_src SET name = '改名' WHERE code = 'P001'")
        conn.exec_driver_sql("INSERT INTO plan_src VALUES ('P777', '新计划', NULL)")
    pg(warehouse, """INSERT INTO business."年金计划" ("计划代码", "计划名称") VALUES ('X1', 'x')""")
    code, doc, err = cli("verify", "--metrics-file", str(path))
    assert code == 1, (doc, err)
    after = prom(path)
    assert {k: v for k, v in after.items() if k.startswith("refsync_verify_")} == {
        f'refsync_verify_differing_rows{{table="{PLAN}"}}': 3,
        "refsync_verify_last_exit_code": 1,
        "refsync_verify_last_timestamp_seconds": after["refsync_verify_last_timestamp_seconds"]}
    assert after["refsync_verify_last_timestamp_seconds"] >= synced[RUN_AT]
    assert {k: v for k, v in after.items() if not k.startswith("refsync_verify_")} == synced
    text = path.read_text(encoding="utf-8")
    assert text.count("# TYPE refsync_verify_differing_rows gauge") == 1

    code, doc, err = cli("sync", "--full", "--metrics-file", str(path))
    assert code == 0, (doc, err)
    pg(warehouse, """DELETE FROM business."年金计划" WHERE "计划代码" = 'X1'""")
    resynced = prom(path)
    assert {k: v for k, v in resynced.items() if k.startswith("refsync_verify_")} == {
        k: v for k, v in after.items() if k.startswith("refsync_verify_")}
    assert cli("verify", "-t", PLAN, "--metrics-file", str(path))[0] == 0
    assert prom(path)[f'refsync_verify_differing_rows{{table="{PLAN}"}}'] == 0
