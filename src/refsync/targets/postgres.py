"""PostgreSQL target: COPY into a temporary staging table, diff, write only the changes.

The run lock is a session advisory lock on `LOCK_KEY`, held on its own connection for the
whole run; `SELECT pg_locks` shows it as an advisory lock with classid `LOCK_KEY >> 32`,
objid `LOCK_KEY & 0xffffffff`, objsubid 1. A server restart ends that session, so each table
checks, inside its own write transaction right before applying, that this run still holds it
(re-taking it on a new session when nobody does): two runs never apply at once (DESIGN 4.5).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import pq
from sqlalchemy.engine import Connection

from refsync import interrupts
from refsync.dberrors import PG_STATES, TARGET_HINT, classify_db_error
from refsync.errors import (
    ConnectionFailure,
    ConstraintViolation,
    DiskFull,
    Interrupted,
    InvalidRows,
    LockHeld,
    LockLost,
    QueryFailure,
    RefsyncError,
    ServerRefused,
    TransientConflict,
    bounded,
)
from refsync.model import Batch, ColumnInfo
from refsync.redact import redact_url
from refsync.sql_names import pg_literal
from refsync.targets.base import DirectLoadConflict, SqlTableWriter, SqlTarget
from refsync.targets.lock import LOCK_KEY, LOCK_ROW
from refsync.targets.pg_liveness import Watchdog
from refsync.targets.readonly import PG_CONNECT_ARGS, libpq_uri
from refsync.tracking import LAYER1_VALUES, TRACKING_COLUMNS, layer1_copy_text

log = logging.getLogger(__name__)

TRACKING_BYTES = layer1_copy_text()  # appended to each COPY line of a direct load
# up to this many staged rows, the diff may look each up by the target's key (nested loops)
SMALL_STAGE = 10_000
# the rows of the parts a comparison read, and the rows an update changes (at most this share
# of the target's rows, and this many), are joined to the target by looking each up by its
# key: the digests have just read the whole target (the update reads those rows anyway), so
# a lookup costs a few microseconds where a hash join scans the whole target again. At a
# million rows: 11,000 staged rows 0.08 s against 0.32 s, 30,000 0.13 s against 0.26 s,
# 76,000 0.29 s against 0.48 s; 100 updated 0.004 s against 0.15 s. The planner, costing
# each lookup as a random read, picks the scan.
LOOKUP_SHARE = 0.1
LOOKUP_MAX = 200_000
_JOINS = ("enable_nestloop", "enable_hashjoin", "enable_mergejoin")

# ANALYZE after a load samples 300 x this many rows (the server's default: 100): enough for
# the row count and the key's spread the diff is planned on
ANALYZE_SAMPLE_TARGET = 10
ANALYZE_FULL_UP_TO = 300 * ANALYZE_SAMPLE_TARGET


def abort_socket(conn: Any) -> None:
    """Shut a psycopg connection's socket down from another thread: a call waiting on it
    wakes with "server closed the connection" (the fd stays open until psycopg closes it)."""
    try:
        fd = conn.pgconn.socket
    except Exception:  # noqa: BLE001 - already closed: nothing blocks on it
        return
    sock = socket.socket(fileno=os.dup(fd))
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def _ms(value: timedelta) -> int:
    return int(value.total_seconds() * 1000)


# A table's columns (domains read as their base type) and the key columns of its unique
# indexes (primary key and unique constraints included; partial, expression and INCLUDE
# columns left out: ON CONFLICT cannot use them). No row at all: no such table.
_DESCRIBE = """
WITH rel AS (SELECT to_regclass(%s) AS oid)
SELECT a.attname, a.attnotnull, format_type(a.atttypid, a.atttypmod) AS type_sql,
       coalesce(b.typname, t.typname) AS typname, coalesce(b.typtype, t.typtype) AS typtype,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END AS typmod,
       (SELECT max(char_length(e.enumlabel)) FROM pg_enum e
        WHERE e.enumtypid = coalesce(b.oid, t.oid)) AS enum_length,
       (SELECT json_agg(k.cols) FROM (
            SELECT array_agg(ka.attname::text ORDER BY c.ord) AS cols
            FROM pg_index i
            CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS c(attnum, ord)
            JOIN pg_attribute ka ON ka.attrelid = i.indrelid AND ka.attnum = c.attnum
            WHERE i.indrelid = rel.oid AND i.indisunique AND i.indisvalid
              AND i.indpred IS NULL AND i.indexprs IS NULL AND c.ord <= i.indnkeyatts
            GROUP BY i.indexrelid) k) AS unique_keys
