"""One table's sync, top to bottom (DESIGN 4):

    window -> plan the read -> compare -> read and stage -> check -> diff -> guard -> apply
    -> record

all in the table's one transaction, each phase a function with its inputs and outputs.
`api.Runner` keeps what belongs to the run: the lock, the order, retries, signals, the
deadline and the failure records.

Threads: the source's connection lives in a `threads.Session` of its own (it opens the
snapshot, computes the source's digests, streams the rows); the target's connection, the
writer's, stays on this thread, which computes the target's digests while the source
computes its own (DESIGN 4.9: no connection is touched by two threads).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from refsync import interrupts, state
from refsync.config import MySQLPool, Settings, TableSpec
from refsync.errors import ConfigError, Guarded, InvalidRows
from refsync.model import ColumnInfo, DiffCounts, TableResult
from refsync.sources.base import DigestRead, Read, ReadPlan, Selection, Source
from refsync.targets.base import DirectLoadConflict, SqlTableWriter, SqlTarget
from refsync.threads import Session
from refsync.transform import RowConverter
from refsync.watermark import OpenWrites, max_cursor, next_mark, open_write_cap, window
from refsync.watermark import watermark_to_text as mark_text

if TYPE_CHECKING:
    from refsync.digest import BucketDigest, DigestPlan, KeyRanges

log = logging.getLogger(__name__)

MAX_LISTED = 20


class Progress(Protocol):
    """Told about rows as they stream, so a terminal can show a bar; the library never draws."""

    def start(self, table: str, total: int | None) -> None: ...

    def advance(self, table: str, rows: int) -> None: ...

    def finish(self, table: str, result: TableResult) -> None: ...

    def phase(self, table: str, name: str) -> None:
        """What the table does after its read ("checking", "applying")."""
        ...


@dataclass(frozen=True)
class TableJob:
    """What one table's sync takes from its run."""

    spec: TableSpec
    target: SqlTarget
    settings: Settings
    pool: MySQLPool
    run_key: str
    progress: Progress
    now: Callable[[], datetime]
    plan_only: bool = False
    full: bool = False
    allow_mass_delete: bool = False
    last_run: state.LastRun | None = None  # how its previous run ended (whole-first hint)
    on_commit: Callable[[], None] = lambda: None  # from here the commit decides, not a signal


@dataclass
class Origin:
    """Where a table's rows come from, for logs: the database host (or file), known before
    the source opens, and the source's own description once it has opened."""

    host: str
    source: str
    side: str = "source"  # the side a failure came from: "target" names the target instead


@dataclass(frozen=True)
class Window:
    """What an incremental read starts from: `since` (None: read in full), the stored mark."""

    since: Any = None
    mark: Any = None


@dataclass(frozen=True)
class Comparison:
    """The digests' verdict, before the read: what to read, what was equal without moving."""

    only: Selection | None  # None: nothing differs, read nothing
    equal_rows: int
    largest_cursor: Any  # the whole table's, for the watermark
    target_where: str  # the target rows of the parts that differ, for the diff
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Staged:
    """What the read staged: rows read, the largest cursor, the value rules' verdicts."""

    read: int
    largest_cursor: Any
    converter: RowConverter
    snapshot_utc: datetime | None
    open_writes: OpenWrites | None = None


def sync_table(job: TableJob, columns: dict[str, ColumnInfo], res: TableResult,
               origin: Origin) -> None:
    """One attempt at one table: open the source, then the table's one transaction (a key
    that came twice into a direct first load: again through staging, which names it)."""
    from refsync.sources import open_source

    spec = job.spec
    source = open_source(spec, job.settings, job.pool, spec.options.batch_size)
    origin.source = source.describe()
    try:
        with interrupts.stoppable(source.stoppable()):
            res.warnings = list(source.warnings)
            for w in res.warnings:
                log.warning("%s: %s", spec.name, w, extra={"event": "warning", "table": spec.name})
            infos = target_columns(spec, source, columns)
            window = read_window(job, source)
            res.incremental = window.since is not None or (
                spec.incremental is not None and not job.full)
            res.null_cursor_rows = null_cursor_rows(spec, source, window)
            try:
                load_and_apply(job, source, infos, window, res, direct=True)
            except DirectLoadConflict:
                load_and_apply(job, source, infos, window, res, direct=False)
    finally:
        source.close()


