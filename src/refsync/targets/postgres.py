"""PostgreSQL target: COPY into a temporary staging table, diff, write only the changes.

The run lock is a session advisory lock on `LOCK_KEY`, held on its own connection for the
whole run; `SELECT pg_locks` shows it as an advisory lock with objid `LOCK_KEY & 0xffffffff`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from refsync.config import TRACKING_COLUMNS
from refsync.errors import ConstraintViolation, InvalidRows, LockHeld, RefsyncError
from refsync.model import Batch, ColumnInfo
from refsync.targets.base import DirectLoadConflict, SqlTableWriter, SqlTarget

log = logging.getLogger(__name__)

LOCK_KEY = 0x72656673796E63  # "refsync" in ASCII: the advisory lock every run takes


TRACKING_BYTES = b"\tauthoritative\tf\t\\N\t\\N"  # the layer-1 values, as COPY text
TRACKING_ROW = ("authoritative", False, None, None)


class PostgresWriter(SqlTableWriter):
    driver_errors = (psycopg.Error,)

    def create_temp_sql(self, name: str, select: str, *, empty: bool = False) -> str:
        return f"CREATE TEMP TABLE {name} AS {select}" + (" WITH NO DATA" if empty else "")

    def try_direct(self) -> bool:
        self.direct = not self.scalar(f"SELECT count(*) FROM (SELECT 1 FROM {self.ref} LIMIT 1) t")
        return self.direct

    def _copy_sql(self) -> str:
        if self.direct:
            tracking = ", ".join(self.q(c) for c in TRACKING_COLUMNS)
            return f"COPY {self.ref} ({self.col_list}, {tracking}) FROM STDIN"
        return f"COPY _refsync_stage ({self.col_list}) FROM STDIN"

    _cursor: psycopg.Cursor[Any] | None = None
    _copy_cm: Any = None
    _copy: psycopg.Copy | None = None

    def _copier(self) -> psycopg.Copy:
        """One COPY for all of a table's batches: the server ingests as the rows arrive,
        instead of finishing (and being waited for) once per batch."""
        if self._copy is None:
            raw = self.conn.connection.driver_connection
            assert raw is not None
            self._cursor = raw.cursor()
            self._copy_cm = self._cursor.copy(self._copy_sql())
            self._copy = self._copy_cm.__enter__()
        return self._copy

    def end_staging(self, error: BaseException | None = None) -> None:
        if self._copy_cm is None:
            return
        cm, cursor = self._copy_cm, self._cursor
        self._copy_cm = self._copy = self._cursor = None
        try:
            if error is None:
                cm.__exit__(None, None, None)
            else:  # abort the COPY; the transaction is rolled back anyway
                cm.__exit__(type(error), error, None)
        except psycopg.Error as exc:
            if error is None:
                raise self.classify_write_error(exc, "loading rows") from None
        except Exception:
            if error is None:
                raise
        finally:
            if cursor is not None:
                cursor.close()

    def load_rows(self, batch: Batch) -> None:
        write = self._copier().write_row
        if self.direct:
            for row in batch:
                write(row + TRACKING_ROW)
        else:
            for row in batch:
                write(row)

    def load_text(self, text: str | bytes) -> None:
        data = text.encode("utf-8") if isinstance(text, str) else text
        if self.direct:  # every line gets the layer-1 tracking values
            data = data.replace(b"\n", TRACKING_BYTES + b"\n") + TRACKING_BYTES
        self._copier().write(data + b"\n")

    def classify_write_error(self, exc: BaseException, doing: str) -> RefsyncError:
        orig = getattr(exc, "orig", exc)
        if self.direct and getattr(orig, "sqlstate", None) == "23505":
            return DirectLoadConflict(f"{doing}: a key appears twice")
        return self.target.classify(exc, doing)

    def after_staging(self) -> None:
        self.sql("ANALYZE _refsync_stage", phase="analyze")

    def differs(self, col: ColumnInfo) -> str:
        if col.type_sql.upper() == "JSON":  # json has no equality operator; jsonb does
            q = self.q(col.name)
            return f"t.{q}::jsonb IS DISTINCT FROM s.{q}::jsonb"
        return super().differs(col)


class PostgresTarget(SqlTarget):
    dialect = "postgresql"
    writer_class = PostgresWriter

    def __init__(self, url: str) -> None:
        parsed = sa.engine.make_url(url)
        if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(
            parsed, pool_pre_ping=True,
            connect_args={"connect_timeout": 10, "application_name": "refsync",
                          # staging and the diff's hash join stay in memory, not temp files
                          "options": "-c temp_buffers=256MB -c work_mem=256MB"},
        )
        super().__init__(engine, parsed.render_as_string(hide_password=True))

    def _prepare(self, conn: Connection) -> Connection:
        return conn.execution_options(isolation_level="READ COMMITTED")

    @contextmanager
    def run_lock(self) -> Iterator[None]:
        with self.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
            if not got:
                raise LockHeld(
                    f"another refsync run holds the lock on {self.describe()} "
                    f"(advisory lock {LOCK_KEY})")
            try:
                yield
            finally:
                try:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                except sa.exc.SQLAlchemyError:
                    log.debug("advisory unlock failed; closing the session frees it", exc_info=True)

    def classify(self, exc: BaseException, doing: str) -> RefsyncError:
        orig: Any = getattr(exc, "orig", exc)
        state = getattr(orig, "sqlstate", None) or ""
        diag = getattr(orig, "diag", None)
        detail = (getattr(diag, "message_detail", None) or "") if diag else ""
        primary = (getattr(diag, "message_primary", None) or str(orig)) if diag else str(orig)
        if state == "23503":
            return ConstraintViolation(
                f"{doing} refused by a foreign key: {primary}. {detail}".strip())
        if state.startswith("23"):
            return ConstraintViolation(
                f"{doing} refused by a constraint: {primary}. {detail}".strip())
        if state.startswith("22"):
            return InvalidRows(f"{doing}: the target refused a value: {primary}. {detail}".strip())
        return super().classify(exc, doing)
