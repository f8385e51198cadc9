"""TLS to the legacy MySQL (DESIGN 3.1, `WDH_LEGACY_MYSQL_SSL_CA`), against a private MariaDB
that refuses unencrypted connections (`require_secure_transport`): with the CA the server's
certificate is verified; without it the connection is still encrypted where the server
offers TLS (PyMySQL's PREFERRED mode); a CA that did not sign the server's certificate fails
plainly and writes nothing."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import sqlalchemy as sa
from helpers import TRACKING_DDL, execute, legacy_settings, pg_rows, table_summary
from private_mariadb import PrivateMariaDB, PrivateMariaDBs

from refsync import api
from refsync.config import load_config


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN=refsync test {name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             cwd=directory)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate it signed for 127.0.0.1, and an unrelated CA."""
    d = tmp_path_factory.mktemp("tls")
    _ca(d, "ca")
    _ca(d, "other-ca")
    (d / "san.cnf").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
             "server.key", "-out", "server.csr", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.pem",
             cwd=d)
    return d


@pytest.fixture
def tls_server(private_mariadbs: PrivateMariaDBs, certificates: Path) -> Iterator[sa.URL]:
    server: PrivateMariaDB = private_mariadbs.get(
        f"--ssl-ca={certificates / 'ca.pem'}", f"--ssl-cert={certificates / 'server.pem'}",
        f"--ssl-key={certificates / 'server.key'}", "--require-secure-transport=ON")
    url = server.create_database(f"tls_{id(certificates) % 100_000}_{server.port}")
    conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root",
                           database=url.database, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW STATUS LIKE 'Ssl_cipher'")
            assert cur.fetchone()[1], "the private server must speak TLS"
            cur.execute("CREATE TABLE plans (code VARCHAR(20) PRIMARY KEY, name VARCHAR(50))")
            cur.executemany("INSERT INTO plans VALUES (%s, %s)",
                            [(f"P{i:03d}", f"计划 {i}") for i in range(25)])
        yield url
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE `{url.database}`")
        conn.close()


def _sync(tmp_path: Path, pg_url: str, mysql: sa.URL, retries: int = 0,
          **settings: object) -> api.RunResult:
    execute(pg_url, "CREATE SCHEMA IF NOT EXISTS business; CREATE TABLE IF NOT EXISTS "
            f"business.plans (code varchar(20) PRIMARY KEY, name varchar(50), {TRACKING_DDL})")
    path = tmp_path / "cfg.yml"
    path.write_text(
        "reference_sync:\n  timezone: Asia/Shanghai\n"
        f"  defaults: {{retry: {{attempts: {retries}, backoff: [0]}}}}\n"
        "  tables:\n  - name: plans\n    target_table: plans\n    target_schema: business\n"
        "    source_type: legacy_mysql\n    primary_key: code\n    source_config:\n"
        "      table: plans\n      columns: [{source: code, target: code},"
        " {source: name, target: name}]\n", encoding="utf-8")
    return api.sync(load_config(path), legacy_settings(pg_url, mysql, **settings))


def test_the_ca_verifies_the_server_and_the_rows_arrive(
        tmp_path: Path, pg_url: str, tls_server: sa.URL, certificates: Path) -> None:
    result = _sync(tmp_path, pg_url, tls_server, legacy_mysql_ssl_ca=certificates / "ca.pem")
    assert table_summary(result, "status", "error", "inserted") == {
        "status": "ok", "error": None, "inserted": 25}


def test_without_a_ca_the_connection_is_still_encrypted(
        tmp_path: Path, pg_url: str, tls_server: sa.URL, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server takes no unencrypted connection: a sync that reads proves TLS was used. The
    unverified context is built without reading the system's CA store (it never uses it)."""
    import ssl

    def no_store(*_: object, **__: object) -> None:
        raise AssertionError("the system CA store was loaded for an unverified connection")

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", no_store)
    result = _sync(tmp_path, pg_url, tls_server)
    assert table_summary(result, "status", "error", "inserted") == {
        "status": "ok", "error": None, "inserted": 25}


def test_a_ca_that_did_not_sign_the_server_fails_plainly_and_writes_nothing(
        tmp_path: Path, pg_url: str, tls_server: sa.URL, certificates: Path) -> None:
    result = _sync(tmp_path, pg_url, tls_server, retries=2,
                   legacy_mysql_ssl_ca=certificates / "other-ca.pem")
    (table,) = result.tables
    assert (table.status, table.error_class, table.attempts) == ("failed", "config", 1)
    assert "source server's TLS certificate was not accepted" in (table.error or "")
    assert "CERTIFICATE_VERIFY_FAILED" in (table.error or "")
    assert "WDH_LEGACY_MYSQL_SSL_CA" in (table.hint or "")  # not "is the server up?"
    assert pg_rows(pg_url, "SELECT count(*) FROM business.plans") == [(0,)]
