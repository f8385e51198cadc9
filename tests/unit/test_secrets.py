"""No secret in any output, and errors that say what they are (DESIGN 4.5, 2.2a, 3.1, 4.7).

WDH_DATABASE_URL is checked before any connection: a libpq key=value string becomes its URL,
a URL that would be misread is a config error (exit 2) naming the variable and how to encode
a password, and no message repeats the password. Redaction targets the places a password is
written; a short one never masks innocent text. The ping sends `user:password@` as basic
auth and logs only scheme and host. Config errors come all at once.

No database server: the target is a SQLite file or a closed port on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml
from typer.testing import CliRunner

from refsync import alerting
from refsync.cli import app
from refsync.config import load_config
from refsync.database_url import target_url
from refsync.dberrors import classify_db_error
from refsync.errors import AuthFailure, ConfigError
from refsync.logs import SecretRedactor
from refsync.redact import redact_url, scrub, url_secrets
from refsync.targets.postgres import holder_text

REPO = Path(__file__).resolve().parents[2]
PRODUCT_LINES = REPO / "config" / "reference_data" / "product_lines.yml"
SECRET = "S3cret"
COMMANDS = [["sync"], ["plan"], ["init-db"], ["status"], ["verify"]]


# ---------------------------------------------------------------- helpers


@pytest.fixture
def yaml_only_config(tmp_path: Path) -> Path:
    """A config with the product lines YAML table only (no MySQL), no retries."""
    doc = {"reference_sync": {
        "defaults": {"retry": {"attempts": 0, "backoff": [0]}},
        "tables": [{
            "name": "产品线", "target_table": "产品线", "source_type": "config_file",
            "source_config": {"file_path": str(PRODUCT_LINES), "schema_version": "1.0"},
            "sync_mode": "delete_insert", "primary_key": "产品线代码"}]}}
    path = tmp_path / "data_sources.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def run_cli(args: list[str], env: dict[str, str | None]) -> tuple[int, str, str]:
    base: dict[str, str | None] = {
        "WDH_DATABASE_URL": None, "WDH_LEGACY_MYSQL_HOST": None,
        "WDH_LEGACY_MYSQL_PASSWORD": None, "WDH_REFERENCE_SYNC_PING_URL": None,
        "WDH_REFERENCE_SYNC_CONFIG": None, "WDH_REFERENCE_SYNC_METRICS_FILE": None}
    result = CliRunner().invoke(app, args, env={**base, **env})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_error(url: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        target_url(url)
    return info.value


# ---------------------------------------------------------------- WDH_DATABASE_URL


@pytest.mark.parametrize(("url", "want"), [
    pytest.param("postgresql://u@127.0.0.1:5999/db?password=S3cret&connect_timeout=2",
                 "postgresql://u@127.0.0.1:5999/db?password=S3cret&connect_timeout=2",
                 id="password-in-the-query"),
    pytest.param("host=127.0.0.1 user=u password=S3cret dbname=db",
                 "postgresql://u:S3cret@127.0.0.1/db", id="libpq-keywords"),
    pytest.param("host=db.example port=6432 user=u password='p@ss w' dbname=my db "
                 "sslmode=require".replace("my db", "'my db'"),
                 "postgresql://u:p%40ss%20w@db.example:6432/my%20db?sslmode=require",
                 id="libpq-keywords-quoted"),
    pytest.param("host=/var/run/postgresql dbname=db",
                 "postgresql:///db?host=%2Fvar%2Frun%2Fpostgresql", id="libpq-socket"),
    pytest.param("postgresql+psycopg://u:p%40ss@h:5432/db", "postgresql+psycopg://u:p%40ss@h:5432/db",
                 id="encoded-at"),
    pytest.param("sqlite:///warehouse.db", "sqlite:///warehouse.db", id="sqlite"),
])
def test_target_url_accepts_and_converts(url: str, want: str) -> None:
    assert target_url(url) == want


@pytest.mark.parametrize(("url", "says"), [
    pytest.param("postgresql://u:Pg%zzS3cret@127.0.0.1/db", "%25", id="bad-percent-escape"),
    pytest.param("postgresql://u:p@S3cret@127.0.0.1/db", "%40", id="unencoded-at"),
    pytest.param("postgresql://u:S3c#ret@127.0.0.1/db", "%23", id="unencoded-hash"),
    pytest.param("postgresql://u:S3cret@127.0.0.1:notaport/db", "port", id="port-not-a-number"),
    pytest.param("postgresql://u:S3cret@127.0.0.1/db?port=notaport", "port", id="query-port"),
    pytest.param("postgres:/S3cret", "//", id="no-slashes"),
    pytest.param("postgresql+asyncpg://u:S3cret@127.0.0.1/db", "asyncpg", id="asyncpg"),
    pytest.param("mysql://u:S3cret@127.0.0.1/db", "unsupported database 'mysql'", id="mysql"),
    pytest.param("postgresql://u:S3cret@127.0.0.1/db?colour=blue", '"colour"',
                 id="unknown-parameter"),
    pytest.param("host=127.0.0.1 password=S3cret x", "key=value", id="bad-libpq-keywords"),
    pytest.param("host=127.0.0.1 password=S3cret extra", '"…"', id="libpq-quotes-nothing"),
    pytest.param("just text S3cret", "not a URL", id="not-a-url"),
    pytest.param("postgresql://u:S3cret@[::1/db", "host", id="unclosed-ipv6"),
])
def test_bad_target_urls_are_config_errors_without_the_password(url: str, says: str) -> None:
    error = config_error(url)
    shown = f"{error.message}\n{error.hint}"
    assert error.message.startswith("WDH_DATABASE_URL "), shown
    assert says in shown
    assert "%40" in error.hint  # how to encode a password, every time
    assert "S3cret" not in shown and "s3cret" not in shown.lower()
    assert "ret@" not in shown and "zz" not in shown


@pytest.mark.parametrize("url", [
    pytest.param("postgresql://u:Pg%zzS3cret@127.0.0.1:1/db", id="bad-percent-escape"),
    pytest.param("postgresql://u:p@S3cret@127.0.0.1:1/db", id="unencoded-at"),
    pytest.param("postgresql://u:S3cret@127.0.0.1:notaport/db", id="port-not-a-number"),
    pytest.param("postgres:/x?password=S3cret", id="no-slashes"),
    pytest.param("postgresql+asyncpg://u:S3cret@127.0.0.1:1/db", id="asyncpg"),
])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_command_stops_on_a_bad_target_url_with_exit_2(
        url: str, command: list[str], yaml_only_config: Path) -> None:
    code, out, err = run_cli([*command, "-c", str(yaml_only_config), "--json",
                              "--log-format", "json"], {"WDH_DATABASE_URL": url})
    assert code == 2, (out, err)
    doc = json.loads(out)
    assert (doc["exit_code"], doc["error_class"]) == (2, "config")
    assert doc["error"].startswith("WDH_DATABASE_URL "), doc
    assert "%40" in doc["hint"]
    assert SECRET not in out + err and SECRET.lower() not in (out + err).lower()
    assert "internal error" not in out + err


def test_a_libpq_keyword_string_is_used_as_its_url(yaml_only_config: Path,
                                                   tmp_path: Path) -> None:
    port = closed_port()
    dsn = f"host=127.0.0.1 port={port} user=u password={SECRET} dbname=db connect_timeout=2"
    code, out, err = run_cli(["status", "-c", str(yaml_only_config), "--json",
                              "--log-format", "json"], {"WDH_DATABASE_URL": dsn})
    doc = json.loads(out)
    assert (code, doc["error_class"]) == (1, "connection"), doc
    assert doc["error"].startswith(f"target postgresql://u:***@127.0.0.1:{port}/db"), doc
    assert SECRET not in out + err and SECRET.lower() not in (out + err).lower()


# ---------------------------------------------------------------- where secrets are written


@pytest.mark.parametrize(("text", "want"), [
    pytest.param("postgresql://u@h:5/db?password=S3cret&connect_timeout=2",
                 "postgresql://u@h:5/db?password=***&connect_timeout=2", id="query"),
    pytest.param("postgresql://u:S3cret@h/db?sslpassword=k3y&sslmode=require",
                 "postgresql://u:***@h/db?sslpassword=***&sslmode=require", id="userinfo+ssl"),
    pytest.param("postgresql://u:p@S3cret@h/db", "postgresql://u:***@h/db", id="unencoded-at"),
    pytest.param("host=h user=u password=S3cret dbname=db",
                 "host=h user=u password=*** dbname=db", id="keywords"),
    pytest.param("host=h password='S3 cret' dbname=db", "host=h password=*** dbname=db",
                 id="keywords-quoted"),
    pytest.param("postgresql://u@h/db", "postgresql://u@h/db", id="nothing-to-hide"),
])
def test_redact_url_masks_the_password_where_it_is_written(text: str, want: str) -> None:
    assert redact_url(text) == want
    assert scrub(f"failed on {text} (connecting)") == f"failed on {want} (connecting)"


def test_url_secrets_finds_every_written_password() -> None:
    assert url_secrets("postgresql://u@h/db?password=S3cret&connect_timeout=2") == ["S3cret"]
    assert url_secrets("postgresql://u:p%40ss@h/db") == ["p%40ss", "p@ss"]
    assert "p@S3cret" in url_secrets("postgresql://u:p@S3cret@h/db")
    assert url_secrets("host=h password='a b' dbname=d") == ["a b"]
    assert url_secrets("postgresql://u@h/db") == []


def test_a_short_secret_is_never_masked_as_a_substring() -> None:
    redactor = SecretRedactor()
    redactor.add("0", "abc")
    line = "reference_sync_2026-12-07T10:00:00 read 10 rows from abc_table"
    assert redactor.redact(line) == line
    redactor.add("S3cret")
    assert redactor.redact("x S3cret y") == "x *** y"


def test_a_short_mysql_password_leaves_the_log_readable(yaml_only_config: Path,
                                                         tmp_path: Path) -> None:
    env = {"WDH_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "WDH_LEGACY_MYSQL_PASSWORD": "0"}
    code, out, err = run_cli(["init-db", "--create-tables", "-c", str(yaml_only_config)], env)
    assert code == 0, err
    code, out, err = run_cli(["sync", "-c", str(yaml_only_config), "--json",
                              "--log-format", "json"], env)
    assert code == 0, (out, err)
    assert "***" not in out + err
    run_key = json.loads(out)["run_key"]
    assert "20" in run_key and run_key in err


# ---------------------------------------------------------------- errors that say what they are


def test_a_refused_mysql_login_is_class_auth_and_names_the_settings() -> None:
    exc = pymysql.err.OperationalError(
        1045, "Access denied for user 'u'@'10.0.0.1' (using password: YES)")
    error = classify_db_error(exc, "legacy_mysql t on u@h:3306/db")
    assert isinstance(error, AuthFailure)
    assert (error.error_class, error.transient) == ("auth", False)
    assert "WDH_LEGACY_MYSQL_USER" in error.hint and "WDH_LEGACY_MYSQL_PASSWORD" in error.hint
    grant = classify_db_error(pymysql.err.OperationalError(1142, "SELECT command denied"),
                              "legacy_mysql t on u@h:3306/db")
    assert grant.error_class == "query"  # a missing grant is not a refused login


def test_a_lock_holder_hidden_from_this_role_is_named_by_its_pid() -> None:
    assert holder_text(4242, None, None) == (
        ", held by pid 4242 (a session of another role: its details are hidden from this one)")


def test_config_errors_of_every_kind_come_at_once(tmp_path: Path) -> None:
    def table(name: str, **kw: Any) -> dict[str, Any]:
        return {"name": name, "target_table": name, "source_type": "sql",
                "source_config": {"url": "sqlite:///x.db", "table": "t",
                                  "columns": [{"source": "a", "target": "k"}]},
                "primary_key": "k", **kw}

    doc = {"reference_sync": {"tables": [
        table("a", depends_on=["b"]), table("b", depends_on=["a"]),
        table("c", depends_on=["d"]), table("d", depends_on=["c"]),
        table("e", depends_on=["nowhere"]), table("e", batch_size=0),
        table("f", primary_keys="k"), table("g", target_table="a")]}}
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    errors = info.value.errors
    assert errors == [
        "reference_sync.tables[5].batch_size (table e): Input should be greater than or equal "
        "to 1",
        "reference_sync.tables[6].primary_keys (table f): unknown key (check the spelling)",
        "reference_sync.tables: table names must be unique: ['e'] appear more than once",
        "reference_sync.tables: two tables write the same target: ['public.a', 'public.e']",
        "reference_sync.tables: table 'e': depends_on names unknown tables ['nowhere']",
        "reference_sync.tables: depends_on forms a cycle: a -> b -> a",
        "reference_sync.tables: depends_on forms a cycle: c -> d -> c",
    ]
    assert f"{len(errors)} configuration error(s)" in info.value.message


# ---------------------------------------------------------------- the ping


class _Monitor(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def monitor() -> Iterator[tuple[str, type[_Monitor]]]:
    handler = type("Handler", (_Monitor,), {"seen": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


UUID = "5f1c0e7a-1d2b-4c3d-9e8f-0a1b2c3d4e5f"


def test_ping_sends_url_credentials_as_basic_auth(monitor: tuple[str, type[_Monitor]],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    host, handler = monitor
    assert alerting.ping(f"http://ops:P%40ss-w0rd@{host}/ping/{UUID}", "fail", timeout=5)
    assert alerting.ping(f"http://{host}/ping/{UUID}/", "", timeout=5)
    token = base64.b64encode(b"ops:P@ss-w0rd").decode()
    assert handler.seen == [(f"/ping/{UUID}/fail", f"Basic {token}"), (f"/ping/{UUID}", None)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("fault", ["http-500", "refused", "bad-port"])
def test_a_failed_ping_logs_only_scheme_and_host(
        fault: str, monitor: tuple[str, type[_Monitor]],
        caplog: pytest.LogCaptureFixture) -> None:
    host, handler = monitor
    handler.status = 500
    if fault == "refused":
        host = f"127.0.0.1:{closed_port()}"
    elif fault == "bad-port":
        host = "127.0.0.1:PW"
    url = f"http://ops:S3cret-PW@{host}/ping/{UUID}"
    with caplog.at_level(logging.WARNING, logger="refsync"):
        assert alerting.ping(url, "start", timeout=5) is False
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "ping_failed"]
    text = record.getMessage() + str(getattr(record, "error", ""))
    assert record.getMessage().startswith("ping http://127.0.0.1 ")
    assert "S3cret" not in text and "ops" not in text and UUID not in text
    if fault == "http-500":
        assert text.endswith("HTTP 500") and handler.seen


def test_a_failed_ping_never_fails_the_run(yaml_only_config: Path, tmp_path: Path) -> None:
    env = {"WDH_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
           "WDH_REFERENCE_SYNC_PING_URL": f"http://ops:S3cret@127.0.0.1:{closed_port()}/{UUID}"}
    assert run_cli(["init-db", "--create-tables", "-c", str(yaml_only_config)], env)[0] == 0
    code, out, err = run_cli(["sync", "-c", str(yaml_only_config), "--json",
                              "--log-format", "json"], env)
    assert code == 0, (out, err)
    pings = [json.loads(line) for line in err.splitlines() if '"ping_failed"' in line]
    assert len(pings) == 2  # /start and the success ping
    assert SECRET not in out + err and UUID not in out + err
