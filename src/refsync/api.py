"""The library API the CLI calls: plan, sync, sync_table, status, init_db.

Nothing here prints or exits; every function returns result objects or raises a RefsyncError.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from refsync import interrupts, state
from refsync.config import LoadedConfig, Settings, TableSpec
from refsync.errors import (
    ConfigError,
    Guarded,
    InternalError,
    Interrupted,
    InvalidRows,
    LockHeld,
    RefsyncError,
)
from refsync.model import ColumnInfo, RunResult, Source, TableResult
from refsync.prefetch import prefetch
from refsync.report import disabled_reason, status
from refsync.retry import retrying
from refsync.targets import open_target
from refsync.targets.base import DirectLoadConflict, SqlTableWriter, SqlTarget
from refsync.transform import (
    RowConverter,
    clock_cap,
    cursor_before,
    max_cursor,
    watermark_to_text,
)

if TYPE_CHECKING:  # imported where a table is digested
    from refsync.digest import DigestPlan, TargetRequest

log = logging.getLogger(__name__)

RUN_KEY_PREFIX = "reference_sync_"
MAX_LISTED = 20


class Progress(Protocol):
    """Told about rows as they stream, so a terminal can show a bar; the library never draws."""

    def start(self, table: str, total: int | None) -> None: ...

    def advance(self, table: str, rows: int) -> None: ...

    def finish(self, table: str, result: TableResult) -> None: ...

    # optional: `phase(table, name)` names what a table does after its read ("checking",
    # "applying"); called only when the progress object has it


class _NoProgress:
    def start(self, table: str, total: int | None) -> None:
        pass

    def advance(self, table: str, rows: int) -> None:
        pass

    def finish(self, table: str, result: TableResult) -> None:
        pass


def make_run_key(now: datetime) -> str:
    """`reference_sync_2026-11-28T01:00:00.000+08:00`."""
    return RUN_KEY_PREFIX + now.isoformat(timespec="milliseconds")


_held: list[list[int]] = []  # while a commit completes, signals land in the last list


class SignalsHeld:
    """Once `start()`ed, SIGTERM/SIGINT are held instead of raised, until the block ends: a
    table whose commit went through was applied, whenever the signal came (DESIGN 2.1).
    `signals` lists what arrived meanwhile; the caller stops the run after the table."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self._active = False

    def start(self) -> None:
        if not self._active:
            self._active = True
            _held.append(self.signals)

    def __enter__(self) -> SignalsHeld:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._active:
            self._active = False
            _held.remove(self.signals)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into Interrupted, so the table in flight rolls back cleanly."""

    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if _held:  # a commit is completing: let it, then stop the run
            _held[-1].append(signum)
            received.append(signum)
            log.warning("signal %d received while a table commits: stopping after it",
                        signum, extra={"event": "signal"})
            return
        if received:  # a second signal must not cut the rollback of the first short
            log.warning("signal %d received again; still rolling back", signum,
                        extra={"event": "signal_repeat"})
            return
        received.append(signum)
        log.warning("signal %d received: rolling back the table in flight", signum,
                    extra={"event": "signal"})
        if interrupts.cancel_in_flight(signum):
            return  # the statement in flight fails on the server now; the run stops there
        raise Interrupted(signum)

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        interrupts.reset()


@dataclass
class Origin:
    """Where a table's rows come from, for logs: the database host (or file), known before
    the source opens, and the source's own description once it has opened."""

    host: str
    source: str
    side: str = "source"  # the side a failure came from: "target" names the target instead


