"""Start-up (issue 9): every command imports only what it uses, so `refsync --help` answers at
once and a small nightly run is dominated by the databases.

Each check runs the real entry point in a fresh interpreter and looks at `sys.modules` when it
exits: no timings (the machine is shared), only which modules were loaded, so a stray
module-level import cannot come back unnoticed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# the engine and its drivers, config/validation, the Rich renderer, installed metadata
ENGINE = ("sqlalchemy", "psycopg", "pymysql", "tenacity", "refsync.api", "refsync.state",
          "refsync.targets", "refsync.sources", "refsync.transform", "refsync.rules")
CONFIG = ("pydantic", "pydantic_settings", "yaml", "croniter", "asyncio", "refsync.config")
RICH = ("rich", "markdown_it", "pygments", "typer.rich_utils", "refsync.render")
METADATA = ("importlib.metadata", "email")
# what `status` must not load: it reads the state through the plain driver (targets.readonly)
NOT_FOR_STATUS = ("sqlalchemy", "pymysql", "tenacity", "refsync.api", "refsync.sources",
                  "refsync.transform", "refsync.rules", "refsync.targets.base")

# run `refsync ARGS...` as the console script does (after `setup`); write its exit code and
# `report` (a JSON field) to a file
HARNESS_TEMPLATE = """
import gc, json, sys
out, args = sys.argv[1], sys.argv[2:]
sys.argv = ["refsync", *args]
{setup}
code = 0
try:
    from refsync.cli import main
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
with open(out, "w", encoding="utf-8") as f:
    json.dump({{"exit_code": code, {report}}}, f)
