"""A look at the target through its plain DB-API driver, for `refsync status`.

`status` only reads refsync's own state tables and asks whether a run holds the lock; going
through SQLAlchemy would cost more start-up than the whole answer (importing it alone takes
0.15-0.25 s on a small machine: issue 9 wants `status` under half a second). So this module
imports no SQLAlchemy, and neither do the state reads it serves (`state.read_status`).
The lock's identity (`LOCK_KEY`, `LOCK_ROW`) and the session's connection settings live here
and are shared with the writing target (`targets.postgres`), so both sides look at the same
lock and connect the same way.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refsync.errors import ConfigError, NotConfigured, RefsyncError

LOCK_KEY = 0x72656673796E63  # "refsync" in ASCII: the advisory lock every run takes
LOCK_ROW = (f"locktype = 'advisory' AND classid = {LOCK_KEY >> 32} "
            f"AND objid = {LOCK_KEY & 0xFFFFFFFF} AND objsubid = 1 AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")

# libpq keepalives: a dead client's session (and its run lock) is freed within minutes, and
# refsync notices a dead server: an idle connection within 60 s (30 + 3 x 10), data the
# server stopped acknowledging within 30 s (tcp_user_timeout, ms)
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3, "tcp_user_timeout": 30000}
PG_CONNECT_ARGS: dict[str, Any] = {"connect_timeout": 10, "application_name": "refsync",
                                   **KEEPALIVES}

_DRIVER = re.compile(r"^(?P<scheme>[A-Za-z0-9]+)(\+[A-Za-z0-9_]+)?://")


def libpq_uri(url: str) -> str:
    """`postgresql+psycopg://…` (SQLAlchemy's form) as the libpq URI it names: the driver
    suffix goes, the rest (percent-escapes, `?host=/socket`, sslmode…) means the same."""
    m = _DRIVER.match(url)
    if m is None:
        raise ConfigError(f"WDH_DATABASE_URL is not a URL: {url.split('@')[-1]!r}")
    return "postgresql://" + url[m.end():]


def sqlite_path(url: str) -> Path | None:
    """The file of `sqlite:///relative.db` or `sqlite:////absolute.db`; None in memory."""
    m = _DRIVER.match(url)
    rest = url[m.end():] if m else ""
    rest = rest.split("?", 1)[0]
    database = rest[1:] if rest.startswith("/") else rest
    return None if database in ("", ":memory:") else Path(database)


def sqlite_lock_path(path: Path | None) -> Path | None:
    """The run lock of a SQLite target: a file beside the database (DESIGN 4.5)."""
    return None if path is None else path.with_name(path.name + ".refsync.lock")


def sqlite_lock_held(path: Path | None) -> bool | None:
    """Whether a run holds the lock file now: try to share it without waiting."""
    lock_path = sqlite_lock_path(path)
    if lock_path is None:
        return None
    if not lock_path.exists():
        return False
    fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we got
    return False


@dataclass
class StateReader:
    """An open DB-API connection to the target, for reading the state tables."""

    dialect: str  # "postgresql" or "sqlite"
    conn: Any
    sqlite_file: Path | None = None

    @property
    def mark(self) -> str:
        """The driver's parameter marker."""
        return "%s" if self.dialect == "postgresql" else "?"

    def rows(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        finally:
            cur.close()

    def lock_held(self) -> bool | None:
        """Whether some run holds the run lock now (None: cannot tell, an in-memory SQLite)."""
        if self.dialect == "sqlite":
            return sqlite_lock_held(self.sqlite_file)
        return bool(self.rows(f"SELECT pid FROM pg_locks WHERE {LOCK_ROW}"))


@contextmanager
def read_state(url: str) -> Iterator[StateReader | None]:
    """A reader on the target of `url`, read-only; None where there is nothing to read (a
    SQLite file that does not exist: looking must not create it)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme.startswith("postgres"):
        yield from _postgres(url)
    elif scheme.startswith("sqlite"):
        yield from _sqlite(url)
    else:
        raise ConfigError(
            f"unsupported target database {scheme!r} in WDH_DATABASE_URL",
            hint="use postgresql://user@host/db or sqlite:///path.db")


def _postgres(url: str) -> Iterator[StateReader]:
    import psycopg

    from refsync.dberrors import classify_db_error
    from refsync.redact import redact_url

    uri = libpq_uri(url)
    where = "target " + redact_url(uri)
    try:
        conn = psycopg.connect(uri, autocommit=False, **PG_CONNECT_ARGS)
    except psycopg.Error as exc:
        error = classify_db_error(exc, f"{where} (connecting)")
        if error.transient:
            error.hint = "check WDH_DATABASE_URL and that the target server is up"
        raise error from None
    try:
        conn.read_only = True
        yield StateReader("postgresql", conn)
    except psycopg.Error as exc:
        raise classify_db_error(exc, f"{where} (reading the state tables)") from None
    finally:
        conn.close()


def _sqlite(url: str) -> Iterator[StateReader | None]:
    import sqlite3

    path = sqlite_path(url)
    if path is not None and not path.parent.exists():
        raise NotConfigured(f"folder for the SQLite target does not exist: {path.parent}")
    if path is None or not path.exists():
        yield None
        return
    conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=10)
    try:
        yield StateReader("sqlite", conn, sqlite_file=path)
    except sqlite3.Error as exc:
        from refsync.dberrors import classify_db_error

        error: RefsyncError = classify_db_error(exc, f"target sqlite:///{path}")
        raise error from None
    finally:
        conn.close()

