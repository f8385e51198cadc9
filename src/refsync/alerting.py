"""What an operator's monitoring hooks into: Prometheus textfile metrics, a dead-man's-switch
ping, and the status checks behind `refsync status`'s exit code (DESIGN 2.2a).

Nothing here may fail a run: a metrics file that cannot be written or a ping URL that does not
answer is logged as a warning and the run's exit code stands.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refsync.model import COUNT_FIELDS, RunResult, TableResult

if TYPE_CHECKING:
    from refsync.config import LoadedConfig
    from refsync.verify import VerifyReport

log = logging.getLogger(__name__)

STALE_AFTER_HOURS = 26
PING_TIMEOUT_S = 5.0
_FAILED = ("failed", "skipped", "guarded", "interrupted", "abandoned")


# ---------------------------------------------------------------- status checks


def status_problems(report: dict[str, Any], now: datetime) -> list[str]:
    """One line per enabled table whose last run failed, that never succeeded, or whose last
    success is older than 26 h (a missed night): the reasons `refsync status` exits 1."""
    problems: list[str] = []
    for t in report["tables"]:
        if not t.get("enabled", True):
            continue
        name, last = t["name"], t.get("last_status")
        success = t.get("last_success_at")
        if last in _FAILED:
            cause = f" [{t['error_class']}]" if t.get("error_class") else ""
            problems.append(f"{name}: last run {last}{cause}")
        if success is not None or last not in _FAILED:  # a failure already says enough
            problem = success_problem(
                name, None if success is None else datetime.fromisoformat(success), now)
            problems += [problem] if problem else []
    return problems


def success_problem(name: str, success: datetime | None, now: datetime) -> str | None:
    """The line for an enabled table that never succeeded, or whose last success is older
    than STALE_AFTER_HOURS (a missed night); None when it is recent."""
    if success is None:
        return f"{name}: no successful run yet"
    hours = (now - success).total_seconds() / 3600
    if hours <= STALE_AFTER_HOURS:
        return None
    return (f"{name}: last success {hours:.0f} hours ago (more than {STALE_AFTER_HOURS}): "
            "a night was missed")


# ---------------------------------------------------------------- Prometheus textfile

_METRICS: tuple[tuple[str, str], ...] = (
    ("refsync_last_run_timestamp_seconds", "When the table's last run finished (Unix time)."),
    ("refsync_last_success_timestamp_seconds",
     "When the table's last successful run finished (Unix time)."),
    ("refsync_rows", "Rows of the table's last run, by operation."),
    ("refsync_duration_seconds", "Duration of the table's last run."),
    ("refsync_attempts", "Attempts the table's last run took."),
    ("refsync_up", "1 if the table's last run succeeded, else 0."),
)
_RUN_METRICS: tuple[tuple[str, str], ...] = (
    ("refsync_run_last_exit_code", "Exit code of the last sync run (0: every table ok)."),
    ("refsync_run_last_timestamp_seconds", "When the last sync run ended (Unix time)."),
    ("refsync_run_last_success_timestamp_seconds",
     "When the last sync run that exited 0 ended (Unix time)."),
)
_VERIFY_METRICS: tuple[tuple[str, str], ...] = (
    ("refsync_verify_differing_rows",
     "Rows the table's last verify found differing, missing or extra."),
    ("refsync_verify_last_exit_code", "Exit code of the last verify (0: every table in step)."),
    ("refsync_verify_last_timestamp_seconds", "When the last verify ended (Unix time)."),
)
_HELP = dict(_METRICS + _RUN_METRICS + _VERIFY_METRICS)
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{.*\})?\s+(?P<value>\S+)')
_TABLE_LABEL = re.compile(r'table="((?:[^"\\]|\\.)*)"')

Samples = dict[str, dict[str | None, list[str]]]
"""{metric: {table label (None: no table): [sample lines]}}: a textfile as refsync reads it."""


def escape_label(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape_label(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], value)


def _seconds(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


def _previous(path: Path) -> Samples:
    """Every sample of the last file by metric and table, so that a run replaces only its
    own (the sync's tables, the verify's) and keeps the rest."""
    found: Samples = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return found
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        label = _TABLE_LABEL.search(match["labels"] or "")
        table = _unescape_label(label[1]) if label else None
        found.setdefault(match["name"], {}).setdefault(table, []).append(line)
    return found


def _fmt(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _table_samples(t: TableResult, last_success: str | None) -> dict[str, list[str]]:
    table = f'table="{escape_label(t.name)}"'
    ok = t.status in ("ok", "unchanged")
    samples: dict[str, list[str]] = {name: [] for name, _ in _METRICS}
    finished = _seconds(t.finished_at)
    if finished is not None:
        samples["refsync_last_run_timestamp_seconds"].append(
            f"refsync_last_run_timestamp_seconds{{{table}}} {_fmt(finished)}")
    success = finished if ok else None
    if success is not None:
        samples["refsync_last_success_timestamp_seconds"].append(
            f"refsync_last_success_timestamp_seconds{{{table}}} {_fmt(success)}")
    elif last_success is not None:
        samples["refsync_last_success_timestamp_seconds"].append(last_success)
    samples["refsync_rows"] = [f'refsync_rows{{{table},op="{op}"}} {getattr(t, op)}'
                               for op in COUNT_FIELDS]
    samples["refsync_duration_seconds"].append(
        f"refsync_duration_seconds{{{table}}} {round(t.duration_s, 3)}")
    samples["refsync_attempts"].append(f"refsync_attempts{{{table}}} {t.attempts}")
    samples["refsync_up"].append(f"refsync_up{{{table}}} {1 if ok else 0}")
    return samples


def _render(samples: Samples) -> str:
    """The textfile: refsync's metrics in a fixed order, then any other the file held; each
    metric's samples grouped under one HELP and TYPE."""
    order = [*_HELP, *sorted(set(samples) - set(_HELP))]
    lines: list[str] = []
    for metric in order:
        found = [line for kept in samples.get(metric, {}).values() for line in kept]
        if found:
            help_text = _HELP.get(metric, "Kept from an earlier run.")
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", *found]
    return "\n".join(lines) + "\n"


