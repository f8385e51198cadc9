"""Fixtures for tests against real databases. Nothing here connects at import time."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from private_mariadb import PrivateMariaDBs, missing_binaries
from private_postgres import private_pg, private_pg_url  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def _dispose_legacy_engines() -> Iterator[None]:
    """Each test starts with no pooled legacy MySQL connection left by another (and none
    outlives the server a module started)."""
    yield
    from refsync.sources import dispose_engines

    dispose_engines()


# ---------------------------------------------------------------- MySQL / MariaDB
#
# `mysql_url`: a server URL (str, password included) where the tests may create databases
# and users: $REFSYNC_TEST_MYSQL_URL, else the local default, else testcontainers when Docker
# runs, else skip (fail under REFSYNC_REQUIRE_DB=1). `mysql_db_url`: a fresh database
# `refsync_t_<hex>` for one test module, dropped afterwards.

LOCAL_MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"


def _mysql_unavailable(reason: str) -> None:
    if os.environ.get("REFSYNC_REQUIRE_DB") == "1":
        pytest.fail(f"REFSYNC_REQUIRE_DB=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _mysql_reachable(url: str) -> bool:
    engine = sa.create_engine(url, connect_args={"connect_timeout": 2}, poolclass=sa.NullPool)
    try:
        with engine.connect():
            return True
    except sa.exc.DBAPIError:
        return False
    finally:
        engine.dispose()


def _render(url: sa.URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A MySQL/MariaDB server URL (mysql+pymysql://, with a database) for creating databases."""
    if env := os.environ.get("REFSYNC_TEST_MYSQL_URL"):
        yield _render(sa.engine.make_url(env).set(drivername="mysql+pymysql"))
        return
    if _mysql_reachable(LOCAL_MYSQL):
        yield LOCAL_MYSQL
        return
    if not (Path("/var/run/docker.sock").exists() or "DOCKER_HOST" in os.environ):
        _mysql_unavailable("no MySQL: set REFSYNC_TEST_MYSQL_URL, start the local MariaDB on "
                           "127.0.0.1:3306, or run Docker for testcontainers")
    try:  # testcontainers >= 4.15 moved the module; the old path warns (an error here)
        from testcontainers.community.mysql import MySqlContainer
    except ImportError:
        try:
            from testcontainers.mysql import MySqlContainer
        except ImportError:
            _mysql_unavailable("no MySQL: Docker runs but testcontainers is missing "
                               "(uv sync --group testcontainers)")
    # root, so that the tests may create databases and users
    with MySqlContainer("mariadb:10.11", dialect="pymysql", username="root",
                        password="refsync-test") as container:
        yield container.get_connection_url()


@pytest.fixture(scope="module")
def mysql_db_url(mysql_url: str) -> Iterator[str]:
    """A new, empty database for one test module (`refsync_t_<hex>`), dropped afterwards."""
    name = f"refsync_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(mysql_url, poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        yield _render(sa.engine.make_url(mysql_url).set(database=name))
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


# ---------------------------------------------------------------- private MariaDB servers
#
# `private_mariadbs`: starts PRIVATE MariaDB servers (temp dirs, free ports) with server options
# given per test, e.g. `private_mariadbs.get("--transaction-isolation=READ-COMMITTED")`; one
# server per set of options for the session, all stopped at its end. See private_mariadb.py.


@pytest.fixture(scope="session")
def private_mariadbs() -> Iterator[PrivateMariaDBs]:
    reason = missing_binaries()
    if reason is not None:  # skip, or fail under REFSYNC_REQUIRE_DB=1 (as unavailable())
        _mysql_unavailable(f"cannot start a private MariaDB: {reason}")
    servers = PrivateMariaDBs()
    try:
        yield servers
    finally:
        servers.stop_all()
