"""`refsync verify`: a read-only check that each table's target is in step with its source
(DESIGN 2, 4.6), by the in-database digests of refsync.digest.

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from refsync import interrupts
from refsync.config import LoadedConfig, MySQLPool, Settings, TableSpec
from refsync.digest import DigestUnsupported
from refsync.errors import InternalError, Interrupted, RefsyncError
from refsync.model import exit_code
from refsync.retry import retrying
from refsync.threads import Session

if TYPE_CHECKING:
    from refsync.digest import BucketDigest, DigestPlan
    from refsync.digest.plan import Digests
    from refsync.targets.base import SqlTarget

log = logging.getLogger(__name__)

MAX_KEYS = 20
ROW_HASH_BATCH = 5000  # (key, row hash) rows a source thread hands over at once
T = TypeVar("T")
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
        return exit_code(self.interrupted_by, any(t.failing for t in self.tables))

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
        _check_supported(spec, target)
        for attempt in retrying(spec.options.retry, table=spec.name, where=lambda: where[0],
                                sleep=sleep):
            with attempt:
                res.attempts += 1
                _compare(target, spec, settings, pool, where, res, limit)
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


def _check_supported(spec: TableSpec, target: SqlTarget) -> None:
    """The reasons that need no connection, so an unsupported table never touches a
    server; raises _Unsupported."""
    if spec.source_type == "config_file":
        raise _Unsupported("a config_file (YAML) source has no database to compute digests in; "
                           "`refsync plan` compares it row by row")
    if target.dialect != "postgresql":
        raise _Unsupported(f"the target is {target.dialect}: digests need PostgreSQL; "
                           "`refsync plan` compares the table row by row")
    if spec.source_type == "sql":
        from refsync.sources.mysql import MYSQL_BACKENDS
        from refsync.sources.sql import resolve_url

        backend = resolve_url(spec).get_backend_name()
        if backend not in MYSQL_BACKENDS:
            raise _Unsupported(f"a sql source on {backend}: digests need MySQL or MariaDB; "
                               "`refsync plan` compares the table row by row")


def _compare(target: SqlTarget, spec: TableSpec, settings: Settings, pool: MySQLPool,
             where: list[str], res: TableVerify, limit: int) -> None:
    """One attempt: the source opened as a sync opens it (same factory: timeouts, TLS, a
    read-only snapshot in a thread of its own), the target in one REPEATABLE READ, READ
    ONLY transaction on this thread; digests at once, then the differing rows merged."""
    from refsync.sources import MySQLSource, open_source
    from refsync.sources.base import ReadPlan

    opts = spec.options
    infos = target.check_table(spec.target_schema, spec.target_table, spec.mapped_columns,
                               spec.primary_key, lock_timeout=opts.lock_timeout)
    source = open_source(spec, settings, pool, opts.batch_size)
    try:
        where[0] = source.describe()
        columns = [infos[n] for n in source.columns]
        if not isinstance(source, MySQLSource):
            raise _Unsupported(f"a {source.source_type} source cannot compute digests")
        plan, why = source.plan_digests(columns, opts.source_timezone)
        if plan is None:
            raise _Unsupported(why or "no digest plan")
        log.debug("%s: %s%s", spec.name, plan.describe(), "".join(f"; {n}" for n in plan.notes),
                  extra={"event": "verify_plan", "table": spec.name})
        read_plan = ReadPlan("values", None, plan)
        with (interrupts.stoppable(source.stoppable()),
              Session(lambda: source.reading(None, read_plan), "refsync-verify") as session,
              target.connect() as pc):
            target.begin_read_only(pc, lock_timeout=opts.lock_timeout,
                                   statement_timeout=opts.statement_timeout)
            try:
                result = _verify_table(session, pc, plan, target.schema_for(spec.target_schema),
                                       spec.target_table, limit)
            except DigestUnsupported as exc:  # the target's server or session cannot
                raise _Unsupported(str(exc)) from None
            except sa.exc.SQLAlchemyError as exc:
                raise target.classify(exc, f"verifying {spec.qualified_target}") from None
            finally:
                _rollback(pc)
    finally:
        source.close()
    res.source_rows, res.target_rows = result.source_rows, result.target_rows
    res.differ, res.missing, res.extra = result.differ, result.missing, result.extra
    res.differ_keys, res.missing_keys, res.extra_keys = (
        result.differ_keys, result.missing_keys, result.extra_keys)
    res.buckets, res.differing_buckets = result.buckets, result.differing_buckets
    res.timings = dict(result.timings)
    res.status = "in_step" if result.in_step else "differs"


@dataclass
class VerifyResult:
    """`refsync verify` for one table: counts, and up to `limit` keys of each kind."""

    source_rows: int
    target_rows: int  # authoritative
    buckets: int
    differing_buckets: int
    differ: int = 0  # same key, different values
    missing: int = 0  # in the source, not (authoritative) in the target
    extra: int = 0  # authoritative in the target, not in the source
    differ_keys: list[dict[str, Any]] = field(default_factory=list)
    missing_keys: list[dict[str, Any]] = field(default_factory=list)
    extra_keys: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def in_step(self) -> bool:
        return not (self.differ or self.missing or self.extra) and not self.differing_buckets

    def as_json(self) -> dict[str, Any]:
        return {
            "source_rows": self.source_rows, "target_rows": self.target_rows,
            "in_step": self.in_step, "differ": self.differ, "missing": self.missing,
            "extra": self.extra, "differ_keys": self.differ_keys,
            "missing_keys": self.missing_keys, "extra_keys": self.extra_keys,
        }


def _verify_table(session: Session[Any], pc: Connection, plan: DigestPlan, schema: str | None,
                  table: str, limit: int) -> VerifyResult:
    """Compare digests (the whole table first: a check mostly finds the two in step), the
    source's in its session's thread and the target's here at once; for the differing
    buckets, merge (key, row hash) from both sides in key byte order and classify each key
    as differing, missing or extra. Memory stays flat (both sides stream, sorted by the
    servers)."""
    from refsync.digest import compare
    from refsync.targets.pg_digest import target_row_hashes

    timings: dict[str, float] = {}
    plan, ours, theirs = _digests(session, pc, plan, schema, table, timings)
    cmp = compare(plan, ours, theirs)
    result = VerifyResult(source_rows=cmp.source_rows, target_rows=cmp.target_rows,
                          buckets=plan.buckets, differing_buckets=len(cmp.differing),
                          timings=timings)
    if not cmp.differing:
        return result
    t0 = time.perf_counter()
    # most of the table: no IN list
    only: list[int] | None = None if len(cmp.differing) * 2 > plan.buckets else cmp.differing
    src = (row for batch in session.stream(
        lambda read: _batched(read.row_hashes(plan, only), ROW_HASH_BATCH)) for row in batch)
    tgt = target_row_hashes(pc, plan, schema, table, only)
    names = plan.key

    def keyd(values: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(names, values, strict=True))

    s, t = next(src, None), next(tgt, None)
    while s is not None or t is not None:
        if t is None or (s is not None and s[0] < t[0]):
            assert s is not None
            result.missing += 1
            if len(result.missing_keys) < limit:
                result.missing_keys.append(keyd(s[1]))
            s = next(src, None)
        elif s is None or t[0] < s[0]:
            result.extra += 1
            if len(result.extra_keys) < limit:
                result.extra_keys.append(keyd(t[1]))
            t = next(tgt, None)
        else:
            if s[2] != t[2]:
                result.differ += 1
                if len(result.differ_keys) < limit:
                    result.differ_keys.append(keyd(s[1]))
            s, t = next(src, None), next(tgt, None)
    result.timings["rows"] = time.perf_counter() - t0
    return result


def _digests(session: Session[Any], pc: Connection, plan: DigestPlan, schema: str | None,
             table: str, timings: dict[str, float]) -> tuple[DigestPlan, Digests, Digests]:
    """(the plan of the parts, the source's digests, the target's): the wholes first, the
    parts where they differ."""
    from refsync.digest import WHOLE
    from refsync.targets.pg_digest import target_digests

    ours: Digests = {}
    theirs: Digests = {}
    for whole in (True, False):
        side = "total" if whole else "digest"
        if not whole:  # the parts: key ranges where the key can have them (as a sync)
            rows = theirs[WHOLE].rows if WHOLE in theirs else 0  # the target's count
            plan = _ranged(session, pc, plan, schema, table, rows=rows)
        pending = session.call(partial(_source_digests, plan=plan, whole=whole))
        started = time.perf_counter()
        theirs = target_digests(pc, plan, schema, table, whole=whole)
        timings[f"target_{side}"] = time.perf_counter() - started
        ours, timings[f"source_{side}"] = interrupts.wait(pending)
        if whole and ours == theirs:
            break
    return plan, ours, theirs


def _ranged(session: Session[Any], pc: Connection, plan: DigestPlan, schema: str | None,
            table: str, *, rows: int) -> DigestPlan:
    from refsync.digest import range_parts, takes_ranges
    from refsync.table_sync import key_ranges

    if not takes_ranges(plan.range_key, rows):
        return plan
    parts = range_parts(rows, None) or 1
    return key_ranges(session, pc, plan, schema, table, parts=parts, rows=rows) or plan


def _source_digests(read: Any, plan: DigestPlan,
                    whole: bool) -> tuple[dict[int, BucketDigest], float]:
    started = time.perf_counter()
    return read.digests(plan, whole), time.perf_counter() - started


def _batched(items: Iterator[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _rollback(conn: Connection) -> None:
    try:
        conn.rollback()
    except sa.exc.SQLAlchemyError:
        log.debug("rollback failed on a broken connection", exc_info=True)


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


