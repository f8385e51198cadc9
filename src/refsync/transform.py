"""Source values into target values: per-column converters, bad-row rejects, chunks.

Pure functions, no I/O. A source (PyMySQL, SQLite, SQLAlchemy, ``yaml.safe_load``) hands
over raw Python values; `make_converter` builds, once per target column, a closure that
turns such a value into what that column accepts, or raises `RejectValue` with a short
reason (DESIGN 4.5, bad rows). `RowConverter` applies the converters to whole batches,
drops the extra trailing values a source may carry (the incremental cursor), and counts
and lists the rejected rows (and the earliest rejected cursor, for `watermark`).

Every converter tests the exact type it expects first (``type(v) is str``) so the common
case costs one comparison and a few checks; the slower coercions run only for other types.
`RowConverter.convert_batch` converts column-wise (one ``map`` per column, C-level
iteration) and falls back to row by row only for a batch that holds a bad value.

"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, time, timedelta
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

from refsync.model import Batch, Chunk, ColumnInfo, Reject, Row
from refsync.watermark import cursor_before, is_cursor_value, max_cursor

__all__ = [
    "RejectValue",
    "RowConverter",
    "Unfit",
    "UnfitBatch",
    "make_converter",
    "row_chunks",
    "shorten",
]

Converter = Callable[[Any], Any]


class RejectValue(Exception):
    """A value that does not fit its target column; `reason` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unfit:
    """A source value that fits no column as it is (a YAML list, mapping, set or binary
    value): its row is rejected with `reason`; the reject shows `shown`."""

    __slots__ = ("reason", "shown")

    def __init__(self, reason: str, shown: str) -> None:
        self.reason = reason
        self.shown = shown

    def __str__(self) -> str:
        return self.shown


class UnfitBatch(list[Row]):
    """A batch that holds `Unfit` values: converted row by row, so their rows are rejected."""


def _refusing_unfit(conv: Converter) -> Converter:
    def strict(v: Any) -> Any:
        if type(v) is Unfit:
            raise RejectValue(v.reason)
        return conv(v)

    return strict


# ---------------------------------------------------------------- reasons

NOT_NULL = "NULL in NOT NULL column"
ZERO_DATE = "zero date"
NOT_A_DATE = "not a date"
NOT_A_TIMESTAMP = "not a timestamp"
HAS_TIME_PART = "has a time part"
NOT_A_TIME = "not a time"
TIME_RANGE = "out of range for time"
TIMESTAMP_RANGE = "out of range for timestamp"
NOT_AN_INTEGER = "not an integer"
NOT_A_NUMBER = "not a number"
NOT_FINITE = "not a finite number"
FLOAT_RANGE = "out of range for double precision"
NOT_A_BOOLEAN = "not a boolean"
BOOLEAN_INT = "only 0/1 are valid for boolean"
NUL_CHAR = "contains a NUL character"
INVALID_UTF8 = "invalid UTF-8"
INVALID_JSON = "not valid JSON"
NOT_A_UUID = "not a UUID"
NOT_BINARY = "not binary data"

_INT_NAMES = {16: "smallint", 32: "integer", 64: "bigint"}

# ---------------------------------------------------------------- parsing helpers

_INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
_NUM_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TS_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?"
    r"(?:Z|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?", re.ASCII)
_BOOL_WORDS = {
    "true": True, "t": True, "yes": True, "y": True, "1": True, "on": True,
    "false": False, "f": False, "no": False, "n": False, "0": False, "off": False,
}
_JSON_NUL_RE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # \u0000 not itself escaped
_ZERO_DATE_PREFIX = "0000-00-00"
_DAY_US = 86_400_000_000

# Exact decimal arithmetic whatever the number of digits (quantize / normalize only).
_DEC_CTX = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _decode(v: bytes | bytearray | memoryview) -> str:
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError:
        raise RejectValue(INVALID_UTF8) from None


