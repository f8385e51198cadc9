"""deploy/: the nightly wrapper (lock, exit code, log, env file) and the systemd units."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from refsync.cli import app
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
if [[ $1 == status ]]; then
    echo "status args=[$*]" >>"$MARKER.status"
    printf '%s' "${FAKE_PROBLEMS:-}"
    exit 0
fi
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
[[ $1 == status ]] && { echo "slow: last run interrupted"; exit 0; }
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
    (tmp_path / "etc").mkdir()
    return tmp_path


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "REFSYNC_HOME": str(home),
        "REFSYNC_ETC": str(home / "etc"),
        "REFSYNC_LOG": str(home / "logs" / "refsync.log"),
        "REFSYNC_LOCK": str(home / "logs" / "refsync-nightly.lock"),
        "REFSYNC_BIN": str(home / "bin" / "fake-refsync"),
        "MARKER": str(home / "ran"),
        "REFSYNC_METRICS_FILE": "",
        "REFSYNC_ALLOW_ROOT": "yes",  # CI runs as root; test_wrapper_refuses_root checks it
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
    result = subprocess.run([shellcheck, str(WRAPPER), str(DEPLOY / "bin" / "refsync")],
                            capture_output=True, text=True, check=False)
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
    assert (f"fake-refsync args=[sync --log-format json -t 年金计划] cwd={home}/etc FOO=unset"
            in lines), "the run starts in the config directory (relative file_paths)"
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
    [pytest.param("default", id="refsync-env-in-etc"),
     pytest.param("explicit", id="refsync-env-file")],
)
def test_wrapper_passes_the_env_file_to_refsync(home: Path, tmp_path: Path, where: str) -> None:
    """The shell never parses .env (a `$` in a password broke it): refsync reads it."""
    env_file = (home / "etc" / "refsync.env" if where == "default"
                else tmp_path / "conf" / "refsync.env")
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text('# refsync settings\nFOO="bar baz"\nWDH_LEGACY_MYSQL_PASSWORD=pa$word\n')
    extra = {} if where == "default" else {"REFSYNC_ENV_FILE": str(env_file)}
    result = _run(_env(home, **extra))
    assert result.returncode == 0, result.stderr
    assert (f"fake-refsync args=[sync --log-format json --env-file {env_file}] cwd={home}/etc "
            "FOO=unset") in _log(home)


def test_wrapper_passes_the_metrics_file_in_a_directory_others_can_read(home: Path) -> None:
    metrics = home / "lib" / "metrics" / "refsync.prom"
    assert _run(_env(home, REFSYNC_METRICS_FILE=str(metrics))).returncode == 0
    assert any(f"--metrics-file {metrics}]" in line for line in _log(home))
    for directory in (metrics.parent, metrics.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, "node_exporter reads it"


def test_failure_mail_is_refsyncs_own_problem_list(home: Path) -> None:
    """cron mails stderr: after the exit line, `refsync status --problems` (one line a table,
    its class and error as refsync wrote them), never text scraped from the JSON log."""
    problems = ('年金计划: last run failed [connection]: lost "x" \\n at 01:00\n'
                "组织架构: no successful run yet\n")
    env_file = home / "etc" / "refsync.env"
    env_file.write_text("")
    result = _run(_env(home, FAKE_RC="1", FAKE_PROBLEMS=problems))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"refsync-nightly: refsync sync exited 1; details in {home}/logs/refsync.log",
        '  年金计划: last run failed [connection]: lost "x" \\n at 01:00',
        "  组织架构: no successful run yet",
    ]
    assert (home / "ran.status").read_text() == (
        f"status args=[status --problems --no-fail --env-file {env_file}]\n")


def test_a_good_night_asks_for_no_problem_list(home: Path) -> None:
    assert _run(_env(home, FAKE_PROBLEMS="x: stale\n")).stderr == ""
    assert not (home / "ran.status").exists()


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
    (tmp_path / "etc").mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "MARKER": str(tmp_path / "ran"), "REFSYNC_ALLOW_ROOT": "yes",
           "REFSYNC_ETC": str(tmp_path / "etc"), "REFSYNC_LOG": str(tmp_path / "refsync.log"),
           "REFSYNC_LOCK": str(tmp_path / "lock"),
           "REFSYNC_METRICS_FILE": str(tmp_path / "metrics" / "refsync.prom")}
    result = _run(env, wrapper=wrapper)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "refsync.log").read_text().splitlines()
    assert (f"fake-refsync args=[sync --log-format json --metrics-file "
            f"{tmp_path}/metrics/refsync.prom] cwd={tmp_path}/etc FOO=unset") in lines


def test_wrapper_paths_default_outside_the_checkout() -> None:
    """Config, secrets, logs and state survive `git clean -fdx` and a new release."""
    text = WRAPPER.read_text()
    for line in ("REFSYNC_ETC=${REFSYNC_ETC:-/etc/refsync}",
                 "env_file=${REFSYNC_ENV_FILE:-$REFSYNC_ETC/refsync.env}",
                 "log_file=${REFSYNC_LOG:-/var/log/refsync/refsync.log}",
                 "lock_file=${REFSYNC_LOCK:-/var/lib/refsync/refsync-nightly.lock}",
                 "metrics_file=${REFSYNC_METRICS_FILE-/var/lib/refsync/metrics/refsync.prom}"):
        assert f"\n{line}\n" in text, line


def test_wrapper_bin_may_be_a_command_with_arguments(home: Path) -> None:
    result = _run(_env(home, REFSYNC_BIN=f"bash {home}/bin/fake-refsync"))
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("fake-refsync args=[sync --log-format json]") for line in _log(home))


# ---------------------------------------------------------------- every exit: a line, a ping


@dataclass
class PingServer:
    """A dead-man's switch on 127.0.0.1 that records each request's path and credentials."""

    url: str
    hits: list[tuple[str, str | None]]

    def paths(self) -> list[str]:
        return [path for path, _ in self.hits]


@pytest.fixture
def ping_server() -> Iterator[PingServer]:
    hits: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            hits.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    try:
        yield PingServer(f"http://127.0.0.1:{server.server_address[1]}/ping/abc", hits)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("case", "expected_rc", "event"),
    [pytest.param("ok", 0, "nightly.finish", id="ok"),
     pytest.param("table-failed", 1, "nightly.finish", id="table-failed"),
     pytest.param("cannot-start", 4, "nightly.prestart_failed", id="cannot-start"),
     pytest.param("metrics-dir", 4, "nightly.prestart_failed", id="metrics-dir"),
     pytest.param("locked", 3, "nightly.locked", id="locked"),
     pytest.param("bad-max-run-time", 4, "nightly.prestart_failed", id="bad-max-run-time")],
)
def test_every_exit_logs_a_json_line_and_a_failure_pings_fail(
        home: Path, ping_server: PingServer, case: str, expected_rc: int, event: str) -> None:
    env = _env(home, FAKE_RC="1" if case == "table-failed" else "0",
               REFSYNC_PING_URL=ping_server.url)
    if case == "cannot-start":
        env["REFSYNC_BIN"] = str(home / "bin" / "missing")
    if case == "metrics-dir":  # a directory it cannot create: the guide's node_exporter one
        (home / "file").write_text("")
        env["REFSYNC_METRICS_FILE"] = str(home / "file" / "node-exporter" / "refsync.prom")
    if case == "bad-max-run-time":
        env["REFSYNC_MAX_RUN_TIME"] = "four hours"
    lock = home / "logs" / "refsync-nightly.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as held:
        if case == "locked":
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = _run(env)
    assert result.returncode == expected_rc, result.stderr
    last = _wrapper_events(_log(home))[-1]
    assert (last["event"], last["exit_code"]) == (event, expected_rc)
    assert ping_server.paths() == ([] if expected_rc == 0 else ["/ping/abc/fail"])
    if expected_rc:
        assert result.stderr, "cron mails stderr: a failure is never silent"


def test_ping_url_from_the_env_file_with_credentials(home: Path,
                                                     ping_server: PingServer) -> None:
    """The wrapper reads only that one key (never sources the file); user:password@ is sent,
    and a ping that fails is logged by scheme and host only."""
    url = ping_server.url.replace("http://", "http://hc:S3cret-pw@")
    (home / "etc" / "refsync.env").write_text(
        f"WDH_DATABASE_URL=sqlite:///x.db\nexport WDH_REFERENCE_SYNC_PING_URL='{url}'  # hc\n")
    assert _run(_env(home, FAKE_RC="1")).returncode == 1
    assert ping_server.hits == [("/ping/abc/fail", "Basic aGM6UzNjcmV0LXB3")]
    dead = "http://hc:S3cret-pw@127.0.0.1:9/ping/abc"
    assert _run(_env(home, FAKE_RC="1", REFSYNC_PING_URL=dead)).returncode == 1
    warning = _wrapper_events(_log(home))[-1]
    assert warning["event"] == "nightly.ping_failed"
    assert warning["msg"] == "ping http://127.0.0.1:9 (/fail) failed"
    assert "S3cret" not in "\n".join(_log(home))


def test_wrapper_refuses_to_run_as_root(home: Path, ping_server: PingServer) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    env = _env(home, REFSYNC_PING_URL=ping_server.url)
    del env["REFSYNC_ALLOW_ROOT"]
    event = _prestart(_run(env))
    assert str(event["msg"]).startswith("refusing to run as root")
    assert "runuser -u refsync --" in str(event["msg"])
    assert not (home / "logs").exists(), "no root-owned log or lock file is left behind"
    assert not (home / "ran").exists()
    assert ping_server.paths() == ["/ping/abc/fail"]


def test_log_and_lock_files_are_0640(home: Path) -> None:
    assert _run(_env(home)).returncode == 0
    for path in (home / "logs" / "refsync.log", home / "logs" / "refsync-nightly.lock"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


@pytest.mark.parametrize(("mode", "warned"), [pytest.param(0o644, True, id="0644"),
                                              pytest.param(0o640, False, id="0640")])
def test_an_env_file_others_can_read_is_warned_about(home: Path, mode: int,
                                                     warned: bool) -> None:
    env_file = home / "etc" / "refsync.env"
    env_file.write_text("WDH_DATABASE_URL=sqlite:///x.db\n")
    env_file.chmod(mode)
    assert _run(_env(home)).returncode == 0
    warnings = [e for e in _wrapper_events(_log(home)) if e["event"] == "nightly.env_file_readable"]
    assert [(e["level"], e["msg"]) for e in warnings] == ([(
        "WARNING", f"the env file {env_file} holds secrets and is readable by every user "
        f"(mode 644): chmod 0640 {env_file}")] if warned else [])


def test_outer_bound_stops_a_run_past_max_run_time(home: Path, ping_server: PingServer) -> None:
    env = _env(home, REFSYNC_BIN=str(home / "bin" / "slow-refsync"), REFSYNC_MAX_RUN_TIME="1s",
               REFSYNC_OUTER_MARGIN="1s", REFSYNC_PING_URL=ping_server.url)
    started = time.monotonic()
    result = _run(env)
    assert result.returncode == 124, result.stderr
    assert time.monotonic() - started < 20
    lines = _log(home)
    assert "fake-refsync got SIGTERM" in lines, "refsync gets SIGTERM first, to roll back"
    last = _wrapper_events(lines)[-1]
    assert (last["event"], last["level"], last["exit_code"]) == ("nightly.timeout", "ERROR", 124)
    assert last["msg"] == ("refsync sync ran past the outer bound of 2s (max_run_time 1s + 1s) "
                           "and was stopped (exit 124)")
    assert result.stderr.splitlines()[0].startswith("refsync-nightly: refsync sync ran past")
    assert ping_server.paths() == ["/ping/abc/fail"]


@pytest.mark.parametrize(
    ("where", "outer"),
    [pytest.param({}, 4 * 3600 + 600, id="default-4h"),
     pytest.param({"REFSYNC_MAX_RUN_TIME": "90m"}, 90 * 60 + 600, id="wrapper-setting"),
     pytest.param({"WDH_REFERENCE_SYNC_MAX_RUN_TIME": "1.5h"}, 5400 + 600, id="refsyncs-env"),
     pytest.param({"REFSYNC_MAX_RUN_TIME": "3600", "REFSYNC_OUTER_MARGIN": "90s"}, 3690,
                  id="seconds-and-margin"),
     pytest.param({"env-file": "2h"}, 2 * 3600 + 600, id="refsyncs-env-file")],
)
def test_outer_bound_is_max_run_time_plus_ten_minutes(home: Path, where: dict[str, str],
                                                      outer: int) -> None:
    if "env-file" in where:
        (home / "etc" / "refsync.env").write_text(
            f'WDH_REFERENCE_SYNC_MAX_RUN_TIME="{where.pop("env-file")}"\n')
    assert _run(_env(home, **where)).returncode == 0
    start = next(e for e in _wrapper_events(_log(home)) if e["event"] == "nightly.start")
    assert f"(outer bound {outer}s)" in str(start["msg"])


@pytest.mark.parametrize(("zone", "offset"), [pytest.param(None, "+08:00", id="default"),
                                              pytest.param("UTC", "+00:00", id="utc")])
def test_wrapper_log_times_are_in_the_configured_zone(home: Path, zone: str | None,
                                                      offset: str) -> None:
    """The host zone (TZ) does not matter: the log has refsync's zone, with its offset."""
    extra = {"TZ": "America/New_York"}
    if zone:
        extra["REFSYNC_TIMEZONE"] = zone
    assert _run(_env(home, **extra)).returncode == 0
    for event in _wrapper_events(_log(home)):
        assert str(event["ts"]).endswith(offset), event


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


