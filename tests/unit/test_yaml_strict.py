"""The config_file source is bounded and strict (DESIGN 3.1): a size limit checked before
parsing, bounded alias expansions and nesting, duplicate keys refused with their line,
non-scalar values rejected as rows, flat memory while streaming, SIGTERM while parsing."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from typer.testing import CliRunner

from refsync.cli import app
from refsync.config import ReferenceSyncConfig, TableSpec
from refsync.errors import ConfigError
from refsync.model import ColumnInfo
from refsync.rules import Unfit, UnfitBatch
from refsync.sources import YamlFileSource
from refsync.sources import yaml_file as yaml_file_module
from refsync.transform import RowConverter

HEADER = 'schema_version: "1.0"\ndata:\n'


def make_spec(path: Path, *, key: str = "code", defaults: dict[str, Any] | None = None,
              **table: Any) -> TableSpec:
    """A table as the config file resolves it (`defaults` and the table's own options)."""
    section = ReferenceSyncConfig.model_validate({
        "defaults": defaults or {},
        "tables": [{"name": "lines", "target_table": "lines", "source_type": "config_file",
                    "source_config": {"file_path": str(path), "schema_version": "1.0"},
                    "sync_mode": "delete_insert", "primary_key": key, **table}]})
    return section.tables[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lines.yml"
    path.write_text(text, encoding="utf-8")
    return path


def read_all(path: Path, **spec: Any) -> list[tuple[Any, ...]]:
    src = YamlFileSource(make_spec(path, **spec), batch_size=2)
    try:
        return [row for batch in src.iter_batches(None) for row in batch]
    finally:
        src.close()


def refused(path: Path, **spec: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        read_all(path, **spec)
    assert info.value.error_class == "config"
    return info.value


@pytest.fixture(params=["libyaml", "pure-python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The rules hold with libyaml's parser and with PyYAML's own."""
    if request.param == "pure-python":
        monkeypatch.setattr(yaml_file_module, "_Loader", yaml.SafeLoader)
    else:
        assert yaml_file_module._Loader is yaml.CSafeLoader
    return str(request.param)


# ---------------------------------------------------------------- size limit


def test_yaml_file_over_max_yaml_bytes_is_refused_naming_file_size_and_setting(
        tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "".join(f"  - {{code: C{i:04}}}\n" for i in range(100)))
    size = path.stat().st_size
    error = refused(path, max_yaml_bytes=1000)
    assert str(error) == (f"{path} is {size:,} bytes, over the limit of 1,000 bytes "
                          "(max_yaml_bytes)")
    assert "raise max_yaml_bytes" in error.hint
    assert len(read_all(path, max_yaml_bytes=size)) == 100  # at the limit: read


def test_yaml_oversize_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """A 200 MB file (sparse: reading it would take long) is refused at once by default."""
    path = tmp_path / "lines.yml"
    with path.open("wb") as f:
        f.write(HEADER.encode())
        f.truncate(200 * 1024 * 1024)
    started = time.monotonic()
    error = refused(path)
    assert time.monotonic() - started < 5
    assert f"{path} is 209,715,200 bytes, over the limit of 67,108,864 bytes" in str(error)


def test_max_yaml_bytes_is_set_in_defaults_or_per_table(tmp_path: Path) -> None:
    path = tmp_path / "x.yml"
    assert make_spec(path).options.max_yaml_bytes == 64 * 1024 * 1024
    assert make_spec(path, defaults={"max_yaml_bytes": "256MB"}).options.max_yaml_bytes == (
        256 * 1024 * 1024)
    spec = make_spec(path, defaults={"max_yaml_bytes": "1GB"}, max_yaml_bytes="512 KB")
    assert spec.options.max_yaml_bytes == 512 * 1024
    assert make_spec(path, max_yaml_bytes=1000).options.max_yaml_bytes == 1000


@pytest.mark.parametrize("bad", [pytest.param("lots", id="word"), pytest.param(0, id="zero"),
                                 pytest.param(True, id="bool")])
def test_max_yaml_bytes_must_be_a_size(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="max_yaml_bytes"):
        make_spec(tmp_path / "x.yml", max_yaml_bytes=bad)


# ---------------------------------------------------------------- aliases


def alias_bomb(levels: int = 10, width: int = 9) -> str:
    """The billion laughs: each level a list of `width` aliases of the level below."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return ('schema_version: "1.0"\n' + "\n".join(lines) + "\ndata:\n"
            f"  - {{code: A, name: *a{levels - 1}}}\n")


def test_yaml_alias_bomb_is_refused_naming_the_line(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, alias_bomb())
    error = refused(path)
    assert str(error) == f"{path} (line 5): more than 100 YAML alias expansions in the document"
    assert "anchors (&) and aliases (*)" in error.hint


def test_yaml_many_plain_aliases_are_refused(tmp_path: Path) -> None:
    rows = "".join(f"  - {{code: C{i}, name: *n}}\n" for i in range(101))
    path = write(tmp_path, 'schema_version: "1.0"\nname: &n 企业年金\ndata:\n' + rows)
    assert "more than 100 YAML alias expansions" in str(refused(path))


CHILD = """
import json, sys, time
from refsync.config import TableSpec
from refsync.errors import RefsyncError
from refsync.sources import YamlFileSource
spec = TableSpec.model_validate({"name": "t", "target_table": "t", "source_type": "config_file",
    "source_config": {"file_path": sys.argv[1], "schema_version": "1.0"}, "primary_key": "code"})
started = time.monotonic()
try:
    rows = sum(len(b) for b in YamlFileSource(spec, batch_size=5000).iter_batches(None))
    outcome = f"{rows} rows"
except RefsyncError as exc:
    outcome = f"{exc.error_class}: {exc}"
# VmHWM: this process image's own peak (ru_maxrss keeps the forking parent's across exec)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started,
                  "peak_mb": int(hwm.split()[1]) / 1024}))
"""


def read_in_child(path: Path, timeout: float = 120) -> dict[str, Any]:
    """Read `path` in a fresh interpreter: its outcome, time and peak memory."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                          text=True, timeout=timeout, check=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_yaml_alias_bomb_is_refused_quickly_in_little_memory(tmp_path: Path) -> None:
    outcome = read_in_child(write(tmp_path, alias_bomb()), timeout=30)
    assert outcome["outcome"].startswith("config: ")
    assert "alias expansions" in outcome["outcome"]
    assert outcome["seconds"] < 5
    assert outcome["peak_mb"] < 150


def test_yaml_anchors_within_the_limit_work(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, """\
schema_version: "1.0"
common: &common {kind: 年金, flag: on}
data:
  - &first {code: A, name: &n 企业年金, <<: *common}
  - {code: B, name: *n, kind: 职业, <<: *common}
  - <<: [*common]
    code: C
    name: *first
""")
    first, second, third = read_all(path)
    assert first == ("A", "企业年金", "年金", "on")
    assert second == ("B", "企业年金", "职业", "on")  # a key of the row wins over a merged one
    assert third[0] == "C" and third[2:] == ("年金", "on")
    assert isinstance(third[1], Unfit)  # an alias of a whole mapping is not a value


def test_yaml_merge_key_needs_an_alias_of_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "  - {code: A, <<: plain}\n")
    assert str(refused(path)) == (f"{path} (line 3): a merge key (<<) takes an alias of a "
                                  "mapping (<<: *name) or a list of them")


def test_yaml_undefined_alias(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "  - {code: A, name: *nope}\n")
    assert str(refused(path)) == f"{path} (line 3): not valid YAML: found undefined alias 'nope'"


# ---------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(("text", "line", "what"), [
    pytest.param(HEADER + "  - {code: A, name: x}\n  - code: B\n    name: y\n    name: z\n",
                 6, "duplicate key 'name' in a mapping: each column may appear once per row",
                 id="block-row"),
    pytest.param(HEADER + "  - {code: A, code: B}\n", 3,
                 "duplicate key 'code' in a mapping: each column may appear once per row",
                 id="flow-row"),
    pytest.param(HEADER + "  - {code: A}\ndata:\n  - {code: B}\n", 4,
                 "duplicate top-level key 'data': it may appear once", id="second-data"),
    pytest.param('schema_version: "1.0"\nschema_version: "2.0"\ndata: []\n', 2,
                 "duplicate top-level key 'schema_version': it may appear once",
                 id="second-version"),
])
def test_yaml_duplicate_key_is_a_config_error_with_its_line(
        tmp_path: Path, loader: str, text: str, line: int, what: str) -> None:
    path = write(tmp_path, text)
    assert str(refused(path)) == f"{path} (line {line}): {what}"


