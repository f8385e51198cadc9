"""The value rules as one table: what each kind of target column accepts (DESIGN 4.5).

`limits(col)` lists the demands a target column makes of every value, in the order they are
checked (the first that fails names the reject). Two things are built from that one list:

- the Python converter (`make_converter`): a value of another type is first made into the
  column's type by a coercion (coerce.py, coerce_time.py: ``not an integer``), then every
  limit's Python check runs on it;
- the MySQL pre-check of the typed fast path (sources/mysql_copy.py): one SQL condition per
  limit, or nothing where the source's declared type already guarantees it, and no fast path
  for a column with a limit it cannot render. So a row the server passes meets every limit
  the converter would check, by construction.

Pure functions, no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, time
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from refsync import coerce as c
from refsync import coerce_time as ct
from refsync.model import ColumnInfo
from refsync.reject import (
    INVALID_JSON,
    INVALID_UTF8,
    NOT_FINITE,
    NOT_NULL,
    NUL_CHAR,
    Converter,
    RejectValue,
    Unfit,
    UnfitBatch,
    integer_range,
    numeric_range,
    refusing_unfit,
    too_long,
    too_many_places,
)

__all__ = ["Converter", "Limit", "RejectValue", "Rule", "Unfit", "UnfitBatch", "limits",
           "make_converter", "refusing_unfit"]


@dataclass(frozen=True)
class Limit:
    """One demand a target column makes of every value it takes.

    `name` is what the MySQL pre-check renders, `arg` its parameter, `check` the Python test
    on a value of the column's type (returns the value, normalised where PostgreSQL would
    store it so, or raises `RejectValue`); None where the coercion itself applies the limit
    (turning 0/1 into a boolean, parsing a date)."""

    name: Rule
    arg: Any = None
    check: Converter | None = None


class Rule(StrEnum):
    """What a limit demands; the MySQL pre-check has one rendering for each."""

    NOT_NULL = "not_null"
    MAX_CHARS = "max_chars"
    STORABLE_TEXT = "storable_text"  # no NUL character, valid UTF-8
    JSON_VALID = "json_valid"
    JSON_NO_NUL = "json_no_nul"
    INT_RANGE = "int_range"
    FINITE = "finite"
    SCALE = "scale"
    WHOLE_DIGITS = "whole_digits"
    ONE_OF = "one_of"
    REAL_DATE = "real_date"


# Exact decimal arithmetic whatever the number of digits (quantize / normalize only).
_DEC_CTX = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_JSON_NUL_RE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # \u0000 not itself escaped


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


# ---------------------------------------------------------------- the limits' Python checks


def _max_chars(limit: int) -> Limit:
    def check(s: str) -> str:
        if len(s) > limit:
            raise RejectValue(too_long(len(s), limit))
        return s

    return Limit(Rule.MAX_CHARS, limit, check)


def _storable_text(s: str) -> str:
    """Text PostgreSQL can store: no NUL character, and valid UTF-8 (a lone surrogate, e.g.
    YAML "\\ud800", is not)."""
    if "\x00" in s:
        raise RejectValue(NUL_CHAR)
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise RejectValue(INVALID_UTF8) from None
    return s


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads would accept NaN and Infinity


def _json_valid(s: str) -> str:
    try:
        json.loads(s, parse_constant=_no_constant)
    except ValueError:
        raise RejectValue(INVALID_JSON) from None
    return s


def _json_no_nul(s: str) -> str:
    # PostgreSQL jsonb refuses the escape \u0000 (a raw NUL is not valid JSON anyway).
    if "\\u0000" in s and _JSON_NUL_RE.search(s) is not None:
        raise RejectValue(NUL_CHAR)
    return s


def _int_range(col: ColumnInfo) -> Limit:
    lo, hi = integer_bounds(col)
    reason = integer_range(col.int_bits or 64)

    def check(v: int) -> int:
        if lo <= v <= hi:
            return v
        raise RejectValue(reason)

    return Limit(Rule.INT_RANGE, (lo, hi), check)


def _finite_decimal(v: Decimal) -> Decimal:
    if v.is_finite():
        return v
    raise RejectValue(NOT_FINITE)


def _finite_float(v: float) -> float:
    # NaN and infinities: SQLite stores NaN as NULL, so the targets could not agree.
    if math.isfinite(v):
        return v
    raise RejectValue(NOT_FINITE)


def _scale(scale: int) -> Limit:
    """At most `scale` places (trailing zeros aside); the value is given exactly `scale`."""
    quantum = Decimal(1).scaleb(-scale)
    reason = too_many_places(scale)

    def check(v: Decimal) -> Decimal:
        exp = v.as_tuple().exponent
        assert isinstance(exp, int)  # finite, so never 'n', 'N' or 'F'
        if exp == -scale:
            return v
        if exp < -scale:  # more places than the scale, unless they are trailing zeros
            norm = v.normalize(_DEC_CTX).as_tuple().exponent
            assert isinstance(norm, int)
            if norm < -scale:
                raise RejectValue(reason)
        return v.quantize(quantum, context=_DEC_CTX)

    return Limit(Rule.SCALE, scale, check)


def _whole_digits(col: ColumnInfo, limit: int) -> Limit:
    bound = Decimal(limit)  # Decimal against Decimal: no conversion
    reason = numeric_range(col.precision, col.scale or 0)

    def check(v: Decimal) -> Decimal:
        if abs(v) >= bound:
            raise RejectValue(reason)
        return v

    return Limit(Rule.WHOLE_DIGITS, limit, check)


# ---------------------------------------------------------------- the table


def _text(col: ColumnInfo) -> list[Limit]:
    chars = [] if col.max_length is None else [_max_chars(col.max_length)]
    return [*chars, Limit(Rule.STORABLE_TEXT, None, _storable_text)]


def _json(col: ColumnInfo) -> list[Limit]:
    return [Limit(Rule.JSON_VALID, None, _json_valid),
            Limit(Rule.JSON_NO_NUL, None, _json_no_nul),
            Limit(Rule.STORABLE_TEXT, None, _storable_text)]


def _numeric(col: ColumnInfo) -> list[Limit]:
    found = [Limit(Rule.FINITE, None, _finite_decimal)]
    if col.precision is not None or col.scale is not None:  # numeric(p) is numeric(p, 0)
        found.append(_scale(col.scale or 0))
    whole = numeric_limit(col)
    if whole is not None:
        found.append(_whole_digits(col, whole))
    return found


def _real_date(col: ColumnInfo) -> list[Limit]:
    return [Limit(Rule.REAL_DATE)]  # parsing proves a date real; a Python date always is


def _nothing(col: ColumnInfo) -> list[Limit]:
    return []


@dataclass(frozen=True)
class Kind:
    """A kind of target column: the Python type its values have (None: always coerced, e.g.
    a timestamp must also be naive), how other values are made into it, its limits."""

    exact: type | None
    coercion: Callable[[ColumnInfo, ZoneInfo], Converter]
    limits: Callable[[ColumnInfo], list[Limit]]


def _fixed(coercion: Converter) -> Callable[[ColumnInfo, ZoneInfo], Converter]:
    return lambda col, tz: coercion


KINDS: dict[str, Kind] = {
    "text": Kind(str, _fixed(c.to_text), _text),
    "integer": Kind(int, c.coerce_integer, lambda col: [_int_range(col)]),
    "numeric": Kind(Decimal, _fixed(c.to_numeric), _numeric),
    "float": Kind(float, _fixed(c.to_float),
                  lambda col: [Limit(Rule.FINITE, None, _finite_float)]),
    "boolean": Kind(bool, _fixed(c.to_boolean),
                    lambda col: [Limit(Rule.ONE_OF, c.BOOLEAN_INTS)]),
    "date": Kind(date, ct.coerce_date, _real_date),
    "timestamp": Kind(None, ct.coerce_timestamp, _real_date),
    "timestamptz": Kind(None, ct.coerce_timestamptz, _real_date),
    "time": Kind(time, ct.coerce_time, _nothing),
    "json": Kind(str, _fixed(c.to_json), _json),
    "uuid": Kind(None, _fixed(c.to_uuid), _nothing),
    "bytes": Kind(bytes, _fixed(c.to_bytes), _nothing),
    "other": Kind(None, _fixed(c.unchanged), _nothing),
}


def _kind(col: ColumnInfo) -> Kind:
    try:
        return KINDS[col.kind]
    except KeyError:
        raise ValueError(f"unknown column kind {col.kind!r} for column {col.name!r}") from None


def limits(col: ColumnInfo) -> tuple[Limit, ...]:
    """Every demand `col` makes of a value, in the order they are checked."""
    not_null = [] if col.nullable else [Limit(Rule.NOT_NULL)]  # the converter's NULL branch
    return (*not_null, *_kind(col).limits(col))


# ---------------------------------------------------------------- the converters


def _chain(checks: Sequence[Converter]) -> Converter | None:
    """The checks applied in order, as one call (unrolled: this runs for every value)."""
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: second(first(v))
    if len(checks) == 3:
        first, second, third = checks
        return lambda v: third(second(first(v)))

    def chained(v: Any) -> Any:
        for check in checks:
            v = check(v)
        return v

    return chained


def make_converter(col: ColumnInfo, source_tz: ZoneInfo) -> Converter:
    """A closure turning one raw source value into the value to write into `col`, or raising
    `RejectValue`: NULL as the column allows, a value of the column's own type straight to
    the limits' checks, any other through the coercion first. Build it once per column."""
    kind = _kind(col)
    demands = limits(col)
    nullable = all(limit.name != Rule.NOT_NULL for limit in demands)
    check = _chain([limit.check for limit in demands if limit.check is not None])
    exact, coerce = kind.exact, kind.coercion(col, source_tz)

    if check is None:
        def unchecked(v: Any) -> Any:
            if type(v) is exact:
                return v
            if v is None:
                if nullable:
                    return None
                raise RejectValue(NOT_NULL)
            return coerce(v)

        return unchecked

    def checked(v: Any) -> Any:
        if type(v) is not exact:
            if v is None:
                if nullable:
                    return None
                raise RejectValue(NOT_NULL)
            v = coerce(v)
        return check(v)

    return checked
