"""A target table (as `refsync.ddl` defines it) in PostgreSQL's words: the idempotent
statements `init-db --create-tables` runs on PostgreSQL, the script `--print-sql` prints for
a DBA, and `deploy/sql/reference_tables.sql` holds for the seed's tables."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from refsync.sql_names import pg_literal, pg_name
from refsync.tracking import TRACKING_COLUMNS

SCRIPT_HEADER = """\
-- refsync's reference tables, each with the four tracking columns (Story 6.2.2): the SQL
-- `refsync init-db --create-tables` applies to PostgreSQL for a table that does not exist,
-- as printed by `refsync init-db --print-sql`. Idempotent: run again, it only adds what is
-- missing (a tracking column, an index).
--
--   psql "$WDH_DATABASE_URL" -v ON_ERROR_STOP=1 -f reference_tables.sql
"""

_PG: sa.Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]


def _column_sql(col: sa.Column[Any]) -> str:
    type_sql = col.type.compile(dialect=_PG)
    if re.fullmatch(r"[A-Z0-9 (),]+", type_sql):
        type_sql = type_sql.lower()
    parts = [pg_name(col.name), type_sql]
    if not col.nullable:
        parts.append("NOT NULL")
    default = col.server_default
    if isinstance(default, sa.DefaultClause):
        arg = default.arg
        if isinstance(arg, str):
            parts.append(f"DEFAULT {pg_literal(arg)}")
        elif isinstance(arg, sa.ClauseElement):
            parts.append(f"DEFAULT {arg.compile(dialect=_PG)}")
    return " ".join(parts)


def table_statements(table: sa.Table) -> list[str]:
    """The table as idempotent PostgreSQL statements: CREATE TABLE IF NOT EXISTS, the
    tracking columns added where an older table lacks them, CREATE INDEX IF NOT EXISTS."""
    ref = f"{pg_name(table.schema)}.{pg_name(table.name)}" if table.schema else pg_name(table.name)
    tracking = [c for c in table.columns if c.name in TRACKING_COLUMNS]
    body = [f"    {_column_sql(c)}" for c in table.columns]
    pk = table.primary_key
    body.append(f"    CONSTRAINT {pg_name(str(pk.name))} PRIMARY KEY "
                f"({', '.join(pg_name(c.name) for c in pk.columns)})")
    out = [f"CREATE TABLE IF NOT EXISTS {ref} (\n" + ",\n".join(body) + "\n);"]
    out += [f"ALTER TABLE {ref} ADD COLUMN IF NOT EXISTS {_column_sql(c)};" for c in tracking]
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        where = index.dialect_options["postgresql"]["where"]
        cols = ", ".join(pg_name(str(getattr(c, "name", c))) for c in index.expressions)
        out.append(f"CREATE INDEX IF NOT EXISTS {pg_name(str(index.name))} ON {ref} ({cols})"
                   + (f" WHERE {pg_name(where.name)}" if where is not None else "") + ";")
    return out


def script(tables: list[sa.Table]) -> str:
    """`--print-sql`: every table's statements in one transaction, schemas first."""
    out = [SCRIPT_HEADER, "BEGIN;",
           "SET LOCAL client_min_messages = warning;  -- no 'already exists, skipping' notices"]
    schemas = list(dict.fromkeys(t.schema for t in tables if t.schema))
    out += ["", *(f"CREATE SCHEMA IF NOT EXISTS {pg_name(s)};" for s in schemas)]
    for table in tables:
        out += ["", *table_statements(table)]
    out += ["", "COMMIT;", ""]
    return "\n".join(out)


def create_table(conn: Connection, table: sa.Table) -> None:
    """Run `table`'s statements, creating its schema first when missing (only then: CREATE
    SCHEMA asks for CREATE on the database)."""
    if table.schema and not sa.inspect(conn).has_schema(table.schema):
        conn.exec_driver_sql(f"CREATE SCHEMA {pg_name(table.schema)}")
    for statement in table_statements(table):
        conn.exec_driver_sql(statement)
