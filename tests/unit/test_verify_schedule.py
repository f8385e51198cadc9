"""The shipped weekly verify (deploy/cron/refsync-verify.cron, deploy/systemd/refsync-verify.*):
it fires once a week after the nightly sync and writes into the sync's metrics file."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=SHANGHAI)  # a Tuesday
NEXT_SUNDAY_6 = datetime(2026, 12, 6, 6, 0, tzinfo=SHANGHAI)
WRAPPER_METRICS = "/var/lib/refsync/metrics/refsync.prom"
_LINE = re.compile(r"^(?P<off>#)?(?P<expr>(?:\S+\s+){4}\S+)\s+refsync\s+(?P<command>.+)$")


def _cron_entries() -> dict[str, tuple[bool, str, str]]:
    """{host zone: (active?, cron expression, command)}."""
    entries: dict[str, tuple[bool, str, str]] = {}
    zone = None
    for line in (DEPLOY / "cron" / "refsync-verify.cron").read_text().splitlines():
        named = re.search(r"^# --- host zone (\S+?):?\s", line + " ")
        if named:
            zone = named[1].rstrip(":")
            continue
        match = _LINE.match(line)
        if match and zone:
            entries[zone] = (match["off"] is None, match["expr"], match["command"])
    return entries


def test_the_cron_file_has_one_active_line_per_host_zone() -> None:
    entries = _cron_entries()
    assert {zone: active for zone, (active, _, _) in entries.items()} == {
        "Etc/UTC": True, "Asia/Shanghai": False}


@pytest.mark.parametrize("zone", ["Etc/UTC", "Asia/Shanghai"])
def test_the_cron_line_fires_sundays_at_06_00_shanghai(zone: str) -> None:
    _, expr, command = _cron_entries()[zone]
    fires = croniter(expr, NOW.astimezone(ZoneInfo(zone)))
    first, second = (fires.get_next(datetime).astimezone(SHANGHAI) for _ in range(2))
    assert (first, (second - first).days) == (NEXT_SUNDAY_6, 7)
    assert f"refsync verify --log-format json --metrics-file {WRAPPER_METRICS} " in command
    assert command.startswith("cd /etc/refsync && ")


def _settings(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if "=" in line and not line.startswith(("#", "[")))


def test_the_timer_starts_the_verify_weekly_after_the_nightly_sync() -> None:
    timer = _settings(DEPLOY / "systemd" / "refsync-verify.timer")
    assert timer["OnCalendar"] == "Sun *-*-* 06:00:00 Asia/Shanghai"
    assert timer["Unit"] == "refsync-verify.service"
    service = _settings(DEPLOY / "systemd" / "refsync-verify.service")
    assert service["ExecStart"].split() == [
        "/opt/refsync/.venv/bin/refsync", "verify", "--env-file", "/etc/refsync/refsync.env",
        "--log-format", "json", "--metrics-file", WRAPPER_METRICS]
    assert (service["User"], service["OnFailure"]) == ("refsync", "refsync-failure@%n.service")


def test_the_verify_units_pass_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    refsync = ROOT / ".venv" / "bin" / "refsync"
    (tmp_path / "refsync-verify.service").write_text(
        (DEPLOY / "systemd" / "refsync-verify.service").read_text().replace(
            "/opt/refsync/.venv/bin/refsync", str(refsync)))
    shutil.copy2(DEPLOY / "systemd" / "refsync-verify.timer", tmp_path)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "refsync-verify.service"),
         str(tmp_path / "refsync-verify.timer")],
        capture_output=True, text=True, timeout=60, check=False)
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if "refsync-verify." in line]
    assert (result.returncode, ours) == (0, []), result.stdout + result.stderr
