"""Shared fixtures. Database URLs come from the environment first, then the local services,
then testcontainers where Docker runs; otherwise the test is skipped with the reason, unless
REFSYNC_REQUIRE_DB=1 (CI), which turns that skip into a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pg_databases import PgDatabases

LOCAL_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (addopts): the whole suite, or a folder of it, runs on every core (each
    worker takes whole files: module fixtures are built once); files or tests named on the
    command line run in this process, as quick to start as without workers."""
    named = [arg for arg in config.args if not Path(arg.split("::")[0]).is_dir()]
    return 0 if config.args and len(named) == len(config.args) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
    _deselect_full_matrix(config, items)


def _deselect_full_matrix(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The full sync matrix (marker `matrix`, minutes long) runs only when asked for: `-m`
    naming it, REFSYNC_FULL_MATRIX=1, or its test named on the command line."""
    asked = ("matrix" in (config.option.markexpr or "")
             or os.environ.get("REFSYNC_FULL_MATRIX") == "1"
             or any("::test_matrix_full" in str(arg) for arg in config.args))
    matrix = [i for i in items if i.get_closest_marker("matrix") is not None]
    if matrix and not asked:
        config.hook.pytest_deselected(items=matrix)
        items[:] = [i for i in items if i.get_closest_marker("matrix") is None]


def unavailable(reason: str) -> None:
    """Skip, or fail when the run demands real databases."""
    if os.environ.get("REFSYNC_REQUIRE_DB") == "1":
        pytest.fail(f"REFSYNC_REQUIRE_DB=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _reachable(url: str) -> bool:
    engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def _docker() -> bool:
    return Path("/var/run/docker.sock").exists() or "DOCKER_HOST" in os.environ


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL server URL (any database) where the tests may create databases."""
    if url := os.environ.get("REFSYNC_TEST_PG_URL"):
        yield sa.engine.make_url(url).set(drivername="postgresql+psycopg").render_as_string(
            hide_password=False)
        return
    if _reachable(LOCAL_PG):
        yield LOCAL_PG
        return
    if not _docker():
        unavailable("no PostgreSQL: set REFSYNC_TEST_PG_URL, start the local server, "
                    "or run Docker for testcontainers")
    try:  # testcontainers >= 4.15 moved it; the old path warns (an error under pytest here)
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        tc = pytest.importorskip("testcontainers.postgres")
        PostgresContainer = tc.PostgresContainer
    with PostgresContainer("postgres:16", driver="psycopg") as pg:
        yield pg.get_connection_url()


@pytest.fixture(scope="session")
def pg_databases(pg_admin_url: str) -> Iterator[PgDatabases]:
    """This session's pool of empty test databases (pg_databases.py says why a pool)."""
    pool = PgDatabases(pg_admin_url)
    try:
        yield pool
    finally:
        pool.drop_all()


@pytest.fixture
def pg_url(pg_databases: PgDatabases) -> Iterator[str]:
    """An empty PostgreSQL database of the test's own (no schema but `public`)."""
    with pg_databases.database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.sqlite'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same semantic test, once per target."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    return str(request.getfixturevalue("pg_url"))
