"""What an operator's monitoring hooks into: Prometheus textfile metrics, a dead-man's-switch
ping, and the status checks behind `refsync status`'s exit code (DESIGN 2.2a).

Nothing here may fail a run: a metrics file that cannot be written or a ping URL that does not
answer is logged as a warning and the run's exit code stands.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from refsync.model import RunResult, TableResult

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
        elif success is None:
            problems.append(f"{name}: no successful run yet")
        if success is not None:
            hours = (now - datetime.fromisoformat(success)).total_seconds() / 3600
            if hours > STALE_AFTER_HOURS:
                problems.append(f"{name}: last success {hours:.0f} hours ago "
                                f"(more than {STALE_AFTER_HOURS}): a night was missed")
    return problems


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
_OPS = ("read", "inserted", "updated", "deleted", "unchanged", "promoted", "rejected")
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{.*\})?\s+(?P<value>\S+)')
_TABLE_LABEL = re.compile(r'table="((?:[^"\\]|\\.)*)"')


def escape_label(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape_label(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], value)


def _seconds(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


def _previous(path: Path) -> dict[str, dict[str, list[str]]]:
    """{metric: {table: [sample lines]}} from the last file, to keep tables not in this run."""
    found: dict[str, dict[str, list[str]]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return found
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        label = _TABLE_LABEL.search(match["labels"] or "") if match else None
        if match and label:
            found.setdefault(match["name"], {}).setdefault(
                _unescape_label(label[1]), []).append(line)
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
                               for op in _OPS]
    samples["refsync_duration_seconds"].append(
        f"refsync_duration_seconds{{{table}}} {round(t.duration_s, 3)}")
    samples["refsync_attempts"].append(f"refsync_attempts{{{table}}} {t.attempts}")
    samples["refsync_up"].append(f"refsync_up{{{table}}} {1 if ok else 0}")
    return samples


def metrics_text(result: RunResult, previous: dict[str, dict[str, list[str]]]) -> str:
    """The whole textfile: this run's tables, plus the previous lines of every other table."""
    ran = [t for t in result.tables if t.status != "disabled"]
    names = {t.name for t in ran}
    lines: list[str] = []
    kept_success = previous.get("refsync_last_success_timestamp_seconds", {})
    per_table = [_table_samples(t, next(iter(kept_success.get(t.name, [])), None)) for t in ran]
    for metric, help_text in _METRICS:
        samples = [s for table, kept in previous.get(metric, {}).items() if table not in names
                   for s in kept]
        for table_samples in per_table:
            samples.extend(table_samples[metric])
        if samples:
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", *samples]
    return "\n".join(lines) + "\n"


def write_metrics(path: Path, result: RunResult) -> bool:
    """Write the textfile atomically (a temp file in the same directory, then os.replace), so
    node_exporter never reads half a file. False (and a warning) when it cannot be written."""
    if result.plan_only or result.disabled_reason:
        return False
    import tempfile

    try:
        text = metrics_text(result, _previous(path))
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
    except OSError as exc:
        log.warning("could not write the metrics file %s: %s", path, exc,
                    extra={"event": "metrics_failed", "error": str(exc)})
        return False
    log.debug("metrics written to %s", path, extra={"event": "metrics_written"})
    return True


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


__all__ = ["escape_label", "metrics_text", "ping", "ping_outcome",
                          "status_problems", "write_metrics"]
