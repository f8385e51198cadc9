"""Everything a person sees: Rich tables, progress bars and error lines. Data on stdout,
diagnostics on stderr; no bars when stderr is not a terminal (cron) or with --json."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from refsync.errors import RefsyncError
from refsync.model import COUNT_FIELDS, RunResult, TableResult

if TYPE_CHECKING:  # rich.progress is imported by the commands that draw bars, when they do
    from rich.progress import TaskID

    from refsync.verify import TableVerify, VerifyReport


def _console(stderr: bool) -> Console:
    probe = Console(stderr=stderr)
    # cron and pipes: no terminal width to honour, so do not squeeze tables to 80 columns
    return Console(stderr=stderr, highlight=False, width=None if probe.is_terminal else 200)


out_console = _console(stderr=False)
err_console = _console(stderr=True)

STATUS_STYLE = {
    "ok": "green", "unchanged": "green", "disabled": "dim", "never": "dim",
    "failed": "bold red", "guarded": "bold yellow", "skipped": "yellow",
    "interrupted": "bold magenta",
    "in_step": "green", "differs": "bold red", "unsupported": "yellow",
}
SHORT = {"read": "read", "inserted": "ins", "updated": "upd", "deleted": "del",
         "unchanged": "same", "promoted": "prom", "rejected": "rej"}


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status


human_stderr = True  # False under --log-format json: stderr is then JSON lines only


def print_error(exc: RefsyncError) -> None:
    """One line for the cause, one for the hint; never a traceback."""
    if not human_stderr:
        import logging

        logging.getLogger("refsync").error(
            "%s", exc.message, extra={"event": "error", "error_class": exc.error_class,
                                      "error": exc.message, "hint": exc.hint or None})
        return
    lines = exc.message.splitlines() or [str(exc)]
    err_console.print(f"[bold red]Error:[/] {escape(lines[0])}")
    for extra in lines[1:]:
        err_console.print(escape(extra))
    if exc.hint:
        err_console.print(f"[dim]hint:[/] {escape(exc.hint)}")


def print_lines(lines: list[str]) -> None:
    for line in lines:
        out_console.print(escape(line))


def log_line(line: str) -> None:
    """A formatted log line, through the console that owns the live display: Rich prints it
    above the bars instead of into them."""
    err_console.print(Text(line), soft_wrap=True, highlight=False)


class RowProgress:
    """A live bar for the table in flight (rows, ~total, rows/s, phase); when a table is done
    its bar gives way to one permanent result line. A no-op when nobody is watching."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.enabled = enabled
        self.tasks: dict[str, TaskID] = {}
        self.totals: dict[str, int | None] = {}
        self.bar = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.fields[count]}"), TextColumn("{task.fields[rate]} rows/s"),
            TimeElapsedColumn(),
            console=err_console, disable=not enabled, transient=True,
        )

    def __enter__(self) -> RowProgress:
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.enabled:
            self.bar.stop()

    def _count(self, table: str, done: int) -> str:
        total = self.totals.get(table)
        # an estimate from the server's statistics: marked `~`, never a promise
        return f"{done:,}/~{total:,}" if total else f"{done:,}"

    def start(self, table: str, total: int | None) -> None:
        if not self.enabled:
            return
        if table in self.tasks:  # a retry restarts the read: reuse the bar, start again
            self.bar.reset(self.tasks[table], total=total, count=self._count(table, 0), rate="-",
                           description=escape(table))
        else:
            self.tasks[table] = self.bar.add_task(escape(table), total=total, rate="-",
                                                  count="")
        self.totals[table] = total
        self.bar.update(self.tasks[table], count=self._count(table, 0))

    def advance(self, table: str, rows: int) -> None:
        if not self.enabled or table not in self.tasks:
            return
        task_id = self.tasks[table]
        self.bar.advance(task_id, rows)
        task = next(t for t in self.bar.tasks if t.id == task_id)  # ids outlive removed tasks
        if task.total is not None and task.completed > task.total:  # the estimate was low
            self.bar.update(task_id, total=None)
        speed = task.speed
        self.bar.update(task_id, rate=f"{speed:,.0f}" if speed else "-",
                        count=self._count(table, int(task.completed)))

    def phase(self, table: str, name: str) -> None:
        """After the read: "checking", "applying" (the bar stops moving, the words say why)."""
        if self.enabled and table in self.tasks:
            self.bar.update(self.tasks[table], description=f"{escape(table)} [dim]{name}…[/]")

    def finish(self, table: str, result: TableResult) -> None:
        """The table's one result line, printed once above the live display."""
        if not self.enabled:
            return
        task_id = self.tasks.pop(table, None)
        if task_id is not None:
            self.bar.remove_task(task_id)
        self.totals.pop(table, None)
        err_console.print(result_line(result), soft_wrap=True, highlight=False)


