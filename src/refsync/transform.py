"""Converted rows: `RowConverter` applies the value rules (rules.py) to whole batches, drops
the extra trailing values a source may carry (the incremental cursor), and counts and lists
the rejected rows (and the earliest rejected cursor, for `watermark`); `row_chunks` wraps
batches as chunks.

`RowConverter.convert_batch` converts column-wise (one ``map`` per column, C-level
iteration) and falls back to row by row only for a batch that holds a bad value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

from refsync.model import Batch, Chunk, ColumnInfo, Reject, Row
from refsync.rules import RejectValue, UnfitBatch, make_converter, refusing_unfit
from refsync.watermark import cursor_before, is_cursor_value, max_cursor

__all__ = ["RowConverter", "make_converter", "row_chunks", "shorten"]


# ---------------------------------------------------------------- rows


def shorten(value: Any, limit: int = 80) -> str:
    """`str(value)` cut to at most `limit` characters, ending in '…' when cut."""
    s = value if isinstance(value, str) else str(value)
    if len(s) <= limit:
        return s
    return s[: max(limit - 1, 0)] + "…"


def _json_safe(v: Any) -> Any:
    if v is None or isinstance(v, str | int):  # bool is an int
        return v
    if isinstance(v, float) and math.isfinite(v):  # NaN would make the JSON invalid
        return v
    return str(v)


class RowConverter:
    """Converts batches of source rows for one table and keeps the rejects.

    `columns` is the order of the values in each incoming row; a row may carry extra
    trailing values (the incremental cursor), which are dropped from the output.
    """

    def __init__(self, columns: list[ColumnInfo], key: list[str], source_tz: ZoneInfo,
                 max_listed: int = 20, *, cursor: bool = False) -> None:
        names = [c.name for c in columns]
        missing = [k for k in key if k not in names]
        if missing:
            raise ValueError(f"key column(s) {missing} not among the columns {names}")
        self.columns = list(columns)
        self.key = list(key)
        self.max_listed = max_listed
        self.cursor = cursor
        self._converters = [make_converter(c, source_tz) for c in columns]
        self._strict = [refusing_unfit(c) for c in self._converters]  # for an UnfitBatch
        self._getters = [itemgetter(i) for i in range(len(columns))]
        self._key_index = [(k, names.index(k)) for k in key]
        self.rejected = 0
        self.rejects: list[Reject] = []
        self.rejected_keys: list[Row] = []
        """The key of every rejected row (not only the listed ones), as the target stores
        it: under delete_insert their target rows are kept (DESIGN 4.5)."""
        self.reject_low: Any = None
        """The smallest cursor among rejected rows (with `cursor`): the watermark stops
        there, so an incremental run reads them again (DESIGN 4.4)."""

    def convert_batch(self, batch: Batch) -> Batch:
        """The valid rows of `batch`, converted, each exactly len(columns) values long."""
        if not batch:
            return []
        convs = self._converters
        n = len(convs)
        if n == 0:
            return [() for _ in batch]
        if type(batch) is UnfitBatch:
            return self._convert_rows(batch)
        # Column-wise: one C-level map per column, then zip back into row tuples. A bad
        # value (or a short row: IndexError) sends the batch down the row-by-row path.
        try:
            converted = [list(map(c, map(getter, batch)))
                         for c, getter in zip(convs, self._getters, strict=True)]
        except (RejectValue, IndexError):
            pass
        else:
            return list(zip(*converted, strict=True))
        return self._convert_rows(batch)

    def _convert_rows(self, batch: Batch) -> Batch:
        convs = self._strict if type(batch) is UnfitBatch else self._converters
        n = len(convs)
        out: Batch = []
        append = out.append
        for row in batch:
            if len(row) < n:
                raise ValueError(f"a row holds {len(row)} values, expected at least {n}")
            try:
                append(tuple([c(v) for c, v in zip(convs, row, strict=False)]))
            except RejectValue:
                self._reject(row)
        return out

    def _reject(self, row: tuple[Any, ...]) -> None:
        self.rejected += 1
        self._keep_key(row)
        cursor = row[-1] if self.cursor and len(row) > len(self._converters) else None
        if is_cursor_value(cursor) and (self.reject_low is None
                                         or cursor_before(cursor, self.reject_low)):
            self.reject_low = cursor
        if len(self.rejects) >= self.max_listed:
            return
        for col, conv, value in zip(self.columns, self._strict, row, strict=False):
            try:
                conv(value)
            except RejectValue as e:
                key = {k: _json_safe(row[i]) for k, i in self._key_index}
                shown = "NULL" if value is None else shorten(value)
                self.rejects.append(Reject(key=key, column=col.name, value=shown,
                                           reason=e.reason))
                return

    def _keep_key(self, row: tuple[Any, ...]) -> None:
        """Remember a rejected row's key in the target's terms; a key that does not fit its
        column (NULL, too long) matches no target row, so there is nothing to keep."""
        try:
            key = tuple(self._strict[i](row[i]) for _, i in self._key_index)
        except (RejectValue, IndexError):
            return
        self.rejected_keys.append(key)


# ---------------------------------------------------------------- chunks


def row_chunks(batches: Iterable[Batch], *, cursor: bool) -> Iterator[Chunk]:
    """Batches of source values (the cursor last, with `cursor`) as pipeline chunks."""
    for batch in batches:
        high = max_cursor(None, [row[-1] for row in batch]) if cursor and batch else None
        yield Chunk(len(batch), batch=batch, high=high)
