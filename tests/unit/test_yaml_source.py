"""The config_file source: versioned YAML reference data (DESIGN 3.2, 4.7)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from refsync.config import TableSpec
from refsync.errors import ConfigError, FileMissing, SchemaVersionMismatch
from refsync.rules import Unfit
from refsync.sources import YamlFileSource


def make_spec(path: str | Path, version: Any = "1.0", columns: list[dict[str, str]] | None = None,
              key: str = "产品线代码", **options: Any) -> TableSpec:
    sc: dict[str, Any] = {"file_path": str(path), "schema_version": version}
    if columns is not None:
        sc["columns"] = columns
    return TableSpec.model_validate({
        "name": "产品线", "target_table": "产品线", "source_type": "config_file",
        "source_config": sc, "sync_mode": "delete_insert", "primary_key": key, **options})


def write(tmp_path: Path, text: str, name: str = "product_lines.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def read_all(src: YamlFileSource) -> list[tuple[Any, ...]]:
    return [row for batch in src.iter_batches(None) for row in batch]


SEED = """\
# config/reference_data/product_lines.yml
schema_version: "1.0"
description: "产品线 reference data for annuity performance domain"

data:
  - 产品线代码: "PL001"
    产品线名称: "企业年金"
  - 产品线代码: "PL002"
    产品线名称: "职业年金"
  - 产品线代码: "PL003"
    产品线名称: "养老保障"
"""


def test_yaml_source_reads_the_seed_file(tmp_path: Path) -> None:
    src = YamlFileSource(make_spec(write(tmp_path, SEED)), batch_size=5000).open()
    assert src.columns == ["产品线代码", "产品线名称"]
    assert src.cursor_column is None
    assert read_all(src) == [("PL001", "企业年金"), ("PL002", "职业年金"), ("PL003", "养老保障")]
    assert src.description == "产品线 reference data for annuity performance domain"
    assert src.count_null_cursor() == 0
    assert src.warnings == []


def test_yaml_source_relative_path_starts_at_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config" / "reference_data").mkdir(parents=True)
    write(tmp_path / "config" / "reference_data", SEED)
    monkeypatch.chdir(tmp_path)
    src = YamlFileSource(make_spec("config/reference_data/product_lines.yml"), batch_size=10)
    assert len(read_all(src)) == 3
    assert str(tmp_path) in src.describe()


def test_yaml_source_missing_file_names_the_absolute_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = YamlFileSource(make_spec("config/reference_data/nope.yml"), batch_size=10)
    with pytest.raises(FileMissing) as info:
        src.open()
    expected = os.path.join(str(tmp_path), "config", "reference_data", "nope.yml")
    assert str(info.value) == f"reference data file not found: {expected}"
    assert info.value.error_class == "file_missing"


@pytest.mark.parametrize(("written", "expected", "ok"), [
    pytest.param('"1.0"', "1.0", True, id="quoted"),
    pytest.param("1.0", "1.0", True, id="yaml-float"),
    pytest.param("1.10", "1.10", True, id="float-as-written"),
    pytest.param("2", "2", True, id="int"),
    pytest.param('"2.0"', "1.0", False, id="other-version"),
    pytest.param("1", "1.0", False, id="int-is-not-float"),
])
def test_yaml_source_schema_version(tmp_path: Path, written: str, expected: str, ok: bool) -> None:
    path = write(tmp_path, f"schema_version: {written}\ndata: []\n")
    src = YamlFileSource(make_spec(path, version=expected), batch_size=10)
    if ok:
        assert read_all(src) == []
        return
    with pytest.raises(SchemaVersionMismatch) as info:
        src.open()
    assert str(info.value) == (
        f"{path} has schema_version {written.strip(chr(34))!r}; the config expects {expected!r}")
    assert info.value.error_class == "schema_version"


def test_yaml_source_config_version_given_as_float(tmp_path: Path) -> None:
    path = write(tmp_path, "schema_version: 1.0\ndata: []\n")
    assert read_all(YamlFileSource(make_spec(path, version=1.0), batch_size=10)) == []


def test_yaml_source_without_schema_version(tmp_path: Path) -> None:
    path = write(tmp_path, "data: []\n")
    with pytest.raises(SchemaVersionMismatch, match="has no schema_version"):
        YamlFileSource(make_spec(path), batch_size=10).open()


@pytest.mark.parametrize("data", [
    pytest.param("data: []", id="empty"),
    pytest.param("data:", id="null"),
    pytest.param("data: null", id="explicit-null"),
    pytest.param("", id="absent"),
])
def test_yaml_source_no_rows(tmp_path: Path, data: str) -> None:
    path = write(tmp_path, f'schema_version: "1.0"\n{data}\n')
    src = YamlFileSource(make_spec(path), batch_size=10).open()
    assert read_all(src) == []
    assert list(src.iter_batches(None)) == []
    assert src.columns == ["产品线代码"]  # the key alone, so an emptied file can still be diffed


def test_yaml_source_columns_are_the_union_of_keys_in_first_seen_order(tmp_path: Path) -> None:
    path = write(tmp_path, """\
schema_version: "1.0"
data:
  - {code: A, name: a}
  - {code: B, extra: 1}
  - {name: c, code: C, since: 2024-01-02}
""")
    src = YamlFileSource(make_spec(path, key="code"), batch_size=10).open()
    assert src.columns == ["code", "name", "extra", "since"]
    assert read_all(src) == [("A", "a", None, None), ("B", None, "1", None),
                             ("C", "c", None, "2024-01-02")]


def test_yaml_source_drops_tracking_keys(tmp_path: Path) -> None:
    path = write(tmp_path, """\