@dataclass
class Runner:
    """One run over the selected tables against one target."""

    config: LoadedConfig
    settings: Settings
    plan_only: bool = False
    full: bool = False
    allow_mass_delete: bool = False
    progress: Progress = field(default_factory=_NoProgress)
    sleep: Callable[[float], None] | None = None

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.config.section.timezone)
        self.run_key = make_run_key(self.now())

    def now(self) -> datetime:
        return datetime.now(self.zone)

    def run(self, specs: list[TableSpec]) -> RunResult:
        from refsync.logs import run_context

        with run_context(self.run_key), signals_interrupt():
            log.info("run %s%s: %d table(s)", self.run_key, " (plan)" if self.plan_only else "",
                     len(specs), extra={"event": "run_start", "run_key": self.run_key})
            result = RunResult(run_key=self.run_key, plan_only=self.plan_only)
            try:
                with interrupts.converting():
                    self._run(specs, result)
            except Interrupted as exc:  # between tables: nothing in flight to roll back
                result.interrupted_by = exc.signum
            log.info("run %s done: exit code %d", self.run_key, result.exit_code,
                     extra={"event": "run_done", "run_key": self.run_key})
        return result

    def _run(self, specs: list[TableSpec], result: RunResult) -> None:
        target = open_target(self.settings.require_database_url())
        try:
            with interrupts.cancellable(target.cancel):
                self._run_on(target, specs, result)
        finally:
            self._record_pending(target)
            target.close()
            from refsync.sources import dispose_engines

            dispose_engines()

    def _run_on(self, target: SqlTarget, specs: list[TableSpec], result: RunResult) -> None:
        for attempt in retrying(self.config.section.defaults.retry, table="target",
                                where=target.describe, sleep=self.sleep):
            with attempt:
                target.ping()
        with ExitStack() as held:
            if not self.plan_only:
                try:
                    held.enter_context(target.run_lock())
                except LockHeld as exc:  # leave a run-level trace where the target is reachable
                    self._record_run_level(target, exc)
                    raise
            columns = self._validate(target, specs)
            if not self.plan_only:
                with target.transaction() as conn:
                    state.ensure(conn)
            for index, spec in enumerate(specs):
                with SignalsHeld() as self._hold:  # started once the table commits
                    res = self.run_table(target, spec, columns.get(spec.name))
                    result.tables.append(res)
                if self._hold.signals:  # it was applied: reported as it is, then stop
                    self._signum = self._hold.signals[0]
                    log.warning("%s: %s before signal %d took effect; the run stops here",
                                spec.name, res.status, self._signum,
                                extra={"event": "signal", "table": spec.name})
                if res.status == "interrupted" or self._signum:
                    result.interrupted_by = self._signum
                    self._skip_rest(target, specs[index + 1:], result,
                                    "run interrupted before this table")
                    break
                if res.error_class == "locked":  # another run holds the lock now
                    self._skip_rest(target, specs[index + 1:], result,
                                    "run stopped before this table: it lost the run lock")
                    break

    def _skip_rest(self, target: SqlTarget, rest: list[TableSpec], result: RunResult,
                   why: str) -> None:
        """Tables a stopped run never started: listed and recorded `skipped` (DESIGN 5)."""
        for spec in rest:
            if not spec.enabled:
                continue
            now = self.now()
            res = TableResult(
                name=spec.name, target=spec.qualified_target, source_type=spec.source_type,
                mode=spec.sync_mode, incremental=False, status="skipped",
                error_class="interrupted" if self._signum else "locked", error=why,
                started_at=now.isoformat(timespec="milliseconds"),
                finished_at=now.isoformat(timespec="milliseconds"))
            result.tables.append(res)
            if not self.plan_only:
                self._record_failure(target, res, now, now)

    def _record_run_level(self, target: SqlTarget, exc: RefsyncError) -> None:
        """A run that stops before any table still leaves a record (DESIGN 2.2a)."""
        if self.plan_only:
            return
        now = self.now()
        try:
            with target.transaction() as conn:
                if state.exists(conn):
                    state.record_run_level(
                        conn, self.run_key, target=target.describe(), started=now,
                        finished=now, status="failed", error_class=exc.error_class,
                        error=exc.message)
        except (RefsyncError, sa.exc.SQLAlchemyError):
            log.debug("could not record the run-level failure", exc_info=True)

    def _record_pending(self, target: SqlTarget) -> None:
        """Failures the target could not take when they happened (it was down): recorded
        now that it may be back, a few tries, before the run ends (DESIGN 5)."""
        for attempt in range(3):
            if not self._unrecorded:
                return
            if attempt:
                (self.sleep or time.sleep)(2.0 * attempt)
            for res, started, finished in list(self._unrecorded):
                try:
                    with target.transaction() as conn:
                        state.record(conn, self.run_key, res, started=started,
                                     finished=finished, watermark_moves=False)
                    self._unrecorded.remove((res, started, finished))
                except (RefsyncError, sa.exc.SQLAlchemyError) as exc:
                    log.debug("%s: recording the failure failed again: %s", res.name, exc)
        for res, _, _ in self._unrecorded:
            log.error("%s: the failure could not be recorded in the state tables", res.name,
                      extra={"event": "state_write_failed", "table": res.name})

    _signum: int = 0
    _clock: float = 0.0
    _hold: SignalsHeld | None = None
    _mismatch: dict[str, RefsyncError] = field(default_factory=dict)
    # per table, how its last run ended (read before `_record_start` overwrites the state): a
    # table it left in step is compared whole before its parts (`_target_digests`)
    _last_run: dict[str, state.LastRun | None] = field(default_factory=dict)
    _unrecorded: list[tuple[TableResult, datetime, datetime]] = field(default_factory=list)

    def _validate(self, target: SqlTarget,
                  specs: list[TableSpec]) -> dict[str, dict[str, ColumnInfo]]:
        """Check every enabled table against the target before any data moves. A table that
        does not match fails alone, as `config` (DESIGN 3.2): see `_mismatch`."""
        found: dict[str, dict[str, ColumnInfo]] = {}
        for spec in specs:
            if not spec.enabled:
                continue
            try:
                found[spec.name] = target.check_table(
                    spec.target_schema, spec.target_table, spec.mapped_columns, spec.primary_key,
                    lock_timeout=spec.options.lock_timeout)
            except ConfigError as exc:
                hint = exc.hint if "init-db" in exc.hint else (
                    "fix the target table or the config (`refsync init-db --create-tables` "
                    "creates missing tables only)")
                self._mismatch[spec.name] = ConfigError("; ".join(exc.errors), hint=hint)
            except Interrupted:
                raise
            except RefsyncError as exc:  # e.g. a lock timeout: that table fails alone
                if exc.transient:
                    raise
                self._mismatch[spec.name] = exc
        return found

    # -- one table

    def run_table(self, target: SqlTarget, spec: TableSpec,
                  columns: dict[str, ColumnInfo] | None) -> TableResult:
        res = TableResult(
            name=spec.name, target=spec.qualified_target, source_type=spec.source_type,
            mode=spec.sync_mode, incremental=spec.incremental is not None and not self.full)
        if not spec.enabled:
            res.status = "disabled"
            log.info("%s: disabled in the config, skipped", spec.name,
                     extra={"event": "table_disabled", "table": spec.name})
            return res
        log.debug("%s: started (%s, %s)", spec.name, spec.source_type, spec.sync_mode,
                  extra={"event": "table_start", "table": spec.name, "mode": spec.sync_mode})
        started = self.now()
        res.started_at = started.isoformat(timespec="milliseconds")
        clock = self._clock = time.perf_counter()
        from refsync.sources import source_host

        origin = Origin(host=source_host(spec, self.settings), source=spec.source_type)
        if self.plan_only:
            self._last_run[spec.name] = self._read_last_run(target, spec.name)
        else:
            self._record_start(target, res, started)
        try:
            mismatch = self._mismatch.get(spec.name)
            if mismatch is not None:
                origin.source = target.describe()
                raise mismatch
            assert columns is not None
            with interrupts.converting():  # after a signal, a cancelled statement's error
                for attempt in retrying(spec.options.retry, table=spec.name,
                                        where=lambda: origin.host, sleep=self.sleep):
                    with attempt:
                        res.attempts = attempt.retry_state.attempt_number
                        if not self.plan_only:  # a reconnect may have lost the run lock
                            target.hold_lock()
                        self._attempt(target, spec, columns, res, origin)
        except Interrupted as exc:
            self._signum = exc.signum
            self._fail(res, exc)
            res.status = "interrupted"
        except RefsyncError as exc:
            self._fail(res, exc)
            if exc.side == "target":
                origin.side, origin.source = "target", target.describe()
            if exc.error_class == "not_configured":
                res.attempts = 0
        except Exception as exc:  # a bug must not cost the other tables their sync
            log.debug("%s: unexpected error", spec.name, exc_info=True,
                      extra={"event": "internal_error", "table": spec.name})
            self._fail(res, InternalError(f"unexpected {type(exc).__name__}: {exc}"))
        res.duration_s = time.perf_counter() - clock
        finished = self.now()
        res.finished_at = finished.isoformat(timespec="milliseconds")
        if res.failed and not self.plan_only:
            self._record_failure(target, res, started, finished)
        self._log_result(res, origin)
        self.progress.finish(spec.name, res)
        return res

    def _attempt(self, target: SqlTarget, spec: TableSpec, columns: dict[str, ColumnInfo],
                 res: TableResult, origin: Origin) -> None:
        from refsync.sources import open_source

        opts = spec.options
        source = open_source(spec, self.settings, self.config.section.legacy_mysql,
                             opts.batch_size)
        unregister = interrupts.register(getattr(source, "cancel", None))
        try:
            origin.source = source.describe()
            res.warnings = list(getattr(source, "warnings", []))
            for w in res.warnings:
                log.warning("%s: %s", spec.name, w, extra={"event": "warning", "table": spec.name})
            names = list(source.columns)
            missing = [n for n in names if n not in columns]
            if missing:
                raise ConfigError(
                    f"columns of the source are missing from the target {spec.qualified_target}: "
                    f"{', '.join(missing)}")
            # a key is never NULL, whatever the target declares (SQLite allows NULL keys)
            infos = [replace(columns[n], nullable=False) if n in spec.primary_key else columns[n]
                     for n in names]
            since, old_mark = self._window(target, spec, source)
            res.incremental = since is not None or (spec.incremental is not None and not self.full)
            if source.cursor_column is not None and since is not None:
                res.null_cursor_rows = source.count_null_cursor()
                if res.null_cursor_rows:
                    log.warning(
                        "%s: %d rows have no %s and are only read by a --full run", spec.name,
                        res.null_cursor_rows, source.cursor_column,
                        extra={"event": "null_cursor", "table": spec.name})
            try:
                self._load_and_apply(target, spec, source, infos, res, since, old_mark,
                                     direct=True)
            except DirectLoadConflict:  # a key came twice: staging will name the keys
                self._load_and_apply(target, spec, source, infos, res, since, old_mark,
                                     direct=False)
        finally:
            unregister()
            source.close()

    def _window(self, target: SqlTarget, spec: TableSpec, source: Source) -> tuple[Any, Any]:
        """(the lower bound to read from or None for a full read, the stored watermark)."""
        if spec.incremental is None or source.cursor_column is None:
            return None, None
        with target.connect() as conn:
            text = state.read_watermark(conn, spec.name)
        if text is None:
            return None, None
        mark = source.parse_watermark(text)
        if self.full:
            return None, mark
        since = mark - spec.options.lookback if spec.options.lookback else mark
        return since, mark

    def _load_and_apply(self, target: SqlTarget, spec: TableSpec, source: Source,
                        infos: list[ColumnInfo], res: TableResult, since: Any, old_mark: Any,
                        *, direct: bool) -> None:
        """One attempt at one table: read the source through the pipeline into staging,
        check, diff, and (unless planning) apply with the watermark and the run record, all
        in the table's one transaction."""
        opts = spec.options
        zone = ZoneInfo(opts.source_timezone)
        deletes = spec.sync_mode == "delete_insert"
        has_cursor = source.cursor_column is not None
        largest_cursor = old_mark
        read = 0
        estimate = getattr(source, "estimated_rows", None)  # cheap server statistics, if any
        self.progress.start(spec.name, estimate() if callable(estimate) and since is None
                            else None)
        clock_utc = datetime.now(UTC)  # the source's clock, until the source tells its own
        with target.table_writer(spec.target_schema, spec.target_table, infos,
                                 spec.primary_key, commit=not self.plan_only,
                                 timeouts=(opts.lock_timeout, opts.statement_timeout),
                                 timezone=opts.source_timezone) as writer:
            if direct and not self.plan_only:
                writer.try_direct()
            loop_start = time.perf_counter()
            # one pipeline: COPY text the source server made and checked is staged as it
            # is; source values go through the value rules first
            converter = RowConverter(infos, spec.primary_key, zone, max_listed=MAX_LISTED,
                                     cursor=has_cursor)
            digests = None
            if since is None and not writer.direct:  # a full read: compare before reading
                digests = self._target_digests(writer, spec, source, infos)
            chunks = source.chunks(
                since, infos, copy_text=target.takes_copy_text,
                compare_with=digests)
            try:
                for chunk in prefetch(chunks):
                    read += chunk.rows
                    if chunk.copy_text is not None:
                        writer.stage_text(chunk.copy_text, chunk.rows)
                    elif chunk.batch is not None:
                        writer.stage(converter.convert_batch(chunk.batch))
                    if chunk.high is not None:
                        largest_cursor = max_cursor(largest_cursor, [chunk.high])
                    self.progress.advance(spec.name, chunk.rows)
            finally:  # never leave the digest query running on the writer's connection
                if digests is not None:
                    digests[1].settle()
            res.read = read
            res.source_snapshot = getattr(source, "snapshot_utc", None)
            writer.timings["read+check"] = (time.perf_counter() - loop_start
                                            - writer.timings.get("stage", 0.0))
            res.rejected = converter.rejected
            res.rejects = [r.as_dict() for r in converter.rejects]
            self._phase(spec.name, "checking")
            dup_total, dups = writer.duplicate_keys(MAX_LISTED)
            if dup_total:
                keys = "; ".join(", ".join(f"{k}={v}" for k, v in zip(spec.primary_key, d,
                                                                     strict=True)) for d in dups)
                raise InvalidRows(
                    f"{dup_total} key(s) appear more than once in the source: {keys}",
                    hint="make the source key unique, or fix primary_key in the config")
            if deletes and not writer.direct:  # a rejected row is still a source row
                writer.keep_keys(converter.rejected_keys)
            outcome = getattr(source, "digest_outcome", None)
            if digests is not None and outcome is not None:  # only differing parts read
                from refsync.digest import target_bucket_predicate

                writer.only_where = target_bucket_predicate(digests[0], outcome.differing)
                writer.timings.update(outcome.timings)
            counts = writer.diff(deletes=deletes)
            if digests is not None and outcome is not None:
                read += outcome.equal_rows  # compared inside both databases, never moved
                res.read = read
                counts.unchanged += outcome.equal_rows
            res.timings = writer.timings
            for name in ("inserted", "updated", "promoted", "unchanged", "deleted"):
                setattr(res, name, getattr(counts, name))
            mark = self._honest_watermark(spec, source, res, largest_cursor, clock_utc,
                                          reject_low=converter.reject_low)
            res.watermark = None if mark is None else watermark_to_text(mark)
            if res.rejected and opts.on_invalid == "fail":  # invalid rows first, then the guard
                shown = "; ".join(f"{r['key']} {r['column']}={r['value']!r}: {r['reason']}"
                                  for r in res.rejects[:5])
                raise InvalidRows(
                    f"{res.rejected} row(s) do not fit the target: {shown}"
                    + (" …" if len(res.rejects) > 5 else ""),
                    rejects=res.rejects)
            if deletes and counts.deleted and not self.allow_mass_delete:
                before = counts.authoritative_before
                if writer.staged == 0 and res.rejected == 0:
                    raise Guarded(f"the source is empty but the target holds {before} "
                                  f"authoritative rows; nothing was deleted")
                if counts.deleted > opts.max_delete_ratio * before:
                    raise Guarded(
                        f"would delete {counts.deleted} of {before} authoritative rows "
                        f"({counts.deleted / before:.0%} > max_delete_ratio "
                        f"{opts.max_delete_ratio:.0%}); nothing was deleted")
            res.status = "ok" if counts.changes else "unchanged"
            if self.plan_only:
                return
            target.hold_lock(writer.conn)  # in this transaction: never apply without the lock
            self._phase(spec.name, "applying")
            writer.apply(counts, deletes=deletes)
            res.duration_s = time.perf_counter() - self._clock
            state.record(writer.conn, self.run_key, res,
                         started=datetime.fromisoformat(res.started_at or self.now().isoformat()),
                         finished=self.now(), watermark_moves=True)
            if self._hold is not None:  # from here the commit decides, not a signal
                self._hold.start()

    def _target_digests(self, writer: SqlTableWriter, spec: TableSpec, source: Source,
                        infos: list[ColumnInfo]) -> tuple[DigestPlan, TargetRequest] | None:
        """(digest plan, the target's digests as they are computed) where both databases can
        digest the table (DESIGN 4.6). The target computes its digests while the source
        computes its own inside its read's snapshot; the source then compares and reads only
        the parts that differ. A table whose last run left it in step is compared whole
        first (cheaper on both servers; its parts only when the wholes differ). None: read
        everything."""
        make_plan = getattr(source, "digest_plan", None)
        if make_plan is None or not writer.target.takes_copy_text:
            return None
        plan = make_plan(infos, spec.options.source_timezone, rows=writer.estimated_rows())
        if plan is None:
            return None
        from refsync import digest

        def compute(whole: bool) -> Any:
            started = time.perf_counter()
            try:
                return digest.target_digests(writer.conn, plan, spec.target_schema,
                                             spec.target_table, whole=whole)
            except digest.DigestUnsupported as exc:  # the source reads everything
                log.debug("%s: no digests: %s", spec.name, exc)
                return None
            except sa.exc.DBAPIError as exc:
                raise writer.classify_write_error(exc, "computing digests") from None
            finally:
                phase = "target_total" if whole else "target_digest"
                writer.timings[phase] = time.perf_counter() - started

        # the writer's connection is idle until the first rows arrive, which the source
        # sends only after it has the target's digests
        last = self._last_run.get(spec.name)
        request = digest.TargetRequest(compute, whole_first=last is not None and last.left_in_step(
            getattr(source, "changed_at", None)))
        request.start(request.whole_first)
        return plan, request

    def _honest_watermark(self, spec: TableSpec, source: Source, res: TableResult,
                          largest_cursor: Any, clock_utc: datetime, *, reject_low: Any) -> Any:
        """DESIGN 4.4: the largest cursor read, but never later than the source's clock when
        the read began (a future-dated row is read again until its time comes), and never
        past the earliest rejected row (read again until fixed). Says why it held back."""
        if largest_cursor is None:
            return None
        notes: list[str] = []
        mark = largest_cursor
        snapshot = getattr(source, "snapshot_utc", None) or clock_utc
        cap = clock_cap(largest_cursor, snapshot, ZoneInfo(spec.options.source_timezone))
        if cap is not None and cursor_before(cap, mark):
            notes.append(f"watermark held at the source's clock {watermark_to_text(cap)}: rows "
                         f"dated up to {watermark_to_text(mark)} are in the future and are "
                         "read again until their time comes")
            mark = cap
        if reject_low is not None and cursor_before(reject_low, mark):
            mark = reject_low
            notes.append(f"watermark held at {watermark_to_text(mark)}, the earliest rejected "
                         "row: rejected rows are read again until fixed")
        for note in notes:
            res.warnings.append(note)
            log.warning("%s: %s", spec.name, note,
                        extra={"event": "watermark_held", "table": spec.name})
        return mark

    def _phase(self, table: str, name: str) -> None:
        phase = getattr(self.progress, "phase", None)
        if phase is not None:
            phase(table, name)

    # -- reporting

    def _fail(self, res: TableResult, exc: RefsyncError) -> None:
        res.error_class = exc.error_class
        res.error = exc.message
        res.hint = exc.hint or None
        if isinstance(exc, InvalidRows) and exc.rejects:
            res.rejects = exc.rejects
        if exc.error_class == "guarded":
            res.status = "guarded"
        elif exc.error_class in ("file_missing", "schema_version"):
            res.status = "skipped"
        else:
            res.status = "failed"

    def _record_failure(self, target: SqlTarget, res: TableResult, started: datetime,
                        finished: datetime) -> None:
        """Outside the rolled-back table transaction, so `status` shows what happened; when
        the target is down, kept and recorded before the run ends (`_record_pending`)."""
        try:
            with target.transaction() as conn:
                state.record(conn, self.run_key, res, started=started, finished=finished,
                             watermark_moves=False)
        except Exception as exc:  # noqa: BLE001 - the table's own failure is what matters
            log.warning("%s: could not record the failure in the state tables yet: %s",
                        res.name, exc, extra={"event": "state_write_deferred", "table": res.name})
            self._unrecorded.append((res, started, finished))

    def _read_last_run(self, target: SqlTarget, name: str) -> state.LastRun | None:
        """A plan's hint of how the table's last run ended (it records nothing itself)."""
        try:
            with target.connect() as conn:
                return state.read_last_run(conn, name)
        except (RefsyncError, sa.exc.SQLAlchemyError):
            return None

    def _record_start(self, target: SqlTarget, res: TableResult, started: datetime) -> None:
        """A `running` record in its own short transaction: a killed run leaves a trace."""
        try:
            with target.transaction() as conn:
                self._last_run[res.name] = state.read_last_run(conn, res.name)
                state.start(conn, self.run_key, res, started=started)
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - the table itself will say what is wrong
            log.debug("%s: could not record the start: %s", res.name, exc)

    def _log_result(self, res: TableResult, origin: Origin) -> None:
        for phase, seconds in res.timings.items():  # -v: where the table's time went
            log.debug("%s: %s %.3fs", res.name, phase, seconds,
                      extra={"event": "phase", "table": res.name, "phase": phase,
                             "duration_s": round(seconds, 3)})
        extra = {"event": "table_done", "table": res.name, "mode": res.mode,
                 "status": res.status, "read": res.read, "inserted": res.inserted,
                 "updated": res.updated, "deleted": res.deleted, "unchanged": res.unchanged,
                 "promoted": res.promoted, "rejected": res.rejected,
                 "duration_s": round(res.duration_s, 3), "attempts": res.attempts,
                 "error_class": res.error_class, "watermark": res.watermark}
        if res.failed:
            extra.update(error=res.error, hint=res.hint, host=origin.host)
            level = logging.WARNING if res.status == "skipped" else logging.ERROR
            log.log(level, "%s: %s after %d attempt(s) [%s] %s (%s: %s)%s", res.name,
                    res.status, res.attempts, res.error_class, res.error, origin.side,
                    origin.source,
                    f"; hint: {res.hint}" if res.hint else "", extra=extra)
        else:
            log.info("%s: %s%s - read %d, inserted %d, updated %d, promoted %d, unchanged %d, "
                     "deleted %d, rejected %d in %.2fs", res.name, res.status,
                     " (plan)" if self.plan_only else "", res.read, res.inserted, res.updated,
                     res.promoted, res.unchanged, res.deleted, res.rejected, res.duration_s,
                     extra=extra)