"""
# the modules loaded
HARNESS = HARNESS_TEMPLATE.format(setup="", report='"modules": sorted(sys.modules)')


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("WDH_", "PYTHONWARNINGS", "TYPER_"))}


def run_fresh(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
              ) -> tuple[int, set[str], subprocess.CompletedProcess[str]]:
    """(exit code, modules loaded, the process) of `refsync ARGS` in a new interpreter."""
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", HARNESS, str(out), *args], cwd=tmp_path,
                          env={**_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=120)
    assert out.exists(), proc.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    return doc["exit_code"], set(doc["modules"]), proc


def loaded(modules: set[str], families: tuple[str, ...]) -> list[str]:
    """The modules of `families` (a package counts with its submodules) that were loaded."""
    return sorted(m for m in modules
                  if any(m == f or m.startswith(f + ".") for f in families))


def test_help_loads_no_engine_config_rich_or_metadata(tmp_path: Path) -> None:
    code, modules, proc = run_fresh(tmp_path, "--help")
    assert code == 0, proc.stderr
    assert "Usage: refsync" in proc.stdout and "sync-table" in proc.stdout
    assert loaded(modules, ENGINE + CONFIG + RICH + METADATA) == []


def test_no_arguments_is_help_and_loads_as_little(tmp_path: Path) -> None:
    code, modules, proc = run_fresh(tmp_path)
    assert code == 2 and "Usage: refsync" in proc.stdout
    assert loaded(modules, ENGINE + CONFIG + RICH + METADATA) == []


def test_version_reads_metadata_only(tmp_path: Path) -> None:
    from importlib.metadata import version

    code, modules, proc = run_fresh(tmp_path, "--version")
    assert code == 0, proc.stderr
    assert proc.stdout == f"refsync {version('refsync')}\n"
    assert loaded(modules, ENGINE + CONFIG + RICH) == []


@pytest.mark.parametrize("command", ["sync", "status", "schedule", "demo"])
def test_command_help_loads_no_engine_or_rich(tmp_path: Path, command: str) -> None:
    code, modules, proc = run_fresh(tmp_path, command, "--help")
    assert code == 0, proc.stderr
    assert f"Usage: refsync {command}" in proc.stdout
    assert loaded(modules, ENGINE + RICH + ("refsync.config", "pydantic_settings")) == []


def test_usage_error_is_plain_and_loads_no_rich(tmp_path: Path) -> None:
    code, modules, proc = run_fresh(tmp_path, "sync", "--no-such-option")
    assert code == 2
    assert "No such option: --no-such-option" in proc.stderr
    assert "╭" not in proc.stderr  # Click's plain error, not a Rich panel
    assert loaded(modules, ENGINE + RICH) == []


def _status_project(tmp_path: Path) -> Path:
    lines = tmp_path / "product_lines.yml"
    lines.write_text('schema_version: "1.0"\ndata:\n  - {code: "PL01", name: "企业年金"}\n',
                     encoding="utf-8")
    config = tmp_path / "cfg.yml"
    config.write_text(
        "reference_sync:\n"
        "  timezone: Asia/Shanghai\n"
        "  tables:\n"
        "    - name: 产品线\n"
        "      target_table: ref_product_line\n"
        "      source_type: config_file\n"
        f"      source_config: {{file_path: {json.dumps(str(lines))}, "
        'schema_version: "1.0"}\n'
        "      sync_mode: delete_insert\n"
        "      primary_key: code\n", encoding="utf-8")
    return config


def test_status_json_on_sqlite_loads_no_rich_and_no_server_driver(tmp_path: Path) -> None:
    config = _status_project(tmp_path)
    db = tmp_path / "w.sqlite"
    code, modules, proc = run_fresh(tmp_path, "status", "--json", "-c", str(config),
                                    env={"WDH_DATABASE_URL": f"sqlite:///{db}"})
    doc = json.loads(proc.stdout)
    assert code == doc["exit_code"] == 1, proc.stderr  # never synced: needs attention
    assert doc["tables"][0]["last_status"] == "never"
    assert loaded(modules, NOT_FOR_STATUS + RICH + ("psycopg",)) == []
    assert not db.exists()  # no file: nothing to read, and looking creates none


def test_status_reads_the_state_through_the_plain_driver(tmp_path: Path) -> None:
    """The state tables are read with sqlite3/psycopg alone: SQLAlchemy's import costs more
    than the whole answer (issue 9: `status` under half a second)."""
    config = _status_project(tmp_path)
    db = tmp_path / "w.sqlite"
    env = {"WDH_DATABASE_URL": f"sqlite:///{db}"}
    for command in ("init-db --create-tables", "sync --json"):
        code, modules, proc = run_fresh(tmp_path, *command.split(), "-c", str(config), env=env)
        assert code == 0, proc.stderr
    assert json.loads(proc.stdout)["tables"][0]["inserted"] == 1
    assert loaded(modules, RICH) == []  # a JSON sync draws nothing
    code, modules, proc = run_fresh(tmp_path, "status", "--json", "-c", str(config), env=env)
    doc = json.loads(proc.stdout)
    assert code == doc["exit_code"] == 0, proc.stderr
    table = doc["tables"][0]
    assert (table["last_status"], table["inserted"], table["read"]) == ("ok", 1, 1)
    assert doc["runs"][0]["table"] == "产品线" and doc["runs"][0]["status"] == "ok"
    assert loaded(modules, NOT_FOR_STATUS + RICH + ("psycopg",)) == []


def test_status_text_draws_with_rich(tmp_path: Path) -> None:
    config = _status_project(tmp_path)
    db = tmp_path / "w.sqlite"
    code, modules, proc = run_fresh(tmp_path, "status", "--no-fail", "-c", str(config),
                                    env={"WDH_DATABASE_URL": f"sqlite:///{db}"})
    assert code == 0, proc.stderr
    assert "never" in proc.stdout
    assert "refsync.render" in modules


def test_import_refsync_is_cheap_and_the_api_resolves_lazily(tmp_path: Path) -> None:
    code = ("import json, sys, refsync; "
            "print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120, check=True)
    assert loaded(set(json.loads(proc.stdout)), ENGINE + CONFIG + RICH + METADATA) == []

    import refsync
    from refsync import api, model

    assert refsync.sync is api.sync and refsync.plan is api.plan
    assert refsync.sync_table is api.sync_table and refsync.status is api.status
    assert refsync.init_db is api.init_db
    assert refsync.RunResult is model.RunResult and refsync.TableResult is model.TableResult
    assert set(refsync.__all__) <= set(dir(refsync))
    with pytest.raises(AttributeError):
        refsync.no_such_thing  # noqa: B018


# the console script's way out, driven in a fresh interpreter: `_exit_now(code)` after
# whatever the script set up (buffered output, atexit handlers, threads)
EXIT_HARNESS = """
import atexit, sys, threading, time
from pathlib import Path
from refsync.cli import _exit_now
out, case = Path(sys.argv[1]), sys.argv[2]
atexit.register(lambda: out.joinpath("atexit").write_text("ran", encoding="utf-8"))
sys.stdout.write("x" * 200_000)  # buffered, no newline: lost unless flushed
if case == "thread":  # a thread still at work: the ordinary exit waits for it
    def late() -> None:
        time.sleep(0.3)
        out.joinpath("thread").write_text("done", encoding="utf-8")
    threading.Thread(target=late).start()
    _exit_now(3)
elif case == "message":
    _exit_now("stopped: a message")
else:
    _exit_now(int(case))
