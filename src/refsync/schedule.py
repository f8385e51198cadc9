"""When the nightly run fires: next fire times, the host's zone, and the crontab line for this host.

Pure functions (the only I/O is `host_zone()` reading `TZ` and /etc/localtime). The configured
schedule is a 5-field cron expression meant in the configured zone (`0 1 * * *`, Asia/Shanghai).
Debian's cron fires jobs in the *system* zone and ignores `TZ=`; cronie honours `CRON_TZ=`.
`translate_for_host` rewrites the expression for a cron that fires in the host's zone when
that can be done exactly (Asia/Shanghai has no daylight saving: 01:00 there is 17:00 UTC the
day before), and says so plainly when it cannot.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

if TYPE_CHECKING:
    from refsync.config import ReferenceSyncConfig

__all__ = [
    "DEFAULT_COMMAND",
    "HostSchedule",
    "cronie_line",
    "crontab_line_for_host",
    "host_zone",
    "next_fire_times",
    "on_calendar",
    "schedule_report",
    "translate_for_host",
]

#: The wrapper's path in a standard install (deploy/README.md); the CLI may pass its own.
DEFAULT_COMMAND = "/opt/refsync/deploy/cron/refsync-nightly.sh"

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February: the short year
_DOW_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_HORIZON = timedelta(days=366)
_MAX_FIRES = 400  # a daily schedule fires ~366 times in the horizon
_ALTERNATIVES = (
    "use cronie with CRON_TZ={tz} (deploy/cron/refsync.cronie) or the systemd timer "
    "(deploy/systemd/refsync.timer), or set the host's zone to {tz}"
)


# ---------------------------------------------------------------- fire times


def next_fire_times(
    cron: str, tz: str, count: int = 3, now: datetime | None = None
) -> list[datetime]:
    """The next `count` fire times of `cron` read in zone `tz`, as aware datetimes in `tz`.

    A naive `now` is taken as wall-clock time in `tz`; the default is the current time.
    """
    zone = ZoneInfo(tz)
    it = croniter(_normalise(cron), _aware(now, zone))
    return [it.get_next(datetime).astimezone(zone) for _ in range(count)]


def _aware(now: datetime | None, zone: ZoneInfo) -> datetime:
    if now is None:
        return datetime.now(zone)
    if now.tzinfo is None:
        return now.replace(tzinfo=zone)
    return now.astimezone(zone)


def _normalise(cron: str) -> str:
    text = " ".join(cron.split())
    return _MACROS.get(text.lower(), text)


# ---------------------------------------------------------------- host zone


def host_zone(
    environ: Mapping[str, str] | None = None,
    localtime: Path = Path("/etc/localtime"),
    timezone_file: Path = Path("/etc/timezone"),
) -> ZoneInfo:
    """The host's zone: `TZ`, else the /etc/localtime symlink (or /etc/timezone), else UTC.

    `TZ` may be a zone name (`Asia/Shanghai`, `:Asia/Shanghai`), a zoneinfo path, empty (UTC,
    as in glibc) or a fixed POSIX offset such as `CST-8` (UTC+8). An unreadable `TZ` falls
    through to the system files. Note that cron daemons use the *daemon's* zone (normally
    /etc/localtime), not the `TZ` of the shell that runs `refsync schedule`.
    """
    env = os.environ if environ is None else environ
    if "TZ" in env:
        zone = _zone_from_tz(env["TZ"])
        if zone is not None:
            return zone
    if localtime.is_symlink():
        zone = _zone_from_path(os.path.realpath(localtime))
        if zone is not None:
            return zone
    try:
        name = timezone_file.read_text(encoding="utf-8").strip()
    except OSError:
        name = ""
    if name:
        zone = _zone_by_key(name)
        if zone is not None:
            return zone
    try:
        with localtime.open("rb") as fh:
            return ZoneInfo.from_file(fh, key=str(localtime))
    except (OSError, ValueError):
        return ZoneInfo("UTC")


_POSIX_FIXED = re.compile(r"^(?:[A-Za-z]{3,}|<[+-]?[A-Za-z0-9]+>)([+-]?)(\d{1,2})$")


def _zone_from_tz(value: str) -> ZoneInfo | None:
    value = value.strip()
    if value == "":
        return ZoneInfo("UTC")
    value = value.removeprefix(":")
    if value.startswith("/"):
        return _zone_from_path(value)
    zone = _zone_by_key(value)
    if zone is not None:
        return zone
    match = _POSIX_FIXED.match(value)
    if match:  # POSIX signs run west-positive, exactly like the Etc/GMT zones
        sign, hours = match.group(1) or "+", int(match.group(2))
        if hours == 0:
            return ZoneInfo("UTC")
        if hours <= 14:
            return _zone_by_key(f"Etc/GMT{sign}{hours}")
    return None


def _zone_from_path(path: str) -> ZoneInfo | None:
    marker = "zoneinfo/"
    if marker in path:
        key = path.rsplit(marker, 1)[1]
        for prefix in ("posix/", "right/"):
            key = key.removeprefix(prefix)
        zone = _zone_by_key(key)
        if zone is not None:
            return zone
    try:
        with open(path, "rb") as fh:
            return ZoneInfo.from_file(fh, key=path)
    except (OSError, ValueError):
        return None


def _zone_by_key(key: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        return None


# ---------------------------------------------------------------- translation


@dataclass(frozen=True)
class HostSchedule:
    """A cron expression for a daemon that fires in the host's zone."""

    expression: str
    exact: bool  # True: fires at exactly the configured times, all year
    explanation: str


