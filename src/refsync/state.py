"""The one home for refsync's own tables: `sync_state` (one row a table) and `sync_runs` (one
row per table per run). Schema `refsync` on PostgreSQL, a `refsync_` prefix on SQLite. The
statements are SQLAlchemy Core; the SQL text they need is `targets.state_sql`'s."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from refsync.errors import QueryFailure, RefsyncError, bounded
from refsync.model import COUNT_FIELDS, TableResult

if TYPE_CHECKING:  # SQLAlchemy is imported where a function needs it: `status` reads the
    # state through the plain driver (`read_status`) and must start fast
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

    from refsync.targets.readonly import StateReader

log = logging.getLogger(__name__)

SCHEMA = "refsync"


@cache
def _timestamp_type() -> Any:
    import sqlalchemy as sa

    class Timestamp(sa.types.TypeDecorator[datetime]):
        """timestamptz on PostgreSQL; ISO-8601 text with its offset on SQLite."""

        impl = sa.DateTime(timezone=True)
        cache_ok = True

        def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
            if dialect.name == "sqlite":
                return dialect.type_descriptor(sa.String(40))
            return dialect.type_descriptor(sa.DateTime(timezone=True))

        def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> Any:
            if value is not None and dialect.name == "sqlite":
                return value.isoformat(timespec="milliseconds")
            return value

        def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
            return _timestamp(value)

    return Timestamp


def _timestamp(value: Any) -> datetime | None:
    """A stored time as a datetime (SQLite keeps ISO-8601 text)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class StateTables:
    metadata: sa.MetaData
    state: sa.Table
    runs: sa.Table
    schema: str | None


def names_for(dialect: str) -> tuple[str | None, str, str]:
    """(schema, state table, runs table) on this dialect."""
    schema = SCHEMA if dialect == "postgresql" else None
    prefix = "" if schema else "refsync_"
    return schema, f"{prefix}sync_state", f"{prefix}sync_runs"


@cache
def tables_for(dialect: str) -> StateTables:
    import sqlalchemy as sa

    schema, state_name, runs_name = names_for(dialect)
    prefix = "" if schema else "refsync_"
    timestamp = _timestamp_type()
    md = sa.MetaData(schema=schema)
    state = sa.Table(
        state_name, md,
        sa.Column("table_name", sa.String(200), primary_key=True),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("watermark", sa.Text),
        sa.Column("last_run_key", sa.String(80)),
        sa.Column("last_status", sa.String(20)),
        sa.Column("last_started_at", timestamp()),
        sa.Column("last_finished_at", timestamp()),
        sa.Column("last_success_at", timestamp()),
        sa.Column("last_full_at", timestamp()),  # the last successful read of every row
    )
    runs = sa.Table(
        runs_name, md,
        sa.Column("run_key", sa.String(80), primary_key=True),
        sa.Column("table_name", sa.String(200), primary_key=True),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("source_type", sa.String(20)),
        sa.Column("mode", sa.String(20)),
        sa.Column("incremental", sa.Boolean),
        sa.Column("started_at", timestamp()),
        sa.Column("finished_at", timestamp()),
        sa.Column("status", sa.String(20), nullable=False),
        *(sa.Column(f, sa.BigInteger, nullable=False, server_default="0") for f in COUNT_FIELDS),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("duration_s", sa.Float),
        sa.Column("watermark", sa.Text),
        sa.Column("error_class", sa.String(40)),
        sa.Column("error", sa.Text),
        sa.Column("detail", sa.Text),  # JSON: rejects, warnings, hint
        sa.Column("version", sa.String(40)),  # the refsync that wrote the record
        sa.Column("source_snapshot", timestamp()),  # the source's clock when the read began
    )
    sa.Index(f"{prefix}sync_runs_started", runs.c.started_at)
    return StateTables(md, state, runs, schema)


def exists(conn: Connection) -> bool:
    import sqlalchemy as sa

    t = tables_for(conn.dialect.name)
    with _classified(conn, "reading the state tables"):
        return sa.inspect(conn).has_table(t.runs.name, schema=t.schema)


