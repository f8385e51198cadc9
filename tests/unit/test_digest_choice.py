"""How a table's comparison is chosen (issue 20): the `digests: auto | off` option, and the
evidence the last run leaves (`state.LastRun.changed_share`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from refsync.config import load_config
from refsync.errors import ConfigError
from refsync.state import LastRun


def _table(name: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "target_table": name, "source_type": "sql", "primary_key": "k",
            "source_config": {"url": "sqlite:///legacy.db", "table": name,
                              "columns": [{"source": "k", "target": "k"}]}, **options}


def _load(tmp_path: Path, tables: list[dict[str, Any]], **section: Any) -> Any:
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump({"reference_sync": {"tables": tables, **section}}),
                    encoding="utf-8")
    return load_config(path)


def test_digests_are_auto_by_default_and_off_per_table_or_from_defaults(tmp_path: Path) -> None:
    loaded = _load(tmp_path, [_table("a"), _table("b", digests="off")])
    assert {t.name: t.options.digests for t in loaded.section.tables} == {"a": "auto", "b": "off"}
    loaded = _load(tmp_path, [_table("a"), _table("b", digests="auto")],
                   defaults={"digests": "off"})
    assert {t.name: t.options.digests for t in loaded.section.tables} == {"a": "off", "b": "auto"}


def test_digests_takes_auto_or_off_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="digests"):
        _load(tmp_path, [_table("a", digests="on")])


def _last(**kw: Any) -> LastRun:
    fields: dict[str, Any] = {"status": "ok", "rejected": 0, "incremental": False,
                              "source_snapshot": None, "read": 1000, "inserted": 0,
                              "changed": 0}
    return LastRun(**{**fields, **kw})


@pytest.mark.parametrize(("last", "share"), [
    pytest.param(_last(changed=10), 0.01, id="one-pct"),
    pytest.param(_last(status="unchanged"), 0.0, id="unchanged"),
    pytest.param(_last(inserted=3, changed=13), 0.013, id="updates-and-inserts"),
    pytest.param(_last(inserted=1000, changed=1000), None, id="first-load"),
    pytest.param(_last(inserted=5, changed=5), None, id="only-inserts"),
    pytest.param(_last(incremental=True, changed=10), None, id="incremental-window"),
    pytest.param(_last(status="failed", changed=10), None, id="failed"),
    pytest.param(_last(read=0), None, id="read-nothing"),
])
def test_the_last_full_read_tells_how_much_changes_in_a_night(
        last: LastRun, share: float | None) -> None:
    assert last.changed_share == share