def translate_for_host(
    cron: str, tz: str, host: ZoneInfo, now: datetime | None = None
) -> HostSchedule:
    """Rewrite `cron` (meant in `tz`) for a cron daemon that fires in `host`'s zone."""
    zone = ZoneInfo(tz)
    expr = _normalise(cron)
    fields = expr.split()
    alternatives = _ALTERNATIVES.format(tz=tz)
    if len(fields) != 5:
        return HostSchedule(
            expr, False,
            f"{expr!r} has {len(fields)} fields; system cron takes 5 (minute hour day month "
            f"weekday), so it cannot say this: use the systemd timer",
        )
    start = _aware(now, zone)
    deltas = _offset_differences(expr, zone, host, start)
    first_delta = deltas[0][1]
    host_name, same_zone = str(host), str(host) == tz
    changes = [(t, d) for t, d in deltas if d != first_delta]
    if first_delta == timedelta(0) and not changes:
        return _as_written(expr, tz, host_name, same_zone)

    shifted = _shift(fields, first_delta, tz, host_name)
    if isinstance(shifted, str):
        return HostSchedule(
            expr, False,
            f"Not exact: {tz} is {_fmt_ahead(first_delta)} {host_name}, but {shifted}. "
            f"This line is the schedule unchanged, so a cron that fires in the host's zone runs "
            f"it on {host_name}'s clock, not {tz}'s: {alternatives}.",
        )
    new_fields, how = shifted
    line = " ".join(new_fields)
    first = deltas[0][0]
    offsets = (
        f"{tz} is {_fmt_utc(first.utcoffset())} and {host_name} is "
        f"{_fmt_utc(first.astimezone(host).utcoffset())}"
    )
    if changes:
        when, other = changes[0]
        return HostSchedule(
            line, False,
            f"Not exact: {offsets} at the next fire time, so {how}: {line!r}; but from "
            f"{when:%Y-%m-%d} "
            f"{tz} is {_fmt_ahead(other)} {host_name} (daylight saving), and no single crontab "
            f"line in {host_name} fires at the same {tz} time all year. The line is right until "
            f"then; {alternatives}.",
        )
    return HostSchedule(
        line, True,
        f"Debian's cron fires jobs in the host's zone ({host_name}) and ignores TZ=. {offsets} "
        f"at every fire time in the next year (no daylight saving on either side), so {how}: "
        f"{line!r}.",
    )


def _as_written(expr: str, tz: str, host_name: str, same_zone: bool) -> HostSchedule:
    """The schedule needs no change: the host's clock agrees with `tz` all year."""
    why = (
        f"The host runs in {tz}"
        if same_zone
        else f"The host's zone ({host_name}) keeps the same clock as {tz} at every fire time "
        "in the next year"
    )
    return HostSchedule(
        expr, True, f"{why}, so a cron daemon that fires in the host's zone (Debian's cron) "
        f"can use the schedule as written: {expr!r}."
    )


def _offset_differences(
    expr: str, zone: ZoneInfo, host: ZoneInfo, start: datetime
) -> list[tuple[datetime, timedelta]]:
    """(fire time, host offset - tz offset) over the next year; sampled hourly if it fires often."""
    end = start + _HORIZON
    it = croniter(expr, start)
    out: list[tuple[datetime, timedelta]] = []
    while len(out) < _MAX_FIRES:
        t = it.get_next(datetime).astimezone(zone)
        if t > end and out:
            return out
        out.append((t, _diff(t, zone, host)))
    t = start
    while t < end:  # fires more often than daily: check the whole year hour by hour
        out.append((t, _diff(t, zone, host)))
        t += timedelta(hours=1)
    return out


