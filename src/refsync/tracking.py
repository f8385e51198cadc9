"""The tracking columns of the two-layer tables (Story 6.2.2) and the values a synced row
carries in them: layer 1, `_source = 'authoritative'`, not under review, not derived.
Every writer, the DDL and the digests take these from here."""

from __future__ import annotations

from typing import Any

TRACKING_COLUMNS = ("_source", "_needs_review", "_derived_from_domain", "_derived_at")
AUTHORITATIVE = "authoritative"
LAYER1_VALUES: tuple[Any, ...] = (AUTHORITATIVE, False, None, None)  # by TRACKING_COLUMNS


def layer1_sql(false_sql: str) -> dict[str, str]:
    """The layer-1 values as SQL literals by column, `false_sql` being the dialect's false."""
    return {column: ("NULL" if value is None else false_sql if value is False
                     else f"'{value}'")
            for column, value in zip(TRACKING_COLUMNS, LAYER1_VALUES, strict=True)}


def layer1_copy_text() -> bytes:
    """The layer-1 values as the tail of a PostgreSQL COPY text line (each after a tab)."""
    fields = ("\\N" if value is None else "f" if value is False else str(value)
              for value in LAYER1_VALUES)
    return "".join(f"\t{field}" for field in fields).encode()
