"""deploy/README.md's install, performed as written, then a failing night, log rotation, an
upgrade with a roll-back, and the uninstall.

A throwaway directory stands in for `/` (its `opt/refsync`, `etc/refsync`, `var/log/refsync`,
`var/lib/refsync`), a throwaway system user for `refsync`; uv installs from a git copy of this
checkout with the local cache (no network); the wrapper runs as that user against a SQLite
target with a YAML-only config. The paths the wrapper defaults to (/etc/refsync, …) are given
to it through its REFSYNC_* settings, as a line in /etc/cron.d could. Needs root (CI runs as
root)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user: needs root"),
    pytest.mark.skipif(shutil.which("uv") is None or not Path("/usr/bin/python3").exists(),
                       reason="needs uv and /usr/bin/python3"),
]

CONFIG = """\
reference_sync:
  timezone: Asia/Shanghai
  tables:
    - name: 产品线
      target_table: ref_product_line
      source_type: config_file
      source_config: {file_path: reference_data/product_lines.yml, schema_version: "1.0"}
      sync_mode: delete_insert
      primary_key: 产品线代码
"""
LINES = """\
schema_version: "1.0"
description: 产品线
data:
  - {产品线代码: PL01, 产品线名称: 企业年金}
  - {产品线代码: PL02, 产品线名称: 职业年金}