def _diff(t: datetime, zone: ZoneInfo, host: ZoneInfo) -> timedelta:
    host_off = t.astimezone(host).utcoffset() or timedelta(0)
    tz_off = t.astimezone(zone).utcoffset() or timedelta(0)
    return host_off - tz_off


def _expand(fields: list[str]) -> list[set[int] | None]:
    """Each field as a set of values, None for `*` (every value)."""
    expanded, _ = croniter.expand(" ".join(fields))
    out: list[set[int] | None] = []
    for i, values in enumerate(expanded[:5]):
        if values == ["*"]:
            out.append(None)
        elif all(isinstance(v, int) for v in values):
            lo, hi = _RANGES[i]
            ints = {int(v) % 7 if i == 4 else int(v) for v in values}
            out.append(None if ints == set(range(lo, hi + 1)) else ints)
        else:  # croniter extensions (L, #): no equivalent in system cron
            out.append({-1})
    return out


def _shift(
    fields: list[str], delta: timedelta, tz: str, host_name: str
) -> tuple[list[str], str] | str:
    """Fields moved by `delta`, with a phrase saying how; or why that cannot be exact."""
    seconds = int(delta.total_seconds())
    if seconds % 60:
        return "the difference is not a whole number of minutes"
    minutes_delta = seconds // 60
    minute, hour, dom, month, dow = _expand(fields)
    if minute == {-1} or hour == {-1}:
        return "the minute or hour field uses an extension system cron does not know"
    minutes = sorted(minute) if minute is not None else list(range(60))
    hours = sorted(hour) if hour is not None else list(range(24))
    moved: dict[tuple[int, int], int] = {}
    for h in hours:
        for m in minutes:
            day, rest = divmod(h * 60 + m + minutes_delta, 1440)
            moved[divmod(rest, 60)] = day
    new_hours = {h for h, _ in moved}
    new_minutes = {m for _, m in moved}
    if len(moved) != len(new_hours) * len(new_minutes):
        return "the moved times cannot be written as one minute field and one hour field"
    day_shifts = set(moved.values())
    restricted = any(f is not None for f in (dom, month, dow))
    new_dom_text, new_dow_text = fields[2], fields[4]
    day_phrase = ""
    if restricted and day_shifts != {0}:
        if len(day_shifts) > 1:
            return (
                "some fire times move to another day and others do not, so the day fields "
                "cannot follow"
            )
        (shift,) = day_shifts
        problem = _day_problem(fields, dom, month, dow, shift)
        if problem:
            return problem
        if dom is not None:
            new_dom_text = _compact({d + shift for d in dom}, 1, 31)
        if dow is not None:
            new_dow_text = _compact({(d + shift) % 7 for d in dow}, 0, 6)
        changed = []
        if dow is not None:
            changed.append(f"day of week ({fields[4]} -> {new_dow_text})")
        if dom is not None:
            changed.append(f"day of month ({fields[2]} -> {new_dom_text})")
        direction = "back" if shift < 0 else "forward"
        day_phrase = f", and the {' and the '.join(changed)} moves {direction} one day too"

    minute_text = fields[0] if new_minutes == set(minutes) else _compact(new_minutes, 0, 59)
    hour_text = fields[1] if new_hours == set(hours) else _compact(new_hours, 0, 23)
    new_fields = [minute_text, hour_text, new_dom_text, fields[3], new_dow_text]
    if len(moved) == 1:
        [((h2, m2), day)] = moved.items()
        when = {-1: " the day before", 1: " the day after"}.get(day, "")
        how = f"{hours[0]:02d}:{minutes[0]:02d} {tz} is {h2:02d}:{m2:02d} {host_name}{when}"
    else:
        how = f"the fire times move by {_fmt_signed(delta)} on the host's clock"
    return new_fields, how + day_phrase


