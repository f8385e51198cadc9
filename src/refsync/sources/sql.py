"""`source_type: sql`: a table read through any SQLAlchemy URL, streamed in batches.

Query building (`build_select`) is pure; `SqlSource` executes it with a server-side cursor
(`stream_results` + `yield_per`), so memory stays flat whatever the table's size, and hands
the rows to the pipeline as chunks of source values. What only MySQL can do (snapshots, server
formatted COPY text, KILL QUERY) lives in sources/mysql.py, on the hooks marked below.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    bindparam,
    column,
    create_engine,
    func,
    inspect,
    literal,
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
from refsync.dberrors import classify_db_error, scrub
from refsync.errors import ConfigError, FileMissing, NotConfigured, QueryFailure, RefsyncError
from refsync.interrupts import Stoppable
from refsync.model import Batch, Chunk, ColumnInfo
from refsync.sources.base import Read, ReadPlan, RowsRead
from refsync.transform import row_chunks

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- query building (pure)


def core_name(name: str) -> quoted_name:
    """A name SQLAlchemy Core always quotes, by the rules of the statement's dialect (Chinese,
    reserved words, odd characters): every source's SQL names its tables and columns so."""
    return quoted_name(name, True)


def _unquoted(conn: Connection, name: str) -> str:
    """A column name as the database spells it. SQLAlchemy's MySQL reflection reads names out
    of SHOW CREATE TABLE and leaves a backtick in them doubled (a`b reads as a``b), so the name
    would be quoted twice over; other dialects return the name itself."""
    return name.replace("``", "`") if conn.dialect.name in ("mysql", "mariadb") else name


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
    cols = [column(core_name(n), types.get(n)) for n in names]
    # Same-named columns (a cursor column that is also mapped) need distinct labels to survive.
    labelled = [c.label(f"c{i}") if names.count(names[i]) > 1 else c for i, c in enumerate(cols)]
    stmt = select(*labelled).select_from(
        table(core_name(table_name), schema=core_name(schema) if schema else None))
    if since_given and cursor_column:
        ctype = types.get(cursor_column)
        if where is not None:
            # the operator's condition is one term: an OR in it must not bind looser than
            # the chunk bounds ANDed after it
            stmt = stmt.where(text(f"({where})").bindparams(
                bindparam("last_synced_at", type_=ctype)))
        else:
            since = bindparam("since", type_=ctype)
            stmt = stmt.where(column(core_name(cursor_column), ctype) >= since)
    return stmt


