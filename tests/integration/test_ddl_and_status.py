"""The operator's side of the databases, on the real servers.

`init-db --create-tables` makes the tables `deploy/sql/reference_tables.sql` makes (types,
nullability, defaults, keys, `ix_*` indexes), created columns copy the source's nullability
with no default or sequence of their own; `status --json` gives times in the configured zone;
the PostgreSQL role and the SELECT-only MySQL user deploy/README.md sets up are enough."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from refsync import demo_data
from refsync.cli import app

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict[str, str]) -> Any:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _catalog(url: str, schema: str) -> dict[str, Any]:
    """What a table definition decides, as PostgreSQL's catalog says it."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            columns = conn.execute(sa.text(
                "SELECT table_name, column_name, ordinal_position, data_type, "
                "character_maximum_length, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = :s "
                "ORDER BY table_name, ordinal_position"), {"s": schema}).all()
            indexes = conn.execute(sa.text(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = :s "
                "ORDER BY indexname"), {"s": schema}).all()
            sequences = conn.execute(sa.text(
                "SELECT count(*) FROM information_schema.sequences WHERE sequence_schema = :s"),
                {"s": schema}).scalar_one()
    finally:
        engine.dispose()
    return {"columns": [tuple(r) for r in columns], "indexes": [tuple(r) for r in indexes],
            "sequences": sequences}


