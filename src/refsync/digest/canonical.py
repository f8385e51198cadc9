"""The canonical text of a field, the same bytes from MySQL and PostgreSQL for equal values
(see refsync.digest.plan: "Canonical text" and "Time zones"). Pure: SQL text, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from refsync.model import ColumnInfo

if TYPE_CHECKING:
    from refsync.digest.plan import SourceColumn

STRING_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}
INT_TYPES = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"}
_UTF8_CHARSETS = {"utf8mb4", "utf8mb3", "utf8", "ascii"}  # their bytes are already UTF-8
_TS_FMT = "YYYY-MM-DD HH24:MI:SS.US"
ALIAS = "\x1d"  # marks column references in a plan's PostgreSQL SQL (see `pg_column`)


def mysql_name(name: str) -> str:
    """A MySQL identifier, quoted."""
    return "`" + name.replace("`", "``") + "`"


def pg_ident(name: str) -> str:
    """A PostgreSQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def sql_constant(text: str) -> str:
    """A SQL string literal valid in both dialects for refsync's own constants."""
    if "\\" in text or "'" in text or not text.isprintable():
        raise ValueError(f"not a plain constant: {text!r}")
    return f"'{text}'"


FieldText = tuple[tuple[str, ...], str] | str
"""(MySQL `CONCAT_WS('', ...)` arguments, PostgreSQL expression) of one field's canonical
text, or the reason there is none both sides agree on."""


def field_text(src: SourceColumn, tgt: ColumnInfo, tz: ZoneInfo | None, t: str) -> FieldText:
    """One field's canonical text on both sides (`t`: the target column's reference in the
    PostgreSQL expression). CONCAT_WS skips a NULL argument: "LENGTH(v), ':', v" is ':' for
    NULL, and "v, ';'" is ';' -- no IFNULL needed on the MySQL side."""
    what = f"column {tgt.name}: {src.column_type or src.data_type} into {tgt.type_sql or tgt.kind}"
    render = _RENDER_BY_KIND.get(tgt.kind)
    if render is None:
        return f"{what}: no canonical text for {tgt.kind} columns"
    return render(src, tgt, tz, t, what)


def _plain(src: SourceColumn, t: str) -> tuple[tuple[str, ...], str]:
    return (mysql_name(src.name), "';'"), f"coalesce({t}::text || ';', ';')"


def _text_field(src: SourceColumn, tgt: ColumnInfo, tz: ZoneInfo | None, t: str,
                what: str) -> FieldText:
    if blank_padded(tgt.type_sql):
        return f"{what}: a blank-padded char(n) target ignores trailing spaces"
    val = _text_value(src)
    if val is None:
        return f"{what}: no text rendering both databases agree on"
    return ((f"LENGTH({val})", "':'", val),
            f"coalesce(octet_length({t})::text || ':' || {t}, ':')")


def _text_value(src: SourceColumn) -> str | None:
    """MySQL: the column's value as the UTF-8 text a text target holds, or None."""
    s, dt = mysql_name(src.name), src.data_type.lower()
    if dt in STRING_TYPES:
        cs = (src.charset or "").lower()
        return s if cs in _UTF8_CHARSETS else f"CONVERT({s} USING utf8mb4)"
    if dt in INT_TYPES or dt == "decimal" or dt == "date":
        return s  # the row path writes str(value): the same text (ASCII)
    return None


def key_value_bytes(src: SourceColumn, tgt: ColumnInfo, t: str) -> tuple[str, str] | None:
    """A text key's own bytes, without its canonical framing: (MySQL binary string,
    PostgreSQL text, whose bytes are UTF-8 in the UTF-8 database digests require). Cheaper
    to take buckets from than the canonical text; None for a key of another kind."""
    if tgt.kind != "text" or blank_padded(tgt.type_sql):
        return None
    val = _text_value(src)
    return None if val is None else (f"CAST({val} AS BINARY)", t)