def target_columns(spec: TableSpec, source: Source,
                   columns: dict[str, ColumnInfo]) -> list[ColumnInfo]:
    """The target columns of the source's rows, in their order; a key is never NULL,
    whatever the target declares (SQLite allows NULL keys)."""
    missing = [n for n in source.columns if n not in columns]
    if missing:
        raise ConfigError(f"columns of the source are missing from the target "
                          f"{spec.qualified_target}: {', '.join(missing)}")
    return [replace(columns[n], nullable=False) if n in spec.primary_key else columns[n]
            for n in source.columns]


def read_window(job: TableJob, source: Source) -> Window:
    """DESIGN 4.4: a full read (no watermark yet, `--full`, `full_every` due, not
    incremental), or from the stored watermark less the lookback."""
    spec = job.spec
    if spec.incremental is None or source.cursor_column is None:
        return Window()
    with job.target.connect() as conn:
        stored = state.read_watermark(conn, spec.name)
        full = job.full or stored is not None and state.due_for_full_read(
            conn, spec.name, spec.options.full_every, job.now())
    return Window(*window(stored, source.parse_watermark, spec.options.lookback, full=full))


def null_cursor_rows(spec: TableSpec, source: Source, window: Window) -> int | None:
    """Rows an incremental read can never see, said in the log (a --full run reads them)."""
    if source.cursor_column is None or window.since is None:
        return None
    rows = source.count_null_cursor()
    if rows:
        log.warning("%s: %d rows have no %s and are only read by a --full run", spec.name,
                    rows, source.cursor_column,
                    extra={"event": "null_cursor", "table": spec.name})
    return rows


def load_and_apply(job: TableJob, source: Source, infos: list[ColumnInfo], window: Window,
                   res: TableResult, *, direct: bool) -> None:
    """The table's one transaction: stage, check, diff, guard and (unless planning) apply
    with the watermark and the run record."""
    spec, target = job.spec, job.target
    opts = spec.options
    estimate = source.estimated_rows() if window.since is None else None
    job.progress.start(spec.name, estimate)
    with target.table_writer(spec.target_schema, spec.target_table, infos, spec.primary_key,
                             commit=not job.plan_only,
                             timeouts=(opts.lock_timeout, opts.statement_timeout),
                             timezone=opts.source_timezone) as writer:
        if direct and not job.plan_only:
            writer.try_direct()
        target_rows = rows_to_compare(job, window, writer)
        plan = source.read_plan(infos, copy_text=target.takes_copy_text,
                                source_timezone=opts.source_timezone, target_rows=target_rows)
        with Session(lambda: source.reading(window.since, plan), "refsync-source") as session:
            comparison = compare(job, source, session, writer, plan, target_rows or 0)
            staged = read_and_stage(job, source, session, writer, infos, comparison)
        res.read, res.source_snapshot = staged.read, staged.snapshot_utc
        res.rejected = staged.converter.rejected
        res.rejects = [r.as_dict() for r in staged.converter.rejects]
        job.progress.phase(spec.name, "checking")
        check_keys(spec, writer, staged.converter, unique=plan.unique_keys)
        counts = diff(writer, spec, comparison)
        if comparison is not None:
            res.read += comparison.equal_rows
            writer.timings.update(comparison.timings)
        res.timings = writer.timings
        res.take_counts(counts)
        mark = next_watermark(spec, staged, comparison, res.warnings)
        res.watermark = None if mark is None else mark_text(mark)
        guard(job, res, counts, writer)
        res.status = "ok" if counts.changes else "unchanged"
        if not job.plan_only:
            apply_and_record(job, writer, counts, res)


