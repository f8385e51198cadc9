"""deploy/: the nightly wrapper (lock, exit code, log, env file) and the systemd units."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from refsync.config import ReferenceSyncConfig
from refsync.schedule import on_calendar

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
WRAPPER = DEPLOY / "cron" / "refsync-nightly.sh"
SERVICE = DEPLOY / "systemd" / "refsync.service"
TIMER = DEPLOY / "systemd" / "refsync.timer"

FAKE_REFSYNC = """\
#!/usr/bin/env bash
# stands in for refsync: records how it was called, then exits with $FAKE_RC
[[ $1 == --version ]] && { echo "refsync 0.0.fake"; exit 0; }
[[ -n ${FAKE_LOG:-} ]] && cat "$FAKE_LOG"
echo "fake-refsync args=[$*] cwd=$PWD FOO=${FOO:-unset}"
echo "fake-refsync stderr line" >&2
touch "$MARKER"
exit "${FAKE_RC:-0}"
"""

SLOW_REFSYNC = """\
#!/usr/bin/env bash
# stands in for a long refsync run that handles SIGTERM like refsync does (exit 143)
[[ $1 == --version ]] && { echo "refsync 0.0.fake"; exit 0; }
trap 'echo "fake-refsync got SIGTERM"; kill "$sleeper" 2>/dev/null; exit 143' TERM
touch "$MARKER"
sleep 30 & sleeper=$!
wait "$sleeper"
"""


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An install directory with a fake refsync in it."""
    _script(tmp_path / "bin" / "fake-refsync", FAKE_REFSYNC)
    _script(tmp_path / "bin" / "slow-refsync", SLOW_REFSYNC)
    return tmp_path


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "REFSYNC_HOME": str(home),
        "REFSYNC_BIN": str(home / "bin" / "fake-refsync"),
        "MARKER": str(home / "ran"),
        "REFSYNC_METRICS_FILE": "",
    }
    env.update(extra)
    return env