def _seconds(systemd_span: str) -> int:
    units = {"h": 3600, "min": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(h|min|s)", systemd_span))


def test_service_is_bounded_past_the_wrappers_outer_bound() -> None:
    """refsync stops at max_run_time (4h), the wrapper's `timeout` 10 min later, systemd after
    that: RuntimeMaxSec= bounds only a unit active while it runs (not a oneshot)."""
    service = _settings(SERVICE)
    assert service["Type"] == ["exec"]
    wrapper_outer = 4 * 3600 + 600 + 60  # max_run_time + margin + timeout's --kill-after
    assert wrapper_outer < _seconds(service["RuntimeMaxSec"][0]) <= wrapper_outer + 1800
    assert service["UMask"] == ["0027"]


def test_service_runs_the_wrapper_once_and_lets_sigterm_reach_refsync() -> None:
    service = _settings(SERVICE)
    assert service["ExecStart"] == ["/opt/refsync/deploy/cron/refsync-nightly.sh"]
    assert service["WorkingDirectory"] == ["/etc/refsync"]
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


# ---------------------------------------------------------------- one source for the DDL


def _demo_project(where: Path) -> Path:
    """The seed's four tables over a SQLite legacy database with the legacy column types."""
    from refsync import demo_data

    demo_data.build_legacy_sqlite(where / "legacy.sqlite", rows=10)
    demo_data.write_product_lines(where / "product_lines.yml")
    config = where / "data_sources.yml"
    config.write_text(demo_data.demo_config_text(f"sqlite:///{where / 'legacy.sqlite'}",
                                                 str(where / "product_lines.yml")),
                      encoding="utf-8")
    return config


def test_deploy_sql_file_is_what_init_db_print_sql_prints(tmp_path: Path) -> None:
    """deploy/sql/reference_tables.sql is generated: `refsync init-db --print-sql` for the
    seed's tables, the statements `--create-tables` runs (refsync.ddl)."""
    config = _demo_project(tmp_path)
    env = {**os.environ, "WDH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = subprocess.run(
        [sys.executable, "-m", "refsync", "init-db", "--print-sql", "-c", str(config)],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (DEPLOY / "sql" / "reference_tables.sql").read_text(encoding="utf-8")
    text = result.stdout
    assert '"产品线代码" varchar(20) NOT NULL' in text and '"产品线名称" varchar(100),' in text
    assert ('CREATE INDEX IF NOT EXISTS "ix_组合计划_年金计划号" ON "business"."组合计划" '
            '("年金计划号");') in text
    assert "CREATE INDEX IF NOT EXISTS \"ix_产品线_needs_review\"" in text
    assert " text" not in text, "every seed column has its length"


@pytest.mark.parametrize(
    ("declared", "expected"),
    [pytest.param("varchar(20)", "VARCHAR(20)", id="varchar"),
     pytest.param("numeric(12, 2)", "NUMERIC(12, 2)", id="numeric"),
     pytest.param("timestamptz", "TIMESTAMP WITH TIME ZONE", id="timestamptz"),
     pytest.param("BIGINT", "BIGINT", id="upper-case")],
)
def test_a_mapping_may_declare_the_column_type_init_db_creates(declared: str,
                                                               expected: str) -> None:
    from sqlalchemy.dialects import postgresql

    from refsync.config import ColumnMap
    from refsync.ddl import declared_type

    mapping = ColumnMap(source="a", target="a", type=declared)
    assert mapping.type is not None
    assert declared_type(mapping.type).compile(dialect=postgresql.dialect()) == expected


@pytest.mark.parametrize("declared", [pytest.param("varchar(20); DROP TABLE x", id="injection"),
                                      pytest.param("serial", id="serial"),
                                      pytest.param("geometry", id="unknown")])
def test_a_declared_type_refsync_cannot_create_is_a_config_error(declared: str) -> None:
    from pydantic import ValidationError

    from refsync.config import ColumnMap

    with pytest.raises(ValidationError, match="is not one of"):
        ColumnMap(source="a", target="a", type=declared)


# ---------------------------------------------------------------- status for the operator

STATUS_CONFIG = """\
reference_sync:
  timezone: Asia/Shanghai
  tables:
    - name: 产品线
      target_table: 产品线
      source_type: config_file
      source_config: {file_path: lines.yml, schema_version: "1.0"}
      sync_mode: delete_insert
      primary_key: 产品线代码
    - name: 组织架构
      target_table: 组织架构
      source_type: config_file
      source_config: {file_path: missing.yml, schema_version: "1.0",
                      columns: [{source: 组织代码, target: 组织代码}]}
      primary_key: 组织代码
"""


def _refsync(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "refsync", *args], cwd=project,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "TZ": "UTC"})