# ---------------------------------------------------------------- non-scalar values

NON_SCALARS = HEADER + """\
  - {code: A, name: ok}
  - {code: B, name: [1, 2]}
  - code: C
    name: {a: 1}
  - {code: D, name: !!set {x, y}}
  - {code: E, name: !!binary aGVsbG8=}
  - {code: F, name: !!str 0701, note: !!int 0701}
"""


def test_yaml_non_scalar_values_are_unfit_with_their_reason(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, NON_SCALARS)
    src = YamlFileSource(make_spec(path), batch_size=1)
    batches = list(src.iter_batches(None))
    assert [type(b) for b in batches] == [list] + [UnfitBatch] * 4 + [list]
    rows = [row for batch in batches for row in batch]
    assert rows[0] == ("A", "ok", None)
    assert rows[5] == ("F", "0701", "0701")
    assert [(r[0], r[1].reason, str(r[1])) for r in rows[1:5]] == [
        ("B", "a list is not a single value (line 4)", "[…]"),
        ("C", "a mapping is not a single value (line 6)", "{…}"),
        ("D", "a set (!!set) is not a single value (line 7)", "!!set {…}"),
        ("E", "binary data (!!binary) is not text (line 8)", "!!binary …"),
    ]


@pytest.mark.parametrize("kind", ["text", "integer", "json", "other"])
def test_unfit_value_is_a_rejected_row_in_any_column(kind: Any) -> None:
    cols = [ColumnInfo("code", "text", nullable=False), ColumnInfo("v", kind)]
    conv = RowConverter(cols, ["code"], ZoneInfo("UTC"))
    batch = UnfitBatch([("A", None), ("B", Unfit("a list is not a single value (line 4)", "[…]"))])
    assert conv.convert_batch(batch) == [("A", None)]
    assert conv.rejected == 1
    assert [r.as_dict() for r in conv.rejects] == [
        {"key": {"code": "B"}, "column": "v", "value": "[…]",
         "reason": "a list is not a single value (line 4)"}]
    assert conv.rejected_keys == [("B",)]


