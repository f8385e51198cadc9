"""Sources: where a reference table's rows come from. `open_source` picks one by source_type.

- `legacy_mysql`: `LegacyMySQLSource` (sources/mysql.py), the WDH_LEGACY_MYSQL_* database
- `sql`: `SqlSource` (sources/sql.py), any SQLAlchemy URL; `MySQLSource` for a MySQL one
- `config_file`: `YamlFileSource` (sources/yaml_file.py), a versioned YAML file
"""

from __future__ import annotations

from refsync.config import MySQLPool, Settings, TableSpec
from refsync.dberrors import classify_db_error, is_connection_error, scrub
from refsync.sources.base import Source
from refsync.sources.mysql import (
    MYSQL_BACKENDS,
    LegacyMySQLSource,
    MySQLSource,
    dispose_engines,
)
from refsync.sources.sql import SqlSource, build_select, resolve_url, url_location
from refsync.sources.yaml_file import YamlFileSource

__all__ = [
    "LegacyMySQLSource",
    "MySQLSource",
    "SqlSource",
    "YamlFileSource",
    "build_select",
    "classify_db_error",
    "dispose_engines",
    "is_connection_error",
    "open_source",
    "scrub",
    "source_host",
]


def source_host(spec: TableSpec, settings: Settings) -> str:
    """Where a table's rows come from, as a host (`host:port/database`) or a file, known
    before the source opens, for logs: never a password, never raises."""
    from pathlib import Path

    from refsync.config import FileSourceConfig

    try:
        if spec.source_type == "legacy_mysql":
            if not settings.legacy_mysql_host:
                return "legacy MySQL (WDH_LEGACY_MYSQL_HOST not set)"
            return (f"{settings.legacy_mysql_host}:{settings.legacy_mysql_port}/"
                    f"{settings.legacy_mysql_database or ''}")
        if isinstance(spec.source_config, FileSourceConfig):
            return str(Path(spec.source_config.file_path).absolute())
        url = resolve_url(spec)
        if url.host:
            return f"{url.host}:{url.port or ''}/{url.database or ''}".replace(":/", "/")
        return url_location(url)
    except Exception:  # noqa: BLE001 - a log field must never fail a table
        return spec.source_type


def open_source(spec: TableSpec, settings: Settings, pool: MySQLPool, batch_size: int) -> Source:
    """The source of `spec`, opened: the table and its columns checked, or the file read.

    Raises NotConfigured, ConfigError, FileMissing, SchemaVersionMismatch, ConnectionFailure
    (retry) or QueryFailure; a source that fails to open is closed before the error propagates.
    """
    source: SqlSource | YamlFileSource
    if spec.source_type == "config_file":
        source = YamlFileSource(spec, batch_size=batch_size)
    elif spec.source_type == "legacy_mysql":
        source = LegacyMySQLSource(spec, settings, pool, batch_size=batch_size)
    elif resolve_url(spec).get_backend_name() in MYSQL_BACKENDS:
        source = MySQLSource.from_spec(spec, batch_size=batch_size)
    else:
        source = SqlSource.from_spec(spec, batch_size=batch_size)
    try:
        source.open()
    except BaseException:
        source.close()
        raise
    return source
