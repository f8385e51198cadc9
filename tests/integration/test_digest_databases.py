"""In-database digests against the real MariaDB and PostgreSQL (refsync.digest).

One module-scoped pair of tables, 10,000 rows loaded the way the fast path loads them
(MariaDB formats COPY text, PostgreSQL parses it with TimeZone = Asia/Shanghai); each test
changes one thing, checks that exactly the affected key is reported, and undoes it. Every
comparison reads both tables whole, so the row count is what the module's time is: the
values are spread over the ranges 100,000 rows would cover (both signs, dates and times
across Shanghai's summer-time years, some in its gap and ambiguous hours)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from pg_databases import PgDatabases
from refsync.digest.plan import (
    DigestComparison,
    DigestPlan,
    build_digest_plan,
    compare,
    plan_digest,
    source_bucket_predicate,
    target_bucket_predicate,
)
from refsync.sources.mysql_digest import (
    ordered_ranges,
    read_source_columns,
    source_digests,
    source_row_hashes,
)
from refsync.targets.base import column_info
from refsync.targets.pg_digest import sample_ranges, target_digests
from refsync.threads import Session
from refsync.verify import VerifyResult, _verify_table


class _ConnRead:
    """The source side of a comparison on a plain MySQL connection (a sync's is its read)."""

    def __init__(self, conn: sa.Connection, table: str) -> None:
        self.conn, self.table = conn, table

    def digests(self, plan: DigestPlan, whole: bool):  # type: ignore[no-untyped-def]
        return source_digests(self.conn, plan, self.table, whole=whole)

    def row_hashes(self, plan: DigestPlan, buckets):  # type: ignore[no-untyped-def]
        return source_row_hashes(self.conn, plan, self.table, buckets)

    def ordered_ranges(self, plan: DigestPlan) -> DigestPlan | None:
        return ordered_ranges(self.conn, plan)


def verify_table(mc: sa.Connection, pc: sa.Connection, plan: DigestPlan, src: str,
                 schema: str, tgt: str) -> VerifyResult:
    """`refsync verify`'s comparison of one table, its source side on `mc`."""

    @contextmanager
    def opened() -> Iterator[_ConnRead]:
        yield _ConnRead(mc, src)

    with Session(opened, "test-verify") as session:
        return _verify_table(session, pc, plan, schema, tgt, 20)


def digests(mc: sa.Connection, pc: sa.Connection, plan: DigestPlan, src: str, schema: str,
            tgt: str, *, whole_first: bool = False) -> DigestComparison:
    """Both sides' digests compared, the whole tables first where `whole_first`."""
    timings: dict[str, float] = {}
    for whole in (True, False) if whole_first else (False,):
        side = "total" if whole else "digest"
        ours = source_digests(mc, plan, src, whole=whole)
        timings[f"source_{side}"] = 0.0
        theirs = target_digests(pc, plan, schema, tgt, whole=whole)
        timings[f"target_{side}"] = 0.0
        if whole and ours == theirs:
            break
    result = compare(plan, ours, theirs)
    result.timings = timings
    return result

ROWS = 10_000
SPREAD = 100_000 // ROWS  # the values' steps: each range as wide as 100,000 rows made it
MID, LAST = f"K{ROWS // 2:06d}", f"K{ROWS - 1:06d}"  # a key mid-table, one near its end
TZ = "Asia/Shanghai"
COLS = ["code", "name", "amount", "qty", "d", "dt", "flag"]

MY_DDL = """CREATE TABLE src (
  code VARCHAR(20) COLLATE utf8mb4_general_ci NOT NULL PRIMARY KEY,
  name VARCHAR(100) NULL, amount DECIMAL(18,4) NULL, qty INT NULL, d DATE NULL,
  dt DATETIME NULL, flag TINYINT(1) NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
PG_DDL = """CREATE TABLE public.tgt (
  code varchar(20) PRIMARY KEY, name varchar(100), amount numeric(18,4), qty integer,
  d date, dt timestamptz, flag boolean,
  _source varchar(20) NOT NULL DEFAULT 'authoritative', _needs_review boolean NOT NULL
  DEFAULT false, _derived_from_domain varchar(50), _derived_at timestamptz)"""


def _shifted_hours(forward: bool) -> list[str]:
    """Asia/Shanghai's summer-time hours 1986-1991: the spring-forward gaps (wall times that
    never were), or the fall-back hours (wall times that happened twice)."""
    tz, out = ZoneInfo(TZ), []
    at = datetime(1986, 1, 1, tzinfo=UTC)
    while at.year < 1992:
        nxt = at + timedelta(hours=1)
        a, b = at.astimezone(tz), nxt.astimezone(tz)
        if forward and b.utcoffset() > a.utcoffset():  # type: ignore[operator]
            out.append((a.replace(tzinfo=None) + timedelta(hours=1)).strftime("%Y-%m-%d %H"))
        if not forward and b.utcoffset() < a.utcoffset():  # type: ignore[operator]
            out.append(b.strftime("%Y-%m-%d %H"))
        at = nxt
    return out


# every 97th name NULL, 101st '', 103rd trailing blank, 107th emoji, 109th tab/backslash
NAME = ("CASE WHEN seq % 97 = 0 THEN NULL WHEN seq % 101 = 0 THEN '' "
        "WHEN seq % 103 = 0 THEN CONCAT('名称 ', seq, ' ') WHEN seq % 107 = 0 THEN "
        "CONCAT('emoji ', seq, ' \U0001F600') WHEN seq % 109 = 0 THEN CONCAT('a\\tb\\\\', seq) "
        "ELSE CONCAT('年金计划 ', seq) END")


@pytest.fixture(scope="module")
def dbs(mysql_db_url: str, pg_databases: PgDatabases) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    with pg_databases.database() as pg_url:
        yield from _filled(mysql_db_url, pg_url)


def _filled(mysql_db_url: str, pg_url: str) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    from refsync.sources.mysql import listen_mysql_session

    my = sa.create_engine(mysql_db_url + "?charset=utf8mb4")
    listen_mysql_session(my)
    pg = sa.create_engine(pg_url, connect_args={"options": "-c TimeZone=Asia/Shanghai"})
    gaps = ", ".join(f"'{g}'" for g in _shifted_hours(forward=True))
    twice = ", ".join(f"'{g}'" for g in _shifted_hours(forward=False))
    dt = f"TIMESTAMP'1985-06-01 00:00:00' + INTERVAL seq * {1777 * SPREAD} SECOND"
    try:
        with my.begin() as conn:
            conn.exec_driver_sql(MY_DDL)
            conn.exec_driver_sql(
                "INSERT INTO src SELECT CONCAT('K', LPAD(seq, 6, '0')), " + NAME.replace("%", "%%")
                + f", IF(seq %% 89 = 0, NULL, (CAST(seq AS SIGNED) * {SPREAD} - 50000) / 7.0), "
                f"IF(seq %% 83 = 0, NULL, CAST(seq AS SIGNED) * {37 * SPREAD} - 1000000), "
                f"DATE'1990-01-01' + INTERVAL seq * {SPREAD} DAY, "
                f"IF(DATE_FORMAT({dt}, '%%Y-%%m-%%d %%H') IN ({gaps}), NULL, {dt}), seq %% 2 "
                f"FROM seq_1_to_{ROWS}")
            shifted = conn.exec_driver_sql(  # the spread reaches both kinds of hour
                "SELECT SUM(dt IS NULL), SUM(DATE_FORMAT(dt, '%%Y-%%m-%%d %%H') IN "
                f"({twice})) FROM src").one()
            assert all(shifted), f"rows in gap and fall-back hours: {tuple(shifted)}"
            lines = conn.exec_driver_sql(
                "SELECT CONCAT_WS('\\t', code, IFNULL(REPLACE(REPLACE(name, '\\\\', '\\\\\\\\'),"
                " '\\t', '\\\\t'), '\\\\N'), IFNULL(amount, '\\\\N'), IFNULL(qty, '\\\\N'), "
                "IFNULL(d, '\\\\N'), IFNULL(dt, '\\\\N'), IFNULL(flag, '\\\\N')) FROM src"
            ).scalars().all()
        with pg.begin() as conn:
            conn.exec_driver_sql(PG_DDL)
            raw = conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(  # type: ignore[union-attr]
                    f"COPY tgt ({', '.join(COLS)}) FROM STDIN") as cp:
                cp.write("\n".join(lines) + "\n")
            conn.exec_driver_sql("ANALYZE tgt")
        yield my, pg
    finally:
        my.dispose()
        pg.dispose()


def _plan(my: sa.Engine, pg: sa.Engine, **kw: object) -> DigestPlan:
    with my.connect() as mc, pg.connect() as pc:
        src = read_source_columns(mc, "src")
        tinfo = {c["name"]: column_info(c["name"], c["type"], bool(c["nullable"]), pc.dialect)
                 for c in sa.inspect(pc).get_columns("tgt")}
    plan, why = build_digest_plan([src[c] for c in COLS], [tinfo[c] for c in COLS], ["code"], TZ,
                                  rows=ROWS, avg_row_bytes=80, **kw)  # type: ignore[arg-type]
    assert plan is not None, why
    return plan


@pytest.fixture(scope="module", params=["bytes", "row", "key", "ranges"])
def plan(dbs: tuple[sa.Engine, sa.Engine], request: pytest.FixtureRequest) -> DigestPlan:
    """Buckets from bytes of the key, the row hash and a hash of the key, and key ranges
    (what a large table with this key gets), sampled from the target as a sync samples them."""
    if request.param != "ranges":
        return _plan(*dbs, bucket_by=request.param)
    plan = _plan(*dbs)
    with dbs[0].connect() as mc, dbs[1].connect() as pc:
        ranges = sample_ranges(pc, plan, "public", "tgt", parts=ROWS // 90, rows=ROWS)
        assert ranges is not None
        ranged = ordered_ranges(mc, plan.with_ranges(ranges))
    assert ranged is not None and ranged.ranges is not None and ranged.buckets > 50, ranged
    return ranged


def _verify(dbs: tuple[sa.Engine, sa.Engine], plan: DigestPlan):  # type: ignore[no-untyped-def]
    my, pg = dbs
    with my.connect() as mc, pg.connect() as pc:
        return verify_table(mc, pc, plan, "src", "public", "tgt")


@contextmanager
def _change(engine: sa.Engine, do: str | list[str], undo: str | list[str]) -> Iterator[None]:
    with engine.begin() as conn:
        for sql in [do] if isinstance(do, str) else do:
            conn.exec_driver_sql(sql)
    try:
        yield
    finally:
        with engine.begin() as conn:
            for sql in [undo] if isinstance(undo, str) else undo:
                conn.exec_driver_sql(sql)


def test_equal_data_has_no_differing_bucket(dbs, plan) -> None:  # type: ignore[no-untyped-def]
    r = _verify(dbs, plan)
    assert (r.source_rows, r.target_rows) == (ROWS, ROWS)
    assert r.differing_buckets == 0 and r.in_step, r.as_json()
    assert ROWS // 100 <= plan.buckets <= ROWS // 16


@pytest.mark.parametrize(("side", "do", "undo", "kind", "key"), [
    ("my", f"UPDATE src SET name = 'changed' WHERE code = '{MID}'",
     f"UPDATE src SET name = '年金计划 {ROWS // 2}' WHERE code = '{MID}'", "differ", MID),
    ("my", "UPDATE src SET name = '' WHERE code = 'K000097'",
     "UPDATE src SET name = NULL WHERE code = 'K000097'", "differ", "K000097"),
    ("my", "UPDATE src SET name = NULL WHERE code = 'K000101'",
     "UPDATE src SET name = '' WHERE code = 'K000101'", "differ", "K000101"),
    ("my", "UPDATE src SET name = '名称 103' WHERE code = 'K000103'",
     "UPDATE src SET name = '名称 103 ' WHERE code = 'K000103'", "differ", "K000103"),
    ("pg", "UPDATE tgt SET name = '年金计划 5 ' WHERE code = 'K000005'",
     "UPDATE tgt SET name = '年金计划 5' WHERE code = 'K000005'", "differ", "K000005"),
    ("my", "UPDATE src SET name = 'emoji 107 \U0001F601' WHERE code = 'K000107'",
     "UPDATE src SET name = 'emoji 107 \U0001F600' WHERE code = 'K000107'", "differ", "K000107"),
    ("my", "UPDATE src SET amount = amount + 0.0001 WHERE code = 'K000007'",
     "UPDATE src SET amount = amount - 0.0001 WHERE code = 'K000007'", "differ", "K000007"),
    ("my", "UPDATE src SET flag = 1 - flag WHERE code = 'K000008'",
     "UPDATE src SET flag = 1 - flag WHERE code = 'K000008'", "differ", "K000008"),
    ("pg", "UPDATE tgt SET dt = dt + interval '1 microsecond' WHERE code = 'K000009'",
     "UPDATE tgt SET dt = dt - interval '1 microsecond' WHERE code = 'K000009'",
     "differ", "K000009"),
    ("pg", "UPDATE tgt SET _needs_review = true WHERE code = 'K000010'",
     "UPDATE tgt SET _needs_review = false WHERE code = 'K000010'", "differ", "K000010"),
    ("my", ["CREATE TABLE bak AS SELECT * FROM src WHERE code = 'K000011'",
            "DELETE FROM src WHERE code = 'K000011'"],
     ["INSERT INTO src SELECT * FROM bak", "DROP TABLE bak"], "extra", "K000011"),
    ("pg", "INSERT INTO tgt (code, name) VALUES ('X1', 'extra')",
     "DELETE FROM tgt WHERE code = 'X1'", "extra", "X1"),
    ("pg", "UPDATE tgt SET _source = 'auto_derived', _needs_review = true, "
     "_derived_from_domain = 'fact', _derived_at = now() WHERE code = 'K000012'",
     "UPDATE tgt SET _source = 'authoritative', _needs_review = false, "
     "_derived_from_domain = NULL, _derived_at = NULL WHERE code = 'K000012'",
     "missing", "K000012"),
])
def test_one_change_is_found_exactly(dbs, plan, side, do, undo, kind, key) -> None:  # type: ignore[no-untyped-def]
    engine = dbs[0] if side == "my" else dbs[1]
    with _change(engine, do, undo):
        r = _verify(dbs, plan)
        assert not r.in_step
        # a changed row's two versions: in two buckets when they come from the row hash
        assert r.differing_buckets == (2 if plan.bucket_from_hash and kind == "differ" else 1)
        got = {"differ": r.differ_keys, "missing": r.missing_keys, "extra": r.extra_keys}
        assert got[kind] == [{"code": key}], r.as_json()
        assert sum(len(v) for v in got.values()) == 1, r.as_json()
    assert _verify(dbs, plan).in_step


def test_case_only_key_change_under_ci_collation(dbs, plan) -> None:  # type: ignore[no-untyped-def]
    my, _ = dbs
    with my.connect() as conn:  # MySQL itself thinks they are the same key
        assert conn.exec_driver_sql("SELECT 'K000013' = 'k000013'").scalar() == 1
    with _change(my, "UPDATE src SET code = 'k000013' WHERE code = 'K000013'",
                 "UPDATE src SET code = 'K000013' WHERE code = 'k000013'"):
        r = _verify(dbs, plan)
        assert r.missing_keys == [{"code": "k000013"}] and r.extra_keys == [{"code": "K000013"}]
        assert r.differ == 0


def test_trailing_space_in_key(dbs, plan) -> None:  # type: ignore[no-untyped-def]
    with _change(dbs[0], "UPDATE src SET code = 'K000014 ' WHERE code = 'K000014'",
                 "UPDATE src SET code = 'K000014' WHERE code = 'K000014 '"):
        r = _verify(dbs, plan)
        assert r.missing_keys == [{"code": "K000014 "}] and r.extra_keys == [{"code": "K000014"}]


def test_one_change_reads_one_bucket(dbs, plan) -> None:  # type: ignore[no-untyped-def]
    my, _ = dbs
    with _change(my, f"UPDATE src SET qty = qty + 1 WHERE code = '{LAST}'",
                 f"UPDATE src SET qty = qty - 1 WHERE code = '{LAST}'"):
        r = _verify(dbs, plan)
        assert r.differ_keys == [{"code": LAST}]
        with my.connect() as conn:  # the engine's read of that one part: a few dozen rows
            one = source_digests(conn, plan, "src", where_sql=source_bucket_predicate(
                plan, [next(iter(_differing(dbs, plan)))]))
        assert len(one) == 1 and 1 <= next(iter(one.values())).rows <= 200


def _differing(dbs: tuple[sa.Engine, sa.Engine], plan: DigestPlan) -> list[int]:
    my, pg = dbs
    with my.connect() as mc, pg.connect() as pc:
        return digests(mc, pc, plan, "src", "public", "tgt").differing


def test_target_predicate_matches_source_buckets(dbs, plan) -> None:  # type: ignore[no-untyped-def]
    my, pg = dbs
    with my.connect() as mc, pg.connect() as pc:
        s = mc.exec_driver_sql("SELECT COUNT(*) FROM src WHERE "
                               + source_bucket_predicate(plan, [0, 1, 2])).scalar()
        t = pc.exec_driver_sql("SELECT count(*) FROM tgt x WHERE "
                               + target_bucket_predicate(plan, [0, 1, 2], alias="x")).scalar()
    assert s == t and s


def test_shanghai_summer_time_and_the_ambiguous_hour(dbs, plan) -> None:  # type: ignore[no-untyped-def]
    my, pg = dbs
    # 1986-09-14 01:30 happened twice in Shanghai (summer time ended at 02:00 -> 01:00)
    rows = {"S1": "1986-07-01 12:00:00", "S2": "1986-09-14 01:30:00", "S3": "1986-09-14 02:30:00",
            "S4": "1991-04-14 01:59:59", "S5": "1991-04-14 03:00:00", "S6": "1900-12-31 23:57:00"}
    values = ", ".join(f"('{k}', '{v}')" for k, v in rows.items())
    with _change(my, f"INSERT INTO src (code, dt) VALUES {values}",
                 "DELETE FROM src WHERE code LIKE 'S%%'"), \
            _change(pg, f"INSERT INTO tgt (code, dt) VALUES {values}",  # PostgreSQL's reading
                    "DELETE FROM tgt WHERE code LIKE 'S%%'"):
        r = _verify(dbs, plan)
        assert r.in_step, r.as_json()  # equal values agree, the ambiguous hour included
        # the other reading of the ambiguous 01:30 (summer time, +09, as Python's fold=0 has it)
        with _change(pg, "UPDATE tgt SET dt = dt - interval '1 hour' WHERE code = 'S2'",
                     "UPDATE tgt SET dt = dt + interval '1 hour' WHERE code = 'S2'"):
            with pg.connect() as conn:  # same wall-clock text, another instant
                assert conn.exec_driver_sql(
                    "SELECT to_char(dt AT TIME ZONE 'Asia/Shanghai', 'HH24:MI') FROM tgt "
                    "WHERE code = 'S2'").scalar() == "01:30"
            r = _verify(dbs, plan)
            assert r.differ_keys == [{"code": "S2"}], r.as_json()


def test_decimal_scale_change_is_unsupported(dbs) -> None:  # type: ignore[no-untyped-def]
    my, pg = dbs
    with _change(my, "CREATE TABLE src2 (code VARCHAR(20) PRIMARY KEY, amount DECIMAL(18,2))",
                 "DROP TABLE src2"):
        with my.connect() as mc, pg.connect() as pc:
            src = read_source_columns(mc, "src2")
            tinfo = {c["name"]: column_info(c["name"], c["type"], True, pc.dialect)
                     for c in sa.inspect(pc).get_columns("tgt")}
        plan, why = plan_digest([src["code"], src["amount"]], [tinfo["code"], tinfo["amount"]],
                                ["code"], TZ, rows=10)
        assert plan is None and why is not None and "scale" in why, why


def test_target_session_settings(dbs, plan) -> None:  # type: ignore[no-untyped-def]
    from refsync.digest import DigestUnsupported

    _, pg = dbs
    with pg.connect() as conn:
        conn.exec_driver_sql("SET parallel_setup_cost = 777")
        conn.exec_driver_sql("SET max_parallel_workers_per_gather = 1")  # the server's say
        assert len(target_digests(conn, plan, "public", "tgt")) > 1
        # the query's own settings are put back; the server's are left as they were
        assert conn.exec_driver_sql("SHOW parallel_setup_cost").scalar() == "777"
        assert conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar() == "1"
        conn.exec_driver_sql("SET DateStyle = 'German'")  # ::text would print 31.12.1999
        with pytest.raises(DigestUnsupported, match="DateStyle"):
            target_digests(conn, plan, "public", "tgt")
        conn.rollback()  # the SETs with it


def test_fractional_seconds_and_dates(dbs) -> None:  # type: ignore[no-untyped-def]
    """DATETIME(3) (six digits on both sides), DATETIME(0) with a target fraction, DATE."""
    my, pg = dbs
    rows = [("F1", "2020-01-01 00:00:00.100", "2020-01-01 00:00:00", "0999-12-31"),
            ("F2", "2020-01-01 00:00:00.000", "1986-07-01 12:00:00", "2020-02-29"),
            ("F3", None, None, None)]
    values = ", ".join("(" + ", ".join("NULL" if v is None else f"'{v}'" for v in r) + ")"
                       for r in rows)
    with _change(my, ["CREATE TABLE src3 (code VARCHAR(9) PRIMARY KEY, ms DATETIME(3), "
                      "s DATETIME, d DATE)", f"INSERT INTO src3 VALUES {values}"],
                 "DROP TABLE src3"), \
            _change(pg, ["CREATE TABLE tgt3 (code varchar(9) PRIMARY KEY, ms timestamptz, "
                         "s timestamptz, d date, _source varchar(20) NOT NULL DEFAULT "
                         "'authoritative', _needs_review boolean NOT NULL DEFAULT false, "
                         "_derived_from_domain varchar(50), _derived_at timestamptz)",
                         f"INSERT INTO tgt3 (code, ms, s, d) VALUES {values}"],
                    "DROP TABLE tgt3"):
        cols = ["code", "ms", "s", "d"]
        with my.connect() as mc, pg.connect() as pc:
            src = read_source_columns(mc, "src3")
            tinfo = {c["name"]: column_info(c["name"], c["type"], True, pc.dialect)
                     for c in sa.inspect(pc).get_columns("tgt3")}
        plan3, why = build_digest_plan([src[c] for c in cols], [tinfo[c] for c in cols], ["code"],
                                 TZ, rows=3, buckets=1)
        assert plan3 is not None, why

        def check() -> object:
            with my.connect() as mc, pg.connect() as pc:
                return verify_table(mc, pc, plan3, "src3", "public", "tgt3")

        assert check().in_step  # type: ignore[attr-defined]
        for sql, undo in [
                ("UPDATE tgt3 SET ms = ms + interval '1 millisecond' WHERE code = 'F1'",
                 "UPDATE tgt3 SET ms = ms - interval '1 millisecond' WHERE code = 'F1'"),
                ("UPDATE tgt3 SET s = s + interval '1 microsecond' WHERE code = 'F2'",
                 "UPDATE tgt3 SET s = s - interval '1 microsecond' WHERE code = 'F2'"),
                ("UPDATE tgt3 SET d = d + 1 WHERE code = 'F1'",
                 "UPDATE tgt3 SET d = d - 1 WHERE code = 'F1'")]:
            with _change(pg, sql, undo):
                r = check()
                assert r.differ == 1, r.as_json()  # type: ignore[attr-defined]
        assert check().in_step  # type: ignore[attr-defined]


def test_whole_table_first_agrees_on_a_table_in_step_and_finds_the_same_parts_when_not(
        dbs, plan) -> None:  # type: ignore[no-untyped-def]
    """`whole_first` (what `verify` and a re-sync after an unchanged run do): one (rows, xor)
    per side without grouping; the parts only where the wholes differ, and then exactly
    the parts the grouped comparison finds."""
    from refsync.digest import WHOLE

    my, pg = dbs
    with my.connect() as mc, pg.connect() as pc:
        whole = source_digests(mc, plan, "src", whole=True)
        assert whole == target_digests(pc, plan, "public", "tgt", whole=True)
        parts = source_digests(mc, plan, "src")
        assert list(whole) == [WHOLE]
        assert whole[WHOLE].rows == sum(d.rows for d in parts.values())
        xor = 0
        for d in parts.values():
            xor ^= d.xor
        assert whole[WHOLE].xor == xor  # the parts fold into the whole
        in_step = digests(mc, pc, plan, "src", "public", "tgt", whole_first=True)
        assert in_step.differing == [] and set(in_step.timings) == {"source_total",
                                                                      "target_total"}
        assert in_step.equal_rows == in_step.source_rows == whole[WHOLE].rows
    with _change(my, "UPDATE src SET qty = qty + 1 WHERE code = 'K000042'",
                 "UPDATE src SET qty = qty - 1 WHERE code = 'K000042'"), \
            my.connect() as mc, pg.connect() as pc:
        first = digests(mc, pc, plan, "src", "public", "tgt", whole_first=True)
        grouped = digests(mc, pc, plan, "src", "public", "tgt")
        assert first.differing == grouped.differing and first.differing
        assert {"source_total", "target_total", "source_digest", "target_digest"} == set(
            first.timings)


def test_an_empty_table_is_whole_on_both_sides(dbs, plan) -> None:  # type: ignore[no-untyped-def]
    from refsync.digest import WHOLE, BucketDigest

    my, pg = dbs
    with my.connect() as mc, pg.connect() as pc:
        empty_source = source_digests(mc, plan, "src", where_sql="1 = 0", whole=True)
        pc.exec_driver_sql("CREATE TEMP TABLE tgt_empty (LIKE tgt)")
        empty_target = target_digests(pc, plan, None, "tgt_empty", whole=True)
    assert empty_source == empty_target == {WHOLE: BucketDigest(0, 0)}
