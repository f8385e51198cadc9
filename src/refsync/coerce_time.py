"""Coercions for date, timestamp, timestamptz and time columns (coerce.py has the others): a
zero date, an impossible date or a time out of PostgreSQL's range is rejected with a reason,
never changed. Parsing is where a date proves real: a Python ``date`` always is."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from refsync.coerce import decode_utf8
from refsync.model import ColumnInfo
from refsync.reject import (
    HAS_TIME_PART,
    NOT_A_DATE,
    NOT_A_TIME,
    NOT_A_TIMESTAMP,
    TIME_RANGE,
    TIMESTAMP_RANGE,
    ZERO_DATE,
    Converter,
    RejectValue,
)

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TS_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?"
    r"(?:Z|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?", re.ASCII)
_ZERO_DATE_PREFIX = "0000-00-00"
_DAY_US = 86_400_000_000


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


def coerce_date(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    def from_datetime(d: datetime) -> date:
        if d.hour or d.minute or d.second or d.microsecond:
            raise RejectValue(HAS_TIME_PART)
        return d.date()

    def coerce(v: Any) -> date:
        if isinstance(v, datetime):
            return from_datetime(v)
        if isinstance(v, date):
            return v
        if isinstance(v, bytes | bytearray | memoryview):
            v = decode_utf8(v)
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

    return coerce


def _coerce_datetime(finish: Callable[[datetime], datetime]) -> Converter:
    """A datetime from a datetime, a date (its midnight) or ISO text, made what the column
    holds by `finish`."""

    def coerce(v: Any) -> datetime:
        if isinstance(v, datetime):
            return finish(v)
        if isinstance(v, date):
            return finish(datetime(v.year, v.month, v.day))
        if isinstance(v, bytes | bytearray | memoryview):
            v = decode_utf8(v)
        if isinstance(v, str):
            return finish(_parse_timestamp(v))
        raise RejectValue(NOT_A_TIMESTAMP)

    return coerce


def coerce_timestamp(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    """timestamp without time zone: naive, in the source's zone."""

    def naive(d: datetime) -> datetime:
        if d.tzinfo is None:
            return d
        try:
            return d.astimezone(tz).replace(tzinfo=None)
        except OverflowError:
            raise RejectValue(TIMESTAMP_RANGE) from None

    return _coerce_datetime(naive)


def coerce_timestamptz(col: ColumnInfo, tz: ZoneInfo) -> Converter:
    """timestamp with time zone: naive source values are wall-clock times in the source zone."""
    return _coerce_datetime(lambda d: d if d.tzinfo is not None else wall_time_in(d, tz))


def wall_time_in(d: datetime, tz: ZoneInfo) -> datetime:
    """A naive wall-clock time in `tz`, read as PostgreSQL reads it (so the row path and a
    COPY under the session TimeZone store the same instant): a time the clock passed twice
    (autumn) takes the later, standard-time offset; a time it skipped (spring) takes the
    offset in force before the change. Both are the smaller of the two offsets."""
    first = d.replace(tzinfo=tz, fold=0)
    second = d.replace(tzinfo=tz, fold=1)
    a, b = first.utcoffset(), second.utcoffset()
    return second if a is not None and b is not None and b < a else first


def coerce_time(col: ColumnInfo, tz: ZoneInfo) -> Converter:

    def coerce(v: Any) -> time:
        if isinstance(v, timedelta):  # MySQL TIME via PyMySQL
            us = (v.days * 86_400 + v.seconds) * 1_000_000 + v.microseconds
            if not 0 <= us < _DAY_US:
                raise RejectValue(TIME_RANGE)
            s, micro = divmod(us, 1_000_000)
            m, sec = divmod(s, 60)
            h, mi = divmod(m, 60)
            return time(h, mi, sec, micro)
        if isinstance(v, bytes | bytearray | memoryview):
            v = decode_utf8(v)
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

    return coerce


