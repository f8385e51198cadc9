"""The PostgreSQL side of the in-database digests (see refsync.digest.plan): the target's
authoritative rows' digests and row hashes, computed by the server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from typing import Any

from sqlalchemy.engine import Connection

from refsync.digest.canonical import ALIAS, pg_ident, sql_constant
from refsync.digest.plan import (
    AUTHORITATIVE,
    MASK64,
    WHOLE,
    BucketDigest,
    DigestPlan,
    DigestUnsupported,
    _bucket_of,
    _by_bucket,
    target_bucket_predicate,
)
from refsync.digest.ranges import SAMPLES_PER_PART, KeyRanges, text_ranges

# the target digest's session settings: the planner does not know what the row hashes cost,
# so without these it never runs them in parallel workers (see `target_digests`)
# (and JIT-compiling the long expression in each worker costs more than it saves)
TARGET_PARALLEL_SETTINGS: dict[str, str] = {"parallel_setup_cost": "0",
                                            "parallel_tuple_cost": "0", "jit": "off"}
# at most this many workers (fewer where the server allows fewer): MySQL computes its side
# in one thread, so PostgreSQL's finishes first with one worker already (a million rows in
# 11,000 key ranges: 1.02 s with one worker, 1.06 s with two, 1.93 s with none; MySQL 1.44
# s), and more only take CPU from MySQL where both servers share a machine
TARGET_WORKERS = 1


def _pg_ref(schema: str | None, table: str) -> str:
    return f"{pg_ident(schema)}.{pg_ident(table)}" if schema else pg_ident(table)


def _check_target(conn: Connection, settings: Sequence[str] = ()) -> list[str]:
    """Refuse a server the digests cannot run on; return the current values of `settings`
    (one round trip)."""
    names = ["server_version_num", "server_encoding", "DateStyle", *settings]
    got = [str(v) for v in conn.exec_driver_sql(
        "SELECT " + ", ".join(f"current_setting({sql_constant(n)})" for n in names)).one()]
    if int(got[0]) < 140000:
        raise DigestUnsupported("PostgreSQL before 14 has no bit_xor")
    if got[1].upper() not in ("UTF8", "UTF-8"):
        raise DigestUnsupported(f"the target's server encoding is {got[1]}, not UTF8")
    if not got[2].upper().startswith("ISO"):  # dates and timestamps are rendered by ::text
        raise DigestUnsupported(f"the target session's DateStyle is {got[2]}, not ISO")
    return got[3:]


def _set_settings(conn: Connection, values: Mapping[str, str]) -> None:
    if values:
        conn.exec_driver_sql("SELECT " + ", ".join(
            f"set_config({sql_constant(k)}, {sql_constant(v)}, false)" for k, v in values.items()))


def target_digests(conn: Connection, plan: DigestPlan, schema: str | None,
                   table: str, *, whole: bool = False) -> dict[int, BucketDigest]:
    """Per bucket (rows, xor) of the target's authoritative rows, computed by PostgreSQL;
    `whole`: the table as one part (workers aggregate in parallel, no gathering of hashes).

    The query may run in parallel workers (`TARGET_PARALLEL_SETTINGS`, with the server's
    max_parallel_workers_per_gather): the session's settings are changed for this one query
    and put back (a failed query's transaction undoes them)."""
    wanted = {**TARGET_PARALLEL_SETTINGS, "max_parallel_workers_per_gather": ""}
    before = dict(zip(wanted, _check_target(conn, list(wanted)), strict=True))
    wanted["max_parallel_workers_per_gather"] = str(
        min(TARGET_WORKERS, int(before["max_parallel_workers_per_gather"])))
    ref = _pg_ref(schema, table)
    only = f"{pg_ident('_source')} = '{AUTHORITATIVE}'"
    if whole:
        sql = (f"SELECT {WHOLE}, count(*), bit_xor({plan.target_hash}) FROM {ref} "  # noqa: S608
               f"WHERE {only}")
    elif plan.bucket_from_hash:  # the hash once per row (OFFSET 0: the subquery is kept)
        sql = (f"SELECT {_bucket_of('d.h', plan.buckets, mysql=False)} AS b, count(*), "  # noqa: S608
               f"bit_xor(d.h) FROM (SELECT {plan.target_hash} AS h FROM {ref} WHERE {only} "
               "OFFSET 0) AS d GROUP BY 1")
    else:  # the workers compute bucket and hash; the planner, blind to how few buckets
        # there are, would otherwise sort every row to group them
        sql = (f"SELECT d.b, count(*), bit_xor(d.h) FROM (SELECT {plan.target_bucket} AS b, "  # noqa: S608
               f"{plan.target_hash} AS h FROM {ref} WHERE {only} OFFSET 0) AS d GROUP BY 1")
    changed = {k: v for k, v in wanted.items() if before[k] != v}
    _set_settings(conn, changed)
    try:
        rows = conn.exec_driver_sql(sql).all()
    except BaseException:
        with suppress(Exception):  # autocommit; in a failed transaction the rollback does it
            _set_settings(conn, {k: before[k] for k in changed})
        raise
    _set_settings(conn, {k: before[k] for k in changed})
    return _by_bucket(rows)


def sample_ranges(conn: Connection, plan: DigestPlan, schema: str | None, table: str, *,
                  parts: int, rows: int) -> KeyRanges | None:
    """Bounds for about `parts` key ranges of even size, from a sample of the target's
    authoritative keys (`SAMPLES_PER_PART` a part; PostgreSQL sorts them and keeps every
    so many), or None where the sample holds too few keys."""
    assert plan.range_key is not None
    if parts < 2:
        return None
    percent = min(100.0, 100.0 * SAMPLES_PER_PART * parts / max(rows, 1))
    key = plan.range_key.target.replace(ALIAS, "")
    sample = (f"TABLESAMPLE BERNOULLI ({percent:.6f})" if percent < 100 else "")
    got = [int(r[0]) for r in conn.exec_driver_sql(
        f"SELECT p FROM (SELECT p, row_number() OVER (ORDER BY p) AS n FROM "  # noqa: S608
        f"(SELECT {key} AS p FROM {_pg_ref(schema, table)} {sample} "
        f"WHERE {pg_ident('_source')} = '{AUTHORITATIVE}') AS s) AS x "
        f"WHERE mod(n, {SAMPLES_PER_PART}) = 0 ORDER BY p")]
    if len(got) < 2:
        return None
    distinct = sorted(set(got))
    if plan.range_key.charset is None:
        return KeyRanges(tuple(distinct))
    ranges = text_ranges(distinct)
    assert ranges.texts is not None
    return ranges.without({i for i, t in enumerate(ranges.texts)
                           if not plan.range_key.writable(t)})


def sample_row_hashes(conn: Connection, plan: DigestPlan, schema: str | None, table: str, *,
                      rows: int, wanted: int) -> list[tuple[Any, int]]:
    """(key, row hash) of about `wanted` of the target's authoritative rows, each taken at
    random (`TABLESAMPLE BERNOULLI`) -- a one-column key. Not whole pages (`SYSTEM`, which
    reads only those): the rows an update rewrote sit together at the heap's end, and the
    rows that change tonight are often last night's, so a page sample finds all or none.
    At most twice `wanted`: `rows` is the statistics' count, which may lag far behind."""
    _check_target(conn)
    percent = min(100.0, 100.0 * wanted / max(rows, 1))
    sql = (f"SELECT {pg_ident(plan.key[0])}, {plan.target_hash} FROM "  # noqa: S608
           f"{_pg_ref(schema, table)} TABLESAMPLE BERNOULLI ({percent:.6f}) "
           f"WHERE {pg_ident('_source')} = '{AUTHORITATIVE}' LIMIT {2 * int(wanted)}")
    return [(r[0], int(r[1]) & MASK64) for r in conn.exec_driver_sql(sql)]


def target_row_hashes(conn: Connection, plan: DigestPlan, schema: str | None, table: str,
                      buckets: Sequence[int] | None, *,
                      batch: int = 10_000) -> Iterator[tuple[bytes, tuple[Any, ...], int]]:
    """As `source_row_hashes`, for the target's authoritative rows."""
    where = f"{pg_ident('_source')} = '{AUTHORITATIVE}'"
    if buckets is not None:
        where += f" AND {target_bucket_predicate(plan, buckets)}"
    keys = ", ".join(pg_ident(k) for k in plan.key)
    sql = (f"SELECT convert_to({plan.target_key_text}, 'UTF8') AS kt, {keys}, "  # noqa: S608
           f"{plan.target_hash} FROM {_pg_ref(schema, table)} WHERE {where} ORDER BY kt")
    result = conn.execution_options(stream_results=True, yield_per=batch).exec_driver_sql(sql)
    try:
        for part in result.partitions(batch):
            for r in part:
                yield bytes(r[0]), tuple(r[1:-1]), int(r[-1]) & MASK64
    finally:
        result.close()