"""


def sh(*args: str, user: str | None = None, env: dict[str, str] | None = None,
       cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    cmd = ([runuser, "-u", user, "--"] if user else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, check=False)


def ok(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = sh(*args, **kwargs)  # type: ignore[arg-type]
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


@dataclass
class Host:
    """The install, under `root` standing in for /."""

    root: Path
    user: str

    @property
    def code(self) -> Path:
        return self.root / "opt" / "refsync"

    @property
    def etc(self) -> Path:
        return self.root / "etc" / "refsync"

    @property
    def log(self) -> Path:
        return self.root / "var" / "log" / "refsync" / "refsync.log"

    @property
    def lib(self) -> Path:
        return self.root / "var" / "lib" / "refsync"

    @property
    def metrics(self) -> Path:
        return self.lib / "metrics" / "refsync.prom"

    @property
    def wrapper(self) -> str:
        return str(self.code / "deploy" / "cron" / "refsync-nightly.sh")

    def cron_env(self, **extra: str) -> dict[str, str]:
        """What cron gives a job (a bare PATH), plus the wrapper's paths under `root`."""
        return {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LANG": "C.UTF-8",
                "REFSYNC_ETC": str(self.etc), "REFSYNC_LOG": str(self.log),
                "REFSYNC_LOCK": str(self.lib / "refsync-nightly.lock"),
                "REFSYNC_METRICS_FILE": str(self.metrics), **extra}

    def nightly(self, **extra: str) -> subprocess.CompletedProcess[str]:
        return sh(self.wrapper, user=self.user, env=self.cron_env(**extra))

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]

    def uv_sync(self) -> None:
        """Step 2 (and the upgrade's): the venv from the lock, with the system Python."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
        env["UV_PYTHON_PREFERENCE"] = "only-system"
        ok("uv", "sync", "--locked", "--no-dev", "--no-editable", "--compile-bytecode",
           "--python", "/usr/bin/python3", "--offline", env=env, cwd=self.code)


@pytest.fixture(scope="module")
def user() -> Iterator[str]:
    name = f"rstest{uuid.uuid4().hex[:8]}"
    ok("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
       "--shell", "/usr/sbin/nologin", name)
    try:
        yield name
    finally:
        sh("userdel", name)
        sh("groupdel", name)


def _release(code: Path) -> None:
    """The code as a release checkout: this tree's files, committed in a git repository."""
    for item in ("pyproject.toml", "uv.lock", "README.md", ".gitignore"):
        shutil.copy2(ROOT / item, code / item)
    for item in ("src", "deploy"):
        shutil.copytree(ROOT / item, code / item,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    git = ["git", "-C", str(code), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    ok(*git, "init", "-q")
    ok(*git, "add", "-A")
    ok(*git, "commit", "-qm", "release 1")
    ok(*git, "tag", "v1")


@pytest.fixture(scope="module")
def host(user: str) -> Iterator[Host]:
    """Install steps 1-6 of deploy/README.md under a directory standing in for /."""
    base = Path(tempfile.mkdtemp(prefix="refsync-host-", dir="/tmp"))
    base.chmod(0o755)  # like /: anyone may traverse it
    h = Host(base, user)
    try:
        # 1. the code, owned by root
        ok("install", "-d", "-o", "root", "-g", "root", "-m", "0755", str(h.code))
        _release(h.code)
        # 2. an interpreter the service user can execute (offline: the local uv cache)
        h.uv_sync()
        # 3. config and secrets: root's, readable by the group
        ok("install", "-d", "-o", "root", "-g", user, "-m", "0750", str(h.etc),
           str(h.etc / "reference_data"))
        (h.etc / "data_sources.yml").write_text(CONFIG, encoding="utf-8")
        (h.etc / "reference_data" / "product_lines.yml").write_text(LINES, encoding="utf-8")
        ok("install", "-o", "root", "-g", user, "-m", "0640", "/dev/null",
           str(h.etc / "refsync.env"))
        (h.etc / "refsync.env").write_text(
            f"WDH_DATABASE_URL=sqlite:///{h.lib}/warehouse.db\n"
            "WDH_LEGACY_MYSQL_PASSWORD='pa$word'\n"
            f"WDH_REFERENCE_SYNC_CONFIG={h.etc}/data_sources.yml\n", encoding="utf-8")
        # 4. what the service writes: logs (private), state and metrics (node_exporter reads)
        ok("install", "-d", "-o", user, "-g", user, "-m", "0750", str(h.log.parent))
        ok("install", "-d", "-o", user, "-g", user, "-m", "0755", str(h.lib),
           str(h.metrics.parent))
        # 5. the operator's command
        ok("install", "-d", str(h.root / "usr" / "local" / "bin"))
        ok("install", "-o", "root", "-g", "root", "-m", "0755",
           str(h.code / "deploy" / "bin" / "refsync"), str(h.root / "usr/local/bin/refsync"))
        # 6. the tables (as the service user, from the config directory)
        ok(str(h.code / ".venv/bin/refsync"), "init-db", "--create-tables", "--env-file",
           str(h.etc / "refsync.env"), user=user, env=h.cron_env(), cwd=h.etc)
        yield h
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_venv_needs_nothing_from_roots_home(host: Host) -> None:
    assert (host.code / ".venv" / "bin" / "refsync").read_text().startswith(
        f"#!{host.code}/.venv/bin/python")
    assert "home = /usr/bin" in (host.code / ".venv" / "pyvenv.cfg").read_text()
    assert list((host.code / ".venv").glob("lib/python3*/site-packages/refsync/__pycache__/*.pyc"))


def test_install_as_written_runs_the_nightly_job_as_the_service_user(host: Host) -> None:
    run = host.nightly()
    assert run.returncode == 0, run.stderr + host.log.read_text()
    assert run.stdout == run.stderr == "", "a good night is silent (cron mails any output)"
    events = host.events()
    assert events[0]["event"] == "nightly.start" and "refsync" in str(events[0]["msg"])
    assert events[-1]["event"] == "nightly.finish" and events[-1]["exit_code"] == 0
    assert all(str(e["ts"]).endswith("+08:00") for e in events), "one zone in the log"
    done = [e for e in events if e["event"] == "table_done"]
    assert [(e["table"], e["status"], e["inserted"]) for e in done] == [("产品线", "ok", 2)]
    with sqlite3.connect(host.lib / "warehouse.db") as conn:
        assert conn.execute("SELECT count(*) FROM ref_product_line").fetchone() == (2,)
    conn.close()
    for path in (host.log, host.lib / "refsync-nightly.lock"):
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o640, path
        assert sh("stat", "-c", "%U", str(path)).stdout.strip() == host.user
    # node_exporter (another user) reads the metrics
    metrics = ok("cat", str(host.metrics), user="nobody").stdout
    assert 'refsync_up{table="产品线"} 1' in metrics


def test_status_from_any_directory_as_root_through_the_launcher(host: Host) -> None:
    launcher = str(host.root / "usr/local/bin/refsync")
    env = {"PATH": "/usr/bin:/bin", "REFSYNC_HOME": str(host.code),
           "REFSYNC_ENV_FILE": str(host.etc / "refsync.env")}
    status = ok(launcher, "status", "--json", env=env, cwd=Path("/"))
    assert json.loads(status.stdout)["tables"][0]["last_status"] == "ok"
    assert ok(launcher, "--version", env=env).stdout.startswith("refsync ")


def test_prestart_failures_exit_4_with_a_json_line(host: Host) -> None:
    secret = host.root / "root-only.env"
    secret.write_text("WDH_DATABASE_URL=sqlite:////nonexistent.db\n")
    secret.chmod(0o600)
    bad_python = host.lib / "refsync-from-roots-home"
    bad_python.write_text("#!/root/.local/share/uv/python/bin/python3\n")
    bad_python.chmod(0o755)
    exporter = host.root / "var/lib/prometheus/node-exporter"  # root's, as Debian ships it
    exporter.mkdir(parents=True)
    cases = {
        "cannot read the env file": {"REFSYNC_ENV_FILE": str(secret)},
        "cannot start refsync": {"REFSYNC_BIN": str(bad_python)},
        "cannot write the log": {"REFSYNC_LOG": "/root/refsync/refsync.log"},
        "cannot create or write the metrics directory /root/node-exporter": {
            "REFSYNC_METRICS_FILE": "/root/node-exporter/refsync.prom"},
        f"cannot create or write the metrics directory {exporter}": {
            "REFSYNC_METRICS_FILE": str(exporter / "refsync.prom")},
    }
    for message, extra in cases.items():
        result = host.nightly(**extra)
        assert result.returncode == 4, (message, result.stderr)
        (line,) = result.stderr.splitlines()
        event = json.loads(line)
        assert event["event"] == "nightly.prestart_failed" and event["exit_code"] == 4
        assert message in event["msg"]


def test_the_wrapper_refuses_root_and_leaves_no_root_owned_file(host: Host) -> None:
    before = sorted(str(p) for p in host.root.rglob("*"))
    result = sh(host.wrapper, env=host.cron_env())
    assert result.returncode == 4
    assert json.loads(result.stderr)["msg"].startswith("refusing to run as root")
    assert sorted(str(p) for p in host.root.rglob("*")) == before
    assert host.nightly().returncode == 0, "the next run as the service user works"


@dataclass
class PingServer:
    url: str
    paths: list[str]


@pytest.fixture
def ping_server() -> Iterator[PingServer]:
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            paths.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()
    try:
        yield PingServer(f"http://127.0.0.1:{server.server_address[1]}/ping/u1", paths)
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_night_pages_and_mails_refsyncs_problem_lines(host: Host,
                                                               ping_server: PingServer) -> None:
    data = host.etc / "reference_data" / "product_lines.yml"
    data.rename(data.with_suffix(".bak"))
    try:
        result = host.nightly(WDH_REFERENCE_SYNC_PING_URL=ping_server.url)
    finally:
        data.with_suffix(".bak").rename(data)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"refsync-nightly: refsync sync exited 1; details in {host.log}"
    assert lines[1].startswith("  产品线: last run skipped [file_missing]: ")
    assert str(data) in lines[1]
    assert ping_server.paths == ["/ping/u1/start", "/ping/u1/fail", "/ping/u1/fail"], (
        "refsync pings start and fail; the wrapper pings fail on every failing exit")
    assert host.nightly(WDH_REFERENCE_SYNC_PING_URL=ping_server.url).returncode == 0
    assert ping_server.paths[3:] == ["/ping/u1/start", "/ping/u1"], "a good night: no /fail"


def test_logrotate_rotates_the_log_keeping_its_owner_and_mode(host: Host, tmp_path: Path) -> None:
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(logrotate).exists():
        pytest.skip("logrotate is not installed")
    conf = tmp_path / "refsync"
    conf.write_text((ROOT / "deploy/logrotate/refsync").read_text()
                    .replace("/var/log/refsync/refsync.log", str(host.log))
                    .replace("su refsync refsync", f"su {host.user} {host.user}"))
    conf.chmod(0o644)
    before = host.log.read_text(encoding="utf-8")
    ok(logrotate, "--force", "--state", str(tmp_path / "state"), str(conf))
    rotated = host.log.with_name("refsync.log.1")
    assert rotated.read_text(encoding="utf-8") == before
    assert host.log.read_text() == ""
    for path in (host.log, rotated):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
        assert sh("stat", "-c", "%U", str(path)).stdout.strip() == host.user
    assert host.nightly().returncode == 0, "the next run appends to the live file"
    assert host.events()[-1]["event"] == "nightly.finish"


def test_upgrade_and_roll_back_keep_config_state_and_logs(host: Host) -> None:
    """deploy/README.md "Upgrade": a new release in the checkout (`git clean -fdx` cannot
    touch what lives outside it), `uv sync --locked`, check the version, run; roll back."""
    git = ["git", "-C", str(host.code), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    (host.code / "README.md").write_text("release 2\n")
    ok(*git, "commit", "-qam", "release 2")
    ok(*git, "tag", "v2")
    runs_before = _runs(host)
    for tag in ("v2", "v1"):  # upgrade, then roll back
        ok(*git, "checkout", "-q", tag)
        ok(*git, "clean", "-qfdx")
        host.uv_sync()
        assert ok(str(host.code / ".venv/bin/refsync"), "--version").stdout.startswith("refsync ")
        assert host.nightly().returncode == 0
    assert (host.etc / "refsync.env").exists() and host.log.exists()
    assert _runs(host) == runs_before + 2, "the state tables kept every run"


def _runs(host: Host) -> int:
    with sqlite3.connect(host.lib / "warehouse.db") as conn:
        (count,) = conn.execute("SELECT count(*) FROM refsync_sync_runs").fetchone()
    conn.close()
    return int(count)


def test_uninstall_leaves_nothing_of_the_service_user(host: Host) -> None:
    """deploy/README.md "Uninstall", after the other steps of this module."""
    for path in ("usr/local/bin/refsync", "opt/refsync", "etc/refsync", "var/log/refsync",
                 "var/lib/refsync"):
        ok("rm", "-rf", str(host.root / path))
    ok("userdel", host.user)
    assert sh("id", host.user).returncode != 0
    assert ok("find", str(host.root), "-nouser").stdout == "", "no file of the user is left"