def rows_to_compare(job: TableJob, window: Window, writer: SqlTableWriter) -> int | None:
    """The target's estimated rows where the read compares digests first (a full read of a
    target that holds rows; a first load has nothing to compare), else None."""
    if window.since is not None or writer.direct or job.spec.options.digests == "off":
        return None
    return writer.estimated_rows()


def compare(job: TableJob, source: Source, session: Session[Read], writer: SqlTableWriter,
            plan: ReadPlan, target_rows: int) -> Comparison | None:
    """DESIGN 4.6: both sides' digests, computed at once (the source's in its read's
    snapshot, the target's here), compared before any row moves. A table whose last run
    left it in step is compared whole first, its parts only when the wholes differ. None:
    read everything (no digests, or so much differs that reading it all is cheaper)."""
    if plan.digests is None:
        return None
    from refsync import digest

    dplan = sized_comparison(job, target_rows, plan.digests)
    timings: dict[str, float] = {}
    if dplan is None:
        return None
    whole_first = job.last_run is not None and job.last_run.left_in_step(source.changed_at)
    ours: dict[int, BucketDigest] | None = None
    theirs: dict[int, BucketDigest] = {}
    for whole in (True, False) if whole_first else (False,):
        side = "total" if whole else "digest"
        if not whole:  # parts of the key's order where it can have them (sized, sampled)
            dplan = ranged(job, session, writer, dplan, target_rows, timings)
            if dplan is None:
                writer.timings.update(timings)  # what choosing cost, though it compared nothing
                return None
        pending = session.call(partial(_source_digests, plan=dplan, whole=whole))
        started = time.perf_counter()
        ours = target_digests(job, writer, dplan, whole)
        timings[f"target_{side}"] = time.perf_counter() - started
        theirs, timings[f"source_{side}"] = interrupts.wait(pending)
        if ours is None:  # the target cannot digest: read everything
            return None
        if whole and ours == theirs:
            break
    assert ours is not None
    outcome = digest.compare(dplan, theirs, ours)
    if outcome.source_rows_differing > digest.READ_ALL_SHARE * max(outcome.source_rows, 1):
        log.debug("%s: digests: %d of %d parts differ, holding %d of %d rows: reading all",
                  job.spec.name, len(outcome.differing), dplan.buckets,
                  outcome.source_rows_differing, outcome.source_rows)
        writer.timings.update(timings)  # what the comparison cost, though it read nothing
        return None
    log.debug("%s: digests: %d of %d parts differ: reading %d rows, %d compared equal",
              job.spec.name, len(outcome.differing), dplan.buckets,
              outcome.source_rows_differing, outcome.equal_rows)
    largest = interrupts.wait(session.call(_largest_cursor))
    only = Selection(dplan, outcome.differing) if outcome.differing else None
    return Comparison(only, outcome.equal_rows, largest,
                      digest.target_bucket_predicate(dplan, outcome.differing), timings)


def ranged(job: TableJob, session: Session[Read], writer: SqlTableWriter, plan: DigestPlan,
           target_rows: int, timings: dict[str, float]) -> DigestPlan | None:
    """`plan` in key ranges sized for the change expected -- what a sample of the target
    finds changed (`change_sample`), else what the last full read changed -- where the key
    can have them (`digest.KeyRanges`; else `plan` as it is), or None where so much is
    expected to differ that reading everything is cheaper (said at -v). While the source
    looks the sample up, the target's bounds are sampled for the last night's change: again
    only where tonight's asks for ranges of another size (`digest.near_parts`)."""
    from refsync import digest

    if not digest.takes_ranges(plan.range_key, target_rows):
        return plan
    spec = job.spec
    started = time.perf_counter()
    expected = job.last_run.changed_share if job.last_run is not None else None
    sample = change_sample(job, session, writer, plan, target_rows)
    guess = digest.range_parts(target_rows, expected)
    bounds = None if guess is None else target_bounds(writer, plan, spec, guess, target_rows)
    seen = None if sample is None else tonight_share(job, *sample)
    timings["sample"] = time.perf_counter() - started
    why = "the last full read changed"
    if seen is not None:
        expected, why = seen, "a sample of the target found changed"
    parts = digest.range_parts(target_rows, expected)
    if parts is None:
        log.debug("%s: digests: %s %.1f %% of the rows: reading all", spec.name, why,
                  100 * (expected or 0))
        return None
    started = time.perf_counter()
    if guess is None or not digest.near_parts(parts, guess):
        bounds = target_bounds(writer, plan, spec, parts, target_rows)
    got = None if bounds is None else source_ordered(session, plan, bounds)
    timings["ranges"] = time.perf_counter() - started
    if got is None:
        return plan
    log.debug("%s: digests: %d key ranges (%d wanted) for the %.3f %% of rows %s",
              spec.name, got.buckets, parts + 1, 100 * (expected or 0), why)
    return got


