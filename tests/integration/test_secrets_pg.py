"""No secret in any output, on the real PostgreSQL (DESIGN 4.5), and a lock held by another
role ends a run with exit 3 (its session shows NULLs to a non-superuser).

The shared server trusts local connections, so a password given in the URL's query is
accepted and ignored: a whole run (sync, plan, init-db, status, verify) goes through with it,
and neither stdout, the JSON log nor the state tables may carry it.
"""

from __future__ import annotations

import json
import socket
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
from refsync.targets.lock import LOCK_KEY

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PRODUCT_LINES = REPO / "config" / "reference_data" / "product_lines.yml"
SECRET = "S3cret-Query-4711"


def libpq(url: str, **changes: Any) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql", **changes).render_as_string(
        hide_password=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    doc = {"reference_sync": {
        "defaults": {"retry": {"attempts": 0, "backoff": [0]}},
        "tables": [{
            "name": "产品线", "target_table": "产品线", "target_schema": "public",
            "source_type": "config_file",
            "source_config": {"file_path": str(PRODUCT_LINES), "schema_version": "1.0"},
            "sync_mode": "delete_insert", "primary_key": "产品线代码"}]}}
    path = tmp_path / "data_sources.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def run_cli(args: list[str], url: str) -> tuple[int, str, str]:
    env = {"WDH_DATABASE_URL": url, "WDH_LEGACY_MYSQL_HOST": None,
           "WDH_LEGACY_MYSQL_PASSWORD": None, "WDH_REFERENCE_SYNC_PING_URL": None,
           "WDH_REFERENCE_SYNC_CONFIG": None, "WDH_REFERENCE_SYNC_METRICS_FILE": None}
    result = CliRunner().invoke(app, args, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def state_texts(url: str) -> list[str]:
    with psycopg.connect(libpq(url)) as conn:
        texts = []
        for table in ("refsync.sync_runs", "refsync.sync_state"):
            for row in conn.execute(f"SELECT * FROM {table}"):  # noqa: S608 - fixed names
                texts += [str(v) for v in row]
    return texts


def test_a_password_in_the_url_query_appears_nowhere(pg_url: str, config: Path) -> None:
    url = libpq(pg_url) + f"?password={SECRET}&connect_timeout=5"
    texts: list[str] = []
    for command, want in ((["init-db", "--create-tables"], 0), (["sync"], 0), (["plan"], 0),
                          (["status"], 0), (["verify"], 0)):
        code, out, err = run_cli([*command, "-c", str(config), "--json", "--log-format",
                                  "json", "-v"], url)
        assert code == want, (command, out, err)
        texts += [out, err]
    assert [json.loads(line) for line in texts[3].splitlines()]  # the sync's JSON log
    texts += state_texts(pg_url)
    assert [t for t in texts if SECRET in t] == []


def test_a_libpq_keyword_string_reaches_the_target(pg_url: str, config: Path) -> None:
    url = sa.engine.make_url(pg_url)
    dsn = (f"host={url.host} port={url.port or 5432} user={url.username} "
           f"dbname='{url.database}' password='{SECRET} x'")
    texts: list[str] = []
    for command in (["init-db", "--create-tables"], ["sync"], ["status"]):
        code, out, err = run_cli([*command, "-c", str(config), "--json", "--log-format",
                                  "json"], dsn)
        assert code == 0, (command, out, err)
        texts += [out, err]
    assert json.loads(texts[2])["tables"][0]["inserted"] > 0
    assert [t for t in texts + state_texts(pg_url) if SECRET in t] == []


@pytest.mark.parametrize("command", [["sync"], ["plan"], ["init-db"], ["status"]],
                         ids=lambda c: c[0])
def test_an_unreachable_target_named_without_the_query_password(command: list[str],
                                                                config: Path) -> None:
    port = closed_port()
    url = f"postgresql://u@127.0.0.1:{port}/db?password={SECRET}&connect_timeout=2"
    code, out, err = run_cli([*command, "-c", str(config), "--json", "--log-format", "json"],
                             url)
    doc = json.loads(out)
    assert (code, doc["error_class"]) == (1, "connection"), doc
    assert f"127.0.0.1:{port}/db?" in doc["error"] and "password=***" in doc["error"]
    assert "connect_timeout=2" in doc["error"]
    assert SECRET not in out + err


# ---------------------------------------------------------------- a lock held by another role


@pytest.fixture
def other_role(pg_url: str) -> Iterator[str]:
    """A non-superuser owning the test's database (trust auth: no password)."""
    role = f"refsync_r_{uuid.uuid4().hex[:8]}"
    database = sa.engine.make_url(pg_url).database
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER')  # type: ignore[call-overload]
        conn.execute(f'ALTER DATABASE "{database}" OWNER TO "{role}"')  # type: ignore[call-overload]
        conn.execute(f'ALTER SCHEMA public OWNER TO "{role}"')  # type: ignore[call-overload]
    try:
        yield libpq(pg_url, username=role)
    finally:
        with psycopg.connect(libpq(pg_url, database="postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')  # type: ignore[call-overload]
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')  # type: ignore[call-overload]


def test_a_lock_held_by_another_role_exits_3(pg_url: str, other_role: str,
                                             config: Path) -> None:
    assert run_cli(["init-db", "--create-tables", "-c", str(config)], other_role)[0] == 0
    with psycopg.connect(libpq(pg_url), autocommit=True) as holder:  # a superuser's session
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        pid = holder.info.backend_pid
        code, out, err = run_cli(["sync", "-c", str(config), "--json", "--log-format",
                                  "json"], other_role)
    assert code == 3, (out, err)
    doc = json.loads(out)
    assert (doc["exit_code"], doc["error_class"]) == (3, "locked"), doc
    assert f"held by pid {pid} (a session of another role" in doc["error"], doc
    assert "internal error" not in out + err