@contextmanager
def _classified(conn: Connection, doing: str) -> Iterator[None]:
    """The state tables' statements fail like the table's own: classified by the target's
    rules (a lost connection is `connection`, retried), never SQLAlchemy's dump."""
    import sqlalchemy as sa

    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        raise target_error(conn, exc, doing) from None


def target_error(conn: Connection, exc: BaseException, doing: str) -> RefsyncError:
    """`exc`, raised on `conn` to the target while `doing`, as the target classifies it."""
    shown = conn.engine.url.render_as_string(hide_password=True)
    if conn.dialect.name == "postgresql":
        from refsync.targets.postgres import classify_target_error

        return classify_target_error(exc, shown, doing)
    from refsync.dberrors import classify_db_error

    return classify_db_error(exc, f"target {shown}", doing=doing, side="target")


FULL_EVERY_SLACK = timedelta(hours=1)
RUN_LEVEL = "*"  # table_name of a record about the whole run (it stopped before any table)


@cache
def version() -> str:
    """The installed refsync's version, stored with every run record (read once: parsing
    the installed metadata costs a few ms)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("refsync")
    except PackageNotFoundError:
        return "unknown"


def ensure(conn: Connection) -> None:
    """Create the state tables when missing, and add columns newer releases brought
    (idempotent). When everything is there it runs no DDL at all, so a role with only DML on
    the state tables can sync (DESIGN 4.5)."""

    with _classified(conn, "creating the state tables"):
        _ensure(conn)


def _ensure(conn: Connection) -> None:
    import sqlalchemy as sa

    from refsync.targets import state_sql

    t = tables_for(conn.dialect.name)
    missing = [table for table in (t.state, t.runs) if not _has_table(conn, table)]
    if missing:
        with _needs_owner(conn, "create the state tables"):
            if t.schema and not sa.inspect(conn).has_schema(t.schema):
                conn.execute(sa.schema.CreateSchema(t.schema))
            t.metadata.create_all(conn, tables=missing)
    for table in (t.state, t.runs):
        ref = conn.dialect.identifier_preparer.format_table(table)
        have = state_sql.column_names(conn, ref)
        for column in table.columns:
            if column.name not in have:
                kind = column.type.compile(dialect=conn.dialect)
                name = conn.dialect.identifier_preparer.quote(column.name)
                with _needs_owner(conn, f"add the column {column.name} to {table.fullname}"):
                    state_sql.add_column(conn, ref, name, kind)


def _has_table(conn: Connection, table: sa.Table) -> bool:
    import sqlalchemy as sa

    return sa.inspect(conn).has_table(table.name, schema=table.schema)


@contextmanager
def _needs_owner(conn: Connection, what: str) -> Iterator[None]:
    """DDL on refsync's own tables: a role without the privilege for it gets told who can."""
    import sqlalchemy as sa

    try:
        yield
    except sa.exc.ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        raise QueryFailure(
            f"the state tables need an upgrade this role may not make: could not {what} "
            f"({str(exc.orig).strip().splitlines()[0]})",
            hint="run `refsync init-db` once as the owner of the database (or of the "
            "refsync schema); sync itself needs only DML on the state tables") from None


def read_watermark(conn: Connection, table_name: str) -> str | None:
    import sqlalchemy as sa

    t = tables_for(conn.dialect.name)
    with _classified(conn, "reading the watermark"):
        if not exists(conn):
            return None
        value = conn.execute(
            sa.select(t.state.c.watermark).where(t.state.c.table_name == table_name)).scalar()
    return None if value is None else str(value)


def full_read_due(last_full_at: datetime | None, full_every: timedelta | None,
                  now: datetime) -> bool:
    """Whether an incremental table is read in full this run (`full_every`, DESIGN 4.4): its
    last full read began `full_every` ago or earlier, or is unknown (none recorded yet).

    A run that starts a little earlier than the one `full_every` before it still counts (up
    to an hour, and never more than a twentieth of `full_every`): with a nightly schedule,
    `7d` is every seventh night, not the eighth."""
    if full_every is None:
        return False
    slack = min(FULL_EVERY_SLACK, full_every / 20)
    return last_full_at is None or now - last_full_at >= full_every - slack


