"""The config contract (DESIGN 3.1, 3.2): the seed's section validates as it stands, every
error is reported at once with its path, and the environment comes in through pydantic-settings.

Pure: no database is touched.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from refsync.config import (
    LoadedConfig,
    ReferenceSyncConfig,
    Settings,
    load_config,
    load_settings,
)
from refsync.errors import ConfigError, UsageError
from refsync.table_graph import topological_order

REPO = Path(__file__).resolve().parents[2]
SEED_CONFIG = REPO / "config" / "data_sources.yml"
SEED_NAMES = ["年金计划", "组合计划", "组织架构", "产品线"]


# ---------------------------------------------------------------- helpers


def sql_table(name: str, **kw: Any) -> dict[str, Any]:
    """A valid `source_type: sql` table entry; `sc` extends its source_config."""
    sc = {"url": "sqlite:///legacy.sqlite", "table": "t",
          "columns": [{"source": "a", "target": "k"}, {"source": "b", "target": "v"}],
          **kw.pop("sc", {})}
    return {"name": name, "target_table": name, "source_type": "sql", "source_config": sc,
            "primary_key": "k", **kw}


def mysql_table(name: str, **kw: Any) -> dict[str, Any]:
    sc = {"table": "t", "columns": [{"source": "a", "target": "k"}], **kw.pop("sc", {})}
    return {"name": name, "target_table": name, "source_type": "legacy_mysql",
            "source_config": sc, "primary_key": "k", **kw}


def file_table(name: str, **kw: Any) -> dict[str, Any]:
    sc = {"file_path": "config/reference_data/product_lines.yml", "schema_version": "1.0",
          **kw.pop("sc", {})}
    return {"name": name, "target_table": name, "source_type": "config_file",
            "source_config": sc, "sync_mode": "delete_insert", "primary_key": "产品线代码", **kw}


def write(tmp_path: Path, doc: Any, name: str = "cfg.yml") -> Path:
    path = tmp_path / name
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, section: dict[str, Any]) -> LoadedConfig:
    return load_config(write(tmp_path, {"reference_sync": section}))


def errors_of(tmp_path: Path, section: dict[str, Any], *, wrap: bool = True) -> list[str]:
    """The error lines load_config reports for `section` (it must fail)."""
    path = write(tmp_path, {"reference_sync": section} if wrap else section)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    exc = info.value
    assert exc.error_class == "config"
    assert str(path.resolve()) in exc.message, "the error names the file"
    for line in exc.errors:
        assert line in exc.message, "every error line is in the message shown to the user"
    return exc.errors


def one_error(tmp_path: Path, section: dict[str, Any], *fragments: str) -> str:
    """Exactly one error, containing every fragment."""
    errors = errors_of(tmp_path, section)
    assert len(errors) == 1, errors
    for fragment in fragments:
        assert fragment in errors[0], errors
    return errors[0]


# ---------------------------------------------------------------- the seed


def test_seed_section_as_shipped_validates() -> None:
    loaded = load_config(SEED_CONFIG)
    section = loaded.section
    assert loaded.path == SEED_CONFIG
    assert section.enabled is True
    assert section.schedule == "0 1 * * *"
    assert section.timezone == "Asia/Shanghai"
    assert [t.name for t in section.tables] == SEED_NAMES
    assert [t.source_type for t in section.tables] == [
        "legacy_mysql", "legacy_mysql", "legacy_mysql", "config_file"]
    assert [t.sync_mode for t in section.tables] == ["upsert", "upsert", "upsert", "delete_insert"]
    assert [t.primary_key for t in section.tables] == [
        ["年金计划号"], ["组合代码"], ["组织代码"], ["产品线代码"]]
    assert [t.qualified_target for t in section.tables] == [f"business.{n}" for n in SEED_NAMES]
    assert section.tables[0].mapped_columns == ["年金计划号", "计划名称", "计划类型", "客户名称"]
    # the YAML file's keys, with the column types init-db gives them
    assert section.tables[3].mapped_columns == ["产品线代码", "产品线名称"]
    org = section.tables[2].incremental
    assert org is not None
    assert org.updated_at_column == "updated_at"
    assert org.where == "updated_at >= :last_synced_at"
    assert [t.incremental is not None for t in section.tables] == [False, False, True, False]


def test_seed_defaults_are_the_documented_ones() -> None:
    section = load_config(SEED_CONFIG).section
    for t in section.tables:
        o = t.options
        assert o.batch_size == 5000
        assert o.retry.attempts == 3
        assert o.retry.backoff == [2, 4, 8]
        assert o.max_delete_ratio == 0.5
        assert o.on_invalid == "fail"
        assert o.lookback == timedelta(0)
        assert o.source_timezone == "Asia/Shanghai"
    pool = section.legacy_mysql
    assert (pool.pool_size, pool.max_overflow, pool.connect_timeout, pool.read_timeout) == (
        5, 2, 30, 30)


def test_a_file_that_is_only_the_section_validates(tmp_path: Path) -> None:
    seed = yaml.safe_load(SEED_CONFIG.read_text(encoding="utf-8"))
    path = write(tmp_path, seed["reference_sync"])
    loaded = load_config(path)
    assert [t.name for t in loaded.section.tables] == SEED_NAMES
    assert loaded.section == load_config(SEED_CONFIG).section


def test_other_sections_of_the_file_are_ignored(tmp_path: Path) -> None:
    seed = yaml.safe_load(SEED_CONFIG.read_text(encoding="utf-8"))
    seed["database"] = {"host": "elsewhere", "whatever": [1, 2]}
    loaded = load_config(write(tmp_path, seed))
    assert [t.name for t in loaded.section.tables] == SEED_NAMES


# ---------------------------------------------------------------- errors, all at once


def test_every_error_is_reported_at_once_with_its_path(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, {"tables": [
        sql_table("a", primary_keys="k"),
        sql_table("b", lookback="soon"),
        sql_table("c", batch_size=0),
    ]})
    assert "reference_sync.tables[2].batch_size (table c): " \
           "Input should be greater than or equal to 1" in errors
    assert "reference_sync.tables[0].primary_keys (table a): " \
           "unknown key (check the spelling)" in errors
    lookback = [e for e in errors if e.startswith("reference_sync.tables[1].lookback (table b): ")]
    assert len(lookback) == 1 and "soon" in lookback[0], errors
    assert len(errors) == 3, errors


def test_paths_without_the_reference_sync_key_start_at_the_section(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, {"tables": [sql_table("a"), sql_table("c", batch_size=0)]},
                       wrap=False)
    assert errors == ["tables[1].batch_size (table c): Input should be greater than or equal to 1"]


@pytest.mark.parametrize("where", ["table", "top", "defaults", "source_config", "column"])
def test_unknown_keys_are_rejected(tmp_path: Path, where: str) -> None:
    table = sql_table("a")
    section: dict[str, Any] = {"tables": [table]}
    if where == "table":
        table["primary_keys"] = "k"
        path = "reference_sync.tables[0].primary_keys (table a)"
    elif where == "top":
        section["tabels"] = []
        path = "reference_sync.tabels"
    elif where == "defaults":
        section["defaults"] = {"batchsize": 10}
        path = "reference_sync.defaults.batchsize"
    elif where == "source_config":
        table["source_config"]["colums"] = []
        path = "reference_sync.tables[0].source_config.colums (table a)"
    else:
        table["source_config"]["columns"][1]["targt"] = "x"
        path = "reference_sync.tables[0].source_config.columns[1].targt (table a)"
    errors = errors_of(tmp_path, section)
    assert f"{path}: unknown key (check the spelling)" in errors, errors


def test_duplicate_table_names(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, {"tables": [sql_table("a"), sql_table("b"), sql_table("a")]})
    assert errors == [
        "reference_sync.tables: table names must be unique: ['a'] appear more than once",
        "reference_sync.tables: two tables write the same target: ['public.a']"]


def test_two_tables_writing_one_target(tmp_path: Path) -> None:
    b = sql_table("b", target_table="a")
    one_error(tmp_path, {"tables": [sql_table("a"), b]}, "public.a")


def test_depends_on_an_unknown_name(tmp_path: Path) -> None:
    one_error(tmp_path, {"tables": [sql_table("a", depends_on=["zz"])]},
              "depends_on", "'a'", "zz")


def test_depends_on_cycle_shows_the_cycle(tmp_path: Path) -> None:
    error = one_error(tmp_path, {"tables": [
        sql_table("a", depends_on=["b"]), sql_table("b", depends_on=["c"]),
        sql_table("c", depends_on=["a"]), sql_table("d")]}, "cycle")
    assert "a -> b -> c -> a" in error


def test_self_dependency_is_a_cycle(tmp_path: Path) -> None:
    error = one_error(tmp_path, {"tables": [sql_table("a", depends_on=["a"])]}, "cycle")
    assert "a -> a" in error


def test_incremental_block_only_on_upsert(tmp_path: Path) -> None:
    t = sql_table("a", sync_mode="delete_insert", sc={"incremental": {"updated_at_column": "u"}})
    one_error(tmp_path, {"tables": [t]}, "reference_sync.tables[0]", "(table a)",
              "incremental", "upsert")
    ok = sql_table("a", sync_mode="upsert", sc={"incremental": {"updated_at_column": "u"}})
    assert load(tmp_path, {"tables": [ok]}).section.tables[0].incremental is not None


def test_incremental_where_must_use_the_placeholder(tmp_path: Path) -> None:
    t = sql_table("a", sc={"incremental": {"updated_at_column": "u", "where": "u > now()"}})
    one_error(tmp_path, {"tables": [t]}, "(table a)", ":last_synced_at")


def test_primary_key_must_be_among_the_mapped_columns(tmp_path: Path) -> None:
    one_error(tmp_path, {"tables": [sql_table("a", primary_key="x")]},
              "reference_sync.tables[0]", "(table a)", "primary_key", "'x'")
    one_error(tmp_path, {"tables": [sql_table("a", primary_key=["k", "nope"])]},
              "(table a)", "'nope'")


def test_primary_key_as_a_column_or_a_list(tmp_path: Path) -> None:
    tables = load(tmp_path, {"tables": [sql_table("a"), sql_table("b", primary_key=["k", "v"])]})
    assert [t.primary_key for t in tables.section.tables] == [["k"], ["k", "v"]]


@pytest.mark.parametrize(("value", "seconds"), [
    (90, 90), ("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("0s", 0)])
def test_lookback_accepts_seconds_and_units(tmp_path: Path, value: Any, seconds: int) -> None:
    section = load(tmp_path, {"defaults": {"lookback": value},
                              "tables": [sql_table("a"), sql_table("b", lookback=value)]}).section
    assert section.defaults.lookback == timedelta(seconds=seconds)
    assert [t.options.lookback for t in section.tables] == [timedelta(seconds=seconds)] * 2


@pytest.mark.parametrize("value", ["soon", "5 minutes", "-5m", "m", True])
def test_lookback_rejects_nonsense(tmp_path: Path, value: Any) -> None:
    error = one_error(tmp_path, {"tables": [sql_table("a", lookback=value)]})
    assert error.startswith("reference_sync.tables[0].lookback (table a): "), error
    errors = errors_of(tmp_path, {"defaults": {"lookback": value}, "tables": [sql_table("a")]})
    assert len(errors) == 1 and errors[0].startswith("reference_sync.defaults.lookback: "), errors


def test_lookback_soon_message_says_what_is_accepted(tmp_path: Path) -> None:
    error = one_error(tmp_path, {"tables": [sql_table("a", lookback="soon")]}, "'soon'")
    assert "90s" in error and "5m" in error and "1h" in error


def test_bad_timezone(tmp_path: Path) -> None:
    one_error(tmp_path, {"timezone": "Mars/Olympus", "tables": []},
              "reference_sync.timezone: ", "Mars/Olympus")


def test_bad_source_timezone_in_defaults(tmp_path: Path) -> None:
    one_error(tmp_path, {"defaults": {"source_timezone": "Nowhere/X"}, "tables": []},
              "reference_sync.defaults.source_timezone: ", "Nowhere/X")


def test_bad_source_timezone_on_a_table_names_the_table(tmp_path: Path) -> None:
    one_error(tmp_path, {"tables": [sql_table("a"), sql_table("b", source_timezone="Nowhere/X")]},
              "reference_sync.tables[1].source_timezone (table b): ", "Nowhere/X")


@pytest.mark.parametrize("cron", ["every day", "0 25 * * *", "* * *", "", "60 1 * * *",
                                  "0 1 0 * *", "0 1 * 13 *", "0 1 * * 8",
                                  "0 1 * * ８"])
def test_bad_cron_schedule(tmp_path: Path, cron: str) -> None:
    one_error(tmp_path, {"schedule": cron, "tables": []}, "reference_sync.schedule: ")


def test_plain_cron_fast_path_agrees_with_croniter() -> None:
    """The schedule check skips croniter for `*`-or-number fields (start-up, issue 9): every
    expression it accepts croniter accepts too, at each field's limits and just past them,
    and what it leaves alone still goes through croniter."""
    import itertools

    from croniter import croniter

    from refsync.config import ReferenceSyncConfig, _plain_cron

    edges = [["*", "0", "59", "60", "-1", "07"], ["*", "0", "23", "24"],
             ["*", "0", "1", "31", "32"], ["*", "0", "1", "12", "13"], ["*", "0", "6", "7", "8"]]
    accepted = 0
    for fields in itertools.product(*edges):
        expr = " ".join(fields)
        if _plain_cron(expr):
            accepted += 1
            assert croniter.is_valid(expr), expr
    # `*`, the lowest and the highest of each field, plus 07 (minutes) and 7 (Sunday)
    assert accepted == 4 * 3 * 3 * 3 * 4
    for expr in ("0 1 * * 1-5", "*/15 * * * *", "0 1 * * mon", "0 1 1,15 * *", "@daily"):
        assert not _plain_cron(expr)
        assert ReferenceSyncConfig(schedule=expr).schedule == expr


def test_sql_source_needs_url_or_url_env(tmp_path: Path) -> None:
    t = sql_table("a")
    del t["source_config"]["url"]
    one_error(tmp_path, {"tables": [t]}, "reference_sync.tables[0]", "(table a)",
              "url", "url_env")
    t["source_config"]["url_env"] = "LEGACY_URL"
    assert load(tmp_path, {"tables": [t]}).section.tables[0].source_config.url_env == "LEGACY_URL"


def test_sql_url_is_kept_secret(tmp_path: Path) -> None:
    t = sql_table("a", sc={"url": "postgresql://u:hunter2@h/db"})
    section = load(tmp_path, {"tables": [t]}).section
    assert "hunter2" not in repr(section)
    assert "hunter2" not in str(section.tables[0])


@pytest.mark.parametrize("key", ["url", "url_env"])
def test_legacy_mysql_with_a_url_is_rejected(tmp_path: Path, key: str) -> None:
    t = mysql_table("a", sc={key: "mysql://h/db"})
    one_error(tmp_path, {"tables": [t]}, "reference_sync.tables[0]", "(table a)", "legacy_mysql")


def test_tracking_column_mapped_as_a_target_is_rejected(tmp_path: Path) -> None:
    t = sql_table("a")
    t["source_config"]["columns"].append({"source": "src", "target": "_source"})
    error = one_error(tmp_path, {"tables": [t]}, "(table a)", "_source", "tracking")
    assert error.startswith("reference_sync.tables[0].source_config.columns"), error


def test_config_file_source_config_for_a_sql_table(tmp_path: Path) -> None:
    """source_config of the wrong shape: the errors say which fields, under source_config."""
    t = file_table("产品线")
    t["source_type"] = "sql"
    errors = errors_of(tmp_path, {"tables": [t]})
    assert errors, errors
    assert all(e.startswith("reference_sync.tables[0].source_config") for e in errors), errors
    assert any("table" in e and "Field required" in e for e in errors), errors


def test_retry_backoff_negative_is_rejected(tmp_path: Path) -> None:
    one_error(tmp_path, {"defaults": {"retry": {"backoff": [2, -4]}}, "tables": []},
              "reference_sync.defaults.retry.backoff: ", "negative")
    one_error(tmp_path, {"tables": [sql_table("a", retry={"backoff": [-1]})]},
              "reference_sync.tables[0].retry.backoff (table a): ", "negative")


@pytest.mark.parametrize(("key", "value"), [
    ("batch_size", 0), ("max_delete_ratio", 1.5), ("max_delete_ratio", -0.1),
    ("on_invalid", "ignore")])
def test_table_option_ranges(tmp_path: Path, key: str, value: Any) -> None:
    one_error(tmp_path, {"tables": [sql_table("a", **{key: value})]},
              f"reference_sync.tables[0].{key} (table a): ")
    one_error(tmp_path, {"defaults": {key: value}, "tables": []},
              f"reference_sync.defaults.{key}: ")


def test_unknown_source_type_and_sync_mode(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, {"tables": [sql_table("a", source_type="oracle"),
                                             sql_table("b", sync_mode="replace")]})
    assert any(e.startswith("reference_sync.tables[0].source_type (table a): ") for e in errors)
    assert any(e.startswith("reference_sync.tables[1].sync_mode (table b): ") for e in errors)


# ---------------------------------------------------------------- defaults and overrides


def test_defaults_are_merged_into_each_tables_options(tmp_path: Path) -> None:
    section = load(tmp_path, {
        "defaults": {"batch_size": 100, "retry": {"attempts": 1, "backoff": [1]},
                     "max_delete_ratio": 0.2, "on_invalid": "skip", "lookback": "5m",
                     "source_timezone": "UTC"},
        "tables": [
            sql_table("inherits"),
            sql_table("overrides", batch_size=7, retry={"attempts": 0}, max_delete_ratio=0.9,
                      on_invalid="fail", lookback="1h", source_timezone="Asia/Tokyo"),
            sql_table("some", batch_size=50),
        ]}).section
    inherits, overrides, some = (t.options for t in section.tables)
    assert (inherits.batch_size, inherits.retry.attempts, inherits.retry.backoff,
            inherits.max_delete_ratio, inherits.on_invalid, inherits.lookback,
            inherits.source_timezone) == (100, 1, [1], 0.2, "skip", timedelta(minutes=5), "UTC")
    assert (overrides.batch_size, overrides.retry.attempts, overrides.max_delete_ratio,
            overrides.on_invalid, overrides.lookback, overrides.source_timezone) == (
        7, 0, 0.9, "fail", timedelta(hours=1), "Asia/Tokyo")
    assert overrides.retry.backoff == [2, 4, 8]  # a table's retry block is whole, from defaults
    assert (some.batch_size, some.on_invalid, some.lookback) == (50, "skip", timedelta(minutes=5))


def test_options_cannot_be_set_directly(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, {"tables": [sql_table("a", options={"batch_size": 1})]})
    assert any("(table a)" in e and "options" in e for e in errors), errors


# ---------------------------------------------------------------- selection and order


def _section(tmp_path: Path) -> ReferenceSyncConfig:
    return load(tmp_path, {"tables": [
        sql_table("组合计划", target_table="portfolio", depends_on=["年金计划"]),
        sql_table("年金计划", target_table="annuity"),
        file_table("产品线", target_table="product_lines"),
    ]}).section


def test_select_by_name_and_by_target_table(tmp_path: Path) -> None:
    section = _section(tmp_path)
    assert [t.name for t in section.select(["年金计划"])] == ["年金计划"]
    assert [t.name for t in section.select(["product_lines"])] == ["产品线"]
    assert [t.name for t in section.select(["public.portfolio"])] == ["组合计划"]
    assert [t.name for t in section.select(["产品线", "annuity"])] == ["年金计划", "产品线"]


def test_select_nothing_means_every_table_in_dependency_order(tmp_path: Path) -> None:
    section = _section(tmp_path)
    assert [t.name for t in section.select(None)] == ["年金计划", "组合计划", "产品线"]
    assert [t.name for t in section.select([])] == ["年金计划", "组合计划", "产品线"]


def test_select_unknown_name_lists_the_known_names(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        _section(tmp_path).select(["年金计划", "nope"])
    assert isinstance(info.value, ConfigError)  # exit 2 in the CLI
    assert "'nope'" in info.value.message
    for name in ("组合计划", "年金计划", "产品线"):
        assert name in info.value.message


def test_topological_order(tmp_path: Path) -> None:
    section = load(tmp_path, {"tables": [
        sql_table("d", depends_on=["b", "c"]),
        sql_table("c", depends_on=["a"]),
        sql_table("e"),
        sql_table("b", depends_on=["a"]),
        sql_table("a"),
    ]}).section
    order = [t.name for t in topological_order(section.tables)]
    assert sorted(order) == ["a", "b", "c", "d", "e"]
    for table in section.tables:
        for dep in table.depends_on:
            assert order.index(dep) < order.index(table.name), order
    assert [t.name for t in section.select(None)] == order


def test_config_order_is_kept_without_dependencies(tmp_path: Path) -> None:
    section = load(tmp_path, {"tables": [sql_table(n) for n in ("z", "a", "m")]}).section
    assert [t.name for t in section.select(None)] == ["z", "a", "m"]


# ---------------------------------------------------------------- the file itself


def test_missing_config_file_names_the_absolute_path(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(Path("nowhere/cfg.yml"))
    assert info.value.error_class == "config"
    assert str(tmp_path.resolve() / "nowhere" / "cfg.yml") in info.value.message
    assert "not found" in info.value.message


def test_invalid_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "reference_sync:\n  enabled: true\n  tables: [\n    {name: a\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.message
    assert str(path.resolve()) in message
    assert "not valid YAML" in message
    assert "line 5, column 1" in message, message


def test_yaml_tab_indentation_points_at_the_tab(tmp_path: Path) -> None:
    path = write(tmp_path, "reference_sync:\n\tenabled: true\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line 2, column 1" in info.value.message, info.value.message


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n", "reference_sync:\n"])
def test_a_file_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path.resolve()) in info.value.message


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(tmp_path.resolve()) in info.value.message


# ---------------------------------------------------------------- environment


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No WDH_* variables and no .env in the working directory."""
    import os

    for key in list(os.environ):
        if key.startswith("WDH_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_settings_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WDH_DATABASE_URL", "postgresql://etl:pg-secret@wh:5432/warehouse")
    clean_env.setenv("WDH_LEGACY_MYSQL_HOST", "legacy.example")
    clean_env.setenv("WDH_LEGACY_MYSQL_USER", "reader")
    clean_env.setenv("WDH_LEGACY_MYSQL_PASSWORD", "my-s3cret")
    clean_env.setenv("WDH_LEGACY_MYSQL_DATABASE", "legacy")
    clean_env.setenv("WDH_REFERENCE_SYNC_ENABLED", "false")
    clean_env.setenv("WDH_REFERENCE_SYNC_CONFIG", "/etc/refsync/data_sources.yml")
    s = load_settings()
    assert s.legacy_mysql_host == "legacy.example"
    assert s.legacy_mysql_port == 3306
    assert s.legacy_mysql_user == "reader"
    assert s.legacy_mysql_database == "legacy"
    assert s.legacy_mysql_ssl_ca is None
    assert s.reference_sync_enabled is False
    assert s.reference_sync_config == Path("/etc/refsync/data_sources.yml")
    assert isinstance(s.legacy_mysql_password, SecretStr)
    assert s.legacy_mysql_password.get_secret_value() == "my-s3cret"
    assert isinstance(s.database_url, SecretStr)
    assert s.require_database_url() == "postgresql://etl:pg-secret@wh:5432/warehouse"
    for shown in (repr(s), str(s), s.model_dump_json()):
        assert "my-s3cret" not in shown
        assert "pg-secret" not in shown