def change_sample(job: TableJob, session: Session[Read], writer: SqlTableWriter,
                  plan: DigestPlan, rows: int) -> tuple[list[tuple[Any, int]], Any] | None:
    """This night's change before the comparison is sized: a sample of the target's rows
    (`digest.SAMPLE_ROWS`, taken row by row, with their row hashes) and the source's
    lookup of their keys in its snapshot, under way (`tonight_share` waits for it); None
    where the target cannot digest (the comparison says so)."""
    from refsync import digest
    from refsync.targets import pg_digest

    try:
        sample = pg_digest.sample_row_hashes(writer.conn, plan, job.spec.target_schema,
                                             job.spec.target_table, rows=rows,
                                             wanted=digest.SAMPLE_ROWS)
    except digest.DigestUnsupported:
        return None
    except sa.exc.DBAPIError as exc:
        raise writer.classify_write_error(exc, "sampling rows") from None
    keys = [k for k, _ in sample]
    return sample, session.call(partial(_key_hashes, plan=plan, keys=keys))


def tonight_share(job: TableJob, sample: list[tuple[Any, int]], pending: Any) -> float | None:
    """The share of the sampled target rows the source holds otherwise or not at all; None
    where too few rows were sampled to tell."""
    from refsync import digest

    share = digest.sampled_share(sample, interrupts.wait(pending))
    if share is not None:
        log.debug("%s: digests: %d of %d sampled target rows changed", job.spec.name,
                  round(share * len(sample)), len(sample))
    return share


def target_bounds(writer: SqlTableWriter, plan: DigestPlan, spec: TableSpec, parts: int,
                  rows: int) -> KeyRanges | None:
    """Bounds of about `parts` key ranges sampled from the target, on the writer's
    connection (which names its own errors)."""
    from refsync.targets import pg_digest

    try:
        return pg_digest.sample_ranges(writer.conn, plan, spec.target_schema,
                                       spec.target_table, parts=parts, rows=rows)
    except sa.exc.DBAPIError as exc:
        raise writer.classify_write_error(exc, "sampling key ranges") from None


def source_ordered(session: Session[Any], plan: DigestPlan,
                   ranges: KeyRanges | None) -> DigestPlan | None:
    """`plan` in `ranges`, kept where the source orders the bounds alike (in the source's
    thread); None where there are no such ranges (too few keys, or a source that cannot
    join its bounds)."""
    if ranges is None or len(ranges.bounds) < 1:
        return None
    wanted = plan.with_ranges(ranges)
    ordered: DigestPlan | None = interrupts.wait(
        session.call(lambda read: read.ordered_ranges(wanted)))
    return ordered


def key_ranges(session: Session[Any], target: sa.Connection, plan: DigestPlan,
               schema: str | None, table: str, *, parts: int, rows: int) -> DigestPlan | None:
    """`plan` in about `parts` key ranges: bounds sampled from the target on this thread's
    connection, kept where the source orders them alike (`source_ordered`)."""
    from refsync.targets import pg_digest

    ranges = pg_digest.sample_ranges(target, plan, schema, table, parts=parts, rows=rows)
    return source_ordered(session, plan, ranges)


