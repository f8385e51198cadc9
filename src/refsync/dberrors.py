"""Turn SQLAlchemy / DB-API exceptions into refsync errors, classified by cause (DESIGN 4.7).

`ConnectionFailure` (transient: refused, lost, a read timeout) versus `QueryFailure` (the
statement or the account is wrong: retrying cannot help). A server that stops a statement for
its own reasons (statement or lock timeout, KILL QUERY, out of memory) is `ServerRefused`,
never retried; a full disk is `DiskFull` (class `disk_full`, never retried); a deadlock is
`TransientConflict`, retried but not a connection error; a server-side file error (a
temporary file after a restart) is `ServerTransient`, retried once. Messages and
hints name the side (source or target) and the server, and never point at the other side.
Works for PyMySQL (by MySQL error number), psycopg / psycopg2 (by SQLSTATE), sqlite3 (by
result code) and for the non-DB-API errors a driver raises once its socket is gone. Messages
say what failed and where, never a password: driver texts are scrubbed of
`scheme://user:secret@` and `password=...`.
"""

from __future__ import annotations

import re
import socket
import ssl
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple

from refsync.errors import (
    AuthFailure,
    ConfigError,
    ConnectionFailure,
    ConstraintViolation,
    DiskFull,
    QueryFailure,
    RefsyncError,
    ServerRefused,
    ServerTransient,
    TransientConflict,
)
from refsync.redact import scrub as scrub  # where a password can appear in a message

# MySQL / MariaDB error numbers (server ER_* and client CR_*) that mean "try again later".
MYSQL_CONNECTION_ERRNOS: dict[int, str] = {
    1040: "too many connections",
    1053: "server is shutting down",
    1152: "connection aborted",
    1158: "connection lost",  # ER_NET_READ_ERROR
    1159: "read timed out",  # ER_NET_READ_INTERRUPTED
    1160: "connection lost",  # ER_NET_ERROR_ON_WRITE
    1161: "write timed out",  # ER_NET_WRITE_INTERRUPTED
    1927: "connection killed",
    2002: "cannot connect",
    2003: "cannot connect",
    2005: "unknown host",
    2006: "server has gone away",
    2012: "handshake failed",
    2013: "connection lost",
    2026: "TLS connection failed",
    2027: "malformed packet",
    2047: "cannot connect",
    2055: "connection lost",
    4031: "disconnected by the server (idle timeout)",
}
_LOST = frozenset({1158, 1160, 1927, 2006, 2013, 2055, 4031})

# Errors retrying cannot fix, with a readable name.
MYSQL_QUERY_ERRNOS: dict[int, str] = {
    1044: "access denied",
    1045: "access denied",
    1049: "unknown database",
    1054: "unknown column",
    1064: "SQL syntax error",
    1109: "unknown table",
    1142: "access denied",
    1143: "access denied",
    1146: "no such table",
    1149: "SQL syntax error",
    1227: "access denied",
    1292: "invalid value",
    1370: "access denied",
    1698: "access denied",
    1792: "read-only transaction",
}
# The server stopped the statement for a reason of its own: (what, hint). Never retried.
_ADMIN = "the MySQL user refsync connects as"
MYSQL_REFUSED_ERRNOS: dict[int, tuple[str, str]] = {
    1205: ("lock wait timeout", "another session holds a lock on the table (or its metadata) "
           "longer than lock_wait_timeout: find it in SHOW PROCESSLIST, or rerun later"),
    1317: ("query interrupted", "the statement was stopped on the server (KILL QUERY: a "
           "cancelled run or an administrator); rerun"),
    1969: ("statement timed out (max_statement_time)",
           f"raise max_statement_time for {_ADMIN} (0 = none), or lower batch_size"),
    3024: ("statement timed out (max_execution_time)",
           f"raise max_execution_time for {_ADMIN} (0 = none), or lower batch_size"),
    1037: ("out of memory", "check the server's memory (sort_buffer_size, other load)"),
    1038: ("out of sort memory", "raise sort_buffer_size on the server"),
    1041: ("out of memory", "check the server's memory and its other load"),
    1290: ("server is read-only", "the statement needs a writable server"),
    1836: ("server is read-only", "the statement needs a writable server"),
}
# Another session was in the way: retried per `retry`, but not a connection error.
MYSQL_CONFLICT_ERRNOS: dict[int, tuple[str, str]] = {
    1213: ("deadlock", "another session locks the same rows; refsync retried per the retry "
           "settings"),
}
# A full disk: ER_DISK_FULL, EE_DISK_FULL, a temporary table that filled its space, or any
# file error carrying the OS's ENOSPC (28) in one of MySQL's and MariaDB's wordings.
_MYSQL_DISK_FULL = {1021: "disk full", 20: "disk full", 1114: "table is full"}
_DISK_FULL_TEXT = ("Errcode: 28", "errno: 28", "error 28 ", "No space left on device")
_MYSQL_DISK_HINT = ("free disk space on the MySQL server (its tmpdir holds the temporary "
                    "files large reads sort in), or raise tmp_table_size; nothing was written "
                    "to the target")
