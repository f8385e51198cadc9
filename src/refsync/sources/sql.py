"""`source_type: sql`: a table read through any SQLAlchemy URL, streamed in batches.

Query building (`build_select`) is pure; `SqlSource` executes it with a server-side cursor
(`stream_results` + `yield_per`), so memory stays flat whatever the table's size.
`legacy_mysql` (sources/mysql.py) is the same source on an engine built from WDH_LEGACY_MYSQL_*.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    CHAR,
    Connection,
    Engine,
    Select,
    bindparam,
    case,
    cast,
    column,
    create_engine,
    event,
    func,
    inspect,
    literal,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy import types as sqltypes
from sqlalchemy.engine import URL, make_url
from sqlalchemy.sql.elements import ColumnClause, ColumnElement, quoted_name

from refsync.config import SqlSourceConfig, TableSpec
from refsync.errors import ConfigError, FileMissing, NotConfigured, QueryFailure, RefsyncError
from refsync.model import Batch
from refsync.sources.dberrors import classify_db_error, scrub

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


def mysql_session(dbapi_conn: Any, _record: Any) -> None:
    """Engine `connect` event: the session's sql_mode and time zone, set before anything else
    runs on the connection (listen with insert=True: SQLAlchemy's dialect reads the sql_mode
    on the first connect to decide how it quotes identifiers)."""
    with dbapi_conn.cursor() as cur:
        cur.execute(MYSQL_SESSION)


def listen_mysql_session(engine: Engine) -> None:
    """Register `mysql_session` on a MySQL engine once."""
    if engine.url.get_backend_name() in ("mysql", "mariadb") and not event.contains(
            engine, "connect", mysql_session):
        event.listen(engine, "connect", mysql_session, insert=True)


# ---------------------------------------------------------------- query building (pure)


@dataclass(frozen=True)
class TextChunk:
    """Rows as COPY text lines joined by newlines, as a server formatted them."""

    text: bytes  # UTF-8
    rows: int
    bad: int  # rows the server saw would not fit: check this chunk line by line
    high: Any  # the largest cursor value in the chunk (None: none, or not a date)
    bad_low: Any = None  # the smallest cursor among the rows the server flagged


def _q(name: str) -> quoted_name:
    """An identifier SQLAlchemy always quotes (Chinese, reserved words, odd characters)."""
    return quoted_name(name, True)


def split_table_name(name: str) -> tuple[str | None, str]:
    """`schema.table` → (schema, table); a plain name → (None, name)."""
    if name.count(".") == 1:
        schema, tbl = name.split(".")
        if schema and tbl:
            return schema, tbl
    return None, name


def build_select(
    table_name: str,
    source_columns: Sequence[str],
    cursor_column: str | None,
    since_given: bool,
    where: str | None,
    *,
    schema: str | None = None,
    column_types: Mapping[str, sqltypes.TypeEngine[Any]] | None = None,
) -> Select[Any]:
    """SELECT the mapped columns (then the cursor column, when set) of one table.

    With `since_given`, a configured `where` is used verbatim with `:last_synced_at` bound
    at execution; without one the window is `cursor >= :since` (inclusive). No ORDER BY.
    `column_types` types result columns and the bound watermark (SQLite needs it for dates).
    Identifiers are always quoted; values are always bound.
    """
    types = column_types or {}
    names = [*source_columns, *([cursor_column] if cursor_column else [])]
    cols = [column(_q(n), types.get(n)) for n in names]
    # Same-named columns (a cursor column that is also mapped) need distinct labels to survive.
    labelled = [c.label(f"c{i}") if names.count(names[i]) > 1 else c for i, c in enumerate(cols)]
    stmt = select(*labelled).select_from(
        table(_q(table_name), schema=_q(schema) if schema else None))
    if since_given and cursor_column:
        ctype = types.get(cursor_column)
        if where is not None:
            # the operator's condition is one term: an OR in it must not bind looser than
            # the chunk bounds ANDed after it
            stmt = stmt.where(text(f"({where})").bindparams(
                bindparam("last_synced_at", type_=ctype)))
        else:
            stmt = stmt.where(column(_q(cursor_column), ctype) >= bindparam("since", type_=ctype))
    return stmt


_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def copy_text_field(col: ColumnElement[Any]) -> ColumnElement[Any]:
    """MySQL: a value as a PostgreSQL COPY text field (backslash escapes, NULL as \\N)."""
    for raw, escaped in _COPY_ESCAPES:
        col = func.replace(col, literal(raw), literal(escaped))
    return func.ifnull(col, literal("\\N"))


def build_line_select(
    table_name: str,
    source_columns: Sequence[str],
    cursor_column: str | None,
    since_given: bool,
    where: str | None,
    *,
    schema: str | None = None,
    column_types: Mapping[str, sqltypes.TypeEngine[Any]] | None = None,
    cursor_field: bool = True,
) -> Select[Any]:
    """As build_select, but the server formats each row as one COPY text line (MySQL):
    one string per row is far cheaper to fetch than a value per column. The cursor, when
    set, is the last field, as the server prints it."""
    stmt = build_select(table_name, source_columns, cursor_column, since_given, where,
                        schema=schema, column_types=column_types)
    fields = [copy_text_field(column(_q(c))) for c in source_columns]
    if cursor_column and cursor_field:
        fields.append(func.ifnull(cast(column(_q(cursor_column)), CHAR()), literal("\\N")))
    return stmt.with_only_columns(func.concat_ws(literal("\t"), *fields).label("line"))


def build_chunk_bounds(
    line_select: Select[Any],
    key: str,
    key_type: sqltypes.TypeEngine[Any] | None,
    *,
    after_given: bool,
    limit: int,
) -> Select[Any]:
    """(last key, row count) of the next `limit` rows after `:after` in key order: a walk
    over the key alone, so the chunk itself can be read as a plain range."""
    k = column(_q(key), key_type)
    inner = line_select.with_only_columns(k.label("k"))
    if after_given:
        inner = inner.where(k > bindparam("after", type_=key_type))
    x = inner.order_by(k).limit(limit).subquery("x")
    stmt: Select[Any] = select(func.max(x.c.k), func.count()).select_from(x)  # type: ignore[assignment]
    return stmt


def build_chunk_select(
    line_select: Select[Any],
    key: str,
    key_type: sqltypes.TypeEngine[Any] | None,
    cursor_column: str | None,
    bad: ColumnElement[Any],
    *,
    after_given: bool,
) -> Select[Any]:
    """The rows with `:after < key <= :upto`, aggregated by the server into ONE row: (all
    lines joined by newlines, row count, rows failing `bad`, largest cursor). Fetching a row
    per chunk instead of per source row is what makes a pure-Python driver fast; the count
    lets the caller prove nothing was cut off. Without ORDER BY or LIMIT the server merges
    the derived table into a range scan instead of materialising it."""
    k = column(_q(key), key_type)
    inner = line_select.add_columns(
        bad.label("bad"), *([column(_q(cursor_column)).label("cur")] if cursor_column else []))
    inner = inner.where(k <= bindparam("upto", type_=key_type))
    if after_given:
        inner = inner.where(k > bindparam("after", type_=key_type))
    x = inner.subquery("x")
    line = x.c[0]
    return select(
        # no ORDER BY inside: COPY does not care, and it would make the server sort. As
        # UTF-8 bytes: nothing to decode here nor to encode again for COPY.
        literal_column(  # noqa: S608 - fixed text around a label
            f"CAST(CONVERT(GROUP_CONCAT({line.name} SEPARATOR '\\n') USING utf8mb4) AS BINARY)"),
        func.count(), func.coalesce(func.sum(x.c.bad), 0),
        func.max(x.c.cur) if cursor_column else literal(None),
        func.min(case((x.c.bad == 1, x.c.cur))) if cursor_column else literal(None))


def build_count_null_cursor(
    table_name: str,
    cursor_column: str,
    *,
    schema: str | None = None,
    zero_date: str | None = None,
) -> Select[Any]:
    """SELECT count(*) of rows an incremental read never sees: NULL (or zero-date) cursor."""
    col: ColumnClause[Any] = column(_q(cursor_column))
    cond: ColumnElement[bool] = col.is_(None)
    if zero_date is not None:
        cond = or_(cond, col == literal(zero_date))
    return (select(func.count()).select_from(
        table(_q(table_name), schema=_q(schema) if schema else None)).where(cond))


# ---------------------------------------------------------------- SQLite date columns


class _SQLiteDateText(sqltypes.TypeDecorator[Any]):
    """SQLite keeps dates as text: parse them leniently (an unparsable value stays a string,
    for the transform to reject) and bind a watermark in its shortest ISO form, so that
    `>=` stays inclusive whether the stored text carries microseconds or not."""

    impl = sqltypes.String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat(sep=" ")
        if isinstance(value, date):
            return value.isoformat()
        return value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, str):
            return parse_iso(value, value)
        return value


def parse_iso(value: str, default: Any = None) -> Any:
    """`2024-01-02` → date, `2024-01-02 03:04:05[.ffffff][+08:00]` → datetime, else default."""
    text_value = value.strip()
    try:
        if len(text_value) == 10:
            return date.fromisoformat(text_value)
        return datetime.fromisoformat(text_value)
    except ValueError:
        return default


# ---------------------------------------------------------------- the source


class SqlSource:
    """Rows of one table behind a SQLAlchemy engine, streamed `batch_size` at a time."""

    source_type = "sql"

    def __init__(
        self,
        spec: TableSpec,
        engine: Engine,
        *,
        batch_size: int,
        owns_engine: bool = True,
    ) -> None:
        sc = spec.source_config
        if not isinstance(sc, SqlSourceConfig):
            raise ConfigError(f"table {spec.name}: {spec.source_type} needs a table source_config")
        self.spec = spec
        self.engine = engine
        self.batch_size = batch_size
        self._owns_engine = owns_engine
        self.table_name = sc.table
        self.schema, self.table = split_table_name(sc.table)
        self.source_columns = [c.source for c in sc.columns]
        self.columns: list[str] = [c.target for c in sc.columns]
        self.cursor_column: str | None = (
            sc.incremental.updated_at_column if sc.incremental else None)
        self.where: str | None = sc.incremental.where if sc.incremental else None
        self.warnings: list[str] = []
        self._cursor_type: sqltypes.TypeEngine[Any] | None = None
        self._column_types: dict[str, sqltypes.TypeEngine[Any]] = {}
        self._source_types: dict[str, sqltypes.TypeEngine[Any]] = {}
        self._pk: list[str] = []
        self._key_type: sqltypes.TypeEngine[Any] | None = None
        self._opened = False
        # MySQL statistics (information_schema.TABLES), read by open()
        self._transactional = True
        self._table_rows: int | None = None
        self._avg_row_length = 0
        # the read in flight: the server's clock when its snapshot began, its connection id
        self.snapshot_utc: datetime | None = None
        self._read_connection_id: int | None = None
        self._read_lock = threading.Lock()
        listen_mysql_session(engine)

    @classmethod
    def from_spec(cls, spec: TableSpec, *, batch_size: int) -> SqlSource:
        """A `sql` source: the URL from `source_config.url`, or the variable `url_env` names."""
        url = resolve_url(spec)
        try:
            engine = create_engine(url)
        except (sa_exc.ArgumentError, ImportError) as exc:
            raise ConfigError(
                f"table {spec.name}: cannot use {url.drivername!r} URLs "
                f"({type(exc).__name__}: {scrub(str(exc))})") from None
        return cls(spec, engine, batch_size=batch_size)

    # -- where the rows come from, without secrets

    @property
    def url(self) -> URL:
        return self.engine.url

    def location(self) -> str:
        """`user@host:port/db`, or the SQLite file; never the password."""
        return url_location(self.url)

    def describe(self) -> str:
        scheme = self.url.get_backend_name()
        if self.url.host:
            return f"{scheme}://{self.location()} table {self.table_name}"
        return f"{scheme}:///{self.location()} table {self.table_name}"

    @property
    def where_text(self) -> str:
        """Prefix for error messages: `legacy_mysql annuity_plan on root@host:3306/db`."""
        return f"{self.source_type} {self.table_name} on {self.location()}"

    def _error(self, exc: BaseException, *, streaming: bool = False,
               connection_lost: bool = False) -> RefsyncError:
        return classify_db_error(exc, self.where_text, streaming=streaming,
                                 connection_lost=connection_lost, side="source")

    # -- open: introspect the table once

    def open(self) -> SqlSource:
        """Check the table and its columns exist; resolve the cursor column. Idempotent."""
        if self._opened:
            return self
        self._check_sqlite_file()
        try:
            with self.engine.connect() as conn:
                found = self._introspect(conn)
        except sa_exc.NoSuchTableError:
            raise QueryFailure(
                f"{self.where_text}: source table {self.table_name} not found",
                hint="check source_config.table",
            ) from None
        except RefsyncError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        self._resolve_columns(found)
        self._opened = True
        return self

    def _check_sqlite_file(self) -> None:
        """SQLite would create a missing file: report it instead of reading an empty database."""
        if self.url.get_backend_name() != "sqlite":
            return
        db = self.url.database or ""
        if db and db != ":memory:" and not db.startswith("file:") and not Path(db).exists():
            raise FileMissing(
                f"{self.source_type} {self.table_name}: SQLite database file not found: "
                f"{Path(db).absolute()}",
                hint="check source_config.url",
            )

    def _introspect(self, conn: Connection) -> dict[str, sqltypes.TypeEngine[Any]]:
        with warnings.catch_warnings():
            # an unrecognised column type (SAWarning) does not matter: names are what we need
            warnings.simplefilter("ignore", sa_exc.SAWarning)
            insp = inspect(conn)
            cols = insp.get_columns(self.table, schema=self.schema)
            self._pk = list(insp.get_pk_constraint(self.table, schema=self.schema)
                            .get("constrained_columns") or [])
        found = {c["name"]: c["type"] for c in cols}
        if len(self._pk) == 1:
            self._key_type = found.get(self._pk[0])
        if self._is_mysql:
            self._read_table_statistics(conn)
        return found

    @property
    def _is_mysql(self) -> bool:
        return self.url.get_backend_name() in ("mysql", "mariadb")

    def _read_table_statistics(self, conn: Connection) -> None:
        """MySQL: the table's engine (a snapshot needs transactions), estimated rows and
        average row length (to size chunks by bytes), from information_schema: cheap."""
        row = conn.execute(text(
            "SELECT t.ENGINE, e.TRANSACTIONS, t.TABLE_ROWS, t.AVG_ROW_LENGTH "
            "FROM information_schema.TABLES t "
            "LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
            "WHERE t.TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND t.TABLE_NAME = :name"),
            {"schema": self.schema, "name": self.table}).first()
        if row is None:
            return
        engine_name, transactions, table_rows, avg_row_length = row
        self._table_rows = None if table_rows is None else int(table_rows)
        self._avg_row_length = int(avg_row_length or 0)
        if engine_name is not None and transactions != "YES":
            self._transactional = False
            msg = (f"source table {self.table_name} uses the {engine_name} engine, which has no "
                   "transactions: it is read in one statement (no consistent snapshot across "
                   "tables or chunks)")
            log.warning("%s: %s", self.where_text, msg)
            self.warnings.append(msg)

    def estimated_rows(self) -> int | None:
        """The server's estimate of the table's rows (MySQL statistics), for progress only."""
        self.open()
        return self._table_rows

    def _resolve_columns(self, found: dict[str, sqltypes.TypeEngine[Any]]) -> None:
        folded: dict[str, list[str]] = {}
        for n in found:
            folded.setdefault(n.casefold(), []).append(n)

        def actual(name: str) -> str | None:
            if name in found:
                return name
            hits = folded.get(name.casefold(), [])
            return hits[0] if len(hits) == 1 else None

        missing = [c for c in self.source_columns if actual(c) is None]
        if missing:
            raise QueryFailure(
                f"{self.where_text}: source table {self.table_name} has no column "
                f"{', '.join(missing)} (it has {', '.join(found) or 'no columns'})",
                hint="check source_config.columns against the source table",
            )
        self.source_columns = [actual(c) or c for c in self.source_columns]
        self._source_types = {t: found[s] for s, t in zip(self.source_columns, self.columns,
                                                           strict=True)}
        if self.cursor_column is not None:
            cursor = actual(self.cursor_column)
            if cursor is None:
                msg = (f"source table {self.table_name} has no column {self.cursor_column}: "
                       "syncing in full")
                log.warning("%s: %s", self.where_text, msg)
                self.warnings.append(msg)
                self.cursor_column = None
                self.where = None
            else:
                self.cursor_column = cursor
                self._cursor_type = found[cursor]
        if self.url.get_backend_name() == "sqlite":
            self._column_types = {
                n: _SQLiteDateText() for n, t in found.items()
                if isinstance(t, sqltypes.Date | sqltypes.DateTime)}

    def column_types(self) -> dict[str, sqltypes.TypeEngine[Any]]:
        """Target column name → the type the source declares (as introspected), for DDL."""
        self.open()
        return dict(self._source_types)

    # -- reading

    def select(self, since: Any | None) -> tuple[Select[Any], dict[str, Any]]:
        """The statement and parameters for a full (`since` None) or incremental read."""
        since_given = since is not None and self.cursor_column is not None
        stmt = build_select(
            self.table, self.source_columns, self.cursor_column, since_given, self.where,
            schema=self.schema, column_types=self._column_types)
        params: dict[str, Any] = {}
        if since_given:
            params["last_synced_at" if self.where is not None else "since"] = since
        return stmt, params

    def iter_batches(self, since: Any | None) -> Iterator[Batch]:
        """Rows as tuples (mapped columns in config order, then the cursor value), streamed."""
        self.open()
        stmt, params = self.select(since)
        cursor_at = len(self.source_columns) if self._cursor_is_dated() else None
        for part in self._stream(stmt, params, since):
            rows = [tuple(r) for r in part]
            if cursor_at is not None:
                rows = [_clean_cursor(r, cursor_at) for r in rows]
            yield rows

    def lines_supported(self) -> bool:
        """Whether the server can format this table's rows as COPY text lines losslessly:
        MySQL, every mapped column a string (so the text is the value), a date cursor."""
        self.open()
        if self.url.get_backend_name() not in ("mysql", "mariadb"):
            return False
        types = [self._source_types.get(n) for n in self.columns]
        if not all(isinstance(t, sqltypes.String) and not isinstance(t, sqltypes.JSON)
                   for t in types):
            return False
        return self.cursor_column is None or self._cursor_is_dated()

    def iter_line_batches(self, since: Any | None) -> Iterator[list[str]]:
        """Rows as COPY text lines formatted by the server (see `build_line_select`)."""
        self.open()
        since_given = since is not None and self.cursor_column is not None
        stmt = build_line_select(
            self.table, self.source_columns, self.cursor_column, since_given, self.where,
            schema=self.schema, column_types=self._column_types)
        params = self.select(since)[1]
        for part in self._stream(stmt, params, since):
            yield [r[0] for r in part]

    def chunk_key(self) -> str | None:
        """The source's one-column primary key, which lets it be read in key-ordered chunks.
        None for a table without transactions: chunks would not read one snapshot."""
        self.open()
        return self._pk[0] if len(self._pk) == 1 and self._transactional else None

    def bad_rows(self, limits: Sequence[int | None],
                 not_null: Sequence[bool]) -> ColumnElement[Any]:
        """1 for a row the server can see will not fit (too long, NULL in NOT NULL, NUL)."""
        conds: list[ColumnElement[bool]] = []
        for name, limit, required in zip(self.source_columns, limits, not_null, strict=True):
            col: ColumnClause[Any] = column(_q(name))
            if limit:
                conds.append(func.char_length(col) > limit)
            if required:
                conds.append(col.is_(None))
        # (a NUL character is looked for in the whole chunk by the caller: far cheaper)
        return case((or_(*conds), 1), else_=0) if conds else literal(0)

    def iter_text_chunks(self, since: Any | None, limits: Sequence[int | None],
                         not_null: Sequence[bool]) -> Generator[TextChunk, None, None]:
        """The table as server-made COPY text, up to `batch_size` rows a chunk, one fetched
        row each (MySQL, one-column key), all chunks in one snapshot (see `_reading`).

        A chunk is sized by bytes too: it must fit the server's max_allowed_packet, or
        GROUP_CONCAT returns NULL. The first size comes from the table's average row length,
        the next ones from the rows just read; a chunk that still overflows is halved and
        read again, down to one row."""
        key = self.chunk_key()
        assert key is not None
        since_given = since is not None and self.cursor_column is not None
        lines = build_line_select(
            self.table, self.source_columns, self.cursor_column, since_given, self.where,
            schema=self.schema, column_types=self._column_types, cursor_field=False)
        bad = self.bad_rows(limits, not_null)
        chunks = [build_chunk_select(lines, key, self._key_type, self.cursor_column, bad,
                                     after_given=after) for after in (False, True)]
        params = self.select(since)[1]
        with self._reading(since) as (conn, _):
            conn.exec_driver_sql(f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX_LEN}")
            packet = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
            budget = max(1, int(min(packet, GROUP_CONCAT_MAX_LEN) * PACKET_SHARE))
            limit = self._rows_per_chunk(budget, self._avg_row_length)
            after: Any = None
            while True:
                more = after is not None
                args = {**params, "after": after} if more else dict(params)
                bounds = build_chunk_bounds(lines, key, self._key_type, after_given=more,
                                            limit=limit)
                upto, expected = conn.execute(bounds, args).one()
                if not expected:
                    return
                text_, count, bad_n, high, bad_low = conn.execute(
                    chunks[more], {**args, "upto": upto}).one()
                if count != expected:  # cannot happen inside one snapshot
                    raise QueryFailure(
                        f"{self.where_text}: a chunk of {expected} rows came back as {count}",
                        hint="rerun; report it if it happens again")
                if text_ is None or text_.count(b"\n") + 1 != count:
                    if expected == 1:
                        raise QueryFailure(
                            f"{self.where_text}: the row {key}={upto!r} is larger than the "
                            f"source server's max_allowed_packet ({packet} bytes)",
                            hint="raise max_allowed_packet on the source MySQL server")
                    limit = max(1, int(expected) // 2)
                    log.debug("%s: a chunk of %d rows overflows max_allowed_packet (%d bytes):"
                              " reading %d", self.where_text, expected, packet, limit)
                    continue
                yield TextChunk(text_, int(count), int(bad_n),
                                high if isinstance(high, date) else None,
                                bad_low if isinstance(bad_low, date) else None)
                if expected < limit:
                    return
                after = upto
                limit = self._rows_per_chunk(budget, len(text_) // int(count) + 1)

    def _rows_per_chunk(self, budget: int, row_bytes: int) -> int:
        """`batch_size`, or fewer rows when rows of `row_bytes` would not fit `budget`."""
        if row_bytes <= 0:
            return self.batch_size
        return max(1, min(self.batch_size, budget // row_bytes))

    @contextmanager
    def _reading(self, since: Any | None) -> Iterator[tuple[Connection, list[Any]]]:
        """A connection for one read, and a list for the results opened on it: errors are
        classified, and the connection is released, or dropped after a failure.

        The read is one consistent snapshot whatever the server's defaults (DESIGN 4.1): on
        MySQL an explicit REPEATABLE READ, READ ONLY transaction started WITH CONSISTENT
        SNAPSHOT. `snapshot_utc` is the clock when the read began (the server's on MySQL)."""
        log.debug("reading %s%s", self.describe(), "" if since is None else f" since {since}")
        self.snapshot_utc = datetime.now(UTC)
        try:
            conn = self.engine.connect()
            raw = conn.connection.dbapi_connection
        except Exception as exc:
            raise self._error(exc) from exc
        results: list[Any] = []
        completed = False
        try:
            if self._is_mysql:
                self._begin_snapshot(conn)
            yield conn, results
            completed = True
        except GeneratorExit:
            raise
        except RefsyncError:
            raise
        except Exception as exc:
            raise self._error(exc, streaming=True, connection_lost=_is_lost(conn)) from exc
        finally:
            with self._read_lock:
                self._read_connection_id = None
            self._release(conn, raw, results[0] if results else None, completed)

    def _begin_snapshot(self, conn: Connection) -> None:
        """MySQL: REPEATABLE READ (the session's or server's level may be lower), a READ ONLY
        transaction WITH CONSISTENT SNAPSHOT; note the server's clock and the connection id."""
        conn.exec_driver_sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        connection_id, now = conn.exec_driver_sql(
            "SELECT CONNECTION_ID(), UTC_TIMESTAMP(6)").one()
        if isinstance(now, datetime):
            self.snapshot_utc = now.replace(tzinfo=UTC)
        with self._read_lock:
            self._read_connection_id = int(connection_id)

    def cancel(self) -> None:
        """Stop the statement of the read in flight on the server (MySQL: KILL QUERY from a
        new side connection); safe from another thread, a no-op when nothing is in flight,
        never raises. The read then fails with "query interrupted"."""
        with self._read_lock:
            connection_id = self._read_connection_id
        if connection_id is None or not self._is_mysql:
            return
        try:
            side_pool = self.engine.pool.recreate()  # same connect args, outside the pool
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
            log.info("%s: cancelled the statement in flight (connection %d)",
                     self.where_text, connection_id)
        except Exception:  # the read fails or ends on its own; cancelling is best effort
            log.warning("%s: could not cancel the statement in flight", self.where_text,
                        exc_info=True)

    def _stream(self, stmt: Select[Any], params: dict[str, Any],
                since: Any | None) -> Iterator[Sequence[Any]]:
        """Execute with a server-side cursor and yield the raw partitions."""
        with self._reading(since) as (conn, results):
            results.append(conn.execution_options(
                stream_results=True, yield_per=self.batch_size).execute(stmt, params))
            yield from results[0].partitions(self.batch_size)

    def _cursor_is_dated(self) -> bool:
        return self.cursor_column is not None and isinstance(
            self._cursor_type, sqltypes.Date | sqltypes.DateTime)

    def _release(self, conn: Connection, raw: Any, result: Any, completed: bool) -> None:
        """Close the result and hand the connection back. After a failure or an early stop,
        discard the connection instead: an unbuffered MySQL result would otherwise be drained
        row by row, and a lost connection raises odd errors on close."""
        if completed:
            try:
                if result is not None:
                    result.close()
                conn.close()
                return
            except Exception:  # every row was read: a connection failing now loses nothing
                log.debug("releasing the connection of %s", self.describe(), exc_info=True)
        _stop_unbuffered(raw)
        try:
            if result is not None:
                result.close()
        except Exception:
            log.debug("closing the result of %s", self.describe(), exc_info=True)
        try:
            conn.invalidate()
        except Exception:  # the socket is already gone; nothing left to release
            log.debug("discarding the connection of %s", self.describe(), exc_info=True)
        try:
            conn.close()
        except Exception:
            log.debug("closing the connection of %s", self.describe(), exc_info=True)

    def count_null_cursor(self) -> int:
        """Rows whose cursor is NULL (or, on MySQL, a zero date): only full runs read them."""
        self.open()
        if self.cursor_column is None:
            return 0
        zero = None
        if self.url.get_backend_name() in ("mysql", "mariadb"):
            if isinstance(self._cursor_type, sqltypes.DateTime):
                zero = "0000-00-00 00:00:00"
            elif isinstance(self._cursor_type, sqltypes.Date):
                zero = "0000-00-00"
        stmt = build_count_null_cursor(
            self.table, self.cursor_column, schema=self.schema, zero_date=zero)
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(stmt).scalar_one())
        except Exception as exc:
            raise self._error(exc) from exc

    def parse_watermark(self, text_value: str) -> Any:
        """A stored watermark back into the cursor column's own type (microseconds kept)."""
        t = self._cursor_type
        try:
            if isinstance(t, sqltypes.DateTime):
                return datetime.fromisoformat(text_value)
            if isinstance(t, sqltypes.Date):
                parsed = parse_iso(text_value)
                return parsed.date() if isinstance(parsed, datetime) else date.fromisoformat(
                    text_value)
            if isinstance(t, sqltypes.Integer):
                return int(text_value)
            if isinstance(t, sqltypes.Numeric):
                return Decimal(text_value)
        except (ValueError, ArithmeticError):
            raise QueryFailure(
                f"{self.where_text}: stored watermark {text_value!r} is not a value of "
                f"{self.cursor_column}'s type",
                hint="rerun with --full",
            ) from None
        return text_value

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()


