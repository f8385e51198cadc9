"""Targets: where reference tables are written. PostgreSQL in production, SQLite for the demo.

`open_target` gives the writing target (SQLAlchemy underneath); `readonly.read_state` a plain
driver connection for `status`, which must not pay for importing SQLAlchemy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from refsync.errors import ConfigError

if TYPE_CHECKING:
    from refsync.targets.base import SqlTarget


def open_target(url: str) -> SqlTarget:
    """A target for `WDH_DATABASE_URL`: postgresql://… or sqlite:///path."""
    scheme = url.split(":", 1)[0].lower()
    if scheme.startswith("postgres"):
        from refsync.targets.postgres import PostgresTarget

        return PostgresTarget(url)
    if scheme.startswith("sqlite"):
        from refsync.targets.sqlite import SqliteTarget

        return SqliteTarget(url)
    raise ConfigError(
        f"unsupported target database {scheme!r} in WDH_DATABASE_URL",
        hint="use postgresql://user@host/db or sqlite:///path.db",
    )


__all__ = ["open_target"]
