"""What the inclusive watermark (`>=`) costs: rows stamped exactly at it are read again.

A MariaDB table of N rows stamped with one timestamp T (a bulk update): every incremental
run reads all N again, since the watermark stays T. The same table with one more row at
T + 1 µs moves the watermark past them: the run reads 1 row, which is what an exclusive
bound (`>`) would read. Prints rows read and the best wall time of the incremental runs.

    uv run python bench/watermark_boundary.py [--rows 10000] [--runs 5]

Needs the local MariaDB (root@127.0.0.1:3306) and PostgreSQL (root@127.0.0.1:5432); creates
and drops its own database on each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pymysql
import yaml
from pydantic import SecretStr

from refsync import api
from refsync.config import Settings, load_config

T = datetime(2026, 3, 1, 2, 0, 0, 123456)
DDL = ("CREATE TABLE big (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, code VARCHAR(20), "
       "amount DECIMAL(12,2), updated_at DATETIME(6), KEY (updated_at))")
TARGET = """CREATE SCHEMA business; CREATE TABLE business.big (
    id integer PRIMARY KEY, name text NOT NULL, code varchar(20), amount numeric(12,2),
    updated_at timestamp(6), "_source" varchar(20) NOT NULL DEFAULT 'authoritative',
    "_needs_review" boolean NOT NULL DEFAULT false, "_derived_from_domain" varchar(50),
    "_derived_at" timestamptz)"""


def config(path: Path) -> Path:
    cols = ("id", "name", "code", "amount", "updated_at")
    doc = {"reference_sync": {"tables": [{
        "name": "big", "target_table": "big", "target_schema": "business",
        "source_type": "legacy_mysql", "sync_mode": "upsert", "primary_key": "id",
        "source_config": {"table": "big", "columns": [{"source": c, "target": c} for c in cols],
                          "incremental": {"updated_at_column": "updated_at"}}}]}}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def incremental_runs(cfg: Path, settings: Settings, runs: int) -> tuple[int, float]:
    best, read = float("inf"), -1
    for _ in range(runs):
        started = time.perf_counter()
        [res] = api.sync(load_config(cfg), settings).tables
        best = min(best, time.perf_counter() - started)
        assert res.status == "unchanged", (res.status, res.error)
        read = res.read
    return read, best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    name = f"refsync_wm_{uuid.uuid4().hex[:8]}"
    my = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    pg = psycopg.connect("host=127.0.0.1 user=root dbname=postgres", autocommit=True)
    try:
        my.cursor().execute(f"CREATE DATABASE {name}")
        pg.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        my.select_db(name)
        my.cursor().execute(DDL)
        my.cursor().executemany("INSERT INTO big VALUES (%s, %s, %s, %s, %s)", [
            (i, f"name {i}", f"C{i:06d}", i / 100, T) for i in range(1, args.rows + 1)])
        with psycopg.connect(f"host=127.0.0.1 user=root dbname={name}", autocommit=True) as t:
            t.execute(TARGET)  # type: ignore[arg-type]
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, reference_sync_enabled=True,
            database_url=SecretStr(f"postgresql+psycopg://root@127.0.0.1:5432/{name}"),
            legacy_mysql_host="127.0.0.1", legacy_mysql_port=3306, legacy_mysql_user="root",
            legacy_mysql_password=SecretStr(""), legacy_mysql_database=name)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = config(Path(tmp) / "wm.yml")
            api.sync(load_config(cfg), settings)  # the first, full run
            read, best = incremental_runs(cfg, settings, args.runs)
            print(f"{args.rows} rows at the watermark: read {read}, best {best:.3f} s")
            my.cursor().execute("INSERT INTO big VALUES (0, 'later', 'L', 0, %s)",
                                (T + timedelta(microseconds=1),))
            api.sync(load_config(cfg), settings)  # moves the watermark to T + 1 µs
            read, best = incremental_runs(cfg, settings, args.runs)
            print(f"1 row at the watermark:       read {read}, best {best:.3f} s")
    finally:
        my.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        my.close()
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        pg.close()


if __name__ == "__main__":
    main()
