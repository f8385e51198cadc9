"""In-database digests, the pure part (no I/O): how a MySQL source table and its PostgreSQL
target are compared without moving rows (DESIGN 4.6 and `refsync verify`).

Both databases render every row as the same *canonical text*, hash it with SHA-256 and keep
the first 64 bits as an unsigned integer; rows are grouped into buckets (by the row hash
itself, see "Buckets"), and each side returns per bucket ``(row count, BIT_XOR of the row
hashes)``. Buckets whose pair agrees are equal (counted `unchanged` without transfer); only
the others need reading.

Canonical text (identical bytes on both sides for equal values)
    A row is its key fields, then its other fields, concatenated with no separator. A text
    field is ``<UTF-8 byte length>:<value>``, and ``:`` for NULL (so NULL, ``''``, trailing
    spaces, tabs and any other byte are all distinct, and no escaping is needed); every
    other field is ``<value>;``, and ``;`` for NULL, in a fixed rendering: integers and
    DECIMALs in plain decimal (the DECIMAL's own scale, which the target must share), dates
    ``YYYY-MM-DD``, date-times ``YYYY-MM-DD HH:MM:SS`` for a DATETIME(0) source (a target
    value with a fraction prints it, so it never looks like a whole second) and
    ``YYYY-MM-DD HH:MM:SS.ffffff`` (six digits) for DATETIME(1-6), booleans ``1``/``0``.
    MySQL builds it with one ``CONCAT_WS('', ...)`` (which skips NULL arguments: that is
    the NULL rendering, at no cost); PostgreSQL prints dates and whole-second times with
    ``::text``, which needs ``DateStyle`` ISO (PostgreSQL's default; `target_digests`
    refuses another). Text is hashed as UTF-8 bytes (a non-UTF-8 MySQL column is converted
    first), so a ``_ci`` collation or a PAD SPACE comparison can never make the sides agree
    on what differs: ``'abc'`` and ``'ABC'`` or ``'a'`` and ``'a '`` are different keys and
    different rows.

Time zones
    DATETIME into ``timestamptz``: the target renders its instant as a wall-clock time in
    the table's ``source_timezone`` (``(col AT TIME ZONE tz)::text``), which equals the
    source text for every wall time that exists once. A wall time in an ambiguous hour (a
    fall-back, e.g. Asia/Shanghai 1986-09-14 01:00-02:00) names two instants: PostgreSQL
    reads it as the later one (standard time) -- that is what COPY with ``TimeZone =
    source_timezone`` stores -- so a target instant counts as equal only when it is that
    reading (``(col AT TIME ZONE tz) AT TIME ZONE tz = col``); the earlier instant renders as
    ``?`` and its bucket is read (the row path decides). Only instants within a fall-back
    window pay for that check: for zones without transitions after 2037 (Asia/Shanghai) the
    windows are listed from ``zoneinfo``; for zones with current DST every value is checked.
    A wall time that does not exist (spring-forward gap, 1986-05-04 02:30 in Shanghai) is
    stored as another wall time (03:30), so its bucket always differs and is always read:
    correct, slightly slower. MySQL TIMESTAMP into ``timestamptz`` is compared in UTC (the
    session's ``time_zone`` must be ``+00:00``, which refsync sets).

Key ranges (`KeyRanges`, `digest/ranges.py`)
    A table of `RANGES_FROM_ROWS` rows or more whose one-column key is an integer or a
    CHAR/VARCHAR in a UTF-8 character set is compared in ranges of its key's order: bounds
    sampled from the target's keys, kept where MySQL orders them as PostgreSQL does, so many
    that a range holds about sqrt(4 / expected change) rows. MySQL digests each range by an
    index range scan (a JSON_TABLE of the bounds joined to the table: its grouping is cheap,
    the rows come range after range) and reads a differing range's rows by its bounds, never
    scanning the table; PostgreSQL buckets a row with `width_bucket` over an integer of its
    key (the integer itself, or a text's first 8 UTF-8 bytes). Each side's ranges cover every
    key once; where the two orders differ between two bounds (mixed case under a `_ci`
    collation) a row falls in different ranges on the two sides, both differ and both are
    read: more reading, never a missed difference. Other keys, and smaller tables, take the
    buckets below.

Buckets
    A single integer key: its value modulo the bucket count. Any other one-column key
    (``bucket_by="auto"``, what ``plan_digest`` uses): the last 7 bytes of the key's
    own UTF-8 text (a text key; any other its canonical text) read as an integer, modulo a
    bucket count prime to 2, 3, 5 and 7 (so decimal codes spread evenly) -- no hash, so
    each side hashes each row once for its digests,
    selecting the rows of the buckets that differ costs a few byte operations per row (not
    a row hash), and a changed row stays in its bucket (one bucket differs per changed
    row). Keys that end in the same 7 bytes share a bucket: skewed buckets cost reading more
    rows, never correctness (a comparison that would read most rows reads them all). A
    composite key (whose last bytes are its last column's), or ``bucket_by="row"``: the
    row hash (a changed row then makes two buckets differ, and selecting a bucket's rows
    hashes every row scanned); ``bucket_by="key"``: 32 bits of SHA-256 of the key's text.
    `DigestPlan.with_buckets` sizes the same comparison for the change a run expects
    (`sized_for_change`): more, smaller buckets where much changed the last time.

False matches
    Row hashes are 64 bits of SHA-256, modelled as independent uniform values. The digests
    of the two sides agree although their rows differ only if some differing row's hash h
    equals the XOR of the other rows of its bucket (on both sides), which does not depend
    on h: at most 2**-64 per bucket that could balance, whether the bucket comes from the
    key or from h itself. With D differing buckets a run misses a difference with
    probability at most D * 2**-64 (about 5e-15 for 100,000; never more than
    ``buckets * 2**-64`` in all). Counts catch duplicated rows (which XOR would cancel).
    SHA-256 is only the hash both databases have that is cheap enough here; no adversary
    is assumed who writes rows to collide.

Whole table first
    ``whole=True`` digests the table as one part, ``{WHOLE: (rows, xor)}``, with no grouping:
    about a third less server time on each side (MySQL skips its temporary table,
    PostgreSQL's workers aggregate in parallel). `verify`, and a re-sync of a table whose
    last run likely left it in step (`state.LastRun.left_in_step`, see `table_sync.compare`),
    compare the wholes first and the buckets only where the wholes differ; the parts fold
    into the whole (XOR, sum), so the whole misses a difference with probability 2**-64,
    like one bucket.

The target side digests authoritative rows only (``_source = 'authoritative'``); a row whose
other tracking values are not layer 1's renders with a ``!`` so it never matches, and an
auto-derived row is not there at all, so a source row with its key makes its bucket differ
and is read and promoted by the row path.

Use (see `DigestPlan`): `sources.mysql_digest.read_source_columns` + `plan_digest` (pure),
then each side's digests (`sources.mysql_digest.source_digests`,
`targets.pg_digest.target_digests`, computed at once by `table_sync.compare`), `compare`, and
for the rows of the differing buckets `source_bucket_predicate` /
`target_bucket_predicate`; `verify` merges the row hashes of both sides. PostgreSQL >= 14
(``bit_xor``), UTF8 server encoding, DateStyle ISO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from refsync.digest import ranges
from refsync.digest.canonical import (
    ALIAS,
    INT_TYPES,
    field_text,
    key_value_bytes,
    mysql_name,
    pg_column,
)
from refsync.digest.ranges import (
    KeyRanges,
    RangeKey,
    range_key_of,
    read_share,
    spans_sql,
)
from refsync.model import ColumnInfo

AUTHORITATIVE = "authoritative"
MASK64 = (1 << 64) - 1

# bucket sizing: rows per bucket wanted (a 1 % random change then touches ~1-e^-0.32 = 27 %
# of the buckets), and the share of the table's bytes the digests may take on the wire
ROWS_PER_BUCKET = 32
# buckets from the row hash: a changed row makes two buckets differ, so twice as many
ROWS_PER_HASH_BUCKET = 16
MAX_DIGEST_SHARE = 0.015
# the part number of a whole-table digest (`whole=True`): one part, no grouping
WHOLE = 0
DIGEST_ROW_BYTES = 36  # one (bucket, count, xor) row in MySQL's text protocol, measured
MAX_BUCKETS = 1 << 22
# sizing for the change a run expects (`sized_for_change`), measured at a million rows
# (issue 20): computing both sides' digests costs about what reading, staging and diffing
# every row does, so comparing first pays only while it leaves little to read. Above
# `COMPARE_FIRST_SHARE` of the rows expected in differing buckets (with the buckets grown
# at most `MAX_BUCKET_GROWTH` times; more buckets cost MySQL's grouping more) the table is
# read whole without digests; below, buckets are sized to leave about `READ_SHARE_WANTED`.
# Tables under `EVIDENCE_FROM_ROWS` rows always compare first: either way takes well under
# a second, and comparing moves fewer bytes. `READ_ALL_SHARE`: after a comparison, the
# share of the rows in differing buckets above which reading everything is cheaper.
COMPARE_FIRST_SHARE = 0.05
READ_SHARE_WANTED = 0.03
MAX_BUCKET_GROWTH = 2
EVIDENCE_FROM_ROWS = 100_000
READ_ALL_SHARE = 0.5
KEY_SLICE = 7  # bytes of a key's text read as one integer (`bucket_by="bytes"`)

_LOW63 = (1 << 63) - 1
_NO_MERGE = 18446744073709551615  # a derived table with a LIMIT is materialized, not merged


class DigestUnsupported(Exception):
    """The digests cannot be computed here (server version or encoding); read in full."""


# ---------------------------------------------------------------- plan (pure)


@dataclass(frozen=True)
class SourceColumn:
    """A MySQL column as information_schema.COLUMNS describes it."""

    name: str
    data_type: str  # DATA_TYPE, lower case: varchar, int, decimal, datetime, ...
    column_type: str = ""  # COLUMN_TYPE: 'int(10) unsigned', 'tinyint(1)', 'bit(1)', ...
    charset: str | None = None  # CHARACTER_SET_NAME
    precision: int | None = None  # NUMERIC_PRECISION
    scale: int | None = None  # NUMERIC_SCALE
    fsp: int | None = None  # DATETIME_PRECISION
    collation: str | None = None  # COLLATION_NAME


@dataclass(frozen=True)
class DigestPlan:
    """How both databases render, hash and bucket one table's rows. Built by `plan_digest`;
    the SQL pieces are expressions over the table's own (quoted) column names."""

    columns: tuple[str, ...]  # target column names, key first
    source_columns: tuple[str, ...]  # the matching source column names
    key: tuple[str, ...]
    buckets: int
    source_timezone: str
    source_key_text: str  # MySQL: the key's canonical text (binary string)
    source_row_text: str  # MySQL: the row's canonical text (binary string)
    source_bucket_of: str  # MySQL: the integer the bucket is taken modulo `buckets` of
    source_hash: str  # MySQL: the row hash, BIGINT UNSIGNED
    target_key_text: str
    target_row_text: str
    target_bucket_of: str  # PostgreSQL: the same integer, every column reference marked
    target_hash: str
    notes: tuple[str, ...] = ()  # what the plan decided that a -v log may show
    # the bucket is taken from the row hash (not the key): a changed row's old version is
    # in one bucket on the target, its new version in another on the source; both differ
    bucket_from_hash: bool = False
    bucket_by: str = "row"  # "value" (one integer key), "bytes", "row", "key" or "range"
    # where the key can be ordered alike on both sides: how (`with_ranges`)
    range_key: RangeKey | None = None
    ranges: KeyRanges | None = None

    @property
    def source_bucket(self) -> str:
        """MySQL: the bucket, 0 <= b < buckets (or > -buckets, integer keys)."""
        return f"MOD({self.source_bucket_of}, {self.buckets})"

    @property
    def target_bucket_template(self) -> str:
        """`target_bucket` with every column reference marked (`target_bucket_predicate`)."""
        if self.ranges is not None and self.range_key is not None:
            return f"width_bucket({self.range_key.target}, {self.ranges.pg_array})"
        return f"mod({self.target_bucket_of}, {self.buckets})"

    @property
    def target_bucket(self) -> str:
        return self.target_bucket_template.replace(ALIAS, "")

    def with_buckets(self, buckets: int) -> DigestPlan:
        """The same comparison in `buckets` parts (sized for the change a run expects)."""
        n = max(1, min(int(buckets), MAX_BUCKETS))
        return replace(self, buckets=coprime_buckets(n) if self.bucket_by == "bytes" else n)

    def with_ranges(self, ranges: KeyRanges) -> DigestPlan:
        """The same comparison in parts of the key's order (`KeyRanges`)."""
        assert self.range_key is not None, "only a plan with a range key takes ranges"
        notes = self.notes if self.ranges else (*self.notes, "buckets: ranges of the key")
        return replace(self, ranges=ranges, buckets=len(ranges.bounds) + 1,
                       bucket_by="range", bucket_from_hash=False, notes=notes)

    def describe(self) -> str:
        return (f"digests over {len(self.columns)} columns, key ({', '.join(self.key)}), "
                f"{self.buckets} {'key ranges' if self.ranges else 'buckets'}")


