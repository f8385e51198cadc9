"""The pool of test databases (tests/pg_databases.py): a database handed out again is empty,
a session left open does not block its reset, and one a test changed beyond its schemas is
never handed out again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from helpers import execute, pg_rows

from pg_databases import PgDatabases


@pytest.fixture
def pool(pg_admin_url: str, pg_databases: PgDatabases) -> Iterator[PgDatabases]:
    """A pool of the test's own; the session's takes its databases over afterwards."""
    own = PgDatabases(pg_admin_url)
    try:
        yield own
    finally:
        pg_databases.adopt(own)


def _database(url: str) -> str:
    return str(sa.engine.make_url(url).database)


def test_a_database_is_handed_out_again_empty(pool: PgDatabases) -> None:
    with pool.database() as first:
        execute(first, 'CREATE SCHEMA business; CREATE TABLE business."年金计划" (k int); '
                "CREATE SCHEMA refsync; CREATE TABLE public.t (k int); "
                "DO $$ BEGIN IF EXISTS (SELECT FROM pg_available_extensions "
                "WHERE name = 'citext') THEN CREATE EXTENSION citext; END IF; END $$")
        engine = sa.create_engine(first, poolclass=sa.NullPool)
        idle = engine.connect()  # a session the test left open, holding the run's lock
        idle.exec_driver_sql("SELECT pg_advisory_lock(42)")
    try:
        with pool.database() as second:
            assert _database(second) == _database(first)
            assert pg_rows(second, "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' "
                                   "ORDER BY 1") == [("information_schema",), ("public",)]
            assert pg_rows(second, "SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                                   "ON n.oid = c.relnamespace WHERE n.nspname = 'public'") == [(0,)]
            assert pg_rows(second, "SELECT extname FROM pg_extension") == [("plpgsql",)]
            assert pg_rows(second, "SELECT count(*) FROM pg_locks l JOIN pg_database d "
                                   "ON d.oid = l.database WHERE l.locktype = 'advisory' "
                                   "AND d.datname = current_database()") == [(0,)]
            assert pg_rows(second, "SELECT nspowner::regrole::text, nspacl::text[] "
                                   "FROM pg_namespace WHERE nspname = 'public'") == [
                ("pg_database_owner",
                 ["pg_database_owner=UC/pg_database_owner", "=U/pg_database_owner"])]
    finally:
        idle.invalidate()
        engine.dispose()


def test_a_database_changed_beyond_its_schemas_is_set_aside(pool: PgDatabases) -> None:
    with pool.database() as first:
        execute(first, f'ALTER DATABASE "{_database(first)}" SET work_mem = \'8MB\'')
    with pool.database() as second:
        assert _database(second) != _database(first)
    assert pool.free == [_database(second)]


def test_a_database_the_test_dropped_is_forgotten(pool: PgDatabases, pg_admin_url: str) -> None:
    engine = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with pool.database() as url:
            gone = _database(url) + "dead"  # as good as dropped, and no DROP DATABASE wait
            with engine.connect() as conn:
                conn.exec_driver_sql(f'ALTER DATABASE "{_database(url)}" RENAME TO "{gone}"')
        assert pool.free == [] and pool.made == set()
    finally:
        pool.made.add(gone)  # dropped with the pool's
        engine.dispose()