FROM rel
LEFT JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
WHERE rel.oid IS NOT NULL
ORDER BY a.attnum
"""

_KIND_OF: dict[str, tuple[str, int | None]] = {
    "bool": ("boolean", None), "int2": ("integer", 16), "int4": ("integer", 32),
    "int8": ("integer", 64), "float4": ("float", None), "float8": ("float", None),
    "numeric": ("numeric", None), "timestamptz": ("timestamptz", None),
    "timestamp": ("timestamp", None), "date": ("date", None), "time": ("time", None),
    "timetz": ("time", None), "json": ("json", None), "jsonb": ("json", None),
    "uuid": ("uuid", None), "bytea": ("bytes", None), "varchar": ("text", None),
    "bpchar": ("text", None), "text": ("text", None), "citext": ("text", None),
}


def pg_column_info(name: str, typname: str, typmod: int, typtype: str, nullable: bool,
                   type_sql: str, enum_length: int | None = None) -> ColumnInfo:
    """A column from the catalogue: what a value must satisfy to be written into it (the same
    description `base.column_info` gives a reflected type)."""
    kind, bits = _KIND_OF.get(typname, ("other", None))
    length = precision = scale = None
    if typtype == "e":  # an enum takes text no longer than its longest label
        kind, bits, length = "text", None, enum_length
    elif typname in ("varchar", "bpchar") and typmod > 4:
        length = typmod - 4
    elif typname == "numeric" and typmod >= 4:
        precision = ((typmod - 4) >> 16) & 0xFFFF
        scale = (((typmod - 4) & 0x7FF) ^ 1024) - 1024  # signed: PostgreSQL 15 allows < 0
    return ColumnInfo(name=name, kind=kind, nullable=nullable,  # type: ignore[arg-type]
                      max_length=length, precision=precision, scale=scale, int_bits=bits,
                      type_sql=type_sql)


class PostgresWriter(SqlTableWriter):
    driver_errors = (psycopg.Error,)

    def create_temp_sql(self, name: str, select: str, *, empty: bool = False) -> str:
        return f"CREATE TEMP TABLE {name} AS {select}" + (" WITH NO DATA" if empty else "")

    def create_stage(self) -> None:
        # the diff joins whole tables: hash or merge joins always fit, and a nested loop
        # chosen on stale statistics can spin for hours
        self.sql("SET LOCAL enable_nestloop = off")
        super().create_stage()

    def estimated_rows(self) -> int:
        return self.scalar(f"SELECT greatest(reltuples, 0)::bigint FROM pg_class "
                           f"WHERE oid = {pg_literal(self.ref)}::regclass")

    def try_direct(self) -> bool:
        self.direct = not self.scalar(f"SELECT count(*) FROM (SELECT 1 FROM {self.ref} LIMIT 1) t")
        return self.direct

    def _copy_sql(self) -> str:
        if self.direct:
            tracking = ", ".join(self.q(c) for c in TRACKING_COLUMNS)
            return f"COPY {self.ref} ({self.col_list}, {tracking}) FROM STDIN"
        return f"COPY _refsync_stage ({self.col_list}) FROM STDIN"

    _cursor: psycopg.Cursor[Any] | None = None
    _copy_cm: Any = None
    _copy: psycopg.Copy | None = None

    def _copier(self) -> psycopg.Copy:
        """One COPY for all of a table's batches: the server ingests as the rows arrive,
        instead of finishing (and being waited for) once per batch."""
        if self._copy is None:
            raw = self.conn.connection.driver_connection
            assert raw is not None
            self._cursor = raw.cursor()
            self._copy_cm = self._cursor.copy(self._copy_sql())
            self._copy = self._copy_cm.__enter__()
        return self._copy

    def end_staging(self, error: BaseException | None = None) -> None:
        if self._copy_cm is None:
            return
        cm, cursor = self._copy_cm, self._cursor
        self._copy_cm = self._copy = self._cursor = None
        try:
            if error is None:
                cm.__exit__(None, None, None)
            else:  # abort the COPY; the transaction is rolled back anyway
                cm.__exit__(type(error), error, None)
        except psycopg.Error as exc:
            if error is None:
                raise self.classify_write_error(exc, "loading rows") from None
        except Exception:
            if error is None:
                raise
        finally:
            if cursor is not None:
                cursor.close()
        if error is None and self.direct:
            # a first load leaves the target's statistics at "empty": the next diff would
            # plan for 0 rows. Analysed in this transaction, committed with the rows, from a
            # small sample: the row count is what the planner lacks, and a tenth of the
            # sample gets it in a tenth of the time (0.02 s against 0.17 s at 1M rows).
            # Autovacuum analyses it in full soon after: the rows count as changed since
            # this ANALYZE once they commit.
            self._analyze_sampled(self.ref)

    def _analyze_sampled(self, ref: str) -> None:
        if self.staged <= ANALYZE_FULL_UP_TO:  # the sample would be the whole table
            self.sql(f"ANALYZE {ref}", phase="analyze")
            return
        # for the rest of this table's transaction, which analyses nothing else
        self.sql(f"SET LOCAL default_statistics_target = {ANALYZE_SAMPLE_TARGET}")
        self.sql(f"ANALYZE {ref}", phase="analyze")

    def load_rows(self, batch: Batch) -> None:
        write = self._copier().write_row
        if self.direct:
            for row in batch:
                write(row + LAYER1_VALUES)
        else:
            for row in batch:
                write(row)

    def load_text(self, text: str | bytes) -> None:
        data = text.encode("utf-8") if isinstance(text, str) else text
        if self.direct:  # every line gets the layer-1 tracking values
            data = data.replace(b"\n", TRACKING_BYTES + b"\n") + TRACKING_BYTES
        self._copier().write(data + b"\n")

    def classify_write_error(self, exc: BaseException, doing: str) -> RefsyncError:
        orig = getattr(exc, "orig", exc)
        state = getattr(orig, "sqlstate", None)
        if self.direct and state == "23505":
            return DirectLoadConflict(f"{doing}: a key appears twice")
        return self.target.table_error(exc, doing, self.ref)

    def after_staging(self) -> None:
        self._analyze_sampled("_refsync_stage")  # its row count, for the diff's plan
        # A few staged rows against a big target (an incremental window, the parts that
        # digests found different): index lookups beat scanning the whole target, which a
        # hash join must. Nested loops stay off while the target's statistics read "empty"
        # over many pages: in that stale state the planner nests loops over sequential
        # scans.
        self._stale = self.stale_statistics()
        if self.staged + self.kept_keys <= SMALL_STAGE and not self._stale:
            self.sql("SET LOCAL enable_nestloop = on")

    _stale = True  # the target's statistics, as `after_staging` found them

    @contextmanager
    def by_key(self, rows: int, *, cached: bool) -> Iterator[None]:
        """Joins of `rows` rows to the target by lookups of its key index alone, for one
        statement, where they are few (`LOOKUP_SHARE`, `LOOKUP_MAX`) and the target's pages
        `cached` (or read anyway); then the join settings as they were (where the statement
        failed, the transaction's rollback puts them back)."""
        if not cached or self._stale or rows > LOOKUP_MAX or \
                rows > LOOKUP_SHARE * self.estimated_rows():
            yield
            return
        before = list(self.sql("SELECT " + ", ".join(
            f"current_setting('{n}')" for n in _JOINS)).one())
        self._joins(["on", "off", "off"])
        yield
        self._joins(before)

    def _joins(self, values: list[str]) -> None:
        self.sql("SELECT " + ", ".join(f"set_config('{n}', {pg_literal(v)}, true)"
                                       for n, v in zip(_JOINS, values, strict=True)))

    def stale_statistics(self) -> bool:
        """Whether the target's statistics say 'no rows' over pages that hold some, so the
        planner would take it for empty (a bulk load that nobody analysed)."""
        return bool(self.scalar(
            f"SELECT (reltuples = 0 AND relpages > 0 AND pg_relation_size(oid) > 0)::int "
            f"FROM pg_class WHERE oid = {pg_literal(self.ref)}::regclass"))

    def differs(self, col: ColumnInfo) -> str:
        if col.type_sql.upper() == "JSON":  # json has no equality operator; jsonb does
            q = self.q(col.name)
            return f"t.{q}::jsonb IS DISTINCT FROM s.{q}::jsonb"
        return super().differs(col)


def holder_text(pid: int | None, client_addr: Any, backend_start: Any) -> str:
    """`, held by pid N from ADDR since TIME`: what the holder's session shows. Another role's
    session shows a non-superuser NULL for everything but the pid (DESIGN 4.5)."""
    parts = [f"pid {pid}"] if pid is not None else []
    if backend_start is None:
        parts.append("(a session of another role: its details are hidden from this one)")
    else:
        parts.append(f"from {client_addr or 'local'} since {backend_start:%Y-%m-%d %H:%M:%S%z}")
    return ", held by " + " ".join(parts)


class PostgresTarget(SqlTarget):
    dialect = "postgresql"
    writer_class = PostgresWriter

    def __init__(self, url: str) -> None:
        parsed = sa.engine.make_url(url)
        if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(
            parsed, pool_pre_ping=True,
            connect_args={**PG_CONNECT_ARGS,
                          # staging and the diff's hash join stay in memory, not temp files;
                          # refsync's own timeouts win over a role's (DESIGN 4.7)
                          "options": "-c temp_buffers=256MB -c work_mem=256MB "
                                     "-c statement_timeout=0 -c lock_timeout=300000"},
        )
        super().__init__(engine, redact_url(parsed.render_as_string(hide_password=False)))
        self._lock_conn: Connection | None = None
        self._lock_pid: int | None = None
        self._in_use: set[Any] = set()  # psycopg connections checked out, for cancel()
        # re-entrant: `cancel` runs in the signal handler, on the main thread, which may be
        # checking a connection in or out while holding it
        self._in_use_guard = threading.RLock()
        sa.event.listen(engine, "checkout", self._checked_out)
        sa.event.listen(engine, "checkin", self._checked_in)
        self._watchdog = Watchdog(libpq_uri(parsed.render_as_string(hide_password=False)),
                                  PG_CONNECT_ARGS, self._active, abort_socket, self.describe())

    def close(self) -> None:
        self._watchdog.stop()
        super().close()

    def _checked_out(self, dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        with self._in_use_guard:
            self._in_use.add(dbapi_conn)

    def _checked_in(self, dbapi_conn: Any, _record: Any) -> None:
        with self._in_use_guard:
            self._in_use.discard(dbapi_conn)

    def _active(self) -> list[Any]:
        """The checked-out connections with a statement in flight (no I/O)."""
        with self._in_use_guard:
            conns = list(self._in_use)
        out = []
        for conn in conns:
            try:
                if conn.pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                    out.append(conn)
            except Exception:  # noqa: BLE001 - a broken connection has nothing in flight
                log.debug("reading a connection's status failed", exc_info=True)
        return out

    def cancel(self) -> bool:
        """Cancel, on the server, every statement refsync has in flight on this target (a
        signal stops the run). True when something was running: it fails with 57014 now."""
        cancelled = False
        for conn in self._active():
            try:
                conn.cancel_safe(timeout=interrupts.CANCEL_TIMEOUT_S)
                cancelled = True
            except Exception:  # noqa: BLE001 - a broken connection has nothing to cancel
                log.debug("cancel failed", exc_info=True)
        return cancelled

    def abort(self) -> None:
        """Close the sockets of the statements in flight, under the calls blocked on them (a
        server or proxy that stopped answering): each fails at once as a lost connection."""
        for conn in self._active():
            abort_socket(conn)

    def stoppable(self) -> interrupts.Stoppable:
        return interrupts.Stoppable(busy=lambda: bool(self._active()), cancel=self.cancel,
                                    abort=self.abort)

    def describe_table(self, schema: str, table: str, lock_timeout: timedelta | None = None,
                       ) -> tuple[dict[str, ColumnInfo] | None, list[set[str]]]:
        """The catalogue in one query (SQLAlchemy's reflection takes nine statements and two
        connections a table). Reads pg_catalog only, so it takes no lock on the table: the
        table's own statements wait for locks, bounded by its lock_timeout."""
        with self.connect() as conn:
            rows = conn.exec_driver_sql(_DESCRIBE, (self.table_ref(schema, table),)).all()
        if not rows:
            return None, []
        columns = {r.attname: pg_column_info(r.attname, r.typname, r.typmod, r.typtype,
                                             not r.attnotnull, r.type_sql, r.enum_length)
                   for r in rows if r.attname is not None}
        return columns, [set(k) for k in rows[0].unique_keys or []]

    def _prepare(self, conn: Connection, *, snapshot: bool = False) -> Connection:
        # a plan reads the target in one snapshot, so a concurrent sync cannot split it
        return conn.execution_options(
            isolation_level="REPEATABLE READ" if snapshot else "READ COMMITTED")

    takes_copy_text = True

    def set_timezone(self, conn: Connection, zone: str) -> None:
        """PostgreSQL parses a naive time bound for timestamptz in the session's TimeZone,
        with every historical rule of the zone (Asia/Shanghai's 1986-1991 summer time)."""
        conn.execute(sa.text("SELECT set_config('TimeZone', :zone, true)"), {"zone": zone})

    def set_timeouts(self, conn: Connection, *, lock_timeout: timedelta,
                     statement_timeout: timedelta) -> None:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {_ms(lock_timeout)}")
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {_ms(statement_timeout)}")

    # -- the run lock

    @contextmanager
    def run_lock(self) -> Iterator[None]:
        try:
            taken = self._take_lock()
        except sa.exc.SQLAlchemyError as exc:
            raise self.classify(exc, "taking the run lock") from None
        if not taken:
            raise LockHeld(
                f"another refsync run holds the lock on {self.describe()} "
                f"(advisory lock {LOCK_KEY}{self._holder_text()})")
        try:
            yield
        finally:
            self._release_lock()

    def _take_lock(self) -> bool:
        """Take the advisory lock on a session of its own; False when another run has it."""
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k), pg_backend_pid()"),
                               {"k": LOCK_KEY}).one()
        except BaseException:
            conn.close()
            raise
        if not got[0]:
            conn.close()
            return False
        self._lock_conn, self._lock_pid = conn, int(got[1])
        return True

    def _release_lock(self) -> None:
        conn, self._lock_conn, self._lock_pid = self._lock_conn, None, None
        if conn is None:
            return
        try:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
        except sa.exc.SQLAlchemyError:
            log.debug("advisory unlock failed; closing the session frees it", exc_info=True)
        finally:
            try:
                conn.close()
            except sa.exc.SQLAlchemyError:
                log.debug("closing the lock session failed", exc_info=True)

    def _holder(self, conn: Connection) -> int | None:
        return conn.exec_driver_sql(f"SELECT pid FROM pg_locks WHERE {LOCK_ROW}").scalar()

    def _holder_text(self) -> str:
        try:
            with self.connect() as conn:
                row = conn.exec_driver_sql(
                    "SELECT a.pid, a.client_addr, a.backend_start FROM pg_locks l "
                    f"JOIN pg_stat_activity a USING (pid) WHERE {LOCK_ROW}").first()
        except (RefsyncError, sa.exc.SQLAlchemyError):
            return ""
        return "" if row is None else holder_text(*row)

    def hold_lock(self, conn: Connection | None = None) -> None:
        """Before a table writes (and inside its transaction right before applying): this run
        must still hold the run lock. A lost lock session (server restart) is replaced when
        nobody holds the lock; when another run holds it now, LockLost stops this one."""
        if self._lock_pid is None and self._lock_conn is None:
            return  # no lock taken (plan): nothing to hold
        try:
            if conn is None:
                with self.connect() as own:
                    holder = self._holder(own)
            else:
                holder = self._holder(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise self.classify(exc, "checking the run lock") from None
        if holder is not None and holder == self._lock_pid:
            return
        if holder is None:
            log.warning("the run lock's session on %s was lost (e.g. a server restart); "
                        "taking the lock again", self.describe(),
                        extra={"event": "lock_retake"})
            old, self._lock_conn, self._lock_pid = self._lock_conn, None, None
            if old is not None:
                try:
                    old.invalidate()
                    old.close()
                except sa.exc.SQLAlchemyError:
                    pass
            try:
                if self._take_lock():
                    return
            except sa.exc.SQLAlchemyError as exc:
                raise self.classify(exc, "taking the run lock again") from None
            self._lock_pid = -1  # keep checking: this run has no lock now
        raise LockLost(
            f"this run lost its lock on {self.describe()} and another refsync run holds it "
            f"now (advisory lock {LOCK_KEY}{self._holder_text()}); stopping without applying")

    def blockers(self, ref: str) -> str:
        """Name the sessions holding locks on `ref` (after a lock timeout, for the message)."""
        try:
            with self.connect() as conn:
                rows = conn.execute(sa.text(
                    "SELECT DISTINCT a.pid, a.application_name, a.state, a.query_start, l.mode "
                    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.relation = to_regclass(:ref) AND l.granted "
                    "AND a.application_name IS DISTINCT FROM 'refsync' "
                    "ORDER BY a.pid LIMIT 5"), {"ref": ref}).fetchall()
        except (RefsyncError, sa.exc.SQLAlchemyError):
            return "the blocking session could not be read"
        if not rows:
            return "the blocking session has let go since"
        return "blocked by " + "; ".join(
            f"pid {r[0]} (application_name {r[1] or '-'}, state {r[2]}, "
            f"query started {r[3]:%Y-%m-%d %H:%M:%S%z}, holds {r[4]})" if r[3] else
            f"pid {r[0]} (application_name {r[1] or '-'}, state {r[2]}, holds {r[4]})"
            for r in rows)

    # -- errors

    def classify(self, exc: BaseException, doing: str) -> RefsyncError:
        return classify_target_error(exc, self.describe(), doing)

    def table_error(self, exc: BaseException, doing: str, ref: str) -> RefsyncError:
        error = super().table_error(exc, doing, ref)
        if isinstance(error, DiskFull):  # what to VACUUM after a failed first load
            error.message += f"; table {ref}"
            error.hint = (f"free space on the target server's disk; if {ref} was empty "
                          f"before (a first load), run VACUUM {ref} to give back the space "
                          "of the rolled-back rows; nothing of this table was applied")
        return error


def classify_target_error(exc: BaseException, target: str, doing: str) -> RefsyncError:
    """The one classification of an error from a statement refsync sent to the PostgreSQL
    target `target` (its URL without password) while `doing` (the table's writes, the run
    records): SQLSTATE first, then what `classify_db_error` makes of the driver's error."""
    orig: Any = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None) or ""
    diag = getattr(orig, "diag", None)
    detail = (getattr(diag, "message_detail", None) or "") if diag else ""
    primary = (getattr(diag, "message_primary", None) or _first_line(orig)) if diag else (
        _first_line(orig))
    if state == "23503":
        return ConstraintViolation(
            f"{doing} refused by a foreign key: {primary}. {detail}".strip())
    if state.startswith("23"):
        return ConstraintViolation(
            f"{doing} refused by a constraint: {primary}. {detail}".strip())
    if state.startswith("22"):
        return InvalidRows(f"{doing}: the target refused a value: {primary}. {detail}".strip())
    if state == "57014" and (signum := interrupts.pending()) is not None:
        return Interrupted(signum)  # cancelled by refsync itself, on a signal
    known = PG_STATES.get(state)
    if known is not None and known.on_target is not None:
        what, hint = known.on_target
        error = _ERROR_OF_KIND[known.kind](
            f"target {target} ({doing}): {what} ({state} {bounded(primary)})", hint=hint)
        error.side = "target"
        return error
    error = classify_db_error(exc, f"target {target}", doing=doing, side="target")
    if type(error) is QueryFailure and error.hint == QueryFailure.default_hint:
        error.hint = TARGET_HINT  # a target error never points at the source config
    return error


_ERROR_OF_KIND: dict[str, type[RefsyncError]] = {
    "refused": ServerRefused, "disk_full": DiskFull, "conflict": TransientConflict,
    "connection": ConnectionFailure, "query": QueryFailure}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
