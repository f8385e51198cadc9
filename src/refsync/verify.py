"""`refsync verify`: a read-only check that each table's target is in step with its source
(DESIGN 2, 4.6; issue 12), by the in-database digests of refsync.digest.

Per selected enabled table: the source (a MySQL/MariaDB table: `legacy_mysql`, or `sql` on a
MySQL URL) and the target's *authoritative* rows are compared by per-bucket counts and row
hash XORs computed inside both servers; only the buckets that differ are read, as (key, row
hash) pairs, to name the keys. A table reports its source rows, target authoritative rows, and
the rows that `differ` (same key, other values), are `missing` (in the source, not
authoritative in the target: a row a sync would insert or promote) or `extra` (authoritative in
the target, not in the source: a row a `delete_insert` sync would delete), each as a count and
up to 20 keys.

Statuses: `in_step`, `differs`, `failed` (could not be verified: an error, with its error
class), `unsupported` (digests cannot compare this table: a YAML source, a non-MySQL `sql`
source, a SQLite target, or a column pair without a canonical text both databases agree on;
`reason` says which, and `refsync plan` compares such a table row by row) and `disabled`
(`enabled: false`). Exit code: 1 when a table differs or failed, else 0: an `unsupported` or
`disabled` table is shown, never hidden, but does not fail the check (there is nothing it
found out of step).

Reads only: no run lock, no state tables, nothing written. MySQL is read in one consistent
snapshot (REPEATABLE READ, `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`; the
session's sql_mode and `time_zone = '+00:00'` as a sync sets them), PostgreSQL in one
REPEATABLE READ READ ONLY transaction with the table's `lock_timeout`/`statement_timeout`.
Connection errors are retried per the table's `retry`, from scratch; a signal cancels the
statements in flight on both servers.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from refsync import interrupts
from refsync.config import LoadedConfig, MySQLPool, Settings, SqlSourceConfig, TableSpec
from refsync.errors import InternalError, Interrupted, QueryFailure, RefsyncError
from refsync.retry import retrying

if TYPE_CHECKING:
    from refsync.targets.base import SqlTarget

log = logging.getLogger(__name__)

MAX_KEYS = 20
VerifyStatus = Literal["in_step", "differs", "unsupported", "failed", "disabled"]


@dataclass
class TableVerify:
    """The outcome of `verify` for one table. Counts are None where nothing was compared
    (unsupported, failed, disabled)."""

    name: str
    target: str
    source_type: str
    status: VerifyStatus = "in_step"
    reason: str | None = None  # unsupported: why digests cannot compare this table
    error_class: str | None = None
    error: str | None = None
    hint: str | None = None
    source_rows: int | None = None
    target_rows: int | None = None  # authoritative rows only
    differ: int | None = None
    missing: int | None = None
    extra: int | None = None
    differ_keys: list[dict[str, Any]] = field(default_factory=list)
    missing_keys: list[dict[str, Any]] = field(default_factory=list)
    extra_keys: list[dict[str, Any]] = field(default_factory=list)
    buckets: int | None = None
    differing_buckets: int | None = None
    attempts: int = 0
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    JSON_KEYS: ClassVar[tuple[str, ...]] = (
        "name", "target", "source_type", "status", "reason", "error_class", "error",
        "source_rows", "target_rows", "differ", "missing", "extra", "differ_keys",
        "missing_keys", "extra_keys", "attempts", "duration_s",
    )

    @property
    def failing(self) -> bool:
        """Out of step, or could not be checked for an error: exit 1."""
        return self.status in ("differs", "failed")

    def as_json(self) -> dict[str, Any]:
        doc = {k: getattr(self, k) for k in self.JSON_KEYS}
        doc["duration_s"] = round(self.duration_s, 3)
        if self.hint:
            doc["hint"] = self.hint
        return doc


@dataclass
class VerifyReport:
    tables: list[TableVerify] = field(default_factory=list)
    interrupted_by: int | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted_by:
            return 128 + self.interrupted_by
        return 1 if any(t.failing for t in self.tables) else 0

    def as_json(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "tables": [t.as_json() for t in self.tables]}


class _Unsupported(Exception):
    """This table cannot be compared by digests; the message says why."""


def verify(config: LoadedConfig, settings: Settings, tables: list[str] | None = None, *,
           limit: int = MAX_KEYS, sleep: Callable[[float], None] | None = None) -> VerifyReport:
    """Compare each selected table (all when none; by `name` or `target_table`) with its
    source by in-database digests. Read-only. Raises UsageError for an unknown name and
    ConfigError without a target URL (exit 2); everything else is reported per table."""
    from refsync.api import signals_interrupt  # the one SIGTERM/SIGINT policy of a run
    from refsync.sources import dispose_engines
    from refsync.targets import open_target

    specs = config.section.select(tables)
    target = open_target(settings.require_database_url())
    report = VerifyReport()
    try:
        with signals_interrupt(), interrupts.stoppable(target.stoppable()):
            for index, spec in enumerate(specs):
                try:
                    with interrupts.converting():
                        interrupts.check()
                        res = _verify_one(target, spec, settings,
                                          config.section.legacy_mysql, limit, sleep)
                except Interrupted as exc:
                    report.interrupted_by = exc.signum
                    for i, left in enumerate(specs[index:]):
                        if left.enabled:
                            report.tables.append(_interrupted(left, exc, first=i == 0))
                    break
                report.tables.append(res)
            else:  # a signal whose cancel stopped nothing (the last table was done): say so
                report.interrupted_by = interrupts.pending()
    finally:
        target.close()
        dispose_engines()
    return report


def _interrupted(spec: TableSpec, exc: Interrupted, *, first: bool) -> TableVerify:
    return TableVerify(
        name=spec.name, target=spec.qualified_target, source_type=spec.source_type,
        status="failed", error_class=exc.error_class,
        error=exc.message if first else f"{exc.message} before this table")


def _verify_one(target: SqlTarget, spec: TableSpec, settings: Settings, pool: MySQLPool,
                limit: int, sleep: Callable[[float], None] | None) -> TableVerify:
    res = TableVerify(name=spec.name, target=spec.qualified_target, source_type=spec.source_type)
    if not spec.enabled:
        res.status = "disabled"
        log.info("%s: disabled in the config, not verified", spec.name,
                 extra={"event": "verify_table", "table": spec.name, "status": res.status})
        return res
    clock = time.perf_counter()
    where = [spec.qualified_target]
    try:
        engine, owned = _source_engine(spec, settings, pool, target)
        try:
            sc = spec.source_config
            assert isinstance(sc, SqlSourceConfig)
            from refsync.sources.sql import url_location

            where[0] = f"{spec.source_type} {sc.table} on {url_location(engine.url)}"
            for attempt in retrying(spec.options.retry, table=spec.name,
                                    where=lambda: where[0], sleep=sleep):
                with attempt:
                    res.attempts += 1
                    _compare(target, spec, engine, where[0], res, limit)
        finally:
            if owned:
                engine.dispose()
    except _Unsupported as exc:
        res.status, res.reason = "unsupported", str(exc)
    except Interrupted:
        raise
    except Exception as exc:
        signum = interrupts.pending()
        if signum is not None:  # what a cancelled statement raised: the signal stops the run
            raise Interrupted(signum) from exc
        if not isinstance(exc, RefsyncError):  # a bug of ours: this table fails, others go on
            log.debug("%s: unexpected error", spec.name, exc_info=True)
            exc = InternalError(f"unexpected {type(exc).__name__}: {exc}")
        res.status = "failed"
        res.error_class, res.error, res.hint = exc.error_class, exc.message, exc.hint or None
    res.duration_s = time.perf_counter() - clock
    _log(res, where[0])
    return res


def _source_engine(spec: TableSpec, settings: Settings, pool: MySQLPool,
                   target: SqlTarget) -> tuple[Engine, bool]:
    """(the source's engine, whether this call owns it), or _Unsupported. The reasons that
    need no connection come first, so an unsupported table never touches a server."""
    if spec.source_type == "config_file":
        raise _Unsupported("a config_file (YAML) source has no database to compute digests in; "
                           "`refsync plan` compares it row by row")
    if target.dialect != "postgresql":
        raise _Unsupported(f"the target is {target.dialect}: digests need PostgreSQL; "
                           "`refsync plan` compares the table row by row")
    if spec.source_type == "legacy_mysql":
        from refsync.sources.mysql import get_engine

        return get_engine(settings, pool, table=spec.name), False
    from refsync.sources.mysql import MYSQL_BACKENDS, listen_mysql_session
    from refsync.sources.sql import resolve_url

    url = resolve_url(spec)
    backend = url.get_backend_name()
    if backend not in MYSQL_BACKENDS:
        raise _Unsupported(f"a sql source on {backend}: digests need MySQL or MariaDB; "
                           "`refsync plan` compares the table row by row")
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    listen_mysql_session(engine)  # the session's sql_mode and UTC time zone, as a sync's
    return engine, True


def _compare(target: SqlTarget, spec: TableSpec, engine: Engine, where: str,
             res: TableVerify, limit: int) -> None:
    """One attempt: plan the digests, then compare in one snapshot on each side."""
    from refsync.digest import DigestUnsupported, plan_digest, verify_table

    opts = spec.options
    infos = target.check_table(spec.target_schema, spec.target_table, spec.mapped_columns,
                               spec.primary_key, lock_timeout=opts.lock_timeout)
    sc = spec.source_config
    assert isinstance(sc, SqlSourceConfig)
    from refsync.sources.sql import split_table_name

    schema, table = split_table_name(sc.table)
    tgt_where = f"target {target.describe()} ({spec.qualified_target})"
    with _mysql_connection(engine, where) as mc:
        try:
            columns, rows, avg = _source_shape(mc, spec, schema, table, where)
            plan, why = plan_digest(columns, [infos[c.target] for c in sc.columns],
                                    spec.primary_key, opts.source_timezone,
                                    rows=rows, avg_row_bytes=avg)
            if plan is None:
                raise _Unsupported(why or "no digest plan")
            log.debug("%s: %s%s", spec.name, plan.describe(),
                      "".join(f"; {n}" for n in plan.notes),
                      extra={"event": "verify_plan", "table": spec.name})
            # the two snapshots as close together as they can be
            _begin_snapshot(mc)
            with target.connect() as pc:
                pc.execution_options(isolation_level="REPEATABLE READ")
                pc.exec_driver_sql("SET TRANSACTION READ ONLY")
                target.set_timeouts(pc, lock_timeout=opts.lock_timeout,
                                    statement_timeout=opts.statement_timeout)
                try:
                    result = verify_table(
                        mc, pc, plan, table, target.schema_for(spec.target_schema),
                        spec.target_table, source_schema=schema, limit=limit)
                finally:
                    _rollback(pc)
        except (_Unsupported, RefsyncError):
            raise
        except DigestUnsupported as exc:
            raise _Unsupported(str(exc)) from None
        except sa.exc.SQLAlchemyError as exc:
            raise _classify(exc, where, tgt_where) from exc
    res.source_rows, res.target_rows = result.source_rows, result.target_rows
    res.differ, res.missing, res.extra = result.differ, result.missing, result.extra
    res.differ_keys, res.missing_keys, res.extra_keys = (
        result.differ_keys, result.missing_keys, result.extra_keys)
    res.buckets, res.differing_buckets = result.buckets, result.differing_buckets
    res.timings = dict(result.timings)
    res.status = "in_step" if result.in_step else "differs"


def _source_shape(conn: Connection, spec: TableSpec, schema: str | None, table: str,
                  where: str) -> tuple[list[Any], int, int | None]:
    """(the mapped source columns in config order, estimated rows, average row bytes).
    Column names match case-insensitively where unambiguous, as MySQL and a sync do."""
    from refsync.digest import read_source_columns

    sc = spec.source_config
    assert isinstance(sc, SqlSourceConfig)
    found = read_source_columns(conn, table, schema)
    if not found:
        raise QueryFailure(f"{where}: source table {sc.table} not found",
                           hint="check source_config.table")
    folded: dict[str, list[str]] = {}
    for n in found:
        folded.setdefault(n.casefold(), []).append(n)
    out, missing = [], []
    for c in sc.columns:
        hits = [c.source] if c.source in found else folded.get(c.source.casefold(), [])
        if len(hits) == 1:
            out.append(found[hits[0]])
        else:
            missing.append(c.source)
    if missing:
        raise QueryFailure(
            f"{where}: source table {sc.table} has no column {', '.join(missing)} "
            f"(it has {', '.join(found)})",
            hint="check source_config.columns against the source table")
    stats = conn.execute(sa.text(
        "SELECT TABLE_ROWS, AVG_ROW_LENGTH FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name"),
        {"schema": schema, "name": table}).first()
    rows = int(stats[0] or 0) if stats else 0
    avg = int(stats[1]) if stats and stats[1] else None
    return out, rows, avg


@contextmanager
def _mysql_connection(engine: Engine, where: str) -> Iterator[Connection]:
    """A MySQL connection (the engine sets the session's sql_mode and UTC time zone); while
    it is open, a signal kills its statement in flight (KILL QUERY). Rolled back at the end."""
    from refsync.dberrors import classify_db_error

    try:
        conn = engine.connect()
        connection_id = int(conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())
    except sa.exc.SQLAlchemyError as exc:
        raise classify_db_error(exc, where, side="source") from exc
    unregister = interrupts.register(_stoppable(engine, conn, connection_id, where))
    try:
        yield conn
    finally:
        unregister()
        _rollback(conn)
        conn.close()


def _begin_snapshot(conn: Connection) -> None:
    from refsync.sources.mysql import begin_snapshot

    conn.rollback()  # end what introspection began; the snapshot starts afresh
    begin_snapshot(conn)


def _stoppable(engine: Engine, conn: Connection, connection_id: int,
               where: str) -> interrupts.Stoppable:
    """A stop KILLs the snapshot connection's query, then closes its socket if need be."""
    from refsync.sources.mysql import kill_query

    def abort() -> None:
        sock = getattr(conn.connection.dbapi_connection, "_sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)

    return interrupts.Stoppable(busy=lambda: True, abort=abort,
                                cancel=lambda: kill_query(engine, connection_id, where))


def _rollback(conn: Connection) -> None:
    try:
        conn.rollback()
    except sa.exc.SQLAlchemyError:
        log.debug("rollback failed on a broken connection", exc_info=True)


def _classify(exc: sa.exc.SQLAlchemyError, src_where: str, tgt_where: str) -> RefsyncError:
    """Which server raised it (the driver tells), classified for that side."""
    from refsync.dberrors import classify_db_error

    orig = getattr(exc, "orig", None)
    module = type(orig).__module__ if orig is not None else ""
    if module.startswith("psycopg"):
        return classify_db_error(exc, tgt_where, side="target")
    return classify_db_error(exc, src_where, side="source")


def _log(res: TableVerify, where: str) -> None:
    extra: dict[str, Any] = {
        "event": "verify_table", "table": res.name, "status": res.status,
        "source_rows": res.source_rows, "target_rows": res.target_rows, "differ": res.differ,
        "missing": res.missing, "extra": res.extra, "attempts": res.attempts,
        "duration_s": round(res.duration_s, 3)}
    for phase, seconds in res.timings.items():
        log.debug("%s: %s %.3fs", res.name, phase, seconds,
                  extra={"event": "phase", "table": res.name, "phase": phase,
                         "duration_s": round(seconds, 3)})
    if res.status == "in_step":
        log.info("%s: in step - %d source rows, %d authoritative target rows (%.2fs)",
                 res.name, res.source_rows or 0, res.target_rows or 0, res.duration_s,
                 extra=extra)
    elif res.status == "differs":
        log.warning("%s: differs - %d differ, %d missing, %d extra (source %d rows, target %d "
                    "authoritative)", res.name, res.differ or 0, res.missing or 0,
                    res.extra or 0, res.source_rows or 0, res.target_rows or 0, extra=extra)
    elif res.status == "unsupported":
        log.warning("%s: not verified: %s", res.name, res.reason,
                    extra={**extra, "reason": res.reason})
    elif res.status == "failed":
        log.error("%s: verify failed after %d attempt(s) [%s] %s (source: %s)%s", res.name,
                  res.attempts, res.error_class, res.error, where,
                  f"; hint: {res.hint}" if res.hint else "",
                  extra={**extra, "error_class": res.error_class, "error": res.error,
                         "hint": res.hint, "host": where})


__all__ = ["MAX_KEYS", "TableVerify", "VerifyReport", "verify"]