# A server-side file operation that failed, typically on a temporary file right after a
# restart (`6 Error on delete of '…#sql-temptable-…' (Errcode: 2)`): the statement and the
# config are fine, so retried once. The mysys file errors (EE_*, below 100) and the
# ER_* file errors: can't create/delete/open, error on close/read/rename/write, engine errno.
_MYSQL_FILE_ERRNOS = frozenset({*range(1, 100), 1004, 1011, 1016, 1023, 1024, 1025, 1026,
                                1030})
_MYSQL_FILE_HINT = ("a file operation failed on the MySQL server (often a temporary file right "
                    "after a restart); refsync retried once: if it persists, check the "
                    "server's tmpdir and error log")

_MYSQL_CONSTRAINT = {1048: "NULL in a NOT NULL column", 1062: "duplicate key",
                     1451: "row is still referenced", 1452: "foreign key violation"}

_ACCESS_HINT = "check the user name, password and grants for this database"
_HINTS = {
    "access denied": _ACCESS_HINT,
    "unknown database": "check the database name",
    "unknown column": "check the configured column names against the table (did the table change?)",
    "no such table": "check that the table exists and its name is spelled as in the database",
    "unknown table": "check that the table exists and its name is spelled as in the database",
    "SQL syntax error": "check operator-written SQL such as incremental.where",
}

TARGET_HINT = "check the target table and the grants of refsync's user on it"
_RETRIED = "refsync retried per the retry settings"


class PgState(NamedTuple):
    """What a PostgreSQL SQLSTATE means: its kind (see `_diagnose`), the words for it from
    any PostgreSQL server (a `sql` source; None: a plain "query failed"), and from refsync's
    own target (`targets.postgres.classify_target_error`; None: as from any server). Each
    (what happened, hint or None)."""

    kind: str
    said: tuple[str, str | None] | None
    on_target: tuple[str, str] | None = None


# The one table of PostgreSQL SQLSTATEs refsync names (prefixes 08, 23, 28: see _diagnose).
PG_STATES: dict[str, PgState] = {
    "57014": PgState("refused", (
        "statement timed out or cancelled", "raise statement_timeout for refsync's user on "
        "this server (0 = none), or find what slows it"), (
        "statement timed out on the target (statement_timeout)", "raise statement_timeout "
        "for this table (0 = none), or find what slows the target (locks, load)")),
    "55P03": PgState("refused", (
        "lock not available (lock_timeout)", "another session holds a lock on the table: "
        "find it in pg_stat_activity, or rerun later"), (
        "lock timeout: a target table lock was not granted within lock_timeout",
        "end or wait for the blocking session named here, or raise lock_timeout for this "
        "table")),
    "53200": PgState("refused", (
        "out of memory", "check the server's memory (work_mem, other load)"), (
        "the target server ran out of memory",
        "check the target server's memory (work_mem, other load); nothing was applied")),
    "54000": PgState("refused", None, (
        "a target server limit was exceeded",
        "check the target server's limits (max_locks_per_transaction, sizes)")),
    "25006": PgState("refused", (
        "read-only transaction", "the statement needs a writable server"), (
        "the target session is read-only (a standby, or default_transaction_read_only=on)",
        "sync and plan stage rows in temporary tables: they need a session that may write "
        "(the primary server, default_transaction_read_only off) and TEMP on the database; "
        "plan changes nothing else. verify and status work read-only")),
    "53100": PgState("disk_full", ("disk full", None), (
        "the target server's disk is full",
        "free space on the target server's disk; nothing of this table was applied")),
    "40001": PgState("conflict", (
        "serialization failure", f"another session changed the same rows; {_RETRIED}"), (
        "serialization failure on the target",
        f"another session changed the same rows; {_RETRIED}")),
    "40P01": PgState("conflict", (
        "deadlock", f"another session locks the same rows; {_RETRIED}"), (
        "deadlock with another session on the target",
        f"another session locks the same rows; {_RETRIED}")),
    "57P01": PgState("connection", ("server is shutting down", None), (
        "the target server is shutting down (admin shutdown)",
        f"{_RETRIED}; check the target server")),
    "57P02": PgState("connection", ("server crashed", None), (
        "the target server crashed", f"{_RETRIED}; check the target server's log")),
    "57P03": PgState("connection", ("server not accepting connections", None), (
        "the target server is not accepting connections yet",
        f"{_RETRIED}; check the target server")),
    "53300": PgState("connection", ("too many connections", None), (
        "the target server has too many connections",
        f"{_RETRIED}; check max_connections on the target")),
    "53400": PgState("connection", ("configuration limit exceeded", None)),
    "3D000": PgState("query", ("unknown database", None)),
    "3F000": PgState("query", ("unknown schema", None)),
    "42601": PgState("query", ("SQL syntax error", None)),
    "42P01": PgState("query", ("no such table", None), (
        "a target table does not exist", "refsync init-db --create-tables")),
    "42703": PgState("query", ("unknown column", None), (
        "a target column does not exist", "refsync init-db --create-tables")),
    "42501": PgState("query", ("access denied", None), ("permission denied on the target",
                                                        TARGET_HINT)),
}

