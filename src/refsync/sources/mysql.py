"""MySQL/MariaDB sources: `legacy_mysql` (the WDH_LEGACY_MYSQL_* database) and `sql` sources
with a MySQL URL. Everything that only MySQL does lives here:

- the session: refsync's own sql_mode and a UTC time zone on every connection, so server
  settings (NO_BACKSLASH_ESCAPES, ANSI_QUOTES, …) cannot change what its SQL means;
- one consistent snapshot per read (REPEATABLE READ, READ ONLY, WITH CONSISTENT SNAPSHOT),
  whatever the server's default; a table without transactions is read in one statement;
- the fast path: the server formats each row as PostgreSQL COPY text (sources/mysql_copy.py)
  and joins a key range of rows into ONE fetched row (GROUP_CONCAT), sized by bytes to fit
  max_allowed_packet; a range holding a row the pre-check flags is read again as values
  (same snapshot), for the value rules to judge;
- KILL QUERY from a side connection to cancel a read in flight, and PyMySQL's unbuffered
  results forgotten on a dropped connection.

Engines for `legacy_mysql` are cached per settings so the tables of one run share a pool;
`dispose_engines()` closes them all at the end of a run.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    column,
    create_engine,
    event,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.mysql import TIMESTAMP
from sqlalchemy.engine import URL

from refsync.config import MySQLPool, Settings, TableSpec
from refsync.errors import NotConfigured
from refsync.interrupts import Stoppable
from refsync.model import Batch, ColumnInfo, Row
from refsync.sources.base import ReadPlan
from refsync.sources.mysql_copy import CopyColumn, copy_column
from refsync.sources.mysql_read import CopyPlan, MySQLRead
from refsync.sources.sql import SqlSource, core_name
from refsync.watermark import UNSEEN_WRITES_LOOKBACK, OpenWrites

if TYPE_CHECKING:
    from refsync.digest import DigestPlan
    from refsync.digest.plan import SourceColumn

log = logging.getLogger(__name__)

# What refsync's SQL means must not depend on the server's settings (DESIGN 4.1): no
# NO_BACKSLASH_ESCAPES (the COPY escapes and SEPARATOR '\\n'), no ANSI_QUOTES, no
# PAD_CHAR_TO_FULL_LENGTH; TIMESTAMP values in UTC.
MYSQL_SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
MYSQL_SESSION = f"SET SESSION sql_mode = '{MYSQL_SQL_MODE}', time_zone = '+00:00'"
# GROUP_CONCAT's own limit, far above any packet: max_allowed_packet is the one that binds
GROUP_CONCAT_MAX_LEN = 1 << 30
# a chunk's text may fill this share of max_allowed_packet (escapes, uneven rows)
PACKET_SHARE = 0.5
# when the parts digests find different hold more than this share of the rows, read it all
READ_ALL_SHARE = 0.5
# a row's bytes are never taken for fewer than this when sizing digest buckets
MIN_ROW_BYTES = 36
MYSQL_BACKENDS = ("mysql", "mariadb")


def mysql_session(dbapi_conn: Any, _record: Any) -> None:
    """Engine `connect` event: the session's sql_mode and time zone, set before anything else
    runs on the connection (listen with insert=True: SQLAlchemy's dialect reads the sql_mode
    on the first connect to decide how it quotes identifiers)."""
    with dbapi_conn.cursor() as cur:
        cur.execute(MYSQL_SESSION)


def listen_mysql_session(engine: Engine) -> None:
    """Register `mysql_session` on a MySQL engine once (and, for PyMySQL, `pymysql_connect`)."""
    if engine.url.get_backend_name() in MYSQL_BACKENDS and not event.contains(
            engine, "connect", mysql_session):
        event.listen(engine, "connect", mysql_session, insert=True)
        if engine.dialect.driver == "pymysql":
            event.listen(engine, "do_connect", pymysql_connect)


def pymysql_connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    """Engine `do_connect` event: PyMySQL's own connect, its TLS context built once."""
    return _preferred_tls_connection()(*cargs, **cparams)


@cache
def _preferred_tls_connection() -> type:
    import pymysql.connections

    class Connection(pymysql.connections.Connection):  # type: ignore[misc]
        """Without a CA, PyMySQL encrypts where the server offers TLS and verifies nothing
        (its PREFERRED mode), yet builds each connection a default context that loads the
        system's CA store (24 ms a connection here). The same context, unverified, is built
        once and never reads the store; with a CA nothing changes."""

        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if sslp == {}:
                return _unverified_context()
            return super()._create_ssl_ctx(sslp)

    return Connection


