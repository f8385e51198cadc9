"""The MySQL side of the in-database digests (see refsync.digest.plan): the table's
columns, its digests and its row hashes, each computed by the server."""

from __future__ import annotations

import json
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
        "NUMERIC_SCALE, DATETIME_PRECISION, COLLATION_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name "
        "ORDER BY ORDINAL_POSITION"), {"schema": schema, "name": table}).all()
    out: dict[str, SourceColumn] = {}
    for name, dt, ct, cs, prec, scale, fsp, coll in rows:
        out[str(name)] = SourceColumn(
            name=str(name), data_type=_s(dt).lower(), column_type=_s(ct).lower(),
            charset=None if cs is None else _s(cs),
            precision=None if prec is None else int(prec),
            scale=None if scale is None else int(scale),
            fsp=None if fsp is None else int(fsp), collation=None if coll is None else _s(coll))
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
    if plan.ranges is not None and not whole:
        return _range_digests(conn, plan, src, where_sql, params)
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


def _bounds_table(plan: DigestPlan, alias: str = "b") -> str:
    """The key ranges between two bounds as a table of (i, lo, hi), typed in the key's own
    collation (so comparing with the key uses its index), from one JSON parameter."""
    assert plan.range_key is not None
    t = plan.range_key.source_type
    return (f"JSON_TABLE(:bounds, '$[*]' COLUMNS (i INT PATH '$[0]', lo {t} PATH '$[1]', "
            f"hi {t} PATH '$[2]')) AS {alias}")


def _bounds_json(plan: DigestPlan) -> str:
    assert plan.ranges is not None
    b = plan.ranges.source_bounds
    return json.dumps([[i + 1, lo, hi] for i, (lo, hi) in enumerate(zip(b, b[1:], strict=False))])


def _range_digests(conn: Connection, plan: DigestPlan, src: str, where_sql: str | None,
                   params: Mapping[str, Any] | None) -> dict[int, BucketDigest]:
    """Per key range (rows, xor) of the rows `where_sql` holds (None: all): the ranges
    between two bounds joined to the table (an index range scan for each, grouped by range:
    the rows come range after range, so the grouping costs MySQL little), and the two open
    ends."""
    assert plan.ranges is not None and plan.range_key is not None
    key, h = plan.range_key.source, plan.source_hash
    n = len(plan.ranges.bounds)
    first, last = plan.ranges.source_bounds[0], plan.ranges.source_bounds[-1]
    lit = plan.range_key.literal
    also = f" AND ({where_sql})" if where_sql else ""
    sql = (f"SELECT 0, COUNT(*), BIT_XOR({h}) FROM {src} WHERE {key} < {lit(first)}{also} "  # noqa: S608
           f"UNION ALL SELECT {n}, COUNT(*), BIT_XOR({h}) FROM {src} "
           f"WHERE {key} >= {lit(last)}{also}")
    if n > 1:
        sql += (f" UNION ALL (SELECT b.i, COUNT(*), BIT_XOR({h}) FROM {_bounds_table(plan)} "  # noqa: S608
                f"JOIN {src} ON {key} >= b.lo AND {key} < b.hi{also} GROUP BY b.i "
                "ORDER BY NULL)")
    rows = conn.execute(sa.text(sql), {**(params or {}), "bounds": _bounds_json(plan)}).all()
    return {b: d for b, d in _by_bucket(rows).items() if d.rows}


def ordered_ranges(conn: Connection, plan: DigestPlan) -> DigestPlan | None:
    """`plan` with only the bounds MySQL orders as PostgreSQL does (strictly increasing in
    the key's collation: then its ranges cover every key once), or None where that leaves
    fewer than half of them (the orders differ throughout: the key's bytes make better
    buckets) or the server cannot join a JSON table (MySQL before 8.0.4, MariaDB before
    10.6)."""
    assert plan.ranges is not None
    plan = _within_packet(plan, _packet_limit(conn))
    assert plan.ranges is not None
    wanted = len(plan.ranges.bounds)
    for _ in range(8):
        if len(plan.ranges.bounds) * 2 < wanted:
            return None
        if len(plan.ranges.bounds) < 2:
            return plan
        try:
            bad = [int(r[0]) for r in conn.execute(sa.text(
                f"SELECT b.i FROM {_bounds_table(plan)} WHERE NOT (b.lo < b.hi)"),  # noqa: S608
                {"bounds": _bounds_json(plan)})]
        except sa.exc.ProgrammingError:
            return None
        if not bad:
            return plan
        plan = plan.with_ranges(plan.ranges.without(set(bad)))  # the upper bound of each
    return None


def key_row_hashes(conn: Connection, plan: DigestPlan, table: str, keys: Sequence[Any], *,
                   schema: str | None = None) -> dict[Any, int]:
    """Key -> row hash of the source rows whose one-column key is among `keys` (values as
    the target holds them; a text key not writable in the column's character set is left
    out), looked up by the key's index, in one statement. A key equal in the collation but
    not in its bytes comes back as it is stored, so it does not match the key asked for.
    Most of the cost is the lookups themselves, at random over the table (1,450 keys of a
    million rows: 0.12 s, as one IN list, as a list MariaDB turns into a derived table, or in
    statements of 900)."""
    rk = plan.range_key
    assert rk is not None
    wanted = [k for k in keys if isinstance(k, int) or rk.writable(str(k))]
    if not wanted:
        return {}
    sql = (f"SELECT {rk.source}, {plan.source_hash} FROM {_source_from(table, schema)} "  # noqa: S608
           f"WHERE {rk.source} IN ({', '.join(rk.literal(k) for k in wanted)})")
    return {r[0]: int(r[1]) & MASK64 for r in conn.execute(sa.text(sql))}


def _packet_limit(conn: Connection) -> int:
    """The largest statement the server takes (`max_allowed_packet`, bytes)."""
    return int(conn.execute(sa.text("SELECT @@max_allowed_packet")).scalar_one())


def _within_packet(plan: DigestPlan, limit: int) -> DigestPlan:
    """`plan` with every other bound dropped (ranges twice as large) until its bounds take
    at most a quarter of the server's largest statement (the digest statement carries them
    once, and its SQL besides)."""
    assert plan.ranges is not None
    while len(plan.ranges.bounds) > 1 and 4 * len(_bounds_json(plan)) > limit:
        plan = plan.with_ranges(plan.ranges.without(set(range(1, len(plan.ranges.bounds), 2))))
    return plan


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


