"""deploy/README.md's install, performed as written: a throwaway directory stands in for
/opt/refsync, a throwaway system user for `refsync`; uv installs from this checkout with the
local cache (no network); then the wrapper runs as that user against a SQLite target with a
YAML-only config, and its pre-start failures exit 4. Needs root (CI runs as root)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
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
      source_config: {file_path: config/product_lines.yml, schema_version: "1.0"}
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
       cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    cmd = ([runuser, "-u", user, "--"] if user else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, check=False)


def cron_env(**extra: str) -> dict[str, str]:
    """What cron gives a job: a bare PATH and not much else."""
    return {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LANG": "C.UTF-8", **extra}


@pytest.fixture(scope="module")
def user() -> Iterator[str]:
    name = f"rstest{uuid.uuid4().hex[:8]}"
    made = sh("useradd", "--system", "--user-group", "--no-create-home",
              "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name)
    assert made.returncode == 0, made.stderr
    try:
        yield name
    finally:
        sh("userdel", name)
        sh("groupdel", name)


@pytest.fixture(scope="module")
def opt(user: str) -> Iterator[Path]:
    """Steps 1-4 of deploy/README.md in a directory standing in for /opt/refsync."""
    base = Path(tempfile.mkdtemp(prefix="refsync-opt-", dir="/tmp"))
    base.chmod(0o755)  # like /opt: anyone may traverse it
    home = base / "refsync"
    try:
        # 1. the code, owned by root
        assert sh("install", "-d", "-o", "root", "-g", "root", "-m", "0755",
                  str(home)).returncode == 0
        for item in ("pyproject.toml", "uv.lock", "README.md"):
            shutil.copy2(ROOT / item, home / item)
        for item in ("src", "deploy"):
            shutil.copytree(ROOT / item, home / item,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (home / "config").mkdir()
        (home / "config" / "data_sources.yml").write_text(CONFIG, encoding="utf-8")
        (home / "config" / "product_lines.yml").write_text(LINES, encoding="utf-8")
        # 2. an interpreter the service user can execute (offline: the local uv cache)
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
        env["UV_PYTHON_PREFERENCE"] = "only-system"
        synced = sh("uv", "sync", "--locked", "--no-dev", "--no-editable", "--compile-bytecode",
                    "--python", "/usr/bin/python3", "--offline", env=env, cwd=home, timeout=180)
        assert synced.returncode == 0, synced.stderr
        # 3. directories the service writes
        assert sh("install", "-d", "-o", user, "-g", user, "-m", "0750",
                  str(home / "logs"), str(home / "state")).returncode == 0
        # 4. settings: root:refsync 0640, with a `$` in a password (the shell never sees it)
        assert sh("install", "-o", "root", "-g", user, "-m", "0640", "/dev/null",
                  str(home / ".env")).returncode == 0
        (home / ".env").write_text(
            f"WDH_DATABASE_URL=sqlite:///{home}/state/warehouse.db\n"
            "WDH_LEGACY_MYSQL_PASSWORD='pa$word'\n"
            f"WDH_REFERENCE_SYNC_CONFIG={home}/config/data_sources.yml\n", encoding="utf-8")
        yield home
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_venv_needs_nothing_from_roots_home(opt: Path) -> None:
    assert (opt / ".venv" / "bin" / "refsync").read_text().startswith(
        f"#!{opt}/.venv/bin/python")
    assert "home = /usr/bin" in (opt / ".venv" / "pyvenv.cfg").read_text()
    assert list((opt / ".venv").glob("lib/python3*/site-packages/refsync/__pycache__/*.pyc"))


def test_install_as_written_runs_the_nightly_job_as_the_service_user(opt: Path,
                                                                     user: str) -> None:
    # 5. init-db, then the wrapper once as the service user: it must succeed
    init = sh(str(opt / ".venv/bin/refsync"), "init-db", "--create-tables",
              "--env-file", str(opt / ".env"), user=user, env=cron_env(), cwd=opt)
    assert init.returncode == 0, init.stderr
    run = sh(str(opt / "deploy/cron/refsync-nightly.sh"), user=user, env=cron_env())
    assert run.returncode == 0, run.stderr + (opt / "logs/refsync.log").read_text()
    assert run.stdout == run.stderr == "", "a good night is silent (cron mails any output)"
    events = [json.loads(line) for line in
              (opt / "logs/refsync.log").read_text(encoding="utf-8").splitlines()]
    assert events[0]["event"] == "nightly.start" and "refsync" in events[0]["msg"]
    assert events[-1]["event"] == "nightly.finish" and events[-1]["exit_code"] == 0
    done = [e for e in events if e["event"] == "table_done"]
    assert [(e["table"], e["status"], e["inserted"]) for e in done] == [("产品线", "ok", 2)]
    with sqlite3.connect(opt / "state/warehouse.db") as conn:
        assert conn.execute("SELECT count(*) FROM ref_product_line").fetchone() == (2,)
    conn.close()
    metrics = (opt / "state/refsync.prom").read_text(encoding="utf-8")
    assert 'refsync_up{table="产品线"} 1' in metrics
    # status from any directory, once the env file names the config
    status = sh(str(opt / ".venv/bin/refsync"), "status", "--json", "--env-file",
                str(opt / ".env"), user=user, env=cron_env(), cwd=Path("/"))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["tables"][0]["last_status"] == "ok"


def test_prestart_failures_exit_4_with_a_json_line(opt: Path, user: str) -> None:
    wrapper = str(opt / "deploy/cron/refsync-nightly.sh")
    secret = opt / "root-only.env"
    secret.write_text("WDH_DATABASE_URL=sqlite:////nonexistent.db\n")
    secret.chmod(0o600)
    bad_python = opt / "state" / "refsync-from-roots-home"
    bad_python.write_text("#!/root/.local/share/uv/python/bin/python3\n")
    bad_python.chmod(0o755)
    cases = {
        "cannot read the env file": cron_env(REFSYNC_ENV_FILE=str(secret)),
        "cannot start refsync": cron_env(REFSYNC_BIN=str(bad_python)),
        "cannot write the log": cron_env(REFSYNC_LOG="/root/refsync/refsync.log"),
    }
    for message, env in cases.items():
        result = sh(wrapper, user=user, env=env)
        assert result.returncode == 4, (message, result.stderr)
        (line,) = result.stderr.splitlines()
        event = json.loads(line)
        assert event["event"] == "nightly.prestart_failed" and event["exit_code"] == 4
        assert message in event["msg"]
