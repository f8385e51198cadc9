"""refsync.demo_data: the demo's legacy database, product lines, config, and the repo's
production config files that share its column types."""

from __future__ import annotations

import importlib.util
import random
import re
import sqlite3
import sys
from contextlib import closing
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from refsync import demo_data as dd
from refsync.config import ReferenceSyncConfig, SqlSourceConfig, load_config

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 14, 0, 0)


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(path)) as conn:
        return {
            t.name: conn.execute(f"SELECT * FROM {t.name} ORDER BY {t.code_column}").fetchall()
            for t in dd.LEGACY_TABLES
        }


@pytest.fixture(scope="module")
def legacy_10k(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Any, ...]]]:
    path = tmp_path_factory.mktemp("legacy") / "legacy.db"
    dd.build_legacy_sqlite(path, 10_000)
    return dump(path)


def varchar_length(sql_type: str) -> int:
    match = re.fullmatch(r"varchar\((\d+)\)", sql_type)
    assert match, sql_type
    return int(match[1])


def demo_section(legacy_url: str = "sqlite:////tmp/legacy.db",
                 product_lines: str = "/tmp/product_lines.yml") -> ReferenceSyncConfig:
    doc = yaml.safe_load(dd.demo_config_text(legacy_url, product_lines))
    return ReferenceSyncConfig.model_validate(doc["reference_sync"])


# ---------------------------------------------------------------- legacy SQLite


def test_build_legacy_sqlite_same_seed_same_rows(tmp_path: Path) -> None:
    dd.build_legacy_sqlite(tmp_path / "a.db", 300, seed=3)
    dd.build_legacy_sqlite(tmp_path / "b.db", 300, seed=3)
    dd.build_legacy_sqlite(tmp_path / "c.db", 300, seed=4)
    assert dump(tmp_path / "a.db") == dump(tmp_path / "b.db")
    assert dump(tmp_path / "a.db") != dump(tmp_path / "c.db")


def test_build_legacy_sqlite_rows_each_table(legacy_10k: dict[str, list[tuple[Any, ...]]]) -> None:
    assert {name: len(rows) for name, rows in legacy_10k.items()} == {
        "annuity_plan": 10_000, "portfolio_plan": 10_000, "organization": 10_000,
    }
    assert [r[0] for r in legacy_10k["annuity_plan"][:2]] == ["P000001", "P000002"]
    assert legacy_10k["portfolio_plan"][-1][0] == "PF010000"
    assert legacy_10k["organization"][-1][0] == "ORG10000"


def test_build_legacy_sqlite_codes_widen_for_large_tables(tmp_path: Path) -> None:
    assert dd.code_width(1_000_000, 6) == 7
    assert dd.plan_code(1, dd.code_width(1_000_000, 6)) == "P0000001"
    dd.build_legacy_sqlite(tmp_path / "small.db", 3)
    assert [r[0] for r in dump(tmp_path / "small.db")["organization"]] == [
        "ORG00001", "ORG00002", "ORG00003"]


def test_build_legacy_sqlite_rebuild_replaces_tables(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    dd.build_legacy_sqlite(path, 50)
    dd.build_legacy_sqlite(path, 20)
    assert {name: len(rows) for name, rows in dump(path).items()} == {
        "annuity_plan": 20, "portfolio_plan": 20, "organization": 20,
    }


def test_build_legacy_sqlite_schema_has_updated_at_index(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    dd.build_legacy_sqlite(path, 10)
    with closing(sqlite3.connect(path)) as conn:
        for table in dd.LEGACY_TABLES:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table.name})")]
            assert tuple(cols) == table.columns
            pk = [r[1] for r in conn.execute(f"PRAGMA table_info({table.name})") if r[5]]
            assert pk == [table.code_column]
            indexed = {
                conn.execute(f"PRAGMA index_info({ix[1]})").fetchone()[2]
                for ix in conn.execute(f"PRAGMA index_list({table.name})")
            }
            assert "updated_at" in indexed


