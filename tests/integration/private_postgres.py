"""A PRIVATE PostgreSQL instance for fault tests (restarts, role settings): started by the test
suite in a temp dir on a free port, stopped at the end, never the shared server.

`initdb`/`pg_ctl` come from /usr/lib/postgresql/<v>/bin or PATH. PostgreSQL refuses to run as
root, so as root they run as the `postgres` user (`runuser -u postgres --`). Missing binaries
skip the test, or fail it under REFSYNC_REQUIRE_DB=1 (`unavailable`).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa


def unavailable(reason: str) -> None:
    """tests/conftest.py's `unavailable` (skip, or fail under REFSYNC_REQUIRE_DB=1); loaded by
    path, as the name `conftest` here is this folder's conftest."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("refsync_tests_root_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.unavailable(reason)


def _bin_dir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivatePostgres:
    bin_dir: Path
    root: Path
    port: int
    as_user: list[str]

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        cmd = [*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.datadir), *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50 "
                "-c shared_buffers=32MB")
        self.pg_ctl("start", "-w", "-l", str(self.root / "log"), "-o", opts)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session ends, the server comes back."""
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50 "
                "-c shared_buffers=32MB")
        self.pg_ctl("restart", "-m", "fast", "-w", "-l", str(self.root / "log"), "-o", opts)

    def stop(self) -> None:
        try:
            self.pg_ctl("stop", "-m", "immediate", "-w", timeout=30)
        except (subprocess.SubprocessError, OSError):
            pass

    def admin(self) -> sa.Engine:
        return sa.create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)


def start_private_postgres() -> PrivatePostgres | None:
    """A running private instance, or None when the binaries are missing."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        return None
    root = Path(tempfile.mkdtemp(prefix="refsync-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            return None
        if not shutil.which("runuser"):
            return None
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chmod(root, 0o700)
        as_user = ["runuser", "-u", "postgres", "--"]
    pg = PrivatePostgres(bin_dir, root, _free_port(), as_user)
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(pg.datadir), "-U", "postgres",
                    "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"],
                   check=True, capture_output=True, timeout=120)
    pg.start()
    return pg


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server for this test session (restartable, reconfigurable)."""
    try:
        pg = start_private_postgres()
    except (subprocess.SubprocessError, OSError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        unavailable(f"could not start a private PostgreSQL: {exc} {err.decode(errors='replace')}")
        raise
    if pg is None:
        unavailable("no initdb/pg_ctl (PostgreSQL server binaries) or no postgres user "
                    "for a private PostgreSQL instance")
        raise AssertionError("unreachable")
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(pg.root, ignore_errors=True)


@pytest.fixture
def private_pg_url(private_pg: PrivatePostgres) -> Iterator[str]:
    """A fresh database on the private server for one test, dropped afterwards."""
    name = f"refsync_p_{uuid.uuid4().hex[:10]}"
    admin = private_pg.admin()
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield sa.engine.make_url(private_pg.url).set(database=name).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
