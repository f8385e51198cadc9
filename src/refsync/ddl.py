"""Target table definitions for `init-db --create-tables`: key, mapped columns, tracking columns.

Column types come from the source where it can tell (a reflected SQL table), else TEXT.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from refsync.config import TableSpec


def tracking_columns() -> list[sa.Column[Any]]:
    """The four layer-1/layer-2 columns (Story 6.2.2), defaulting to the authoritative layer."""
    return [
        sa.Column("_source", sa.String(20), nullable=False, server_default="authoritative"),
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


def target_table(spec: TableSpec, columns: list[str], source_types: dict[str, Any],
                 schema: str | None) -> sa.Table:
    """The table refsync would create for `spec`; `source_types` maps target names to types."""
    md = sa.MetaData(schema=schema)
    cols: list[sa.Column[Any]] = []
    for name in columns:
        satype = portable(source_types[name]) if name in source_types else sa.Text()
        cols.append(sa.Column(name, satype, nullable=name not in spec.primary_key))
    return sa.Table(spec.target_table, md, *cols, *tracking_columns(),
                    sa.PrimaryKeyConstraint(*spec.primary_key))
