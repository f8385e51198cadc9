"""SIGTERM / SIGINT mid-table: the table rolls back, the history says `interrupted`, and the
process exits 128 + the signal number (DESIGN 2.1, issue 5)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import refsync_copying, wait_until

ROWS = 400_000


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source both signals interrupt: read only, so made once."""
    path = tmp_path_factory.mktemp("interrupt") / "legacy.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE plans (code VARCHAR(20) PRIMARY KEY, name VARCHAR(100))")
    con.executemany("INSERT INTO plans VALUES (?, ?)",
                    ((f"P{i:07d}", f"计划{i}") for i in range(ROWS)))
    con.commit()
    con.close()
    return path


def _config(path: Path, legacy: Path) -> None:
    path.write_text(f"""
reference_sync:
  tables:
    - name: 年金计划
      target_table: 年金计划
      target_schema: business
      source_type: sql
      source_config:
        url: "sqlite:///{legacy}"
        table: plans
        columns: [{{source: code, target: 年金计划号}}, {{source: name, target: 计划名称}}]
      primary_key: 年金计划号
      batch_size: 2000
""", encoding="utf-8")


@pytest.mark.parametrize("signum", [pytest.param(signal.SIGTERM, id="SIGTERM"),
                                    pytest.param(signal.SIGINT, id="SIGINT")])
def test_signal_mid_table_rolls_back_and_records_interrupted(
        tmp_path: Path, legacy: Path, pg_url: str, signum: int) -> None:
    cfg = tmp_path / "cfg.yml"
    _config(cfg, legacy)
    env = {**os.environ, "WDH_DATABASE_URL": pg_url}
    exe = [sys.executable, "-m", "refsync"]
    init = subprocess.run([*exe, "init-db", "--create-tables", "-c", str(cfg)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    with subprocess.Popen([*exe, "sync", "-c", str(cfg), "--log-format", "json", "-v"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("{") and json.loads(line).get("event") == "table_start":
                break
        wait_until(lambda: refsync_copying(pg_url), "the rows' COPY streams", interval=0.05)
        assert proc.poll() is None, "the run ended before the signal: make ROWS larger"
        proc.send_signal(signum)
        rest = proc.stderr.read()
        code = proc.wait(timeout=60)
    assert code == 128 + signum
    records = [json.loads(x) for x in rest.splitlines() if x.startswith("{")]
    done = [r for r in records if r.get("event") == "table_done"]
    assert done and done[0]["status"] == "interrupted", rest[-3000:]
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql('SELECT count(*) FROM business."年金计划"').scalar() == 0
            rows = conn.exec_driver_sql(
                "SELECT status, error_class FROM refsync.sync_runs").fetchall()
            assert [tuple(r) for r in rows] == [("interrupted", "interrupted")]
            st = conn.exec_driver_sql(
                "SELECT last_status, watermark FROM refsync.sync_state").fetchall()
            assert [tuple(r) for r in st] == [("interrupted", None)]
    finally:
        engine.dispose()
