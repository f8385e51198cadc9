"""The command line contract (DESIGN 2, 2.1, 2.2, 4.8) through Typer's CliRunner.

Everything runs on SQLite: the target is a SQLite file (WDH_DATABASE_URL), one table reads a
SQLite "legacy" file through `source_type: sql`, the other a product-lines YAML file. No server.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from refsync.cli import app

RUN_KEY = re.compile(r"^reference_sync_\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00$")
TOP_KEYS = ["run_key", "plan_only", "exit_code", "tables", "version"]
TABLE_KEYS = ["name", "target", "source_type", "mode", "incremental", "status", "error_class",
              "error", "read", "inserted", "updated", "deleted", "unchanged", "promoted",
              "rejected", "rejects", "attempts", "duration_s", "watermark"]
COUNTS = ["read", "inserted", "updated", "deleted", "unchanged", "promoted", "rejected"]
STATE_TABLES = {"refsync_sync_state", "refsync_sync_runs"}
COMMANDS = ["plan", "sync", "sync-table", "status", "init-db", "verify", "schedule", "demo"]

ANNUITY = "年金计划"
LINES = "产品线"
LINES_TARGET = "ref_product_line"  # target_table differs from name, to tell them apart
LEGACY_ROWS = 10
LAST_UPDATED = "2024-05-01T12:00:10"


# ---------------------------------------------------------------- the project under test


@dataclass
class Project:
    root: Path
    legacy: Path
    lines: Path
    config: Path
    db: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    def section(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "schedule": "0 1 * * *",
            "timezone": "Asia/Shanghai",
            "defaults": {"retry": {"attempts": 0, "backoff": [0]}},
            "tables": [
                {"name": ANNUITY, "target_table": ANNUITY, "target_schema": "business",
                 "source_type": "sql",
                 "source_config": {
                     "url": f"sqlite:///{self.legacy}", "table": "annuity_plan",
                     "columns": [{"source": "plan_code", "target": "年金计划号"},
                                 {"source": "plan_name", "target": "计划名称"}],
                     "incremental": {"updated_at_column": "updated_at"}},
                 "sync_mode": "upsert", "primary_key": "年金计划号"},
                {"name": LINES, "target_table": LINES_TARGET, "target_schema": "business",
                 "source_type": "config_file",
                 "source_config": {"file_path": str(self.lines), "schema_version": "1.0"},
                 "sync_mode": "delete_insert", "primary_key": "产品线代码"},
            ],
        }

    def write_config(self, section: dict[str, Any] | None = None, *,
                     path: Path | None = None) -> Path:
        path = path or self.config
        doc = {"other_job": {"ignored": True},
               "reference_sync": section if section is not None else self.section()}
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False),
                        encoding="utf-8")
        return path

    def legacy_sql(self, sql: str, *params: Any) -> None:
        with sqlite3.connect(self.legacy) as conn:
            conn.execute(sql, params)
        conn.close()

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        return query(self.db, f'SELECT * FROM "{table}" ORDER BY 1')

    def tables(self) -> set[str]:
        if not self.db.exists():
            return set()
        return {r[0] for r in query(self.db, "SELECT name FROM sqlite_master WHERE type='table'")}

    def runs(self) -> list[tuple[Any, ...]]:
        return query(self.db, "SELECT run_key, table_name, status FROM refsync_sync_runs")


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def make_project(root: Path) -> Project:
    legacy = root / "legacy.sqlite"
    with sqlite3.connect(legacy) as conn:
        conn.execute("CREATE TABLE annuity_plan (plan_code VARCHAR(20) PRIMARY KEY, "
                     "plan_name VARCHAR(100), updated_at DATETIME)")
        conn.executemany("INSERT INTO annuity_plan VALUES (?, ?, ?)", [
            (f"P{i:03}", f"计划{i}", f"2024-05-01 12:00:{i:02}")
            for i in range(1, LEGACY_ROWS + 1)])
    conn.close()
    lines = root / "product_lines.yml"
    lines.write_text(
        'schema_version: "1.0"\n'
        "description: 产品线 reference data\n"
        "data:\n"
        '  - {产品线代码: "PL01", 产品线名称: "企业年金"}\n'
        '  - {产品线代码: "PL02", 产品线名称: "职业年金"}\n'
        '  - {产品线代码: "PL03", 产品线名称: "养老保障"}\n', encoding="utf-8")
    project = Project(root=root, legacy=legacy, lines=lines, config=root / "cfg.yml",
                      db=root / "w.sqlite")
    project.write_config()
    return project


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No WDH_* variables from outside, and no stray .env: the working directory is tmp."""
    for key in list(os.environ):
        if key.startswith("WDH_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


Invoke = Callable[..., Result]


@pytest.fixture
def cli(project: Project) -> Invoke:
    """Run `refsync ARGS` in-process; `-c <config>` is added unless given (or config=False).

    Every call checks the two things no command may ever do: crash with an exception (which
    a user would see as a traceback) or print "Traceback".
    """

    def invoke(*args: Any, env: dict[str, str | None] | None = None,
               config: bool = True) -> Result:
        argv = [str(a) for a in args]
        takes_config = argv and argv[0] in COMMANDS and argv[0] != "demo"
        if config and takes_config and not {"-c", "--config"} & set(argv):
            argv += ["-c", str(project.config)]
        full_env: dict[str, str | None] = {"WDH_DATABASE_URL": project.url, **(env or {})}
        result = CliRunner().invoke(app, argv, env=full_env)
        check_no_crash(result, argv)
        return result

    return invoke


def check_no_crash(result: Result, argv: Sequence[str]) -> None:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        shown = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
        raise AssertionError(f"refsync {' '.join(argv)} raised {result.exception!r}:\n{shown}"
                             f"\nstderr:\n{result.stderr}")
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


def doc_of(result: Result) -> dict[str, Any]:
    """stdout holds exactly one JSON document and nothing else."""
    try:
        doc = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc}):\n{result.stdout}"
                             f"\nstderr:\n{result.stderr}") from None
    assert isinstance(doc, dict)
    return doc


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in doc["tables"]}


@pytest.fixture
def ready(cli: Invoke, project: Project) -> Project:
    """Target tables and state tables created."""
    result = cli("init-db", "--create-tables")
    assert result.exit_code == 0, result.stderr
    return project


@pytest.fixture
def synced(cli: Invoke, ready: Project) -> dict[str, Any]:
    """One successful sync; its --json document."""
    result = cli("sync", "--json")
    assert result.exit_code == 0, result.stderr
    return doc_of(result)


