"""Databases for the tests on the shared PostgreSQL server, reused across the tests of a session.

A test gets an empty database of its own, `refsync_t_p<pid>_<hex>`, taken from this session's
pool and reset when given back: its sessions are ended and every schema in it is dropped
(refsync's `business` and `refsync`, whatever the test made) and `public` made anew. refsync
names its target schema and its state schema itself, so one schema per test would not isolate
the tests; one database per test, reset instead of dropped, does.

No DROP DATABASE per test: every DROP DATABASE forces an immediate checkpoint of the whole
server and waits until every backend on it has answered a barrier, which a backend in a COPY
FROM STDIN does not do until its client finishes the COPY; on a shared server its time depends
on everything else running there (seconds under load, minutes behind another suite's slow
COPY). Every statement here is bounded by lock_timeout and statement_timeout; a database that
cannot be reset, or that a test changed beyond its schemas (owner, grants, settings), is set
aside, never waited on, and dropped (bounded too) when the session ends, or by the next session
when that drop timed out.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import sqlalchemy as sa

log = logging.getLogger("tests.pg_databases")

PREFIX = "refsync_t_p"
OWN_NAME = re.compile(rf"^{PREFIX}(\d+)_[0-9a-f]+$")
BOUNDED = {"options": "-c lock_timeout=5s -c statement_timeout=60s", "connect_timeout": 10}
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")

# a database the pool may hand out again: as CREATE DATABASE made it, apart from its schemas
SHELL_IS_PRISTINE = """
SELECT d.datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user)
       AND coalesce(d.datacl, acldefault('d', d.datdba)) = acldefault('d', d.datdba)
       AND d.datallowconn AND d.datconnlimit = -1
       AND NOT EXISTS (SELECT 1 FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)
FROM pg_database d WHERE d.datname = %(name)s
"""
INSIDE_IS_PRISTINE = """
SELECT NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname <> 'plpgsql')
   AND NOT EXISTS (SELECT 1 FROM pg_default_acl)
   AND NOT EXISTS (SELECT 1 FROM pg_event_trigger)
   AND NOT EXISTS (SELECT 1 FROM pg_publication)
   AND NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname NOT IN
                   ('pg_catalog', 'information_schema', 'pg_toast', 'public')
                   AND nspname !~ '^pg_(toast_)?temp_')
"""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PgDatabases:
    """This session's pool of test databases on one PostgreSQL server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = sa.engine.make_url(admin_url)
        self.free: list[str] = []
        self.made: set[str] = set()
        self.admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT",
                                      poolclass=sa.NullPool, connect_args=BOUNDED)

    def url(self, name: str) -> str:
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    @contextmanager
    def database(self) -> Iterator[str]:
        """An empty database's URL for the `with` block; reset and pooled afterwards."""
        name = self.free.pop() if self.free else self._create()
        try:
            yield self.url(name)
        finally:
            if self._reset(name):
                self.free.append(name)

    def _create(self) -> str:
        name = f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {_quote(name)}")
        log.info("test database %s created", name)
        self.made.add(name)
        return name

    def _reset(self, name: str) -> bool:
        """Empty `name` again; False (the database set aside) when it cannot be done at once."""
        try:
            with self.admin.connect() as conn:
                pristine = conn.exec_driver_sql(SHELL_IS_PRISTINE, {"name": name}).scalar()
                if pristine is None:  # the test dropped it
                    self.made.discard(name)
                    return False
                conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                    "WHERE datname = %(name)s AND pid <> pg_backend_pid()", {"name": name})
            if not pristine:
                log.warning("test database %s was changed beyond its schemas: set aside", name)
                return False
            return self._drop_schemas(name)
        except sa.exc.DBAPIError as exc:
            log.warning("test database %s could not be reset, set aside: %s", name, exc.orig)
            return False

    def _drop_schemas(self, name: str) -> bool:
        engine = sa.create_engine(self.url(name), poolclass=sa.NullPool, connect_args=BOUNDED)
        try:
            with engine.begin() as conn:
                schemas = conn.exec_driver_sql(
                    "SELECT nspname FROM pg_namespace WHERE nspname <> ALL(%(system)s) "
                    "AND nspname !~ '^pg_(toast_)?temp_'",
                    {"system": list(SYSTEM_SCHEMAS)}).scalars().all()
                if schemas:
                    conn.exec_driver_sql(
                        f"DROP SCHEMA {', '.join(_quote(s) for s in schemas)} CASCADE")
                # `public` as CREATE DATABASE makes it (PostgreSQL >= 15)
                conn.exec_driver_sql("CREATE SCHEMA public AUTHORIZATION pg_database_owner; "
                                     "GRANT USAGE ON SCHEMA public TO PUBLIC; "
                                     "COMMENT ON SCHEMA public IS 'standard public schema'")
                clean = conn.exec_driver_sql(INSIDE_IS_PRISTINE).scalar()
            if not clean:
                log.warning("test database %s keeps objects outside its schemas: set aside",
                            name)
            return bool(clean)
        finally:
            engine.dispose()

    def adopt(self, other: PgDatabases) -> None:
        """Take `other`'s databases over: handed out again, or dropped with this pool's."""
        self.free += other.free
        self.made |= other.made
        other.free, other.made = [], set()
        other.admin.dispose()

    def drop_all(self) -> None:
        """Drop this session's databases and those a dead test session on this machine left,
        side by side, each bounded: one not dropped in time is logged and left for the next
        session."""
        try:
            with ThreadPoolExecutor(max_workers=4) as drops:
                list(drops.map(self._drop, sorted(self.made | self._orphans())))
        finally:
            self.admin.dispose()

    def _drop(self, name: str) -> None:
        try:
            with self.admin.connect() as conn:  # waits on every backend of the server
                conn.exec_driver_sql("SET statement_timeout = '10s'")
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")
        except sa.exc.DBAPIError as exc:
            log.warning("test database %s was not dropped: %s", name, exc.orig)

    def _orphans(self) -> set[str]:
        """Pool databases on this machine's server whose session's process no longer runs."""
        if self.admin_url.host not in (None, "", "127.0.0.1", "localhost", "::1"):
            return set()
        try:
            with self.admin.connect() as conn:
                names = conn.exec_driver_sql("SELECT datname FROM pg_database").scalars().all()
        except sa.exc.DBAPIError as exc:
            log.warning("test databases of dead sessions not looked for: %s", exc.orig)
            return set()
        return {n for n in names if (m := OWN_NAME.match(n)) and not _alive(int(m[1]))}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, another user's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