"""


@pytest.mark.parametrize("case", ["0", "3", "130", "thread", "message"])
def test_console_exit_keeps_code_output_and_atexit(tmp_path: Path, case: str) -> None:
    """Issue 9: the console script leaves without Python's teardown (0.1-0.2 s a run), yet
    with the same exit code, every byte of its output, its atexit handlers run, and a live
    thread still waited for."""
    proc = subprocess.run([sys.executable, "-c", EXIT_HARNESS, str(tmp_path), case],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=120)
    want = {"thread": 3, "message": 1}.get(case) or int(case)
    assert proc.returncode == want, proc.stderr
    assert proc.stdout == "x" * 200_000
    assert (tmp_path / "atexit").read_text(encoding="utf-8") == "ran"
    if case == "thread":
        assert (tmp_path / "thread").read_text(encoding="utf-8") == "done"
    assert ("stopped: a message" in proc.stderr) == (case == "message")
    assert "Traceback" not in proc.stderr


def test_console_script_runs_through_the_quick_exit(tmp_path: Path) -> None:
    """`python -m refsync` (as the console script) ends through `console`: a usage error is
    still 2 with its message, a config error 2, and a whole JSON document reaches a pipe."""
    exe = [sys.executable, "-m", "refsync"]
    usage = subprocess.run([*exe, "sync", "--no-such-flag"], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "--no-such-flag" in usage.stderr
    missing = subprocess.run([*exe, "plan", "--json", "-c", str(tmp_path / "none.yml")],
                             cwd=tmp_path, env=_env(), capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2, missing.stderr
    config = tmp_path / "c.yml"
    config.write_text("reference_sync:\n  enabled: true\n  tables: []\n", encoding="utf-8")
    db = tmp_path / "t.db"
    status = subprocess.run([*exe, "status", "--json", "-c", str(config)], cwd=tmp_path,
                            env={**_env(), "WDH_DATABASE_URL": f"sqlite:///{db}"},
                            capture_output=True, text=True, timeout=120)
    assert status.returncode in (0, 1), status.stderr
    json.loads(status.stdout)


# a sync as the console script runs it (the cycle collector off), then the cyclic garbage
# it left: collected once, at the end
GARBAGE_HARNESS = HARNESS_TEMPLATE.format(setup="gc.disable()", report='"garbage": gc.collect()')


def _garbage_after_sync(root: Path, rows: int) -> tuple[int, dict[str, object]]:
    """(unreachable objects left, the run's JSON) after syncing `rows` SQLite rows, 50 a
    chunk; 50 of them rejected (a name too long for its column), whatever `rows`: the keys of
    rejected rows are kept to the end of the run (DESIGN 4.5), inside structures that are
    freed as a whole then."""
    import sqlite3

    import yaml

    root.mkdir()
    legacy, target = root / "legacy.sqlite", root / "w.sqlite"
    with sqlite3.connect(legacy) as conn:
        conn.execute("CREATE TABLE plan (code VARCHAR(20) PRIMARY KEY, name VARCHAR(100))")
        conn.executemany("INSERT INTO plan VALUES (?, ?)", [
            (f"P{i:06}", "x" * (30 if i % 10 == 0 and i < 500 else 5)) for i in range(rows)])
    conn.close()
    with sqlite3.connect(target) as conn:
        conn.execute('CREATE TABLE "plan" (code VARCHAR(20) PRIMARY KEY, name VARCHAR(20), '
                     "_source VARCHAR(20) NOT NULL DEFAULT 'authoritative', "
                     "_needs_review BOOLEAN NOT NULL DEFAULT 0, "
                     "_derived_from_domain VARCHAR(50), _derived_at TIMESTAMP)")
    conn.close()
    config = root / "c.yml"
    config.write_text(yaml.safe_dump({"reference_sync": {
        "enabled": True, "defaults": {"batch_size": 50},
        "tables": [{"name": "plan", "target_table": "plan", "source_type": "sql",
                    "source_config": {"url": f"sqlite:///{legacy}", "table": "plan",
                                      "columns": [{"source": "code", "target": "code"},
                                                  {"source": "name", "target": "name"}]},
                    "primary_key": "code"}]}}), encoding="utf-8")
    out = root / "garbage.json"
    proc = subprocess.run(
        [sys.executable, "-c", GARBAGE_HARNESS, str(out), "sync", "--json", "-c", str(config)],
        cwd=root, env={**_env(), "WDH_DATABASE_URL": f"sqlite:///{target}"},
        capture_output=True, text=True, timeout=120)
    assert out.exists(), proc.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    return int(doc["garbage"]), json.loads(proc.stdout)


def test_a_sync_leaves_no_cyclic_garbage_per_row_or_chunk(tmp_path: Path) -> None:
    """The console script turns the cycle collector off (issue 9: 50 ms of start-up). That
    holds only while a sync's garbage is freed by reference counting: ten times the rows and
    chunks must leave no more unreachable objects behind."""
    small, run_small = _garbage_after_sync(tmp_path / "small", 500)
    large, run_large = _garbage_after_sync(tmp_path / "large", 5000)
    for run, rows in ((run_small, 500), (run_large, 5000)):
        (table,) = run["tables"]  # type: ignore[attr-defined]
        assert (table["read"], table["rejected"]) == (rows, 50), table
    assert large <= small + 20, (small, large)