@cache
def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# ---------------------------------------------------------------- engines (legacy_mysql)


READ_ONLY_SESSION = "SET SESSION TRANSACTION READ ONLY"
_ENV = "WDH_LEGACY_MYSQL_"

_engines: dict[tuple[Any, ...], Engine] = {}
_lock = threading.Lock()


def mysql_url(settings: Settings, table: str) -> URL:
    """The legacy MySQL URL (the password stays inside the URL object, never in a string).

    Raises NotConfigured naming each missing variable; `table` names who needs them.
    """
    missing = [f"{_ENV}{name.upper()}" for name in ("host", "user", "database")
               if not getattr(settings, f"legacy_mysql_{name}")]
    if missing:
        raise NotConfigured(
            f"table {table} needs {', '.join(missing)}: legacy MySQL is not configured",
            hint=f"check {missing[0]} (and the other {_ENV}* variables, in the environment "
                 "or .env)",
        )
    password = settings.legacy_mysql_password
    return URL.create(
        "mysql+pymysql",
        username=settings.legacy_mysql_user,
        password=password.get_secret_value() if password is not None else None,
        host=settings.legacy_mysql_host,
        port=settings.legacy_mysql_port,
        database=settings.legacy_mysql_database,
    )


def connect_args(settings: Settings, pool: MySQLPool) -> dict[str, Any]:
    """PyMySQL connect() arguments: timeouts, utf8mb4, TLS, a read-only session."""
    args: dict[str, Any] = {
        "connect_timeout": pool.connect_timeout,
        "read_timeout": pool.read_timeout,
        "write_timeout": pool.read_timeout,
        "charset": "utf8mb4",
        "init_command": READ_ONLY_SESSION,
    }
    ca = settings.legacy_mysql_ssl_ca
    if ca is not None and str(ca) not in ("", "."):  # an empty variable reads as Path(".")
        if not Path(ca).is_file():
            raise NotConfigured(
                f"{_ENV}SSL_CA names a file that does not exist: {Path(ca).absolute()}",
                hint=f"point {_ENV}SSL_CA at the CA certificate (PEM) of the MySQL server",
            )
        args["ssl"] = {"ca": str(ca)}
    return args


def get_engine(settings: Settings, pool: MySQLPool, *, table: str = "legacy_mysql") -> Engine:
    """The shared engine for these settings and pool options (created on first use)."""
    url = mysql_url(settings, table)
    args = connect_args(settings, pool)
    key = (url, str(settings.legacy_mysql_ssl_ca or ""), pool.pool_size, pool.max_overflow,
           pool.connect_timeout, pool.read_timeout)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = create_engine(
                url,
                connect_args=args,
                pool_size=pool.pool_size,
                max_overflow=pool.max_overflow,
                pool_pre_ping=True,
            )
            listen_mysql_session(engine)
            _engines[key] = engine
        return engine


def dispose_engines() -> None:
    """Close every cached legacy MySQL engine and its pooled connections."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()




def _date_or_none(value: Any) -> Any:
    """A chunk's largest cursor, when it is a date (a zero date comes back as text)."""
    return value if isinstance(value, date) else None


# ---------------------------------------------------------------- snapshots and cancelling


def begin_snapshot(conn: Connection) -> None:
    """One consistent, read-only snapshot whatever the server's defaults (DESIGN 4.1)."""
    conn.exec_driver_sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")


# The oldest transaction writing on the server (modified rows, or holds or waits for a
# lock). `trx_started` is the server process's local time (whole seconds), hence 'SYSTEM'.
_OLDEST_WRITE_SQL = (
    "SELECT CONVERT_TZ(MIN(trx_started), 'SYSTEM', '+00:00') FROM information_schema.INNODB_TRX"
    " WHERE trx_mysql_thread_id <> CONNECTION_ID() AND (trx_rows_modified > 0"
    " OR trx_tables_locked > 0 OR trx_rows_locked > 0 OR trx_state = 'LOCK WAIT')")
_ER_SPECIFIC_ACCESS_DENIED = 1227  # innodb_trx needs the PROCESS privilege
_ER_NO_SUCH_THREAD = 1094  # KILL of a connection the server no longer has
_warned_no_process: weakref.WeakSet[Engine] = weakref.WeakSet()


