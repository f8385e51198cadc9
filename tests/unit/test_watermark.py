"""Unit tests for refsync.watermark: window, max of cursors, caps, reject floor, text form."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from refsync.watermark import (
    TRX_START_SLACK,
    UNSEEN_WRITES_LOOKBACK,
    OpenWrites,
    clock_cap,
    cursor_before,
    max_cursor,
    next_mark,
    open_write_cap,
    watermark_to_text,
    window,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
PLUS8 = timezone(timedelta(hours=8))

# ---------------------------------------------------------------- window


def test_window_without_a_stored_mark_is_a_full_read() -> None:
    assert window(None, datetime.fromisoformat, timedelta(hours=1), full=False) == (None, None)


def test_window_reads_from_the_stored_mark_less_the_lookback() -> None:
    mark = datetime(2024, 5, 1, 10)
    assert window("2024-05-01T10:00:00", datetime.fromisoformat, timedelta(0),
                  full=False) == (mark, mark)
    assert window("2024-05-01T10:00:00", datetime.fromisoformat, timedelta(minutes=90),
                  full=False) == (datetime(2024, 5, 1, 8, 30), mark)


def test_window_full_reads_everything_but_keeps_the_mark() -> None:
    assert window("7", int, timedelta(0), full=True) == (None, 7)


# ---------------------------------------------------------------- text form and max

ROUND_TRIPS = [
    pytest.param(datetime(2026, 11, 27, 18, 3, 11), "2026-11-27T18:03:11", id="naive-datetime"),
    pytest.param(datetime(2026, 11, 27, 18, 3, 11, 123456), "2026-11-27T18:03:11.123456",
                 id="naive-microseconds"),
    pytest.param(datetime(2026, 11, 27, 18, 3, 11, 5), "2026-11-27T18:03:11.000005",
                 id="naive-small-microseconds"),
    pytest.param(datetime(2026, 11, 27, 18, 3, 11, 1000, tzinfo=PLUS8),
                 "2026-11-27T18:03:11.001000+08:00", id="aware-keeps-offset"),
    pytest.param(date(2026, 11, 27), "2026-11-27", id="date"),
    pytest.param(12345, "12345", id="int"),
    pytest.param(20240102, "20240102", id="int-that-looks-like-a-date"),
    pytest.param(Decimal("12.50"), "12.50", id="decimal"),
    pytest.param("v2024.1-rc", "v2024.1-rc", id="str"),
]


@pytest.mark.parametrize(("value", "text"), ROUND_TRIPS)
def test_watermark_to_text_is_iso(value: Any, text: str) -> None:
    assert watermark_to_text(value) == text


@pytest.mark.parametrize(
    ("current", "values", "expected"),
    [
        pytest.param(None, [], None, id="nothing"),
        pytest.param(None, [None, None], None, id="only-nulls"),
        pytest.param(5, [], 5, id="empty-batch-keeps-current"),
        pytest.param(None, [3, None, 7, 5], 7, id="ignores-null"),
        pytest.param(10, [3, 7], 10, id="current-larger"),
        pytest.param(
            datetime(2024, 1, 1, 0, 0, 0, 1),
            [datetime(2024, 1, 1, 0, 0, 0, 2), datetime(2024, 1, 1)],
            datetime(2024, 1, 1, 0, 0, 0, 2),
            id="microseconds-count",
        ),
        pytest.param(
            None, ["2024-01-02 00:00:00", "0000-00-00 00:00:00", "0000-00-00"],
            "2024-01-02 00:00:00", id="ignores-zero-dates",
        ),
        pytest.param(None, ["0000-00-00 00:00:00"], None, id="only-zero-dates"),
    ],
)
def test_max_cursor_returns_largest(current: Any, values: list[Any], expected: Any) -> None:
    assert max_cursor(current, values) == expected


def test_max_cursor_accepts_a_generator() -> None:
    assert max_cursor(None, (row[-1] for row in [(1, 4), (2, 9), (3, None)])) == 9


def test_max_cursor_compares_dates_and_datetimes_as_one_type() -> None:
    """A SQLite DATETIME column holding `2024-01-01` and `2024-01-02 10:00:00`."""
    assert max_cursor(None, [date(2024, 1, 1), datetime(2024, 1, 2, 10)]) == datetime(
        2024, 1, 2, 10)
    assert max_cursor(datetime(2024, 1, 2, 10), [date(2024, 1, 3)]) == datetime(2024, 1, 3)
    assert max_cursor(date(2024, 1, 3), [datetime(2024, 1, 2, 10)]) == datetime(2024, 1, 3)
    assert cursor_before(date(2024, 1, 1), datetime(2024, 1, 1, 0, 0, 1))
    assert not cursor_before(datetime(2024, 1, 1), date(2024, 1, 1))


def test_clock_cap_is_the_clock_in_the_cursor_terms() -> None:
    clock = datetime(2024, 5, 1, 2, 3, 4, 567890, tzinfo=UTC)
    # a naive DATETIME is wall time in source_timezone, whole seconds
    assert clock_cap(datetime(2099, 1, 1), clock, SHANGHAI) == datetime(2024, 5, 1, 10, 3, 4)
    # an aware cursor (MySQL TIMESTAMP read as UTC) stays aware
    assert clock_cap(datetime(2099, 1, 1, tzinfo=UTC), clock, SHANGHAI) == datetime(
        2024, 5, 1, 2, 3, 4, tzinfo=UTC)
    assert clock_cap(date(2099, 1, 1), datetime(2024, 5, 1, 20, tzinfo=UTC),
                     SHANGHAI) == date(2024, 5, 2)
    assert clock_cap(20990101, clock, SHANGHAI) is None  # not a date: no clock cap


# ---------------------------------------------------------------- open writes

SNAPSHOT = datetime(2024, 5, 1, 2, 3, 4, 567890, tzinfo=UTC)


def test_open_write_cap_is_the_oldest_write_start_less_the_slack() -> None:
    oldest = datetime(2024, 5, 1, 1, 0, 0, tzinfo=UTC)
    assert open_write_cap(SNAPSHOT, OpenWrites(True, oldest)) == oldest - TRX_START_SLACK
    assert TRX_START_SLACK == timedelta(seconds=1)


def test_open_write_cap_is_none_when_nothing_is_writing() -> None:
    assert open_write_cap(SNAPSHOT, OpenWrites(True, None)) is None


def test_open_write_cap_never_passes_the_snapshot() -> None:
    """A write that began after the clock was read (the server's clock moved back)."""
    later = SNAPSHOT + timedelta(seconds=30)
    assert open_write_cap(SNAPSHOT, OpenWrites(True, later)) == SNAPSHOT


def test_open_write_cap_unseen_writes_fall_back_to_five_minutes() -> None:
    assert UNSEEN_WRITES_LOOKBACK == timedelta(minutes=5)
    assert open_write_cap(SNAPSHOT, OpenWrites(False, None)) == SNAPSHOT - timedelta(minutes=5)


# ---------------------------------------------------------------- next mark


def mark_of(largest: Any, *, open_write_utc: datetime | None = None, reject_low: Any = None,
            ) -> tuple[Any, list[str]]:
    return next_mark(largest, snapshot_utc=SNAPSHOT, open_write_utc=open_write_utc,
                     reject_low=reject_low, zone=SHANGHAI)


def test_next_mark_is_the_largest_read_when_nothing_holds_it() -> None:
    largest = datetime(2024, 5, 1, 9, 0, 0, 123456)  # Shanghai wall time, before the clock
    assert mark_of(largest) == (largest, [])
    assert mark_of(largest, open_write_utc=datetime(2024, 5, 1, 1, 0, 1, tzinfo=UTC)) == (
        largest, [])
    assert mark_of(None) == (None, [])


def test_next_mark_held_at_the_oldest_open_write_in_the_cursor_terms() -> None:
    """Session A stamped id 7 at 09:59:59.5 (Shanghai) and has not committed; session B's
    id 8 at 10:00:01.2 was read. The mark stays at or before A's stamp, so the next run
    (>= mark) reads id 7 once A commits; holding for an open write is routine: no warning."""
    a_started = datetime(2024, 5, 1, 1, 59, 59, tzinfo=UTC)  # trx_started, whole seconds
    cap = open_write_cap(SNAPSHOT, OpenWrites(True, a_started))
    mark, warnings = mark_of(datetime(2024, 5, 1, 10, 0, 1, 200000), open_write_utc=cap)
    assert mark == datetime(2024, 5, 1, 9, 59, 58)
    assert not cursor_before(datetime(2024, 5, 1, 9, 59, 59, 500000), mark)
    assert warnings == []


def test_next_mark_open_write_cap_for_aware_and_date_cursors() -> None:
    cap = datetime(2024, 4, 30, 16, 30, 0, 250000, tzinfo=UTC)  # 2024-05-01 00:30 Shanghai
    assert mark_of(datetime(2024, 5, 1, 2, tzinfo=UTC), open_write_utc=cap)[0] == datetime(
        2024, 4, 30, 16, 30, tzinfo=UTC)
    assert mark_of(date(2024, 5, 1), open_write_utc=cap)[0] == date(2024, 5, 1)
    assert mark_of(date(2024, 5, 2), open_write_utc=cap)[0] == date(2024, 5, 1)
    assert mark_of(42, open_write_utc=cap)[0] == 42  # not a date: no clock to compare


def test_next_mark_held_at_the_clock_warns() -> None:
    mark, warnings = mark_of(datetime(2099, 1, 1))
    assert mark == datetime(2024, 5, 1, 10, 3, 4)
    assert warnings == ["watermark held at the source's clock 2024-05-01T10:03:04: rows dated "
                        "up to 2099-01-01T00:00:00 are in the future and are read again "
                        "until their time comes"]


def test_next_mark_never_passes_the_earliest_rejected_row() -> None:
    mark, warnings = mark_of(datetime(2024, 5, 1, 9), reject_low=datetime(2024, 5, 1, 8, 0, 0, 5))
    assert mark == datetime(2024, 5, 1, 8, 0, 0, 5)
    assert warnings == ["watermark held at 2024-05-01T08:00:00.000005, the earliest rejected "
                        "row: rejected rows are read again until fixed"]


def test_next_mark_takes_the_lowest_of_every_cap() -> None:
    mark, warnings = mark_of(datetime(2099, 1, 1),
                             open_write_utc=datetime(2024, 5, 1, 0, 0, 0, tzinfo=UTC),
                             reject_low=datetime(2024, 5, 1, 9))
    assert mark == datetime(2024, 5, 1, 8)  # the open write, 08:00 Shanghai
    assert len(warnings) == 1 and "the source's clock" in warnings[0]
