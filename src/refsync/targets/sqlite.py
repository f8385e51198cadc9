"""SQLite target: the same semantics as PostgreSQL through the same SQL, for the demo and
small setups. `target_schema` is ignored; the run lock is a file beside the database."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from refsync.errors import ConstraintViolation, InvalidRows, LockHeld, RefsyncError
from refsync.model import Batch
from refsync.targets.base import SqlTableWriter, SqlTarget
from refsync.targets.lock import sqlite_lock_path


def to_sqlite(value: Any) -> Any:
    """Store values in one canonical text form so the diff compares like with like."""
    if value is None or isinstance(value, str | int | float | bytes):
        return value
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    return value


class SqliteWriter(SqlTableWriter):
    def create_temp_sql(self, name: str, select: str, *, empty: bool = False) -> str:
        return f"CREATE TEMP TABLE {name} AS {select}" + (" LIMIT 0" if empty else "")

    def after_staging(self) -> None:
        # SQLite plans NOT EXISTS as a scan per target row without it
        keys = ", ".join(self.q(k) for k in self.key)
        self.sql(f"CREATE INDEX IF NOT EXISTS temp._refsync_stage_key ON _refsync_stage ({keys})",
                 phase="index")

    def classify_write_error(self, exc: BaseException, doing: str) -> RefsyncError:
        orig = getattr(exc, "orig", exc)
        if isinstance(orig, sqlite3.IntegrityError) and "FOREIGN KEY" in str(orig):
            return ConstraintViolation(f"{doing} refused by a foreign key: {self._referenced()}")
        return self.target.classify(exc, doing)

    def _referenced(self) -> str:
        """Name what SQLite does not: the referencing tables and the keys they still use."""
        parts = []
        table = self.ref.strip('"')
        children = [r[0] for r in self.conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        for child in children:
            fks = [fk for fk in self.conn.exec_driver_sql(
                f"PRAGMA foreign_key_list({self.q(child)})") if fk[2] == table]
            if not fks:
                continue
            match = " AND ".join(f"c.{self.q(fk[3])} = {self.ref}.{self.q(fk[4])}" for fk in fks)
            keys = ", ".join(f"{self.ref}.{self.q(k)}" for k in self.key)
            rows = self.conn.exec_driver_sql(
                f"SELECT {keys} FROM {self._missing_where()} AND EXISTS "
                f"(SELECT 1 FROM {self.q(child)} c WHERE {match}) LIMIT 20").fetchall()
            if rows:
                shown = "; ".join(", ".join(f"{k}={v}" for k, v in zip(self.key, r, strict=True))
                                  for r in rows)
                parts.append(f"keys still referenced from table {child}: {shown}")
        return "; ".join(parts) or "a key to delete is still referenced"

    def adapt_key(self, value: Any) -> Any:
        """SQLite stores a key value as its canonical text, as `load_rows` stages it."""
        return to_sqlite(value)

    def load_rows(self, batch: Batch) -> None:
        raw: Any = self.conn.connection.driver_connection
        marks = ", ".join("?" * len(self.names))
        adapt = to_sqlite
        raw.executemany(f"INSERT INTO _refsync_stage ({self.col_list}) VALUES ({marks})",
                        [tuple(adapt(v) for v in row) for row in batch])


def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # refsync issues BEGIN itself (see _on_begin)
    dbapi_conn.execute("PRAGMA foreign_keys = ON")
    dbapi_conn.execute("PRAGMA busy_timeout = 10000")


def _on_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN")


class SqliteTarget(SqlTarget):
    dialect = "sqlite"
    distinct = "IS NOT"
    false_sql = "0"
    writer_class = SqliteWriter

    def __init__(self, url: str) -> None:
        parsed = sa.engine.make_url(url)
        self.path = Path(parsed.database) if parsed.database not in (None, "", ":memory:") else None
        if self.path is not None and not self.path.parent.exists():
            from refsync.errors import NotConfigured

            raise NotConfigured(f"folder for the SQLite target does not exist: {self.path.parent}")
        engine = sa.create_engine(parsed)
        sa.event.listen(engine, "connect", _on_connect)
        sa.event.listen(engine, "begin", _on_begin)
        super().__init__(engine, f"sqlite:///{self.path}" if self.path else "sqlite://")

    def schema_for(self, schema: str) -> str | None:
        return None

    def table_ref(self, schema: str, table: str) -> str:
        return self.quote(table)

    @property
    def lock_path(self) -> Path | None:
        return sqlite_lock_path(self.path)

    @contextmanager
    def run_lock(self) -> Iterator[None]:
        lock_path = self.lock_path
        if lock_path is None:
            yield
            return
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockHeld(f"another refsync run holds the lock file {lock_path}") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def classify(self, exc: BaseException, doing: str) -> RefsyncError:
        orig = getattr(exc, "orig", exc)
        text = str(orig)
        if isinstance(orig, sqlite3.IntegrityError):
            if "FOREIGN KEY" in text:
                return ConstraintViolation(f"{doing} refused by a foreign key ({text})")
            return ConstraintViolation(f"{doing} refused by a constraint ({text})")
        if isinstance(orig, sqlite3.DataError):
            return InvalidRows(f"{doing}: the target refused a value ({text})")
        return super().classify(exc, doing)