def test_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.database_url is None
    assert s.legacy_mysql_host is None
    assert s.legacy_mysql_port == 3306
    assert s.legacy_mysql_password is None
    assert s.reference_sync_enabled is True
    assert s.reference_sync_config is None


@pytest.mark.parametrize(("value", "enabled"), [
    ("false", False), ("0", False), ("no", False), ("FALSE", False),
    ("true", True), ("1", True), ("yes", True)])
def test_enabled_flag_spellings(clean_env: pytest.MonkeyPatch, value: str, enabled: bool) -> None:
    clean_env.setenv("WDH_REFERENCE_SYNC_ENABLED", value)
    assert load_settings().reference_sync_enabled is enabled


def test_port_is_read_as_a_number(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WDH_LEGACY_MYSQL_PORT", "3307")
    assert load_settings().legacy_mysql_port == 3307


def test_bad_environment_value_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WDH_LEGACY_MYSQL_PORT", "abc")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.error_class == "config"
    assert any(e.startswith("WDH_LEGACY_MYSQL_PORT: ") for e in info.value.errors), \
        info.value.errors


def test_dot_env_in_the_working_directory_is_read(clean_env: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WDH_LEGACY_MYSQL_HOST=from-dotenv\n"
                                   "WDH_REFERENCE_SYNC_ENABLED=false\n", encoding="utf-8")
    s = load_settings()
    assert s.legacy_mysql_host == "from-dotenv"
    assert s.reference_sync_enabled is False


def test_environment_wins_over_dot_env(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WDH_LEGACY_MYSQL_HOST=from-dotenv\n", encoding="utf-8")
    clean_env.setenv("WDH_LEGACY_MYSQL_HOST", "from-env")
    assert load_settings().legacy_mysql_host == "from-env"


def test_env_file_replaces_dot_env(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WDH_LEGACY_MYSQL_HOST=from-dotenv\n", encoding="utf-8")
    other = tmp_path / "prod.env"
    other.write_text("WDH_LEGACY_MYSQL_PASSWORD=file-secret\n", encoding="utf-8")
    s = load_settings(other)
    assert s.legacy_mysql_host is None
    assert s.legacy_mysql_password is not None
    assert s.legacy_mysql_password.get_secret_value() == "file-secret"
    assert "file-secret" not in repr(s)


def test_missing_env_file_is_a_config_error(clean_env: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(Path("missing.env"))
    assert str(tmp_path.resolve() / "missing.env") in info.value.message


def test_settings_can_be_built_directly_without_touching_the_environment(
        clean_env: pytest.MonkeyPatch) -> None:
    s = Settings(database_url=SecretStr("sqlite:///x.sqlite"))  # type: ignore[call-arg]
    assert s.require_database_url() == "sqlite:///x.sqlite"