def build_count_null_cursor(
    table_name: str,
    cursor_column: str,
    *,
    schema: str | None = None,
    zero_date: str | None = None,
) -> Select[Any]:
    """SELECT count(*) of rows an incremental read never sees: NULL (or zero-date) cursor."""
    col: ColumnClause[Any] = column(core_name(cursor_column))
    cond: ColumnElement[bool] = col.is_(None)
    if zero_date is not None:
        cond = or_(cond, col == literal(zero_date))
    return (select(func.count()).select_from(
        table(core_name(table_name), schema=core_name(schema) if schema else None)).where(cond))


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
    changed_at: datetime | None = None  # where the server tells (MySQL), a hint

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
        self._source_not_null: set[str] = set()  # source columns declared NOT NULL
        self._pk: list[str] = []
        self._key_type: sqltypes.TypeEngine[Any] | None = None
        self._opened = False
        # the read in flight: the clock when it began (the server's, where it tells)
        self.snapshot_utc: datetime | None = None

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
            self._pk = [_unquoted(conn, n) for n in insp.get_pk_constraint(
                self.table, schema=self.schema).get("constrained_columns") or []]
        found = {_unquoted(conn, c["name"]): c["type"] for c in cols}
        self._source_not_null = {_unquoted(conn, c["name"]) for c in cols
                                 if c.get("nullable") is False}
        if len(self._pk) == 1:
            self._key_type = found.get(self._pk[0])
        self._after_introspect(conn)
        return found

    def _after_introspect(self, conn: Connection) -> None:
        """Hook: what else a dialect learns about the table while connected (MySQL)."""

    def estimated_rows(self) -> int | None:
        """The server's cheap estimate of the table's rows, for progress only."""
        return None

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

    def not_null_columns(self) -> set[str]:
        """Target names of the columns the source declares NOT NULL, for DDL."""
        self.open()
        return {t for s, t in zip(self.source_columns, self.columns, strict=True)
                if s in self._source_not_null}

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
        with self._reading(since) as (conn, results):
            yield from self._batches_on(conn, results, since)

    def _batches_on(self, conn: Connection, results: list[Any], since: Any | None, *,
                    stmt: Select[Any] | None = None) -> Iterator[Batch]:
        """`iter_batches` on a read already open (`stmt`: the read's rows, narrowed)."""
        all_rows, params = self.select(since)
        cursor_at = len(self.source_columns) if self._cursor_is_dated() else None
        for part in self._stream_on(conn, results, all_rows if stmt is None else stmt, params):
            batch = [tuple(r) for r in part]
            if cursor_at is not None:
                batch = [_clean_cursor(r, cursor_at) for r in batch]
            yield batch

    def read_plan(self, columns: list[ColumnInfo], *, copy_text: bool,
                  source_timezone: str, target_rows: int | None) -> ReadPlan:
        """Any SQL source can read its rows as values."""
        return ReadPlan("values")

    @contextmanager
    def reading(self, since: Any | None, plan: ReadPlan) -> Iterator[Read]:
        self.open()
        with self._reading(since) as (conn, results):
            yield RowsRead(row_chunks(self._batches_on(conn, results, since),
                                      cursor=self.cursor_column is not None),
                           snapshot_utc=self.snapshot_utc)

    def chunks(self, since: Any | None, columns: list[ColumnInfo], *,
               copy_text: bool = False) -> Iterator[Chunk]:
        """The rows in chunks on the path `read_plan` picks, without digests (one read)."""
        plan = self.read_plan(columns, copy_text=copy_text, source_timezone="UTC",
                              target_rows=None)
        with self.reading(since, ReadPlan(plan.path, plan.copy)) as read:
            yield from read.chunks()

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
            self._begin_read(conn)
            yield conn, results
            completed = True
        except GeneratorExit:
            raise
        except RefsyncError:
            raise
        except Exception as exc:
            raise self._error(exc, streaming=True, connection_lost=_is_lost(conn)) from exc
        finally:
            self._end_read()
            self._release(conn, raw, results[0] if results else None, completed)

    def _begin_read(self, conn: Connection) -> None:
        """Hook: start the read's snapshot (MySQL); the generic read is one statement."""

    def _end_read(self) -> None:
        """Hook: the read is over (MySQL forgets the connection `cancel` would stop)."""

    def cancel(self) -> bool:
        """Stop the statement in flight on the server, where the dialect can (MySQL)."""
        return False

    def stoppable(self) -> Stoppable:
        """What a stop (signal, deadline) does to this source's read in flight; the generic
        source has nothing it can cancel: its read ends at the next row."""
        return Stoppable(busy=lambda: False, cancel=self.cancel, abort=lambda: None)

    def _stream_on(self, conn: Connection, results: list[Any], stmt: Select[Any],
                   params: dict[str, Any]) -> Iterator[Sequence[Any]]:
        """Execute with a server-side cursor and yield the raw partitions; the result is
        listed in `results` while open, so a failed read can drop it (`_release`)."""
        result = conn.execution_options(stream_results=True, yield_per=self.batch_size
                                        ).execute(stmt, params)
        results.append(result)
        yield from result.partitions(self.batch_size)
        result.close()
        results.clear()

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
        self._forget_unfinished(raw)
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

    def _forget_unfinished(self, raw: Any) -> None:
        """Hook: make the driver forget a half-read result before the connection is dropped."""

    def _zero_date(self) -> str | None:
        """Hook: the dialect's zero value of the cursor column (MySQL), which no read sees."""
        return None

    def count_null_cursor(self) -> int:
        """Rows whose cursor is NULL (or, on MySQL, a zero date): only full runs read them."""
        self.open()
        if self.cursor_column is None:
            return 0
        stmt = build_count_null_cursor(
            self.table, self.cursor_column, schema=self.schema, zero_date=self._zero_date())
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
