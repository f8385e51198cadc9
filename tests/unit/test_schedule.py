"""refsync.schedule: fire times, host zone, crontab lines; and the shipped cron files."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from refsync.config import ReferenceSyncConfig
from refsync.schedule import (
    cronie_line,
    crontab_line_for_host,
    host_zone,
    next_fire_times,
    on_calendar,
    schedule_report,
    translate_for_host,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
UTC = ZoneInfo("UTC")
# a Friday afternoon in Shanghai; the next 01:00 there is Saturday 2026-11-28
NOW = datetime(2026, 11, 27, 14, 30, tzinfo=SHANGHAI)
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMMAND = "/opt/refsync/deploy/cron/refsync-nightly.sh"


# ---------------------------------------------------------------- next fire times


def test_next_fire_times_are_01_00_in_shanghai() -> None:
    times = next_fire_times("0 1 * * *", "Asia/Shanghai", count=3, now=NOW)
    assert [t.isoformat() for t in times] == [
        "2026-11-28T01:00:00+08:00",
        "2026-11-29T01:00:00+08:00",
        "2026-11-30T01:00:00+08:00",
    ]
    assert all(t.tzinfo == SHANGHAI for t in times)


def test_next_fire_times_seen_from_a_utc_host_are_17_00_the_day_before() -> None:
    times = next_fire_times("0 1 * * *", "Asia/Shanghai", now=NOW)
    assert [t.astimezone(UTC).isoformat() for t in times] == [
        "2026-11-27T17:00:00+00:00",
        "2026-11-28T17:00:00+00:00",
        "2026-11-29T17:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("now", "first"),
    [
        pytest.param(datetime(2026, 11, 27, 17, 0, tzinfo=UTC), "2026-11-29T01:00:00+08:00",
                     id="utc-now-exactly-at-a-fire-time"),
        pytest.param(datetime(2026, 11, 27, 16, 59, tzinfo=UTC), "2026-11-28T01:00:00+08:00",
                     id="utc-now-a-minute-before"),
        pytest.param(datetime(2026, 11, 28, 0, 30), "2026-11-28T01:00:00+08:00",
                     id="naive-now-is-wall-time-in-tz"),
    ],
)
def test_next_fire_times_from_any_now(now: datetime, first: str) -> None:
    assert next_fire_times("0 1 * * *", "Asia/Shanghai", 1, now)[0].isoformat() == first


def test_next_fire_times_without_now_are_in_the_future() -> None:
    (t,) = next_fire_times("0 1 * * *", "Asia/Shanghai", 1)
    assert t > datetime.now(SHANGHAI)
    assert (t.hour, t.minute) == (1, 0)


# ---------------------------------------------------------------- host zone


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        pytest.param("UTC", "UTC", id="utc"),
        pytest.param("Asia/Shanghai", "Asia/Shanghai", id="shanghai"),
        pytest.param(":Asia/Shanghai", "Asia/Shanghai", id="posix-colon"),
        pytest.param("/usr/share/zoneinfo/Asia/Shanghai", "Asia/Shanghai", id="zoneinfo-path"),
        pytest.param("CST-8", "Etc/GMT-8", id="posix-fixed-offset-utc+8"),
        pytest.param("", "UTC", id="empty-is-utc"),
    ],
)
def test_host_zone_reads_tz(monkeypatch: pytest.MonkeyPatch, tz: str, expected: str) -> None:
    monkeypatch.setenv("TZ", tz)
    assert str(host_zone()) == expected


def test_host_zone_follows_the_localtime_symlink(tmp_path: Path) -> None:
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/Asia/Shanghai")
    zone = host_zone(environ={}, localtime=link, timezone_file=tmp_path / "none")
    assert zone == SHANGHAI


def test_host_zone_reads_etc_timezone_when_localtime_is_a_copy(tmp_path: Path) -> None:
    copy = tmp_path / "localtime"
    copy.write_bytes(Path("/usr/share/zoneinfo/Asia/Shanghai").read_bytes())
    name = tmp_path / "timezone"
    name.write_text("Asia/Shanghai\n")
    assert host_zone(environ={}, localtime=copy, timezone_file=name) == SHANGHAI
    unnamed = host_zone(environ={}, localtime=copy, timezone_file=tmp_path / "none")
    assert unnamed.utcoffset(datetime(2026, 7, 1)) == timedelta(hours=8)


def test_host_zone_defaults_to_utc(tmp_path: Path) -> None:
    zone = host_zone(environ={}, localtime=tmp_path / "none", timezone_file=tmp_path / "none")
    assert zone == UTC


@pytest.mark.parametrize(
    ("tz", "host_time", "debian"),
    [
        pytest.param("UTC", "2026-11-27T17:00:00+00:00", "0 17 * * *", id="utc-host"),
        pytest.param("Asia/Shanghai", "2026-11-28T01:00:00+08:00", "0 1 * * *",
                     id="shanghai-host"),
    ],
)
def test_schedule_report_with_tz_set(
    monkeypatch: pytest.MonkeyPatch, tz: str, host_time: str, debian: str
) -> None:
    monkeypatch.setenv("TZ", tz)
    report = schedule_report(ReferenceSyncConfig(), host_zone(), now=NOW)
    assert report["host_timezone"] == tz
    assert report["next"][0] == {"tz_time": "2026-11-28T01:00:00+08:00", "host_time": host_time}
    assert report["crontab_debian"] == f"{debian} {COMMAND}"
    assert report["exact"] is True


def test_schedule_report_shape() -> None:
    report = schedule_report(ReferenceSyncConfig(), UTC, now=NOW, command="/x/run.sh")
    assert report == {
        "schedule": "0 1 * * *",
        "timezone": "Asia/Shanghai",
        "host_timezone": "UTC",
        "form": "crontab",
        "user": None,
        "next": [
            {"tz_time": "2026-11-28T01:00:00+08:00", "host_time": "2026-11-27T17:00:00+00:00"},
            {"tz_time": "2026-11-29T01:00:00+08:00", "host_time": "2026-11-28T17:00:00+00:00"},
            {"tz_time": "2026-11-30T01:00:00+08:00", "host_time": "2026-11-29T17:00:00+00:00"},
        ],
        "crontab_debian": "0 17 * * * /x/run.sh",
        "crontab_cronie": "CRON_TZ=Asia/Shanghai\n0 1 * * * /x/run.sh",
        "systemd_on_calendar": "*-*-* 01:00:00 Asia/Shanghai",
        "exact": True,
        "note": report["note"],
    }
    assert "17:00 UTC the day before" in report["note"]


# ---------------------------------------------------------------- crontab lines


def test_debian_line_for_a_utc_host_is_17_00() -> None:
    line, why = crontab_line_for_host("0 1 * * *", "Asia/Shanghai", UTC, COMMAND, now=NOW)
    assert line == f"0 17 * * * {COMMAND}"
    assert "17:00 UTC the day before" in why
    assert "ignores TZ=" in why


def test_debian_line_for_a_shanghai_host_is_unchanged() -> None:
    line, why = crontab_line_for_host("0 1 * * *", "Asia/Shanghai", SHANGHAI, COMMAND, now=NOW)
    assert line == f"0 1 * * * {COMMAND}"
    assert "as written" in why


def test_cronie_line_sets_cron_tz() -> None:
    assert cronie_line("0 1 * * *", "Asia/Shanghai", COMMAND) == (
        f"CRON_TZ=Asia/Shanghai\n0 1 * * * {COMMAND}"
    )


EXACT = [
    pytest.param("0 1 * * *", "UTC", "0 17 * * *", id="daily-utc"),
    pytest.param("0 1 * * *", "Asia/Shanghai", "0 1 * * *", id="daily-same-zone"),
    pytest.param("0 1 * * *", "Asia/Singapore", "0 1 * * *", id="daily-same-offset"),
    pytest.param("0 1 * * *", "Asia/Kolkata", "30 22 * * *", id="half-hour-offset"),
    pytest.param("0 1 * * *", "Asia/Kathmandu", "45 22 * * *", id="quarter-hour-offset"),
    pytest.param("0 1 * * 1-5", "UTC", "0 17 * * 0-4", id="weekdays-move-back-a-day"),
    pytest.param("0 1 * * mon", "UTC", "0 17 * * 0", id="monday-becomes-sunday"),
    pytest.param("0 1 * * 0,6", "UTC", "0 17 * * 5,6", id="weekend-becomes-fri-sat"),
    pytest.param("30 9 * * 1-5", "UTC", "30 1 * * 1-5", id="same-day-no-shift"),
    pytest.param("0 1 15 * *", "UTC", "0 17 14 * *", id="day-of-month-moves-back"),
    pytest.param("0 20 27 * *", "Asia/Tokyo", "0 21 27 * *", id="later-zone-same-day"),
    pytest.param("0 23 10 * *", "Asia/Tokyo", "0 0 11 * *", id="day-of-month-moves-forward"),
    pytest.param("0 1-3 * * *", "UTC", "0 17-19 * * *", id="hour-range"),
    pytest.param("0 */6 * * *", "UTC", "0 4,10,16,22 * * *", id="hour-step-every-day"),
    pytest.param("*/15 * * * *", "UTC", "*/15 * * * *", id="every-15-minutes"),
    pytest.param("@daily", "UTC", "0 16 * * *", id="macro"),
]


@pytest.mark.parametrize(("cron", "host", "expected"), EXACT)
def test_translation_exact(cron: str, host: str, expected: str) -> None:
    result = translate_for_host(cron, "Asia/Shanghai", ZoneInfo(host), now=NOW)
    assert (result.expression, result.exact) == (expected, True), result.explanation


@pytest.mark.parametrize(("cron", "host", "expected"), EXACT)
def test_translation_fires_at_the_same_instants(cron: str, host: str, expected: str) -> None:
    """The rewritten line, read in the host's zone, fires exactly when the original does."""
    want = croniter(cron, NOW)
    got = croniter(expected, NOW.astimezone(ZoneInfo(host)))
    for _ in range(200):
        assert got.get_next(datetime) == want.get_next(datetime)


