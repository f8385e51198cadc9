"""`refsync status` reads the state through the plain driver (targets.readonly, report.py):
URL forms, state tables an older release made, and what it must never do (create a file)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from refsync import report
from refsync.config import LoadedConfig, Settings, load_config
from refsync.errors import ConfigError, NotConfigured
from refsync.targets.readonly import libpq_uri, sqlite_path


@pytest.mark.parametrize(("url", "uri"), [
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("postgres://u:p%40ss@h:5433/db?sslmode=require", "postgresql://u:p%40ss@h:5433/db?sslmode=require"),
    ("postgresql+psycopg://root@/test?host=/var/run/postgresql",
     "postgresql://root@/test?host=/var/run/postgresql"),
    ("postgresql+psycopg2://u@h/db", "postgresql://u@h/db"),
])
def test_a_sqlalchemy_url_names_the_same_libpq_uri(url: str, uri: str) -> None:
    assert libpq_uri(url) == uri


def test_a_url_that_is_no_url_is_a_config_error_without_its_secret() -> None:
    with pytest.raises(ConfigError) as bad:
        libpq_uri("user:secret@host/db")
    assert "secret" not in bad.value.message


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:///w.sqlite", Path("w.sqlite")),
    ("sqlite:////abs/w.sqlite", Path("/abs/w.sqlite")),
    ("sqlite+pysqlite:///w.sqlite?timeout=5", Path("w.sqlite")),
    ("sqlite://", None),
    ("sqlite:///:memory:", None),
])
def test_sqlite_urls_name_their_file(url: str, path: Path | None) -> None:
    assert sqlite_path(url) == path


def _config(tmp_path: Path) -> LoadedConfig:
    lines = tmp_path / "product_lines.yml"
    lines.write_text('schema_version: "1.0"\ndata:\n  - {code: "PL01", name: "企业年金"}\n',
                     encoding="utf-8")
    config = tmp_path / "cfg.yml"
    config.write_text(json.dumps({"reference_sync": {"timezone": "Asia/Shanghai", "tables": [
        {"name": "产品线", "target_table": "ref_product_line", "source_type": "config_file",
         "source_config": {"file_path": str(lines), "schema_version": "1.0"},
         "sync_mode": "delete_insert", "primary_key": "code"}]}}), encoding="utf-8")
    return load_config(config)


def _settings(url: str) -> Settings:
    return Settings(_env_file=None, database_url=SecretStr(url),  # type: ignore[call-arg]
                    reference_sync_enabled=True)


def test_status_reads_state_tables_an_older_release_made(tmp_path: Path) -> None:
    """Tables from before `detail`/`version` existed: status creates nothing, so it reads the
    columns there are."""
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript("""
            CREATE TABLE refsync_sync_state (table_name VARCHAR(200) PRIMARY KEY,
                target VARCHAR(400) NOT NULL, watermark TEXT, last_run_key VARCHAR(80),
                last_status VARCHAR(20), last_started_at VARCHAR(40),
                last_finished_at VARCHAR(40), last_success_at VARCHAR(40));
            CREATE TABLE refsync_sync_runs (run_key VARCHAR(80), table_name VARCHAR(200),
                target VARCHAR(400) NOT NULL, source_type VARCHAR(20), mode VARCHAR(20),
                incremental BOOLEAN, started_at VARCHAR(40), finished_at VARCHAR(40),
                status VARCHAR(20) NOT NULL, read BIGINT NOT NULL DEFAULT 0,
                inserted BIGINT NOT NULL DEFAULT 0, updated BIGINT NOT NULL DEFAULT 0,
                deleted BIGINT NOT NULL DEFAULT 0, unchanged BIGINT NOT NULL DEFAULT 0,
                promoted BIGINT NOT NULL DEFAULT 0, rejected BIGINT NOT NULL DEFAULT 0,
                attempts INTEGER NOT NULL DEFAULT 0, duration_s FLOAT, watermark TEXT,
                error_class VARCHAR(40), error TEXT, PRIMARY KEY (run_key, table_name));
            INSERT INTO refsync_sync_runs (run_key, table_name, target, mode, started_at,
                finished_at, status, read, inserted, attempts, duration_s)
            VALUES ('reference_sync_2026-11-29T01:00:00.000+08:00', '产品线',
                'ref_product_line', 'delete_insert', '2026-11-29T01:00:00.000+08:00',
                '2026-11-29T01:00:01.000+08:00', 'ok', 1, 1, 1, 1.0);
            INSERT INTO refsync_sync_state VALUES ('产品线', 'ref_product_line', NULL,
                'reference_sync_2026-11-29T01:00:00.000+08:00', 'ok',
                '2026-11-29T01:00:00.000+08:00', '2026-11-29T01:00:01.000+08:00',
                '2026-11-29T01:00:01.000+08:00');
        """)
    before = db.read_bytes()
    shanghai = ZoneInfo("Asia/Shanghai")
    doc = report.status(_config(tmp_path), _settings(f"sqlite:///{db}"),
                        now=datetime(2026, 11, 29, 3, 0, tzinfo=shanghai))
    table = doc["tables"][0]
    assert (table["last_status"], table["inserted"], table["duration_s"]) == ("ok", 1, 1.0)
    assert table["last_success_at"] == "2026-11-29T01:00:01.000+08:00"
    assert [(r["table"], r["status"], r["read"]) for r in doc["runs"]] == [("产品线", "ok", 1)]
    assert doc["warnings"] == []
    late = report.status(_config(tmp_path), _settings(f"sqlite:///{db}"),
                         now=datetime(2026, 11, 30, 9, 0, tzinfo=shanghai))
    assert late["warnings"] == ["产品线: last success 32 hours ago (more than 26): a night was "
                                "missed"]
    assert db.read_bytes() == before  # read, never written


def test_status_on_a_missing_sqlite_file_creates_none(tmp_path: Path) -> None:
    db = tmp_path / "none.sqlite"
    doc = report.status(_config(tmp_path), _settings(f"sqlite:///{db}"))
    assert doc["tables"][0]["last_status"] == "never" and doc["runs"] == []
    assert not db.exists()


def test_status_in_a_missing_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(NotConfigured, match="folder for the SQLite target does not exist"):
        report.status(_config(tmp_path), _settings(f"sqlite:///{tmp_path}/no/such/w.sqlite"))