# ---------------------------------------------------------------- public functions


def sync(config: LoadedConfig, settings: Settings, *, tables: list[str] | None = None,
         plan_only: bool = False, full: bool = False, allow_mass_delete: bool = False,
         force: bool = False, progress: Progress | None = None,
         sleep: Callable[[float], None] | None = None) -> RunResult:
    """Sync the selected tables (all enabled ones when none) in dependency order."""
    specs = config.section.select(tables)
    runner = Runner(config, settings, plan_only=plan_only, full=full,
                    allow_mass_delete=allow_mass_delete, progress=progress or _NoProgress(),
                    sleep=sleep)
    reason = disabled_reason(config, settings)
    if reason and not plan_only and not force:
        log.info("reference sync disabled (%s); nothing done", reason,
                 extra={"event": "disabled", "run_key": runner.run_key})
        return RunResult(run_key=runner.run_key, plan_only=False, disabled_reason=reason)
    return runner.run(specs)


def plan(config: LoadedConfig, settings: Settings, *, tables: list[str] | None = None,
         full: bool = False, progress: Progress | None = None) -> RunResult:
    """What a sync would do, writing nothing and taking no lock."""
    return sync(config, settings, tables=tables, plan_only=True, full=full, progress=progress)


def sync_table(config: LoadedConfig, settings: Settings, name: str, **kwargs: Any) -> RunResult:
    """Ad-hoc rerun of one table by `name` or `target_table`."""
    return sync(config, settings, tables=[name], **kwargs)