@pytest.mark.parametrize(
    ("cron", "host", "reason"),
    [
        pytest.param("0 1 * * *", "Europe/Berlin", "daylight saving", id="host-has-dst"),
        pytest.param("0 1 * * *", "America/New_York", "daylight saving", id="host-dst-west"),
        pytest.param("0 1 1 * *", "UTC", "previous month", id="first-of-month"),
        pytest.param("0 1 * 3 *", "UTC", "another month", id="month-restricted"),
        pytest.param("0 1 * * */2", "UTC", "step", id="weekday-step"),
        pytest.param("0 */6 * * 1", "UTC", "others do not", id="mixed-day-shift"),
        pytest.param("0 1 * * * 30", "UTC", "6 fields", id="seconds-field"),
    ],
)
def test_translation_not_exact_says_so(cron: str, host: str, reason: str) -> None:
    result = translate_for_host(cron, "Asia/Shanghai", ZoneInfo(host), now=NOW)
    assert result.exact is False
    assert reason in result.explanation
    if "fields" not in reason:
        assert "CRON_TZ=Asia/Shanghai" in result.explanation


def test_translation_for_a_dst_host_is_right_until_the_change() -> None:
    result = translate_for_host("0 1 * * *", "Asia/Shanghai", ZoneInfo("Europe/Berlin"), NOW)
    assert result.expression == "0 18 * * *"  # 01:00 CST = 18:00 CET, in winter
    assert "from 2027-03-29" in result.explanation


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        pytest.param("0 1 * * *", "*-*-* 01:00:00 Asia/Shanghai", id="daily"),
        pytest.param("30 9 * * 1-5", "Mon,Tue,Wed,Thu,Fri *-*-* 09:30:00 Asia/Shanghai",
                     id="weekdays"),
        pytest.param("0 1 1 * 1", None, id="dom-or-dow-has-no-equivalent"),
    ],
)
def test_on_calendar(cron: str, expected: str | None) -> None:
    assert on_calendar(cron, "Asia/Shanghai") == expected