def _integer_field(src: SourceColumn, tgt: ColumnInfo, tz: ZoneInfo | None, t: str,
                   what: str) -> FieldText:
    if src.data_type.lower() in INT_TYPES:
        return _plain(src, t)
    return f"{what}: only MySQL integers are compared with integer columns"


def _numeric_field(src: SourceColumn, tgt: ColumnInfo, tz: ZoneInfo | None, t: str,
                   what: str) -> FieldText:
    dt = src.data_type.lower()
    if dt in INT_TYPES and (tgt.scale or 0) == 0:
        return _plain(src, t)
    if dt != "decimal":
        return f"{what}: only DECIMAL and integers are compared with numeric columns"
    if (tgt.scale is None and tgt.precision is None) or tgt.scale == src.scale:
        return _plain(src, t)  # (a bare numeric keeps the value's scale)
    return f"{what}: the scales differ ({src.scale} against {tgt.scale}), so the texts do not"


def _boolean_field(src: SourceColumn, tgt: ColumnInfo, tz: ZoneInfo | None, t: str,
                   what: str) -> FieldText:
    dt = src.data_type.lower()
    if dt in INT_TYPES:
        my = _plain(src, t)[0]
    elif dt == "bit" and src.column_type.lower() in ("bit(1)", "bit"):
        my = (f"{mysql_name(src.name)} + 0", "';'")
    else:
        return f"{what}: only TINYINT/BIT(1) are compared with boolean columns"
    return my, f"CASE WHEN {t} THEN '1;' WHEN NOT {t} THEN '0;' ELSE ';' END"


def _date_field(src: SourceColumn, tgt: ColumnInfo, tz: ZoneInfo | None, t: str,
                what: str) -> FieldText:
    if src.data_type.lower() != "date":
        return f"{what}: only DATE is compared with date columns"
    return _plain(src, t)[0], (f"CASE WHEN {t} IS NULL THEN ';' WHEN {t} < DATE '0001-01-01' "
                               f"THEN '?' ELSE {t}::text || ';' END")


def _time_field(src: SourceColumn, tgt: ColumnInfo, tz: ZoneInfo | None, t: str,
                what: str) -> FieldText:
    dt = src.data_type.lower()
    if dt not in ("datetime", "timestamp"):
        return f"{what}: only DATETIME/TIMESTAMP are compared with {tgt.kind} columns"
    fsp = max(0, min(6, src.fsp or 0))
    # fsp 0: MySQL prints 'YYYY-MM-DD hh:mm:ss', as PostgreSQL's ISO output of a whole
    # second (a target value with a fraction prints it, and differs); fsp 1-6: six
    # digits on both sides (PostgreSQL's output would drop trailing zeros)
    s = mysql_name(src.name)
    my = _plain(src, t)[0] if fsp == 0 else (f"CONCAT({s}, '{'0' * (6 - fsp)}')", "';'")
    if tgt.kind == "timestamp":
        if dt == "timestamp":
            return f"{what}: TIMESTAMP into timestamp depends on the source zone"
        return my, _pg_wall(t, t, fsp, "TIMESTAMP '0001-01-01'")
    if dt == "timestamp":  # an instant, read in a UTC session
        return my, _pg_wall(t, f"({t} AT TIME ZONE 'UTC')", fsp,
                            "TIMESTAMPTZ '0001-01-01 00:00:00+00'")
    if tz is None:
        return f"{what}: unknown source_timezone"
    return my, _pg_zoned(t, tz, fsp)


_RENDER_BY_KIND = {"text": _text_field, "integer": _integer_field, "numeric": _numeric_field,
                   "boolean": _boolean_field, "date": _date_field,
                   "timestamp": _time_field, "timestamptz": _time_field}


def _pg_wall(col: str, wall: str, fsp: int, before: str, odd: str | None = None) -> str:
    """`wall` (a timestamp) as canonical text; NULL as ';'; '?' (never the source's text)
    where `col` < `before` -- a wall time PostgreSQL would print as BC (the bound is
    compared with the stored value, cheaper than a second time zone conversion) -- or
    where `odd`. +-infinity print as words, which no MySQL value is."""
    oddity = f" OR {odd}" if odd else ""
    text = f"{wall}::text" if fsp == 0 else f"to_char({wall}, '{_TS_FMT}')"
    return (f"CASE WHEN {col} IS NULL THEN ';' WHEN {col} < {before}{oddity} THEN '?' "
            f"ELSE {text} || ';' END")