def _day_problem(
    fields: list[str],
    dom: set[int] | None,
    month: set[int] | None,
    dow: set[int] | None,
    shift: int,
) -> str | None:
    when = "the day before" if shift < 0 else "the day after"
    if dom == {-1} or dow == {-1}:
        return f"the fire times fall on {when}, and the day fields use an extension (L, #)"
    for text, values in ((fields[2], dom), (fields[4], dow)):
        if values is not None and text.startswith("*"):
            return f"the fire times fall on {when}, and the day field {text!r} is a step"
    if month is not None and (dom is None or dow is not None):
        return f"the fire times fall on {when}, which can cross into another month"
    if dom is not None:
        if shift < 0 and 1 in dom:
            return "day 1 falls on the last day of the previous month, which cron cannot name"
        months = sorted(month) if month is not None else list(range(1, 13))
        shortest = min(_MONTH_DAYS[m - 1] for m in months)
        if shift > 0 and max(dom) + 1 > shortest:
            return f"day {max(dom)} moves to the next day, which some months do not have"
    return None


def _compact(values: set[int], lo: int, hi: int) -> str:
    """`{17, 18, 19, 23}` -> `17-19,23`; every value -> `*`."""
    if values == set(range(lo, hi + 1)):
        return "*"
    ordered = sorted(values)
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{ordered[i]}-{ordered[j]}")
        else:
            parts.extend(str(v) for v in ordered[i : j + 1])
        i = j + 1
    return ",".join(parts)


def _fmt_utc(offset: timedelta | None) -> str:
    return "UTC" + _fmt_signed(offset or timedelta(0))


def _fmt_ahead(delta: timedelta) -> str:
    """How far the configured zone is ahead of the host, from host - tz: `8:00 ahead of`."""
    minutes = int(-delta.total_seconds()) // 60
    h, m = divmod(abs(minutes), 60)
    return f"{h}:{m:02d} {'ahead of' if minutes >= 0 else 'behind'}"


def _fmt_signed(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    return f"{sign}{h:02d}:{m:02d}"


# ---------------------------------------------------------------- lines


def crontab_line_for_host(
    cron: str, tz: str, host_zone: ZoneInfo, command: str, now: datetime | None = None
) -> tuple[str, str]:
    """The crontab line for a cron that fires in the host's zone (Debian), and why."""
    result = translate_for_host(cron, tz, host_zone, now)
    return f"{result.expression} {command}", result.explanation


def cronie_line(cron: str, tz: str, command: str) -> str:
    """The crontab lines for cronie, which reads the fire zone from `CRON_TZ`."""
    return f"CRON_TZ={tz}\n{_normalise(cron)} {command}"


def on_calendar(cron: str, tz: str) -> str | None:
    """The systemd `OnCalendar=` value for `cron` in `tz`, or None when it has no equivalent."""
    fields = _normalise(cron).split()
    if len(fields) != 5:
        return None
    minute, hour, dom, month, dow = _expand(fields)
    if any(f == {-1} for f in (minute, hour, dom, month, dow)):
        return None
    if dom is not None and dow is not None:
        return None  # cron ORs the two day fields; systemd ANDs them

    def part(values: set[int] | None, width: int) -> str:
        if values is None:
            return "*"
        return ",".join(f"{v:0{width}d}" for v in sorted(values))

    days = "" if dow is None else ",".join(_DOW_NAMES[d] for d in sorted(dow)) + " "
    return f"{days}*-{part(month, 2)}-{part(dom, 2)} {part(hour, 2)}:{part(minute, 2)}:00 {tz}"


# ---------------------------------------------------------------- report


def schedule_report(
    section: ReferenceSyncConfig,
    host: ZoneInfo,
    now: datetime | None = None,
    command: str = DEFAULT_COMMAND,
    cron_d_user: str | None = None,
) -> dict[str, Any]:
    """Everything `refsync schedule` shows, as plain JSON-ready values.

    The lines are for a user's crontab (`crontab -e`: no user field) unless `cron_d_user` asks
    for the system form (/etc/cron.d: the user field sits between the times and the command).
    """
    cron, tz = section.schedule, section.timezone
    if cron_d_user:
        command = f"{cron_d_user} {command}"
    times = next_fire_times(cron, tz, 3, now)
    result = translate_for_host(cron, tz, host, now)
    return {
        "schedule": cron,
        "timezone": tz,
        "host_timezone": str(host),
        "next": [
            {"tz_time": t.isoformat(), "host_time": t.astimezone(host).isoformat()}
            for t in times
        ],
        "crontab_debian": f"{result.expression} {command}",
        "crontab_cronie": cronie_line(cron, tz, command),
        "systemd_on_calendar": on_calendar(cron, tz),
        "exact": result.exact,
        "note": result.explanation,
        "form": "cron.d" if cron_d_user else "crontab",
        "user": cron_d_user,
    }
