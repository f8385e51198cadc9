"""The code's layout rules (STYLE §2): short functions and modules, no capability probing in
the sync's middle, each database's SQL in that database's modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "refsync"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 600

# data templates: text that reads best in one piece (bulky data is a package data file, as
# the demo's words, config and legacy DDL in refsync/demo_files/)
LONG_FUNCTIONS_ALLOWED: set[str] = set()
# files another change is rewriting now; to be taken off this list when it lands
LONG_FUNCTIONS_PENDING: set[str] = set()

# Where each database's SQL text may stand: the source modules, the target modules (the state
# tables' SQL in targets/state_sql.py, the `init-db` DDL in targets/pg_ddl.py), and
# digest/plan.py, which is pure and writes both dialects' digest SQL.
MYSQL_HOMES = ("sources/", "digest/plan.py")
POSTGRES_HOMES = ("targets/", "digest/plan.py")
SQL_HOMES = ("sources/", "targets/", "digest/plan.py")
# modules outside SQL_HOMES that write SQL text, and why
SQL_ELSEWHERE_ALLOWED = {
    "demo_data.py": "the demo's legacy SQLite database, a stand-in for the legacy MySQL",
}
MYSQL_SQL = re.compile(
    r"\bKILL (?:QUERY|CONNECTION)\b|@@\w|WITH CONSISTENT SNAPSHOT|\bSHOW (?:VARIABLES|"
    r"STATUS|PROCESSLIST|WARNINGS)\b|\bGET_LOCK\(|\bINFORMATION_SCHEMA\.PROCESSLIST\b")
MYSQL_QUOTED_NAME = re.compile(r"`\w+`")
SQL_WORDS = re.compile(r"\b(?:SELECT|FROM|WHERE|UPDATE|INSERT|DELETE)\b")
# SQL, not prose that names it (a hint may say "find it in SHOW PROCESSLIST")
READS_AS_SQL = re.compile(r"^\s*(?:SELECT|WITH|INSERT|UPDATE|DELETE|COPY|SET|KILL|SHOW|CREATE|"
                          r"ALTER|DROP|ANALYZE|START|BEGIN|LOCK|DO)\b|"
                          r"\b(?:SELECT|FROM|WHERE|JOIN|VALUES)\b")
POSTGRES_SQL = re.compile(
    r"\bpg_(?:locks|class|catalog|stat_activity|namespace|attribute|index|database|"
    r"advisory_\w+|try_advisory_\w+|relation_size|cancel_backend|terminate_backend|"
    r"backend_pid|current_wal_\w+)\b|FROM STDIN|ON CONFLICT|::regclass|\bSET LOCAL\b|"
    r"\bset_config\(|\bcurrent_setting\(")


def _modules() -> list[tuple[str, str]]:
    return [(p.relative_to(SRC).as_posix(), p.read_text(encoding="utf-8"))
            for p in sorted(SRC.rglob("*.py"))]


def _sql_strings(text: str) -> list[tuple[int, str]]:
    """(line, text) of every string in the module that reads as SQL (not a docstring, not
    prose); an f-string as its literal parts joined."""
    tree = ast.parse(text)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values
                     if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            found.append((node.lineno, "{}".join(parts)))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings):
            found.append((node.lineno, node.value))
    return [(line, text) for line, text in found if READS_AS_SQL.search(text)]


def test_layout_no_function_over_60_lines() -> None:
    long = []
    for name, text in _modules():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                where = f"{name}::{node.name}"
                if lines > MAX_FUNCTION_LINES and where not in (
                        LONG_FUNCTIONS_ALLOWED | LONG_FUNCTIONS_PENDING):
                    long.append(f"{where} ({lines} lines)")
    assert long == []


def test_layout_no_module_over_600_lines() -> None:
    long = [f"{name} ({len(text.splitlines())} lines)" for name, text in _modules()
            if len(text.splitlines()) > MAX_MODULE_LINES]
    assert long == []


def test_layout_allow_lists_name_what_exists() -> None:
    """An entry whose function is gone or short again is taken off the list."""
    functions = {}
    for name, text in _modules():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                functions[f"{name}::{node.name}"] = node.end_lineno - node.lineno + 1
    stale = [w for w in LONG_FUNCTIONS_ALLOWED | LONG_FUNCTIONS_PENDING
             if functions.get(w, 0) <= MAX_FUNCTION_LINES]
    writes_sql = {name for name, text in _modules() if _sql_strings(text)}
    stale += [m for m in SQL_ELSEWHERE_ALLOWED if m not in writes_sql]
    assert stale == []


@pytest.mark.parametrize("module", ["api.py", "table_sync.py"])
def test_layout_no_capability_probing_in_the_sync(module: str) -> None:
    """The read path is chosen by declared capabilities (sources.base), never by probing
    an object for attributes."""
    text = (SRC / module).read_text(encoding="utf-8")
    probes = [line.strip() for line in text.splitlines()
              if re.search(r"\b(?:hasattr|getattr)\(", line)]
    assert probes == []


def test_layout_the_sql_scan_sees_each_dialect_in_its_home() -> None:
    """The scan below finds SQL where it is meant to be, so an empty list means something."""
    mysql = (SRC / "sources" / "mysql.py").read_text(encoding="utf-8")
    postgres = (SRC / "targets" / "postgres.py").read_text(encoding="utf-8")
    assert any(MYSQL_SQL.search(text) for _, text in _sql_strings(mysql))
    assert any(POSTGRES_SQL.search(text) for _, text in _sql_strings(postgres))


def test_layout_mysql_sql_only_in_the_mysql_modules() -> None:
    misplaced = [f"{name}:{line}: {text[:60]!r}" for name, source in _modules()
                 if not name.startswith(MYSQL_HOMES)
                 for line, text in _sql_strings(source)
                 if MYSQL_SQL.search(text)
                 or (MYSQL_QUOTED_NAME.search(text) and SQL_WORDS.search(text))]
    assert misplaced == []


def test_layout_postgres_sql_only_in_the_postgres_modules() -> None:
    misplaced = [f"{name}:{line}: {text[:60]!r}" for name, source in _modules()
                 if not name.startswith(POSTGRES_HOMES)
                 for line, text in _sql_strings(source) if POSTGRES_SQL.search(text)]
    assert misplaced == []


def test_layout_sql_only_in_the_database_modules() -> None:
    """The dialect markers miss SQL that reads alike on every database (a plain SELECT, an
    information_schema query): SQL text of any kind stands in the database modules."""
    misplaced = [f"{name}:{line}: {text[:60]!r}" for name, source in _modules()
                 if not name.startswith(SQL_HOMES) and name not in SQL_ELSEWHERE_ALLOWED
                 for line, text in _sql_strings(source)]
    assert misplaced == []


@pytest.mark.parametrize(("text", "mysql", "postgres"), [
    pytest.param("KILL QUERY {}", True, False, id="kill-query"),
    pytest.param("SELECT `id` FROM `t`", True, False, id="backticks"),
    pytest.param("run `refsync plan` first", False, False, id="backticks-in-prose"),
    pytest.param("find it in SHOW PROCESSLIST", False, False, id="mysql-in-a-hint"),
    pytest.param("find it in pg_stat_activity", False, False, id="postgres-in-a-hint"),
    pytest.param("SELECT pid FROM pg_locks WHERE {}", False, True, id="pg-catalog"),
    pytest.param("COPY {} FROM STDIN", False, True, id="copy"),
    pytest.param("INSERT INTO t SELECT 1 ON CONFLICT DO NOTHING", False, True, id="upsert"),
])
def test_layout_sql_markers_tell_the_dialect(text: str, mysql: bool, postgres: bool) -> None:
    sql = bool(READS_AS_SQL.search(text))
    assert (sql and bool(MYSQL_SQL.search(text)
                         or (MYSQL_QUOTED_NAME.search(text) and SQL_WORDS.search(text)))) is mysql
    assert (sql and bool(POSTGRES_SQL.search(text))) is postgres