def _run(
    env: dict[str, str], *args: str, wrapper: Path = WRAPPER
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(wrapper), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _log(home: Path) -> list[str]:
    return (home / "logs" / "refsync.log").read_text(encoding="utf-8").splitlines()


def _wrapper_events(lines: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


# ---------------------------------------------------------------- the wrapper


def test_wrapper_is_executable_and_valid_bash() -> None:
    assert WRAPPER.stat().st_mode & stat.S_IXUSR
    assert WRAPPER.read_text().startswith("#!/usr/bin/env bash\n")
    result = subprocess.run(["bash", "-n", str(WRAPPER)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_wrapper_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([shellcheck, str(WRAPPER)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "rc",
    [pytest.param(0, id="ok"), pytest.param(1, id="table-failed"),
     pytest.param(2, id="config-error")],
)
def test_wrapper_exits_with_refsyncs_exit_code(home: Path, rc: int) -> None:
    result = _run(_env(home, FAKE_RC=str(rc)))
    assert result.returncode == rc
    assert result.stdout == ""
    if rc == 0:
        assert result.stderr == "", "cron mails any output: a good night must be silent"
    else:
        assert result.stderr == (
            f"refsync-nightly: refsync sync exited {rc}; details in {home}/logs/refsync.log\n"
        )
    finish = [e for e in _wrapper_events(_log(home)) if e["event"] == "nightly.finish"]
    assert [e["exit_code"] for e in finish] == [rc]
    assert finish[0]["level"] == ("INFO" if rc == 0 else "ERROR")


def test_wrapper_runs_sync_with_json_logs_in_the_install_dir(home: Path) -> None:
    result = _run(_env(home), "-t", "年金计划")
    assert result.returncode == 0, result.stderr
    lines = _log(home)
    assert f"fake-refsync args=[sync --log-format json -t 年金计划] cwd={home} FOO=unset" in lines
    start = next(e for e in _wrapper_events(lines) if e["event"] == "nightly.start")
    assert "refsync 0.0.fake" in str(start["msg"]), "the version that ran is in the log"
    assert "fake-refsync stderr line" in lines, "stderr goes to the log too"


def test_wrapper_appends_to_the_log(home: Path) -> None:
    _run(_env(home, FAKE_RC="0"))
    first = _log(home)
    _run(_env(home, FAKE_RC="1"))
    second = _log(home)
    assert second[: len(first)] == first
    assert len(second) == 2 * len(first)
    events = [(e["event"], e.get("exit_code")) for e in _wrapper_events(second)]
    assert events == [("nightly.start", None), ("nightly.finish", 0),
                      ("nightly.start", None), ("nightly.finish", 1)]
    for event in _wrapper_events(second):
        assert {"ts", "level", "event", "msg"} <= set(event)


def test_wrapper_log_path_is_configurable(home: Path, tmp_path: Path) -> None:
    log = tmp_path / "elsewhere" / "nightly.log"
    assert _run(_env(home, REFSYNC_LOG=str(log))).returncode == 0
    assert "fake-refsync stderr line" in log.read_text()


def test_wrapper_exits_3_when_the_lock_is_held(home: Path) -> None:
    lock = home / "logs" / "refsync-nightly.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = _run(_env(home))
    assert result.returncode == 3
    assert not (home / "ran").exists(), "refsync must not start while another run holds the lock"
    assert "holds" in result.stderr
    (event,) = _wrapper_events(_log(home))
    assert (event["event"], event["level"], event["exit_code"]) == ("nightly.locked", "WARNING", 3)
    # once released, the next run goes ahead
    assert _run(_env(home)).returncode == 0
    assert (home / "ran").exists()


def test_wrapper_lock_is_held_while_refsync_runs(home: Path) -> None:
    """A second wrapper started during a run exits 3 (the child inherits the lock)."""
    env = _env(home, REFSYNC_BIN=str(home / "bin" / "slow-refsync"))
    first = subprocess.Popen([str(WRAPPER)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(home / "ran")
        second = _run(_env(home))
        assert second.returncode == 3
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)


def test_wrapper_passes_sigterm_to_refsync(home: Path) -> None:
    env = _env(home, REFSYNC_BIN=str(home / "bin" / "slow-refsync"))
    proc = subprocess.Popen([str(WRAPPER)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(home / "ran")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    lines = _log(home)
    assert "fake-refsync got SIGTERM" in lines
    assert _wrapper_events(lines)[-1]["exit_code"] == 143


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)


@pytest.mark.parametrize(
    "where",
    [pytest.param("default", id="dot-env-in-home"),
     pytest.param("explicit", id="refsync-env-file")],
)
def test_wrapper_passes_the_env_file_to_refsync(home: Path, tmp_path: Path, where: str) -> None:
    """The shell never parses .env (a `$` in a password broke it): refsync reads it."""
    env_file = home / ".env" if where == "default" else tmp_path / "conf" / "refsync.env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text('# refsync settings\nFOO="bar baz"\nWDH_LEGACY_MYSQL_PASSWORD=pa$word\n')
    extra = {} if where == "default" else {"REFSYNC_ENV_FILE": str(env_file)}
    result = _run(_env(home, **extra))
    assert result.returncode == 0, result.stderr
    assert (f"fake-refsync args=[sync --log-format json --env-file {env_file}] cwd={home} "
            "FOO=unset") in _log(home)


def test_wrapper_passes_the_metrics_file(home: Path) -> None:
    env = _env(home)
    del env["REFSYNC_METRICS_FILE"]
    assert _run(env).returncode == 0
    assert any(f"--metrics-file {home}/state/refsync.prom]" in line for line in _log(home))
    assert (home / "state").is_dir()


def test_failure_mail_names_the_failed_tables(home: Path, tmp_path: Path) -> None:
    """cron mails stderr: one line per failed table with its error class, not just "see log"."""
    lines = [
        {"level": "ERROR", "event": "table_done", "msg": "年金计划: failed", "table": "年金计划",
         "mode": "upsert", "status": "failed", "error_class": "connection",
         "error": 'lost "x"'},
        {"level": "INFO", "event": "table_done", "msg": "ok", "table": "产品线",
         "status": "ok", "error_class": None},
        {"level": "WARNING", "event": "table_done", "msg": "skipped", "table": "组织架构",
         "status": "skipped", "error_class": "file_missing"},
    ]
    fake_log = tmp_path / "fake.jsonl"
    fake_log.write_text("".join(json.dumps({"ts": "t", **x}, ensure_ascii=False,
                                           separators=(",", ":")) + "\n" for x in lines))
    result = _run(_env(home, FAKE_RC="1", FAKE_LOG=str(fake_log)))
    assert result.returncode == 1
    assert result.stderr.splitlines()[1:] == ["  年金计划: failed [connection]",
                                              "  组织架构: skipped [file_missing]"]
    # a second failing night names only its own tables
    fake_log.write_text(json.dumps({"event": "error", "msg": "config file not found: /x.yml",
                                    "logger": "refsync", "error_class": "config"},
                                   separators=(",", ":")) + "\n")
    result = _run(_env(home, FAKE_RC="2", FAKE_LOG=str(fake_log)))
    assert result.stderr.splitlines()[1:] == ["  run: [config] config file not found: /x.yml"]


def _prestart(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 4, result.stderr
    (line,) = result.stderr.splitlines()
    event: dict[str, object] = json.loads(line)
    assert (event["event"], event["level"], event["exit_code"]) == (
        "nightly.prestart_failed", "ERROR", 4)
    return event


def test_prestart_failure_unreadable_env_file(home: Path) -> None:
    env_file = home / ".env"
    env_file.write_text("WDH_DATABASE_URL=sqlite:///x.db\n")
    env_file.chmod(0)
    try:
        if os.access(env_file, os.R_OK):
            pytest.skip("root reads any file: covered by the install test as the service user")
        event = _prestart(_run(_env(home)))
    finally:
        env_file.chmod(0o600)
    assert "cannot read the env file" in str(event["msg"])
    assert not (home / "ran").exists()
    assert _wrapper_events(_log(home))[-1]["event"] == "nightly.prestart_failed"


def test_prestart_failure_refsync_cannot_start(home: Path) -> None:
    broken = home / "bin" / "broken"
    broken.write_text("#!/nonexistent/python\n")
    broken.chmod(0o755)
    event = _prestart(_run(_env(home, REFSYNC_BIN=str(broken))))
    assert "cannot start refsync" in str(event["msg"])
    assert _wrapper_events(_log(home))[-1]["event"] == "nightly.prestart_failed"


def test_prestart_failure_log_not_writable(home: Path) -> None:
    blocker = home / "not-a-dir"
    blocker.write_text("")
    event = _prestart(_run(_env(home, REFSYNC_LOG=str(blocker / "refsync.log"))))
    assert "cannot write the log" in str(event["msg"])
    assert not (home / "ran").exists()


def test_wrapper_runs_without_an_env_file(home: Path) -> None:
    result = _run(_env(home))  # no $REFSYNC_HOME/.env: settings from the environment
    assert result.returncode == 0, result.stderr
    assert "--env-file" not in "\n".join(_log(home))


def test_a_named_env_file_that_is_missing_is_a_prestart_failure(home: Path) -> None:
    event = _prestart(_run(_env(home, REFSYNC_ENV_FILE=str(home / "missing.env"))))
    assert "cannot read the env file" in str(event["msg"])


def test_wrapper_defaults_to_its_install_dir_and_venv(tmp_path: Path) -> None:
    """No REFSYNC_HOME/REFSYNC_BIN: home is two levels above the script, .venv/bin/refsync runs."""
    install = tmp_path / "opt" / "refsync"
    wrapper = install / "deploy" / "cron" / "refsync-nightly.sh"
    wrapper.parent.mkdir(parents=True)
    shutil.copy2(WRAPPER, wrapper)
    _script(install / ".venv" / "bin" / "refsync", FAKE_REFSYNC)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "MARKER": str(tmp_path / "ran")}
    result = _run(env, wrapper=wrapper)
    assert result.returncode == 0, result.stderr
    lines = (install / "logs" / "refsync.log").read_text().splitlines()
    assert (f"fake-refsync args=[sync --log-format json --metrics-file "
            f"{install}/state/refsync.prom] cwd={install} FOO=unset") in lines


def test_wrapper_bin_may_be_a_command_with_arguments(home: Path) -> None:
    result = _run(_env(home, REFSYNC_BIN=f"bash {home}/bin/fake-refsync"))
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("fake-refsync args=[sync --log-format json]") for line in _log(home))


# ---------------------------------------------------------------- systemd units


def _settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_timer_fires_at_01_00_shanghai_and_catches_up() -> None:
    timer = _settings(TIMER)
    assert timer["OnCalendar"] == ["*-*-* 01:00:00 Asia/Shanghai"]
    assert timer["Persistent"] == ["true"]
    assert timer["Unit"] == ["refsync.service"]
    assert timer["WantedBy"] == ["timers.target"]
    # the same value `refsync schedule` derives from the default config
    section = ReferenceSyncConfig()
    assert on_calendar(section.schedule, section.timezone) == timer["OnCalendar"][0]


def test_service_runs_the_wrapper_once_and_lets_sigterm_reach_refsync() -> None:
    service = _settings(SERVICE)
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == ["/opt/refsync/deploy/cron/refsync-nightly.sh"]
    assert service["WorkingDirectory"] == ["/opt/refsync"]
    assert "EnvironmentFile" not in service, "refsync reads .env itself (--env-file)"
    assert service["OnFailure"] == ["refsync-failure@%n.service"]
    assert (DEPLOY / "systemd" / "refsync-failure@.service").is_file()
    assert service["KillMode"] == ["mixed"]
    assert "TimeoutStopSec" in service
    assert "SuccessExitStatus" not in service, "a night that did not sync must show as failed"


@pytest.fixture
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    return path


def test_units_pass_systemd_analyze_verify(systemd_analyze: str, tmp_path: Path) -> None:
    # point the unit at this checkout, so the ExecStart= check finds the real wrapper
    (tmp_path / "refsync.service").write_text(
        SERVICE.read_text().replace("/opt/refsync", str(ROOT))
    )
    shutil.copy2(TIMER, tmp_path / "refsync.timer")
    result = subprocess.run(
        [systemd_analyze, "verify", "--man=no",
         str(tmp_path / "refsync.service"), str(tmp_path / "refsync.timer")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if "refsync." in line]
    assert result.returncode == 0, result.stderr
    assert ours == [], "systemd-analyze warned about the units"


@pytest.mark.parametrize(
    ("tz", "expected"),
    [pytest.param("UTC", "17:00:00 UTC", id="utc-host"),
     pytest.param("Asia/Shanghai", "01:00:00 CST", id="shanghai-host")],
)
def test_systemd_calendar_next_elapse(systemd_analyze: str, tz: str, expected: str) -> None:
    result = subprocess.run(
        [systemd_analyze, "calendar", _settings(TIMER)["OnCalendar"][0]],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "TZ": tz},
    )
    assert result.returncode == 0, result.stderr
    (next_line,) = [line for line in result.stdout.splitlines() if "Next elapse:" in line]
    assert next_line.strip().endswith(expected), result.stdout
