"""One read of a MySQL table inside its snapshot: server-made COPY text in key ranges or in
one streaming statement, the rows the pre-check flags as values, and the snapshot's digests.

A `MySQLRead` lives in the thread that opened its snapshot (`threads.Session`); its
connection is never touched by another (DESIGN 4.9).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Select, bindparam, column, func, or_, text
from sqlalchemy import exc as sa_exc
from sqlalchemy import select as sa_select
from sqlalchemy import table as sa_table
from sqlalchemy import types as sqltypes
from sqlalchemy.sql.elements import ColumnElement

from refsync.errors import QueryFailure
from refsync.model import Chunk
from refsync.sources.base import ReadPlan, Selection
from refsync.sources.mysql_copy import CopyColumn, copy_line, needs_check
from refsync.sources.sql import core_name
from refsync.transform import row_chunks
from refsync.watermark import max_cursor

if TYPE_CHECKING:
    from refsync.digest import BucketDigest, DigestPlan
    from refsync.sources.mysql import MySQLSource

log = logging.getLogger(__name__)

GROUP_CONCAT_MAX_LEN = 1 << 30
# a chunk's COPY text may fill this share of max_allowed_packet (the rest: protocol overhead)
PACKET_SHARE = 0.5
# MariaDB turns an IN list of this many constants into a derived table it builds again for
# every chunk; a sorted list searched per row is far cheaper
IN_LIST_CONVERSION_FROM = 1000
# the text of a few key ranges read in one row holds at most this many chunks' worth of rows
# (batch_size rows of the table's average length, twice over for COPY escapes): memory stays
# flat where ranges are many rows each or rows wide; more is streamed
AGGREGATED_CHUNKS = 4


def _date_or_none(value: Any) -> Any:
    return value if isinstance(value, date) else None


# ---------------------------------------------------------------- chunk queries (pure)


def build_chunk_bounds(rows: Select[Any], key: str, key_type: sqltypes.TypeEngine[Any] | None,
                       *, after_given: bool, limit: int) -> Select[Any]:
    """The key of the `limit`-th row after `:after` in key order (no row: fewer remain), so
    the chunk itself can be read as a plain range. The index walk skips to it (OFFSET): no
    derived table is built for it."""
    k = column(core_name(key), key_type)
    stmt = rows.with_only_columns(k)
    if after_given:
        stmt = stmt.where(k > bindparam("after", type_=key_type))
    return stmt.order_by(k).limit(1).offset(max(0, limit - 1))


def key_range(rows: Select[Any], key: str, key_type: sqltypes.TypeEngine[Any] | None, *,
              after_given: bool, upto_given: bool = True) -> Select[Any]:
    """`rows` restricted to `:after < key <= :upto` (no lower bound for the first chunk, no
    upper bound for the last)."""
    k = column(core_name(key), key_type)
    if upto_given:
        rows = rows.where(k <= bindparam("upto", type_=key_type))
    return rows.where(k > bindparam("after", type_=key_type)) if after_given else rows


def build_chunk_select(rows: Select[Any], key: str, key_type: sqltypes.TypeEngine[Any] | None,
                       cursor_column: str | None, line: ColumnElement[Any],
                       flag: ColumnElement[Any], *, after_given: bool,
                       upto_given: bool = True) -> Select[Any]:
    """One key range aggregated by the server into ONE row: (all COPY lines joined by
    newlines as UTF-8 bytes, row count, rows the pre-check flags, largest cursor). Fetching
    a row per chunk instead of per source row is what makes a pure-Python driver fast; the
    count proves nothing was cut off. Without ORDER BY or LIMIT the server merges the
    derived table into a range scan instead of materialising it."""
    inner = _line_columns(rows, cursor_column, line, flag)
    return _aggregated(key_range(inner, key, key_type, after_given=after_given,
                                 upto_given=upto_given), cursor_column)


def build_aggregate_select(rows: Select[Any], cursor_column: str | None,
                           line: ColumnElement[Any], flag: ColumnElement[Any]) -> Select[Any]:
    """All of `rows` (the rows of a few key ranges) aggregated into ONE row, as
    `build_chunk_select`'s."""
    return _aggregated(_line_columns(rows, cursor_column, line, flag), cursor_column)


def _line_columns(rows: Select[Any], cursor_column: str | None, line: ColumnElement[Any],
                  flag: ColumnElement[Any]) -> Select[Any]:
    return rows.with_only_columns(
        line.label("line"), flag.label("flag"),
        *([column(core_name(cursor_column)).label("cur")] if cursor_column else []))


