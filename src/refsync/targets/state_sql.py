"""The SQL text refsync runs on its own state tables, on PostgreSQL or SQLite: the columns a
state table has, and the reads behind `refsync status`. What the tables are and what a record
means is `refsync.state`'s. `status` reads through the plain driver (`readonly.StateReader`),
so this module imports no SQLAlchemy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from refsync.sql_names import pg_name

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from refsync.targets.readonly import StateReader

Row = dict[str, Any]


def table_ref(schema: str | None, table: str) -> str:
    """A state table's name as SQL text (SQLite has no schemas)."""
    return f"{pg_name(schema)}.{pg_name(table)}" if schema else pg_name(table)


def column_names(conn: Connection, ref: str) -> set[str]:
    """The columns the table `ref` has now: one empty SELECT (reflection costs 20 ms)."""
    return set(conn.exec_driver_sql(f"SELECT * FROM {ref} WHERE 1 = 0").keys())  # noqa: S608


def add_column(conn: Connection, ref: str, name: str, kind: str) -> None:
    """Add a column a newer release brought (`name` and `kind` already SQL text)."""
    conn.exec_driver_sql(f"ALTER TABLE {ref} ADD COLUMN {name} {kind}")


def stored_columns(db: StateReader, schema: str | None, table: str) -> list[str]:
    """The columns of `table` in order, as the server has them; empty when it is missing."""
    if db.dialect == "postgresql":
        return [r["column_name"] for r in db.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = %s ORDER BY ordinal_position", (schema, table))]
    return [r["name"] for r in db.rows(f"PRAGMA table_info({pg_name(table)})")]


def status_rows(db: StateReader, schema: str | None, state_table: str, runs_table: str,
                names: list[str],
                runs: int) -> tuple[dict[str, Row], list[Row], dict[str, Row]] | None:
    """For the tables `names`: (their state rows by name, the rows of the newest `runs` runs,
    the row of each one's last run by name), as the driver returns them; None before the
    state tables exist or without names. A run row has the columns the table has (one an
    older release made may lack newer ones)."""
    have = stored_columns(db, schema, runs_table)
    if not have or not names:
        return None
    m = db.mark
    among = f"table_name IN ({', '.join([m] * len(names))})"
    cols = ", ".join(pg_name(c) for c in have)
    states = {r["table_name"]: r for r in db.rows(
        f"SELECT * FROM {table_ref(schema, state_table)} WHERE {among}", names)}
    runs_ref = table_ref(schema, runs_table)
    keys = [r["run_key"] for r in db.rows(
        f"SELECT run_key FROM {runs_ref} WHERE {among} GROUP BY run_key "
        f"ORDER BY max(started_at) DESC LIMIT {int(runs)}", names)]
    rows = db.rows(
        f"SELECT {cols} FROM {runs_ref} WHERE run_key IN ({', '.join([m] * len(keys))}) "
        f"AND {among} ORDER BY started_at DESC, table_name", [*keys, *names]) if keys else []
    pairs = [(s["last_run_key"], s["table_name"]) for s in states.values() if s["last_run_key"]]
    last = {r["table_name"]: r for r in db.rows(
        f"SELECT {cols} FROM {runs_ref} WHERE (run_key, table_name) IN "
        f"({', '.join([f'({m}, {m})'] * len(pairs))})",
        [v for pair in pairs for v in pair])} if pairs else {}
    return states, rows, last
