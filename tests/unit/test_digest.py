"""refsync.digest: the pure parts (plan, bucket sizing, zone windows, comparison)."""

from __future__ import annotations

from datetime import datetime

import pytest

from refsync.digest.canonical import blank_padded, fold_windows
from refsync.digest.plan import (
    BucketDigest,
    SourceColumn,
    build_digest_plan,
    choose_buckets,
    compare,
    differing,
    plan_digest,
    read_share,
    sized_for_change,
    source_bucket_predicate,
    target_bucket_predicate,
)
from refsync.model import ColumnInfo

VARCHAR = SourceColumn("code", "varchar", "varchar(20)", "utf8mb4")


def _plan(src: SourceColumn, tgt: ColumnInfo):  # type: ignore[no-untyped-def]
    return plan_digest([VARCHAR, src], [ColumnInfo("code", "text", type_sql="VARCHAR(20)"), tgt],
                       ["code"], "Asia/Shanghai", rows=1000)


def test_supported_columns() -> None:
    cases = [
        (SourceColumn("a", "varchar", "varchar(9)", "latin1"), ColumnInfo("a", "text")),
        (SourceColumn("a", "enum", "enum('x')", "utf8mb4"), ColumnInfo("a", "text")),
        (SourceColumn("a", "int", "int(10) unsigned"), ColumnInfo("a", "integer", int_bits=64)),
        (SourceColumn("a", "decimal", "decimal(18,4)", precision=18, scale=4),
         ColumnInfo("a", "numeric", precision=20, scale=4)),
        (SourceColumn("a", "tinyint", "tinyint(1)"), ColumnInfo("a", "boolean")),
        (SourceColumn("a", "bit", "bit(1)"), ColumnInfo("a", "boolean")),
        (SourceColumn("a", "date", "date"), ColumnInfo("a", "date")),
        (SourceColumn("a", "datetime", "datetime(3)", fsp=3), ColumnInfo("a", "timestamp")),
        (SourceColumn("a", "datetime", "datetime", fsp=0), ColumnInfo("a", "timestamptz")),
        (SourceColumn("a", "timestamp", "timestamp", fsp=0), ColumnInfo("a", "timestamptz")),
    ]
    for src, tgt in cases:
        plan, why = _plan(src, tgt)
        assert plan is not None, (src, why)
    plan, _ = _plan(*cases[0])
    assert plan is not None and "CONVERT(`a` USING utf8mb4)" in plan.source_row_text


def test_unsupported_columns_say_why() -> None:
    cases = [
        (SourceColumn("a", "decimal", "decimal(18,4)", precision=18, scale=4),
         ColumnInfo("a", "numeric", precision=18, scale=2), "scale"),
        (SourceColumn("a", "varchar", "varchar(9)", "utf8mb4"),
         ColumnInfo("a", "text", type_sql="CHAR(9)"), "char(n)"),
        (SourceColumn("a", "datetime", "datetime"), ColumnInfo("a", "text"), "text"),
        (SourceColumn("a", "timestamp", "timestamp"), ColumnInfo("a", "timestamp"), "zone"),
        (SourceColumn("a", "double", "double"), ColumnInfo("a", "float"), "float"),
        (SourceColumn("a", "varchar", "varchar(9)"), ColumnInfo("a", "json"), "json"),
    ]
    for src, tgt, word in cases:
        plan, why = _plan(src, tgt)
        assert plan is None and why is not None and word in why, (src, why)
    assert plan_digest([VARCHAR], [ColumnInfo("code", "text")], ["x"], "UTC", rows=1)[0] is None


@pytest.mark.parametrize(("type_sql", "padded"), [
    ("CHAR(9)", True), ("character(9)", True), ("bpchar", True), ("CHARACTER", True),
    ("NCHAR(3)", True), ("character varying(9)", False), ("VARCHAR(9)", False),
    ("text", False), ("business.charge_kind", False), ("character varying", False),
])
def test_blank_padded_reads_both_spellings(type_sql: str, padded: bool) -> None:
    """The target's type comes from the catalogue (`format_type`) or from SQLAlchemy: a
    varchar is never taken for a char(n), which would turn the digests off."""
    assert blank_padded(type_sql) is padded
    src = SourceColumn("a", "varchar", "varchar(9)", "utf8mb4")
    plan, why = _plan(src, ColumnInfo("a", "text", type_sql=type_sql))
    assert (plan is None) is padded, why