def test_unfit_key_is_rejected_and_keeps_no_target_row() -> None:
    conv = RowConverter([ColumnInfo("code", "text", nullable=False)], ["code"], ZoneInfo("UTC"))
    assert conv.convert_batch(UnfitBatch([(Unfit("a list is not a single value", "[…]"),)])) == []
    assert conv.rejected == 1 and conv.rejected_keys == []


# ---------------------------------------------------------------- depth, key column, layout


@pytest.mark.parametrize("text", [
    pytest.param(HEADER.replace("data:\n", "data: ") + "[" * 20_000 + "]" * 20_000 + "\n",
                 id="nested-lists"),
    pytest.param(HEADER + "  - {code: A, name: " + "{a: " * 20_000 + "1" + "}" * 20_001 + "\n",
                 id="nested-mappings-in-a-row"),
])
def test_yaml_20000_deep_document_is_a_config_error(
        tmp_path: Path, loader: str, text: str) -> None:
    """Refused by the first rule it breaks (libyaml's own depth limit, a row that is a
    list, or refsync's depth limit): a config error naming the file and the line."""
    path = write(tmp_path, text)
    assert re.fullmatch(re.escape(str(path)) + r" \(line \d+(, column \d+)?\): .+",
                        str(refused(path)))


def test_yaml_nesting_deeper_than_64_levels_is_refused(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, HEADER + "  - {code: A, name: " + "[" * 70 + "]" * 70 + "}\n")
    assert str(refused(path)) == f"{path} (line 3): nested more than 64 levels deep"


def test_yaml_row_without_the_key_column_names_the_line(tmp_path: Path, loader: str) -> None:
    path = write(tmp_path, HEADER + "  - {code: A}\n  - {name: no key}\n")
    error = refused(path)
    assert str(error) == f"{path} (line 4): a row without the key column 'code'"
    assert error.hint == "every row needs code (primary_key)"


def test_yaml_key_column_is_looked_up_by_its_source_name(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "  - {code: A}\n  - {产品线代码: B}\n")
    columns = [{"source": "code", "target": "产品线代码"}]
    error = refused(path, key="产品线代码", source_config={
        "file_path": str(path), "schema_version": "1.0", "columns": columns})
    assert str(error) == f"{path} (line 4): a row without the key column 'code'"


def test_yaml_null_key_is_a_value_the_converter_rejects(tmp_path: Path) -> None:
    assert read_all(write(tmp_path, HEADER + "  - {code: ~, name: x}\n")) == [(None, "x")]


@pytest.mark.parametrize(("text", "message"), [
    pytest.param('schema_version: "1.0"\ndata: []\n---\ndata: []\n',
                 "(line 3): not valid YAML: expected a single document in the stream",
                 id="two-documents"),
    pytest.param(HEADER + "  - {code: A, name: !foo bar}\n",
                 "(line 3): not valid YAML: could not determine a constructor for the tag '!foo'",
                 id="unknown-tag"),
    pytest.param(HEADER + "  - {[a]: 1}\n",
                 "(line 3): a column name must be a single value, not a list, mapping or alias",
                 id="list-as-column-name"),
    pytest.param('schema_version: [1]\ndata: []\n', "(line 1): schema_version must be a single "
                 "value", id="version-list"),
    pytest.param(HEADER + "  - [code, A]\n",
                 "(line 3): data[0] must be a mapping of column: value, found a list",
                 id="row-is-list"),
])
def test_yaml_layout_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert str(refused(path)) == f"{path} {message}"