def _clean_cursor(row: tuple[Any, ...], at: int) -> tuple[Any, ...]:
    """A date cursor that is not a date (MySQL zero date, unparsable SQLite text) → None."""
    v = row[at]
    if v is None or isinstance(v, date):
        return row
    return (*row[:at], None, *row[at + 1:])


def _stop_unbuffered(raw: Any) -> None:
    """PyMySQL: forget an unfinished unbuffered result on a connection being discarded.

    Closing (or garbage-collecting) its SSCursor would otherwise read the remaining rows: all
    of them on a live socket, and on a lost one it raises AttributeError ('NoneType' object
    has no attribute 'read') from __del__, "Exception ignored in SSCursor.close".
    """
    result = getattr(raw, "_result", None)
    if getattr(result, "unbuffered_active", False) is True:
        result.unbuffered_active = False  # type: ignore[union-attr]


def _is_lost(conn: Connection) -> bool:
    """Whether the connection's socket is known to be gone."""
    try:
        if conn.invalidated or conn.closed:
            return True
        raw = conn.connection.dbapi_connection
        return raw is None or getattr(raw, "open", True) is False
    except Exception:
        return True


def url_location(url: URL) -> str:
    """`user@host:port/db` for a server, the file path for SQLite; never the password."""
    if url.host:
        user = f"{url.username}@" if url.username else ""
        port = f":{url.port}" if url.port else ""
        return f"{user}{url.host}{port}/{url.database or ''}"
    db = url.database or ":memory:"
    if db not in (":memory:",) and not db.startswith("file:"):
        return str(Path(db).absolute())
    return db


def resolve_url(spec: TableSpec) -> URL:
    """The URL of a `sql` source; NotConfigured when `url_env` names an unset variable."""
    sc = spec.source_config
    if not isinstance(sc, SqlSourceConfig):
        raise ConfigError(f"table {spec.name}: a sql source needs a table source_config")
    if sc.url is not None:
        raw, origin = sc.url.get_secret_value(), "source_config.url"
    elif sc.url_env:
        raw = os.environ.get(sc.url_env, "")
        if not raw:
            raise NotConfigured(
                f"table {spec.name} needs {sc.url_env}: the variable is not set",
                hint=f"set {sc.url_env} to a SQLAlchemy URL",
            )
        origin = sc.url_env
    else:
        raise ConfigError(f"table {spec.name}: a sql source needs source_config.url or url_env")
    try:
        return make_url(raw)
    except (sa_exc.ArgumentError, ValueError):
        # the text may hold a password: never repeat it
        raise ConfigError(
            f"table {spec.name}: {origin} is not a valid SQLAlchemy URL",
            hint="use dialect+driver://user@host:port/database or sqlite:///path.db",
        ) from None
