"""The legacy MySQL side, on the real MariaDB: a refused login is class `auth` (not retried,
hint naming the settings, DESIGN 4.7), and a column whose name holds a backtick and a double
quote is synced, digested and verified like any other (DESIGN 4.5: any identifier is quoted).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from refsync.cli import app

pytestmark = pytest.mark.integration

ODD = 'a`b"c'  # a backtick and a double quote
ODD_KEY = "k`ey"
ODD_CURSOR = 'up"d`at'
TRACKING_DDL = ('"_source" varchar(20) NOT NULL DEFAULT \'authoritative\', '
                '"_needs_review" boolean NOT NULL DEFAULT false, '
                '"_derived_from_domain" varchar(50), "_derived_at" timestamptz')


def mq(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def pq(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.fixture(scope="module")
def source(mysql_db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(mysql_db_url, connect_args={"charset": "utf8mb4"},
                              poolclass=sa.NullPool)
    yield engine
    engine.dispose()


def write_config(tmp_path: Path, table: dict[str, Any]) -> Path:
    doc = {"reference_sync": {"defaults": {"retry": {"attempts": 2, "backoff": [0.1]}},
                              "tables": [table]}}
    path = tmp_path / "data_sources.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def run_cli(args: list[str], env: dict[str, str | None]) -> tuple[int, dict[str, Any], str]:
    base: dict[str, str | None] = {"WDH_REFERENCE_SYNC_PING_URL": None,
                                   "WDH_REFERENCE_SYNC_CONFIG": None,
                                   "WDH_REFERENCE_SYNC_METRICS_FILE": None,
                                   "WDH_LEGACY_MYSQL_SSL_CA": None}
    result = CliRunner().invoke(app, [*args, "--json", "--log-format", "json"],
                                env={**base, **env})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, json.loads(result.stdout), result.stderr


def pg_execute(pg_url: str, sql: str) -> None:
    conninfo = sa.engine.make_url(pg_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[call-overload]  # a fixed statement


def mysql_env(url: sa.URL, pg_url: str, **changes: str) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "WDH_DATABASE_URL": pg_url, "WDH_LEGACY_MYSQL_HOST": url.host,
        "WDH_LEGACY_MYSQL_PORT": str(url.port or 3306), "WDH_LEGACY_MYSQL_USER": url.username,
        "WDH_LEGACY_MYSQL_PASSWORD": url.password or "",
        "WDH_LEGACY_MYSQL_DATABASE": url.database}
    env.update(changes)
    return env


# ---------------------------------------------------------------- a refused login


@pytest.fixture
def throwaway_user(source: sa.Engine, mysql_db_url: str) -> Iterator[sa.URL]:
    """A MariaDB user with a known password and SELECT on the module's database."""
    name = f"refsync_u_{uuid.uuid4().hex[:8]}"
    url = sa.engine.make_url(mysql_db_url)
    with source.begin() as conn:
        conn.exec_driver_sql(f"CREATE USER '{name}'@'%%' IDENTIFIED BY 'Right-Pass-4711'")
        conn.exec_driver_sql(f"GRANT SELECT ON {mq(url.database or '')}.* TO '{name}'@'%%'")
    try:
        yield url.set(username=name, password="Right-Pass-4711")
    finally:
        with source.begin() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{name}'@'%%'")


def test_a_wrong_mysql_password_is_class_auth_tried_once(
        throwaway_user: sa.URL, pg_url: str, tmp_path: Path, source: sa.Engine) -> None:
    with source.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS plain (id INT PRIMARY KEY)")
    config = write_config(tmp_path, {
        "name": "plain", "target_table": "plain", "source_type": "legacy_mysql",
        "source_config": {"table": "plain", "columns": [{"source": "id", "target": "id"}]},
        "primary_key": "id"})
    pg_execute(pg_url, f"CREATE TABLE public.plain (id integer PRIMARY KEY, {TRACKING_DDL})")
    env = mysql_env(throwaway_user, pg_url, WDH_LEGACY_MYSQL_PASSWORD="Wrong-Pass-0815")
    assert run_cli(["init-db", "-c", str(config)], env)[0] == 0
    code, doc, err = run_cli(["sync", "-c", str(config)], env)
    assert code == 1, (doc, err)
    [table] = doc["tables"]
    assert (table["status"], table["error_class"], table["attempts"]) == ("failed", "auth", 1)
    assert f"{throwaway_user.username}@" in table["error"] and "1045" in table["error"]
    assert "WDH_LEGACY_MYSQL_USER" in table["hint"]
    assert "WDH_LEGACY_MYSQL_PASSWORD" in table["hint"]
    assert "Wrong-Pass-0815" not in json.dumps(doc) + err
    assert '"event":"retry"' not in err.replace(" ", "")


# ---------------------------------------------------------------- a backtick in a column name


def test_a_column_named_with_a_backtick_and_a_quote_syncs(
        source: sa.Engine, pg_url: str, mysql_db_url: str, tmp_path: Path) -> None:
    with source.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE odd ({mq(ODD_KEY)} VARCHAR(10) PRIMARY KEY, {mq(ODD)} VARCHAR(20), "
            f"{mq(ODD_CURSOR)} DATETIME NOT NULL) CHARACTER SET utf8mb4")
        conn.exec_driver_sql("INSERT INTO odd VALUES ('1', 'x`y', '2024-01-01'), "
                             "('2', 'q\"r', '2024-01-02')")
    with psycopg.connect(sa.engine.make_url(pg_url).set(drivername="postgresql")
                         .render_as_string(hide_password=False), autocommit=True) as pg:
        pg.execute(f"CREATE TABLE public.odd ({pq(ODD_KEY)} varchar(10) PRIMARY KEY, "  # type: ignore[call-overload]
                   f"{pq(ODD)} varchar(20), {TRACKING_DDL})")
        config = write_config(tmp_path, {
            "name": "odd", "target_table": "odd", "source_type": "legacy_mysql",
            "source_config": {"table": "odd", "columns": [
                {"source": ODD_KEY, "target": ODD_KEY}, {"source": ODD, "target": ODD}],
                "incremental": {"updated_at_column": ODD_CURSOR}},
            "primary_key": ODD_KEY})
        env = mysql_env(sa.engine.make_url(mysql_db_url), pg_url)
        assert run_cli(["init-db", "-c", str(config)], env)[0] == 0
        code, doc, err = run_cli(["sync", "-c", str(config)], env)
        assert (code, doc["tables"][0]["status"], doc["tables"][0]["inserted"]) == (0, "ok", 2), \
            (doc, err)
        with source.begin() as conn:
            conn.exec_driver_sql(f"UPDATE odd SET {mq(ODD)} = 'changed', "
                                 f"{mq(ODD_CURSOR)} = '2024-02-01' WHERE {mq(ODD_KEY)} = '2'")
        code, doc, err = run_cli(["sync", "-c", str(config)], env)
        assert (code, doc["tables"][0]["updated"]) == (0, 1), (doc, err)
        code, doc, err = run_cli(["sync", "--full", "-c", str(config)], env)
        assert (code, doc["tables"][0]["status"]) == (0, "unchanged"), (doc, err)
        code, doc, err = run_cli(["verify", "-c", str(config)], env)
        assert (code, doc["tables"][0]["status"]) == (0, "in_step"), (doc, err)
        rows = pg.execute(f"SELECT {pq(ODD_KEY)}, {pq(ODD)} FROM public.odd "  # type: ignore[call-overload]
                          f"ORDER BY 1").fetchall()
    assert rows == [("1", "x`y"), ("2", "changed")]