def test_build_legacy_sqlite_declares_the_target_lengths(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    dd.build_legacy_sqlite(path, 1)
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        inspector = sa.inspect(engine)
        for t in demo_section().tables[:3]:
            sc = t.source_config
            assert isinstance(sc, SqlSourceConfig)
            reflected = {c["name"]: c["type"] for c in inspector.get_columns(sc.table)}
            for c in sc.columns:
                declared = reflected[c.source]
                assert isinstance(declared, sa.String)
                assert f"varchar({declared.length})" == dd.DEMO_TARGET_TYPES[t.name][c.target]
            assert isinstance(reflected["updated_at"], sa.DateTime)
    finally:
        engine.dispose()
    with closing(sqlite3.connect(path)) as conn:
        for table in dd.LEGACY_TABLES:
            stored = conn.execute(f"SELECT typeof(updated_at) FROM {table.name}").fetchall()
            assert stored == [("text",)]


def test_legacy_rows_updated_at_spread_over_2015_to_2025(
    legacy_10k: dict[str, list[tuple[Any, ...]]],
) -> None:
    for rows in legacy_10k.values():
        stamps = [r[-1] for r in rows]
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", s) for s in stamps)
        assert min(stamps) < "2016" and max(stamps) >= "2025"
        assert max(stamps) < "2026"


def test_legacy_rows_look_real_and_a_little_dirty(
    legacy_10k: dict[str, list[tuple[Any, ...]]],
) -> None:
    plans = legacy_10k["annuity_plan"]
    assert {r[2] for r in plans} == set(dd.PLAN_TYPES)
    assert any(r[1].endswith("有限公司企业年金计划") for r in plans)
    null_customers = sum(r[3] is None for r in plans)
    assert 50 <= null_customers <= 200  # ~1%
    names = [v for r in plans for v in (r[1], r[3]) if v] + [
        r[2] for r in legacy_10k["portfolio_plan"]] + [r[1] for r in legacy_10k["organization"]]
    assert any("\t" in v for v in names)
    assert any("\n" in v for v in names)
    assert any('"' in v or "'" in v for v in names)
    assert any(any(ord(ch) > 0xFFFF for ch in v) for v in names)  # emoji
    plan_codes = {r[0] for r in plans}
    assert all(r[1] in plan_codes for r in legacy_10k["portfolio_plan"])
    assert {r[3] for r in legacy_10k["portfolio_plan"]} == set(dd.PORTFOLIO_TYPES)
    org_names = [r[1] for r in legacy_10k["organization"]]
    assert any(name.endswith(("分公司", "营业部", "中心支公司")) for name in org_names)


# ---------------------------------------------------------------- mutate


def test_mutation_counts_mostly_updates() -> None:
    assert dd.mutation_counts(10_000, 0.01) == (80, 10, 10)
    assert dd.mutation_counts(50, 0.01) == (1, 0, 0)
    assert dd.mutation_counts(10_000, 0) == (0, 0, 0)
    assert dd.mutation_counts(0, 0.5) == (0, 0, 0)


def test_mutate_legacy_sqlite_counts_match_database_changes(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    dd.build_legacy_sqlite(path, 2_000)
    before = dump(path)
    counts = dd.mutate_legacy_sqlite(path, fraction=0.01, now=NOW)
    after = dump(path)
    stamp = "2026-11-27 14:00:00"
    for table in dd.LEGACY_TABLES:
        old = {r[0]: r for r in before[table.name]}
        new = {r[0]: r for r in after[table.name]}
        updated = [c for c in old.keys() & new.keys() if old[c] != new[c]]
        inserted = sorted(new.keys() - old.keys())
        deleted = old.keys() - new.keys()
        assert counts[table.name] == {
            "updated": len(updated), "inserted": len(inserted), "deleted": len(deleted)}
        assert counts[table.name] == {"updated": 16, "inserted": 2, "deleted": 2}
        name_at = table.columns.index(table.name_column)
        for c in updated:
            assert new[c][-1] == stamp
            assert new[c][name_at] != old[c][name_at]
        assert all(new[c][-1] == stamp for c in inserted)
        assert inserted == [f"{table.prefix}{n:0{table.min_width}d}" for n in (2001, 2002)]
    referenced = {r[1] for r in before["portfolio_plan"]}
    gone = {r[0] for r in before["annuity_plan"]} - {r[0] for r in after["annuity_plan"]}
    assert not gone & referenced
    kept_plans = {r[0] for r in after["annuity_plan"]}
    assert all(r[1] in kept_plans for r in after["portfolio_plan"] if r[-1] == stamp)


def test_mutate_legacy_sqlite_is_deterministic(tmp_path: Path) -> None:
    for name in ("a.db", "b.db"):
        dd.build_legacy_sqlite(tmp_path / name, 500)
        dd.mutate_legacy_sqlite(tmp_path / name, fraction=0.05, seed=5, now=NOW)
    assert dump(tmp_path / "a.db") == dump(tmp_path / "b.db")


def test_mutate_legacy_sqlite_zero_fraction_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    dd.build_legacy_sqlite(path, 100)
    before = dump(path)
    counts = dd.mutate_legacy_sqlite(path, fraction=0)
    assert dump(path) == before
    assert all(c == {"updated": 0, "inserted": 0, "deleted": 0} for c in counts.values())


def test_mutate_legacy_sqlite_default_now_is_shanghai_wall_clock_to_the_second(
    tmp_path: Path,
) -> None:
    path = tmp_path / "legacy.db"
    dd.build_legacy_sqlite(path, 200)
    dd.mutate_legacy_sqlite(path, fraction=0.05)
    latest = max(r[-1] for r in dump(path)["organization"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", latest)
    assert latest >= "2026"


def test_mutate_legacy_sqlite_rejects_bad_fraction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fraction"):
        dd.mutate_legacy_sqlite(tmp_path / "legacy.db", fraction=1.5)


def test_mutate_legacy_sqlite_missing_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="build_legacy_sqlite"):
        dd.mutate_legacy_sqlite(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()


# ---------------------------------------------------------------- product lines


def test_write_product_lines_schema_version_and_unique_codes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "product_lines.yml"
    dd.write_product_lines(path)
    text = path.read_text(encoding="utf-8")
    assert "企业年金" in text  # allow_unicode: not \u-escaped
    doc = yaml.safe_load(text)
    assert doc["schema_version"] == "1.0"
    assert doc["description"]
    codes = [row["产品线代码"] for row in doc["data"]]
    assert len(codes) == len(set(codes)) >= 8
    assert doc["data"][0] == {"产品线代码": "PL001", "产品线名称": "企业年金"}


def test_repo_product_lines_match_the_seed() -> None:
    doc = yaml.safe_load((REPO / "config/reference_data/product_lines.yml").read_text("utf-8"))
    assert doc["schema_version"] == "1.0"
    rows = {row["产品线代码"]: row["产品线名称"] for row in doc["data"]}
    assert len(rows) == len(doc["data"])
    assert {k: rows[k] for k in ("PL001", "PL002", "PL003")} == {
        "PL001": "企业年金", "PL002": "职业年金", "PL003": "养老保障"}
    assert doc["data"] == dd.product_line_rows()


# ---------------------------------------------------------------- configs


def test_demo_config_text_validates() -> None:
    section = demo_section()
    assert [t.name for t in section.tables] == ["年金计划", "组合计划", "组织架构", "产品线"]
    assert [t.source_type for t in section.tables] == ["sql", "sql", "sql", "config_file"]
    assert [t.sync_mode for t in section.tables] == ["upsert", "upsert", "upsert", "delete_insert"]
    assert [t.name for t in section.tables if t.incremental] == ["组织架构"]
    assert section.tables[1].depends_on == ["年金计划"]
    assert section.defaults.batch_size == 5000
    assert section.defaults.retry.attempts == 1
    assert section.defaults.retry.backoff == [0.1]


@pytest.mark.parametrize(
    ("url", "product_lines"),
    [
        pytest.param("sqlite:////tmp/demo/legacy.db", "/tmp/demo/product_lines.yml", id="posix"),
        pytest.param("sqlite:///C:\\refsync demo\\legacy.db", "C:\\refsync demo\\pl.yml",
                     id="windows-backslashes"),
        pytest.param('sqlite:////tmp/演示 "x"/legacy.db', "/tmp/演示 'x'/产品线.yml",
                     id="quotes-and-chinese"),
    ],
)
def test_demo_config_text_keeps_paths_verbatim(url: str, product_lines: str) -> None:
    section = demo_section(url, product_lines)
    sql_sources = [t.source_config for t in section.tables if t.source_type == "sql"]
    assert len(sql_sources) == 3
    for sc in sql_sources:
        assert isinstance(sc, SqlSourceConfig) and sc.url is not None
        assert sc.url.get_secret_value() == url
    assert str(section.tables[3].source_config.file_path) == str(Path(product_lines))  # type: ignore[union-attr]


def test_demo_config_is_the_seed_config_but_for_the_source() -> None:
    seed = load_config(REPO / "config/data_sources.yml").section
    demo = demo_section()

    def shape(section: ReferenceSyncConfig) -> list[dict[str, Any]]:
        out = []
        for t in section.tables:
            doc = t.model_dump(exclude={"source_type", "depends_on"})
            doc["source_config"].pop("url", None)
            doc["source_config"].pop("file_path", None)
            out.append(doc)
        return out

    assert shape(demo) == shape(seed)


def test_repo_data_sources_yml_validates() -> None:
    doc = yaml.safe_load((REPO / "config/data_sources.yml").read_text(encoding="utf-8"))
    section = ReferenceSyncConfig.model_validate(doc["reference_sync"])
    assert section.timezone == "Asia/Shanghai"
    assert section.schedule == "0 1 * * *"
    assert [t.source_type for t in section.tables] == [
        "legacy_mysql", "legacy_mysql", "legacy_mysql", "config_file"]
    assert load_config(REPO / "config/data_sources.yml").section == section


# ---------------------------------------------------------------- column types


def test_demo_target_types_cover_every_configured_column() -> None:
    for t in demo_section().tables:
        columns = t.mapped_columns or list(dd.product_line_rows()[0])
        assert list(dd.DEMO_TARGET_TYPES[t.target_table]) == columns
        assert t.primary_key == [dd.DEMO_PRIMARY_KEYS[t.target_table]]


@pytest.mark.parametrize("dirt", [pytest.param(dd.DEMO_DIRT, id="demo"),
                                  pytest.param(dd.BENCH_DIRT, id="bench")])
def test_generated_values_fit_demo_target_types(dirt: dd.Dirt) -> None:
    rows = {
        "annuity_plan": dd.iter_annuity_plan_rows(20_000, 1, dirt),
        "portfolio_plan": dd.iter_portfolio_plan_rows(20_000, 999_999, 1, dirt),
        "organization": dd.iter_organization_rows(20_000, 1, dirt),
    }
    section = demo_section()
    for t in section.tables[:3]:
        sc = t.source_config
        assert isinstance(sc, SqlSourceConfig)
        table = next(lt for lt in dd.LEGACY_TABLES if lt.name == sc.table)
        limits = [
            (table.columns.index(c.source), varchar_length(dd.DEMO_TARGET_TYPES[t.name][c.target]))
            for c in sc.columns
        ]
        longest = [0] * len(table.columns)
        for row in rows[table.name]:
            for i, _limit in limits:
                value = row[i]
                if value is not None:
                    longest[i] = max(longest[i], len(value))
        for i, limit in limits:
            assert 0 < longest[i] <= limit, (t.name, table.columns[i], longest[i], limit)
    for row in dd.product_line_rows():
        for col, value in row.items():
            assert len(value) <= varchar_length(dd.DEMO_TARGET_TYPES["产品线"][col])


def test_deploy_sql_is_the_rendered_ddl() -> None:
    text = (REPO / "deploy/sql/reference_tables.sql").read_text(encoding="utf-8")
    assert text == dd.reference_tables_postgres_ddl()
    for table in dd.DEMO_TARGET_TYPES:
        assert f'CREATE TABLE IF NOT EXISTS "business"."{table}" (' in text
    assert "\"_source\" varchar(20) NOT NULL DEFAULT 'authoritative'" in text


# ---------------------------------------------------------------- bench TSV encoding


def load_bench_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_mysql", REPO / "bench/gen_mysql.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gen_mysql", module)
    spec.loader.exec_module(module)
    return module


def test_bench_tsv_round_trips_every_dirty_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = load_bench_module(monkeypatch)
    rng = random.Random(1)
    values = [kind(rng, "甘肃中电电力集团股份有限公司") for kind in dd.DIRTY_KINDS.values()]
    rows = [("P1", v, None, "a\\tb\\N", "2026-01-01 00:00:00") for v in [*values, "\0x"]]
    path = tmp_path / "t.tsv"
    assert gen.write_tsv(path, rows) == len(rows)
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(rows)
    assert list(gen.iter_tsv(path)) == rows
    assert gen.tsv_field(None) == "\\N"
    assert gen.tsv_field("\\N") == "\\\\N"
    assert gen.tsv_field("NULL") == "NULL"