def read_open_writes(conn: Connection, engine: Engine, where: str) -> OpenWrites:
    """What InnoDB shows of the transactions writing now (for `watermark.open_write_cap`).
    Without the PROCESS privilege it shows nothing: warned once per engine (per run)."""
    try:
        oldest = conn.exec_driver_sql(_OLDEST_WRITE_SQL).scalar()
    except sa_exc.DBAPIError as exc:
        code = getattr(exc.orig, "args", (None,))[0]
        if code != _ER_SPECIFIC_ACCESS_DENIED:
            raise
        if engine not in _warned_no_process:
            _warned_no_process.add(engine)
            log.warning("%s: the source user lacks the PROCESS privilege, so the transactions "
                        "open on the source are not visible: incremental watermarks stay %d "
                        "minutes behind the source's clock (GRANT PROCESS ON *.* to end this)",
                        where, UNSEEN_WRITES_LOOKBACK // timedelta(minutes=1),
                        extra={"event": "no_process_privilege"})
        return OpenWrites(visible=False, oldest_utc=None)
    return OpenWrites(visible=True,
                      oldest_utc=oldest.replace(tzinfo=UTC) if isinstance(oldest, datetime)
                      else None)


def kill_query(engine: Engine, connection_id: int, where: str) -> bool:
    """`KILL QUERY` for a connection's statement in flight, from a new side connection
    outside the pool (same connect arguments). Best effort: never raises."""
    try:
        side_pool = engine.pool.recreate()
        try:
            side = side_pool.connect()
            try:
                cur = side.cursor()
                cur.execute(f"KILL QUERY {int(connection_id)}")
                cur.close()
            finally:
                side.close()
        finally:
            side_pool.dispose()
    except Exception as exc:  # noqa: BLE001 - the work in flight fails or ends on its own
        if getattr(exc, "args", (None,))[:1] == (_ER_NO_SUCH_THREAD,):
            # the connection closed as the signal came (its read ended): nothing in flight
            log.debug("%s: nothing to cancel: connection %d has ended", where, connection_id)
            return False
        log.warning("%s: could not cancel the statement in flight", where, exc_info=True)
        return False
    log.info("%s: cancelled the statement in flight (connection %d)", where, connection_id)
    return True


# ---------------------------------------------------------------- the source