def test_integer_key_buckets_by_modulo() -> None:
    plan, _ = plan_digest([SourceColumn("id", "bigint", "bigint(20)")],
                          [ColumnInfo("id", "integer", int_bits=64)], ["id"], "UTC", rows=6400)
    assert plan is not None and plan.buckets == 200
    assert plan.source_bucket == "MOD(`id`, 200)" and plan.target_bucket == 'mod("id", 200)'
    assert source_bucket_predicate(plan, [3, 1]) == "MOD(`id`, 200) IN (1, 3)"
    assert target_bucket_predicate(plan, [1], alias="t") == 'mod(t."id", 200) IN (1)'
    assert source_bucket_predicate(plan, []) == "FALSE"


def test_choose_buckets() -> None:
    assert choose_buckets(0) == 1
    assert choose_buckets(1_000_000) == 31_250
    assert choose_buckets(1_000_000, rows_per_bucket=16) == 62_500
    # narrow rows: the digests may not exceed 1.5 % of the table's bytes
    assert choose_buckets(1_000_000, 20) * 36 <= 1_000_000 * 20 * 0.015


def test_fold_windows() -> None:
    sh = fold_windows("Asia/Shanghai")
    assert sh is not None
    assert (datetime(1986, 9, 13, 16), datetime(1986, 9, 13, 18)) in sh  # 01:00-02:00 twice
    assert len([w for w in sh if 1986 <= w[0].year <= 1991]) == 6
    assert fold_windows("UTC") == ()
    assert fold_windows("Europe/Berlin") is None  # DST in force: every value is checked


def test_compare() -> None:
    a = {0: BucketDigest(2, 5), 1: BucketDigest(3, 7), 2: BucketDigest(1, 1)}
    b = {0: BucketDigest(2, 5), 1: BucketDigest(3, 8), 3: BucketDigest(1, 9)}
    assert differing(a, b) == [1, 2, 3]
    plan, _ = plan_digest([VARCHAR], [ColumnInfo("code", "text")], ["code"], "UTC", rows=10)
    assert plan is not None
    c = compare(plan, a, b)
    assert (c.source_rows, c.target_rows, c.equal_rows, c.source_rows_differing) == (6, 6, 2, 4)


def test_row_hash_buckets() -> None:
    name = (SourceColumn("name", "varchar", "varchar(9)", "utf8mb4"), ColumnInfo("name", "text"))
    small, _ = _plan(*name)
    assert small is not None and not small.bucket_from_hash  # "auto": few rows, key buckets
    plan, _ = build_digest_plan([VARCHAR, name[0]], [ColumnInfo("code", "text"), name[1]], ["code"],
                          "UTC", rows=1000, bucket_by="row")
    big, _ = build_digest_plan([VARCHAR, name[0]], [ColumnInfo("code", "text"), name[1]], ["code"],
                         "UTC", rows=1_600_000, bucket_by="row")
    assert big is not None and big.bucket_from_hash and big.buckets == 100_000
    assert plan is not None and plan.bucket_from_hash
    assert plan.buckets == 1000 // 16  # a changed row makes two buckets differ: twice as many
    assert "SHA2(CONCAT_WS(''" in plan.source_bucket and "`name`" in plan.source_bucket
    pred = target_bucket_predicate(plan, [4, 2], alias="t")
    assert pred.endswith(" IN (2, 4)") and "\x1d" not in pred
    # every column the row hash reads is qualified, the tracking ones included
    assert pred.count('"') == 2 * pred.count('t."')
    assert 't."name"' in pred and 't."_derived_at"' in pred
    assert target_bucket_predicate(plan, [1]) == f"{plan.target_bucket} IN (1)"
    assert "\x1d" not in plan.target_row_text + plan.target_hash + plan.target_key_text


def test_key_hash_buckets_on_request() -> None:
    plan, _ = build_digest_plan([VARCHAR], [ColumnInfo("code", "text")], ["code"], "UTC",
                          rows=3200, bucket_by="key")
    assert plan is not None and not plan.bucket_from_hash and plan.buckets == 100
    assert plan.source_bucket.startswith("MOD(CAST(CONV(LEFT(SHA2(CAST(CONCAT_WS(''")
    assert target_bucket_predicate(plan, [0], alias="t").count('t."code"') == 2
    try:
        build_digest_plan([VARCHAR], [ColumnInfo("code", "text")], ["code"], "UTC", rows=1,
                    bucket_by="bogus")
    except ValueError:
        pass
    else:
        raise AssertionError("bucket_by is checked")


