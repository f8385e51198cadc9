"""A failed table's log names the database host it could not read (issue 10), not the
source type, whether or not the source ever opened."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from refsync import api
from refsync.config import Settings, load_config


def test_a_failed_tables_log_names_the_database_host(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    doc = {"reference_sync": {
        "defaults": {"retry": {"attempts": 0, "backoff": [0]}},
        "legacy_mysql": {"connect_timeout": 2},
        "tables": [{"name": "plans", "target_table": "plans", "target_schema": "business",
                    "source_type": "legacy_mysql", "primary_key": "code",
                    "source_config": {"table": "plans", "columns": [
                        {"source": "code", "target": "code"}]}}]}}
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    config = load_config(path)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=SecretStr(f"sqlite:///{tmp_path / 'w.sqlite'}"),
        legacy_mysql_host="127.0.0.1", legacy_mysql_port=1, legacy_mysql_user="etl",
        legacy_mysql_password=SecretStr("pw"), legacy_mysql_database="legacy")
    api.init_db(config, settings, create_tables=True)
    with caplog.at_level(logging.INFO, logger="refsync"):
        result = api.sync(config, settings)
    assert result.tables[0].error_class == "connection"
    [done] = [r for r in caplog.records if getattr(r, "event", None) == "table_done"]
    assert done.host == "127.0.0.1:1/legacy"