def sized_comparison(job: TableJob, target_rows: int, plan: DigestPlan) -> DigestPlan | None:
    """The digest plan sized for the change the last full read found (smaller buckets where
    more changed), or None where so much is expected to differ that reading everything is
    cheaper (said at -v)."""
    from refsync import digest

    expected = job.last_run.changed_share if job.last_run is not None else None
    if digest.takes_ranges(plan.range_key, target_rows):
        return plan  # sized as key ranges, when the parts are wanted (`ranged`)
    sized = digest.sized_for_change(plan, target_rows, expected)
    if sized is None:
        log.debug("%s: digests: the last full read changed %.1f %% of the rows: reading all",
                  job.spec.name, 100 * (expected or 0))
    elif sized.buckets != plan.buckets:
        log.debug("%s: digests: %d buckets for the %.3f %% of rows the last full read "
                  "changed", job.spec.name, sized.buckets, 100 * (expected or 0))
    return sized


def _source_digests(read: Read, plan: DigestPlan,
                    whole: bool) -> tuple[dict[int, BucketDigest], float]:
    """(the source's digests, seconds): in the source's thread, inside its snapshot."""
    assert isinstance(read, DigestRead), "a digest plan comes only with a digest read"
    started = time.perf_counter()
    return read.digests(plan, whole), time.perf_counter() - started


def _key_hashes(read: Read, plan: DigestPlan, keys: list[Any]) -> dict[Any, int]:
    assert isinstance(read, DigestRead)
    return read.key_hashes(plan, keys)


def _largest_cursor(read: Read) -> Any:
    assert isinstance(read, DigestRead)
    return read.largest_cursor()


def target_digests(job: TableJob, writer: SqlTableWriter, plan: DigestPlan,
                   whole: bool) -> dict[int, BucketDigest] | None:
    """The target's digests, on the writer's connection (this thread's); None where the
    target cannot digest (said at -v)."""
    from refsync import digest
    from refsync.targets import pg_digest

    try:
        return pg_digest.target_digests(writer.conn, plan, job.spec.target_schema,
                                        job.spec.target_table, whole=whole)
    except digest.DigestUnsupported as exc:
        log.debug("%s: no digests: %s", job.spec.name, exc)
        return None
    except sa.exc.DBAPIError as exc:
        raise writer.classify_write_error(exc, "computing digests") from None


def read_and_stage(job: TableJob, source: Source, session: Session[Read],
                   writer: SqlTableWriter, infos: list[ColumnInfo],
                   comparison: Comparison | None) -> Staged:
    """Stream the rows (those of the differing parts, after a comparison) into staging: COPY
    text the source server made and checked as it is, source values through the value
    rules first."""
    spec = job.spec
    converter = RowConverter(infos, spec.primary_key, ZoneInfo(spec.options.source_timezone),
                             max_listed=MAX_LISTED, cursor=source.cursor_column is not None)
    snapshot, open_writes = interrupts.wait(session.call(
        lambda read: (read.snapshot_utc, read.open_writes)))
    staged = Staged(0, None, converter, snapshot, open_writes)
    if comparison is not None:
        staged.largest_cursor = comparison.largest_cursor
        if comparison.only is None:
            return staged  # every part agrees: nothing to read
    started = time.perf_counter()
    only = comparison.only if comparison is not None else None
    for chunk in session.stream(lambda read: read.chunks(only)):
        staged.read += chunk.rows
        if chunk.copy_text is not None:
            writer.stage_text(chunk.copy_text, chunk.rows)
        elif chunk.batch is not None:
            writer.stage(converter.convert_batch(chunk.batch))
        if chunk.high is not None:
            staged.largest_cursor = max_cursor(staged.largest_cursor, [chunk.high])
        job.progress.advance(spec.name, chunk.rows)
    writer.timings["read+check"] = (time.perf_counter() - started
                                    - writer.timings.get("stage", 0.0))
    return staged