def test_datetime_renderings() -> None:
    whole, _ = _plan(SourceColumn("a", "datetime", "datetime", fsp=0),
                     ColumnInfo("a", "timestamptz"))
    assert whole is not None
    assert "AT TIME ZONE 'Asia/Shanghai')::text" in whole.target_row_text
    assert "to_char" not in whole.target_row_text
    milli, _ = _plan(SourceColumn("a", "datetime", "datetime(3)", fsp=3),
                     ColumnInfo("a", "timestamp"))
    assert milli is not None
    assert "CONCAT(`a`, '000'), ';'" in milli.source_row_text
    assert "to_char(\"a\", 'YYYY-MM-DD HH24:MI:SS.US')" in milli.target_row_text


def test_key_bytes_buckets_are_the_default_and_hash_nothing() -> None:
    name = (SourceColumn("name", "varchar", "varchar(9)", "utf8mb4"), ColumnInfo("name", "text"))
    plan, _ = plan_digest([VARCHAR, name[0]], [ColumnInfo("code", "text"), name[1]], ["code"],
                          "UTC", rows=1_600_000)
    assert plan is not None and not plan.bucket_from_hash
    # one bucket differs per changed row (32 rows a bucket)
    assert "SHA2" not in plan.source_bucket and "sha256" not in plan.target_bucket
    assert plan.source_bucket.count("CONV(LPAD(HEX(RIGHT(") == 1
    assert "`name`" not in plan.source_bucket
    # the key's own bytes, not its canonical text (which frames it with its length)
    assert "CAST(`code` AS BINARY)" in plan.source_bucket and "LENGTH" not in plan.source_bucket
    assert "octet_length(\"code\")::text" not in plan.target_bucket
    assert plan.buckets == 50_003  # prime to 2, 3, 5 and 7: decimal codes spread evenly
    pred = target_bucket_predicate(plan, [3], alias="t")
    assert pred.endswith(" IN (3)") and 't."code"' in pred and 't."name"' not in pred
    assert "\x1d" not in pred + plan.target_bucket


def test_buckets_sized_for_the_change_expected() -> None:
    plan, _ = plan_digest([VARCHAR], [ColumnInfo("code", "text")], ["code"], "UTC",
                          rows=1_000_000)
    assert plan is not None and plan.buckets == 31_253
    assert sized_for_change(plan, 1_000_000, None) is plan  # no evidence: as planned
    assert sized_for_change(plan, 1_000_000, 0.0001) is plan  # a quiet night: as planned
    busier = sized_for_change(plan, 1_000_000, 0.002)
    assert busier is not None and busier.buckets == 62_507  # growth is capped at twice
    assert busier.source_bucket.endswith(", 62507)") and busier.key == plan.key
    assert read_share(0.002, 1_000_000 / busier.buckets) < 0.05
    # a night like the last one would leave too much to read: read everything instead
    assert sized_for_change(plan, 1_000_000, 0.004) is None
    assert sized_for_change(plan, 1_000_000, 0.01) is None
    assert sized_for_change(plan, 1_000_000, 0.5) is None
    assert sized_for_change(plan, 50_000, 0.5) is plan  # a small table: either way is quick


# ---------------------------------------------------------------- key ranges


def test_key_ranges_are_sized_for_the_change_expected() -> None:
    from refsync.digest.ranges import MAX_RANGE_PARTS, part_rows, range_parts

    sizes = [part_rows(c) for c in (None, 0.0, 1e-4, 1e-3, 2e-3)]
    assert sizes[0] == sizes[1] == sizes[2] >= sizes[3] >= sizes[4] > 0
    assert range_parts(1_000_000, 1e-3) == 1_000_000 // part_rows(1e-3)
    assert range_parts(1_000_000, 0.01) is None  # 1 % changed: read everything
    assert range_parts(10**9, None) == MAX_RANGE_PARTS
    assert range_parts(10, None) == 1


