"""Coercions: a source value of another type made into the Python type a target column holds
(str for text, int for integer, Decimal for numeric, ...), or rejected when it is not one
(``not an integer``). Pure functions, no I/O.

A source (PyMySQL, SQLite, SQLAlchemy, ``yaml.safe_load``) mostly hands over the column's own
type already; `rules.make_converter` calls a coercion (``to_<kind>``, or `coerce_integer`'s
closure, which names the column's width) only for the others, and then checks
the column's limits (rules.py) on what it returns. Date and time kinds: coerce_time.py.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import date, time
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from refsync.model import ColumnInfo
from refsync.reject import (
    BOOLEAN_INT,
    FLOAT_RANGE,
    INVALID_JSON,
    INVALID_UTF8,
    NOT_A_BOOLEAN,
    NOT_A_NUMBER,
    NOT_A_UUID,
    NOT_AN_INTEGER,
    NOT_BINARY,
    NOT_FINITE,
    Converter,
    RejectValue,
    integer_range,
)

T = TypeVar("T")

BOOLEAN_INTS = (0, 1)  # the only integers a boolean column takes (false, true)

_INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_BOOL_WORDS = {
    "true": True, "t": True, "yes": True, "y": True, "1": True, "on": True,
    "false": False, "f": False, "no": False, "n": False, "0": False, "off": False,
}


def decode_utf8(v: bytes | bytearray | memoryview) -> str:
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError:
        raise RejectValue(INVALID_UTF8) from None


def _json_default(o: Any) -> Any:
    if isinstance(o, date | time):  # YAML gives dates inside mappings
        return o.isoformat()
    raise TypeError(type(o).__name__)


def json_text(v: Any) -> str:
    try:
        return json.dumps(v, ensure_ascii=False, allow_nan=False, default=_json_default)
    except (TypeError, ValueError):
        raise RejectValue(INVALID_JSON) from None


def _number_text(v: str, pattern: re.Pattern[str], reason: str) -> str:
    """`v` without surrounding blanks, where it reads as a number of `pattern`'s form."""
    s = v.strip()
    if pattern.fullmatch(s) is None:
        raise RejectValue(reason)
    return s


def _parsed(text: str, parse: Callable[[str], T], reason: str) -> T:
    try:
        return parse(text)
    except (ValueError, ArithmeticError):  # decimal.InvalidOperation is an ArithmeticError
        raise RejectValue(reason) from None


def to_text(v: Any) -> str:
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
        return json_text(v)  # a YAML mapping/sequence: JSON text, not a Python repr
    return str(v)


def coerce_integer(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    range_reason = integer_range(col.int_bits or 64)

    def coerce(v: Any) -> int:
        if type(v) is bool:
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
        if isinstance(v, str):  # more digits than int() parses: out of range
            return _parsed(_number_text(v, _INT_RE, NOT_AN_INTEGER), int, range_reason)
        raise RejectValue(NOT_AN_INTEGER)

    return coerce


def to_numeric(v: Any) -> Decimal:
    if type(v) is bool:
        raise RejectValue(NOT_A_NUMBER)
    if isinstance(v, int):
        return Decimal(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise RejectValue(NOT_FINITE)
        return Decimal(repr(v))  # the shortest repr: 0.1 -> Decimal('0.1'), no binary noise
    if isinstance(v, Decimal):
        return v
    if isinstance(v, str):  # an exponent beyond any context is not a number either
        return _parsed(_number_text(v, NUMBER_RE, NOT_A_NUMBER), Decimal, NOT_A_NUMBER)
    raise RejectValue(NOT_A_NUMBER)


def to_float(v: Any) -> float:
    if isinstance(v, float):
        return float(v)
    if type(v) is bool or not isinstance(v, int | Decimal | str):
        raise RejectValue(NOT_A_NUMBER)
    if isinstance(v, Decimal) and not v.is_finite():
        raise RejectValue(NOT_FINITE)
    try:
        f = float(_number_text(v, NUMBER_RE, NOT_A_NUMBER) if isinstance(v, str) else v)
    except OverflowError:  # a huge int
        raise RejectValue(FLOAT_RANGE) from None
    if math.isfinite(f):
        return f
    raise RejectValue(FLOAT_RANGE)  # a huge Decimal or numeric string


def to_boolean(v: Any) -> bool:
    """0/1 (MySQL TINYINT(1)), BIT(1) and the usual words; the integers are the limit the
    MySQL pre-check also applies (rules.py, ``one_of``)."""
    t = type(v)
    if t is int:
        if v in BOOLEAN_INTS:
            return bool(v == BOOLEAN_INTS[1])
        raise RejectValue(BOOLEAN_INT)
    if t is bytes:  # MySQL BIT(1)
        if v == b"\x01":
            return True
        if v == b"\x00":
            return False
        raise RejectValue(NOT_A_BOOLEAN)
    if isinstance(v, str):
        b = _BOOL_WORDS.get(v.strip().lower())
        if b is None:
            raise RejectValue(NOT_A_BOOLEAN)
        return b
    raise RejectValue(NOT_A_BOOLEAN)


def to_json(v: Any) -> str:
    """JSON text from bytes, or from a mapping, list or number (a YAML value)."""
    if isinstance(v, bytes | bytearray | memoryview):
        return decode_utf8(v)
    if isinstance(v, str):  # a str subclass
        return str(v)
    if isinstance(v, dict | list | int | float):  # bool is an int
        return json_text(v)
    raise RejectValue(INVALID_JSON)


def to_uuid(v: Any) -> str:
    if isinstance(v, uuid.UUID):
        return str(v)
    try:
        if isinstance(v, str):
            return str(uuid.UUID(v.strip()))
        if isinstance(v, bytes) and len(v) == 16:  # BINARY(16)
            return str(uuid.UUID(bytes=v))
    except ValueError:
        pass
    raise RejectValue(NOT_A_UUID)


def to_bytes(v: Any) -> bytes:
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    if isinstance(v, str):
        try:
            return v.encode("utf-8")
        except UnicodeEncodeError:
            raise RejectValue(INVALID_UTF8) from None
    raise RejectValue(NOT_BINARY)


def unchanged(v: Any) -> Any:
    """A column of a type refsync does not know: the value as it is (the target judges)."""
    return v