def _put_run(samples: Samples, result: RunResult | None, planned: list[str] | None) -> None:
    """The sync's per-table lines: a table it ran gets all of them, a table it was to do but
    never reached (the run stopped first) gets `refsync_up 0`; the others keep theirs.
    `planned` None (the config could not be read): every table the file knows."""
    if planned is None:
        planned = [name for name in samples.get("refsync_up", {}) if name is not None]
    ran = [t for t in (result.tables if result else []) if t.status != "disabled"]
    kept_success = samples.get("refsync_last_success_timestamp_seconds", {})
    for t in ran:
        last_success = next(iter(kept_success.get(t.name, [])), None)
        for metric, lines in _table_samples(t, last_success).items():
            samples.setdefault(metric, {})[t.name] = lines
    done = {t.name for t in result.tables} if result else set()
    for name in planned:
        if name not in done:
            samples.setdefault("refsync_up", {})[name] = [
                f'refsync_up{{table="{escape_label(name)}"}} 0']


def _put_run_level(samples: Samples, exit_code: int, now: datetime) -> None:
    stamp = _fmt(round(now.timestamp(), 3))
    samples["refsync_run_last_exit_code"] = {None: [f"refsync_run_last_exit_code {exit_code}"]}
    samples["refsync_run_last_timestamp_seconds"] = {
        None: [f"refsync_run_last_timestamp_seconds {stamp}"]}
    if exit_code == 0:
        samples["refsync_run_last_success_timestamp_seconds"] = {
            None: [f"refsync_run_last_success_timestamp_seconds {stamp}"]}


def metrics_text(result: RunResult, previous: Samples) -> str:
    """The whole textfile after `result`: this run's tables, every other line kept."""
    samples = {metric: dict(tables) for metric, tables in previous.items()}
    _put_run(samples, result, [])
    return _render(samples)