def test_bounds_sampled_for_last_nights_change_serve_a_night_alike() -> None:
    """Bounds sampled for the last night's change (while the source looks tonight's sample
    up) are kept where tonight wants ranges within a factor of two of theirs."""
    from refsync.digest.ranges import near_parts, range_parts

    quiet = range_parts(1_000_000, None)
    assert quiet is not None
    assert near_parts(quiet, quiet)
    assert near_parts(range_parts(1_000_000, 1e-3) or 0, quiet)  # 0.1 %: kept
    assert not near_parts(range_parts(1_000_000, 2.5e-3) or 0, quiet)  # 0.25 %: sampled again
    assert not near_parts(quiet, 4 * quiet) and not near_parts(4 * quiet, quiet)


def test_ranges_are_read_a_few_a_statement_and_bucketed_by_width_bucket() -> None:
    from refsync.digest.plan import source_bucket_predicates
    from refsync.digest.ranges import SPANS_A_STATEMENT, KeyRanges, key_prefix

    int_key = SourceColumn("id", "bigint", "bigint(20)")
    plan, _ = plan_digest([int_key, VARCHAR], [ColumnInfo("id", "integer", int_bits=64),
                                               ColumnInfo("code", "text")], ["id"], "UTC",
                          rows=100)
    assert plan is not None and plan.range_key is not None
    ranged = plan.with_ranges(KeyRanges(tuple(range(10, 10 * (3 * SPANS_A_STATEMENT) + 1, 10))))
    assert ranged.buckets == 3 * SPANS_A_STATEMENT + 1 and ranged.bucket_by == "range"
    every_other = list(range(0, ranged.buckets, 2))  # no two adjacent: one span each
    statements = source_bucket_predicates(ranged, every_other)
    assert len(statements) == -(-len(every_other) // SPANS_A_STATEMENT)
    assert statements[0].startswith("((`id` < 10) OR (`id` >= 20 AND `id` < 30)")
    assert "`id` >= 960" in statements[-1] and statements[-1].endswith("(`id` >= 960))")
    # adjacent ranges read as one
    assert source_bucket_predicate(ranged, [1, 2, 3]) == "((`id` >= 10 AND `id` < 40))"
    assert target_bucket_predicate(ranged, [1, 2], alias="t").startswith(
        'width_bucket(t."id"::int8, \'{10,20,')
    # a text key's bounds are hex in its character set, its collation decides on MySQL
    text_key = SourceColumn("code", "varchar", "varchar(20)", "utf8mb4",
                            collation="utf8mb4_general_ci")
    plan, _ = plan_digest([text_key], [ColumnInfo("code", "text")], ["code"], "UTC", rows=1)
    assert plan is not None and plan.range_key is not None
    ranged = plan.with_ranges(KeyRanges((key_prefix("P1"),), ("P1",)))
    assert source_bucket_predicate(ranged, [1]) == "((`code` >= _utf8mb4 X'5031'))"
    # keys that do not order alike on both sides take no ranges
    for src, tgt in ((SourceColumn("c", "enum", "enum('a')", "utf8mb4", collation="x_ci"),
                      ColumnInfo("c", "text")),
                     (SourceColumn("c", "varchar", "varchar(9)", "latin1",
                                   collation="latin1_swedish_ci"), ColumnInfo("c", "text")),
                     (text_key, ColumnInfo("code", "text", type_sql="char(9)"))):
        plan, _ = plan_digest([src], [tgt], [tgt.name], "UTC", rows=1)
        assert plan is None or plan.range_key is None, src  # (char(n): no digests at all)


def test_a_bound_is_written_only_where_its_character_set_holds_it() -> None:
    from refsync.digest.ranges import RangeKey

    def key(cs: str) -> RangeKey:
        return RangeKey("`k`", "k", "VARCHAR(8)", cs)

    assert key("utf8mb4").writable("年金😀") and key("utf8mb3").writable("年金")
    assert not key("utf8mb3").writable("😀") and not key("ascii").writable("é")
    assert key("ascii").literal("P1") == "_ascii X'5031'"


def test_a_sample_tells_the_share_of_changed_rows_once_it_is_large_enough() -> None:
    from refsync.digest.ranges import MIN_SAMPLED, sampled_share

    sample = [(k, k * 7) for k in range(MIN_SAMPLED * 2)]
    source = dict(sample)
    assert sampled_share(sample, source) == 0.0
    for k in range(0, 20, 2):
        source[k] += 1  # changed
    del source[1], source[3]  # gone from the source
    source[-1] = 0  # new in the source: a target sample cannot see it
    assert sampled_share(sample, source) == 12 / len(sample)
    assert sampled_share(sample[:MIN_SAMPLED - 1], source) is None  # too few to tell
