"""Unit tests for the one way names and constants are written into SQL text (sql_names,
sources.sql.core_name) and the layer-1 tracking values' SQL and COPY forms (tracking)."""

from __future__ import annotations

import sqlite3

from sqlalchemy import column, select, table
from sqlalchemy.dialects import mysql, postgresql

from refsync.sources.sql import core_name
from refsync.sql_names import pg_literal, pg_name
from refsync.tracking import TRACKING_COLUMNS, layer1_copy_text, layer1_sql


def test_pg_name_quotes_always_and_doubles_quotes() -> None:
    assert pg_name("年金计划") == '"年金计划"'
    assert pg_name('a"b') == '"a""b"'


def test_pg_literal_doubles_single_quotes_and_keeps_backslashes() -> None:
    assert pg_literal("business.o'neil") == "'business.o''neil'"
    assert pg_literal("a\\b") == "'a\\b'"


def test_pg_name_and_literal_read_back_on_sqlite() -> None:
    conn = sqlite3.connect(":memory:")
    name = 'odd "name" 名'
    conn.execute(f"CREATE TABLE {pg_name(name)} (v text)")
    conn.execute(f"INSERT INTO {pg_name(name)} VALUES ({pg_literal(name)})")
    assert conn.execute(f"SELECT v FROM {pg_name(name)}").fetchone() == (name,)


def test_core_name_is_quoted_by_each_dialect() -> None:
    stmt = select(column(core_name("id"))).select_from(table(core_name("plan")))
    assert str(stmt.compile(dialect=mysql.dialect())) == "SELECT `id` \nFROM `plan`"
    assert str(stmt.compile(dialect=postgresql.dialect())) == 'SELECT "id" \nFROM "plan"'


def test_layer1_values_as_sql_and_copy_text() -> None:
    assert layer1_sql("0") == {"_source": "'authoritative'", "_needs_review": "0",
                               "_derived_from_domain": "NULL", "_derived_at": "NULL"}
    assert list(layer1_sql("false")) == list(TRACKING_COLUMNS)
    assert layer1_copy_text() == b"\tauthoritative\tf\t\\N\t\\N"