# libpq's words for a connection that was up and is gone (a connect failure says otherwise)
_PG_LOST_TEXT = ("server closed the connection", "consuming input failed",
                 "sending copy data failed", "sending query failed", "connection is lost",
                 "the connection is closed", "SSL SYSCALL error", "SSL connection has been "
                 "closed", "could not receive data from server", "could not send data to server",
                 "terminating connection")

_SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN",
                     "SQLITE_PROTOCOL")



_SIDE_QUERY_HINT = {
    "source": "check source_config (table, columns, incremental.where) against the source",
    "target": TARGET_HINT,
}


def classify_db_error(exc: BaseException, where: str, *, streaming: bool = False,
                      connection_lost: bool = False, side: str | None = None,
                      doing: str | None = None) -> RefsyncError:
    """The refsync error for a database exception raised at `where` (table, host, database).

    Args:
        exc: whatever the driver or SQLAlchemy raised.
        where: e.g. ``legacy_mysql annuity_plan on root@127.0.0.1:3306/test``; no password.
        streaming: rows were being fetched (a loss reads "connection lost mid-stream").
        connection_lost: the caller knows the connection is gone, so even a non-DB-API error
            (AttributeError, IndexError, struct.error from a closed socket) is a connection failure.
        side: "source" or "target"; by default "target" when `where` starts with it.
        doing: what the statement was for ("recording the run"), shown after `where`; a lost
            connection reads "connection lost while <doing>".
    """
    if isinstance(exc, RefsyncError):
        return exc
    side = side or ("target" if where.lower().startswith("target") else "source")
    error = _classified(exc, where, streaming=streaming, connection_lost=connection_lost,
                        side=side, doing=doing)
    error.side = side
    return error


