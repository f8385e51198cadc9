"""A look at the target through its plain DB-API driver, for `refsync status`.

`status` only reads refsync's own state tables and asks whether a run holds the lock; going
through SQLAlchemy would cost more start-up than the whole answer (`status` answers in under
half a second). So this module
imports no SQLAlchemy, and neither do the state reads it serves (`state.read_status`, whose
SQL is `targets.state_sql`'s).
The session's connection settings live here and are shared with the writing target
(`targets.postgres`), so both sides connect the same way; both look at the lock that
`targets.lock` names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refsync.errors import ConfigError, NotConfigured, RefsyncError
from refsync.targets.lock import LOCK_ROW, sqlite_lock_held

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