@pytest.fixture
def synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite project after one sync: 产品线 ok, 组织架构 skipped (its file is missing).
    Made in this process (the tests run `status` as the console script)."""
    (tmp_path / "refsync.yml").write_text(STATUS_CONFIG, encoding="utf-8")
    (tmp_path / "lines.yml").write_text(
        'schema_version: "1.0"\ndata:\n  - {产品线代码: PL01, 产品线名称: 企业年金}\n',
        encoding="utf-8")
    env = tmp_path / "refsync.env"
    env.write_text(f"WDH_DATABASE_URL=sqlite:///{tmp_path / 'w.db'}\n"
                   f"WDH_REFERENCE_SYNC_CONFIG={tmp_path / 'refsync.yml'}\n")
    env.chmod(0o640)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(app, ["init-db", "--create-tables", "--env-file", str(env)])
    assert made.exit_code == 0, made.output
    assert runner.invoke(app, ["sync", "--env-file", str(env)]).exit_code == 1
    monkeypatch.undo()
    return tmp_path


def test_status_problems_prints_one_line_a_table_with_class_and_error(synced: Path) -> None:
    result = _refsync(Path("/"), "status", "--problems", "--env-file",
                      str(synced / "refsync.env"))
    assert result.returncode == 1, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("组织架构: last run skipped [file_missing]: ")
    assert str(synced / "missing.yml") in line
    assert result.stderr == ""
    ok = _refsync(Path("/"), "status", "--problems", "-t", "产品线", "--env-file",
                  str(synced / "refsync.env"))
    assert (ok.returncode, ok.stdout) == (0, ""), "all is well: nothing to mail"


def test_status_json_times_carry_the_configured_zones_offset(synced: Path) -> None:
    result = _refsync(synced, "status", "--json", "--no-fail", "--env-file",
                      str(synced / "refsync.env"))
    doc = json.loads(result.stdout)
    times = [t[k] for t in doc["tables"] for k in ("last_started_at", "last_finished_at",
                                                   "last_success_at") if t[k]]
    times += [r[k] for r in doc["runs"] for k in ("started_at", "finished_at") if r[k]]
    assert len(times) >= 5
    assert all(t.endswith("+08:00") for t in times), times


def test_status_names_an_env_file_others_can_read_as_a_problem(synced: Path) -> None:
    env = synced / "refsync.env"
    env.chmod(0o644)
    result = _refsync(synced, "status", "--json", "-t", "产品线", "--env-file", str(env))
    assert result.returncode == 1
    assert json.loads(result.stdout)["problems"] == [
        f"env file {env} holds secrets and is readable by every user (mode 0644): "
        f"chmod 0640 {env}"]
    env.chmod(0o640)
    result = _refsync(synced, "status", "--json", "-t", "产品线", "--env-file", str(env))
    assert (result.returncode, json.loads(result.stdout)["problems"]) == (0, [])
