"""What PostgreSQL and SQLite targets share: introspection, the diff and the set-based apply.

The SQL is built here once, with a few dialect hooks, so both targets give identical results on
the same input. Identifiers are always quoted by the dialect; the only literals inlined are
refsync's own constants (the layer-1 tracking values), never a source value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import timedelta
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from refsync import interrupts
from refsync.errors import ConfigError, RefsyncError
from refsync.model import Batch, ColumnInfo, ColumnKind, DiffCounts, Row
from refsync.sql_names import pg_name
from refsync.tracking import AUTHORITATIVE, TRACKING_COLUMNS, layer1_sql

log = logging.getLogger(__name__)

STAGE = "_refsync_stage"
CHANGES = "_refsync_changes"
KEPT = "_refsync_kept"  # keys of rejected source rows: their target rows stay (DESIGN 4.5)
OP = "_refsync_op"
INSERT, UPDATE, PROMOTE = "insert", "update", "promote"  # what the diff found for a row


def column_info(name: str, satype: Any, nullable: bool, dialect: sa.Dialect) -> ColumnInfo:
    """Describe an introspected column by what a value must satisfy to be written into it."""
    kind: ColumnKind = "other"
    length = precision = scale = bits = None
    if isinstance(satype, sa.Boolean):
        kind = "boolean"
    elif isinstance(satype, sa.SmallInteger):
        kind, bits = "integer", 16
    elif isinstance(satype, sa.BigInteger):
        kind, bits = "integer", 64
    elif isinstance(satype, sa.Integer):
        kind, bits = "integer", 32
    elif isinstance(satype, sa.Float | sa.Double):
        kind = "float"
    elif isinstance(satype, sa.Numeric):
        kind, precision, scale = "numeric", satype.precision, satype.scale
    elif isinstance(satype, sa.DateTime):
        kind = "timestamptz" if satype.timezone else "timestamp"
    elif isinstance(satype, sa.Date):
        kind = "date"
    elif isinstance(satype, sa.Time):
        kind = "time"
    elif isinstance(satype, sa.JSON):
        kind = "json"
    elif isinstance(satype, sa.Uuid):
        kind = "uuid"
    elif isinstance(satype, sa.LargeBinary):
        kind = "bytes"
    elif isinstance(satype, sa.String):
        kind, length = "text", satype.length
    elif isinstance(satype, sa.types.NullType):
        kind = "other"
    try:
        type_sql = satype.compile(dialect=dialect)
    except Exception:  # noqa: BLE001 - an exotic type still gets a readable name
        type_sql = str(satype)
    return ColumnInfo(name=name, kind=kind, nullable=nullable, max_length=length,
                      precision=precision, scale=scale, int_bits=bits, type_sql=type_sql)


class DirectLoadConflict(RefsyncError):
    """A direct load into an empty target met a key twice: redo it through staging, which
    names the duplicate keys."""

    error_class = "invalid"


class SqlTarget:
    """A target database reached through SQLAlchemy; subclasses supply the dialect details."""

    dialect: ClassVar[str] = ""
    distinct: ClassVar[str] = "IS DISTINCT FROM"
    false_sql: ClassVar[str] = "false"

    def __init__(self, engine: Engine, shown_url: str) -> None:
        self.engine = engine
        self.shown_url = shown_url

    def describe(self) -> str:
        return self.shown_url

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """Connect once, so an unreachable target fails before anything else."""
        with self.connect():
            pass

    # -- naming

    def quote(self, ident: str) -> str:
        return pg_name(ident)  # PostgreSQL and SQLite quote alike

    def table_ref(self, schema: str, table: str) -> str:
        return f"{self.quote(schema)}.{self.quote(table)}"

    def schema_for(self, schema: str) -> str | None:
        return schema

    # -- introspection

    def columns(self, schema: str, table: str,
                lock_timeout: timedelta | None = None) -> dict[str, ColumnInfo] | None:
        """The target table's columns, or None when it does not exist."""
        return self.describe_table(schema, table, lock_timeout)[0]

    def describe_table(self, schema: str, table: str, lock_timeout: timedelta | None = None,
                       ) -> tuple[dict[str, ColumnInfo] | None, list[set[str]]]:
        """(The table's columns, or None when it does not exist; the column sets of its
        primary key and unique constraints/indexes). Reflection here; PostgreSQL reads its
        catalogue in one query instead."""
        with self.connect() as conn:
            self._bound(conn, lock_timeout)
            insp = sa.inspect(conn)
            s = self.schema_for(schema)
            if not insp.has_table(table, schema=s):
                return None, []
            cols = insp.get_columns(table, schema=s)
            keys = []
            pk = insp.get_pk_constraint(table, schema=s)
            if pk and pk.get("constrained_columns"):
                keys.append(set(pk["constrained_columns"]))
            for uc in insp.get_unique_constraints(table, schema=s):
                keys.append(set(uc["column_names"]))
            for ix in insp.get_indexes(table, schema=s):
                if ix.get("unique"):
                    keys.append({c for c in ix["column_names"] if c})
        return {c["name"]: column_info(c["name"], c["type"], bool(c["nullable"]),
                                       self.engine.dialect) for c in cols}, keys

    def _bound(self, conn: Connection, lock_timeout: timedelta | None) -> None:
        if lock_timeout is not None:  # introspection locks the table too (pg_get_* calls)
            self.set_timeouts(conn, lock_timeout=lock_timeout, statement_timeout=timedelta(0))

    def blockers(self, ref: str) -> str:
        """Who holds locks on `ref` (named after a lock timeout); empty where unknown."""
        return ""

    def table_error(self, exc: BaseException, doing: str, ref: str) -> RefsyncError:
        """`classify`, naming the blocking sessions when a lock wait timed out."""
        error = self.classify(exc, doing)
        if getattr(getattr(exc, "orig", exc), "sqlstate", None) == "55P03":
            error.message += f"; {self.blockers(ref)}"
        return error

    def check_table(self, schema: str, table: str, mapped: Sequence[str] | None,
                    key: Sequence[str], *,
                    lock_timeout: timedelta | None = None) -> dict[str, ColumnInfo]:
        """Validate a table's config against the target (DESIGN 3.2); ConfigError lists all.
        Waits for table locks at most `lock_timeout` (then fails, naming the blocker)."""
        try:
            return self._check_table(schema, table, mapped, key, lock_timeout)
        except sa.exc.SQLAlchemyError as exc:
            raise self.table_error(exc, f"checking {schema}.{table}",
                                   self.table_ref(schema, table)) from None

    def _check_table(self, schema: str, table: str, mapped: Sequence[str] | None,
                     key: Sequence[str], lock_timeout: timedelta | None) -> dict[str, ColumnInfo]:
        ref = f"{schema}.{table}" if self.dialect == "postgresql" else table
        cols, unique_keys = self.describe_table(schema, table, lock_timeout)
        if cols is None:
            raise ConfigError(
                f"target table {ref} does not exist in {self.describe()}",
                hint="create it, or run `refsync init-db --create-tables`",
            )
        problems = []
        wanted = list(mapped or []) + [k for k in key if not mapped or k not in mapped]
        missing = [c for c in wanted if c not in cols]
        if missing:
            problems.append(f"mapped columns missing from {ref}: {', '.join(missing)}")
        missing = [c for c in TRACKING_COLUMNS if c not in cols]
        if missing:
            problems.append(f"tracking columns missing from {ref}: {', '.join(missing)}")
        if not problems and set(key) not in unique_keys:
            problems.append(
                f"{ref} has no primary key or unique constraint on ({', '.join(key)}); "
                "refsync needs one to keep keys unique"
            )
        if problems:
            raise ConfigError(f"target {ref} does not match the config", errors=problems)
        return cols

    # -- connections and transactions

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        try:
            conn = self.engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            error = self.classify(exc, "connecting")
            if error.transient:
                error.hint = "check WDH_DATABASE_URL and that the target server is up"
            raise error from None
        try:
            yield conn
        finally:
            conn.close()

    def classify(self, exc: BaseException, doing: str) -> RefsyncError:
        from refsync.dberrors import classify_db_error

        return classify_db_error(exc, f"target {self.describe()} ({doing})")

    @contextmanager
    def transaction(self, *, commit: bool = True) -> Iterator[Connection]:
        """One READ COMMITTED transaction; rolled back on any exception, or when not `commit`
        (a plan: then one snapshot where the target can, so its reads agree)."""
        with self.connect() as conn:
            conn = self._prepare(conn, snapshot=not commit)
            tx = conn.begin()
            try:
                yield conn
            except BaseException:
                self._rollback(tx)
                raise
            if not commit:
                self._rollback(tx)
                return
            try:
                tx.commit()
            except sa.exc.SQLAlchemyError as exc:
                raise self.classify(exc, "committing") from None

    @staticmethod
    def _rollback(tx: sa.RootTransaction) -> None:
        if tx.is_active:
            try:
                tx.rollback()
            except sa.exc.SQLAlchemyError:
                log.debug("rollback failed on a broken connection", exc_info=True)

    def _prepare(self, conn: Connection, *, snapshot: bool = False) -> Connection:
        return conn

    def set_timeouts(self, conn: Connection, *, lock_timeout: timedelta,
                     statement_timeout: timedelta) -> None:
        """Bound the waits of the transaction on `conn` (DESIGN 4.7); where the target can."""

    def begin_read_only(self, conn: Connection, *, lock_timeout: timedelta,
                        statement_timeout: timedelta) -> None:
        """One REPEATABLE READ, READ ONLY transaction on `conn`, its waits bounded: what
        `verify` compares in (it writes nothing)."""
        conn.execution_options(isolation_level="REPEATABLE READ")
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        self.set_timeouts(conn, lock_timeout=lock_timeout, statement_timeout=statement_timeout)

    def cancel(self) -> bool:
        """Cancel on the server what refsync has in flight (a signal); True if anything."""
        return False

    def stoppable(self) -> interrupts.Stoppable:
        """What a stop (signal, deadline) does to this target's statements in flight."""
        return interrupts.Stoppable(busy=lambda: False, cancel=self.cancel, abort=lambda: None)

    @contextmanager
    def table_writer(self, schema: str, table: str, columns: list[ColumnInfo],
                     key: list[str], *, commit: bool = True,
                     timeouts: tuple[timedelta, timedelta] | None = None,
                     timezone: str | None = None) -> Iterator[SqlTableWriter]:
        """A transaction holding a staging table for one table's rows; commit on clean exit.
        `timeouts`: the table's (lock_timeout, statement_timeout); `timezone`: the zone naive
        times in staged COPY text are wall times of (the table's source_timezone)."""
        with self.transaction(commit=commit) as conn:
            try:
                if timeouts is not None:
                    self.set_timeouts(conn, lock_timeout=timeouts[0],
                                      statement_timeout=timeouts[1])
                if timezone is not None:
                    self.set_timezone(conn, timezone)
            except sa.exc.SQLAlchemyError as exc:
                raise self.classify(exc, "setting the session") from None
            writer = self.writer_class(self, conn, schema, table, columns, key)
            writer.create_stage()
            try:
                yield writer
            finally:
                writer.drop_temp()

    writer_class: ClassVar[type[SqlTableWriter]]
    takes_copy_text: ClassVar[bool] = False
    """Whether rows may be staged as COPY text a source server made (PostgreSQL)."""

    def set_timezone(self, conn: Connection, zone: str) -> None:
        """For this transaction: the zone a naive time in COPY text is read in."""

    def run_lock(self) -> AbstractContextManager[None]:
        """Held for a whole run so two runs never overlap (DESIGN 4.5)."""
        raise NotImplementedError

    def hold_lock(self, conn: Connection | None = None) -> None:
        """Check (on `conn`, inside the table's transaction) that this run still holds the
        run lock before writing; raise LockLost when another run holds it now."""