@pytest.fixture
def lock(project: Project) -> Iterator[Path]:
    """Hold the SQLite run lock, as another refsync run would."""
    path = project.db.with_name(project.db.name + ".refsync.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield path
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------- help and entry points


def test_help_lists_every_command(cli: Invoke) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_the_common_options(cli: Invoke, command: str) -> None:
    result = cli(command, "--help", config=False)
    assert result.exit_code == 0, result.stderr
    options = ["--json", "--log-format", "--verbose", "--quiet"]
    if command != "demo":
        options += ["--config", "--env-file"]
    for option in options:
        assert option in result.stdout, (command, option)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WDH_")}


def test_python_dash_m_refsync_help(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "refsync", "--help"], cwd=tmp_path,
                          env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert name in proc.stdout


def test_console_script_help(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("refsync")
    assert script.exists(), f"the refsync console script is not installed beside {sys.executable}"
    proc = subprocess.run([str(script), "--help"], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: refsync" in proc.stdout
    for name in COMMANDS:
        assert name in proc.stdout


def test_console_script_config_error_has_no_traceback(project: Project) -> None:
    """The real entry point (not CliRunner): a bad config is a message and exit 2."""
    project.config.write_text("reference_sync:\n  tables: [\n", encoding="utf-8")
    script = Path(sys.executable).with_name("refsync")
    env = {**_clean_env(), "WDH_DATABASE_URL": project.url}
    proc = subprocess.run([str(script), "sync", "-c", str(project.config)], cwd=project.root,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert str(project.config) in proc.stderr
    assert not project.db.exists()


# ---------------------------------------------------------------- init-db


def test_init_db_creates_state_and_target_tables(cli: Invoke, project: Project) -> None:
    result = cli("init-db", "--create-tables")
    assert result.exit_code == 0, result.stderr
    assert project.tables() >= STATE_TABLES | {ANNUITY, LINES_TARGET}
    columns = {r[1] for r in query(project.db, f'PRAGMA table_info("{ANNUITY}")')}
    assert columns == {"年金计划号", "计划名称", "_source", "_needs_review",
                       "_derived_from_domain", "_derived_at"}
    assert project.rows(ANNUITY) == []


def test_init_db_without_create_tables_only_makes_state_tables(cli: Invoke,
                                                               project: Project) -> None:
    result = cli("init-db")
    assert result.exit_code == 0, result.stderr
    assert project.tables() == STATE_TABLES


def test_init_db_is_idempotent(cli: Invoke, project: Project,
                               synced: dict[str, Any]) -> None:
    before = (project.rows(ANNUITY), project.rows(LINES_TARGET), project.runs())
    for _ in range(2):
        result = cli("init-db", "--create-tables")
        assert result.exit_code == 0, result.stderr
        assert "exists" in result.stdout
    assert (project.rows(ANNUITY), project.rows(LINES_TARGET), project.runs()) == before
    result = cli("init-db", "--create-tables", "--json")
    assert result.exit_code == 0
    assert doc_of(result)["exit_code"] == 0


# ---------------------------------------------------------------- sync: exit 0 and --json


def test_sync_json_document(cli: Invoke, ready: Project) -> None:
    result = cli("sync", "--json")
    assert result.exit_code == 0, result.stderr
    doc = doc_of(result)
    assert list(doc) == TOP_KEYS
    assert RUN_KEY.match(doc["run_key"]), doc["run_key"]
    assert doc["plan_only"] is False
    assert doc["exit_code"] == 0
    assert [t["name"] for t in doc["tables"]] == [ANNUITY, LINES]
    for table in doc["tables"]:
        assert list(table) == TABLE_KEYS
        assert table["status"] == "ok"
        assert table["error_class"] is None and table["error"] is None
        assert table["rejects"] == []
        assert table["attempts"] == 1
        assert isinstance(table["duration_s"], float) and table["duration_s"] >= 0
        assert table["read"] == sum(table[c] for c in COUNTS[1:] if c != "deleted")
    annuity, lines = doc["tables"]
    assert annuity == {**annuity, "target": f"business.{ANNUITY}", "source_type": "sql",
                       "mode": "upsert", "incremental": True, "read": LEGACY_ROWS,
                       "inserted": LEGACY_ROWS, "updated": 0, "deleted": 0, "unchanged": 0,
                       "promoted": 0, "rejected": 0, "watermark": LAST_UPDATED}
    assert lines == {**lines, "target": f"business.{LINES_TARGET}",
                     "source_type": "config_file", "mode": "delete_insert",
                     "incremental": False, "read": 3, "inserted": 3, "watermark": None}
    assert len(ready.rows(ANNUITY)) == LEGACY_ROWS
    assert len(ready.rows(LINES_TARGET)) == 3


def test_second_sync_is_unchanged_and_exits_0(cli: Invoke, synced: dict[str, Any]) -> None:
    result = cli("sync", "--json")
    assert result.exit_code == 0, result.stderr
    doc = doc_of(result)
    assert doc["exit_code"] == 0
    assert [t["status"] for t in doc["tables"]] == ["unchanged", "unchanged"]
    for table in doc["tables"]:
        assert table["inserted"] == table["updated"] == table["deleted"] == 0
        assert table["unchanged"] == table["read"] > 0
    assert doc["run_key"] != synced["run_key"]


def test_sync_text_prints_the_run_key_first_and_a_summary(cli: Invoke, ready: Project) -> None:
    result = cli("sync")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert RUN_KEY.match(lines[0]), lines[0]
    for word in (ANNUITY, LINES, "ok", "upsert", "delete_insert", LAST_UPDATED):
        assert word in result.stdout


def test_sync_creates_missing_state_tables(cli: Invoke, project: Project) -> None:
    with sqlite3.connect(project.db) as conn:
        conn.execute(f'CREATE TABLE "{ANNUITY}" ("年金计划号" VARCHAR(20) PRIMARY KEY, '
                     '"计划名称" VARCHAR(100), "_source" VARCHAR(20), "_needs_review" BOOLEAN, '
                     '"_derived_from_domain" VARCHAR(50), "_derived_at" TIMESTAMP)')
    conn.close()
    result = cli("sync", "-t", ANNUITY, "--json")
    assert result.exit_code == 0, result.stderr
    assert STATE_TABLES <= project.tables()
    assert len(project.runs()) == 1


def test_env_file_supplies_the_database_url(cli: Invoke, ready: Project) -> None:
    env_file = ready.root / "prod.env"
    env_file.write_text(f"WDH_DATABASE_URL={ready.url}\n", encoding="utf-8")
    result = cli("sync", "--json", "--env-file", env_file, env={"WDH_DATABASE_URL": None})
    assert result.exit_code == 0, result.stderr
    assert len(ready.rows(ANNUITY)) == LEGACY_ROWS


def test_dot_env_in_the_working_directory_is_read(cli: Invoke, ready: Project) -> None:
    (ready.root / ".env").write_text(f"WDH_DATABASE_URL={ready.url}\n", encoding="utf-8")
    result = cli("sync", "--json", env={"WDH_DATABASE_URL": None})
    assert result.exit_code == 0, result.stderr


def test_config_from_the_environment_variable(cli: Invoke, ready: Project) -> None:
    result = cli("sync", "--json", config=False,
                 env={"WDH_REFERENCE_SYNC_CONFIG": str(ready.config)})
    assert result.exit_code == 0, result.stderr
    assert len(doc_of(result)["tables"]) == 2


def test_default_config_path_is_config_data_sources_yml(cli: Invoke, ready: Project) -> None:
    (ready.root / "config").mkdir()
    ready.write_config(path=ready.root / "config" / "data_sources.yml")
    result = cli("sync", "--json", config=False)
    assert result.exit_code == 0, result.stderr
    assert len(doc_of(result)["tables"]) == 2


# ---------------------------------------------------------------- exit 1


def test_missing_yaml_file_skips_that_table_and_exits_1(cli: Invoke, ready: Project) -> None:
    ready.lines.unlink()
    result = cli("sync", "--json")
    assert result.exit_code == 1
    doc = doc_of(result)
    assert doc["exit_code"] == 1
    tables = by_name(doc)
    assert tables[ANNUITY]["status"] == "ok"
    assert tables[LINES]["status"] == "skipped"
    assert tables[LINES]["error_class"] == "file_missing"
    assert str(ready.lines) in tables[LINES]["error"]
    assert len(ready.rows(ANNUITY)) == LEGACY_ROWS  # the others were done
    assert ready.rows(LINES_TARGET) == []


def test_missing_yaml_file_text_mode(cli: Invoke, ready: Project) -> None:
    ready.lines.unlink()
    result = cli("sync")
    assert result.exit_code == 1
    assert "skipped" in result.stdout
    assert str(ready.lines) in result.stderr


def test_rejected_rows_with_on_invalid_fail_exit_1(cli: Invoke, ready: Project) -> None:
    ready.legacy_sql("INSERT INTO annuity_plan VALUES ('PX', ?, '2024-06-01 00:00:00')", "长" * 150)
    result = cli("sync", "--json")
    assert result.exit_code == 1
    doc = doc_of(result)
    annuity = by_name(doc)[ANNUITY]
    assert annuity["status"] == "failed"
    assert annuity["error_class"] == "invalid"
    assert annuity["rejected"] == 1
    assert annuity["read"] == LEGACY_ROWS + 1
    assert annuity["inserted"] == LEGACY_ROWS  # what it would have done
    [reject] = annuity["rejects"]
    assert set(reject) == {"key", "column", "value", "reason"}
    assert reject["key"] == {"年金计划号": "PX"}
    assert reject["column"] == "计划名称"
    assert len(reject["value"]) <= 80
    assert ready.rows(ANNUITY) == []  # nothing of it was applied
    assert by_name(doc)[LINES]["status"] == "ok"
    assert len(ready.rows(LINES_TARGET)) == 3


def test_rejected_rows_with_on_invalid_skip_exit_0(cli: Invoke, ready: Project) -> None:
    section = ready.section()
    section["defaults"]["on_invalid"] = "skip"
    ready.write_config(section)
    ready.legacy_sql("INSERT INTO annuity_plan VALUES ('PX', ?, '2024-06-01 00:00:00')", "长" * 150)
    result = cli("sync", "--json")
    assert result.exit_code == 0, result.stderr
    annuity = by_name(doc_of(result))[ANNUITY]
    assert (annuity["status"], annuity["rejected"], annuity["inserted"]) == ("ok", 1, LEGACY_ROWS)
    assert len(annuity["rejects"]) == 1
    assert len(ready.rows(ANNUITY)) == LEGACY_ROWS


@pytest.mark.parametrize("data", ["data: []", "data:", ""])
def test_empty_yaml_data_is_no_rows(cli: Invoke, ready: Project, data: str) -> None:
    """DESIGN 3.2: `data` empty or null means no rows, not a crash."""
    ready.lines.write_text(f'schema_version: "1.0"\n{data}\n', encoding="utf-8")
    result = cli("sync", "--json", "-t", LINES)
    assert result.exit_code == 0, result.stderr
    lines = by_name(doc_of(result))[LINES]
    assert (lines["status"], lines["read"]) == ("unchanged", 0)


def test_guarded_table_exits_1(cli: Invoke, synced: dict[str, Any], project: Project) -> None:
    project.lines.write_text('schema_version: "1.0"\ndata: []\n', encoding="utf-8")
    result = cli("sync", "--json", "-t", LINES)
    assert result.exit_code == 1
    lines = by_name(doc_of(result))[LINES]
    assert lines["status"] == "guarded"
    assert len(project.rows(LINES_TARGET)) == 3
    result = cli("sync", "--json", "-t", LINES, "--allow-mass-delete")
    assert result.exit_code == 0, result.stderr
    assert project.rows(LINES_TARGET) == []


# ---------------------------------------------------------------- exit 2


def _bad_yaml(p: Project) -> None:
    p.config.write_text("reference_sync:\n  tables: [\n", encoding="utf-8")


def _unknown_key(p: Project) -> None:
    section = p.section()
    section["tables"][1]["primary_keys"] = section["tables"][1].pop("primary_key")
    p.write_config(section)


CONFIG_ERRORS: dict[str, tuple[Callable[[Project], None], list[str], dict[str, str | None]]] = {
    "bad_yaml": (_bad_yaml, ["not valid YAML", "line 3, column 1"], {}),
    "unknown_key": (_unknown_key, [
        f"reference_sync.tables[1].primary_keys (table {LINES}): unknown key"], {}),
    "no_database_url": (lambda p: None, ["WDH_DATABASE_URL"], {"WDH_DATABASE_URL": None}),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_errors_exit_2_and_touch_nothing(cli: Invoke, project: Project,
                                                case: str) -> None:
    breaker, fragments, env = CONFIG_ERRORS[case]
    breaker(project)
    for command in (["sync"], ["plan"], ["sync-table", ANNUITY], ["status"], ["init-db"]):
        result = cli(*command, env=env)
        assert result.exit_code == 2, (command, result.stdout, result.stderr)
        assert result.stdout == "", (command, result.stdout)
        for fragment in fragments:
            assert fragment in result.stderr, (command, result.stderr)
        if case != "no_database_url":
            assert str(project.config) in result.stderr, "the error names the file"
    assert not project.db.exists(), "no database was touched"


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_errors_with_json_print_one_document(cli: Invoke, project: Project,
                                                    case: str) -> None:
    breaker, fragments, env = CONFIG_ERRORS[case]
    breaker(project)
    result = cli("sync", "--json", env=env)
    assert result.exit_code == 2
    doc = doc_of(result)
    assert {"exit_code", "error_class", "error"} <= set(doc)
    assert doc["exit_code"] == 2
    assert doc["error_class"] == "config"
    for fragment in fragments:
        assert fragment in doc["error"]
    assert not project.db.exists()


def test_config_error_names_the_file_and_the_field(cli: Invoke, project: Project) -> None:
    section = project.section()
    section["tables"][0]["batch_size"] = 0
    section["tables"][1]["sync_mode"] = "replace"
    project.write_config(section)
    result = cli("sync")
    assert result.exit_code == 2
    assert str(project.config) in result.stderr
    assert (f"reference_sync.tables[0].batch_size (table {ANNUITY}): "
            "Input should be greater than or equal to 1") in result.stderr
    assert f"reference_sync.tables[1].sync_mode (table {LINES}): " in result.stderr


def test_unknown_table_exits_2_and_lists_the_known_names(cli: Invoke, ready: Project) -> None:
    for command in (["sync", "-t", "nope"], ["sync", "-t", ANNUITY, "-t", "nope"],
                    ["plan", "-t", "nope"], ["status", "-t", "nope"], ["sync-table", "nope"],
                    ["verify", "-t", "nope"]):
        result = cli(*command)
        assert result.exit_code == 2, command
        assert "nope" in result.stderr
        assert ANNUITY in result.stderr and LINES in result.stderr, result.stderr
    assert ready.runs() == []
    assert ready.rows(ANNUITY) == []


def test_unknown_table_with_json(cli: Invoke, ready: Project) -> None:
    result = cli("sync-table", "nope", "--json")
    assert result.exit_code == 2
    doc = doc_of(result)
    assert doc["exit_code"] == 2
    assert isinstance(doc["error_class"], str)
    assert "nope" in doc["error"] and ANNUITY in doc["error"] and LINES in doc["error"]


@pytest.mark.parametrize("case", ["config_missing", "config_is_a_dir", "env_file_missing",
                                  "bad_port", "unsupported_url", "not_a_mapping",
                                  "bad_log_format", "bad_runs"])
def test_bad_input_is_a_message_and_exit_2(cli: Invoke, project: Project, case: str) -> None:
    args: list[Any] = ["sync"]
    env: dict[str, str | None] = {}
    expect = ""
    if case == "config_missing":
        args += ["-c", project.root / "nope.yml"]
        expect = str(project.root / "nope.yml")
    elif case == "config_is_a_dir":
        args += ["-c", project.root]
        expect = str(project.root)
    elif case == "env_file_missing":
        args += ["--env-file", project.root / "missing.env"]
        expect = "missing.env"
    elif case == "bad_port":
        env["WDH_LEGACY_MYSQL_PORT"] = "abc"
        expect = "legacy_mysql_port"
    elif case == "unsupported_url":
        env["WDH_DATABASE_URL"] = "oracle://scott:tiger@db/orcl"
        expect = "WDH_DATABASE_URL"
    elif case == "not_a_mapping":
        project.config.write_text("- just\n- a list\n", encoding="utf-8")
        expect = str(project.config)
    elif case == "bad_log_format":
        args += ["--log-format", "xml"]
        expect = "--log-format"
    else:
        args = ["status", "--runs", "-1"]
        expect = "--runs"
    result = cli(*args, env=env)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert expect.lower() in result.stderr.lower(), result.stderr
    assert "tiger" not in result.stdout + result.stderr


# ---------------------------------------------------------------- exit 3


def test_lock_held_exits_3_and_changes_nothing(cli: Invoke, ready: Project, lock: Path) -> None:
    result = cli("sync")
    assert result.exit_code == 3
    assert str(lock) in result.stderr
    result = cli("sync-table", ANNUITY)
    assert result.exit_code == 3
    assert ready.rows(ANNUITY) == []
    # no table ran; each refused run leaves one run-level record (DESIGN 2.2a)
    assert [(t, s) for _, t, s in ready.runs()] == [("*", "failed")] * 2


def test_lock_held_with_json(cli: Invoke, ready: Project, lock: Path) -> None:
    result = cli("sync", "--json")
    assert result.exit_code == 3
    doc = doc_of(result)
    assert doc["exit_code"] == 3
    assert isinstance(doc["error_class"], str) and doc["error_class"]
    assert isinstance(doc["error"], str) and doc["error"]


def test_plan_and_status_take_no_lock(cli: Invoke, ready: Project, lock: Path) -> None:
    assert cli("plan", "--json").exit_code == 0
    assert cli("status", "--json", "--no-fail").exit_code == 0


def test_lock_is_released_after_a_run(cli: Invoke, ready: Project) -> None:
    assert cli("sync").exit_code == 0
    assert cli("sync").exit_code == 0


# ---------------------------------------------------------------- plan


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "run_key": None,
            "tables": [{**t, "duration_s": None} for t in doc["tables"]]}


def test_plan_writes_nothing(cli: Invoke, ready: Project) -> None:
    result = cli("plan", "--json")
    assert result.exit_code == 0, result.stderr
    doc = doc_of(result)
    assert list(doc) == TOP_KEYS
    assert RUN_KEY.match(doc["run_key"])
    assert doc["plan_only"] is True
    annuity, lines = doc["tables"]
    assert (annuity["status"], annuity["read"], annuity["inserted"]) == ("ok", LEGACY_ROWS,
                                                                         LEGACY_ROWS)
    assert (lines["status"], lines["inserted"]) == ("ok", 3)
    assert ready.rows(ANNUITY) == []
    assert ready.rows(LINES_TARGET) == []
    assert ready.runs() == []
    assert query(ready.db, "SELECT * FROM refsync_sync_state") == []


def test_plan_after_a_sync_shows_the_changes_and_writes_nothing(
        cli: Invoke, synced: dict[str, Any], project: Project) -> None:
    project.legacy_sql("UPDATE annuity_plan SET plan_name = '改名', "
                       "updated_at = '2024-05-02 00:00:00' WHERE plan_code = 'P001'")
    before = (project.rows(ANNUITY), project.runs(),
              query(project.db, "SELECT * FROM refsync_sync_state ORDER BY 1"))
    result = cli("plan", "--json")
    assert result.exit_code == 0
    annuity = by_name(doc_of(result))[ANNUITY]
    assert annuity["updated"] == 1
    assert annuity["watermark"] == "2024-05-02T00:00:00"
    assert (project.rows(ANNUITY), project.runs(),
            query(project.db, "SELECT * FROM refsync_sync_state ORDER BY 1")) == before


def test_sync_plan_only_equals_plan(cli: Invoke, ready: Project) -> None:
    plan = doc_of(cli("plan", "--json"))
    plan_only = doc_of(cli("sync", "--plan-only", "--json"))
    assert _comparable(plan) == _comparable(plan_only)
    assert plan_only["plan_only"] is True
    assert ready.runs() == []
    assert ready.rows(ANNUITY) == []


def test_plan_text(cli: Invoke, ready: Project) -> None:
    result = cli("plan")
    assert result.exit_code == 0
    assert RUN_KEY.match(result.stdout.splitlines()[0])
    assert ANNUITY in result.stdout and LINES in result.stdout


def test_plan_exits_like_sync_would(cli: Invoke, ready: Project) -> None:
    ready.lines.unlink()
    result = cli("plan", "--json")
    assert result.exit_code == 1
    doc = doc_of(result)
    assert doc["exit_code"] == 1
    assert by_name(doc)[LINES]["status"] == "skipped"
    assert ready.runs() == []


# ---------------------------------------------------------------- verify

VERIFY_TABLE_KEYS = ["name", "target", "source_type", "status", "reason", "error_class",
                     "error", "source_rows", "target_rows", "differ", "missing", "extra",
                     "differ_keys", "missing_keys", "extra_keys", "attempts", "duration_s"]


def test_verify_on_sqlite_reports_every_table_unsupported(
        cli: Invoke, synced: dict[str, Any], project: Project) -> None:
    """Digests need MySQL and PostgreSQL: on SQLite (and for a YAML source) nothing can be
    compared, which verify says per table, with the reason, without failing (exit 0)."""
    runs = project.runs()
    result = cli("verify", "--json")
    assert result.exit_code == 0, result.stderr
    doc = doc_of(result)
    assert list(doc) == ["exit_code", "tables", "version"]
    assert doc["exit_code"] == 0
    annuity, lines = doc["tables"]
    assert list(annuity) == VERIFY_TABLE_KEYS
    assert (annuity["name"], annuity["target"], annuity["source_type"]) == (
        ANNUITY, f"business.{ANNUITY}", "sql")
    assert annuity["status"] == lines["status"] == "unsupported"
    assert "sqlite" in annuity["reason"] and "PostgreSQL" in annuity["reason"]
    assert "config_file" in lines["reason"]
    assert annuity["source_rows"] is None and annuity["differ_keys"] == []
    assert project.runs() == runs  # read-only


def test_verify_text_says_what_was_not_verified(cli: Invoke, ready: Project) -> None:
    result = cli("verify", "-t", LINES_TARGET)
    assert result.exit_code == 0, result.stderr
    assert LINES in result.stdout and "unsupported" in result.stdout
    assert ANNUITY not in result.stdout
    assert "not verified" in result.stdout and "config_file" in result.stdout


def test_verify_touches_no_database_it_cannot_compare(cli: Invoke, project: Project) -> None:
    result = cli("verify", "--json")
    assert result.exit_code == 0, result.stderr
    assert [t["status"] for t in doc_of(result)["tables"]] == ["unsupported", "unsupported"]
    assert not project.db.exists()


def test_verify_reports_a_disabled_table(cli: Invoke, project: Project) -> None:
    section = project.section()
    section["tables"][1]["enabled"] = False
    project.write_config(section)
    doc = doc_of(cli("verify", "--json"))
    assert [t["status"] for t in doc["tables"]] == ["unsupported", "disabled"]
    assert doc["exit_code"] == 0


def test_verify_takes_no_lock(cli: Invoke, ready: Project, lock: Path) -> None:
    assert cli("verify", "--json").exit_code == 0


def test_verify_without_a_target_is_a_config_error(cli: Invoke, project: Project) -> None:
    result = cli("verify", "--json", env={"WDH_DATABASE_URL": None})
    assert result.exit_code == 2
    doc = doc_of(result)
    assert doc["error_class"] == "config" and "WDH_DATABASE_URL" in doc["error"]


# ---------------------------------------------------------------- selecting tables


def test_sync_table_by_name_and_by_target_table(cli: Invoke, ready: Project) -> None:
    result = cli("sync-table", LINES, "--json")
    assert result.exit_code == 0, result.stderr
    assert [t["name"] for t in doc_of(result)["tables"]] == [LINES]
    assert ready.rows(ANNUITY) == []
    result = cli("sync-table", LINES_TARGET, "--json")
    assert result.exit_code == 0
    doc = doc_of(result)
    assert [(t["name"], t["status"]) for t in doc["tables"]] == [(LINES, "unchanged")]
    result = cli("sync-table", ANNUITY, "--plan-only", "--json")
    assert result.exit_code == 0
    assert doc_of(result)["plan_only"] is True
    assert ready.rows(ANNUITY) == []


def test_t_selects_by_name_or_target_table(cli: Invoke, ready: Project) -> None:
    result = cli("sync", "-t", LINES_TARGET, "--json")
    assert [t["name"] for t in doc_of(result)["tables"]] == [LINES]
    result = cli("sync", "--table", LINES, "-t", ANNUITY, "--json")
    assert [t["name"] for t in doc_of(result)["tables"]] == [ANNUITY, LINES]


def test_full_reads_every_row(cli: Invoke, synced: dict[str, Any]) -> None:
    incremental = by_name(doc_of(cli("sync", "--json", "-t", ANNUITY)))[ANNUITY]
    assert incremental["incremental"] is True
    assert incremental["read"] < LEGACY_ROWS
    full = by_name(doc_of(cli("sync", "--json", "--full", "-t", ANNUITY)))[ANNUITY]
    assert full["incremental"] is False
    assert full["read"] == LEGACY_ROWS
    assert full["status"] == "unchanged"


# ---------------------------------------------------------------- status


def test_status_before_any_run_creates_nothing(cli: Invoke, project: Project) -> None:
    with sqlite3.connect(project.db) as conn:
        conn.execute("CREATE TABLE unrelated (x INTEGER)")
    conn.close()
    result = cli("status", "--json")
    assert result.exit_code == 1, "no table has succeeded yet"
    doc = doc_of(result)
    assert doc["runs"] == []
    assert [t["name"] for t in doc["tables"]] == [ANNUITY, LINES]
    for table in doc["tables"]:
        assert table["last_status"] == "never"
        assert table["last_run_key"] is None
        assert table["watermark"] is None
    assert by_name(doc)[LINES]["target"] == f"business.{LINES_TARGET}"
    assert project.tables() == {"unrelated"}
    text = cli("status", "--no-fail")
    assert text.exit_code == 0
    assert "never" in text.stdout
    assert project.tables() == {"unrelated"}


def test_status_does_not_create_the_database_file(cli: Invoke, project: Project) -> None:
    result = cli("status", "--json")
    assert result.exit_code == 1, result.stderr
    assert all(t["last_status"] == "never" for t in doc_of(result)["tables"])
    assert not project.db.exists(), "status created the SQLite file"


def test_status_after_runs(cli: Invoke, synced: dict[str, Any], project: Project) -> None:
    project.legacy_sql("UPDATE annuity_plan SET plan_name = '改名', "
                       "updated_at = '2024-05-02 08:30:00.250000' WHERE plan_code = 'P003'")
    second = doc_of(cli("sync", "--json"))
    assert second["exit_code"] == 0
    result = cli("status", "--json")
    assert result.exit_code == 0, result.stderr
    doc = doc_of(result)
    tables = by_name(doc)
    annuity = tables[ANNUITY]
    assert annuity["last_run_key"] == second["run_key"]
    assert annuity["last_status"] == "ok"
    assert annuity["watermark"] == "2024-05-02T08:30:00.250000"
    expected = by_name(second)[ANNUITY]
    for count in COUNTS:
        assert annuity[count] == expected[count], count
    assert annuity["updated"] == 1
    for key in ("last_started_at", "last_finished_at", "last_success_at"):
        assert annuity[key] is not None, key
    assert annuity["error_class"] is None and annuity["error"] is None
    assert tables[LINES]["last_status"] == "unchanged"
    assert tables[LINES]["watermark"] is None
    # runs: one entry per table per run, newest first
    runs = doc["runs"]
    assert [r["run_key"] for r in runs] == [second["run_key"]] * 2 + [synced["run_key"]] * 2
    assert {r["table"] for r in runs[:2]} == {ANNUITY, LINES}
    limited = doc_of(cli("status", "--json", "--runs", "1"))
    assert [r["run_key"] for r in limited["runs"]] == [second["run_key"]] * 2
    assert doc_of(cli("status", "--json", "--runs", "0"))["runs"] == []
    only = doc_of(cli("status", "--json", "-t", LINES_TARGET))
    assert [t["name"] for t in only["tables"]] == [LINES]
    assert {r["table"] for r in only["runs"]} == {LINES}


def test_status_shows_the_last_error(cli: Invoke, synced: dict[str, Any],
                                     project: Project) -> None:
    project.lines.unlink()
    failed = doc_of(cli("sync", "--json"))
    lines = by_name(doc_of(cli("status", "--json")))[LINES]
    assert lines["last_run_key"] == failed["run_key"]
    assert lines["last_status"] == "skipped"
    assert lines["error_class"] == "file_missing"
    assert str(project.lines) in lines["error"]
    assert lines["last_success_at"] is not None  # the first run's


def test_status_text(cli: Invoke, synced: dict[str, Any]) -> None:
    result = cli("status")
    assert result.exit_code == 0
    assert ANNUITY in result.stdout and LINES in result.stdout
    assert synced["run_key"] in result.stdout


# ---------------------------------------------------------------- enabled flags (2.2)


MISSING_FOLDER_URL = "sqlite:///{root}/no-such-folder/w.sqlite"


def test_disabled_by_environment_touches_no_database(cli: Invoke, project: Project) -> None:
    url = MISSING_FOLDER_URL.format(root=project.root)
    env = {"WDH_REFERENCE_SYNC_ENABLED": "false", "WDH_DATABASE_URL": url}
    for command in (["sync"], ["sync-table", ANNUITY], ["sync", "--full", "-t", LINES]):
        result = cli(*command, env=env)
        assert result.exit_code == 0, (command, result.stderr)
        assert "reference sync disabled (WDH_REFERENCE_SYNC_ENABLED=false)" in result.stderr
    result = cli("sync", "--json", env=env)
    assert result.exit_code == 0
    doc = doc_of(result)
    assert doc["exit_code"] == 0 and doc["tables"] == []
    assert RUN_KEY.match(doc["run_key"])
    assert "reference sync disabled" in result.stderr
    assert not (project.root / "no-such-folder").exists()
    assert not project.db.exists()


def test_disabled_json_log_line(cli: Invoke, project: Project) -> None:
    result = cli("sync", "--log-format", "json", env={"WDH_REFERENCE_SYNC_ENABLED": "false"})
    assert result.exit_code == 0
    records = json_lines(result.stderr)
    assert any(r["msg"].startswith("reference sync disabled (") for r in records), records


def test_force_runs_anyway(cli: Invoke, ready: Project) -> None:
    result = cli("sync", "--force", "--json", env={"WDH_REFERENCE_SYNC_ENABLED": "false"})
    assert result.exit_code == 0, result.stderr
    assert [t["status"] for t in doc_of(result)["tables"]] == ["ok", "ok"]
    assert len(ready.rows(ANNUITY)) == LEGACY_ROWS
    result = cli("sync-table", LINES, "--force", "--json",
                 env={"WDH_REFERENCE_SYNC_ENABLED": "false"})
    assert result.exit_code == 0
    assert [t["status"] for t in doc_of(result)["tables"]] == ["unchanged"]


def test_plan_and_status_work_when_disabled(cli: Invoke, ready: Project) -> None:
    env = {"WDH_REFERENCE_SYNC_ENABLED": "false"}
    result = cli("plan", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    assert [t["status"] for t in doc_of(result)["tables"]] == ["ok", "ok"]
    assert ready.rows(ANNUITY) == []
    result = cli("status", "--json", env=env)
    assert result.exit_code == 0
    assert [t["last_status"] for t in doc_of(result)["tables"]] == ["never", "never"]


def test_disabled_in_the_config_file(cli: Invoke, project: Project) -> None:
    section = project.section()
    section["enabled"] = False
    project.write_config(section)
    env = {"WDH_DATABASE_URL": MISSING_FOLDER_URL.format(root=project.root)}
    for command in (["sync"], ["sync-table", LINES]):
        result = cli(*command, env=env)
        assert result.exit_code == 0, (command, result.stderr)
        assert "reference sync disabled (" in result.stderr
        assert str(project.config) in result.stderr or "enabled: false" in result.stderr
    assert not (project.root / "no-such-folder").exists()
    # with a real target: --force runs, plan and status work
    assert cli("init-db", "--create-tables").exit_code == 0
    plan = cli("plan", "--json")
    assert plan.exit_code == 0
    assert [t["status"] for t in doc_of(plan)["tables"]] == ["ok", "ok"]
    assert project.rows(ANNUITY) == []
    assert cli("status", "--json").exit_code == 0
    forced = cli("sync", "--force", "--json")
    assert forced.exit_code == 0
    assert len(project.rows(ANNUITY)) == LEGACY_ROWS


def test_a_disabled_table_is_reported_disabled(cli: Invoke, ready: Project) -> None:
    section = ready.section()
    section["tables"][1]["enabled"] = False
    ready.write_config(section)
    ready.lines.unlink()  # a disabled table is not even read
    result = cli("sync", "--json")
    assert result.exit_code == 0, result.stderr
    tables = by_name(doc_of(result))
    assert tables[ANNUITY]["status"] == "ok"
    assert tables[LINES]["status"] == "disabled"
    assert tables[LINES]["read"] == 0
    assert ready.rows(LINES_TARGET) == []
    result = cli("sync")
    assert result.exit_code == 0
    assert "disabled" in result.stdout


# ---------------------------------------------------------------- logs on stderr


def json_lines(stderr: str) -> list[dict[str, Any]]:
    records = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"stderr line is not JSON: {line!r}\nstderr:\n{stderr}") from None
        assert isinstance(record, dict), line
        for key in ("ts", "level", "event"):
            assert key in record, (key, line)
        records.append(record)
    return records


def table_records(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["table"]: r for r in records if "table" in r and "read" in r}


def test_json_log_format_success(cli: Invoke, ready: Project) -> None:
    result = cli("sync", "--log-format", "json")
    assert result.exit_code == 0
    records = json_lines(result.stderr)
    per_table = table_records(records)
    assert set(per_table) == {ANNUITY, LINES}
    for record in per_table.values():
        for key in ("table", "mode", "status", "duration_s", "attempts", *COUNTS):
            assert key in record, (key, record)
        assert record["level"] == "INFO"
    assert per_table[ANNUITY]["mode"] == "upsert"
    assert per_table[ANNUITY]["read"] == per_table[ANNUITY]["inserted"] == LEGACY_ROWS
    assert per_table[ANNUITY]["attempts"] == 1
    # cron appends stdout to the same log: with JSON logs stdout stays empty, and every
    # record carries the run key instead
    assert result.stdout == ""
    assert all(RUN_KEY.match(r["run_key"]) for r in per_table.values())


def test_json_log_format_with_json_output(cli: Invoke, ready: Project) -> None:
    result = cli("sync", "--log-format", "json", "--json")
    assert result.exit_code == 0
    assert doc_of(result)["exit_code"] == 0
    assert set(table_records(json_lines(result.stderr))) == {ANNUITY, LINES}


def test_json_log_format_when_a_table_fails(cli: Invoke, ready: Project) -> None:
    ready.lines.unlink()
    result = cli("sync", "--log-format", "json")
    assert result.exit_code == 1
    records = json_lines(result.stderr)
    lines = table_records(records)[LINES]
    assert lines["status"] == "skipped"
    assert lines["error_class"] == "file_missing"
    assert lines["level"] in ("WARNING", "ERROR")


def test_json_log_format_on_a_config_error(cli: Invoke, project: Project) -> None:
    _unknown_key(project)
    result = cli("sync", "--log-format", "json")
    assert result.exit_code == 2
    records = json_lines(result.stderr)
    assert any(r["level"] == "ERROR" for r in records), records


def test_text_log_lines_name_each_table(cli: Invoke, ready: Project) -> None:
    result = cli("sync")
    for name in (ANNUITY, LINES):
        assert any(name in line and "INFO" in line for line in result.stderr.splitlines())


def test_quiet_leaves_only_warnings_and_errors(cli: Invoke, ready: Project) -> None:
    result = cli("sync", "-q")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert RUN_KEY.match(result.stdout.splitlines()[0])
    ready.lines.unlink()
    result = cli("sync", "-q", "--log-format", "json", "--json")
    assert result.exit_code == 1
    records = json_lines(result.stderr)
    assert records, "the failure is still logged"
    assert {r["level"] for r in records} <= {"WARNING", "ERROR", "CRITICAL"}
    assert LINES in {r.get("table") for r in records}


def test_verbose_is_accepted(cli: Invoke, ready: Project) -> None:
    result = cli("sync", "-v", "--json")
    assert result.exit_code == 0
    assert doc_of(result)["exit_code"] == 0


def test_password_never_appears(cli: Invoke, project: Project) -> None:
    result = cli("sync", "--json", env={
        "WDH_DATABASE_URL": "postgresql://etl:pg-Pa55word@127.0.0.1:1/warehouse",
        "WDH_LEGACY_MYSQL_PASSWORD": "my-Pa55word"})
    assert result.exit_code != 0
    assert "Pa55word" not in result.stdout + result.stderr


# ---------------------------------------------------------------- schedule and demo


def test_schedule_json(cli: Invoke) -> None:
    result = cli("schedule", "--json")
    assert result.exit_code == 0, result.stderr
    doc = doc_of(result)
    assert doc["schedule"] == "0 1 * * *"
    assert doc["timezone"] == "Asia/Shanghai"
    assert len(doc["next"]) == 3
    times = [item["tz_time"] for item in doc["next"]]
    assert all(t.endswith("T01:00:00+08:00") for t in times), times
    assert times == sorted(set(times))


def test_schedule_text(cli: Invoke) -> None:
    result = cli("schedule")
    assert result.exit_code == 0
    assert "0 1 * * *" in result.stdout and "Asia/Shanghai" in result.stdout


def test_demo(cli: Invoke, tmp_path: Path) -> None:
    where = tmp_path / "demo"
    result = cli("demo", "--dir", where, "--rows", "200")
    assert result.exit_code == 0, result.stderr
    assert "full sync" in result.stdout and "incremental sync" in result.stdout
    run_keys = [line for line in result.stdout.splitlines() if RUN_KEY.match(line.strip())]
    assert len(run_keys) == 2, result.stdout
    for name in ("年金计划", "组合计划", "组织架构", "产品线"):
        assert name in result.stdout
    assert (where / "warehouse.sqlite").exists()
    assert (where / "data_sources.yml").exists()


def test_demo_json(cli: Invoke, tmp_path: Path) -> None:
    result = cli("demo", "--dir", tmp_path / "demo", "--rows", "200", "--json")
    assert result.exit_code == 0, result.stderr
    doc = doc_of(result)
    assert [r["step"] for r in doc["runs"]] == ["full", "incremental"]
    for run in doc["runs"]:
        assert RUN_KEY.match(run["run_key"])
        assert run["exit_code"] == 0
        assert [t["name"] for t in run["tables"]] == ["年金计划", "组合计划", "组织架构", "产品线"]
    full = by_name(doc["runs"][0])
    assert full["年金计划"]["inserted"] == 200
    assert all(t["last_status"] != "never" for t in doc["status"]["tables"])


# ---------------------------------------------------------------- alerting (DESIGN 2.2a)


def test_status_exits_1_on_a_failed_last_run_and_no_fail_keeps_0(
        cli: Invoke, synced: dict[str, Any], project: Project) -> None:
    assert cli("status", "--json").exit_code == 0, "all tables fine: exit 0"
    project.lines.unlink()
    assert cli("sync", "--json").exit_code == 1
    result = cli("status", "--json")
    assert result.exit_code == 1
    doc = doc_of(result)
    assert doc["problems"] == [f"{LINES}: last run skipped [file_missing]"]
    assert doc["exit_code"] == 1 and doc["version"]
    assert cli("status", "--json", "--no-fail").exit_code == 0
    text = cli("status")
    assert text.exit_code == 1 and "last run skipped" in text.stdout


def test_status_exits_1_when_a_night_was_missed(cli: Invoke, synced: dict[str, Any],
                                               project: Project) -> None:
    from datetime import datetime, timedelta

    with sqlite3.connect(project.db) as conn:
        (value,) = conn.execute("SELECT last_success_at FROM refsync_sync_state "
                                "WHERE table_name = ?", (ANNUITY,)).fetchone()
        old = datetime.fromisoformat(value) - timedelta(hours=27)
        conn.execute("UPDATE refsync_sync_state SET last_success_at = ? WHERE table_name = ?",
                     (old.isoformat(sep=" " if " " in value else "T"), ANNUITY))
    conn.close()
    result = cli("status", "--json")
    assert result.exit_code == 1
    (problem,) = doc_of(result)["problems"]
    assert problem.startswith(f"{ANNUITY}: last success 27 hours ago")


def test_status_help_says_when_it_exits_1(cli: Invoke) -> None:
    result = cli("status", "--help")
    assert "26 hours" in result.stdout and "--no-fail" in result.stdout


def _prom(path: Path) -> dict[str, str]:
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1]
            for line in path.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")}


def test_metrics_file_per_table_and_kept_for_tables_not_in_the_run(
        cli: Invoke, ready: Project, tmp_path: Path) -> None:
    prom = tmp_path / "textfile" / "refsync.prom"
    prom.parent.mkdir()
    assert cli("sync", "--metrics-file", prom).exit_code == 0
    first = _prom(prom)
    text = prom.read_text(encoding="utf-8")
    assert text.count("# TYPE refsync_rows gauge") == 1, "each metric's samples are grouped"
    assert first[f'refsync_rows{{table="{ANNUITY}",op="inserted"}}'] == str(LEGACY_ROWS)
    assert first[f'refsync_rows{{table="{LINES}",op="read"}}'] == "3"
    assert first[f'refsync_up{{table="{ANNUITY}"}}'] == "1"
    assert first[f'refsync_attempts{{table="{LINES}"}}'] == "1"
    for name in ("refsync_last_run_timestamp_seconds", "refsync_last_success_timestamp_seconds",
                 "refsync_duration_seconds"):
        assert float(first[f'{name}{{table="{ANNUITY}"}}']) > 0
    inode = prom.stat().st_ino
    # a failing rerun of one table: its lines change, the other table's stay as they were
    ready.lines.unlink()
    env = {"WDH_REFERENCE_SYNC_METRICS_FILE": str(prom)}  # the setting works as the option
    assert cli("sync-table", LINES, env=env).exit_code == 1
    second = _prom(prom)
    assert prom.stat().st_ino != inode, "replaced by rename, never rewritten in place"
    assert [p.name for p in prom.parent.iterdir()] == ["refsync.prom"], "no temp file left"
    assert second[f'refsync_up{{table="{LINES}"}}'] == "0"
    assert (second[f'refsync_last_success_timestamp_seconds{{table="{LINES}"}}']
            == first[f'refsync_last_success_timestamp_seconds{{table="{LINES}"}}'])
    assert {k: v for k, v in second.items() if ANNUITY in k} == {
        k: v for k, v in first.items() if ANNUITY in k}


def test_metrics_label_values_are_escaped() -> None:
    from refsync.alerting import _previous, escape_label, metrics_text
    from refsync.model import RunResult, TableResult

    name = 'odd "name" \\ with\nnewline 组织'
    result = RunResult(run_key="k", plan_only=False, tables=[TableResult(
        name=name, target="t", source_type="sql", mode="upsert", incremental=False,
        status="ok", finished_at="2026-11-28T01:00:00.000+08:00")])
    text = metrics_text(result, {})
    assert f'refsync_up{{table="{escape_label(name)}"}} 1' in text
    assert '\\"name\\" \\\\ with\\nnewline' in text
    assert all(line.count("\n") == 0 for line in text.splitlines())
    path = Path("m.prom")
    path.write_text(text, encoding="utf-8")
    assert name in _previous(path)["refsync_up"], "read back under its real name"


class _Monitor:
    """A healthchecks-style endpoint on 127.0.0.1 that records the paths it was pinged at."""

    def __enter__(self) -> _Monitor:
        import http.server
        import threading

        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                paths.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/abc"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_ping_start_and_success(cli: Invoke, ready: Project) -> None:
    with _Monitor() as monitor:
        result = cli("sync", env={"WDH_REFERENCE_SYNC_PING_URL": monitor.url})
    assert result.exit_code == 0, result.stderr
    assert monitor.paths == ["/ping/abc/start", "/ping/abc"]


def test_ping_fail_on_a_failed_table_and_on_a_config_error(cli: Invoke, ready: Project) -> None:
    ready.lines.unlink()
    with _Monitor() as monitor:
        env = {"WDH_REFERENCE_SYNC_PING_URL": monitor.url}
        assert cli("sync", env=env).exit_code == 1
        assert cli("sync", "-t", "nope", env=env).exit_code == 2
        assert cli("plan", env=env).exit_code == 1, "a plan is not the nightly job"
    assert monitor.paths == ["/ping/abc/start", "/ping/abc/fail"] * 2


def test_a_dead_ping_url_never_fails_the_run(cli: Invoke, ready: Project) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli("sync", "--json", env={"WDH_REFERENCE_SYNC_PING_URL": f"http://127.0.0.1:{port}/x"})
    assert result.exit_code == 0
    assert doc_of(result)["exit_code"] == 0
    assert "ping http://127.0.0.1" in result.stderr


@pytest.mark.parametrize("command", [
    pytest.param(["sync", "-t", "nope"], id="config-error"),
    pytest.param(["sync"], id="lock-held"),
])
def test_a_run_that_stops_before_any_table_leaves_a_json_log_line(
        cli: Invoke, ready: Project, lock: Path, command: list[str]) -> None:
    result = cli(*command, "--log-format", "json")
    assert result.exit_code in (2, 3)
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert events[-1]["level"] == "ERROR"
    assert events[-1]["error_class"] in ("usage", "config", "locked")


# ---------------------------------------------------------------- small things


def test_version(cli: Invoke) -> None:
    from refsync import __version__

    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"refsync {__version__}\n"
    assert __version__ != "0+unknown"


def test_version_in_every_json_document(cli: Invoke, ready: Project, tmp_path: Path) -> None:
    from refsync import __version__

    for args in (["schedule", "--json"], ["init-db", "--json"], ["sync", "-t", "nope", "--json"],
                 ["plan", "--json"], ["sync", "--json"], ["status", "--json"],
                 ["verify", "--json"]):
        assert doc_of(cli(*args))["version"] == __version__, args
    demo = cli("demo", "--dir", tmp_path / "demo", "--rows", "10", "--json")
    assert doc_of(demo)["version"] == __version__


def test_options_before_the_command(cli: Invoke, ready: Project) -> None:
    before = cli("-c", ready.config, "--json", "--log-format", "json", "sync", config=False)
    assert before.exit_code == 0, before.stderr
    assert [t["status"] for t in doc_of(before)["tables"]] == ["ok", "ok"]
    assert all(json.loads(line)["level"] for line in before.stderr.splitlines())
    # after the command wins over before it
    mixed = cli("--log-format", "json", "sync", "--log-format", "text", "-c", ready.config,
                config=False)
    assert mixed.exit_code == 0
    assert not mixed.stderr.lstrip().startswith("{")


def test_help_has_no_type_placeholders_and_shows_exit_codes(cli: Invoke) -> None:
    top = cli("--help")
    assert "Exit codes" in top.stdout and "Example" in top.stdout
    assert "--install-completion" in top.stdout
    for command in COMMANDS:
        text = cli(command, "--help").stdout
        assert "<bool>" not in text and "<list" not in text and "<str>" not in text, command
    sync_help = cli("sync", "--help").stdout
    assert "[text|json]" in sync_help
    assert "NAME" in cli("sync-table", "--help").stdout


def test_misspelled_section_names_what_was_found(cli: Invoke, project: Project) -> None:
    project.config.write_text(
        yaml.safe_dump({"database": {"x": 1}, "reference_synk": project.section()},
                       allow_unicode=True), encoding="utf-8")
    result = cli("sync", "--json")
    assert result.exit_code == 2
    doc = doc_of(result)
    assert doc["error"] == (f"no reference_sync section in {project.config.resolve()} "
                            "(found: database, reference_synk)")
    assert "reference_synk" in doc["hint"]


@pytest.mark.parametrize(("args", "user_field"), [([], False), (["--cron-d", "refsync"], True)])
def test_schedule_line_for_a_crontab_or_cron_d(cli: Invoke, args: list[str],
                                              user_field: bool) -> None:
    doc = doc_of(cli("schedule", "--json", *args))
    fields = doc["crontab_debian"].split()
    assert (fields[5] == "refsync") is user_field
    assert fields[-1].endswith("refsync-nightly.sh")
    assert ("refsync /opt" in doc["crontab_cronie"]) is user_field
    text = cli("schedule", *args).stdout
    assert ("line for /etc/cron.d/refsync" in text) is user_field


def test_status_from_another_directory_with_the_env_file(
        cli: Invoke, synced: dict[str, Any], project: Project, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = project.root / "deploy.env"
    env_file.write_text(f"WDH_DATABASE_URL={project.url}\n"
                        f"WDH_REFERENCE_SYNC_CONFIG={project.config}\n")
    env_file.chmod(0o640)  # readable by every user: a problem of its own
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("status", "--json", "--env-file", env_file, config=False,
                 env={"WDH_DATABASE_URL": None})
    assert result.exit_code == 0, result.stderr
    assert {t["last_status"] for t in doc_of(result)["tables"]} == {"ok"}
