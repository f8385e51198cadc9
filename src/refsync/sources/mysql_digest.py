"""The MySQL side of the in-database digests (see refsync.digest.plan): the table's
columns, its digests and its row hashes, each computed by the server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from refsync.digest.canonical import mysql_name
from refsync.digest.plan import (
    _NO_MERGE,
    MASK64,
    WHOLE,
    BucketDigest,
    DigestPlan,
    SourceColumn,
    _bucket_of,
    _by_bucket,
    source_bucket_predicate,
)


def read_source_columns(conn: Connection, table: str,
                        schema: str | None = None) -> dict[str, SourceColumn]:
    """The columns of a MySQL table (name -> SourceColumn), from information_schema."""
    rows = conn.execute(sa.text(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, NUMERIC_PRECISION, "
        "NUMERIC_SCALE, DATETIME_PRECISION FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name "
        "ORDER BY ORDINAL_POSITION"), {"schema": schema, "name": table}).all()
    out: dict[str, SourceColumn] = {}
    for name, dt, ct, cs, prec, scale, fsp in rows:
        out[str(name)] = SourceColumn(
            name=str(name), data_type=_s(dt).lower(), column_type=_s(ct).lower(),
            charset=None if cs is None else _s(cs),
            precision=None if prec is None else int(prec),
            scale=None if scale is None else int(scale),
            fsp=None if fsp is None else int(fsp))
    return out


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes | bytearray) else str(v)


def _source_from(table: str, schema: str | None) -> str:
    return f"{mysql_name(schema)}.{mysql_name(table)}" if schema else mysql_name(table)


def source_digests(conn: Connection, plan: DigestPlan, table: str, *, schema: str | None = None,
                   where_sql: str | None = None, params: Mapping[str, Any] | None = None,
                   whole: bool = False) -> dict[int, BucketDigest]:
    """Per bucket (rows, xor) of the MySQL table, computed by the server. `where_sql` (with
    `params`) restricts the rows, e.g. to read only some buckets. `whole`: the table as one
    part, ``{WHOLE: (rows, xor)}``, without the grouping (a third of the server's time)."""
    where = f" WHERE {where_sql}" if where_sql else ""
    src = _source_from(table, schema)
    if whole:
        sql = f"SELECT {WHOLE}, COUNT(*), BIT_XOR({plan.source_hash}) FROM {src}{where}"  # noqa: S608
    elif plan.bucket_from_hash:  # the hash once per row: MySQL would compute it twice
        sql = (f"SELECT {_bucket_of('d.h', plan.buckets, mysql=True)} AS b, COUNT(*), "  # noqa: S608
               f"BIT_XOR(d.h) FROM (SELECT {plan.source_hash} AS h FROM {src}{where} "
               f"LIMIT {_NO_MERGE}) AS d GROUP BY b ORDER BY NULL")
    else:
        sql = (f"SELECT {plan.source_bucket} AS b, COUNT(*), BIT_XOR({plan.source_hash}) "  # noqa: S608
               f"FROM {src}{where} GROUP BY b ORDER BY NULL")
    rows = conn.execute(sa.text(sql), dict(params or {})).all()
    return _by_bucket(rows)


def source_row_hashes(conn: Connection, plan: DigestPlan, table: str,
                      buckets: Sequence[int] | None, *, schema: str | None = None,
                      batch: int = 10_000) -> Iterator[tuple[bytes, tuple[Any, ...], int]]:
    """(key text, key values, row hash) of the source rows in `buckets` (None: all), in
    byte order of the key text; streamed."""
    where = f" WHERE {source_bucket_predicate(plan, buckets)}" if buckets is not None else ""
    keys = ", ".join(mysql_name(plan.source_columns[i]) for i in range(len(plan.key)))
    sql = (f"SELECT {plan.source_key_text} AS kt, {keys}, {plan.source_hash} "  # noqa: S608
           f"FROM {_source_from(table, schema)}{where} ORDER BY kt")
    result = conn.execution_options(stream_results=True).exec_driver_sql(sql)
    try:
        for part in result.partitions(batch):
            for r in part:
                kt = r[0] if isinstance(r[0], bytes) else str(r[0]).encode()
                yield kt, tuple(r[1:-1]), int(r[-1]) & MASK64
    finally:
        result.close()


