"""A full disk on the target (DESIGN 4.7): its own class `disk_full`, not retried, naming the
target, the file and the table, hinting at freeing space (and VACUUM after a failed first
load); never labelled `query` nor attributed to the source. The target table sits in a
tablespace on a small tmpfs of a PRIVATE PostgreSQL (skipped where mounting is not allowed)."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import (
    LegacyDb,
    create_target,
    plan_row,
    settings_for,
    sql_table,
    table_result,
    write_config,
)
from private_postgres import PrivatePostgres

from refsync import api

TARGET = '"business"."年金计划"'  # as refsync quotes it: every identifier
SPACE_MB = 4
ROWS = 20_000  # about 8 MB in the heap: twice the space


@pytest.fixture
def small_tablespace(private_pg: PrivatePostgres, private_pg_url: str) -> Iterator[Path]:
    """A tablespace `small` on a SPACE_MB tmpfs of its own, dropped and unmounted after."""
    mount = Path(tempfile.mkdtemp(prefix="refsync-full-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SPACE_MB}m,mode=0700",
                           "tmpfs", str(mount)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}): a full disk "
                    "needs a filesystem of its own")
    user = pwd.getpwnam("postgres")
    os.chown(mount, user.pw_uid, user.pw_gid)
    engine = sa.create_engine(private_pg_url, isolation_level="AUTOCOMMIT",
                              poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE TABLESPACE small LOCATION '{mount}'")
        yield mount
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS business CASCADE")
            conn.exec_driver_sql("DROP TABLESPACE IF EXISTS small")
        engine.dispose()
        subprocess.run(["umount", str(mount)], check=False, capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)


def test_a_full_target_disk_is_disk_full_naming_the_target_the_file_and_the_table(
        tmp_path: Path, private_pg_url: str, small_tablespace: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    name = "企业年金计划" * 15  # 90 characters: fat rows fill the space sooner
    legacy = LegacyDb(tmp_path / "legacy.sqlite").create_plans(
        plan_row(i, name=name) for i in range(ROWS))
    create_target(private_pg_url)
    engine = sa.create_engine(private_pg_url, isolation_level="AUTOCOMMIT",
                              poolclass=sa.NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {TARGET} SET TABLESPACE small")
    config = write_config(tmp_path, [sql_table("plans", legacy)],
                          defaults={"retry": {"attempts": 2, "backoff": [0.1]}})
    with caplog.at_level(logging.INFO, logger="refsync"):
        res = table_result(api.sync(config, settings_for(private_pg_url)), "plans")
    assert (res.status, res.error_class, res.attempts) == ("failed", "disk_full", 1), res.error
    error, hint = res.error or "", res.hint or ""
    assert error.startswith("target postgresql+psycopg://"), error
    assert "the target server's disk is full" in error and "53100" in error
    assert "pg_tblspc/" in error and error.endswith(f"; table {TARGET}"), error
    assert "free space on the target" in hint and f"VACUUM {TARGET}" in hint, hint
    assert "source" not in hint
    failed = [r.getMessage() for r in caplog.records if "failed after" in r.getMessage()]
    assert len(failed) == 1 and "[disk_full]" in failed[0], failed
    assert "(target: postgresql+psycopg://" in failed[0] and "(source:" not in failed[0]
    with engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {TARGET}").scalar() == 0
        stored = conn.exec_driver_sql(
            "SELECT error_class, error FROM refsync.sync_runs WHERE table_name = 'plans'").one()
    engine.dispose()
    assert stored == ("disk_full", error)
