"""Unit tests for refsync.rules (per-column converters) and refsync.transform (RowConverter)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from refsync.model import ColumnInfo, ColumnKind, Reject
from refsync.rules import RejectValue
from refsync.transform import RowConverter, make_converter, shorten

SHANGHAI = ZoneInfo("Asia/Shanghai")
PLUS8 = timezone(timedelta(hours=8))
UUID_TEXT = "12345678-1234-5678-1234-567812345678"

ALL_KINDS: list[ColumnKind] = [
    "text", "integer", "numeric", "float", "boolean", "date", "timestamp", "timestamptz",
    "time", "json", "uuid", "bytes", "other",
]


def col(kind: ColumnKind, **kw: Any) -> ColumnInfo:
    return ColumnInfo(name=kw.pop("name", "c"), kind=kind, **kw)


def convert(column: ColumnInfo, value: Any) -> Any:
    return make_converter(column, SHANGHAI)(value)


def reason_of(column: ColumnInfo, value: Any) -> str:
    with pytest.raises(RejectValue) as info:
        convert(column, value)
    return info.value.reason


def same(a: Any, b: Any) -> bool:
    """Equal, of the same type, and for Decimals and datetimes the same representation."""
    if type(a) is not type(b) or a != b:
        return False
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, datetime | time):
        return bool(a.tzinfo == b.tzinfo)
    return True


# ---------------------------------------------------------------- accepted values

ACCEPT = [
    # text
    pytest.param(col("text"), "abc", "abc", id="text-str"),
    pytest.param(col("text", max_length=3), "abc", "abc", id="text-at-max-length"),
    pytest.param(col("text", max_length=4), "年金计划", "年金计划",
                 id="text-cjk-counts-characters"),
    pytest.param(col("text", max_length=1), "𠀀", "𠀀", id="text-astral-is-one-character"),
    pytest.param(col("text"), 42, "42", id="text-int"),
    pytest.param(col("text"), -7, "-7", id="text-negative-int"),
    pytest.param(col("text"), Decimal("12.50"), "12.50", id="text-decimal-keeps-places"),
    pytest.param(col("text"), Decimal("1E+2"), "100", id="text-decimal-no-exponent"),
    pytest.param(col("text"), 1.5, "1.5", id="text-float"),
    pytest.param(col("text"), True, "true", id="text-bool-true"),
    pytest.param(col("text"), False, "false", id="text-bool-false"),
    pytest.param(col("text"), "é".encode(), "é", id="text-bytes"),
    pytest.param(col("text"), bytearray(b"ab"), "ab", id="text-bytearray"),
    pytest.param(col("text"), memoryview(b"ab"), "ab", id="text-memoryview"),
    pytest.param(col("text"), date(2024, 1, 2), "2024-01-02", id="text-date"),
    pytest.param(col("text"), datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05",
                 id="text-datetime"),
    pytest.param(col("text"), {"a": "ü"}, '{"a": "ü"}', id="text-mapping-as-json"),
    pytest.param(col("text"), uuid.UUID(UUID_TEXT), UUID_TEXT, id="text-uuid"),
    pytest.param(col("text", max_length=2), 42, "42", id="text-int-within-max-length"),
    # integer
    pytest.param(col("integer"), 5, 5, id="integer-int"),
    pytest.param(col("integer", int_bits=16), 32767, 32767, id="integer-smallint-max"),
    pytest.param(col("integer", int_bits=16), -32768, -32768, id="integer-smallint-min"),
    pytest.param(col("integer", int_bits=32), 2**31 - 1, 2**31 - 1, id="integer-int-max"),
    pytest.param(col("integer", int_bits=32), -(2**31), -(2**31), id="integer-int-min"),
    pytest.param(col("integer"), 2**63 - 1, 2**63 - 1, id="integer-default-is-bigint-max"),
    pytest.param(col("integer", int_bits=64), -(2**63), -(2**63), id="integer-bigint-min"),
    pytest.param(col("integer"), 3.0, 3, id="integer-integral-float"),
    pytest.param(col("integer"), Decimal("7.00"), 7, id="integer-integral-decimal"),
    pytest.param(col("integer"), "  42 ", 42, id="integer-str-stripped"),
    pytest.param(col("integer"), "-12", -12, id="integer-str-negative"),
    pytest.param(col("integer"), "+12", 12, id="integer-str-plus"),
    # numeric
    pytest.param(col("numeric", precision=10, scale=2), Decimal("12.34"), Decimal("12.34"),
                 id="numeric-decimal"),
    pytest.param(col("numeric", precision=10, scale=1), Decimal("1.50"), Decimal("1.5"),
                 id="numeric-trailing-zero-beyond-scale"),
    pytest.param(col("numeric", precision=10, scale=2), 5, Decimal("5.00"), id="numeric-int"),
    pytest.param(col("numeric", precision=10, scale=2), 0.1, Decimal("0.10"),
                 id="numeric-float-no-binary-noise"),
    pytest.param(col("numeric"), 0.1, Decimal("0.1"), id="numeric-unconstrained-float"),
    pytest.param(col("numeric"), 1.1 + 2.2, Decimal("3.3000000000000003"),
                 id="numeric-float-shortest-repr"),
    pytest.param(col("numeric", precision=10, scale=2), " 12.5 ", Decimal("12.50"),
                 id="numeric-str"),
    pytest.param(col("numeric", precision=10, scale=2), "1e3", Decimal("1000.00"),
                 id="numeric-str-exponent"),
    pytest.param(col("numeric", precision=10, scale=2), Decimal("99999999.99"),
                 Decimal("99999999.99"), id="numeric-max"),
    pytest.param(col("numeric", precision=10, scale=2), Decimal("-99999999.99"),
                 Decimal("-99999999.99"), id="numeric-min"),
    pytest.param(col("numeric", precision=2, scale=2), Decimal("0.99"), Decimal("0.99"),
                 id="numeric-no-integer-digits"),
    pytest.param(col("numeric", precision=2, scale=2), Decimal("0"), Decimal("0.00"),
                 id="numeric-zero-has-no-integer-digits"),
    pytest.param(col("numeric", precision=38, scale=10),
                 Decimal("1234567890123456789012345678.1234567890"),
                 Decimal("1234567890123456789012345678.1234567890"),
                 id="numeric-more-digits-than-default-context"),
    pytest.param(col("numeric", precision=5), Decimal("12345"), Decimal("12345"),
                 id="numeric-precision-only-means-scale-0"),
    pytest.param(col("numeric"), Decimal("123456789.123456789"), Decimal("123456789.123456789"),
                 id="numeric-unconstrained-decimal"),
    # float
    pytest.param(col("float"), 1.5, 1.5, id="float-float"),
    pytest.param(col("float"), 2, 2.0, id="float-int"),
    pytest.param(col("float"), Decimal("2.25"), 2.25, id="float-decimal"),
    pytest.param(col("float"), " -1e3 ", -1000.0, id="float-str"),
    # boolean
    pytest.param(col("boolean"), True, True, id="boolean-true"),
    pytest.param(col("boolean"), False, False, id="boolean-false"),
    pytest.param(col("boolean"), 1, True, id="boolean-tinyint-1"),
    pytest.param(col("boolean"), 0, False, id="boolean-tinyint-0"),
    pytest.param(col("boolean"), b"\x01", True, id="boolean-bit-1"),
    pytest.param(col("boolean"), b"\x00", False, id="boolean-bit-0"),
    *[pytest.param(col("boolean"), word, True, id=f"boolean-str-{word}")
      for word in ("true", "t", "yes", "y", "1", "on", "TRUE", " Yes ")],
    *[pytest.param(col("boolean"), word, False, id=f"boolean-str-{word}")
      for word in ("false", "f", "no", "n", "0", "off", "False", "OFF")],
    # date
    pytest.param(col("date"), date(2024, 2, 29), date(2024, 2, 29), id="date-date"),
    pytest.param(col("date"), datetime(2024, 1, 2), date(2024, 1, 2), id="date-midnight-datetime"),
    pytest.param(col("date"), "2024-02-29", date(2024, 2, 29), id="date-str"),
    pytest.param(col("date"), "2024-01-02 00:00:00", date(2024, 1, 2), id="date-midnight-str"),
    pytest.param(col("date"), b"2024-01-02", date(2024, 1, 2), id="date-bytes"),
    # timestamp
    pytest.param(col("timestamp"), datetime(2024, 1, 2, 3, 4, 5, 123456),
                 datetime(2024, 1, 2, 3, 4, 5, 123456), id="timestamp-naive-keeps-microseconds"),
    pytest.param(col("timestamp"), datetime(2024, 1, 1, 16, 30, tzinfo=UTC),
                 datetime(2024, 1, 2, 0, 30), id="timestamp-aware-to-source-zone"),
    pytest.param(col("timestamp"), datetime(2024, 1, 2, 3, 4, tzinfo=PLUS8),
                 datetime(2024, 1, 2, 3, 4), id="timestamp-aware-same-offset"),
    pytest.param(col("timestamp"), date(2024, 1, 2), datetime(2024, 1, 2), id="timestamp-date"),
    pytest.param(col("timestamp"), "2024-01-02 03:04:05", datetime(2024, 1, 2, 3, 4, 5),
                 id="timestamp-str-space"),
    pytest.param(col("timestamp"), "2024-01-02T03:04:05.123456",
                 datetime(2024, 1, 2, 3, 4, 5, 123456), id="timestamp-str-t-microseconds"),
    pytest.param(col("timestamp"), "2024-01-02 03:04:05.5", datetime(2024, 1, 2, 3, 4, 5, 500000),
                 id="timestamp-str-short-fraction"),
    pytest.param(col("timestamp"), "2024-01-02 03:04", datetime(2024, 1, 2, 3, 4),
                 id="timestamp-str-no-seconds"),
    pytest.param(col("timestamp"), "2024-01-02", datetime(2024, 1, 2), id="timestamp-str-date"),
    pytest.param(col("timestamp"), "2024-01-01T16:00:00Z", datetime(2024, 1, 2),
                 id="timestamp-str-utc"),
    # timestamptz
    pytest.param(col("timestamptz"), datetime(2024, 1, 2, 3, 4, 5, 6),
                 datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=SHANGHAI),
                 id="timestamptz-naive-attached"),
    pytest.param(col("timestamptz"), datetime(2024, 1, 2, tzinfo=UTC),
                 datetime(2024, 1, 2, tzinfo=UTC), id="timestamptz-aware-kept"),
    pytest.param(col("timestamptz"), date(2024, 1, 2), datetime(2024, 1, 2, tzinfo=SHANGHAI),
                 id="timestamptz-date"),
    pytest.param(col("timestamptz"), "2024-01-02 03:04:05",
                 datetime(2024, 1, 2, 3, 4, 5, tzinfo=SHANGHAI), id="timestamptz-str-naive"),
    pytest.param(col("timestamptz"), "2024-01-02 03:04:05+00:00",
                 datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), id="timestamptz-str-offset"),
    # time
    pytest.param(col("time"), time(8, 30), time(8, 30), id="time-time"),
    pytest.param(col("time"), timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
                 time(23, 59, 59, 999999), id="time-timedelta-max"),
    pytest.param(col("time"), timedelta(0), time(0), id="time-timedelta-zero"),
    pytest.param(col("time"), "08:30", time(8, 30), id="time-str-hh-mm"),
    pytest.param(col("time"), "8:30:15", time(8, 30, 15), id="time-str-one-digit-hour"),
    pytest.param(col("time"), "12:30:15.25", time(12, 30, 15, 250000), id="time-str-fraction"),
    # json
    pytest.param(col("json"), {"名": [1, 2.5, True, None]}, '{"名": [1, 2.5, true, null]}',
                 id="json-dict-unicode-unescaped"),
    pytest.param(col("json"), [1, "a"], '[1, "a"]', id="json-list"),
    pytest.param(col("json"), 3, "3", id="json-int"),
    pytest.param(col("json"), 2.5, "2.5", id="json-float"),
    pytest.param(col("json"), True, "true", id="json-bool"),
    pytest.param(col("json"), '{"a":1,  "b" : [ ]}', '{"a":1,  "b" : [ ]}',
                 id="json-str-kept-verbatim"),
    pytest.param(col("json"), '"text"', '"text"', id="json-str-scalar"),
    pytest.param(col("json"), b'{"a": 1}', '{"a": 1}', id="json-bytes"),
    pytest.param(col("json"), {"d": date(2024, 1, 2)}, '{"d": "2024-01-02"}',
                 id="json-yaml-date-inside"),
    pytest.param(col("json"), '"a\\\\u0000"', '"a\\\\u0000"', id="json-escaped-backslash-u0000"),
    # uuid
    pytest.param(col("uuid"), uuid.UUID(UUID_TEXT), UUID_TEXT, id="uuid-uuid"),
    pytest.param(col("uuid"), UUID_TEXT.upper(), UUID_TEXT, id="uuid-str-upper"),
    pytest.param(col("uuid"), UUID_TEXT.replace("-", ""), UUID_TEXT, id="uuid-str-hex"),
    pytest.param(col("uuid"), uuid.UUID(UUID_TEXT).bytes, UUID_TEXT, id="uuid-binary16"),
    # bytes
    pytest.param(col("bytes"), b"\x00\xff", b"\x00\xff", id="bytes-bytes"),
    pytest.param(col("bytes"), bytearray(b"\x01"), b"\x01", id="bytes-bytearray"),
    pytest.param(col("bytes"), memoryview(b"\x02"), b"\x02", id="bytes-memoryview"),
    pytest.param(col("bytes"), "é", b"\xc3\xa9", id="bytes-str-utf8"),
    # other
    pytest.param(col("other"), {1, 2}, {1, 2}, id="other-unchanged"),
]


@pytest.mark.parametrize(("column", "value", "expected"), ACCEPT)
def test_make_converter_accepts(column: ColumnInfo, value: Any, expected: Any) -> None:
    result = convert(column, value)
    assert same(result, expected), f"{result!r} != {expected!r}"


# ---------------------------------------------------------------- rejected values

REJECT = [
    # text
    pytest.param(col("text", max_length=40), "x" * 41, "too long: 41 > 40 characters",
                 id="text-too-long"),
    pytest.param(col("text", max_length=3), "年金计划", "too long: 4 > 3 characters",
                 id="text-too-long-cjk"),
    pytest.param(col("text", max_length=1), 42, "too long: 2 > 1 characters",
                 id="text-too-long-after-int"),
    pytest.param(col("text"), "a\x00b", "contains a NUL character", id="text-nul"),
    pytest.param(col("text"), b"\xff\xfe", "invalid UTF-8", id="text-bytes-invalid-utf8"),
    pytest.param(col("text"), "a\ud800", "invalid UTF-8", id="text-lone-surrogate"),
    # integer
    pytest.param(col("integer", int_bits=16), 32768, "out of range for smallint",
                 id="integer-smallint-overflow"),
    pytest.param(col("integer", int_bits=32), 2**31, "out of range for integer",
                 id="integer-int-overflow"),
    pytest.param(col("integer", int_bits=32), -(2**31) - 1, "out of range for integer",
                 id="integer-int-underflow"),
    pytest.param(col("integer", int_bits=64), 2**63, "out of range for bigint",
                 id="integer-bigint-unsigned"),
    pytest.param(col("integer"), 18446744073709551615, "out of range for bigint",
                 id="integer-default-bigint-unsigned-max"),
    pytest.param(col("integer", int_bits=32), "3000000000", "out of range for integer",
                 id="integer-str-overflow"),
    pytest.param(col("integer", int_bits=32), 1e10, "out of range for integer",
                 id="integer-float-overflow"),
    pytest.param(col("integer"), "4.2", "not an integer", id="integer-str-fraction"),
    pytest.param(col("integer"), "abc", "not an integer", id="integer-str-word"),
    pytest.param(col("integer"), "", "not an integer", id="integer-empty-str"),
    pytest.param(col("integer"), "1_000", "not an integer", id="integer-str-underscore"),
    pytest.param(col("integer"), "１２", "not an integer", id="integer-str-fullwidth-digits"),
    pytest.param(col("integer"), 2.5, "not an integer", id="integer-fractional-float"),
    pytest.param(col("integer"), float("nan"), "not an integer", id="integer-nan"),
    pytest.param(col("integer"), Decimal("2.5"), "not an integer", id="integer-fractional-decimal"),
    pytest.param(col("integer"), Decimal("Infinity"), "not an integer", id="integer-decimal-inf"),
    pytest.param(col("integer"), True, "not an integer", id="integer-bool"),
    pytest.param(col("integer"), b"\x01", "not an integer", id="integer-bytes"),
    # numeric
    pytest.param(col("numeric", precision=10, scale=2), Decimal("1.505"),
                 "more than 2 decimal places", id="numeric-too-many-places"),
    pytest.param(col("numeric", precision=10, scale=1), Decimal("1.55"),
                 "more than 1 decimal place", id="numeric-too-many-places-singular"),
    pytest.param(col("numeric", precision=5, scale=0), "1.5", "more than 0 decimal places",
                 id="numeric-scale-0"),
    pytest.param(col("numeric", precision=10, scale=2), 0.125, "more than 2 decimal places",
                 id="numeric-float-too-many-places"),
    pytest.param(col("numeric", precision=10, scale=2), Decimal("100000000"),
                 "out of range for numeric(10,2)", id="numeric-too-many-integer-digits"),
    pytest.param(col("numeric", precision=10, scale=2), -100000000,
                 "out of range for numeric(10,2)", id="numeric-int-out-of-range"),
    pytest.param(col("numeric", precision=2, scale=2), Decimal("1.00"),
                 "out of range for numeric(2,2)", id="numeric-no-room-for-integer-digits"),
    pytest.param(col("numeric", precision=5), 123456, "out of range for numeric(5,0)",
                 id="numeric-precision-only"),
    pytest.param(col("numeric"), Decimal("NaN"), "not a finite number", id="numeric-decimal-nan"),
    pytest.param(col("numeric"), Decimal("-Infinity"), "not a finite number",
                 id="numeric-decimal-inf"),
    pytest.param(col("numeric"), float("nan"), "not a finite number", id="numeric-float-nan"),
    pytest.param(col("numeric"), float("inf"), "not a finite number", id="numeric-float-inf"),
    pytest.param(col("numeric"), "abc", "not a number", id="numeric-str-word"),
    pytest.param(col("numeric"), "NaN", "not a number", id="numeric-str-nan"),
    pytest.param(col("numeric"), "1,5", "not a number", id="numeric-str-comma"),
    pytest.param(col("numeric"), True, "not a number", id="numeric-bool"),
    # float
    pytest.param(col("float"), float("nan"), "not a finite number", id="float-nan"),
    pytest.param(col("float"), float("-inf"), "not a finite number", id="float-inf"),
    pytest.param(col("float"), Decimal("NaN"), "not a finite number", id="float-decimal-nan"),
    pytest.param(col("float"), 10**400, "out of range for double precision", id="float-huge-int"),
    pytest.param(col("float"), Decimal("1e400"), "out of range for double precision",
                 id="float-huge-decimal"),
    pytest.param(col("float"), "1e400", "out of range for double precision",
                 id="float-huge-str"),
    pytest.param(col("float"), "inf", "not a number", id="float-str-inf"),
    pytest.param(col("float"), "x", "not a number", id="float-str-word"),
    pytest.param(col("float"), False, "not a number", id="float-bool"),
    # boolean
    pytest.param(col("boolean"), 2, "only 0/1 are valid for boolean", id="boolean-int-2"),
    pytest.param(col("boolean"), -1, "only 0/1 are valid for boolean", id="boolean-int-minus-1"),
    pytest.param(col("boolean"), "maybe", "not a boolean", id="boolean-str-word"),
    pytest.param(col("boolean"), "", "not a boolean", id="boolean-empty-str"),
    pytest.param(col("boolean"), b"\x02", "not a boolean", id="boolean-bit-other"),
    pytest.param(col("boolean"), 1.0, "not a boolean", id="boolean-float"),
    # date
    pytest.param(col("date"), "0000-00-00", "zero date", id="date-zero"),
    pytest.param(col("date"), "0000-00-00 00:00:00", "zero date", id="date-zero-datetime"),
    pytest.param(col("date"), "2024-02-30", "not a date", id="date-feb-30"),
    pytest.param(col("date"), "2024-00-10", "not a date", id="date-month-0"),
    pytest.param(col("date"), "02/01/2024", "not a date", id="date-other-format"),
    pytest.param(col("date"), "20240102", "not a date", id="date-basic-format"),
    pytest.param(col("date"), "", "not a date", id="date-empty-str"),
    pytest.param(col("date"), 20240102, "not a date", id="date-int"),
    pytest.param(col("date"), datetime(2024, 1, 2, 0, 0, 1), "has a time part",
                 id="date-datetime-with-time"),
    pytest.param(col("date"), "2024-01-02 10:00:00", "has a time part", id="date-str-with-time"),
    # timestamp
    pytest.param(col("timestamp"), "0000-00-00 00:00:00", "zero date", id="timestamp-zero"),
    pytest.param(col("timestamp"), "0000-00-00", "zero date", id="timestamp-zero-date-only"),
    pytest.param(col("timestamp"), "2024-02-30 00:00:00", "not a timestamp",
                 id="timestamp-feb-30"),
    pytest.param(col("timestamp"), "2024-01-02 25:00:00", "not a timestamp",
                 id="timestamp-hour-25"),
    pytest.param(col("timestamp"), "2024-01-02 03:04:05.1234567", "not a timestamp",
                 id="timestamp-nanoseconds"),
    pytest.param(col("timestamp"), "yesterday", "not a timestamp", id="timestamp-word"),
    pytest.param(col("timestamp"), 1704164645, "not a timestamp", id="timestamp-epoch-int"),
    pytest.param(col("timestamp"), datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
                 "out of range for timestamp", id="timestamp-shift-before-year-1"),
    # timestamptz
    pytest.param(col("timestamptz"), "0000-00-00 00:00:00", "zero date", id="timestamptz-zero"),
    pytest.param(col("timestamptz"), "2024-13-01 00:00:00", "not a timestamp",
                 id="timestamptz-month-13"),
    pytest.param(col("timestamptz"), 3.5, "not a timestamp", id="timestamptz-float"),
    # time
    pytest.param(col("time"), timedelta(hours=24), "out of range for time", id="time-24h"),
    pytest.param(col("time"), timedelta(hours=-1), "out of range for time", id="time-negative"),
    pytest.param(col("time"), timedelta(hours=838), "out of range for time",
                 id="time-mysql-max"),
    pytest.param(col("time"), "25:00", "not a time", id="time-str-hour-25"),
    pytest.param(col("time"), "12:60", "not a time", id="time-str-minute-60"),
    pytest.param(col("time"), "noon", "not a time", id="time-str-word"),
    pytest.param(col("time"), 830, "not a time", id="time-int"),
    # json
    pytest.param(col("json"), "{not json}", "not valid JSON", id="json-str-invalid"),
    pytest.param(col("json"), "", "not valid JSON", id="json-empty-str"),
    pytest.param(col("json"), "NaN", "not valid JSON", id="json-str-nan"),
    pytest.param(col("json"), [1.0, float("nan")], "not valid JSON", id="json-list-nan"),
    pytest.param(col("json"), {"a": {1, 2}}, "not valid JSON", id="json-unserialisable"),
    pytest.param(col("json"), b"\xff", "invalid UTF-8", id="json-bytes-invalid-utf8"),
    pytest.param(col("json"), '"a\\u0000b"', "contains a NUL character", id="json-escaped-nul"),
    pytest.param(col("json"), {"a": "x\x00"}, "contains a NUL character", id="json-dict-nul"),
    pytest.param(col("json"), Decimal("1.5"), "not valid JSON", id="json-decimal"),
    # uuid
    pytest.param(col("uuid"), "not-a-uuid", "not a UUID", id="uuid-str-invalid"),
    pytest.param(col("uuid"), UUID_TEXT[:-1], "not a UUID", id="uuid-str-short"),
    pytest.param(col("uuid"), b"\x00" * 15, "not a UUID", id="uuid-bytes-15"),
    pytest.param(col("uuid"), 12345, "not a UUID", id="uuid-int"),
    # bytes
    pytest.param(col("bytes"), 5, "not binary data", id="bytes-int"),
    pytest.param(col("bytes"), "\udc80", "invalid UTF-8", id="bytes-str-lone-surrogate"),
]


@pytest.mark.parametrize(("column", "value", "reason"), REJECT)
def test_make_converter_rejects(column: ColumnInfo, value: Any, reason: str) -> None:
    assert reason_of(column, value) == reason


@pytest.mark.parametrize("kind", [pytest.param(k, id=k) for k in ALL_KINDS])
def test_make_converter_null_allowed_when_nullable(kind: ColumnKind) -> None:
    assert convert(col(kind, nullable=True), None) is None


@pytest.mark.parametrize("kind", [pytest.param(k, id=k) for k in ALL_KINDS])
def test_make_converter_null_rejected_when_not_null(kind: ColumnKind) -> None:
    assert reason_of(col(kind, nullable=False), None) == "NULL in NOT NULL column"


TRICKY_TEXT = [
    pytest.param("a\tb", id="tab"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\rb", id="carriage-return"),
    pytest.param("back\\slash", id="backslash"),
    pytest.param("\\N", id="copy-null-marker"),
    pytest.param("NULL", id="null-word"),
    pytest.param("", id="empty"),
    pytest.param("quo'te\"", id="quotes"),
    pytest.param("😀", id="emoji"),
    pytest.param("𠀀", id="cjk-extension-b"),
    pytest.param(" padded ", id="surrounding-spaces"),
]


@pytest.mark.parametrize("value", TRICKY_TEXT)
def test_make_converter_text_passes_tricky_text_unchanged(value: str) -> None:
    result = convert(col("text", max_length=20, nullable=False), value)
    assert result == value
    assert type(result) is str


@pytest.mark.parametrize("value", TRICKY_TEXT)
def test_make_converter_bytes_encodes_tricky_text(value: str) -> None:
    assert convert(col("bytes"), value) == value.encode("utf-8")


def test_make_converter_empty_text_is_not_null() -> None:
    assert convert(col("text", nullable=False), "") == ""


def test_make_converter_json_str_is_the_same_object() -> None:
    doc = '{"k": "v"}'
    assert convert(col("json"), doc) is doc


def test_make_converter_timestamptz_keeps_source_zone_object() -> None:
    result = convert(col("timestamptz"), datetime(2024, 7, 1, 12))
    assert result.tzinfo is SHANGHAI
    assert result.utcoffset() == timedelta(hours=8)


def test_make_converter_uses_given_source_zone() -> None:
    conv = make_converter(col("timestamp"), ZoneInfo("UTC"))
    assert conv(datetime(2024, 1, 2, 8, 0, tzinfo=PLUS8)) == datetime(2024, 1, 2, 0, 0)


def test_make_converter_unknown_kind_raises_value_error() -> None:
    bogus = ColumnInfo(name="c", kind="interval")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown column kind 'interval'"):
        make_converter(bogus, SHANGHAI)


def test_reject_value_carries_reason() -> None:
    err = RejectValue("zero date")
    assert err.reason == "zero date"
    assert str(err) == "zero date"


# ---------------------------------------------------------------- shorten


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        pytest.param("abc", 80, "abc", id="short"),
        pytest.param("x" * 80, 80, "x" * 80, id="exactly-limit"),
        pytest.param("x" * 81, 80, "x" * 79 + "…", id="one-over"),
        pytest.param("年" * 100, 10, "年" * 9 + "…", id="cjk"),
        pytest.param(None, 80, "None", id="none"),
        pytest.param(12345, 3, "12…", id="int"),
        pytest.param(b"\x00", 80, "b'\\x00'", id="bytes"),
    ],
)
def test_shorten_cuts_to_limit(value: Any, limit: int, expected: str) -> None:
    result = shorten(value, limit)
    assert result == expected
    assert len(result) <= limit


def test_shorten_default_limit_is_80() -> None:
    assert len(shorten("y" * 500)) == 80


# ---------------------------------------------------------------- RowConverter

COLUMNS = [
    ColumnInfo("code", "text", nullable=False, max_length=5),
    ColumnInfo("name", "text", max_length=10),
    ColumnInfo("amount", "numeric", precision=6, scale=2),
    ColumnInfo("updated_at", "timestamp"),
]


def converter(**kw: Any) -> RowConverter:
    return RowConverter(COLUMNS, kw.pop("key", ["code"]), SHANGHAI, **kw)


def test_row_converter_converts_every_column() -> None:
    rc = converter()
    out = rc.convert_batch([("A1", "n", 1, "2024-01-02 03:04:05.000001")])
    assert out == [("A1", "n", Decimal("1.00"), datetime(2024, 1, 2, 3, 4, 5, 1))]
    assert rc.rejected == 0
    assert rc.rejects == []


def test_row_converter_drops_extra_trailing_values() -> None:
    cursor = datetime(2024, 1, 2)
    out = converter().convert_batch([("A1", "n", 1, None, cursor), ("A2", None, None, None, None)])
    assert out == [("A1", "n", Decimal("1.00"), None), ("A2", None, None, None)]
    assert all(len(row) == 4 for row in out)


def test_row_converter_drops_extra_values_on_the_row_by_row_path() -> None:
    rc = converter()
    out = rc.convert_batch([("A1", "n", 1, None, "cursor"), ("TOOLONG", "n", 1, None, "cursor")])
    assert out == [("A1", "n", Decimal("1.00"), None)]
    assert rc.rejected == 1


def test_row_converter_keeps_valid_rows_in_order() -> None:
    batch = [
        ("A1", "a", 1, None),
        ("A2", "b", "x", None),
        ("A3", "c", 3, None),
        ("A4", "d", 4, "0000-00-00 00:00:00"),
        ("A5", "e", 5, None),
    ]
    rc = converter()
    out = rc.convert_batch(batch)
    assert [row[0] for row in out] == ["A1", "A3", "A5"]
    assert rc.rejected == 2
    assert rc.rejects == [
        Reject(key={"code": "A2"}, column="amount", value="x", reason="not a number"),
        Reject(key={"code": "A4"}, column="updated_at", value="0000-00-00 00:00:00",
               reason="zero date"),
    ]


def test_row_converter_lists_one_entry_per_row_first_bad_column() -> None:
    rc = converter()
    out = rc.convert_batch([("A1", "x" * 11, Decimal("1.234"), "never")])
    assert out == []
    assert rc.rejected == 1
    assert rc.rejects == [
        Reject(key={"code": "A1"}, column="name", value="x" * 11,
               reason="too long: 11 > 10 characters"),
    ]


def test_row_converter_counts_all_but_lists_max_listed() -> None:
    rc = converter()
    bad = [(f"B{i}", None, "bad", None) for i in range(25)]
    assert rc.convert_batch(bad) == []
    assert rc.rejected == 25
    assert len(rc.rejects) == 20
    assert rc.rejects[0].key == {"code": "B0"}
    assert rc.rejects[-1].key == {"code": "B19"}


def test_row_converter_accumulates_across_batches() -> None:
    rc = converter(max_listed=3)
    rc.convert_batch([("A1", None, "bad", None), ("A2", None, 1, None)])
    rc.convert_batch([(f"B{i}", None, "bad", None) for i in range(4)])
    assert rc.rejected == 5
    assert [r.key["code"] for r in rc.rejects] == ["A1", "B0", "B1"]


def test_row_converter_reject_shortens_value() -> None:
    rc = converter()
    rc.convert_batch([("A1", "y" * 200, None, None)])
    assert rc.rejects[0].value == "y" * 79 + "…"
    assert rc.rejects[0].reason == "too long: 200 > 10 characters"


def test_row_converter_reject_of_null_key() -> None:
    rc = converter()
    rc.convert_batch([(None, "n", 1, None)])
    assert rc.rejects == [
        Reject(key={"code": None}, column="code", value="NULL", reason="NULL in NOT NULL column"),
    ]


def test_row_converter_key_values_are_json_safe() -> None:
    columns = [
        ColumnInfo("day", "date"),
        ColumnInfo("seq", "integer"),
        ColumnInfo("rate", "numeric", precision=4, scale=2),
        ColumnInfo("flag", "boolean"),
        ColumnInfo("v", "integer", int_bits=16),
    ]
    rc = RowConverter(columns, ["day", "seq", "rate", "flag"], SHANGHAI)
    rc.convert_batch([(date(2024, 1, 2), 7, Decimal("1.50"), True, 10**6)])
    assert rc.rejects == [
        Reject(key={"day": "2024-01-02", "seq": 7, "rate": "1.50", "flag": True}, column="v",
               value="1000000", reason="out of range for smallint"),
    ]
    assert rc.rejects[0].as_dict()["key"] == {"day": "2024-01-02", "seq": 7, "rate": "1.50",
                                              "flag": True}


def test_row_converter_nan_key_is_shown_as_text() -> None:
    columns = [ColumnInfo("k", "float"), ColumnInfo("v", "integer")]
    rc = RowConverter(columns, ["k"], SHANGHAI)
    rc.convert_batch([(1.5, "x"), (float("nan"), "y")])
    assert [r.key for r in rc.rejects] == [{"k": 1.5}, {"k": "nan"}]


def test_row_converter_empty_batch() -> None:
    rc = converter()
    assert rc.convert_batch([]) == []
    assert rc.rejected == 0


def test_row_converter_short_row_raises_value_error() -> None:
    with pytest.raises(ValueError, match="a row holds 3 values, expected at least 4"):
        converter().convert_batch([("A1", "n", 1, None), ("A2", "n", 1)])


def test_row_converter_unknown_key_column_raises_value_error() -> None:
    with pytest.raises(ValueError, match="not among the columns"):
        converter(key=["nope"])


def test_row_converter_returns_tuples() -> None:
    out = converter().convert_batch([["A1", "n", 1, None]])  # type: ignore[list-item]
    assert out == [("A1", "n", Decimal("1.00"), None)]
    assert type(out[0]) is tuple


def test_row_converter_large_batch_with_one_bad_row() -> None:
    batch: list[tuple[Any, ...]] = [
        (f"{i:05d}", "n", i % 100, datetime(2024, 1, 1, 0, 0, 0, i)) for i in range(5000)
    ]
    batch[4321] = ("04321", "n", "oops", None)
    rc = converter()
    out = rc.convert_batch(batch)
    assert len(out) == 4999
    assert out[4321][0] == "04322"
    assert out[-1] == ("04999", "n", Decimal("99.00"), datetime(2024, 1, 1, 0, 0, 0, 4999))
    assert rc.rejects == [Reject(key={"code": "04321"}, column="amount", value="oops",
                                 reason="not a number")]


# ---------------------------------------------------------------- issue 8: no silent loss


def test_row_converter_keeps_the_key_of_every_rejected_row() -> None:
    """Every rejected row's key (beyond the 20 listed), in the target's terms: a
    delete_insert must keep their target rows (DESIGN 4.5)."""
    rc = converter(max_listed=2)
    bad = [(f"K{i}", "x" * 11, 1, None) for i in range(5)]
    rc.convert_batch([*bad, ("OK", "n", 1, None), (None, "n", 1, None), ("TOOLONG", "n", 1, None)])
    assert rc.rejected == 7 and len(rc.rejects) == 2
    # a NULL or too long key matches no target row: nothing to keep
    assert rc.rejected_keys == [(f"K{i}",) for i in range(5)]


def test_row_converter_reports_the_earliest_rejected_cursor() -> None:
    rc = converter(cursor=True)
    rc.convert_batch([("A", "x" * 11, 1, None, datetime(2024, 3, 1)),
                      ("B", "x" * 11, 1, None, datetime(2024, 2, 1, 10)),
                      ("C", "ok", 1, None, datetime(2024, 1, 1)),
                      ("D", "x" * 11, 1, None, None)])  # a NULL cursor is never read again
    assert rc.reject_low == datetime(2024, 2, 1, 10)
    assert converter().reject_low is None


def test_reject_of_a_null_shows_null() -> None:
    rc2 = RowConverter([ColumnInfo("code", "text", nullable=False),
                        ColumnInfo("n", "integer", nullable=False)], ["code"], SHANGHAI)
    rc2.convert_batch([("A", None)])
    assert [r.value for r in rc2.rejects] == ["NULL"]