# ---------------------------------------------------------------- shipped cron files

_ENTRY = re.compile(
    r"^(?P<comment>#\s*)?(?P<expr>(?:\S+\s+){4}\S+)\s+refsync\s+"
    r"(?P<command>/\S+/deploy/cron/refsync-nightly\.sh)\s*$"
)


def _entries(path: Path) -> list[tuple[str | None, bool, str]]:
    """(zone named in the comment above, active?, cron expression) for each entry line."""
    out: list[tuple[str | None, bool, str]] = []
    zone: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        named = re.search(r"host zone ([A-Za-z_/+-]+)", line)
        if line.startswith("# ---") and named:
            zone = named.group(1)
            continue
        m = _ENTRY.match(line)
        if m:
            out.append((zone, m.group("comment") is None, m.group("expr")))
    return out


def _first_fire_in_shanghai(expr: str, daemon_zone: ZoneInfo) -> datetime:
    assert croniter.is_valid(expr), expr
    it = croniter(expr, NOW.astimezone(daemon_zone))
    return it.get_next(datetime).astimezone(SHANGHAI)


def test_debian_cron_file_has_one_active_line_per_host_zone() -> None:
    entries = _entries(DEPLOY / "cron" / "refsync.cron")
    assert [(z, active) for z, active, _ in entries] == [
        ("Etc/UTC", True),
        ("Asia/Shanghai", False),
    ]