def choose_buckets(rows: int, avg_row_bytes: int | None = None, *,
                   rows_per_bucket: int = ROWS_PER_BUCKET) -> int:
    """Buckets for a table of about `rows` rows of `avg_row_bytes` each (MySQL statistics):
    ~`rows_per_bucket` rows a bucket, but never more digest bytes than `MAX_DIGEST_SHARE` of
    the table's bytes (narrow tables get fuller buckets)."""
    rows = max(int(rows), 0)
    want = rows // max(1, rows_per_bucket)
    if avg_row_bytes:
        want = min(want, int(rows * avg_row_bytes * MAX_DIGEST_SHARE / DIGEST_ROW_BYTES))
    return max(1, min(want, MAX_BUCKETS))


def sized_for_change(plan: DigestPlan, rows: int, changed_share: float | None) -> DigestPlan | None:
    """`plan` with buckets sized for the share of rows a run expects to have changed (the
    last full read's), or None where comparing first is expected to cost more than it saves
    (read everything): see `COMPARE_FIRST_SHARE`."""
    if not changed_share or rows < max(1, EVIDENCE_FROM_ROWS):
        return plan
    per_bucket = rows / plan.buckets
    if read_share(changed_share, per_bucket / MAX_BUCKET_GROWTH) > COMPARE_FIRST_SHARE:
        return None
    wanted = READ_SHARE_WANTED / changed_share  # rows a bucket
    if wanted >= per_bucket:
        return plan
    return plan.with_buckets(min(int(rows / wanted), plan.buckets * MAX_BUCKET_GROWTH))