def result_line(result: TableResult) -> str:
    """`✓ 年金计划 ok  10,000 rows in 0.42s (23,810 rows/s)`: a finished table in one line."""
    mark = "[green]✓[/]" if not result.failed else "[bold red]✗[/]"
    rate = result.read / result.duration_s if result.duration_s else 0
    line = (f"{mark} {escape(result.name)} {styled(result.status)}  {result.read:,} rows in "
            f"{result.duration_s:.2f}s ({rate:,.0f} rows/s)")
    if result.error_class:
        line += f" [red]{result.error_class}[/]"
    return line


def progress_for(as_json: bool) -> RowProgress:
    return RowProgress(enabled=not as_json and err_console.is_terminal)


def run_table(result: RunResult) -> Table:
    title = "plan: what a sync would do (nothing written)" if result.plan_only else None
    table = Table(title=title, title_justify="left")
    table.add_column("table", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for c in COUNT_FIELDS:
        table.add_column(SHORT[c], justify="right", no_wrap=True)
    table.add_column("tries", justify="right")
    table.add_column("secs", justify="right", no_wrap=True)
    table.add_column("watermark / error")
    for t in result.tables:
        note = t.watermark or ""
        if t.error:
            note = f"[red]{t.error_class}[/]: {escape(t.error.splitlines()[0][:120])}"
        table.add_row(escape(t.name), t.mode + (" incr" if t.incremental else ""),
                      styled(t.status), *(f"{getattr(t, c):,}" for c in COUNT_FIELDS),
                      str(t.attempts), f"{t.duration_s:.2f}", note)
    return table


def print_run(result: RunResult) -> None:
    out_console.print(result.run_key)
    if result.disabled_reason:
        out_console.print(f"reference sync disabled ({escape(result.disabled_reason)}); "
                          "nothing done (use --force to run anyway)")
        return
    out_console.print(run_table(result))
    for t in result.tables if human_stderr else []:
        if t.error:
            err_console.print(f"[bold red]{escape(t.name)}[/]: {escape(t.error)}")
            if t.hint:
                err_console.print(f"  [dim]hint:[/] {escape(t.hint)}")
        for r in t.rejects[: (20 if t.error_class == "invalid" or t.rejected else 0)]:
            err_console.print(f"  reject {escape(str(r['key']))} {escape(r['column'])}="
                              f"{escape(repr(r['value']))}: {escape(r['reason'])}")
    if result.interrupted_by:
        err_console.print(f"[bold magenta]interrupted by signal {result.interrupted_by}[/]; "
                          "the table in flight was rolled back")


def _ago(iso: str | None, now: datetime) -> str:
    if not iso:
        return ""
    seconds = (now - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _local(iso: str | None, zone: ZoneInfo | None) -> str:
    """An ISO time as people read it, in the configured zone (named in the column header)."""
    if not iso:
        return ""
    when = datetime.fromisoformat(iso)
    if zone is not None:
        when = when.replace(tzinfo=zone) if when.tzinfo is None else when.astimezone(zone)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def status_tables(report: dict[str, Any], now: datetime | None = None) -> list[Table]:
    zone = ZoneInfo(report["timezone"]) if report.get("timezone") else None
    now = now or datetime.now(zone).astimezone(zone)
    when = f"when ({zone})" if zone else "when"
    tables = Table(title="tables", title_justify="left")
    full_reads = any(t.get("last_full_read") for t in report["tables"])
    for col in ("table", "last", when, "ago", "secs", "tries", *COUNT_FIELDS, "watermark",
                *(["last full read"] if full_reads else []), "last error"):
        tables.add_column(SHORT.get(col, col), justify="right" if col in COUNT_FIELDS else "left",
                          no_wrap=col not in ("last error",))
    for t in report["tables"]:
        err = t.get("error") or ""
        tables.add_row(
            escape(t["name"]), styled(t["last_status"]), _local(t.get("last_started_at"), zone),
            _ago(t.get("last_finished_at"), now),
            "" if t.get("duration_s") is None else f"{t['duration_s']:.2f}",
            "" if t.get("attempts") is None else str(t["attempts"]),
            *("" if t.get(c) is None else f"{t[c]:,}" for c in COUNT_FIELDS),
            escape(t.get("watermark") or ""),
            *([_local(t.get("last_full_read"), zone)] if full_reads else []),
            f"[red]{t.get('error_class')}[/]: {escape(err.splitlines()[0][:100])}" if err else "",
        )
    runs = Table(title="recent runs", title_justify="left")
    for col in ("run key", "table", "status", "read", "changed", "tries", "secs", "error"):
        runs.add_column(col, no_wrap=col != "error",
                        justify="right" if col in ("read", "changed", "tries", "secs") else "left")
    for r in report["runs"]:
        changed = sum(r.get(c) or 0 for c in ("inserted", "updated", "deleted", "promoted"))
        runs.add_row(escape(r["run_key"]), escape(r["table"]), styled(r["status"]),
                     f"{r['read']:,}", f"{changed:,}", str(r["attempts"]),
                     f"{r['duration_s'] or 0:.2f}",
                     escape((r.get("error") or "").splitlines()[0][:80]) if r.get("error") else "")
    return [tables, runs]


def print_status(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or out_console
    for table in status_tables(report):
        console.print(table)
    for warning in report.get("problems", report.get("warnings", [])):
        console.print(f"[bold yellow]warning:[/] {escape(warning)}")


def print_schedule(report: dict[str, Any]) -> None:
    out_console.print(f"schedule {escape(report['schedule'])} in {report['timezone']} "
                      f"(this host: {report['host_timezone']})")
    table = Table()
    table.add_column(f"next in {report['timezone']}")
    table.add_column(f"same moment in {report['host_timezone']}")
    for item in report["next"]:
        table.add_row(item["tz_time"], item["host_time"])
    out_console.print(table)
    where = ("/etc/cron.d/refsync" if report.get("form") == "cron.d"
             else "the service user's crontab (crontab -e; --cron-d USER for /etc/cron.d)")
    out_console.print(f"Debian cron (fires in the host zone), line for {where}:")
    out_console.print("  " + escape(report["crontab_debian"]))
    out_console.print("cronie (honours CRON_TZ):")
    for line in str(report["crontab_cronie"]).splitlines():
        out_console.print("  " + escape(line))
    if report.get("note"):
        out_console.print(escape(report["note"]))


# ---------------------------------------------------------------- verify


def _count_or_blank(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def verify_table(report: VerifyReport) -> Table:
    table = Table(title="verify: each source against its target's authoritative rows "
                  "(read-only)", title_justify="left")
    for col in ("table", "target", "status", "source", "target rows", "differ", "missing",
                "extra", "secs", "reason / error"):
        numeric = col in ("source", "target rows", "differ", "missing", "extra", "secs")
        table.add_column(col, justify="right" if numeric else "left",
                         no_wrap=col != "reason / error")
    for t in report.tables:
        note = escape(t.reason or "")
        if t.error:
            note = f"[red]{t.error_class}[/]: {escape(t.error.splitlines()[0][:120])}"
        counts = (t.source_rows, t.target_rows, t.differ, t.missing, t.extra)
        table.add_row(escape(t.name), escape(t.target), styled(t.status),
                      *(_count_or_blank(n) for n in counts), f"{t.duration_s:.2f}", note)
    return table


def _keys_text(keys: list[dict[str, Any]]) -> str:
    if all(len(k) == 1 for k in keys):
        return ", ".join(str(next(iter(k.values()))) for k in keys)
    return ", ".join("(" + ", ".join(f"{c}={v}" for c, v in k.items()) + ")" for k in keys)


def verify_keys(t: TableVerify) -> list[str]:
    """`differ (年金计划号): P001, P002`: up to 20 keys of each kind, for one table."""
    lines = []
    for kind, count, keys, what in (
            ("differ", t.differ, t.differ_keys, "same key, other values"),
            ("missing", t.missing, t.missing_keys, "in the source, not in the target"),
            ("extra", t.extra, t.extra_keys, "authoritative in the target, not in the source")):
        if not count:
            continue
        names = ", ".join(keys[0]) if keys else ""
        more = f" … and {count - len(keys):,} more" if count > len(keys) else ""
        lines.append(f"  {kind} {count:,} ({what}; {escape(names)}): "
                     f"{escape(_keys_text(keys))}{more}")
    return lines


def print_verify(report: VerifyReport) -> None:
    out_console.print(verify_table(report))
    for t in report.tables:
        lines = verify_keys(t)
        if lines:
            out_console.print(f"[bold]{escape(t.name)}[/] ({escape(t.target)}):")
            for line in lines:
                out_console.print(line, soft_wrap=True)
    unsupported = [t.name for t in report.tables if t.status == "unsupported"]
    if unsupported:
        out_console.print(f"[bold yellow]warning:[/] {len(unsupported)} table(s) not verified "
                          f"(digests cannot compare them): {escape(', '.join(unsupported))}")
    for t in report.tables if human_stderr else []:
        if t.error:
            err_console.print(f"[bold red]{escape(t.name)}[/]: {escape(t.error)}")
            if t.hint:
                err_console.print(f"  [dim]hint:[/] {escape(t.hint)}")
    if report.interrupted_by:
        err_console.print(f"[bold magenta]interrupted by signal {report.interrupted_by}[/]")


# ---------------------------------------------------------------- demo


class DemoPrinter:
    """`refsync demo` as it goes, on stdout (demo.DemoView)."""

    def __init__(self, console: Console | None = None) -> None:
        self.say = (console or out_console).print

    def started(self, directory: Path, rows: int, config: Path) -> None:
        self.say(f"[bold]refsync demo[/] in {directory.resolve()}: 3 legacy tables x {rows:,} "
                 "rows (SQLite), a product-lines YAML, a SQLite warehouse")
        self.say(f"config: {config}")

    def initialised(self, actions: list[str]) -> None:
        for line in actions:
            self.say(f"  init-db: {line}")

    def changed(self, changed: dict[str, dict[str, int]]) -> None:
        self.say("changed ~1 % of legacy rows: " + ", ".join(
            f"{t} {c['updated']} updated/{c['inserted']} inserted/{c['deleted']} deleted"
            for t, c in changed.items()))

    def sync_started(self, step: str) -> RowProgress:
        self.say(f"\n[bold]{step} sync[/]")
        return progress_for(False)

    def synced(self, result: RunResult) -> None:
        print_run(result)

    def finished(self, report: dict[str, Any], try_command: str) -> None:
        self.say("\n[bold]status[/]")
        print_status(report)
        self.say(f"\nTry: {try_command}")