def _execute(url: str, sql: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


@pytest.fixture
def seed_project(tmp_path: Path) -> Iterator[Path]:
    demo_data.build_legacy_sqlite(tmp_path / "legacy.sqlite", rows=10)
    demo_data.write_product_lines(tmp_path / "product_lines.yml")
    config = tmp_path / "data_sources.yml"
    config.write_text(demo_data.demo_config_text(f"sqlite:///{tmp_path / 'legacy.sqlite'}",
                                                 str(tmp_path / "product_lines.yml")),
                      encoding="utf-8")
    yield config


def test_create_tables_makes_what_the_deploy_sql_file_makes(pg_url: str,
                                                            seed_project: Path) -> None:
    _execute(pg_url, (ROOT / "deploy/sql/reference_tables.sql").read_text(encoding="utf-8"))
    from_file = _catalog(pg_url, "business")
    _execute(pg_url, "DROP SCHEMA business CASCADE")
    result = _cli("init-db", "--create-tables", "-c", str(seed_project),
                  env={"WDH_DATABASE_URL": pg_url})
    assert "business.产品线: created (2 columns + 4 tracking columns)" in result.output
    created = _catalog(pg_url, "business")
    assert created == from_file
    columns = {(t, c): (typ, n, null) for t, c, _, typ, n, null, _ in created["columns"]}
    assert columns["产品线", "产品线代码"] == ("character varying", 20, "NO")
    assert columns["产品线", "产品线名称"] == ("character varying", 100, "YES")
    assert {name for _, name, _ in created["indexes"]} >= {
        "ix_组合计划_年金计划号", "ix_年金计划_needs_review", "ix_产品线_needs_review"}
    # run again: the file only adds what is missing, --create-tables leaves tables alone
    _execute(pg_url, (ROOT / "deploy/sql/reference_tables.sql").read_text(encoding="utf-8"))
    assert _catalog(pg_url, "business") == created


def _source(kind: str, tmp_path: Path, mysql_url: str | None) -> str:
    ddl = ("CREATE TABLE src (id INTEGER NOT NULL PRIMARY KEY, code VARCHAR(10) NOT NULL, "
           "note VARCHAR(30))")
    if kind == "sqlite":
        with sqlite3.connect(tmp_path / "src.sqlite") as conn:
            conn.execute(ddl)
        conn.close()
        return f"sqlite:///{tmp_path / 'src.sqlite'}"
    assert mysql_url is not None
    engine = sa.create_engine(mysql_url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS src")
            conn.exec_driver_sql(ddl.replace("INTEGER NOT NULL PRIMARY KEY",
                                             "INT NOT NULL AUTO_INCREMENT PRIMARY KEY"))
    finally:
        engine.dispose()
    return mysql_url


@pytest.mark.parametrize("kind", [pytest.param("sqlite", id="sqlite-source"),
                                  pytest.param("mysql", id="mariadb-source")])
def test_created_columns_copy_nullability_and_get_no_default_or_sequence(
        kind: str, pg_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """An integer key never becomes a serial (`DEFAULT nextval`), not even from an
    AUTO_INCREMENT source; a NOT NULL source column stays NOT NULL."""
    mysql_url = request.getfixturevalue("mysql_db_url") if kind == "mysql" else None
    url = _source(kind, tmp_path, mysql_url)
    schema = f"ddl_{uuid.uuid4().hex[:8]}"
    config = tmp_path / "c.yml"
    config.write_text(f"""\
reference_sync:
  tables:
    - name: src
      target_table: dst
      target_schema: {schema}
      source_type: sql
      source_config:
        url: "{url}"
        table: src
        columns: [{{source: id, target: id}}, {{source: code, target: code}},
                  {{source: note, target: note}}]
      primary_key: id
""", encoding="utf-8")
    _cli("init-db", "--create-tables", "-c", str(config), env={"WDH_DATABASE_URL": pg_url})
    created = _catalog(pg_url, schema)
    mapped = [(c, typ, null, default) for _, c, _, typ, _, null, default in created["columns"]
              if not c.startswith("_")]
    assert mapped == [("id", "integer", "NO", None), ("code", "character varying", "NO", None),
                      ("note", "character varying", "YES", None)]
    assert created["sequences"] == 0


def test_status_json_times_carry_the_configured_zones_offset(pg_url: str,
                                                             tmp_path: Path) -> None:
    """PostgreSQL hands timestamptz back in the session's zone (UTC here): status gives them
    in the configured zone, as its table does."""
    (tmp_path / "lines.yml").write_text(
        'schema_version: "1.0"\ndata:\n  - {code: PL01, name: 企业年金}\n', encoding="utf-8")
    config = tmp_path / "c.yml"
    config.write_text(f"""\
reference_sync:
  timezone: Asia/Shanghai
  tables:
    - name: lines
      target_table: lines
      target_schema: zone_{uuid.uuid4().hex[:8]}
      source_type: config_file
      source_config: {{file_path: "{tmp_path / 'lines.yml'}", schema_version: "1.0"}}
      sync_mode: delete_insert
      primary_key: code
""", encoding="utf-8")
    env = {"WDH_DATABASE_URL": pg_url, "PGTZ": "UTC"}
    _cli("init-db", "--create-tables", "-c", str(config), env=env)
    _cli("sync", "-c", str(config), env=env)
    doc = json.loads(_cli("status", "--json", "-c", str(config), env=env).stdout)
    (table,) = doc["tables"]
    times = [table[k] for k in ("last_started_at", "last_finished_at", "last_success_at")]
    times += [run[k] for run in doc["runs"] for k in ("started_at", "finished_at")]
    assert len(times) == 5 and all(t.endswith("+08:00") for t in times), times


# ---------------------------------------------------------------- the database side of the guide


def _libpq(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)


def test_the_guides_postgres_role_can_init_sync_and_read_status(pg_url: str,
                                                                tmp_path: Path) -> None:
    """deploy/sql/postgres-role.sql as deploy/README.md runs it, then refsync as that role,
    its password (with `@`, `/`, `:` and `%`) percent-encoded in WDH_DATABASE_URL."""
    role = f"refsync_t_{uuid.uuid4().hex[:8]}"
    password = "p@ss/w:rd%1"
    psql = subprocess.run(
        ["psql", _libpq(pg_url), "-v", "ON_ERROR_STOP=1", "-v", f"role={role}",
         "-v", f"password={password}", "-v", "schema=business",
         "-f", str(ROOT / "deploy/sql/postgres-role.sql")],
        capture_output=True, text=True, timeout=60, check=False)
    try:
        assert psql.returncode == 0, psql.stderr
        url = sa.engine.make_url(pg_url)
        as_role = (f"postgresql://{role}:{quote(password, safe='')}@{url.host}:{url.port or 5432}"
                   f"/{url.database}")
        assert "p%40ss%2Fw%3Ard%251" in as_role
        (tmp_path / "lines.yml").write_text(
            'schema_version: "1.0"\ndata:\n  - {code: PL01, name: 企业年金}\n', encoding="utf-8")
        config = tmp_path / "c.yml"
        config.write_text(f"""\
reference_sync:
  tables:
    - name: lines
      target_table: lines
      target_schema: business
      source_type: config_file
      source_config: {{file_path: "{tmp_path / 'lines.yml'}", schema_version: "1.0"}}
      sync_mode: delete_insert
      primary_key: code
""", encoding="utf-8")
        env = {"WDH_DATABASE_URL": as_role}
        _cli("init-db", "--create-tables", "-c", str(config), env=env)
        _cli("sync", "-c", str(config), env=env)
        doc = json.loads(_cli("status", "--json", "-c", str(config), env=env).stdout)
        assert doc["tables"][0]["last_status"] == "ok"
    finally:
        _execute(pg_url, f'DROP OWNED BY "{role}"; DROP ROLE IF EXISTS "{role}"')


def test_a_select_only_mysql_user_is_enough(mysql_db_url: str, pg_url: str,
                                            tmp_path: Path) -> None:
    """deploy/README.md's legacy MySQL grant: SELECT on the legacy database and nothing else."""
    url = sa.engine.make_url(mysql_db_url)
    user, password = f"rs_ro_{uuid.uuid4().hex[:8]}", "r0@only"
    admin = sa.create_engine(mysql_db_url, poolclass=sa.NullPool)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE plan (code VARCHAR(20) NOT NULL PRIMARY KEY, "
                                 "name VARCHAR(50), updated_at DATETIME NOT NULL)")
            conn.exec_driver_sql("INSERT INTO plan VALUES ('P1', '计划一', NOW()), "
                                 "('P2', '计划二', NOW())")
            conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY '{password}'")
            conn.exec_driver_sql(f"GRANT SELECT ON `{url.database}`.* TO '{user}'@'%%'")
        config = tmp_path / "c.yml"
        config.write_text("""\
reference_sync:
  tables:
    - name: plan
      target_table: plan
      target_schema: business
      source_type: legacy_mysql
      source_config:
        table: plan
        columns: [{source: code, target: code}, {source: name, target: name}]
        incremental: {updated_at_column: updated_at}
      primary_key: code
""", encoding="utf-8")
        env = {"WDH_DATABASE_URL": pg_url, "WDH_LEGACY_MYSQL_HOST": str(url.host),
               "WDH_LEGACY_MYSQL_PORT": str(url.port or 3306),
               "WDH_LEGACY_MYSQL_USER": user, "WDH_LEGACY_MYSQL_PASSWORD": password,
               "WDH_LEGACY_MYSQL_DATABASE": str(url.database)}
        _cli("init-db", "--create-tables", "-c", str(config), env=env)
        for args in (("sync",), ("sync", "--full"), ("verify",)):
            doc = json.loads(_cli(*args, "--json", "-c", str(config), env=env).stdout)
            assert doc["exit_code"] == 0, doc
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        admin.dispose()
