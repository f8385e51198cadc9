"""The child process of the sync matrix: one case's steps, in order (test_matrix.py starts it).

Run as `python matrix_runner.py CASE_ID WORKDIR` with the source and target in the WDH_*
environment. refsync runs in this process through its CLI (`refsync.cli.app`, `--json`), its
legacy engines disposed after each command so that each starts as a fresh process would:
Python's start-up and imports, a second a command on a loaded machine, are paid once a case.
The parent enforces the deadlines: it reads this process's events, one JSON object a line on
the stdout it was started with (`built`, `start`/`end` per step, `done`), and kills the
process group when a step does not end in time. Shortly before that, faulthandler writes
every thread's stack to stderr, so a hang names where it waits.

Each sync step runs `plan` first: it writes nothing (the target and refsync's state are the
same after it) and its counts are the ones the sync then reports. The counts a step must
report come from the two databases just before it (not from what the step changed), and after
every sync the target's rows equal the source's, value for value, all stamped authoritative.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import psycopg
import pymysql
import sqlalchemy as sa
import yaml
from matrix_cases import (
    BATCH_SIZE,
    T0,
    Case,
    case_by_id,
    generation_stamp,
    normalise,
    picked_sql,
)
from typer.testing import CliRunner

from refsync.demo_data import TRACKING_COLUMN_DDL

SCHEMA = "business"
# the tracking columns as the production DDL declares them (the child imports no test helper)
TRACKING_DDL = ", ".join(f'"{c}" {ddl}' for c, ddl in TRACKING_COLUMN_DDL.items())
COUNTS = ("read", "inserted", "updated", "deleted", "unchanged", "promoted", "rejected")
AUTHORITATIVE = ("authoritative", False, None, None)
TRACKING = '"_source", "_needs_review", "_derived_from_domain", "_derived_at"'
WRITER_MIN_UPDATES = 20  # the concurrent writer has visibly started
WRITER_MAX_UPDATES = 20_000  # and stops by itself at the latest here


class StepFailed(AssertionError):
    """A step ended with a wrong result; the case goes on with the next step."""


@dataclass
class CliRun:
    args: list[str]
    code: int
    stdout: str
    stderr: str
    seconds: float

    def doc(self) -> dict[str, Any]:
        try:
            return json.loads(self.stdout)  # type: ignore[no-any-return]
        except json.JSONDecodeError:
            raise StepFailed(f"`refsync {' '.join(self.args)}` exited {self.code} without a "
                             f"JSON document: {self.tail()}") from None

    def tail(self) -> str:
        return (self.stdout[-800:] + " | stderr: " + self.stderr[-1500:]).strip()


@dataclass
class Harness:
    """One case's source table, target database and config files, and the checks."""

    case: Case
    mysql: sa.URL
    pg_url: str
    workdir: Path
    next_n: int = 0
    generation: int = 0
    times: dict[str, float] = field(default_factory=dict)  # refsync's own, per step

    # -- building

    def build(self) -> None:
        shape, table = self.case.shape, self.case.table
        with self.my() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            cur.execute(shape.mysql_ddl(table))
        self.insert(self.case.size, T0)
        with self.pg() as conn:
            conn.execute(shape.pg_ddl(SCHEMA, table, TRACKING_DDL))  # type: ignore[call-overload]
        for mode in ("upsert", "delete_insert"):
            self._write_config(mode)

    def drop(self) -> None:
        with self.my() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{self.case.table}`")

    def insert(self, count: int, stamp: datetime) -> None:
        shape = self.case.shape
        rows = [shape.row(n, stamp.replace(second=n % 60)) for n in
                range(self.next_n, self.next_n + count)]
        self.next_n += count
        if not rows:
            return
        cols = ", ".join(f"`{c.name}`" for c in shape.mapped)
        marks = ", ".join(["%s"] * len(rows[0]))
        with self.my() as cur:
            for start in range(0, len(rows), 5000):
                cur.executemany(f"INSERT INTO `{self.case.table}` (n, {cols}, updated_at) "
                                f"VALUES ({marks})", rows[start:start + 5000])

    def _write_config(self, mode: str) -> None:
        shape, table = self.case.shape, self.case.table
        source: dict[str, Any] = {"table": table, "columns": [
            {"source": c.name, "target": c.name} for c in shape.mapped]}
        if shape.incremental and mode == "upsert":
            source["incremental"] = {"updated_at_column": "updated_at"}
        keys = [c.name for c in shape.keys]
        entry = {"name": table, "target_table": table, "target_schema": SCHEMA,
                 "source_type": "legacy_mysql", "sync_mode": mode,
                 "primary_key": keys[0] if len(keys) == 1 else keys, "source_config": source}
        section = {"enabled": True, "timezone": "Asia/Shanghai",
                   "defaults": {"retry": {"attempts": 0, "backoff": [0]},
                                "batch_size": BATCH_SIZE, "max_delete_ratio": 1.0},
                   "tables": [entry]}
        self.config(mode).write_text(
            yaml.safe_dump({"reference_sync": section}, allow_unicode=True), encoding="utf-8")

    def config(self, mode: str) -> Path:
        return self.workdir / f"{mode}.yml"

    # -- connections

    def my(self) -> Any:
        """A cursor on the source database (autocommit), closed with its connection."""
        conn = pymysql.connect(host=self.mysql.host, port=self.mysql.port or 3306,
                               user=self.mysql.username, password=self.mysql.password or "",
                               database=self.mysql.database, charset="utf8mb4",
                               autocommit=True)
        return _Closing(conn)

    def pg(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg_url.replace("postgresql+psycopg://", "postgresql://"),
                               autocommit=True)

    # -- running refsync

    def refsync(self, step: str, *args: str, mode: str = "upsert") -> CliRun:
        """`refsync ARGS --json -c <config>`, in this process."""
        from refsync.cli import app
        from refsync.sources import dispose_engines

        argv = [*args, "--json", "-c", str(self.config(mode))]
        started = time.monotonic()
        try:
            result = CliRunner().invoke(app, argv)
        finally:
            dispose_engines()  # the next command starts with no pooled connection
            gc.collect()
        run = CliRun(argv, result.exit_code, result.stdout, result.stderr,
                     time.monotonic() - started)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            trace = "".join(traceback.format_exception(result.exception))
            raise StepFailed(f"`refsync {' '.join(args)}` raised: {trace[-1500:]}")
        self.times[step] = self.times.get(step, 0.0) + run.seconds
        return run

    # -- the two sides

    def source_rows(self, since: datetime | None = None) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        shape = self.case.shape
        cols = ", ".join(f"`{c.name}`" for c in shape.mapped)
        where = "" if since is None else " WHERE updated_at >= %s"
        with self.my() as cur:
            cur.execute(f"SELECT {cols} FROM `{self.case.table}`{where}",
                        () if since is None else (since,))
            rows = cur.fetchall()
        return _keyed(shape.mapped, len(shape.keys), rows)

    def target_rows(self) -> tuple[dict[tuple[Any, ...], tuple[Any, ...]], int]:
        """(authoritative rows by key, how many rows are not stamped as layer 1 writes)."""
        shape = self.case.shape
        cols = ", ".join(f'"{c.name}"' for c in shape.mapped)
        with self.pg() as conn:
            rows = conn.execute(f'SELECT {cols}, {TRACKING} FROM "{SCHEMA}"."{self.case.table}"'
                                ).fetchall()
        width = len(shape.mapped)
        layer1 = [r[:width] for r in rows if tuple(r[width:]) == AUTHORITATIVE]
        return _keyed(shape.mapped, len(shape.keys), layer1), len(rows) - len(layer1)

    def target_state(self) -> tuple[Any, ...]:
        """Everything a run could write: the target's rows and refsync's own tables."""
        with self.pg() as conn:
            rows = conn.execute(f'SELECT * FROM "{SCHEMA}"."{self.case.table}"').fetchall()
            mine = conn.execute("SELECT to_regclass('refsync.sync_state') IS NOT NULL").fetchone()
            state: list[Any] = []
            if mine and mine[0]:
                state = [*conn.execute("SELECT * FROM refsync.sync_state").fetchall(),
                         *conn.execute("SELECT * FROM refsync.sync_runs").fetchall()]
        return tuple(sorted(map(repr, rows))), tuple(sorted(map(repr, state)))

    def watermark(self) -> datetime | None:
        with self.pg() as conn:
            row = conn.execute("SELECT to_regclass('refsync.sync_state')").fetchone()
            if row is not None and row[0] is not None:
                row = conn.execute("SELECT watermark FROM refsync.sync_state "
                                   "WHERE table_name = %s", (self.case.table,)).fetchone()
        return None if row is None or row[0] is None else datetime.fromisoformat(row[0])

    # -- expectations and checks

    def expected(self, *, full: bool, deletes: bool) -> dict[str, Any]:
        """The counts a sync must report, from the source (its window) and the target now."""
        since = None if full or not self.case.shape.incremental else self.watermark()
        source, (target, _) = self.source_rows(since), self.target_rows()
        counts = dict.fromkeys(COUNTS, 0)
        counts["read"] = len(source)
        for key, row in source.items():
            old = target.get(key)
            name = "inserted" if old is None else "unchanged" if old == row else "updated"
            counts[name] += 1
        if deletes:
            counts["deleted"] = len(target.keys() - self.source_rows().keys())
        changes = counts["inserted"] + counts["updated"] + counts["deleted"]
        return {"status": "ok" if changes else "unchanged", **counts}

    def assert_in_step(self) -> None:
        source, (target, strangers) = self.source_rows(), self.target_rows()
        problems = []
        if strangers:
            problems.append(f"{strangers} target rows not stamped authoritative/layer 1")
        missing = sorted(source.keys() - target.keys(), key=repr)
        extra = sorted(target.keys() - source.keys(), key=repr)
        differ = sorted((k for k in source.keys() & target.keys() if source[k] != target[k]),
                        key=repr)
        for what, keys in (("missing from the target", missing), ("extra", extra)):
            if keys:
                problems.append(f"{len(keys)} rows {what}, e.g. {keys[:3]}")
        if differ:
            problems.append(f"{len(differ)} rows differ, e.g. " + "; ".join(
                f"{k}: source {source[k]} target {target[k]}" for k in differ[:2]))
        if problems:
            raise StepFailed("target != source: " + "; ".join(problems))

    def plan_then_sync(self, step: str, *flags: str, mode: str = "upsert") -> None:
        """`plan` writes nothing and predicts the counts; `sync` reports them; then the target
        equals the source."""
        deletes, full = mode == "delete_insert", "--full" in flags
        want = self.expected(full=full or not self.case.shape.incremental, deletes=deletes)
        before = self.target_state()
        planned = self.refsync(step, "plan", *flags, mode=mode)
        got_plan = _table_counts(planned, "plan")
        if self.target_state() != before:
            raise StepFailed("`plan` changed the target or refsync's state")
        synced = self.refsync(step, "sync", *flags, mode=mode)
        got = _table_counts(synced, "sync")
        problems = [f"{what} reported {seen}, expected {want}" for what, seen in
                    (("plan", got_plan), ("sync", got)) if seen != want]
        if problems:
            raise StepFailed("; ".join(problems))
        self.assert_in_step()

    def verify(self, step: str) -> None:
        run = self.refsync(step, "verify")
        doc = run.doc()
        [table] = doc["tables"]
        source, (target, _) = self.source_rows(), self.target_rows()
        seen = {k: table.get(k) for k in ("status", "source_rows", "target_rows", "differ",
                                           "missing", "extra")}
        want: dict[str, Any] = {"status": "in_step", "source_rows": len(source),
                                "target_rows": len(target), "differ": 0, "missing": 0,
                                "extra": 0}
        if self.case.shape.verify_status != "in_step":  # listed, not compared: exit 0
            want = {**dict.fromkeys(want), "status": self.case.shape.verify_status}
        if run.code != 0 or seen != want:
            raise StepFailed(f"verify exited {run.code} with {seen}, expected {want} "
                             f"({table.get('error') or table.get('reason')})")

    # -- changing the source

    def change(self, share: float) -> None:
        """Rewrite about `share` of the rows (at least one) to the next generation."""
        self.generation += 1
        k = max(1, round(self.case.size * share)) if self.case.size else 0
        with self.my() as cur:
            cur.execute(self.case.shape.change_sql(self.case.table), self._pick(k))

    def delete(self, share: float) -> None:
        """Delete about `share` of the rows, never the last one (an empty source is guarded)."""
        k = int(self.case.size * share)
        if self.case.size > 1:
            with self.my() as cur:
                cur.execute(f"DELETE FROM `{self.case.table}` WHERE {picked_sql()}",
                            self._pick(max(1, k)))

    def _pick(self, k: int) -> dict[str, Any]:
        return {"k": k, "size": max(self.case.size, 1), "salt": self.generation * 31 + 7,
                "g": self.generation, "stamp": generation_stamp(self.generation)}

    # -- a writer during the read

    def concurrent_full_sync(self, step: str) -> None:
        """`sync --full` while another session updates rows in autocommit: it ends, ok."""
        self.generation += 1
        writer = SourceWriter(self.my, self.case.table, self.case.size,
                              generation_stamp(self.generation))
        writer.start()
        try:
            writer.wait_started(self.case.step_deadline_s)
            before = writer.updates
            run = self.refsync(step, "sync", "--full")
            during = writer.updates - before
        finally:
            writer.stop.set()
            writer.join(timeout=self.case.step_deadline_s)
        if writer.error is not None:
            raise StepFailed(f"the concurrent writer failed: {writer.error!r}")
        if not during:
            raise StepFailed("the concurrent writer made no update during the sync")
        got = _table_counts(run, "sync")
        if got["status"] not in ("ok", "unchanged"):
            raise StepFailed(f"sync --full during writes: {got}")


class _Closing:
    """A PyMySQL cursor as a context manager that also closes its connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __enter__(self) -> Any:
        self.cursor = self.conn.cursor()
        return self.cursor

    def __exit__(self, *exc: object) -> None:
        self.cursor.close()
        self.conn.close()


class SourceWriter(threading.Thread):
    """Updates random rows of the source one autocommit statement at a time until stopped
    (or WRITER_MAX_UPDATES, or a minute, whichever comes first)."""

    def __init__(self, connect: Callable[[], Any], table: str, size: int,
                 stamp: datetime) -> None:
        super().__init__(name="matrix-source-writer", daemon=True)
        self.connect, self.table, self.size, self.stamp = connect, table, max(size, 1), stamp
        self.stop = threading.Event()
        self.started_writing = threading.Event()
        self.updates = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(self.size)
        ends = time.monotonic() + 60
        try:
            with self.connect() as cur:
                while (not self.stop.is_set() and self.updates < WRITER_MAX_UPDATES
                       and time.monotonic() < ends):
                    cur.execute(f"UPDATE `{self.table}` SET name = CONCAT('w', n, '-', %s), "
                                "updated_at = %s WHERE n = %s",
                                (self.updates, self.stamp, rng.randrange(self.size)))
                    self.updates += 1
                    if self.updates >= WRITER_MIN_UPDATES:
                        self.started_writing.set()
        except BaseException as exc:  # reported by the test, never raised in this thread
            self.error = exc
        finally:
            self.started_writing.set()

    def wait_started(self, seconds: float) -> None:
        if not self.started_writing.wait(seconds):
            raise StepFailed("the concurrent writer never started")


def _keyed(columns: list[Any], nkeys: int,
           rows: Any) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    out = {}
    for row in rows:
        values = tuple(normalise(c.kind, v) for c, v in zip(columns, row, strict=True))
        out[values[:nkeys]] = values
    return out


def _table_counts(run: CliRun, command: str) -> dict[str, Any]:
    doc = run.doc()
    tables = doc.get("tables") or []
    if run.code != 0 or len(tables) != 1:
        raise StepFailed(f"`{command}` exited {run.code}: "
                         f"{tables[0].get('error') if tables else run.tail()}")
    table = tables[0]
    if table.get("status") in ("failed", "skipped", "guarded", "interrupted"):
        raise StepFailed(f"`{command}`: {table['status']}: {table.get('error')}")
    return {"status": table["status"], **{k: table[k] for k in COUNTS}}


# ---------------------------------------------------------------- the steps, in order


def steps(h: Harness) -> Iterator[tuple[str, Callable[[], None]]]:
    again = "incr" if h.case.shape.incremental else "again"

    def changed_then_synced(share: float) -> Callable[[], None]:
        def step() -> None:
            h.change(share)
            h.plan_then_sync(f"full{share:g}", "--full")
        return step

    def incremental_with_changes() -> None:
        h.change(0.05)
        h.insert(2, generation_stamp(h.generation))
        h.plan_then_sync(f"{again}-changed")

    def deletes() -> None:
        h.delete(0.1)
        h.plan_then_sync("deletes", "--full", mode="delete_insert")

    yield "load", lambda: h.plan_then_sync("load")
    yield "verify-load", lambda: h.verify("verify-load")
    yield "full-unchanged", lambda: h.plan_then_sync("full-unchanged", "--full")
    yield "full0.01pct", changed_then_synced(0.0001)
    yield "full20pct", changed_then_synced(0.2)
    yield "verify-20pct", lambda: h.verify("verify-20pct")
    yield "full100pct", changed_then_synced(1.0)
    if h.case.writer:
        yield "writer", lambda: h.concurrent_full_sync("writer")
        yield "writer-settle", lambda: h.plan_then_sync("writer-settle", "--full")
        yield "writer-verify", lambda: h.verify("writer-verify")
    yield f"{again}-unchanged", lambda: h.plan_then_sync(f"{again}-unchanged")
    yield f"{again}-changed", incremental_with_changes
    yield "deletes", deletes
    yield "verify-end", lambda: h.verify("verify-end")


def main(case_id: str, workdir: Path, step_deadline_s: float) -> None:
    events = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    case = case_by_id(case_id)
    os.chdir(workdir)  # no .env but the one refsync is meant to read: none
    env = os.environ
    h = Harness(case, sa.engine.make_url(env["MATRIX_MYSQL_URL"]), env["WDH_DATABASE_URL"],
                workdir)
    _send(events, event="start", step="build")
    began = time.monotonic()
    try:
        h.build()
        _send(events, event="end", step="build", failure=None,
              seconds=round(time.monotonic() - began, 2))
        for name, step in steps(h):
            _run_step(events, name, step, h.times, step_deadline_s)
    finally:
        h.drop()
    _send(events, event="done")


def _run_step(events: TextIO, name: str, step: Callable[[], None], times: dict[str, float],
              deadline_s: float) -> None:
    """One step between its `start` and `end` events; every thread's stack goes to stderr
    shortly before the parent's deadline would kill this process."""
    _send(events, event="start", step=name)
    faulthandler.dump_traceback_later(max(1.0, deadline_s - 3), exit=False)
    began = time.monotonic()
    failure = None
    try:
        if os.environ.get("MATRIX_HANG_AT") == name:
            _hang_for_the_deadline_test()
        step()
    except StepFailed as exc:
        failure = str(exc)
    except Exception:  # a harness error fails the step with its trace, the case goes on
        failure = traceback.format_exc()[-2000:]
    finally:
        faulthandler.cancel_dump_traceback_later()
    _send(events, event="end", step=name, failure=failure,
          seconds=round(time.monotonic() - began, 2), refsync_s=round(times.get(name, 0), 2))


def _hang_for_the_deadline_test() -> None:
    """What a hung step looks like to the parent (test_a_hung_step_fails_its_case_in_time)."""
    threading.Event().wait()


def _send(events: TextIO, **doc: Any) -> None:
    events.write(json.dumps(doc, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]))
