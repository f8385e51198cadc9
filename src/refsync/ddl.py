"""Target table definitions: what `init-db --create-tables` creates and `--print-sql` prints.

One definition serves both: `target_table` builds the table (key, mapped columns, the four
tracking columns, the `ix_*` indexes) and `targets.pg_ddl` renders it as the idempotent
SQL that `--create-tables` runs on PostgreSQL, `--print-sql` prints, and
`deploy/sql/reference_tables.sql` holds for the seed's tables; on SQLite, SQLAlchemy creates
the same table.

A column's type is the one its mapping declares (`type: varchar(20)`), else the source's
where it can tell (a reflected SQL table), else TEXT. Created columns copy the source's
nullability (the key is always NOT NULL) and never get a default or a sequence: refsync
writes every value itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from refsync.config import DECLARABLE_TYPES, LoadedConfig, Settings, TableSpec
from refsync.errors import ConfigError, RefsyncError
from refsync.targets import pg_ddl
from refsync.tracking import AUTHORITATIVE

if TYPE_CHECKING:
    from refsync.targets.base import SqlTarget


def tracking_columns() -> list[sa.Column[Any]]:
    """The four layer-1/layer-2 columns (Story 6.2.2), defaulting to the authoritative layer."""
    return [
        sa.Column("_source", sa.String(20), nullable=False, server_default=AUTHORITATIVE),
        sa.Column("_needs_review", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("_derived_from_domain", sa.String(50)),
        sa.Column("_derived_at", sa.DateTime(timezone=True)),
    ]


def portable(satype: Any) -> sa.types.TypeEngine[Any]:
    """A source column type in generic form (MySQL DATETIME -> DateTime, VARCHAR(n) kept)."""
    if isinstance(satype, sa.types.NullType):
        return sa.Text()
    try:
        generic = satype.as_generic()
    except NotImplementedError:
        return sa.Text()
    if isinstance(generic, sa.Enum):
        longest = max((len(e) for e in generic.enums), default=1)
        return sa.String(max(longest, 1))
    if isinstance(generic, sa.Boolean):
        return sa.Boolean()
    if isinstance(generic, sa.Integer) and getattr(satype, "unsigned", False):
        return sa.Numeric(20, 0) if isinstance(generic, sa.BigInteger) else sa.BigInteger()
    if isinstance(generic, sa.String) and not isinstance(generic, sa.Text) and not generic.length:
        return sa.Text()
    return generic  # type: ignore[no-any-return]


_DECLARED = re.compile(r"^\s*([a-z][a-z ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")
_PLAIN: dict[str, Any] = {
    "text": sa.Text, "smallint": sa.SmallInteger, "integer": sa.Integer, "int": sa.Integer,
    "bigint": sa.BigInteger, "real": sa.REAL, "double precision": sa.Double,
    "boolean": sa.Boolean, "date": sa.Date, "time": sa.Time, "timestamp": sa.DateTime,
    "json": sa.JSON, "jsonb": postgresql.JSONB,
}


def declared_type(text: str) -> sa.types.TypeEngine[Any]:
    """A mapping's `type:` (`varchar(20)`, `numeric(12,2)`, `timestamptz`…) as a SQLAlchemy
    type; config.ColumnMap has checked it names one of DECLARABLE_TYPES."""
    match = _DECLARED.match(text.lower())
    if match is None or match[1] not in DECLARABLE_TYPES:
        raise ConfigError(f"column type {text!r} is not one refsync can create")
    name, first, second = match[1], match[2], match[3]
    if name in ("varchar", "character varying"):
        return sa.String(int(first)) if first else sa.Text()
    if name in ("char", "character"):
        return sa.CHAR(int(first or 1))
    if name in ("numeric", "decimal"):
        return sa.Numeric(int(first) if first else None, int(second) if second else None)
    if name in ("timestamptz", "timestamp with time zone"):
        return sa.DateTime(timezone=True)
    return _PLAIN[name]()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class SourceShape:
    """What the source says about the table's columns (target names)."""

    columns: list[str]
    types: dict[str, Any] = field(default_factory=dict)
    not_null: set[str] = field(default_factory=set)