def _pg_zoned(col: str, tz: ZoneInfo, fsp: int) -> str:
    """A timestamptz as wall-clock text in `tz`; '?' for an instant that is not
    PostgreSQL's reading of its own wall time (the earlier instant of an ambiguous hour)."""
    name = sql_constant(tz.key)
    wall = f"({col} AT TIME ZONE {name})"
    not_pg_reading = f"({wall} AT TIME ZONE {name}) <> {col}"
    # no zone is 24 h from UTC: from this instant on, every wall time is in year 1 or later
    # (the few earlier ones on 0001-01-01 render '?': always read, still correct)
    before = "TIMESTAMPTZ '0001-01-02 00:00:00+00'"
    windows = fold_windows(tz.key)
    if windows is None:  # DST still in force: check every value
        return _pg_wall(col, wall, fsp, before, not_pg_reading)
    if not windows:
        return _pg_wall(col, wall, fsp, before)
    last = max(hi for _, hi in windows)
    inside = " OR ".join(f"({col} >= {_utc(lo)} AND {col} < {_utc(hi)})" for lo, hi in windows)
    return _pg_wall(col, wall, fsp, before,
                    f"({col} < {_utc(last)} AND ({inside}) AND {not_pg_reading})")


def _utc(at: datetime) -> str:
    return f"TIMESTAMPTZ '{at.isoformat(sep=' ')}+00'"


@lru_cache(maxsize=32)
def fold_windows(zone: str) -> tuple[tuple[datetime, datetime], ...] | None:
    """UTC instants whose wall-clock time in `zone` is ambiguous: [T - d, T + d) for every
    fall-back transition T (by d), years 1800-2040 from `zoneinfo`. None when the zone
    still changes offsets after 2037 (the windows never end: check every value)."""
    tz = ZoneInfo(zone)

    def offset(at: datetime) -> timedelta:
        off = at.astimezone(tz).utcoffset()
        assert off is not None
        return off

    start, end, step = datetime(1800, 1, 1, tzinfo=UTC), datetime(2040, 1, 1, tzinfo=UTC), \
        timedelta(days=1)
    out: list[tuple[datetime, datetime]] = []
    at, before = start, offset(start)
    while at < end:
        nxt = at + step
        after = offset(nxt)
        if after != before:
            lo_s, hi_s = int(at.timestamp()), int(nxt.timestamp())
            while hi_s - lo_s > 1:  # bisect to the second: before at lo_s, changed at hi_s
                mid_s = (lo_s + hi_s) // 2
                if offset(datetime.fromtimestamp(mid_s, UTC)) == before:
                    lo_s = mid_s
                else:
                    hi_s = mid_s
            hi = datetime.fromtimestamp(hi_s, UTC)
            if nxt.year >= 2037 and hi.year >= 2037:
                return None
            if after < before:  # fall-back at `hi` by before - after
                d = before - after
                out.append(((hi - d).replace(tzinfo=None), (hi + d).replace(tzinfo=None)))
            before = offset(nxt)
        at = nxt
    return tuple(out)


def blank_padded(type_sql: str) -> bool:
    """A char(n) column however it is spelt (SQLAlchemy's ``CHAR(9)``, the catalogue's
    ``character(9)``, ``bpchar``), and not ``character varying(9)``."""
    t = type_sql.upper().replace(" ", "")
    return t.startswith(("CHAR(", "CHARACTER(", "BPCHAR", "NCHAR(")) or \
        t in ("CHAR", "CHARACTER", "NCHAR")


def pg_column(name: str) -> str:
    """A target column in a plan's PostgreSQL SQL: marked, so that `target_bucket_predicate`
    can qualify every column reference with an alias (the marker is dropped otherwise)."""
    return ALIAS + pg_ident(name)