def _write_atomically(path: Path, text: str) -> None:
    """A temp file in the same directory, then os.replace: node_exporter never reads half a
    file."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # node_exporter runs as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _update(path: Path, change: Callable[[Samples], None]) -> bool:
    """Read the file, apply `change` to its samples, write it back atomically. False (and a
    warning) when it cannot be written: metrics never fail a run."""
    try:
        samples = _previous(path)
        change(samples)
        _write_atomically(path, _render(samples))
    except OSError as exc:
        log.warning("could not write the metrics file %s: %s", path, exc,
                    extra={"event": "metrics_failed", "error": str(exc)})
        return False
    log.debug("metrics written to %s", path, extra={"event": "metrics_written"})
    return True


@dataclass
class RunMetrics:
    """The sync's textfile, written once the command ends, however it ends (DESIGN 2.2a): a
    run that stopped before any table (config error, unreachable target, lock held, the
    deadline) still sets `refsync_up 0` for the tables it was to do, and the run-level
    series say how it ended."""

    path: Path | None
    planned: list[str] | None = None  # the enabled tables the run was to do; None: unknown
    result: RunResult | None = None

    def write(self, exit_code: int, now: datetime | None = None) -> bool:
        if self.path is None or (self.result is not None and self.result.plan_only):
            return False
        when = now or datetime.now(UTC)
        result, planned = self.result, self.planned

        def change(samples: Samples) -> None:
            if result is None or not result.disabled_reason:  # a disabled run syncs nothing
                _put_run(samples, result, planned)
            _put_run_level(samples, exit_code, when)

        return _update(self.path, change)


def planned_tables(config: LoadedConfig, names: list[str] | None) -> list[str]:
    """The enabled tables a sync of `names` (None: all) is to do; none for an unknown name
    (the run stops with exit 2 and no table of the config was asked for)."""
    from refsync.errors import UsageError

    try:
        return [spec.name for spec in config.section.select(names) if spec.enabled]
    except UsageError:
        return []


def write_metrics(path: Path, result: RunResult) -> bool:
    """The sync's textfile after `result` (see `RunMetrics`)."""
    return RunMetrics(path, result=result).write(result.exit_code)


def write_verify_metrics(path: Path, report: VerifyReport, now: datetime | None = None) -> bool:
    """`refsync verify --metrics-file`: per table it compared, the rows that differ, are
    missing or extra; its exit code and when it ran. A table it could not compare (failed,
    unsupported, disabled) loses its line; the sync's lines and the lines of tables not in
    this verify stay."""
    stamp = _fmt(round((now or datetime.now(UTC)).timestamp(), 3))
    exit_code = report.exit_code
    tables = [(t.name, (t.differ or 0) + (t.missing or 0) + (t.extra or 0)
               if t.status in ("in_step", "differs") else None) for t in report.tables]

    def change(samples: Samples) -> None:
        differing = samples.setdefault("refsync_verify_differing_rows", {})
        for name, rows in tables:
            differing.pop(name, None)
            if rows is not None:
                differing[name] = [
                    f'refsync_verify_differing_rows{{table="{escape_label(name)}"}} {rows}']
        samples["refsync_verify_last_exit_code"] = {
            None: [f"refsync_verify_last_exit_code {exit_code}"]}
        samples["refsync_verify_last_timestamp_seconds"] = {
            None: [f"refsync_verify_last_timestamp_seconds {stamp}"]}

    return _update(path, change)


# ---------------------------------------------------------------- dead-man's switch


def ping(url: str | None, outcome: str = "", timeout: float = PING_TIMEOUT_S) -> bool:
    """GET `url` + `/start`, `` (success) or `/fail` (healthchecks.io style). Never raises.

    Credentials in the URL (`user:password@`) go as HTTP basic auth; a log line names only
    the URL's scheme and host, as the path may carry a token."""
    if not url:
        return False
    shown = _ping_origin(url)
    try:
        request = _ping_request(url.rstrip("/") + (f"/{outcome}" if outcome else ""))
    except ValueError as exc:
        log.warning("ping %s not sent: %s", shown, exc, extra={"event": "ping_failed"})
        return False
    import urllib.request  # http.client, email, ssl: only when there is a URL to ping

    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read(1024)
        return True
    except Exception as exc:  # a dead monitor must never fail the run
        reason = _ping_failure(exc)
        log.warning("ping %s failed: %s", shown, reason,
                    extra={"event": "ping_failed", "error": reason})
        return False


def _ping_origin(url: str) -> str:
    """`scheme://host` of the ping URL: all a log may show of it."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unreadable URL)"
    return f"{parts.scheme or '?'}://{parts.hostname or '?'}"


def _ping_request(full: str) -> Any:
    """The GET for `full`, its `user:password@` moved into an Authorization header."""
    import base64
    import urllib.request
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(full)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the ping URL must be http(s)://host/...")
    headers = {"User-Agent": "refsync"}
    netloc = parts.netloc.rpartition("@")[2]
    if parts.username is not None or parts.password is not None:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    plain = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return urllib.request.Request(plain, headers=headers, method="GET")


def _ping_failure(exc: BaseException) -> str:
    """Why a ping failed, without the URL (its path or user-info may hold a secret)."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def ping_outcome(exit_code: int) -> str:
    return "" if exit_code == 0 else "fail"


__all__ = ["RunMetrics", "escape_label", "metrics_text", "ping", "ping_outcome", "planned_tables",
           "status_problems", "write_metrics", "write_verify_metrics"]