def reference_columns(spec: TableSpec, specs: list[TableSpec], columns: list[str]) -> list[str]:
    """Columns of `spec` that hold the key of a table it depends on (组合计划.年金计划号):
    indexed, as a foreign key's referencing side wants."""
    by_name = {t.name: t for t in specs}
    found: list[str] = []
    for parent in spec.depends_on:
        parent_key = by_name[parent].primary_key if parent in by_name else []
        for col in parent_key:
            if col in columns and col != spec.primary_key[0] and col not in found:
                found.append(col)
    return found


def target_table(spec: TableSpec, shape: SourceShape, schema: str | None,
                 indexed: list[str] | None = None) -> sa.Table:
    """The table refsync creates for `spec`: its key, the mapped columns, the tracking
    columns, and the `ix_*` indexes (authoritative-layer review, referencing columns)."""
    declared = {c.target: c.type for c in spec.source_config.columns or [] if c.type}
    md = sa.MetaData(schema=schema)
    cols: list[sa.Column[Any]] = []
    for name in shape.columns:
        if name in declared:
            satype = declared_type(declared[name])
        else:
            satype = portable(shape.types[name]) if name in shape.types else sa.Text()
        nullable = name not in spec.primary_key and name not in shape.not_null
        cols.append(sa.Column(name, satype, nullable=nullable, autoincrement=False))
    table = sa.Table(spec.target_table, md, *cols, *tracking_columns(),
                     sa.PrimaryKeyConstraint(*spec.primary_key,
                                             name=f"{spec.target_table}_pkey"))
    review = table.c["_needs_review"]
    sa.Index(f"ix_{spec.target_table}_needs_review", table.c["_derived_from_domain"],
             postgresql_where=review, sqlite_where=review)
    for col in indexed or []:
        sa.Index(f"ix_{spec.target_table}_{col}", table.c[col])
    return table


# ---------------------------------------------------------------- from the config


def source_shape(config: LoadedConfig, settings: Settings, spec: TableSpec) -> SourceShape:
    """The columns, types and NOT NULLs the source declares, where it can tell."""
    from refsync.sources import open_source

    try:
        source = open_source(spec, settings, config.section.legacy_mysql, spec.options.batch_size)
    except RefsyncError:
        if spec.mapped_columns is None:
            raise
        return SourceShape(list(spec.mapped_columns))
    try:
        types = source.column_types() if hasattr(source, "column_types") else {}
        not_null = source.not_null_columns() if hasattr(source, "not_null_columns") else set()
        return SourceShape(list(source.columns), types, not_null)
    finally:
        source.close()


def configured_table(config: LoadedConfig, settings: Settings, spec: TableSpec,
                     schema: str | None) -> sa.Table:
    shape = source_shape(config, settings, spec)
    indexed = reference_columns(spec, config.section.tables, shape.columns)
    return target_table(spec, shape, schema, indexed)


def print_sql(config: LoadedConfig, settings: Settings) -> str:
    """The PostgreSQL script for every configured table; reads the sources, not the target."""
    from refsync.sources import dispose_engines

    try:
        return pg_ddl.script([configured_table(config, settings, spec, spec.target_schema)
                              for spec in config.section.tables])
    finally:
        dispose_engines()


def create_missing_tables(config: LoadedConfig, settings: Settings,
                          target: SqlTarget) -> list[str]:
    """`init-db --create-tables`: each configured table the target lacks, created by the
    statements `--print-sql` prints (PostgreSQL) or the same table through SQLAlchemy."""
    actions: list[str] = []
    for spec in config.section.tables:
        ref = spec.qualified_target if target.dialect == "postgresql" else spec.target_table
        if target.columns(spec.target_schema, spec.target_table) is not None:
            actions.append(f"{ref}: exists, left as it is")
            continue
        schema = target.schema_for(spec.target_schema)
        table = configured_table(config, settings, spec, schema)
        with target.transaction() as conn:
            if target.dialect == "postgresql":
                pg_ddl.create_table(conn, table)
            else:
                table.create(conn)
        mapped = len(table.columns) - len(tracking_columns())
        actions.append(f"{ref}: created ({mapped} columns + 4 tracking columns)")
    return actions
