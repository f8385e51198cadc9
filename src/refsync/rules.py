"""The value rules: what each kind of target column accepts, as one converter per column.

Pure functions, no I/O. A source (PyMySQL, SQLite, SQLAlchemy, ``yaml.safe_load``) hands
over raw Python values; `transform.make_converter` builds, once per target column, a closure that
turns such a value into what that column accepts, or raises `RejectValue` with a short
reason (DESIGN 4.5, bad rows). The MySQL pre-check of the typed fast path
(sources/mysql_copy.py) is built from the same limits.

Every converter tests the exact type it expects first (``type(v) is str``) so the common
case costs one comparison and a few checks; the slower coercions run only for other types.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import date, time
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from refsync.model import ColumnInfo, Row

__all__ = [
    "Converter",
    "RejectValue",
    "Unfit",
    "UnfitBatch",
    "decode_utf8",
    "exact_or",
    "refusing_unfit",
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


def refusing_unfit(conv: Converter) -> Converter:
    """`conv`, rejecting an `Unfit` value with its own reason."""

    def strict(v: Any) -> Any:
        if type(v) is Unfit:
            raise RejectValue(v.reason)
        return conv(v)

    return strict


# ---------------------------------------------------------------- reasons

NOT_NULL = "NULL in NOT NULL column"
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
_BOOL_WORDS = {
    "true": True, "t": True, "yes": True, "y": True, "1": True, "on": True,
    "false": False, "f": False, "no": False, "n": False, "0": False, "off": False,
}
_JSON_NUL_RE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # \u0000 not itself escaped

# Exact decimal arithmetic whatever the number of digits (quantize / normalize only).
_DEC_CTX = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def decode_utf8(v: bytes | bytearray | memoryview) -> str:
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError:
        raise RejectValue(INVALID_UTF8) from None


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


# ---------------------------------------------------------------- limits
#
# What a target column holds, as numbers: the converters below and the MySQL pre-check
# (sources/mysql_copy.py) both take their bounds from here.


def integer_bounds(col: ColumnInfo) -> tuple[int, int]:
    """The smallest and largest value an integer column holds (a bigint when not known)."""
    bits = col.int_bits or 64
    hi = (1 << (bits - 1)) - 1
    return -hi - 1, hi


def numeric_limit(col: ColumnInfo) -> int | None:
    """The first absolute value a numeric(p, s) column cannot hold, 10^(p-s); None when
    unconstrained."""
    if col.precision is None:
        return None
    return int(10 ** (col.precision - (col.scale or 0)))


BOOLEAN_INTS = (0, 1)  # the only integers a boolean column takes (false, true)


def exact_or(exact: type, nullable: bool, slow: Converter) -> Converter:
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


def text_converter(col: ColumnInfo, tz: ZoneInfo) -> Converter:
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
            return decode_utf8(v)
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


def integer_converter(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable
    bits = col.int_bits or 64
    lo, hi = integer_bounds(col)
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


def numeric_converter(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable
    precision = col.precision
    constrained = precision is not None or col.scale is not None
    scale = col.scale or 0  # numeric(p) is numeric(p, 0)
    whole = numeric_limit(col)
    limit = None if whole is None else Decimal(whole)  # Decimal against Decimal: no conversion
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
        if limit is not None and abs(v) >= limit:
            raise RejectValue(range_reason)
        return v

    return conv


def float_converter(col: ColumnInfo, tz: ZoneInfo) -> Converter:
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


def boolean_converter(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable
    words = _BOOL_WORDS

    def conv(v: Any) -> Any:
        t = type(v)
        if t is bool:
            return v
        if t is int:  # MySQL TINYINT(1)
            if v in BOOLEAN_INTS:
                return v == BOOLEAN_INTS[1]
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


def json_converter(col: ColumnInfo, tz: ZoneInfo) -> Converter:
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
            v = decode_utf8(v)
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


def uuid_converter(col: ColumnInfo, tz: ZoneInfo) -> Converter:
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


def bytes_converter(col: ColumnInfo, tz: ZoneInfo) -> Converter:
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


def other_converter(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    nullable = col.nullable

    def conv(v: Any) -> Any:
        if v is None and not nullable:
            raise RejectValue(NOT_NULL)
        return v

    return conv
