"""Names in SQL text: the one way each is quoted.

Values are always bound parameters. Names (schemas, tables, columns) and refsync's own
constants are written into SQL text, always quoted, so a Chinese name, a reserved word or a
quote inside a name reads as the name it is. PostgreSQL and SQLite quote alike. MySQL SQL
text is built by SQLAlchemy Core from names marked `sources.sql.core_name`, which the dialect
quotes by its own rules. No SQLAlchemy here: `status` quotes with these and starts fast.
"""

from __future__ import annotations

__all__ = ["pg_literal", "pg_name"]


def pg_name(name: str) -> str:
    """A PostgreSQL or SQLite identifier: "name", a double quote in it doubled."""
    return '"' + name.replace('"', '""') + '"'


def pg_literal(text: str) -> str:
    """A PostgreSQL or SQLite string literal: 'text', a single quote in it doubled
    (standard_conforming_strings, PostgreSQL's default: a backslash is itself)."""
    return "'" + text.replace("'", "''") + "'"

