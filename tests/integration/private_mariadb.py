"""A private MariaDB server for tests that need server-level settings or faults (READ
COMMITTED, sql_mode, max_allowed_packet, SIGSTOP): never the shared server's globals.

`mariadb-install-db` runs once per session into a template data directory; every server
copies it, starts `mariadbd` on a free port with its own socket and options, and is stopped
at the end. Where the binaries are missing the caller skips (fails under
REFSYNC_REQUIRE_DB=1) through `unavailable()`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pymysql
import sqlalchemy as sa

INSTALL_DB = ("mariadb-install-db", "mysql_install_db")
SERVER = ("/usr/sbin/mariadbd", "/usr/sbin/mysqld", "mariadbd")
START_TIMEOUT_S = 60.0


def _own_tmpdir(base: Path) -> Path:
    """A temporary directory of the server's own: at start-up mariadbd deletes every
    ``#sql*`` file in its tmpdir, and in the shared /tmp those are the shared server's
    temporary tables of queries running now (their queries then fail)."""
    tmp = base / "tmp"
    tmp.mkdir(exist_ok=True)
    return tmp


def _which(candidates: Sequence[str]) -> str | None:
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_binaries() -> str | None:
    """Why a private MariaDB cannot be started here, or None."""
    if _which(INSTALL_DB) is None:
        return "no mariadb-install-db on PATH (install mariadb-server)"
    if _which(SERVER) is None:
        return "no mariadbd binary (install mariadb-server)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install_template(base: Path) -> Path:
    """A freshly initialised data directory (system tables only), to be copied per server."""
    datadir = base / "template"
    install = _which(INSTALL_DB)
    assert install is not None
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run(
        [install, "--no-defaults", f"--datadir={datadir}", *user, "--skip-test-db",
         "--auth-root-authentication-method=normal", f"--tmpdir={_own_tmpdir(base)}"],
        check=True, capture_output=True, timeout=120)
    return datadir


@dataclass
class PrivateMariaDB:
    """One running private server: root without a password on 127.0.0.1:`port`."""

    base: Path
    port: int
    options: tuple[str, ...]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_path(self) -> Path:
        return self.base / "mysqld.sock"

    def url(self, database: str | None = None) -> sa.URL:
        return sa.URL.create("mysql+pymysql", username="root", host="127.0.0.1",
                             port=self.port, database=database)

    def start(self, template: Path) -> PrivateMariaDB:
        shutil.copytree(template, self.datadir)
        server = _which(SERVER)
        assert server is not None
        user = ["--user=root"] if os.geteuid() == 0 else []
        log = (self.base / "error.log").open("ab")
        self.process = subprocess.Popen(
            [server, "--no-defaults", f"--datadir={self.datadir}",
             f"--socket={self.socket_path}", f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--pid-file={self.base / 'mysqld.pid'}", f"--tmpdir={_own_tmpdir(self.base)}",
             "--skip-log-bin", "--skip-name-resolve",
             "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
             "--performance-schema=OFF", *user, *self.options],
            stdout=log, stderr=log)
        log.close()
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited {self.process.returncode}: "
                                   f"{(self.base / 'error.log').read_text()[-2000:]}")
            try:
                pymysql.connect(host="127.0.0.1", port=self.port, user="root",
                                connect_timeout=1).close()
                return
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.2)

    def create_database(self, name: str) -> sa.URL:
        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 "
                            "COLLATE utf8mb4_unicode_ci")
        finally:
            conn.close()
        return self.url(name)

    def freeze(self) -> None:
        """SIGSTOP: the server holds its sockets open but answers nothing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)  # a frozen server cannot shut down
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class PrivateMariaDBs:
    """Servers started on demand, one per set of options, shared by the session's tests."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="refsync-mariadb-"))
        self._template: Path | None = None
        self._servers: dict[tuple[str, ...], PrivateMariaDB] = {}

    def get(self, *options: str) -> PrivateMariaDB:
        key = tuple(options)
        server = self._servers.get(key)
        if server is None or server.process is None or server.process.poll() is not None:
            if self._template is None:
                self._template = install_template(self.root)
            base = self.root / f"server{len(self._servers)}-{os.getpid()}-{time.monotonic_ns()}"
            base.mkdir()
            server = PrivateMariaDB(base, _free_port(), key).start(self._template)
            self._servers[key] = server
        return server

    def stop_all(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()
        shutil.rmtree(self.root, ignore_errors=True)
