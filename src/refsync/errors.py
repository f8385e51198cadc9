"""Error tree. Each error knows its error class (DESIGN 4.7), whether a retry may help, and a hint.

Errors are classified where they are raised, so the engine never has to guess from a message.
"""

from __future__ import annotations

import re
import signal
from datetime import timedelta
from typing import Any, ClassVar

from refsync.model import Status

MAX_ERROR_CHARS = 500
"""The longest error text refsync prints or stores: the classified message, never a dump."""

# what SQLAlchemy appends to a driver's message: the statement, its parameters, a link
_SQLALCHEMY_TRAILER = re.compile(r"\s*(\[SQL: |\[parameters: |\(Background on this error at: )",
                                 re.DOTALL)


def bounded(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` without SQLAlchemy's statement-and-parameters trailer, at most `limit` chars."""
    found = _SQLALCHEMY_TRAILER.search(text)
    if found:
        text = text[: found.start()]
    text = text.rstrip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RefsyncError(Exception):
    """Base class: a failure refsync understands and can explain in one line."""

    error_class: ClassVar[str] = "error"
    transient: ClassVar[bool] = False
    max_retries: ClassVar[int | None] = None  # a transient error retried at most this often
    default_hint: ClassVar[str] = ""
    table_status: ClassVar[Status] = "failed"  # the status of a table that ends with it
    side: str | None = None  # "source" or "target" when a database's error, else None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class ConfigError(RefsyncError):
    """The config file or environment is unusable; nothing was touched (exit 2)."""

    error_class = "config"
    default_hint = "fix the config file and rerun"

    def __init__(self, message: str, *, errors: list[str] | None = None, hint: str | None = None):
        self.errors = errors or [message]
        full = message if not errors else message + "\n" + "\n".join(f"  {e}" for e in errors)
        super().__init__(full, hint=hint)


class UsageError(ConfigError):
    """A command-line mistake, such as an unknown table name (exit 2)."""

    default_hint = ""


class NotConfigured(RefsyncError):
    """A setting the table needs is missing; retrying cannot help."""

    error_class = "not_configured"


class ConnectionFailure(RefsyncError):
    """Refused, lost mid-stream or timed out: safe to retry the table from scratch."""

    error_class = "connection"
    transient = True
    default_hint = "check that the server is reachable; refsync retried per the retry settings"


class QueryFailure(RefsyncError):
    """The server rejected a statement (unknown column, syntax, permission): never retried."""

    error_class = "query"
    default_hint = "check source_config (table, columns, incremental.where) against the source"


class AuthFailure(QueryFailure):
    """The server refused the credentials (wrong user or password): retrying cannot help."""

    error_class = "auth"


class InvalidRows(RefsyncError):
    """Rows that do not fit the target, or duplicate keys within one read."""

    error_class = "invalid"
    default_hint = "fix the source rows, or set on_invalid: skip to leave them out"

    def __init__(self, message: str, *, rejects: list[dict[str, Any]] | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.rejects = rejects or []


class ConstraintViolation(RefsyncError):
    """The target refused a change, e.g. a delete still referenced by a foreign key."""

    error_class = "constraint"
    default_hint = "repoint the referencing rows first, or use sync_mode: upsert"


class Guarded(RefsyncError):
    """The mass-delete guard stopped the table."""

    error_class = "guarded"
    table_status = "guarded"
    default_hint = "check the source; if the deletes are intended rerun with --allow-mass-delete"


class TableSkipped(RefsyncError):
    """The table's source file cannot be read as configured: the table is skipped, the
    others go on."""

    table_status = "skipped"


class FileMissing(TableSkipped):
    """A source file is absent (a config_file's YAML, a SQLite database)."""

    error_class = "file_missing"
    default_hint = "check source_config.file_path (relative paths start at the working directory)"


class SchemaVersionMismatch(TableSkipped):
    """A config_file source carries another schema_version than the config expects."""

    error_class = "schema_version"
    default_hint = "update the file or source_config.schema_version so they agree"


class LockHeld(RefsyncError):
    """Another run holds the lock (exit 3)."""

    error_class = "locked"
    default_hint = "wait for the other run to finish; `refsync status` shows the last runs"


class Interrupted(RefsyncError):
    """A signal stopped the run; the table in flight was rolled back."""

    error_class = "interrupted"
    table_status: ClassVar[Status] = "interrupted"
    default_hint = "rerun; nothing of the interrupted table was applied"

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


class DeadlinePassed(Interrupted):
    """The run passed its max_run_time: the table in flight was rolled back (DESIGN 4.9)."""

    error_class = "timeout"
    table_status = "failed"  # the table in flight failed its deadline
    default_hint = ("raise max_run_time (or WDH_REFERENCE_SYNC_MAX_RUN_TIME), or find what "
                    "slows the run: refsync -v shows each table's phases")

    def __init__(self, max_run_time: timedelta | None) -> None:
        limit = f" ({_duration_text(max_run_time)})" if max_run_time else ""
        RefsyncError.__init__(self, f"the run passed its max_run_time{limit}: the table in "
                                    "flight was rolled back")
        self.signum = signal.SIGALRM


def _duration_text(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class InternalError(RefsyncError):
    """An unexpected exception in one table: that table fails, the others go on (DESIGN 4.7).
    Its message is bounded: the traceback goes to the -v log."""

    error_class = "internal"
    default_hint = "an unexpected error in refsync: rerun with -v for the traceback and report it"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(bounded(message), hint=hint)


class ServerRefused(QueryFailure):
    """The server stopped a statement for a reason of its own (a timeout, a full disk, out
    of memory, read-only): retrying at once would meet the same wall, so never retried."""


class DiskFull(RefsyncError):
    """A server's disk (or its temporary space) is full: retrying at once meets the same
    wall, so never retried. The message names the side and the file or table."""

    error_class = "disk_full"

    def __init__(self, message: str, *, side: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.side = side


class ServerTransient(ServerRefused):
    """A server-side hiccup a config change cannot fix, such as a temporary file the server
    could not create or delete right after a restart: retried once, then reported."""

    transient = True
    max_retries: ClassVar[int] = 1


class TransientConflict(QueryFailure):
    """A deadlock or serialization failure: the statement was fine, another session was in
    the way; retrying the table may succeed (it is not a connection error)."""

    transient = True


class LockLost(LockHeld):
    """This run's lock session was lost and another run holds the lock now: stop without
    applying, so two runs never apply at once (DESIGN 4.5)."""

    default_hint = ("another refsync run took over after this run's lock session was lost "
                    "(e.g. a server restart); `refsync status` shows both")