def test_yaml_schema_version_after_the_data_is_still_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  - {code: A}\nschema_version: 1.0\ndescription: 线\n")
    src = YamlFileSource(make_spec(path), batch_size=10).open()
    assert src.description == "线"
    assert [r for b in src.iter_batches(None) for r in b] == [("A",)]


def test_yaml_file_changed_between_check_and_read_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "  - {code: A}\n")
    src = YamlFileSource(make_spec(path), batch_size=10).open()
    path.write_text(HEADER + "  - {code: A}\n  - {code: B}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="changed while refsync read it"):
        list(src.iter_batches(None))


# ---------------------------------------------------------------- memory


def write_rows(path: Path, rows: int) -> Path:
    """A YAML file of `rows` rows of about 137 bytes each."""
    with path.open("w", encoding="utf-8") as f:
        f.write(HEADER)
        for i in range(rows):
            f.write(f'  - code: "C{i:07}"\n    name: 名称 {i} 企业年金\n    amount: {i}.50\n'
                    "    since: 2024-01-02\n    flag: on\n")
    return path


@pytest.mark.slow
def test_yaml_large_file_is_read_in_flat_memory(tmp_path: Path) -> None:
    """The rows stream through: 60,000 rows (8 MB) peak within 18 MB (300 bytes a row) of
    what 1,000 rows do, and under 150 MB; read whole, 300,000 such rows took 2.7 GB."""
    small = read_in_child(write_rows(tmp_path / "small.yml", 1_000))
    outcome = read_in_child(write_rows(tmp_path / "big.yml", 60_000))
    assert (small["outcome"], outcome["outcome"]) == ("1000 rows", "60000 rows")
    assert outcome["peak_mb"] - small["peak_mb"] < 18, (small, outcome)
    assert outcome["peak_mb"] < 150


# ---------------------------------------------------------------- through the CLI


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for key in list(os.environ):
        if key.startswith("WDH_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def write_config(root: Path, data: Path, **options: Any) -> Path:
    table = {"name": "lines", "target_table": "lines", "source_type": "config_file",
             "source_config": {"file_path": str(data), "schema_version": "1.0",
                               "columns": [{"source": "code", "target": "code"},
                                           {"source": "name", "target": "name"}]},
             "sync_mode": "delete_insert", "primary_key": "code", **options}
    config = root / "cfg.yml"
    config.write_text(yaml.safe_dump({"reference_sync": {
        "defaults": {"retry": {"attempts": 0, "backoff": [0]}}, "tables": [table]}},
        allow_unicode=True), encoding="utf-8")
    return config


def test_sync_non_scalar_values_are_rejects_never_python_text(project: Path) -> None:
    data = write(project, NON_SCALARS)
    env = {"WDH_DATABASE_URL": f"sqlite:///{project / 'w.sqlite'}"}
    config = write_config(project, data)
    runner = CliRunner()
    assert runner.invoke(app, ["init-db", "--create-tables", "-c", str(config)],
                         env=env).exit_code == 0
    failed = runner.invoke(app, ["sync", "--json", "-c", str(config)], env=env)
    assert failed.exit_code == 1
    [table] = json.loads(failed.stdout)["tables"]
    assert (table["status"], table["error_class"], table["rejected"]) == ("failed", "invalid", 4)
    assert [(r["key"], r["value"], r["reason"]) for r in table["rejects"]] == [
        ({"code": "B"}, "[…]", "a list is not a single value (line 4)"),
        ({"code": "C"}, "{…}", "a mapping is not a single value (line 6)"),
        ({"code": "D"}, "!!set {…}", "a set (!!set) is not a single value (line 7)"),
        ({"code": "E"}, "!!binary …", "binary data (!!binary) is not text (line 8)"),
    ]
    config = write_config(project, data, on_invalid="skip")
    skipped = runner.invoke(app, ["sync", "--json", "-c", str(config)], env=env)
    assert skipped.exit_code == 0
    with sqlite3.connect(project / "w.sqlite") as conn:
        rows = conn.execute("SELECT code, name FROM lines ORDER BY code").fetchall()
    conn.close()
    assert rows == [("A", "ok"), ("F", "0701")]


@pytest.mark.parametrize(("text", "options", "error", "hint"), [
    pytest.param(HEADER + "  - {code: A}\ndata: []\n", {},
                 "{data} (line 4): duplicate top-level key 'data': it may appear once",
                 "fix the config file and rerun", id="second-data"),
    pytest.param(HEADER + "  - {code: A}\n", {"max_yaml_bytes": 10},
                 "{data} is 42 bytes, over the limit of 10 bytes (max_yaml_bytes)",
                 "raise max_yaml_bytes for this table or in defaults (e.g. max_yaml_bytes: "
                 "256MB), or split the file", id="oversize"),
    pytest.param(HEADER + "  - {name: x}\n", {},
                 "{data} (line 3): a row without the key column 'code'",
                 "every row needs code (primary_key)", id="no-key"),
])
def test_sync_yaml_config_errors_fail_the_table_as_config(
        project: Path, text: str, options: dict[str, Any], error: str, hint: str) -> None:
    data = write(project, HEADER + "  - {code: A}\n")
    env = {"WDH_DATABASE_URL": f"sqlite:///{project / 'w.sqlite'}"}
    runner = CliRunner()
    assert runner.invoke(app, ["init-db", "--create-tables", "-c",
                               str(write_config(project, data))], env=env).exit_code == 0
    write(project, text)
    config = write_config(project, data, **options)
    result = runner.invoke(app, ["sync", "--json", "-c", str(config)], env=env)
    assert result.exit_code == 1
    [table] = json.loads(result.stdout)["tables"]
    assert (table["status"], table["error_class"]) == ("failed", "config")
    assert (table["error"], table["hint"]) == (error.format(data=data), hint)


def read_position(pid: int, path: Path) -> int:
    """How far process `pid` has read into `path` (-1: it does not have it open)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in os.listdir(fd_dir):
            if os.readlink(fd_dir / fd) == str(path):
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                return int(info.split("pos:")[1].split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return -1


class StderrLines:
    """A child's stderr read line by line in a thread, so the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.seen = threading.Event()
        self.wanted = ""
        assert proc.stderr is not None
        self.thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)
            if self.wanted and self.wanted in line:
                self.seen.set()

    def wait_for(self, text: str, timeout: float) -> None:
        self.wanted = text
        if not any(text in line for line in self.lines):
            assert self.seen.wait(timeout), f"no {text!r} in {''.join(self.lines)}"


@pytest.mark.slow
@pytest.mark.parametrize("phase", [pytest.param("check", id="while-open-checks-the-file"),
                                   pytest.param("read", id="while-the-rows-are-read")])
def test_sigterm_while_parsing_a_large_yaml_ends_the_sync(project: Path, phase: str) -> None:
    """`refsync sync` reading a 200,000-row file (7 MB, limit raised) stops on SIGTERM 1 MB
    into the first read (the check, on the main thread) or the second (the rows, read ahead
    in a thread): exit 143 within 10 s, the table `interrupted`, nothing applied."""
    data = write(project, HEADER + "  - {code: A, name: a}\n")
    db = project / "w.sqlite"
    env = {**os.environ, "WDH_DATABASE_URL": f"sqlite:///{db}"}
    config = write_config(project, data, max_yaml_bytes="1GB")
    refsync = [sys.executable, "-m", "refsync"]
    subprocess.run([*refsync, "init-db", "--create-tables", "-c", str(config)], env=env,
                   cwd=project, check=True, capture_output=True, timeout=60)
    with data.open("w", encoding="utf-8") as f:
        f.write(HEADER)
        for i in range(0, 200_000, 1000):
            f.write("".join(f"  - {{code: C{j:07}, name: 名称 {j}}}\n" for j in range(i, i + 1000)))
    proc = subprocess.Popen([*refsync, "sync", "--json", "-v", "-c", str(config)], env=env,
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        stderr = StderrLines(proc)
        if phase == "read":
            stderr.wait_for(f"checked 200000 rows in {data}", timeout=120)
        deadline = time.monotonic() + 60
        while read_position(proc.pid, data) < 1_000_000:  # well into the file
            assert proc.poll() is None, "".join(stderr.lines)
            assert time.monotonic() < deadline, "refsync never read 1 MB of the YAML file"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        proc.wait(timeout=10)
        assert time.monotonic() - signalled < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    stderr.thread.join(timeout=10)
    assert proc.stderr is not None
    proc.stderr.close()
    assert proc.returncode == 143, "".join(stderr.lines)
    [table] = json.loads(out)["tables"]
    assert table["status"] == "interrupted"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM lines").fetchone() == (0,)
    conn.close()