class MySQLSource(SqlSource):
    """A MySQL/MariaDB table: snapshots, server-made COPY text, KILL QUERY (see the module)."""

    def __init__(self, spec: TableSpec, engine: Engine, *, batch_size: int,
                 owns_engine: bool = True) -> None:
        super().__init__(spec, engine, batch_size=batch_size, owns_engine=owns_engine)
        # statistics (information_schema.TABLES), read by open()
        self.changed_at: datetime | None = None
        self._transactional = True
        self._table_rows: int | None = None
        self._avg_row_length = 0
        self._facts: dict[str, SourceColumn] | None = None  # information_schema's columns
        # the read in flight: its connection id, for `cancel`
        self._read_connection_id: int | None = None
        self._read_raw: Any = None  # its DB-API connection, whose socket `_abort` closes
        # re-entrant: `cancel` runs in the signal handler, on the main thread, which may be
        # inside `_begin_read`/`_end_read` holding it
        self._read_lock = threading.RLock()
        self.open_writes: OpenWrites | None = None  # seen as the read's snapshot began
        listen_mysql_session(engine)

    # -- what open() learns

    def _after_introspect(self, conn: Connection) -> None:
        """The table's engine (a snapshot needs transactions), estimated rows and average row
        length (to size chunks by bytes), from information_schema: cheap."""
        self._facts = None  # the columns as they are now, when asked for
        row = conn.execute(text(
            "SELECT t.ENGINE, e.TRANSACTIONS, t.TABLE_ROWS, t.AVG_ROW_LENGTH, t.UPDATE_TIME "
            "FROM information_schema.TABLES t "
            "LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
            "WHERE t.TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND t.TABLE_NAME = :name"),
            {"schema": self.schema, "name": self.table}).first()
        if row is None:
            return
        engine_name, transactions, table_rows, avg_row_length, update_time = row
        self._table_rows = None if table_rows is None else int(table_rows)
        self._avg_row_length = int(avg_row_length or 0)
        # the server's last commit on the table (whole seconds in the session's UTC; InnoDB
        # keeps it in memory: NULL after a restart), a hint for `state.LastRun`
        self.changed_at = (update_time.replace(tzinfo=UTC)
                           if isinstance(update_time, datetime) else None)
        if engine_name is not None and transactions != "YES":
            self._transactional = False
            msg = (f"source table {self.table_name} uses the {engine_name} engine, which has no "
                   "transactions: it is read in one statement (no consistent snapshot across "
                   "tables or chunks)")
            log.warning("%s: %s", self.where_text, msg)
            self.warnings.append(msg)

    def estimated_rows(self) -> int | None:
        self.open()
        return self._table_rows

    def _zero_date(self) -> str | None:
        if isinstance(self._cursor_type, sqltypes.DateTime):
            return "0000-00-00 00:00:00"
        if isinstance(self._cursor_type, sqltypes.Date):
            return "0000-00-00"
        return None

    # -- reading

    def iter_batches(self, since: Any | None) -> Iterator[Batch]:
        for batch in super().iter_batches(since):
            yield self._as_values(batch)

    def _as_values(self, batch: Sequence[Row]) -> Batch:
        """TIMESTAMP columns (instants, read in a UTC session) become aware datetimes, so
        they land in a timestamptz column unchanged; DATETIME stays naive."""
        utc_at = [i for i, n in enumerate(self.columns)
                  if isinstance(self._source_types.get(n), TIMESTAMP)]
        if not utc_at:
            return list(batch)
        out = []
        for row in batch:
            values = list(row)
            for i in utc_at:
                if isinstance(values[i], datetime):
                    values[i] = values[i].replace(tzinfo=UTC)
            out.append(tuple(values))
        return out

    def read_plan(self, columns: list[ColumnInfo], *, copy_text: bool,
                  source_timezone: str, target_rows: int | None) -> ReadPlan:
        """COPY text the server makes where the target takes it and every column has a
        server-side rule (in key ranges on a one-column key, else one streaming statement),
        with digests where both databases can compute them (`target_rows` given); source
        values otherwise."""
        unique = self.keys_unique(columns)
        copy = self.copy_plan(columns) if copy_text else None
        if copy is None:
            return ReadPlan("values", unique_keys=unique)
        digests = (self.digest_plan(columns, source_timezone, rows=target_rows)
                   if target_rows is not None else None)
        return ReadPlan("copy_ranges" if copy.key is not None else "copy_stream", copy, digests,
                        unique_keys=unique)

    def keys_unique(self, columns: list[ColumnInfo]) -> bool:
        """Whether the table's primary key keeps every configured key once in any read: the
        key's source columns hold the primary key's, and each of those reaches the target
        as it is (`digest.ranges.key_as_is`). Then the duplicate-key check, a grouping of
        every staged row (about 1 s a million rows), can find nothing."""
        from refsync.digest.ranges import key_as_is

        self.open()
        by_target = dict(zip(self.columns, self.source_columns, strict=True))
        keyed = {by_target.get(k): k for k in self.spec.primary_key}
        if not self._pk or not set(self._pk) <= set(keyed):
            return False
        found, infos = self._source_facts(), {c.name: c for c in columns}
        return all(found.get(s) is not None and keyed[s] in infos
                   and key_as_is(found[s], infos[keyed[s]]) for s in self._pk)

    def _source_facts(self) -> dict[str, SourceColumn]:
        """The table's columns as information_schema has them (name -> SourceColumn): read
        once a source."""
        from refsync.sources.mysql_digest import read_source_columns

        if self._facts is None:
            try:
                with self.engine.connect() as conn:
                    self._facts = read_source_columns(conn, self.table, self.schema)
            except Exception as exc:
                raise self._error(exc) from exc
        return self._facts

    @contextmanager
    def reading(self, since: Any | None, plan: ReadPlan) -> Iterator[MySQLRead]:
        """One read in one snapshot (see `_begin_read`), for the thread that opens it."""
        self.open()
        with self._reading(since) as (conn, results):
            yield MySQLRead(self, conn, results, since, plan)

    def digest_plan(self, columns: list[ColumnInfo], source_timezone: str, *,
                    rows: int = 0) -> DigestPlan | None:
        """How both databases can digest this table (None, said at -v, where they cannot);
        `rows`: the target's own estimate, when MySQL's statistics lag behind a new table."""
        plan, why = self.plan_digests(columns, source_timezone, rows=rows)
        if plan is None:
            log.debug("%s: no digests, the table is read in full: %s", self.where_text, why)
        return plan

    def plan_digests(self, columns: list[ColumnInfo], source_timezone: str, *,
                     rows: int = 0) -> tuple[DigestPlan | None, str | None]:
        """(the digest plan, or None and why not)."""
        from refsync import digest  # the digests' code loads only where a table digests

        self.open()
        found = self._source_facts()
        stale = (self._table_rows or 0) < rows  # MySQL's statistics lag behind a new table
        plan, why = digest.plan_digest(
            [found[c] for c in self.source_columns], columns, self.spec.primary_key,
            source_timezone, rows=max(self._table_rows or 0, rows),
            # (InnoDB's page-based figure reads tiny on a small new table)
            avg_row_bytes=None if stale else max(self._avg_row_length, MIN_ROW_BYTES))
        return plan, why

    def copy_plan(self, columns: list[ColumnInfo]) -> CopyPlan | None:
        """The fast path's plan, or None (said in the -v log) when the table cannot take it."""
        self.open()
        why = None
        if not self._transactional:
            why = "the source table has no transactions: read in one statement"
        elif self.cursor_column is not None and not self._cursor_is_dated():
            why = f"the cursor column {self.cursor_column} is not a date"
        plan: list[CopyColumn] = []
        for source_name, info in zip(self.source_columns, columns, strict=True):
            if why is not None:
                break
            rule = copy_column(column(core_name(source_name)),
                               self._source_types.get(info.name), info,
                               source_nullable=source_name not in self._source_not_null)
            if rule is None:
                why = (f"no server-side rule for {source_name} "
                       f"({self._source_types.get(info.name)!r} into {info.type_sql or info.kind})")
            plan.append(rule)  # type: ignore[arg-type]
        if why is not None:
            log.debug("%s: rows are read as values: %s", self.where_text, why)
            return None
        if len(self._pk) != 1:
            log.debug("%s: no one-column primary key to read ranges of: the table is read in "
                      "one streaming statement", self.where_text)
        return CopyPlan(plan, self._pk[0] if len(self._pk) == 1 else None)

    def _rows_per_chunk(self, budget: int, row_bytes: int) -> int:
        """`batch_size`, or fewer rows when rows of `row_bytes` would not fit `budget`."""
        if row_bytes <= 0:
            return self.batch_size
        return max(1, min(self.batch_size, budget // row_bytes))

    # -- the read's snapshot, and cancelling it

    def _begin_read(self, conn: Connection) -> None:
        """REPEATABLE READ (the session's or server's level may be lower), a READ ONLY
        transaction WITH CONSISTENT SNAPSHOT; note the server's clock, the writes open on it
        and the connection id."""
        with self._read_lock:
            self._read_raw = conn.connection.dbapi_connection
        # the clock and the open writes just before the snapshot: a row committed after it
        # was stamped by a write open then, or by a later one with a later clock
        connection_id, now = conn.exec_driver_sql(
            "SELECT CONNECTION_ID(), UTC_TIMESTAMP(6)").one()
        self.open_writes = read_open_writes(conn, self.engine, self.where_text)
        begin_snapshot(conn)
        if isinstance(now, datetime):
            self.snapshot_utc = now.replace(tzinfo=UTC)
        with self._read_lock:
            self._read_connection_id = int(connection_id)

    def _end_read(self) -> None:
        with self._read_lock:
            self._read_connection_id = None
            self._read_raw = None

    def stoppable(self) -> Stoppable:
        return Stoppable(busy=lambda: self._read_raw is not None, cancel=self.cancel,
                         abort=self._abort)

    def _abort(self) -> None:
        """Close the read's socket under a call blocked on it (a server that stopped
        answering): the call fails at once as a lost connection."""
        with self._read_lock:
            raw = self._read_raw
        sock = getattr(raw, "_sock", None)
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> bool:
        """Stop the statement of the read in flight on the server: KILL QUERY from a new side
        connection. Safe from another thread, a no-op when nothing is in flight, never
        raises. The read then fails with "query interrupted"."""
        with self._read_lock:
            connection_id = self._read_connection_id
        if connection_id is None:
            return False
        kill_query(self.engine, connection_id, self.where_text)
        return False  # the read's own error ends the table, converted to the interruption

    def _forget_unfinished(self, raw: Any) -> None:
        """PyMySQL: forget an unfinished unbuffered result on a connection being discarded.

        Closing (or garbage-collecting) its SSCursor would otherwise read the remaining rows:
        all of them on a live socket, and on a lost one it raises AttributeError ('NoneType'
        object has no attribute 'read') from __del__, "Exception ignored in SSCursor.close".
        """
        result = getattr(raw, "_result", None)
        if getattr(result, "unbuffered_active", False) is True:
            result.unbuffered_active = False  # type: ignore[union-attr]


class LegacyMySQLSource(MySQLSource):
    """A legacy MySQL table: on the shared WDH_LEGACY_MYSQL_* engine."""

    source_type = "legacy_mysql"

    def __init__(self, spec: TableSpec, settings: Settings, pool: MySQLPool, *,
                 batch_size: int) -> None:
        engine = get_engine(settings, pool, table=spec.name)
        super().__init__(spec, engine, batch_size=batch_size, owns_engine=False)

    def describe(self) -> str:
        return f"mysql://{self.location()} table {self.table_name}"