__all__ = ["Progress", "Runner", "init_db", "make_run_key", "plan", "status", "sync",
           "sync_table"]


# ---------------------------------------------------------------- init-db


def init_db(config: LoadedConfig, settings: Settings, *, create_tables: bool = False) -> list[str]:
    """Create the state tables; with `create_tables`, missing target tables too. Idempotent."""
    from refsync import ddl

    target = open_target(settings.require_database_url())
    actions: list[str] = []
    try:
        with target.transaction() as conn:
            state.ensure(conn)
        t = state.tables_for(target.dialect)
        actions.append(f"state tables ready: {', '.join(x.fullname for x in (t.state, t.runs))}")
        if not create_tables:
            return actions
        for spec in config.section.tables:
            ref = spec.qualified_target if target.dialect == "postgresql" else spec.target_table
            if target.columns(spec.target_schema, spec.target_table) is not None:
                actions.append(f"{ref}: exists, left as it is")
                continue
            columns, types = _source_shape(config, settings, spec)
            schema = target.schema_for(spec.target_schema)
            table = ddl.target_table(spec, columns, types, schema)
            with target.transaction() as conn:
                if schema:
                    import sqlalchemy as sa

                    conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
                table.create(conn)
            actions.append(f"{ref}: created ({len(columns)} columns + 4 tracking columns)")
    finally:
        target.close()
        from refsync.sources import dispose_engines

        dispose_engines()
    return actions


def _source_shape(config: LoadedConfig, settings: Settings,
                  spec: TableSpec) -> tuple[list[str], dict[str, Any]]:
    """(target column names, their types as the source declares them, where it can tell)."""
    from refsync.sources import open_source

    try:
        source = open_source(spec, settings, config.section.legacy_mysql, spec.options.batch_size)
    except RefsyncError:
        if spec.mapped_columns is None:
            raise
        return list(spec.mapped_columns), {}
    try:
        types = source.column_types() if hasattr(source, "column_types") else {}
        return list(source.columns), types
    finally:
        source.close()
