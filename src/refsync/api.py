"""The library API the CLI calls: plan, sync, sync_table, status, init_db.

Nothing here prints or exits; every function returns result objects or raises a RefsyncError.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from refsync import interrupts, state, table_sync
from refsync.config import LoadedConfig, Settings, TableSpec
from refsync.errors import (
    ConfigError,
    DeadlinePassed,
    InternalError,
    Interrupted,
    InvalidRows,
    LockHeld,
    RefsyncError,
)
from refsync.model import ColumnInfo, PhasedProgress, RunResult, TableResult
from refsync.report import disabled_reason, status
from refsync.retry import retrying, until_done
from refsync.table_sync import Origin, Progress
from refsync.targets import open_target
from refsync.targets.base import SqlTarget

if TYPE_CHECKING:  # imported where a table is digested
    pass

log = logging.getLogger(__name__)

RUN_KEY_PREFIX = "reference_sync_"
MAX_LISTED = 20


class _NoProgress:
    def start(self, table: str, total: int | None) -> None:
        pass

    def advance(self, table: str, rows: int) -> None:
        pass

    def finish(self, table: str, result: TableResult) -> None:
        pass

    def phase(self, table: str, name: str) -> None:
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
def signals_interrupt(max_run_time: timedelta | None = None) -> Iterator[None]:
    """Turn SIGTERM and SIGINT (and the passed run deadline, SIGALRM) into a stop of the run:
    the table in flight rolls back cleanly, and the process ends in bounded time whatever it
    is doing (see `interrupts`)."""

    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        deadline = signum == interrupts.DEADLINE
        what = "the run passed its max_run_time" if deadline else f"signal {signum} received"
        if received:  # a second signal ends the process at once; the deadline waits
            if not deadline and interrupts.may_exit():
                interrupts.exit_now(signum, f"signal {signum} received again")
            if not deadline:
                log.warning("signal %d received again; still stopping", signum,
                            extra={"event": "signal_repeat"})
            return
        received.append(signum)
        if _held:  # a commit is completing: let it, then stop the run
            _held[-1].append(signum)
            log.warning("%s while a table commits: stopping after it", what,
                        extra={"event": "signal"})
            interrupts.exit_later(signum)
            return
        log.warning("%s: rolling back the table in flight", what, extra={"event": "signal"})
        if interrupts.stop(signum) or deadline:
            # the statement in flight fails on the server now, or (the deadline, which never
            # raises out of whatever Python code it lands in) the next statement or wait
            # raises: either way the run stops there
            return
        raise interrupts.stop_error(signum)

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    interrupts.arm_deadline(max_run_time)
    try:
        yield
    finally:
        interrupts.disarm_deadline()
        for sig, old in previous.items():
            signal.signal(sig, old)
        interrupts.reset()


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
        self.progress = PhasedProgress(self.progress)
        self.zone = ZoneInfo(self.config.section.timezone)
        self.run_key = make_run_key(self.now())

    def now(self) -> datetime:
        return datetime.now(self.zone)

    def run(self, specs: list[TableSpec]) -> RunResult:
        from refsync.logs import run_context

        max_run_time = self.settings.run_deadline(self.config.section.max_run_time)
        with run_context(self.run_key), signals_interrupt(max_run_time):
            log.info("run %s%s: %d table(s)", self.run_key, " (plan)" if self.plan_only else "",
                     len(specs), extra={"event": "run_start", "run_key": self.run_key})
            result = RunResult(run_key=self.run_key, plan_only=self.plan_only)
            try:
                with interrupts.converting():
                    self._run(specs, result)
            except DeadlinePassed as exc:  # outside any table: the rest are not started
                self._signum = exc.signum
                self._skip_rest(None, [s for s in specs if s.name not in
                                       {t.name for t in result.tables}], result, exc.message)
            except Interrupted as exc:  # between tables: nothing in flight to roll back
                result.interrupted_by = exc.signum
            log.info("run %s done: exit code %d", self.run_key, result.exit_code,
                     extra={"event": "run_done", "run_key": self.run_key})
        return result

    def _run(self, specs: list[TableSpec], result: RunResult) -> None:
        target = open_target(self.settings.require_database_url())
        try:
            with interrupts.stoppable(target.stoppable()):
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
                    deadline = self._signum == interrupts.DEADLINE
                    if not deadline:
                        result.interrupted_by = self._signum
                    self._skip_rest(target, specs[index + 1:], result,
                                    "the run passed its max_run_time before this table"
                                    if deadline else "run interrupted before this table")
                    break
                if res.error_class == "locked":  # another run holds the lock now
                    self._skip_rest(target, specs[index + 1:], result,
                                    "run stopped before this table: it lost the run lock")
                    break

    def _skip_rest(self, target: SqlTarget | None, rest: list[TableSpec], result: RunResult,
                   why: str) -> None:
        """Tables a stopped run never started: listed and recorded `skipped` (DESIGN 5)."""
        if self._signum == interrupts.DEADLINE:
            error_class = "timeout"
        else:
            error_class = "interrupted" if self._signum else "locked"
        for spec in rest:
            if not spec.enabled:
                continue
            now = self.now()
            res = TableResult(
                name=spec.name, target=spec.qualified_target, source_type=spec.source_type,
                mode=spec.sync_mode, incremental=False, status="skipped",
                error_class=error_class, error=why,
                started_at=now.isoformat(timespec="milliseconds"),
                finished_at=now.isoformat(timespec="milliseconds"))
            result.tables.append(res)
            if not self.plan_only and target is not None:
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
        def record_all() -> bool:
            for res, started, finished in list(self._unrecorded):
                try:
                    with target.transaction() as conn:
                        state.record(conn, self.run_key, res, started=started,
                                     finished=finished, watermark_moves=False)
                    self._unrecorded.remove((res, started, finished))
                except (RefsyncError, sa.exc.SQLAlchemyError) as exc:
                    log.debug("%s: recording the failure failed again: %s", res.name, exc)
            return not self._unrecorded

        if self._unrecorded:
            until_done(record_all, tries=3, backoff=2.0, sleep=self.sleep)
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
            self._sync_with_retries(target, spec, columns, res, origin)
        except Interrupted as exc:  # a signal or the deadline: rolled back, the run stops
            self._signum = exc.signum
            self._fail(res, exc)
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

    def _sync_with_retries(self, target: SqlTarget, spec: TableSpec,
                           columns: dict[str, ColumnInfo], res: TableResult,
                           origin: Origin) -> None:
        """One table's sync, tried again on a transient failure per its retry settings."""
        with interrupts.converting():  # after a signal, a cancelled statement's error
            for attempt in retrying(spec.options.retry, table=spec.name,
                                    where=lambda: origin.host, sleep=self.sleep):
                with attempt:
                    interrupts.check()  # a stop or a passed deadline: no new attempt
                    res.attempts = attempt.retry_state.attempt_number
                    if not self.plan_only:  # a reconnect may have lost the run lock
                        target.hold_lock()
                    table_sync.sync_table(self._job(target, spec), columns, res, origin)

    def _job(self, target: SqlTarget, spec: TableSpec) -> table_sync.TableJob:
        hold = self._hold
        return table_sync.TableJob(
            spec=spec, target=target, settings=self.settings,
            pool=self.config.section.legacy_mysql, run_key=self.run_key,
            progress=self.progress, now=self.now, plan_only=self.plan_only, full=self.full,
            allow_mass_delete=self.allow_mass_delete, last_run=self._last_run.get(spec.name),
            on_commit=hold.start if hold is not None else (lambda: None))

    # -- reporting

    def _fail(self, res: TableResult, exc: RefsyncError) -> None:
        res.error_class = exc.error_class
        res.error = exc.message
        res.hint = exc.hint or None
        if isinstance(exc, InvalidRows) and exc.rejects:
            res.rejects = exc.rejects
        res.status = exc.table_status

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
        actions += ddl.create_missing_tables(config, settings, target)
    finally:
        target.close()
        from refsync.sources import dispose_engines

        dispose_engines()
    return actions