def _parse_timestamp(s: str) -> datetime:
    """A str from MySQL/YAML/SQLite as a datetime (naive or aware), or RejectValue."""
    s = s.strip()
    if s.startswith(_ZERO_DATE_PREFIX):
        raise RejectValue(ZERO_DATE)
    if _TS_RE.fullmatch(s) is None:
        raise RejectValue(NOT_A_TIMESTAMP)
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        raise RejectValue(NOT_A_TIMESTAMP) from None


def _json_default(o: Any) -> Any:
    if isinstance(o, date | time):  # YAML gives dates inside mappings
        return o.isoformat()
    raise TypeError(type(o).__name__)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads would accept NaN and Infinity


def _dumps(v: Any) -> str:
    try:
        return json.dumps(v, ensure_ascii=False, allow_nan=False, default=_json_default)
    except (TypeError, ValueError):
        raise RejectValue(INVALID_JSON) from None


def _places(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


# ---------------------------------------------------------------- converters by kind
#
# Each builder returns one closure doing the NULL check itself, so converting a value
# is a single Python call. Fast path first: the exact type the column wants.


def _exact_or(exact: type, nullable: bool, slow: Converter) -> Converter:
    """The usual converter: a value of exactly `exact` passes as it is, NULL as the column
    allows, anything else through `slow`."""

    def conv(v: Any) -> Any:
        if type(v) is exact:
            return v
        if v is None:
            if nullable:
                return None
            raise RejectValue(NOT_NULL)
        return slow(v)

    return conv


def _text(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable
    limit = col.max_length

    def check(s: str) -> str:
        if limit is not None and len(s) > limit:
            raise RejectValue(f"too long: {len(s)} > {limit} characters")
        if "\x00" in s:
            raise RejectValue(NUL_CHAR)
        if not s.isascii():
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate, e.g. YAML "\ud800"
                raise RejectValue(INVALID_UTF8) from None
        return s

    def slow(v: Any) -> str:
        t = type(v)
        if t is bool:
            return "true" if v else "false"
        if t is int:
            return str(v)
        if isinstance(v, Decimal):
            return format(v, "f")  # never exponent notation: Decimal('1E+2') -> '100'
        if isinstance(v, bytes | bytearray | memoryview):
            return _decode(v)
        if isinstance(v, date | time):
            return v.isoformat()
        if isinstance(v, dict | list):
            return _dumps(v)  # a YAML mapping/sequence: JSON text, not a Python repr
        return str(v)

    def conv(v: Any) -> Any:
        if type(v) is str:
            if limit is not None and len(v) > limit:
                raise RejectValue(f"too long: {len(v)} > {limit} characters")
            if "\x00" in v:
                raise RejectValue(NUL_CHAR)
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    raise RejectValue(INVALID_UTF8) from None
            return v
        if v is None:
            if nullable:
                return None
            raise RejectValue(NOT_NULL)
        return check(slow(v))

    return conv


def _integer(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable
    bits = col.int_bits or 64
    hi = (1 << (bits - 1)) - 1
    lo = -hi - 1
    range_reason = f"out of range for {_INT_NAMES.get(bits, f'a {bits}-bit integer')}"

    def slow(v: Any) -> int:
        t = type(v)
        if t is bool:
            raise RejectValue(NOT_AN_INTEGER)
        if isinstance(v, int):  # int subclasses (IntEnum, ...)
            return int(v)
        if isinstance(v, float):
            if not v.is_integer():  # also NaN and infinities
                raise RejectValue(NOT_AN_INTEGER)
            return int(v)
        if isinstance(v, Decimal):
            if not v.is_finite() or v != v.to_integral_value():
                raise RejectValue(NOT_AN_INTEGER)
            return int(v)
        if isinstance(v, str):
            s = v.strip()
            if _INT_RE.fullmatch(s) is None:
                raise RejectValue(NOT_AN_INTEGER)
            try:
                return int(s)
            except ValueError:  # more digits than int() will parse
                raise RejectValue(range_reason) from None
        raise RejectValue(NOT_AN_INTEGER)

    def conv(v: Any) -> Any:
        if type(v) is not int:
            if v is None:
                if nullable:
                    return None
                raise RejectValue(NOT_NULL)
            v = slow(v)
        if lo <= v <= hi:
            return v
        raise RejectValue(range_reason)

    return conv


def _numeric(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable
    precision = col.precision
    constrained = precision is not None or col.scale is not None
    scale = col.scale or 0  # numeric(p) is numeric(p, 0)
    int_digits = None if precision is None else precision - scale
    quantum = Decimal(1).scaleb(-scale) if constrained else None
    scale_reason = f"more than {_places(scale, 'decimal place')}"
    range_reason = f"out of range for numeric({precision},{scale})"

    def to_decimal(v: Any) -> Decimal:
        t = type(v)
        if t is bool:
            raise RejectValue(NOT_A_NUMBER)
        if isinstance(v, int):
            return Decimal(v)
        if isinstance(v, float):
            if not math.isfinite(v):
                raise RejectValue(NOT_FINITE)
            return Decimal(repr(v))  # the shortest repr: 0.1 -> Decimal('0.1'), no binary noise
        if isinstance(v, Decimal):
            return v
        if isinstance(v, str):
            s = v.strip()
            if _NUM_RE.fullmatch(s) is None:
                raise RejectValue(NOT_A_NUMBER)
            try:
                return Decimal(s)
            except InvalidOperation:  # pragma: no cover - an exponent beyond any context
                raise RejectValue(NOT_A_NUMBER) from None
        raise RejectValue(NOT_A_NUMBER)

    def conv(v: Any) -> Any:
        if type(v) is not Decimal:
            if v is None:
                if nullable:
                    return None
                raise RejectValue(NOT_NULL)
            v = to_decimal(v)
        if not v.is_finite():
            raise RejectValue(NOT_FINITE)
        if quantum is None:
            return v
        exp = v.as_tuple().exponent
        assert isinstance(exp, int)  # finite, so never 'n', 'N' or 'F'
        if exp != -scale:
            if exp < -scale:  # more places than the scale, unless they are trailing zeros
                norm = v.normalize(_DEC_CTX).as_tuple().exponent
                assert isinstance(norm, int)
                if norm < -scale:
                    raise RejectValue(scale_reason)
            v = v.quantize(quantum, context=_DEC_CTX)
        if int_digits is not None and v and v.adjusted() + 1 > int_digits:
            raise RejectValue(range_reason)
        return v

    return conv


def _float(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable
    isfinite = math.isfinite

    def slow(v: Any) -> float:
        if type(v) is bool:
            raise RejectValue(NOT_A_NUMBER)
        if isinstance(v, float):
            if isfinite(v):
                return float(v)
            raise RejectValue(NOT_FINITE)
        if isinstance(v, Decimal):
            if not v.is_finite():
                raise RejectValue(NOT_FINITE)
        elif isinstance(v, str):
            s = v.strip()
            if _NUM_RE.fullmatch(s) is None:
                raise RejectValue(NOT_A_NUMBER)
            v = s
        elif not isinstance(v, int):
            raise RejectValue(NOT_A_NUMBER)
        try:
            f = float(v)
        except OverflowError:  # a huge int
            raise RejectValue(FLOAT_RANGE) from None
        if isfinite(f):
            return f
        raise RejectValue(FLOAT_RANGE)  # a huge Decimal or numeric string

    def conv(v: Any) -> Any:
        if type(v) is float:
            # NaN and infinities: SQLite stores NaN as NULL, so the targets could not agree.
            if isfinite(v):
                return v
            raise RejectValue(NOT_FINITE)
        if v is None:
            if nullable:
                return None
            raise RejectValue(NOT_NULL)
        return slow(v)

    return conv


def _boolean(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable
    words = _BOOL_WORDS

    def conv(v: Any) -> Any:
        t = type(v)
        if t is bool:
            return v
        if t is int:  # MySQL TINYINT(1)
            if v == 1:
                return True
            if v == 0:
                return False
            raise RejectValue(BOOLEAN_INT)
        if v is None:
            if nullable:
                return None
            raise RejectValue(NOT_NULL)
        if t is bytes:  # MySQL BIT(1)
            if v == b"\x01":
                return True
            if v == b"\x00":
                return False
            raise RejectValue(NOT_A_BOOLEAN)
        if isinstance(v, str):
            b = words.get(v.strip().lower())
            if b is None:
                raise RejectValue(NOT_A_BOOLEAN)
            return b
        raise RejectValue(NOT_A_BOOLEAN)

    return conv


def _date(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable

    def from_datetime(d: datetime) -> date:
        if d.hour or d.minute or d.second or d.microsecond:
            raise RejectValue(HAS_TIME_PART)
        return d.date()

    def slow(v: Any) -> date:
        if isinstance(v, datetime):
            return from_datetime(v)
        if isinstance(v, date):
            return v
        if isinstance(v, bytes | bytearray | memoryview):
            v = _decode(v)
        if isinstance(v, str):
            s = v.strip()
            if s.startswith(_ZERO_DATE_PREFIX):
                raise RejectValue(ZERO_DATE)
            if _DATE_RE.fullmatch(s) is not None:
                try:
                    return date.fromisoformat(s)
                except ValueError:
                    raise RejectValue(NOT_A_DATE) from None
            try:
                return from_datetime(_parse_timestamp(s))
            except RejectValue as e:
                if e.reason == HAS_TIME_PART:
                    raise
                raise RejectValue(NOT_A_DATE) from None
        raise RejectValue(NOT_A_DATE)

    return _exact_or(date, nullable, slow)


def _timestamp(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    """timestamp without time zone: naive, in the source's zone."""
    nullable = col.nullable

    def naive(d: datetime) -> datetime:
        if d.tzinfo is None:
            return d
        try:
            return d.astimezone(tz).replace(tzinfo=None)
        except OverflowError:
            raise RejectValue(TIMESTAMP_RANGE) from None

    def slow(v: Any) -> datetime:
        if isinstance(v, datetime):
            return naive(v)
        if isinstance(v, date):
            return datetime(v.year, v.month, v.day)
        if isinstance(v, bytes | bytearray | memoryview):
            v = _decode(v)
        if isinstance(v, str):
            return naive(_parse_timestamp(v))
        raise RejectValue(NOT_A_TIMESTAMP)

    def conv(v: Any) -> Any:
        if type(v) is datetime and v.tzinfo is None:
            return v
        if v is None:
            if nullable:
                return None
            raise RejectValue(NOT_NULL)
        return slow(v)

    return conv


def _timestamptz(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    """timestamp with time zone: naive source values are wall-clock times in the source zone."""
    nullable = col.nullable

    def aware(d: datetime) -> datetime:
        return d if d.tzinfo is not None else wall_time_in(d, tz)

    def slow(v: Any) -> datetime:
        if isinstance(v, datetime):
            return aware(v)
        if isinstance(v, date):
            return wall_time_in(datetime(v.year, v.month, v.day), tz)
        if isinstance(v, bytes | bytearray | memoryview):
            v = _decode(v)
        if isinstance(v, str):
            return aware(_parse_timestamp(v))
        raise RejectValue(NOT_A_TIMESTAMP)

    def conv(v: Any) -> Any:
        if type(v) is datetime:
            return v if v.tzinfo is not None else wall_time_in(v, tz)
        if v is None:
            if nullable:
                return None
            raise RejectValue(NOT_NULL)
        return slow(v)

    return conv


def wall_time_in(d: datetime, tz: ZoneInfo) -> datetime:
    """A naive wall-clock time in `tz`, read as PostgreSQL reads it (so the row path and a
    COPY under the session TimeZone store the same instant): a time the clock passed twice
    (autumn) takes the later, standard-time offset; a time it skipped (spring) takes the
    offset in force before the change. Both are the smaller of the two offsets."""
    first = d.replace(tzinfo=tz, fold=0)
    second = d.replace(tzinfo=tz, fold=1)
    a, b = first.utcoffset(), second.utcoffset()
    return second if a is not None and b is not None and b < a else first


def _time(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable

    def slow(v: Any) -> time:
        if isinstance(v, timedelta):  # MySQL TIME via PyMySQL
            us = (v.days * 86_400 + v.seconds) * 1_000_000 + v.microseconds
            if not 0 <= us < _DAY_US:
                raise RejectValue(TIME_RANGE)
            s, micro = divmod(us, 1_000_000)
            m, sec = divmod(s, 60)
            h, mi = divmod(m, 60)
            return time(h, mi, sec, micro)
        if isinstance(v, bytes | bytearray | memoryview):
            v = _decode(v)
        if isinstance(v, str):
            m_ = _TIME_RE.fullmatch(v.strip())
            if m_ is None:
                raise RejectValue(NOT_A_TIME)
            hh, mm, ss, frac = m_.groups()
            try:
                return time(int(hh), int(mm), int(ss or 0), int((frac or "").ljust(6, "0")))
            except ValueError:
                raise RejectValue(NOT_A_TIME) from None
        raise RejectValue(NOT_A_TIME)

    return _exact_or(time, nullable, slow)


def _json(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable
    loads = json.loads

    def check(s: str) -> str:
        # PostgreSQL jsonb refuses the escape \u0000 (a raw NUL is not valid JSON anyway).
        if "\\u0000" in s and _JSON_NUL_RE.search(s) is not None:
            raise RejectValue(NUL_CHAR)
        if not s.isascii():
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                raise RejectValue(INVALID_UTF8) from None
        return s

    def conv(v: Any) -> Any:
        if v is None:
            if nullable:
                return None
            raise RejectValue(NOT_NULL)
        if isinstance(v, bytes | bytearray | memoryview):
            v = _decode(v)
        if isinstance(v, str):
            try:
                loads(v, parse_constant=_no_constant)
            except ValueError:
                raise RejectValue(INVALID_JSON) from None
            return check(v)
        if isinstance(v, dict | list | int | float):  # bool is an int
            return check(_dumps(v))
        raise RejectValue(INVALID_JSON)

    return conv


def _uuid(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable
    UUID = uuid.UUID

    def conv(v: Any) -> Any:
        if v is None:
            if nullable:
                return None
            raise RejectValue(NOT_NULL)
        if isinstance(v, UUID):
            return str(v)
        try:
            if isinstance(v, str):
                return str(UUID(v.strip()))
            if isinstance(v, bytes) and len(v) == 16:  # BINARY(16)
                return str(UUID(bytes=v))
        except ValueError:
            pass
        raise RejectValue(NOT_A_UUID)

    return conv


def _bytes(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable

    def conv(v: Any) -> Any:
        if type(v) is bytes:
            return v
        if v is None:
            if nullable:
                return None
            raise RejectValue(NOT_NULL)
        if isinstance(v, bytes | bytearray | memoryview):
            return bytes(v)
        if isinstance(v, str):
            try:
                return v.encode("utf-8")
            except UnicodeEncodeError:
                raise RejectValue(INVALID_UTF8) from None
        raise RejectValue(NOT_BINARY)

    return conv


def _other(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable

    def conv(v: Any) -> Any:
        if v is None and not nullable:
            raise RejectValue(NOT_NULL)
        return v

    return conv


_BUILDERS: dict[str, Callable[[ColumnInfo, ZoneInfo], Converter]] = {
    "text": _text,
    "integer": _integer,
    "numeric": _numeric,
    "float": _float,
    "boolean": _boolean,
    "date": _date,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "time": _time,
    "json": _json,
    "uuid": _uuid,
    "bytes": _bytes,
    "other": _other,
}


def make_converter(col: ColumnInfo, source_tz: ZoneInfo) -> Callable[[Any], Any]:
    """A closure turning one raw source value into the value to write into `col`.

    Raises `RejectValue` for a value the column cannot take. Build it once per column.
    """
    try:
        builder = _BUILDERS[col.kind]
    except KeyError:
        raise ValueError(f"unknown column kind {col.kind!r} for column {col.name!r}") from None
    return builder(col, source_tz)


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
        self._strict = [_refusing_unfit(c) for c in self._converters]  # for an UnfitBatch
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