def check_keys(spec: TableSpec, writer: SqlTableWriter, converter: RowConverter, *,
               unique: bool) -> None:
    """Duplicate keys fail the table, naming them (DESIGN 4.5), unless the source's own
    unique key rules them out (`unique`); a rejected row's key is still a source key, so
    `delete_insert` keeps its target row."""
    dup_total, dups = (0, []) if unique else writer.duplicate_keys(MAX_LISTED)
    if dup_total:
        keys = "; ".join(", ".join(f"{k}={v}" for k, v in zip(spec.primary_key, d, strict=True))
                         for d in dups)
        raise InvalidRows(f"{dup_total} key(s) appear more than once in the source: {keys}",
                          hint="make the source key unique, or fix primary_key in the config")
    if spec.sync_mode == "delete_insert" and not writer.direct:
        writer.keep_keys(converter.rejected_keys)


def diff(writer: SqlTableWriter, spec: TableSpec, comparison: Comparison | None) -> DiffCounts:
    """New, changed, unchanged and missing rows; after a comparison, only in the parts that
    were read (the others were equal: counted unchanged)."""
    only = comparison.target_where if comparison is not None else None
    counts = writer.diff(deletes=spec.sync_mode == "delete_insert", only=only)
    if comparison is not None:
        counts.unchanged += comparison.equal_rows
    return counts


def next_watermark(spec: TableSpec, staged: Staged, comparison: Comparison | None,
                   warnings: list[str]) -> Any:
    """DESIGN 4.4 (`watermark.next_mark`) with what the source saw as its snapshot began;
    says why it held back."""
    snapshot = staged.snapshot_utc or datetime.now(UTC)
    open_write_utc = (None if staged.open_writes is None
                      else open_write_cap(snapshot, staged.open_writes))
    mark, notes = next_mark(staged.largest_cursor, snapshot_utc=snapshot,
                            open_write_utc=open_write_utc,
                            reject_low=staged.converter.reject_low,
                            zone=ZoneInfo(spec.options.source_timezone))
    for note in notes:
        warnings.append(note)
        log.warning("%s: %s", spec.name, note,
                    extra={"event": "watermark_held", "table": spec.name})
    return mark


def guard(job: TableJob, res: TableResult, counts: DiffCounts, writer: SqlTableWriter) -> None:
    """Invalid rows first (`on_invalid: fail`), then the mass-delete guard (DESIGN 4.5)."""
    opts = job.spec.options
    if res.rejected and opts.on_invalid == "fail":
        shown = "; ".join(f"{r['key']} {r['column']}={r['value']!r}: {r['reason']}"
                          for r in res.rejects[:5])
        raise InvalidRows(f"{res.rejected} row(s) do not fit the target: {shown}"
                          + (" …" if len(res.rejects) > 5 else ""), rejects=res.rejects)
    if job.spec.sync_mode != "delete_insert" or not counts.deleted or job.allow_mass_delete:
        return
    before = counts.authoritative_before
    if writer.staged == 0 and res.rejected == 0:
        raise Guarded(f"the source is empty but the target holds {before} "
                      f"authoritative rows; nothing was deleted")
    if counts.deleted > opts.max_delete_ratio * before:
        raise Guarded(f"would delete {counts.deleted} of {before} authoritative rows "
                      f"({counts.deleted / before:.0%} > max_delete_ratio "
                      f"{opts.max_delete_ratio:.0%}); nothing was deleted")


def apply_and_record(job: TableJob, writer: SqlTableWriter, counts: DiffCounts,
                     res: TableResult) -> None:
    """Write the changes and the run record (with the watermark) in the table's
    transaction, after checking in it that this run still holds the run lock."""
    job.target.hold_lock(writer.conn)
    job.progress.phase(job.spec.name, "applying")
    writer.apply(counts, deletes=job.spec.sync_mode == "delete_insert")
    started = datetime.fromisoformat(res.started_at) if res.started_at else job.now()
    res.duration_s = (job.now() - started).total_seconds()
    state.record(writer.conn, job.run_key, res, started=started, finished=job.now(),
                 watermark_moves=True)
    job.on_commit()