class SqlTableWriter:
    """Stages a table's rows, diffs them against the target and applies only the changes."""

    def __init__(self, target: SqlTarget, conn: Connection, schema: str, table: str,
                 columns: list[ColumnInfo], key: list[str]) -> None:
        self.target = target
        self.conn = conn
        self.columns = columns
        self.names = [c.name for c in columns]
        self.key = key
        self.staged = 0
        self.timings: dict[str, float] = {}
        q = target.quote
        self.q = q
        self.ref = target.table_ref(schema, table)
        self.col_list = ", ".join(q(n) for n in self.names)
        self.key_join = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in key)
        self._only: str | None = None  # the target rows a diff was limited to
        """When only parts of the source were read (the others compared equal by digests): a
        condition on the target selecting those parts, so that what was not read is not
        taken for deleted."""

    # -- helpers

    def sql(self, statement: str, phase: str | None = None) -> sa.CursorResult[Any]:
        interrupts.check()  # after a signal, no new statement
        start = time.perf_counter()
        try:
            result = self.conn.exec_driver_sql(statement)
        except sa.exc.DBAPIError as exc:
            raise self.classify_write_error(exc, phase or "writing") from None
        if phase:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start
        return result

    def scalar(self, statement: str) -> int:
        return int(self.sql(statement).scalar() or 0)

    def classify_write_error(self, exc: BaseException, doing: str) -> RefsyncError:
        return self.target.classify(exc, doing)

    def differs(self, col: ColumnInfo) -> str:
        q = self.q(col.name)
        return f"t.{q} {self.target.distinct} s.{q}"

    # -- staging

    def create_stage(self) -> None:
        self.sql(f"DROP TABLE IF EXISTS {STAGE}")
        self.sql(f"DROP TABLE IF EXISTS {CHANGES}")
        self.sql(f"DROP TABLE IF EXISTS {KEPT}")
        self.sql(self.create_temp_sql(STAGE, f"SELECT {self.col_list} FROM {self.ref}", empty=True))

    def estimated_rows(self) -> int:
        """The target table's row count as its statistics tell it (cheap; 0: unknown)."""
        return 0

    def create_temp_sql(self, name: str, select: str, *, empty: bool = False) -> str:
        raise NotImplementedError

    driver_errors: ClassVar[tuple[type[Exception], ...]] = ()
    direct = False  # rows go straight into an empty target (see try_direct)

    def stage(self, batch: Batch) -> None:
        """Stage converted rows (tuples of Python values)."""
        self._load(self.load_rows, batch, len(batch))

    def stage_text(self, text: str | bytes, rows: int) -> None:
        """Stage `rows` COPY text lines joined by newlines (PostgreSQL; bytes are UTF-8)."""
        self._load(self.load_text, text, rows)

    def _load(self, load: Any, batch: Any, rows: int) -> None:
        if not rows:
            return
        interrupts.check()
        start = time.perf_counter()
        errors: tuple[type[Exception], ...] = (sa.exc.DBAPIError, *self.driver_errors)
        try:
            load(batch)
        except errors as exc:
            raise self.classify_write_error(exc, "loading rows") from None
        self.timings["stage"] = self.timings.get("stage", 0.0) + time.perf_counter() - start
        self.staged += rows

    def load_rows(self, batch: Batch) -> None:
        raise NotImplementedError

    def end_staging(self, error: BaseException | None = None) -> None:
        """Finish (or, after `error`, abort) a bulk load left open across batches."""

    def load_text(self, text: str | bytes) -> None:
        raise NotImplementedError(f"{self.target.dialect} takes rows, not COPY text")

    def try_direct(self) -> bool:
        """Write straight into the target when it is empty (a first load): no staging copy
        and no diff. A target that cannot tell keeps staging."""
        return False

    kept_keys = 0

    def keep_keys(self, keys: Sequence[Row]) -> None:
        """Keys of rejected source rows (converted to the target's values): a delete_insert
        keeps their target rows, and neither counts nor deletes them."""
        if not keys:
            return
        self.end_staging()
        if not self.kept_keys:
            names = ", ".join(self.q(k) for k in self.key)
            self.sql(self.create_temp_sql(KEPT, f"SELECT {names} FROM {self.ref}", empty=True))
        cols = ", ".join(self.q(k) for k in self.key)
        marks = ", ".join(f":k{i}" for i in range(len(self.key)))
        adapt = self.adapt_key
        try:
            self.conn.execute(sa.text(f"INSERT INTO {KEPT} ({cols}) VALUES ({marks})"),
                              [{f"k{i}": adapt(v) for i, v in enumerate(k)} for k in keys])
        except sa.exc.DBAPIError as exc:
            raise self.classify_write_error(exc, "staging the keys of rejected rows") from None
        self.kept_keys += len(keys)

    def adapt_key(self, value: Any) -> Any:
        """A converted key value as the staging table stores it (a dialect may override)."""
        return value

    def drop_temp(self) -> None:
        self.end_staging(error=RuntimeError("table aborted"))
        if self.conn.closed or not self.conn.in_transaction():
            return
        try:
            if self.kept_keys:
                self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {KEPT}")
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {CHANGES}")
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {STAGE}")
        except sa.exc.SQLAlchemyError:
            log.debug("could not drop staging tables (the rollback will)", exc_info=True)

    def after_staging(self) -> None:
        """A hook for statistics on the staging table before the diff."""

    def by_key(self, rows: int, *, cached: bool) -> AbstractContextManager[None]:
        """Around a statement that joins `rows` staged (or changed) rows to the target by
        its key, whose pages are `cached` (or read anyway): a hook to have the target's key
        index probed row by row (see PostgreSQL's)."""
        return nullcontext()

    # -- checks and diff

    def duplicate_keys(self, limit: int) -> tuple[int, list[Row]]:
        """(number of keys read more than once, up to `limit` of them)."""
        self.end_staging()
        if self.direct:  # the target's key refused any (DirectLoadConflict)
            return 0, []
        keys = ", ".join(self.q(k) for k in self.key)
        dup = f"SELECT {keys} FROM {STAGE} GROUP BY {keys} HAVING count(*) > 1"
        total = int(self.sql(f"SELECT count(*) FROM ({dup}) d", phase="keys").scalar() or 0)
        if not total:
            return 0, []
        rows = self.sql(f"{dup} ORDER BY {keys} LIMIT {int(limit)}").fetchall()
        return total, [tuple(r) for r in rows]

    def diff(self, *, deletes: bool, only: str | None = None) -> DiffCounts:
        """Classify the staged rows against the target; leaves the changes in a temp table.
        `only`: the target rows the read covered (the parts digests found different); the
        deletes, counted here and applied by `apply`, stay within them."""
        self._only = only
        self.end_staging()
        if self.direct:
            return DiffCounts(inserted=self.staged)
        self.after_staging()
        q = self.q
        d = self.target.distinct
        k0 = q(self.key[0])
        changed = " OR ".join(
            [f"t.{k0} IS NULL",
             f"t.{q('_source')} {d} '{AUTHORITATIVE}'",
             f"t.{q('_needs_review')} {d} {self.target.false_sql}",
             f"t.{q('_derived_from_domain')} IS NOT NULL",
             f"t.{q('_derived_at')} IS NOT NULL"]
            + [self.differs(c) for c in self.columns if c.name not in self.key]
        )
        s_cols = ", ".join(f"s.{q(n)}" for n in self.names)
        select = (
            f"SELECT {s_cols}, CASE WHEN t.{k0} IS NULL THEN '{INSERT}' "
            f"WHEN t.{q('_source')} {d} '{AUTHORITATIVE}' THEN '{PROMOTE}' "
            f"ELSE '{UPDATE}' END AS {OP} "
            f"FROM {STAGE} s LEFT JOIN {self.ref} t ON {self.key_join} WHERE {changed}"
        )
        # after a comparison the digests have just read the target: its pages are cached
        with self.by_key(self.staged, cached=self._only is not None):
            self.sql(self.create_temp_sql(CHANGES, select), phase="diff")
        counts = DiffCounts()
        rows: list[Any] = list(self.sql(f"SELECT {OP}, count(*) FROM {CHANGES} GROUP BY {OP}"))
        for row in rows:
            setattr(counts, {INSERT: "inserted", UPDATE: "updated", PROMOTE: "promoted"}[row[0]],
                    int(row[1]))
        counts.unchanged = self.staged - counts.inserted - counts.updated - counts.promoted
        if deletes:
            counts.authoritative_before = self.scalar(
                f"SELECT count(*) FROM {self.ref} WHERE {q('_source')} = '{AUTHORITATIVE}'")
            counts.deleted = self.scalar(f"SELECT count(*) FROM {self._missing_where()}")
        return counts

    def _missing_where(self) -> str:
        """Authoritative target rows whose key the source no longer has: neither staged nor
        the key of a rejected source row."""
        q = self.q
        match = " AND ".join(f"s.{q(k)} = {self.ref}.{q(k)}" for k in self.key)
        where = (f"{self.ref} WHERE {self.ref}.{q('_source')} = '{AUTHORITATIVE}' "
                 f"AND NOT EXISTS (SELECT 1 FROM {STAGE} s WHERE {match})")
        if self.kept_keys:
            where += f" AND NOT EXISTS (SELECT 1 FROM {KEPT} s WHERE {match})"
        if self._only is not None:  # only the parts of the table that were read
            where += f" AND ({self._only})"
        return where

    def apply(self, counts: DiffCounts, *, deletes: bool) -> None:
        """Write only what `diff` found: deletes, then updates/promotions, then inserts."""
        if self.direct:
            return
        q = self.q
        tracking = layer1_sql(self.target.false_sql)
        if deletes and counts.deleted:
            self.sql(f"DELETE FROM {self._missing_where()}", phase="delete")
        if counts.updated or counts.promoted:
            sets = [f"{q(n)} = c.{q(n)}" for n in self.names if n not in self.key]
            sets += [f"{q(n)} = {v}" for n, v in tracking.items()]
            match = " AND ".join(f"t.{q(k)} = c.{q(k)}" for k in self.key)
            with self.by_key(counts.updated + counts.promoted, cached=True):
                self.sql(f"UPDATE {self.ref} AS t SET {', '.join(sets)} FROM {CHANGES} c "
                         f"WHERE {match} AND c.{OP} <> '{INSERT}'", phase="update")
        if counts.inserted:
            names = self.col_list + ", " + ", ".join(q(n) for n in tracking)
            values = ", ".join([*(f"c.{q(n)}" for n in self.names), *tracking.values()])
            keys = ", ".join(q(k) for k in self.key)
            updates = ", ".join(f"{q(n)} = excluded.{q(n)}"
                                for n in [*self.names, *tracking] if n not in self.key)
            self.sql(
                f"INSERT INTO {self.ref} ({names}) SELECT {values} FROM {CHANGES} c "
                f"WHERE c.{OP} = '{INSERT}' ON CONFLICT ({keys}) DO UPDATE SET {updates}",
                phase="insert")