def _classified(exc: BaseException, where: str, *, streaming: bool, connection_lost: bool,
                side: str, doing: str | None) -> RefsyncError:
    untrusted = _untrusted_certificate(exc)
    if untrusted is not None:  # the same certificate fails the same way on every retry
        return ConfigError(
            f"{where}: the {side} server's TLS certificate was not accepted "
            f"({_shorten(scrub(untrusted))})" if where else untrusted,
            hint=_TLS_HINT[side])
    lost = connection_lost or getattr(exc, "connection_invalidated", False) is True
    orig = _unwrap(exc)
    kind, what, detail = _diagnose(orig)
    if kind is None:
        if lost or any(_diagnose(c)[0] == "connection" for c in _chain(exc)):
            kind, what = "connection", "connection lost"
        else:
            kind, what = "query", f"unexpected {type(orig).__name__}"
    if kind == "connection" and streaming and what == "connection lost":
        what = "connection lost mid-stream"
    detail = _shorten(scrub(detail))
    if kind == "connection" and what == "connection lost" and doing:
        what, doing = f"connection lost while {doing}", None
    if doing:
        where = f"{where} ({doing})"
    message = f"{what} ({detail})" if detail and detail != what else what
    if where:
        message = f"{where}: {message}"
    if kind == "disk_full":
        return _disk_full(orig, where, side, detail)
    if kind in ("refused", "conflict", "server_transient"):
        refusal, hint = _refusal(orig)
        message = f"{where}: " if where else ""
        message += f"{refusal} on the {side} {_server(orig)} server ({detail})"
        if kind == "conflict":
            return TransientConflict(message, hint=hint)
        if kind == "server_transient":
            return ServerTransient(message, hint=hint)
        return ServerRefused(message, hint=hint)
    if kind == "connection":
        return ConnectionFailure(message)
    if kind == "constraint":
        return ConstraintViolation(message)
    if _credentials_refused(orig):
        return AuthFailure(message, hint=_auth_hint(where, side))
    return QueryFailure(message, hint=_HINTS.get(what) or _SIDE_QUERY_HINT[side])


# The server refused the login itself (not a grant): MySQL's ER_ACCESS_DENIED_ERROR and
# ER_ACCESS_DENIED_NO_PASSWORD_ERROR, PostgreSQL's class 28, or libpq's words for it.
_MYSQL_AUTH_ERRNOS = frozenset({1045, 1698})
_PG_AUTH_TEXT = re.compile(r"password authentication failed|no pg_hba\.conf entry|"
                           r"role \S+ does not exist|no password supplied")


def _credentials_refused(exc: BaseException) -> bool:
    errno = _mysql_errno(exc)
    if errno is not None:
        return errno in _MYSQL_AUTH_ERRNOS
    sqlstate = _sqlstate(exc)
    if sqlstate is not None:
        return sqlstate.startswith("28")
    return "OperationalError" in _mro_names(exc) and bool(_PG_AUTH_TEXT.search(str(exc)))


def _auth_hint(where: str, side: str) -> str:
    if side == "target":
        return "check the user and password in WDH_DATABASE_URL (and the server's pg_hba.conf)"
    if where.startswith("legacy_mysql"):
        return ("check WDH_LEGACY_MYSQL_USER and WDH_LEGACY_MYSQL_PASSWORD (and that the user "
                "may log in from this host)")
    return "check the user and password in the table's source_config.url (or url_env)"


_TLS_HINT = {
    "source": "check WDH_LEGACY_MYSQL_SSL_CA: it must be the CA that signed the MySQL server's "
              "certificate, and the certificate must name WDH_LEGACY_MYSQL_HOST",
    "target": "check sslrootcert/sslmode in WDH_DATABASE_URL: the CA must have signed the "
              "PostgreSQL server's certificate, which must name the host",
}


def _untrusted_certificate(exc: BaseException) -> str | None:
    """The text of a TLS certificate verification failure anywhere in the chain, or None."""
    for e in (exc, _unwrap(exc), *_chain(exc)):
        text = str(e)
        if isinstance(e, ssl.SSLCertVerificationError) or "certificate verify failed" in text:
            return _first_line(e) if isinstance(e, ssl.SSLCertVerificationError) else text
    return None


_PG_DISK_HINT = {
    "source": "free disk space on the source server (the file named here is on it)",
    "target": "free disk space on the target server (the file named here is on it); after "
              "a failed first load run VACUUM on the table, or it holds the rolled-back rows' "
              "space; nothing of this table was applied",
}
_FILE_NAMED = re.compile(r"""(?:file|of|to|table) ["']([^"']+)["']""")


def _disk_full(orig: BaseException, where: str, side: str, detail: str) -> DiskFull:
    """The side's disk is full: name the server and the file, hint at freeing space."""
    server = _server(orig)
    path = _FILE_NAMED.search(detail)
    on = f" (writing {path.group(1)})" if path else ""
    message = f"{where}: " if where else ""
    message += f"the {side} {server} server's disk is full{on} ({detail})"
    hint = _MYSQL_DISK_HINT if server == "MySQL" else _PG_DISK_HINT[side]
    return DiskFull(message, side=side, hint=hint)