def due_for_full_read(conn: Connection, table_name: str, full_every: timedelta | None,
                      now: datetime) -> bool:
    """`full_read_due` for a table, its last full read taken from the state; logs why."""
    if full_every is None:
        return False
    import sqlalchemy as sa

    t = tables_for(conn.dialect.name)
    # every column, not `last_full_at` by name: a plan reads state tables an older release
    # made as they are (only a sync adds the column)
    with _classified(conn, "reading the last full read"):
        row = conn.execute(sa.select(sa.text("*")).select_from(t.state)
                           .where(t.state.c.table_name == table_name)).mappings().first()
    last = _timestamp(row.get("last_full_at")) if row is not None else None
    if not full_read_due(last, full_every, now):
        return False
    since = ("no full read recorded" if last is None
             else f"last full read {last.astimezone(now.tzinfo).isoformat(timespec='seconds')}")
    log.info("%s: reading every row this run (full_every %s: %s)", table_name,
             _duration_text(full_every), since,
             extra={"event": "full_every", "table": table_name})
    return True


def _duration_text(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def read_in_full(result: TableResult) -> bool:
    """Whether a table's run read every source row: an incremental read always reports how
    many rows it cannot see (`null_cursor_rows`, DESIGN 4.4), a full read never does."""
    return result.null_cursor_rows is None


@dataclass(frozen=True)
class LastRun:
    """How a table's last run ended, for the next run's choice of digests."""

    status: str | None
    rejected: int
    incremental: bool
    source_snapshot: datetime | None  # the source's clock when its read began
    read: int = 0  # rows it read (compared equal by digests included)
    inserted: int = 0
    changed: int = 0  # rows it inserted, updated, promoted or deleted

    @property
    def changed_share(self) -> float | None:
        """The share of the table's rows the run changed, where it tells how much changes
        in a night: a full read that succeeded and was not a first load (None otherwise)."""
        if self.incremental or not self.read or self.status not in ("ok", "unchanged"):
            return None
        if self.inserted and self.inserted == self.changed:  # only new rows (a first load)
            return None
        return min(1.0, self.changed / self.read)

    def left_in_step(self, source_changed_at: datetime | None) -> bool:
        """Whether the target likely still equals the source: that run rejected no row
        (whose target stays behind its source) and the source has not changed since its
        read began, as far as the server tells (`source_changed_at`: its last commit on the
        table, whole seconds; None when unknown). Unknown: an `unchanged` run is taken to
        have left the table in step, a full read that succeeded is not. Only a guess about
        cost: the digests decide."""
        if self.rejected or self.status not in ("ok", "unchanged"):
            return False
        if source_changed_at is not None and self.source_snapshot is not None:
            quiet_since = source_changed_at + timedelta(seconds=1) <= self.source_snapshot
            return quiet_since and (self.status == "unchanged" or not self.incremental)
        return self.status == "unchanged"


def read_last_run(conn: Connection, table_name: str) -> LastRun | None:
    """The table's last run (its state row and run record), or None before any."""
    import sqlalchemy as sa

    t = tables_for(conn.dialect.name)
    with _classified(conn, "reading the last run"):
        if not exists(conn):
            return None
    last = t.state.join(t.runs, sa.and_(t.runs.c.run_key == t.state.c.last_run_key,
                                        t.runs.c.table_name == t.state.c.table_name))
    with _classified(conn, "reading the last run"):
        row = conn.execute(sa.select(t.state.c.last_status, t.runs.c.rejected,
                                     t.runs.c.incremental, t.runs.c.source_snapshot,
                                     t.runs.c.read, t.runs.c.inserted,
                                     t.runs.c.inserted + t.runs.c.updated
                                     + t.runs.c.promoted + t.runs.c.deleted)
                           .select_from(last).where(t.state.c.table_name == table_name)).first()
    if row is None:
        return None
    return LastRun(status=row[0], rejected=int(row[1] or 0), incremental=bool(row[2]),
                   source_snapshot=row[3], read=int(row[4] or 0), inserted=int(row[5] or 0),
                   changed=int(row[6] or 0))


def _upsert(conn: Connection, table: sa.Table, values: dict[str, Any], keys: list[str],
            doing: str = "recording the run") -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = insert(table).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={k: stmt.excluded[k] for k in values if k not in keys})
    with _classified(conn, doing):
        conn.execute(stmt)


