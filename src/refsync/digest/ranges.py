"""Key ranges (see `KeyRanges`), the pure part: a table's parts in its key's order, their
bounds in both dialects, and how many a run wants for the change it expects."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from refsync.digest.canonical import INT_TYPES, blank_padded, mysql_name, pg_column
from refsync.model import ColumnInfo

if TYPE_CHECKING:
    from refsync.digest.plan import SourceColumn


@dataclass(frozen=True)
class KeyRanges:
    """Parts of a table in its key's order: part 0 below the first bound, part i from bound i
    (1-based) to the next, the last from the last bound up. Each side assigns a row by
    comparing its key in its own order -- MySQL in the key column's collation (through the
    key's index: selecting a part's rows reads only them), PostgreSQL by an integer of the
    key (`range_key`: the integer itself, or a text key's first 8 UTF-8 bytes) -- and the
    bounds are kept only where MySQL orders them as PostgreSQL does, so each side's parts
    cover every key once. Where the two orders differ between the bounds (a `_ci`
    collation and lower-case keys), a row lands in different parts on the two sides:
    both parts then differ and are read (one more read, never a missed difference)."""

    bounds: tuple[int, ...]  # PostgreSQL: strictly increasing
    texts: tuple[str, ...] | None = None  # MySQL: the same bounds as text (a text key)

    @property
    def source_bounds(self) -> tuple[int | str, ...]:
        return self.texts if self.texts is not None else self.bounds

    @property
    def pg_array(self) -> str:
        return "'{" + ",".join(str(int(b)) for b in self.bounds) + "}'::int8[]"

    def without(self, drop: set[int]) -> KeyRanges:
        """These ranges less the bounds at positions `drop` (0-based): their parts merge."""
        keep = [i for i in range(len(self.bounds)) if i not in drop]
        return KeyRanges(tuple(self.bounds[i] for i in keep),
                         None if self.texts is None else tuple(self.texts[i] for i in keep))

    def spans(self, parts: Sequence[int]) -> list[tuple[Any, Any]]:
        """The (low, high) source bounds of `parts`, adjacent parts merged (None: open)."""
        return _merged_spans(self.source_bounds, parts)


@dataclass(frozen=True)
class RangeKey:
    """A one-column key both sides order alike: the MySQL column, PostgreSQL's integer of
    its order (marked column references), the MySQL type of a bound and, for a text key,
    its character set (bounds are written in it)."""

    source: str
    target: str
    source_type: str
    charset: str | None = None

    def writable(self, text: str) -> bool:
        """Whether a bound's text exists in the key's character set."""
        if self.charset == "ascii":
            return text.isascii()
        return self.charset != "utf8mb3" or all(ord(c) <= 0xFFFF for c in text)

    def literal(self, value: int | str) -> str:
        """A bound in MySQL SQL: an integer, or text as hex bytes in the key's character set
        (no escaping; compared in the key column's collation)."""
        if isinstance(value, int):
            return str(int(value))
        return f"_{self.charset} X'{value.encode().hex()}'"


def _merged_spans(bounds: Sequence[Any], parts: Sequence[int]) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    last = -2
    for p in sorted(set(parts)):
        lo = bounds[p - 1] if p >= 1 else None
        hi = bounds[p] if p < len(bounds) else None
        if p == last + 1 and out:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
        last = p
    return out


# ---------------------------------------------------------------- sizing and bounds

PREFIX_BYTES = 8  # a text key's order on PostgreSQL: its first 8 UTF-8 bytes as an integer
_SIGN = 1 << 63
# parts: rows a part = sqrt(RANGE_COST / expected change share), from measurement (issue 20,
# a million rows): MySQL's grouping costs about 12 µs a part, reading, staging and diffing a
# row of a differing part about 3 µs; a part of P rows then costs parts * 12 µs + rows *
# (1 - e^-(change * P)) * 3 µs, least at P = sqrt(4 / change) for small changes
RANGE_COST = 4.0
# the least change a run expects (a quiet night says little about the next): 0.05 % of the
# rows, ~90 rows a part -- 0.01 % then reads ~1 % of the rows, 0.1 % about 9 %
EXPECTED_CHANGE = 5e-4
MIN_PART_ROWS, MAX_PART_ROWS = 4, 2000
MAX_RANGE_PARTS = 100_000  # bounds travel as one JSON document to MySQL
SPANS_A_STATEMENT = 32  # key ranges a MySQL statement reads (`source_bucket_predicates`)
RANGES_FROM_ROWS = 10_000  # smaller tables: the buckets of the key's bytes (no sampling)
SAMPLES_PER_PART = 4  # sampled target keys a part: its size varies by about half
# read everything when more than this share of the rows is expected in differing parts, with
# key ranges sized for the change expected: at a million rows on the bench's shared two
# cores both digests take about half of what reading everything does, and a row read by
# its key range costs about three a plain read does (measured, issue 20)
RANGE_READ_ALL_SHARE = 0.1


# before a comparison in key ranges is sized, about this many target rows (taken at random
# row by row) are looked up in the source by their keys -- about 0.15 s at a million rows,
# most of it the source's random lookups: the share that differs is this night's change,
# where the last full read's share is the last night's (a quiet night after a heavy one would
# otherwise read everything, a heavy one after quiet ones compare first and then read
# everything). 1,500 tell 0.1 % (1.5 expected) from the ~0.3 % where reading everything wins
# (4.5) and from 1 % (15). Fewer than MIN_SAMPLED: the last run's share.
SAMPLE_ROWS = 1500
MIN_SAMPLED = 500


def sampled_share(sample: Sequence[tuple[Any, int]], source: Mapping[Any, int]) -> float | None:
    """The share of the sampled target rows, (key, row hash), whose source row differs or is
    gone (`source`: key -> row hash); None where too few rows were sampled to tell."""
    if len(sample) < MIN_SAMPLED:
        return None
    return sum(1 for k, h in sample if source.get(k) != h) / len(sample)


def takes_ranges(range_key: RangeKey | None, rows: int) -> bool:
    """Whether a comparison of a table of about `rows` rows is made in key ranges."""
    return range_key is not None and rows >= RANGES_FROM_ROWS


def part_rows(changed_share: float | None) -> int:
    """Rows a key range should hold for the change a run expects."""
    c = max(changed_share or 0.0, EXPECTED_CHANGE)
    return int(min(MAX_PART_ROWS, max(MIN_PART_ROWS, math.sqrt(RANGE_COST / c))))


def range_parts(rows: int, changed_share: float | None) -> int | None:
    """How many key ranges to compare a table of `rows` rows in, or None where so much is
    expected to differ that reading everything is cheaper."""
    per = part_rows(changed_share)
    if changed_share and read_share(changed_share, per) > RANGE_READ_ALL_SHARE:
        return None
    return max(1, min(MAX_RANGE_PARTS, rows // per))


def near_parts(wanted: int, have: int) -> bool:
    """Whether bounds sampled for `have` ranges serve where `wanted` are: within a factor
    of two (the cost of a comparison is flat around its best size: the ranges' cost falls
    as fast as the reading rises)."""
    return have <= 2 * wanted and wanted <= 2 * have


def key_prefix(text: str) -> int:
    """PostgreSQL's integer of a text key's order (`range_key`), in Python."""
    return int.from_bytes(text.encode()[:PREFIX_BYTES].ljust(PREFIX_BYTES, b"\0"), "big") - _SIGN


def text_ranges(prefixes: Sequence[int]) -> KeyRanges:
    """Key ranges of a text key from sampled key prefixes (`key_prefix`, sorted): each bound
    as the text MySQL compares with -- the prefix's bytes up to its last whole character
    (a bound is never cut inside a character) -- and its own prefix, deduplicated. A text
    key k is then >= bound b in bytes exactly when key_prefix(k) >= key_prefix(b) (b holds
    at most 8 bytes, and no text holds a NUL)."""
    texts: dict[int, str] = {}
    for p in prefixes:
        raw = (int(p) + _SIGN).to_bytes(PREFIX_BYTES, "big").rstrip(b"\0")
        text = raw.decode("utf-8", errors="ignore")  # drops a character cut at byte 8
        if text:
            texts.setdefault(key_prefix(text), text)
    ordered = sorted(texts)
    return KeyRanges(tuple(ordered), tuple(texts[b] for b in ordered))


def read_share(changed_share: float, rows_per_bucket: float) -> float:
    """The share of the rows in buckets that differ when `changed_share` of the rows changed
    at random, one bucket each: 1 - e^(-changed_share * rows_per_bucket)."""
    return 1.0 - math.exp(-max(0.0, changed_share) * max(1.0, rows_per_bucket))


_RANGE_CHARSETS = {"utf8mb4": "utf8mb4", "utf8mb3": "utf8mb3", "utf8": "utf8mb3",
                   "ascii": "ascii"}


def key_as_is(src: SourceColumn, tgt: ColumnInfo) -> bool:
    """Whether a key column's values reach the target as they are, so two keys the source
    holds apart stay apart: an integer into an integer, or a CHAR/VARCHAR in a UTF-8 or ASCII
    character set (its bytes are the target's) into text that is not blank-padded (ENUM
    orders by position, other character sets convert to other bytes, an invalid sequence
    of theirs to '?')."""
    dt = src.data_type.lower()
    if dt in INT_TYPES:
        return tgt.kind == "integer"
    return dt in ("char", "varchar") and tgt.kind == "text" and \
        not blank_padded(tgt.type_sql) and (src.charset or "").lower() in _RANGE_CHARSETS


def range_key_of(src: SourceColumn, tgt: ColumnInfo) -> RangeKey | None:
    """How a one-column key is ordered alike on both sides: one that reaches the target as
    it is (`key_as_is`), in a collation whose name can be written in SQL; None otherwise."""
    if not key_as_is(src, tgt):
        return None
    if src.data_type.lower() in INT_TYPES:
        return RangeKey(mysql_name(src.name), f"{pg_column(tgt.name)}::int8", "BIGINT")
    cs = _RANGE_CHARSETS[(src.charset or "").lower()]
    if not src.collation or not src.collation.replace("_", "").isalnum():
        return None
    col = pg_column(tgt.name)
    prefix = (f"(('x' || encode(substring(convert_to({col}, 'UTF8') || "
              f"'\\x{'00' * PREFIX_BYTES}'::bytea from 1 for {PREFIX_BYTES}), 'hex'))"
              f"::bit(64)::bigint # (-9223372036854775807 - 1))")
    return RangeKey(mysql_name(src.name), prefix,
                    f"VARCHAR({PREFIX_BYTES}) CHARACTER SET {cs} COLLATE {src.collation}", cs)


def spans_sql(col: str, spans: Sequence[tuple[Any, Any]], literal: Any) -> str:
    """`col` within any of `spans` ((low, high): low <= col < high; None: open)."""
    out = []
    for lo, hi in spans:
        conds = ([f"{col} >= {literal(lo)}"] if lo is not None else []) + \
            ([f"{col} < {literal(hi)}"] if hi is not None else [])
        out.append(" AND ".join(conds) or "TRUE")
    return "(" + " OR ".join(f"({c})" for c in out) + ")"