def _refusal(exc: BaseException) -> tuple[str, str]:
    """(what, hint) of a server's refusal or conflict."""
    errno = _mysql_errno(exc)
    if errno is not None:
        if errno in MYSQL_CONFLICT_ERRNOS:
            return MYSQL_CONFLICT_ERRNOS[errno]
        if errno in _MYSQL_FILE_ERRNOS:
            return "file error", _MYSQL_FILE_HINT
        return MYSQL_REFUSED_ERRNOS.get(errno, ("refused", "check the MySQL server's log"))
    known = PG_STATES.get(_sqlstate(exc) or "")
    if known is not None and known.kind in ("refused", "conflict") and known.said is not None:
        what, hint = known.said
        return what, hint or "check the server's log"
    return "refused", "check the server's log"


def _server(exc: BaseException) -> str:
    if _mysql_errno(exc) is not None:
        return "MySQL"
    if _sqlstate(exc) is not None:
        return "PostgreSQL"
    if type(exc).__module__ == "sqlite3" or hasattr(exc, "sqlite_errorname"):
        return "SQLite"
    return "database"


def _sqlstate(exc: BaseException) -> str | None:
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return sqlstate if isinstance(sqlstate, str) and len(sqlstate) == 5 else None


def is_connection_error(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) means the connection failed, not the statement."""
    return _diagnose(_unwrap(exc))[0] == "connection" or (
        getattr(exc, "connection_invalidated", False) is True)


# ---------------------------------------------------------------- internals


def _sa_exc() -> Any:
    """SQLAlchemy's exception module when SQLAlchemy is loaded; without it no exception can
    be one of its own (`status` reads through the plain driver and never imports it)."""
    return sys.modules.get("sqlalchemy.exc")


def _unwrap(exc: BaseException) -> BaseException:
    sa_exc = _sa_exc()
    if sa_exc is not None and isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        orig: BaseException = exc.orig
        return orig
    return exc


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = {id(exc)}
    stack = [exc.__cause__, exc.__context__]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen or len(seen) > 20:
            continue
        seen.add(id(e))
        yield _unwrap(e)
        stack += [e.__cause__, e.__context__]


def _mro_names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


Diagnosis = tuple[str | None, str, str]


def _diagnose(exc: BaseException) -> Diagnosis:
    """(kind, what, detail): kind is connection, query, constraint, refused, conflict,
    disk_full, server_transient, or None (not a DB error)."""
    names = _mro_names(exc)
    errno = _mysql_errno(exc)
    if errno is not None:
        return _diagnose_mysql(exc, errno, names)
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5 and "Error" in names:
        return _diagnose_postgres(exc, sqlstate)
    errname = getattr(exc, "sqlite_errorname", None)
    if isinstance(errname, str) or type(exc).__module__ == "sqlite3":
        return _diagnose_sqlite(exc, errname, names)
    return _diagnose_by_class(exc, names) or _diagnose_other(exc)


def _diagnose_mysql(exc: BaseException, errno: int, names: set[str]) -> Diagnosis:
    msg = str(exc.args[1]) if len(exc.args) > 1 else ""
    detail = f"{errno} {msg}".strip()
    if errno in _MYSQL_DISK_FULL or any(t in msg for t in _DISK_FULL_TEXT):
        return "disk_full", _MYSQL_DISK_FULL.get(errno, "disk full"), detail
    if errno in MYSQL_CONFLICT_ERRNOS:
        return "conflict", MYSQL_CONFLICT_ERRNOS[errno][0], detail
    if errno in MYSQL_REFUSED_ERRNOS:
        return "refused", MYSQL_REFUSED_ERRNOS[errno][0], detail
    if errno in _MYSQL_FILE_ERRNOS:
        return "server_transient", "file error", detail
    if errno in MYSQL_CONNECTION_ERRNOS:
        what = MYSQL_CONNECTION_ERRNOS[errno]
        if errno in _LOST and "timed out" in msg:
            what = "read timed out"
        return "connection", what, detail
    if errno in MYSQL_QUERY_ERRNOS:
        return "query", MYSQL_QUERY_ERRNOS[errno], detail
    if errno in _MYSQL_CONSTRAINT:
        return "constraint", _MYSQL_CONSTRAINT[errno], detail
    if errno == 0 and "InterfaceError" in names:  # PyMySQL: (0, '') on a closed connection
        return "connection", "connection lost", "connection already closed"
    if 2000 <= errno < 3000:  # other client-side (CR_*) errors
        return "connection", "connection failed", detail
    return "query", "query failed", detail


def _diagnose_postgres(exc: BaseException, sqlstate: str) -> Diagnosis:
    detail = f"{sqlstate} {_first_line(exc)}"
    if sqlstate.startswith("08"):
        return "connection", "cannot connect", detail
    known = PG_STATES.get(sqlstate)
    if known is not None and known.said is not None:
        return known.kind, known.said[0], detail
    if sqlstate.startswith("28"):
        return "query", "access denied", detail
    if sqlstate.startswith("23"):
        what = "foreign key violation" if sqlstate == "23503" else "constraint violation"
        return "constraint", what, detail
    return "query", "query failed", detail


def _diagnose_sqlite(exc: BaseException, errname: str | None, names: set[str]) -> Diagnosis:
    detail = f"{errname} {exc}" if errname else str(exc)
    text = str(exc).lower()
    if (errname or "").startswith("SQLITE_FULL") or "database or disk is full" in text:
        return "disk_full", "disk full", detail
    if (errname or "").startswith(_SQLITE_TRANSIENT) or any(
            s in text for s in ("database is locked", "disk i/o error",
                                "unable to open database")):
        what = "database is locked" if "lock" in text or "BUSY" in (errname or "") else (
            "cannot open database")
        return "connection", what, detail
    if "IntegrityError" in names:
        return "constraint", "constraint violation", detail
    for words, what in (("no such table", "no such table"), ("no such column", "unknown column"),
                        ("syntax error", "SQL syntax error")):
        if words in text:
            return "query", what, detail
    return "query", "query failed", detail


def _diagnose_by_class(exc: BaseException, names: set[str]) -> Diagnosis | None:
    """A DB-API error that carries no code, by its class (psycopg's connect failures)."""
    if "OperationalError" in names:  # psycopg connect failures carry no SQLSTATE
        text = _first_line(exc)
        if "password authentication failed" in text or "no pg_hba.conf entry" in text:
            return "query", "access denied", text
        if "does not exist" in text and "database" in text:
            return "query", "unknown database", text
        if any(t in text for t in _PG_LOST_TEXT):
            return "connection", "connection lost", text
        what = "timed out" if "timeout" in text.lower() or "timed out" in text else (
            "cannot connect")
        return "connection", what, text
    if "InterfaceError" in names:
        return "connection", "connection lost", _first_line(exc)
    if "IntegrityError" in names:
        return "constraint", "constraint violation", _first_line(exc)
    if names & {"ProgrammingError", "DataError", "NotSupportedError", "InternalError",
                "DatabaseError"}:
        return "query", "query failed", _first_line(exc)
    return None


def _diagnose_other(exc: BaseException) -> Diagnosis:
    """SQLAlchemy's own errors, sockets and files; anything else is no DB error (kind None)."""
    sa_exc = _sa_exc()
    if sa_exc is not None:
        if isinstance(exc, sa_exc.TimeoutError):
            return "connection", "no free connection in the pool", _first_line(exc)
        if isinstance(exc, sa_exc.NoSuchTableError):
            return "query", "no such table", f"table {exc}"
        if isinstance(exc, sa_exc.ArgumentError):
            return "query", "invalid argument", _first_line(exc)
    if isinstance(exc, socket.timeout | TimeoutError):
        return "connection", "timed out", _first_line(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return "query", "cannot open file", _first_line(exc)
    if isinstance(exc, OSError):  # refused, reset, unreachable, TLS, DNS
        return "connection", "connection failed", _first_line(exc) or type(exc).__name__
    # Not a database error: AttributeError, IndexError, struct.error... are connection
    # failures only when the connection is known to be lost (see classify_db_error).
    return None, "", f"{type(exc).__name__}: {_first_line(exc)}"


def _mysql_errno(exc: BaseException) -> int | None:
    """The MySQL error number of a PyMySQL / mysqlclient error, else None."""
    mod = type(exc).__module__
    if not (mod.startswith(("pymysql", "MySQLdb", "mysql.connector", "mariadb"))):
        return None
    args = exc.args
    if args and isinstance(args[0], int):
        return args[0]
    errno = getattr(exc, "errno", None)
    return errno if isinstance(errno, int) and errno >= 0 else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else ""


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