@pytest.mark.parametrize(
    "zone",
    [pytest.param("Etc/UTC", id="utc-host-line"),
     pytest.param("Asia/Shanghai", id="shanghai-host-line")],
)
def test_debian_cron_file_fires_at_01_00_shanghai(zone: str) -> None:
    (expr,) = [e for z, _, e in _entries(DEPLOY / "cron" / "refsync.cron") if z == zone]
    first = _first_fire_in_shanghai(expr, ZoneInfo(zone))
    assert first == datetime(2026, 11, 28, 1, 0, tzinfo=SHANGHAI)
    # and it is what `refsync schedule` prints for such a host
    line, _ = crontab_line_for_host("0 1 * * *", "Asia/Shanghai", ZoneInfo(zone), COMMAND, NOW)
    assert line == f"{' '.join(expr.split())} {COMMAND}"


def test_cronie_file_sets_cron_tz_and_fires_at_01_00_shanghai() -> None:
    text = (DEPLOY / "cron" / "refsync.cronie").read_text(encoding="utf-8")
    (cron_tz,) = re.findall(r"^CRON_TZ=(\S+)$", text, flags=re.M)
    entries = _entries(DEPLOY / "cron" / "refsync.cronie")
    assert [(active, expr) for _, active, expr in entries] == [(True, "0 1 * * *")]
    assert cron_tz == "Asia/Shanghai"
    # cronie reads the line in CRON_TZ, whatever the host's zone
    first = _first_fire_in_shanghai(entries[0][2], ZoneInfo(cron_tz))
    assert first == datetime(2026, 11, 28, 1, 0, tzinfo=SHANGHAI)
    # CRON_TZ comes before the line it governs
    assert text.index("CRON_TZ=") < text.index("\n0 1 * * *")


@pytest.mark.parametrize(
    "name", [pytest.param("refsync.cron", id="debian"), pytest.param("refsync.cronie", id="cronie")]
)
def test_cron_files_are_valid_cron_d_files(name: str) -> None:
    text = (DEPLOY / "cron" / name).read_text(encoding="utf-8")
    assert text.endswith("\n"), "cron ignores a last line without a newline"
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):
            continue  # environment setting
        m = _ENTRY.match(line)
        assert m, f"not an entry with a user field: {line!r}"
        assert "%" not in line, "an unescaped % is a newline to cron"