schema_version: "1.0"
data:
  - {产品线代码: PL001, _source: auto_derived, _needs_review: true, 产品线名称: 企业年金,
     _derived_from_domain: x, _derived_at: 2024-01-01}
""")
    src = YamlFileSource(make_spec(path), batch_size=10).open()
    assert src.columns == ["产品线代码", "产品线名称"]
    assert read_all(src) == [("PL001", "企业年金")]


def test_yaml_source_columns_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, """\
schema_version: "1.0"
data:
  - {code: PL001, name: 企业年金, note: ignored}
  - {code: PL002}
""")
    spec = make_spec(path, columns=[{"source": "code", "target": "产品线代码"},
                                    {"source": "name", "target": "产品线名称"}])
    src = YamlFileSource(spec, batch_size=10).open()
    assert src.columns == ["产品线代码", "产品线名称"]
    assert read_all(src) == [("PL001", "企业年金"), ("PL002", None)]
    assert src.warnings == [f"{path}: keys not in source_config.columns are ignored: note"]


def test_yaml_source_mapped_key_in_no_row_warns(tmp_path: Path) -> None:
    path = write(tmp_path, 'schema_version: "1.0"\ndata:\n  - {code: PL001}\n')
    spec = make_spec(path, columns=[{"source": "code", "target": "产品线代码"},
                                    {"source": "nmae", "target": "产品线名称"}])
    src = YamlFileSource(spec, batch_size=10).open()
    assert read_all(src) == [("PL001", None)]
    assert "no row has key nmae" in src.warnings[0]


def test_yaml_source_batches(tmp_path: Path) -> None:
    rows = "\n".join(f"  - {{code: C{i:03}}}" for i in range(7))
    path = write(tmp_path, f'schema_version: "1.0"\ndata:\n{rows}\n')
    src = YamlFileSource(make_spec(path, key="code"), batch_size=3)
    assert [len(b) for b in src.iter_batches(None)] == [3, 3, 1]
    assert [len(b) for b in src.iter_batches(None)] == [3, 3, 1]  # a retry reads it again


def test_yaml_source_values_keep_their_text(tmp_path: Path) -> None:
    path = write(tmp_path, r"""schema_version: "1.0"
data:
  - {code: "007", name: "tab\there\nnl \\ \\N 'q' \"dq\" 😀 𠀀", flag: true, n: 12.50}
""")
    assert read_all(YamlFileSource(make_spec(path, key="code"), batch_size=3)) == [
        ("007", "tab\there\nnl \\ \\N 'q' \"dq\" 😀 𠀀", "true", "12.50")]


def test_yaml_source_plain_scalars_keep_their_source_text(tmp_path: Path) -> None:
    """DESIGN 3.2: no YAML 1.1 octal, float, base-60, boolean or date re-typing of row
    values (nor of row keys); nulls stay NULL; a nested value is Unfit (its row is
    rejected, see test_yaml_strict.py); the file's keys load as YAML says."""
    path = write(tmp_path, """\
schema_version: 1.10
description: 产品线
data:
  - {code: 0701, ver: 1.10, at: 12:30, flag: on, off: yes, day: 2024-01-02, big: 0x1F,
     inf: .inf, n1: null, n2: ~, n3: , q: "0701", nested: {a: 1, b: [on, 0701]}}
""")
    src = YamlFileSource(make_spec(path, version="1.10", key="code"), batch_size=10)
    [row] = read_all(src)
    assert row[:-1] == ("0701", "1.10", "12:30", "on", "yes", "2024-01-02", "0x1F",
                        ".inf", None, None, None, "0701")
    assert isinstance(row[-1], Unfit)
    assert row[-1].reason == "a mapping is not a single value (line 5)"
    assert src.columns == ["code", "ver", "at", "flag", "off", "day", "big", "inf", "n1",
                           "n2", "n3", "q", "nested"]


@pytest.mark.parametrize(("text", "message"), [
    pytest.param('schema_version: "1.0"\ndata: [{code: A}, {code: B}\n', "not valid YAML",
                 id="bad-yaml"),
    pytest.param("- just\n- a list\n", "expected a mapping", id="top-level-list"),
    pytest.param("", "found empty", id="empty-file"),
    pytest.param('schema_version: "1.0"\ndata: {code: A}\n', "data must be a list", id="data-map"),
    pytest.param('schema_version: "1.0"\ndata:\n  - {code: A}\n  - plain\n',
                 "data[1] must be a mapping", id="row-not-mapping"),
    pytest.param('schema_version: "1.0"\ndata:\n  - {code: A}\n  -\n',
                 "data[1] must be a mapping of column: value, found null", id="null-row"),
    pytest.param('schema_version: "1.0"\ndata: !!python/object:os.system {}\n',
                 "not valid YAML", id="unsafe-tag"),
])
def test_yaml_source_malformed_content(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        YamlFileSource(make_spec(path, key="code"), batch_size=10).open()
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_yaml_source_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'schema_version: "1.0"\ndata:\n  - {code: A\n')
    with pytest.raises(ConfigError, match=r"\(line \d+, column \d+\)"):
        YamlFileSource(make_spec(path), batch_size=10).open()


def test_yaml_source_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gbk.yml"
    path.write_bytes('schema_version: "1.0"\ndata:\n  - {名称: 企业年金}\n'.encode("gbk"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        YamlFileSource(make_spec(path), batch_size=10).open()


def test_yaml_source_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yml"
    path.write_bytes(b"\xef\xbb\xbf" + SEED.encode("utf-8"))
    assert len(read_all(YamlFileSource(make_spec(path), batch_size=10))) == 3


def test_yaml_source_directory_is_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileMissing, match="is a directory"):
        YamlFileSource(make_spec(tmp_path), batch_size=10).open()