def _aggregated(inner: Select[Any], cursor_column: str | None) -> Select[Any]:
    x = inner.subquery("x")
    return sa_select(
        # no ORDER BY inside: COPY does not care, and it would make the server sort
        text("CAST(CONVERT(GROUP_CONCAT(x.line SEPARATOR '\\n') USING utf8mb4) AS BINARY)"),
        func.count(), func.coalesce(func.sum(x.c.flag), 0),
        func.max(x.c.cur) if cursor_column else text("NULL")).select_from(x)


@dataclass(frozen=True)
class CopyPlan:
    """How the server formats this table's rows for COPY, and flags rows to judge."""

    columns: list[CopyColumn]
    key: str | None  # None: no one-column key to walk ranges of; one streaming statement

    @property
    def line(self) -> ColumnElement[Any]:
        return copy_line(self.columns)

    @property
    def flag(self) -> ColumnElement[Any]:
        return needs_check(self.columns)




def _walk_size(limit: int, cap: int | None) -> int:
    """Rows a range reads: after an overflow at most half the rows read (`cap`), so the
    retry always shrinks."""
    return limit if cap is None else min(limit, cap)


class MySQLRead:
    """A read of `src` on `conn`, inside the snapshot `MySQLSource.reading` began."""

    def __init__(self, src: MySQLSource, conn: Connection, results: list[Any],
                 since: Any | None, plan: ReadPlan) -> None:
        self.src, self.conn, self.results = src, conn, results
        self.since, self.plan = since, plan
        self.snapshot_utc = src.snapshot_utc
        self.open_writes = src.open_writes
        self._most: int | None = None  # bytes of text an aggregated read takes in one row

    def digests(self, plan: DigestPlan, whole: bool) -> dict[int, BucketDigest]:
        from refsync.sources.mysql_digest import source_digests  # loaded where a table digests

        return source_digests(self.conn, plan, self.src.table, schema=self.src.schema,
                              whole=whole)

    def ordered_ranges(self, plan: DigestPlan) -> DigestPlan | None:
        from refsync.sources.mysql_digest import ordered_ranges

        return ordered_ranges(self.conn, plan)

    def row_hashes(self, plan: DigestPlan,
                   buckets: Sequence[int] | None) -> Iterator[tuple[bytes, tuple[Any, ...], int]]:
        """(key text, key values, row hash) of the rows in `buckets` (None: all), in byte
        order of the key text, streamed (`refsync verify`)."""
        from refsync.sources.mysql_digest import source_row_hashes

        return source_row_hashes(self.conn, plan, self.src.table, buckets,
                                 schema=self.src.schema)

    def key_hashes(self, plan: DigestPlan, keys: Sequence[Any]) -> dict[Any, int]:
        from refsync.sources.mysql_digest import key_row_hashes

        return key_row_hashes(self.conn, plan, self.src.table, keys, schema=self.src.schema)

    def largest_cursor(self) -> Any:
        if self.src.cursor_column is None:
            return None
        table_ = sa_table(core_name(self.src.table),
                          schema=core_name(self.src.schema) if self.src.schema else None)
        largest = self.conn.execute(sa_select(func.max(column(core_name(self.src.cursor_column))))
                                    .select_from(table_)).scalar()
        return _date_or_none(largest)

    def chunks(self, only: Selection | None = None) -> Iterator[Chunk]:
        """The rows (of `only`'s buckets), on the plan's path; key ranges a few at a time
        (MySQL checks a row against every range of its statement)."""
        rows, params = self.src.select(self.since)
        if only is None:
            yield from self._chunks_of(rows, params, only=False)
            return
        from refsync.digest import source_bucket_predicates

        if len(only.differing) >= IN_LIST_CONVERSION_FROM and only.plan.ranges is None:
            with suppress(sa_exc.DBAPIError):
                self.conn.exec_driver_sql("SET SESSION in_predicate_conversion_threshold = 0")
        copy = self.plan.copy
        aggregate = copy is not None and copy.key is not None and only.plan.ranges is not None
        for where in source_bucket_predicates(only.plan, only.differing):
            part = rows.where(text(where))
            if aggregate:  # a few key ranges: their rows are few, one aggregated row
                assert copy is not None
                got = self._aggregated_text(part, params, copy)
                if got is not None:
                    yield from got
                    continue
                aggregate = False  # too long for one row: this and the rest streamed
            yield from self._chunks_of(part, params, only=True)

    def _aggregated_text(self, rows: Select[Any], params: dict[str, Any],
                         plan: CopyPlan) -> list[Chunk] | None:
        """The rows of a few key ranges aggregated by the server into ONE fetched row of
        COPY text, as `_ranged_text` reads a chunk: a row a statement, not a row a source
        row, for the pure-Python driver (streamed, the rows of the parts a comparison found
        different cost about three times what a whole read's do). None where the text is
        longer than a few chunks' (`AGGREGATED_CHUNKS`) or the packet allows. Rows the
        pre-check flags (or holding a NUL): the ranges are read again as values."""
        if self._most is None:
            from refsync.sources.mysql import MIN_ROW_BYTES

            budget = self._packet_budget()[1]
            row_bytes = 2 * max(self.src._avg_row_length, MIN_ROW_BYTES)
            self._most = min(budget, AGGREGATED_CHUNKS * self.src.batch_size * row_bytes)
            # GROUP_CONCAT stops there, and the count below tells
            self.conn.exec_driver_sql(f"SET SESSION group_concat_max_len = {self._most}")
        stmt = build_aggregate_select(rows, self.src.cursor_column, plan.line, plan.flag)
        text_, count, flagged, high = self.conn.execute(stmt, params).one()
        if not count:
            return []
        if text_ is None or text_.count(b"\n") + 1 != count:
            log.debug("%s: the rows of the key ranges read hold more than %d bytes of text: "
                      "they are streamed", self.src.where_text, self._most)
            return None
        if flagged or b"\x00" in text_:  # the value rules decide, row by row
            batch = self.src._as_values([tuple(r) for r in self.conn.execute(rows, params)])
            return [Chunk(len(batch), batch=batch, high=_date_or_none(high))]
        return [Chunk(int(count), copy_text=text_, high=_date_or_none(high))]

    def _chunks_of(self, rows: Select[Any], params: dict[str, Any], *,
                   only: bool) -> Iterator[Chunk]:
        copy = self.plan.copy
        if copy is None:
            batches = self.src._batches_on(self.conn, self.results, self.since, stmt=rows)
            yield from row_chunks((self.src._as_values(b) for b in batches),
                                  cursor=self.src.cursor_column is not None)
        elif copy.key is None or only:
            yield from self._streamed_text(rows, params, copy)
        else:
            yield from self._ranged_text(rows, params, copy)

    def _streamed_text(self, rows: Select[Any], params: dict[str, Any],
                       plan: CopyPlan) -> Iterator[Chunk]:
        """A table without a one-column key, or the rows of the parts a comparison found
        different (one scan of the table, no walk over its keys): their COPY lines in ONE
        streaming statement inside the snapshot, `batch_size` lines a chunk, fetched
        straight from the driver's cursor (no result rows built). The rows the pre-check
        flags (or that hold a NUL) are left out and read at the end as values, in a second
        statement of the same snapshot."""
        line, flag = plan.line, plan.flag
        cursor: list[Any] = ([column(core_name(self.src.cursor_column)).label("cur")]
                             if self.src.cursor_column else [])
        x = rows.with_only_columns(line.label("line"), flag.label("flag"), *cursor).subquery("x")
        # one column a row (a flagged row's line is NULL): the driver's per-column work is
        # most of this path's cost
        stmt = sa_select(text("IF(x.flag, NULL, CAST(CONVERT(x.line USING utf8mb4) AS BINARY))"),
                         *([x.c.cur] if cursor else [])).select_from(x)
        odd = 0
        for part in self._raw_stream(stmt, params):
            high = _date_or_none(max_cursor(None, [r[1] for r in part])) if cursor else None
            lines = [r[0] for r in part]
            if None in lines:
                lines = [line_ for line_ in lines if line_ is not None]
            data = b"\n".join(lines)
            if b"\x00" in data:  # a NUL cannot be staged: the value rules judge the row
                lines = [line_ for line_ in lines if b"\x00" not in line_]
                data = b"\n".join(lines)
            odd += len(part) - len(lines)
            yield Chunk(len(lines), copy_text=data if lines else None, high=high)
        if odd:
            judged = rows.where(or_(flag != 0, func.instr(line, func.char(0)) > 0))
            for batch in self.src._stream_on(self.conn, self.results, judged, params):
                values = self.src._as_values([tuple(r) for r in batch])
                high = max_cursor(None, [r[-1] for r in values]) if cursor else None
                yield Chunk(len(values), batch=values, high=_date_or_none(high))

    def _raw_stream(self, stmt: Select[Any], params: dict[str, Any]) -> Iterator[Sequence[Any]]:
        """`stmt`'s rows in parts of `batch_size`, unbuffered, as the driver's tuples: no
        result rows are built (most of the cost of a per-row read in Python)."""
        conn, results = self.conn, self.results
        if conn.dialect.driver != "pymysql":
            yield from self.src._stream_on(conn, results, stmt, params)
            return
        import pymysql.cursors

        # IN lists expanded and the values in the dialect's parameter style, for the driver
        compiled = stmt.compile(dialect=conn.dialect)
        state = compiled.construct_expanded_state(params)
        args = state.positional_parameters if compiled.positional else state.parameters
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor(pymysql.cursors.SSCursor)
        results.append(cursor)
        cursor.execute(state.statement, args)
        while part := cursor.fetchmany(self.src.batch_size):
            yield part
        cursor.close()
        results.clear()

    def _range_queries(self, rows: Select[Any], plan: CopyPlan) -> tuple[dict[Any, Any],
                                                                         dict[Any, Any]]:
        """The chunk and values statements by (a lower bound given, an upper bound given):
        the first range has no lower bound, the last is open above."""
        key, key_type = plan.key, self.src._key_type
        assert key is not None
        shapes = [(a, u) for a in (False, True) for u in (False, True)]
        chunk_sql = {s: build_chunk_select(rows, key, key_type, self.src.cursor_column,
                                           plan.line, plan.flag, after_given=s[0],
                                           upto_given=s[1]) for s in shapes}
        values_sql = {s: key_range(rows, key, key_type, after_given=s[0], upto_given=s[1])
                      for s in shapes}
        return chunk_sql, values_sql

    def _packet_budget(self) -> tuple[int, int]:
        """(max_allowed_packet, the bytes of COPY text a chunk may hold)."""
        self.conn.exec_driver_sql(f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX_LEN}")
        packet = int(self.conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
        return packet, max(1, int(min(packet, GROUP_CONCAT_MAX_LEN) * PACKET_SHARE))

    def _row_too_large(self, rows: Select[Any], key: str, more: bool, args: dict[str, Any],
                       packet: int) -> QueryFailure:
        big = self.conn.execute(build_chunk_bounds(rows, key, self.src._key_type,
                                                   after_given=more, limit=1), args).scalar()
        return QueryFailure(f"{self.src.where_text}: the row {key}={big!r} is larger than the "
                            f"source server's max_allowed_packet ({packet} bytes)",
                            hint="raise max_allowed_packet on the source MySQL server")

    def _ranged_text(self, rows: Select[Any], params: dict[str, Any],
                     plan: CopyPlan) -> Iterator[Chunk]:
        """Key ranges of `batch_size` rows (fewer where they would not fit the packet), each
        aggregated by the server into one fetched row of COPY text.

        A chunk is sized by bytes too: it must fit max_allowed_packet, or GROUP_CONCAT
        returns NULL. The first size comes from the table's average row length, the next
        ones from the rows just read; a chunk that still overflows is halved and read again,
        down to one row. A chunk holding a flagged row (or a NUL) is read again as values."""
        conn = self.conn
        key, key_type = plan.key, self.src._key_type
        assert key is not None
        chunk_sql, values_sql = self._range_queries(rows, plan)
        packet, budget = self._packet_budget()
        limit = self.src._rows_per_chunk(budget, self.src._avg_row_length)  # rows read a chunk
        cap: int | None = None  # after an overflow: walk at most this many rows
        after: Any = None
        while True:
            more = after is not None
            args = {**params, "after": after} if more else dict(params)
            walked = _walk_size(limit, cap)
            upto = conn.execute(build_chunk_bounds(
                rows, key, key_type, after_given=more, limit=walked), args).scalar()
            last = upto is None  # fewer rows remain: read them all
            if not last:
                args["upto"] = upto
            text_, count, flagged, high = conn.execute(chunk_sql[more, not last],
                                                       args).one()
            if not last and count != walked:
                raise QueryFailure(  # cannot happen inside one snapshot
                    f"{self.src.where_text}: a chunk of {walked} rows came back as {count}",
                    hint="rerun; report it if it happens again")
            if not count:  # an empty table
                pass
            elif text_ is None or text_.count(b"\n") + 1 != count:
                if count == 1:
                    raise self._row_too_large(rows, key, more, args, packet)
                limit = cap = max(1, int(count) // 2)
                log.debug("%s: a chunk of %d rows overflows max_allowed_packet (%d bytes):"
                          " reading %d", self.src.where_text, count, packet, limit)
                continue
            elif flagged or b"\x00" in text_:  # the value rules decide, row by row
                batch = self.src._as_values([tuple(r) for r in conn.execute(
                    values_sql[more, not last], args)])
                yield Chunk(len(batch), batch=batch, high=_date_or_none(high))
            else:
                yield Chunk(int(count), copy_text=text_, high=_date_or_none(high))
            if last:
                return
            after, cap = upto, None
            if count:
                limit = self.src._rows_per_chunk(budget, len(text_) // int(count) + 1)