def start(conn: Connection, run_key: str, result: TableResult, *, started: datetime) -> None:
    """Record a table's run as `running` (its own short transaction), so a run killed midway
    leaves a trace; `record` finishes the same row (DESIGN 5)."""
    t = tables_for(conn.dialect.name)
    _upsert(conn, t.runs, {
        "run_key": run_key, "table_name": result.name, "target": result.target,
        "source_type": result.source_type, "mode": result.mode,
        "incremental": result.incremental, "started_at": started, "status": "running",
        "version": version()}, ["run_key", "table_name"], "recording the run's start")
    _upsert(conn, t.state, {
        "table_name": result.name, "target": result.target, "last_run_key": run_key,
        "last_status": "running", "last_started_at": started, "last_finished_at": None},
        ["table_name"], "recording the run's start")


def record_run_level(conn: Connection, run_key: str, *, target: str, started: datetime,
                     finished: datetime, status: str, error_class: str | None,
                     error: str | None) -> None:
    """A record of a run that stopped before any table (lock held, config not matching)."""
    t = tables_for(conn.dialect.name)
    _upsert(conn, t.runs, {
        "run_key": run_key, "table_name": RUN_LEVEL, "target": target, "started_at": started,
        "finished_at": finished, "status": status, "error_class": error_class,
        "error": None if error is None else bounded(error), "version": version()},
        ["run_key", "table_name"])


def record(conn: Connection, run_key: str, result: TableResult, *, started: datetime,
           finished: datetime, watermark_moves: bool) -> None:
    """Store a table's outcome (finishing its `running` row); the watermark only moves with
    a successful run."""
    t = tables_for(conn.dialect.name)
    detail = {k: v for k, v in (("rejects", result.rejects), ("warnings", result.warnings),
                                ("hint", result.hint),
                                ("null_cursor_rows", result.null_cursor_rows)) if v}
    _upsert(conn, t.runs, dict(
        run_key=run_key, table_name=result.name, target=result.target,
        source_type=result.source_type, mode=result.mode, incremental=result.incremental,
        started_at=started, finished_at=finished, status=result.status,
        **{f: getattr(result, f) for f in COUNT_FIELDS},
        attempts=result.attempts, duration_s=round(result.duration_s, 3),
        watermark=result.watermark, error_class=result.error_class,
        error=None if result.error is None else bounded(result.error),
        detail=json.dumps(detail, ensure_ascii=False, default=str) if detail else None,
        version=version(), source_snapshot=result.source_snapshot,
    ), ["run_key", "table_name"])
    values: dict[str, Any] = {
        "table_name": result.name, "target": result.target, "last_run_key": run_key,
        "last_status": result.status, "last_started_at": started, "last_finished_at": finished,
    }
    if watermark_moves:
        values["watermark"] = result.watermark
    if result.status in ("ok", "unchanged"):
        values["last_success_at"] = finished
        if read_in_full(result):
            values["last_full_at"] = started
    _upsert(conn, t.state, values, ["table_name"])


def read_status(db: StateReader, names: list[str],
                runs: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(per table name: (its state row, its last run's row), the newest `runs` runs' rows), as
    dicts; empty before any run. Plain SQL on the driver's own connection (see `StateReader`):
    `status` creates nothing and imports no SQLAlchemy."""
    from refsync.targets import state_sql

    found = state_sql.status_rows(db, *names_for(db.dialect), names, runs)
    if found is None:
        return {}, []
    states, rows, last = found
    return ({n: (_as_shown(states[n]) if n in states else None,
                 _as_shown(last[n]) if n in last else None) for n in names},
            [_as_shown(r) for r in rows])


def _as_shown(row: dict[str, Any]) -> dict[str, Any]:
    """Times as datetimes; an error as refsync shows one (bounded, even from an older
    release that stored a driver's whole statement)."""
    for name in ("last_started_at", "last_finished_at", "last_success_at", "last_full_at",
                 "started_at", "finished_at"):
        if name in row:
            row[name] = _timestamp(row[name])
    if row.get("error"):
        row["error"] = bounded(str(row["error"]))
    return row
