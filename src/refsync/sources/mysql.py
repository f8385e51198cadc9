"""`source_type: legacy_mysql`: the `sql` source on an engine built from WDH_LEGACY_MYSQL_*.

PyMySQL with utf8mb4, the configured pool and timeouts (MySQLPool), optional TLS, a
read-only session with refsync's own sql_mode and a UTC time zone (`mysql_session`).
Engines are cached per settings so the legacy tables of one run share a pool;
`dispose_engines()` closes them all at the end of a run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.dialects.mysql import TIMESTAMP
from sqlalchemy.engine import URL

from refsync.config import MySQLPool, Settings, TableSpec
from refsync.errors import NotConfigured
from refsync.model import Batch
from refsync.sources.sql import SqlSource, listen_mysql_session

READ_ONLY_SESSION = "SET SESSION TRANSACTION READ ONLY"
_ENV = "WDH_LEGACY_MYSQL_"

_engines: dict[tuple[Any, ...], Engine] = {}
_lock = threading.Lock()


def mysql_url(settings: Settings, table: str) -> URL:
    """The legacy MySQL URL (the password stays inside the URL object, never in a string).

    Raises NotConfigured naming each missing variable; `table` names who needs them.
    """
    missing = [f"{_ENV}{name.upper()}" for name in ("host", "user", "database")
               if not getattr(settings, f"legacy_mysql_{name}")]
    if missing:
        raise NotConfigured(
            f"table {table} needs {', '.join(missing)}: legacy MySQL is not configured",
            hint=f"check {missing[0]} (and the other {_ENV}* variables, in the environment "
                 "or .env)",
        )
    password = settings.legacy_mysql_password
    return URL.create(
        "mysql+pymysql",
        username=settings.legacy_mysql_user,
        password=password.get_secret_value() if password is not None else None,
        host=settings.legacy_mysql_host,
        port=settings.legacy_mysql_port,
        database=settings.legacy_mysql_database,
    )


def connect_args(settings: Settings, pool: MySQLPool) -> dict[str, Any]:
    """PyMySQL connect() arguments: timeouts, utf8mb4, TLS, a read-only session."""
    args: dict[str, Any] = {
        "connect_timeout": pool.connect_timeout,
        "read_timeout": pool.read_timeout,
        "write_timeout": pool.read_timeout,
        "charset": "utf8mb4",
        "init_command": READ_ONLY_SESSION,
    }
    ca = settings.legacy_mysql_ssl_ca
    if ca is not None and str(ca) not in ("", "."):  # an empty variable reads as Path(".")
        if not Path(ca).is_file():
            raise NotConfigured(
                f"{_ENV}SSL_CA names a file that does not exist: {Path(ca).absolute()}",
                hint=f"point {_ENV}SSL_CA at the CA certificate (PEM) of the MySQL server",
            )
        args["ssl"] = {"ca": str(ca)}
    return args


def get_engine(settings: Settings, pool: MySQLPool, *, table: str = "legacy_mysql") -> Engine:
    """The shared engine for these settings and pool options (created on first use)."""
    url = mysql_url(settings, table)
    args = connect_args(settings, pool)
    key = (url, str(settings.legacy_mysql_ssl_ca or ""), pool.pool_size, pool.max_overflow,
           pool.connect_timeout, pool.read_timeout)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = create_engine(
                url,
                connect_args=args,
                pool_size=pool.pool_size,
                max_overflow=pool.max_overflow,
                pool_pre_ping=True,
            )
            listen_mysql_session(engine)
            _engines[key] = engine
        return engine


def dispose_engines() -> None:
    """Close every cached legacy MySQL engine and its pooled connections."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()


class LegacyMySQLSource(SqlSource):
    """A legacy MySQL table: `SqlSource` on the shared WDH_LEGACY_MYSQL_* engine."""

    source_type = "legacy_mysql"

    def __init__(self, spec: TableSpec, settings: Settings, pool: MySQLPool, *,
                 batch_size: int) -> None:
        engine = get_engine(settings, pool, table=spec.name)
        super().__init__(spec, engine, batch_size=batch_size, owns_engine=False)

    def describe(self) -> str:
        return f"mysql://{self.location()} table {self.table_name}"

    def iter_batches(self, since: Any | None) -> Iterator[Batch]:
        """As SqlSource, but TIMESTAMP columns (instants, read in a UTC session) become aware
        datetimes, so they land in a timestamptz column unchanged; DATETIME stays naive."""
        self.open()
        names = self.spec.mapped_columns or []
        utc_at = [i for i, n in enumerate(names)
                  if isinstance(self._source_types.get(n), TIMESTAMP)]
        if not utc_at:
            yield from super().iter_batches(since)
            return
        for batch in super().iter_batches(since):
            out = []
            for row in batch:
                values = list(row)
                for i in utc_at:
                    v = values[i]
                    if isinstance(v, datetime):
                        values[i] = v.replace(tzinfo=UTC)
                out.append(tuple(values))
            yield out