def _unmappable(source_columns: Sequence[SourceColumn], target_columns: Sequence[ColumnInfo],
                key: Sequence[str]) -> str | None:
    """Why the mapping cannot be digested, or None."""
    if len(source_columns) != len(target_columns):
        return "the source and target column lists differ in length"
    if not key:
        return "no primary key"
    missing = [k for k in key if k not in {t.name for t in target_columns}]
    if missing:
        return f"key column {', '.join(missing)} is not mapped"
    if any(ALIAS in t.name for t in target_columns):
        return "a target column name holds a control character"
    return None


def _field_texts(by_target: Mapping[str, tuple[SourceColumn, ColumnInfo]], order: list[str],
                 source_timezone: str) -> tuple[dict[str, tuple[str, ...]], dict[str, str]] | str:
    """Each column's canonical text on both sides, or why one has none."""
    try:
        tz: ZoneInfo | None = ZoneInfo(source_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = None
    my: dict[str, tuple[str, ...]] = {}
    pg: dict[str, str] = {}
    for name in order:
        s, t = by_target[name]
        got = field_text(s, t, tz, pg_column(name))
        if isinstance(got, str):
            return got
        my[name], pg[name] = got
    return my, pg


def _bucket_count(buckets: int | None, rows: int, avg_row_bytes: int | None, *,
                  from_hash: bool, coprime: bool) -> int:
    n = buckets if buckets is not None else choose_buckets(
        rows, avg_row_bytes, rows_per_bucket=ROWS_PER_HASH_BUCKET if from_hash else
        ROWS_PER_BUCKET)
    n = max(1, int(n))
    return coprime_buckets(n) if coprime else n


def _row_texts(my: Mapping[str, tuple[str, ...]], pg: Mapping[str, str], key: list[str],
               order: list[str]) -> tuple[str, str, str, str]:
    """(MySQL key text, PostgreSQL key text, MySQL row text, PostgreSQL row text): the key's
    fields, then the others; a target row whose tracking values are not layer 1's ends in
    '!' so it never matches."""
    my_key = f"CAST(CONCAT_WS('', {', '.join(a for k in key for a in my[k])}) AS BINARY)"
    pg_key = "(" + " || ".join(pg[k] for k in key) + ")"
    my_row = f"CONCAT_WS('', {', '.join(a for c in order for a in my[c])})"
    tracking_ok = (f"{pg_column('_needs_review')} = false AND "
                   f"{pg_column('_derived_from_domain')} IS NULL AND "
                   f"{pg_column('_derived_at')} IS NULL")
    pg_row = ("(" + " || ".join([pg_key, *(pg[c] for c in order if c not in key)])
              + f" || CASE WHEN {tracking_ok} THEN '' ELSE '!' END)")
    return my_key, pg_key, my_row, pg_row


def _bare(sql: str) -> str:
    return sql.replace(ALIAS, "")


def _key_buckets(my_key: str, pg_key: str, bucket_by: str,
                 own_bytes: tuple[str, str] | None) -> tuple[str, str, str]:
    """(MySQL bucket, PostgreSQL bucket, a note) for a key that is not one integer; from the
    key's own bytes where it is text (`own_bytes`), else from its canonical text."""
    if bucket_by == "bytes":
        my_bytes, pg_text = own_bytes or (my_key, pg_key)
        return (_key_bytes_mysql(my_bytes), _key_bytes_pg(pg_text),
                "buckets: bytes of the key's text modulo the bucket count")
    return (f"CAST(CONV(LEFT(SHA2({my_key}, 256), 8), 16, 10) AS UNSIGNED)",
            f"('x' || encode(substring(sha256(convert_to({pg_key}, 'UTF8')) "
            f"from 1 for 4), 'hex'))::bit(32)::bigint",
            "buckets: a hash of the key modulo the bucket count")


def plan_digest(source_columns: Sequence[SourceColumn], target_columns: Sequence[ColumnInfo],
                key: Sequence[str], source_timezone: str, *, rows: int,
                avg_row_bytes: int | None = None) -> tuple[DigestPlan | None, str | None]:
    """The digest plan a sync and `verify` use: buckets chosen for the key (`bucket_by`
    "auto") and sized from the table's statistics (see `build_digest_plan`)."""
    return build_digest_plan(source_columns, target_columns, key, source_timezone, rows=rows,
                             avg_row_bytes=avg_row_bytes)


def build_digest_plan(source_columns: Sequence[SourceColumn],
                      target_columns: Sequence[ColumnInfo], key: Sequence[str],
                      source_timezone: str, *, rows: int, avg_row_bytes: int | None = None,
                      buckets: int | None = None,
                      bucket_by: str = "auto") -> tuple[DigestPlan | None, str | None]:
    """Decide whether this table can be compared by digests, and build the SQL for it.

    `source_columns[i]` is mapped to `target_columns[i]` (the config's column mapping, in
    order; introspected on both sides); `key` names target columns. `rows` and
    `avg_row_bytes` (MySQL statistics, estimates) size the buckets unless `buckets` is
    given. `bucket_by`, for a key other than one integer column (bucketed by its value):
    ``"bytes"`` from 7-byte slices of the key's text read as integers (no hash: a changed
    row stays in its bucket); ``"row"`` from the row hash; ``"key"`` from a hash of the key;
    ``"auto"``: "bytes", and key ranges where the key can have them (`with_ranges`).
    Returns (plan, None), or (None, reason) where a column has no canonical text both
    databases agree on: then read the table in full (and log the reason at -v)."""
    if bucket_by not in ("bytes", "row", "key", "auto"):
        raise ValueError(f"bucket_by must be 'bytes', 'row', 'key' or 'auto', not {bucket_by!r}")
    ranges = bucket_by == "auto" and len(key) == 1  # key ranges where the key has them
    bucket_by = ("bytes" if len(key) == 1 else "row") if bucket_by == "auto" else bucket_by
    why = _unmappable(source_columns, target_columns, key)
    if why is not None:
        return None, why
    by_target = {t.name: (s, t) for s, t in zip(source_columns, target_columns, strict=True)}
    order = [*key, *[t.name for t in target_columns if t.name not in key]]
    texts = _field_texts(by_target, order, source_timezone)
    if isinstance(texts, str):
        return None, texts
    my, pg = texts
    notes: list[str] = []
    k_src, k_tgt = by_target[key[0]]
    int_key = len(key) == 1 and k_src.data_type.lower() in INT_TYPES and \
        k_tgt.kind == "integer"
    from_hash = not int_key and bucket_by == "row"
    n = _bucket_count(buckets, rows, avg_row_bytes, from_hash=from_hash,
                      coprime=bucket_by == "bytes" and not int_key)
    my_key, pg_key, my_row, pg_row = _row_texts(my, pg, list(key), order)
    my_hash = f"CAST(CONV(LEFT(SHA2({my_row}, 256), 16), 16, 10) AS UNSIGNED)"
    pg_hash = (f"('x' || encode(substring(sha256(convert_to({pg_row}, 'UTF8')) from 1 for 8), "
               "'hex'))::bit(64)::bigint")
    if int_key:
        my_bucket, pg_bucket = mysql_name(k_src.name), pg_column(k_tgt.name)
        notes.append("buckets: the integer key modulo the bucket count")
    elif from_hash:
        my_bucket, pg_bucket = f"({my_hash} & {_LOW63})", f"({pg_hash} & {_LOW63})"
        notes.append("buckets: the row hash modulo the bucket count")
    else:
        own = key_value_bytes(k_src, k_tgt, pg_column(k_tgt.name)) if len(key) == 1 else None
        my_bucket, pg_bucket, note = _key_buckets(my_key, pg_key, bucket_by, own)
        notes.append(note)
    bare = _bare
    plan = DigestPlan(
        columns=tuple(order), source_columns=tuple(by_target[c][0].name for c in order),
        key=tuple(key), buckets=n, source_timezone=source_timezone,
        source_key_text=my_key, source_row_text=my_row, source_bucket_of=my_bucket,
        source_hash=my_hash, target_key_text=bare(pg_key), target_row_text=bare(pg_row),
        target_bucket_of=pg_bucket, target_hash=bare(pg_hash), notes=tuple(notes),
        bucket_from_hash=from_hash, bucket_by="value" if int_key else bucket_by,
        range_key=range_key_of(k_src, k_tgt) if ranges else None)
    return plan, None


def _key_bytes_mysql(key_bytes: str) -> str:
    """The last `KEY_SLICE` bytes of the key (a binary string) read as a big-endian integer:
    cheap to compute (no hash), and it varies where one-column codes usually differ. An
    empty key is 0, as on PostgreSQL (CONV of no digits would be NULL)."""
    return (f"CAST(CONV(LPAD(HEX(RIGHT({key_bytes}, {KEY_SLICE})), {2 * KEY_SLICE}, '0'), "
            f"16, 10) AS UNSIGNED)")


def _key_bytes_pg(key_text: str) -> str:
    """`_key_bytes_mysql` in PostgreSQL, over the same UTF-8 bytes (`octet_length` of text
    counts them in the database's encoding, UTF-8 wherever digests run)."""
    tail = (f"substring(convert_to({key_text}, 'UTF8') "
            f"from greatest(1, octet_length({key_text}) - {KEY_SLICE - 1}))")
    return (f"('x' || lpad(encode({tail}, 'hex'), {2 * KEY_SLICE}, '0'))"
            f"::bit({8 * KEY_SLICE})::bigint")


def coprime_buckets(n: int) -> int:
    """The least bucket count from `n` on that shares no factor with 2, 3, 5 or 7: decimal
    codes read as integers then spread evenly over the buckets."""
    n = max(1, int(n))
    while math.gcd(n, 210) != 1:
        n += 1
    return n


def _bucket_of(row_hash: str, n: int, *, mysql: bool) -> str:
    """The bucket of a row from its 64-bit hash: its low 63 bits modulo n, the same number
    whether the hash is MySQL's unsigned or PostgreSQL's signed reading of the bits."""
    return f"{'MOD' if mysql else 'mod'}({row_hash} & {_LOW63}, {n})"


@dataclass(frozen=True)
class BucketDigest:
    rows: int
    xor: int  # unsigned 64-bit


Digests = dict[int, BucketDigest]  # per part number (`WHOLE` for the whole table)


@dataclass
class DigestComparison:
    """The outcome of comparing the two sides' bucket digests."""

    buckets: int
    differing: list[int]  # sorted bucket numbers
    source_rows: int
    target_rows: int
    equal_rows: int  # source rows in agreeing buckets: `unchanged` without reading them
    source_rows_differing: int  # source rows the row path must read
    target_rows_differing: int
    timings: dict[str, float] = field(default_factory=dict)
    bytes_from_source: int = 0  # digest payload fetched from MySQL (approximate)

    @property
    def in_step(self) -> bool:
        return not self.differing


def _by_bucket(rows: Sequence[Any]) -> dict[int, BucketDigest]:
    """(bucket, rows, xor) rows as digests; an empty whole table's xor is NULL on PostgreSQL."""
    return {int(b): BucketDigest(int(n), int(x or 0) & MASK64) for b, n, x in rows}


def differing(source: Mapping[int, BucketDigest], target: Mapping[int, BucketDigest]) -> list[int]:
    """Buckets whose (rows, xor) differ, or that only one side has; sorted."""
    return sorted(b for b in source.keys() | target.keys() if source.get(b) != target.get(b))


def compare(plan: DigestPlan, source: Mapping[int, BucketDigest],
            target: Mapping[int, BucketDigest]) -> DigestComparison:
    diff = differing(source, target)
    ds = set(diff)
    src_rows = sum(d.rows for d in source.values())
    src_diff = sum(d.rows for b, d in source.items() if b in ds)
    return DigestComparison(
        buckets=plan.buckets, differing=diff, source_rows=src_rows,
        target_rows=sum(d.rows for d in target.values()), equal_rows=src_rows - src_diff,
        source_rows_differing=src_diff,
        target_rows_differing=sum(d.rows for b, d in target.items() if b in ds))


# ---------------------------------------------------------------- reading differing buckets


def _in_list(buckets: Sequence[int]) -> str:
    return ", ".join(str(int(b)) for b in sorted(set(buckets)))


def source_bucket_predicate(plan: DigestPlan, buckets: Sequence[int]) -> str:
    """MySQL condition: the row is in one of `buckets` (refsync's own integers only) -- by
    its key, or by its own row hash when `plan.bucket_from_hash` (then the condition costs a
    row hash per row scanned)."""
    if not buckets:
        return "FALSE"
    if plan.ranges is not None and plan.range_key is not None:
        rk = plan.range_key
        return spans_sql(rk.source, plan.ranges.spans(buckets), rk.literal)
    return f"{plan.source_bucket} IN ({_in_list(buckets)})"


def source_bucket_predicates(plan: DigestPlan, buckets: Sequence[int]) -> list[str]:
    """`source_bucket_predicate` in statements of `SPANS_A_STATEMENT` key ranges each: MySQL
    checks a row against every range of its statement (a thousand ranges in one statement
    took it 2.0 s for 66,500 rows, joined from a JSON table 0.17 s); one statement for
    buckets of another kind."""
    if plan.ranges is None or plan.range_key is None:
        return [source_bucket_predicate(plan, buckets)] if buckets else []
    rk, spans = plan.range_key, plan.ranges.spans(buckets)
    return [spans_sql(rk.source, spans[i:i + ranges.SPANS_A_STATEMENT], rk.literal)
            for i in range(0, len(spans), ranges.SPANS_A_STATEMENT)]


def target_bucket_predicate(plan: DigestPlan, buckets: Sequence[int],
                            alias: str | None = None) -> str:
    """PostgreSQL condition on the target table (optionally `alias.`-qualified): the row is
    in one of `buckets` (by its key, or by its own row hash when `plan.bucket_from_hash`:
    every column is then qualified, and the condition costs a row hash per row it is
    evaluated on -- put it where few rows reach it). Restricts the diff's delete detection to
    the parts read."""
    if not buckets:
        return "false"
    expr = plan.target_bucket_template.replace(ALIAS, f"{alias}." if alias else "")
    return f"{expr} IN ({_in_list(buckets)})"


