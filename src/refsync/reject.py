"""What a value that does not fit says: `RejectValue` and the reasons, one string each, and
`Unfit` for source values that fit no column at all (DESIGN 4.5, bad rows)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from refsync.model import Row

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
ZERO_DATE = "zero date"
NOT_A_DATE = "not a date"
NOT_A_TIMESTAMP = "not a timestamp"
HAS_TIME_PART = "has a time part"
NOT_A_TIME = "not a time"
TIME_RANGE = "out of range for time"
TIMESTAMP_RANGE = "out of range for timestamp"

_INT_NAMES = {16: "smallint", 32: "integer", 64: "bigint"}


def integer_range(bits: int) -> str:
    """The reason for an integer a `bits`-bit column cannot hold."""
    return f"out of range for {_INT_NAMES.get(bits, f'a {bits}-bit integer')}"


def _places(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def too_many_places(scale: int) -> str:
    return f"more than {_places(scale, 'decimal place')}"


def numeric_range(precision: int | None, scale: int) -> str:
    return f"out of range for numeric({precision},{scale})"


def too_long(length: int, limit: int) -> str:
    return f"too long: {length} > {limit} characters"
