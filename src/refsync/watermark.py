"""The incremental cursor's watermark (DESIGN 4.4): pure functions, no I/O.

A watermark is a cursor value in the source column's own terms (a naive DATETIME stays
naive, microseconds kept), stored as text. A run reads from `window`; the next watermark is
the largest cursor read (`max_cursor`), held back by `next_mark` so that no row can be
skipped:

- at the source's clock when the read's snapshot began (`clock_cap`): a future-dated row
  is read again until its time comes;
- at the start of the oldest transaction that was writing on the source when the snapshot
  began, less `TRX_START_SLACK` (`open_write_cap`): its rows, stamped with that
  transaction's clock but committed after the snapshot, are read by a later run. When the
  source cannot tell (MySQL without the PROCESS privilege) the snapshot's clock less
  `UNSEEN_WRITES_LOOKBACK` stands in for it;
- at the earliest rejected row: it is read again until fixed.

Rows stamped exactly at the watermark are read again by the next run (`>=`): a writer
that stamps many rows with one value it chose itself (not the statement's clock), in
several transactions, may commit some after the snapshot, and only the inclusive bound
finds them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

__all__ = [
    "OpenWrites",
    "TRX_START_SLACK",
    "UNSEEN_WRITES_LOOKBACK",
    "clock_cap",
    "cursor_before",
    "is_cursor_value",
    "max_cursor",
    "next_mark",
    "open_write_cap",
    "watermark_to_text",
    "window",
]

# A statement takes its clock (NOW()) just before InnoDB starts its transaction, and
# `innodb_trx.trx_started` has whole seconds: one second earlier is before either.
TRX_START_SLACK = timedelta(seconds=1)
# Without a view of the open transactions, assume none has been writing longer than this.
UNSEEN_WRITES_LOOKBACK = timedelta(minutes=5)

_ZERO_DATE_PREFIX = "0000-00-00"


class OpenWrites(NamedTuple):
    """What a source saw of the transactions writing on it as its snapshot began."""

    visible: bool  # False: the source would not show them (MySQL without PROCESS)
    oldest_utc: datetime | None  # the oldest one's start (UTC); None: none was writing


def window(stored: str | None, parse: Callable[[str], Any], lookback: timedelta, *,
           full: bool) -> tuple[Any, Any]:
    """(lower bound to read from, or None for a full read; the stored watermark parsed).
    No stored watermark: a full read. `full`: a full read that still knows the mark."""
    if stored is None:
        return None, None
    mark = parse(stored)
    if full:
        return None, mark
    return (mark - lookback if lookback else mark), mark


def watermark_to_text(value: Any) -> str:
    """The cursor value as ISO-8601 in its own terms: naive stays naive, aware keeps its
    offset, microseconds only when there are some; numbers and strings as they are."""
    if isinstance(value, date | time):  # datetime is a date
        return value.isoformat()
    return str(value)


def is_cursor_value(v: Any) -> bool:
    """A cursor value an incremental read can see: not NULL, not a zero date."""
    return v is not None and not (isinstance(v, str) and v.startswith(_ZERO_DATE_PREFIX))


def _as_datetime(v: Any) -> Any:
    """A plain date as midnight of that day, so dates and datetimes compare as one type
    (a SQLite DATETIME column may hold both `2024-01-01` and `2024-01-02 10:00:00`)."""
    if isinstance(v, date) and not isinstance(v, datetime):
        return datetime(v.year, v.month, v.day)
    return v


def cursor_before(a: Any, b: Any) -> bool:
    """`a < b` for two cursor values, a date next to a datetime counting as its midnight."""
    if type(a) is not type(b):
        a, b = _as_datetime(a), _as_datetime(b)
    return bool(a < b)


def max_cursor(current: Any, batch_values: Iterable[Any]) -> Any:
    """The largest of `current` and `batch_values`, ignoring NULLs and zero dates; a date
    next to a datetime counts as its midnight (and the result is then a datetime)."""
    best = current
    for v in batch_values:
        if not is_cursor_value(v):
            continue
        if best is None:
            best = v
        elif type(v) is type(best):
            if v > best:
                best = v
        else:
            v, best = _as_datetime(v), _as_datetime(best)
            if v > best:
                best = v
    return best


def clock_cap(like: Any, clock_utc: datetime, zone: ZoneInfo) -> Any:
    """The source's clock (an aware UTC time) in the terms of cursor value `like`, in whole
    seconds (earlier is the safe side): a naive datetime is wall time in `zone` (the table's
    source_timezone), an aware one stays aware, a date is that day in `zone`. None for
    cursors that are not dates: they get no clock cap."""
    if isinstance(like, datetime):
        if like.tzinfo is None:
            return clock_utc.astimezone(zone).replace(tzinfo=None, microsecond=0)
        return clock_utc.replace(microsecond=0)
    if isinstance(like, date):
        return clock_utc.astimezone(zone).date()
    return None


def open_write_cap(snapshot_utc: datetime, writes: OpenWrites) -> datetime | None:
    """The earliest clock (UTC) a row committed after the snapshot may carry, from the
    transactions writing when it began: the oldest one's start less `TRX_START_SLACK`;
    None when none was writing. Not visible (the source would not show them): the
    snapshot's clock less `UNSEEN_WRITES_LOOKBACK`."""
    if not writes.visible:
        return snapshot_utc - UNSEEN_WRITES_LOOKBACK
    if writes.oldest_utc is None:
        return None
    return min(writes.oldest_utc - TRX_START_SLACK, snapshot_utc)


def next_mark(largest: Any, *, snapshot_utc: datetime, open_write_utc: datetime | None,
              reject_low: Any, zone: ZoneInfo) -> tuple[Any, list[str]]:
    """(the new watermark, warnings saying why it was held back). The largest cursor read,
    never later than the source's clock at the snapshot, nor than `open_write_utc` (see
    `open_write_cap`; holding there is routine, so it says nothing), nor past the earliest
    rejected row. None when nothing with a cursor was read."""
    if largest is None:
        return None, []
    warnings: list[str] = []
    mark = largest
    cap = clock_cap(largest, snapshot_utc, zone)
    if cap is not None and cursor_before(cap, mark):
        warnings.append(f"watermark held at the source's clock {watermark_to_text(cap)}: rows "
                        f"dated up to {watermark_to_text(mark)} are in the future and are "
                        "read again until their time comes")
        mark = cap
    if open_write_utc is not None:
        cap = clock_cap(largest, open_write_utc, zone)
        if cap is not None and cursor_before(cap, mark):
            mark = cap
    if reject_low is not None and cursor_before(reject_low, mark):
        mark = reject_low
        warnings.append(f"watermark held at {watermark_to_text(mark)}, the earliest rejected "
                        "row: rejected rows are read again until fixed")
    return mark, warnings
