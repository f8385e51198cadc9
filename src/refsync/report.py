"""`refsync status`: each table's last run and watermark, read from the state tables.

Reads through the target's plain driver (`targets.readonly`), never SQLAlchemy or the engine,
so it answers in well under half a second; takes no lock and creates nothing.
"""

from __future__ import annotations

import stat
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from refsync import state
from refsync.alerting import success_problem
from refsync.config import LoadedConfig, Settings
from refsync.model import COUNT_FIELDS
from refsync.targets.readonly import StateReader, read_state


def disabled_reason(config: LoadedConfig, settings: Settings) -> str | None:
    if not settings.reference_sync_enabled:
        return "WDH_REFERENCE_SYNC_ENABLED=false"
    if not config.section.enabled:
        return f"enabled: false in {config.path}"
    return None


def _iso(value: datetime | None, zone: tzinfo) -> str | None:
    """A stored time as ISO-8601 with the configured zone's offset, like every time shown
    (the database hands it back in its session zone, UTC or other)."""
    if value is None:
        return None
    when = value.replace(tzinfo=zone) if value.tzinfo is None else value.astimezone(zone)
    return when.isoformat(timespec="milliseconds")


def _run_doc(row: dict[str, Any], zone: tzinfo) -> dict[str, Any]:
    return {
        "run_key": row["run_key"], "table": row["table_name"], "target": row["target"],
        "mode": row["mode"], "status": row["status"], "started_at": _iso(row["started_at"], zone),
        "finished_at": _iso(row["finished_at"], zone),
        **{c: row[c] for c in COUNT_FIELDS},
        "attempts": row["attempts"], "duration_s": row["duration_s"],
        "watermark": row["watermark"], "error_class": row["error_class"], "error": row["error"],
    }


def status(config: LoadedConfig, settings: Settings, *, tables: list[str] | None = None,
           runs: int = 20, now: datetime | None = None) -> dict[str, Any]:
    """Each table's last run and watermark, then the last `runs` runs; creates nothing."""
    specs = config.section.select(tables)
    names = [s.name for s in specs]
    per_table: dict[str, Any] = {}
    run_rows: list[dict[str, Any]] = []
    abandoned: set[str] = set()
    with read_state(settings.require_database_url()) as db:
        if db is not None:  # never create an empty SQLite file just to look
            per_table, run_rows = state.read_status(db, names, runs)
            abandoned = _abandoned(db, per_table, run_rows)
    zone = ZoneInfo(config.section.timezone)
    now = now or datetime.now(zone)
    docs, warnings = [], []
    for spec in specs:
        st, last = per_table.get(spec.name, (None, None)) if per_table else (None, None)
        doc: dict[str, Any] = {
            "name": spec.name, "target": spec.qualified_target, "enabled": spec.enabled,
            "last_run_key": st["last_run_key"] if st else None,
            "last_status": ("abandoned" if st and st["last_run_key"] in abandoned
                            and st["last_status"] == "running" else
                            st["last_status"] if st else "never"),
            "last_started_at": _iso(st["last_started_at"], zone) if st else None,
            "last_finished_at": _iso(st["last_finished_at"], zone) if st else None,
            "last_success_at": _iso(st["last_success_at"], zone) if st else None,
            "watermark": st["watermark"] if st else None,
            # when a run last read every source row (older state tables lack the column)
            "last_full_read": _iso(st.get("last_full_at"), zone) if st else None,
            **{c: (last[c] if last else None) for c in COUNT_FIELDS},
            "attempts": last["attempts"] if last else None,
            "duration_s": last["duration_s"] if last else None,
            "error_class": last["error_class"] if last else None,
            "error": last["error"] if last else None,
        }
        docs.append(doc)
        problem = success_problem(spec.name, st["last_success_at"], now) if (
            spec.enabled and st is not None) else None
        warnings += [problem] if problem else []
    run_docs = [_run_doc(r, zone) for r in run_rows]
    for doc in run_docs:
        if doc["status"] == "running" and doc["run_key"] in abandoned:
            doc["status"] = "abandoned"
    return {"tables": docs, "runs": run_docs, "warnings": warnings}


def _abandoned(db: StateReader, per_table: dict[str, Any],
               run_rows: list[dict[str, Any]]) -> set[str]:
    """Run keys of `running` records whose run no longer holds the lock (DESIGN 5): all of
    them when nobody holds it, all but the newest when some run does."""
    running = {st["last_run_key"] for st, _ in per_table.values()
               if st is not None and st["last_status"] == "running" and st["last_run_key"]}
    running |= {r["run_key"] for r in run_rows if r["status"] == "running"}
    if not running:
        return set()
    held = db.lock_held()
    if held is None:  # cannot tell (an in-memory SQLite): assume they still run
        return set()
    newest = max(running)  # run keys are ISO timestamps in one zone: they sort by time
    return running - {newest} if held else running


def problem_lines(report: dict[str, Any], now: datetime) -> list[str]:
    """`status --problems`: the lines behind status's exit 1, a failed table's with the first
    line of its error, then the report's other problems (an env file others can read)."""
    from refsync.alerting import status_problems

    lines: list[str] = []
    for table in report["tables"]:
        for problem in status_problems({"tables": [table]}, now):
            error = (table.get("error") or "").strip().splitlines()
            failed = problem.startswith(f"{table['name']}: last run ")
            lines.append(f"{problem}: {error[0][:300]}" if failed and error else problem)
    listed = set(status_problems(report, now))
    lines += [p for p in report.get("problems", []) if p not in listed]
    return lines


def env_file_problems(env_file: Path | None) -> list[str]:
    """The env file (`--env-file`, as the service's) holds passwords: one readable by every
    user on the host is a problem."""
    if env_file is None:
        return []
    path = env_file
    try:
        mode = path.stat().st_mode
    except OSError:
        return []
    if not mode & stat.S_IROTH:
        return []
    return [f"env file {path.resolve()} holds secrets and is readable by every user "
            f"(mode {stat.S_IMODE(mode):04o}): chmod 0640 {path.resolve()}"]
