from __future__ import annotations

import threading
from collections.abc import Generator

import pytest

from refsync.prefetch import prefetch


def _numbers(n: int, log: list[str], fail_at: int | None = None) -> Generator[int, None, None]:
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"boom at {i}")
            yield i
    finally:
        log.append(f"closed in {threading.current_thread().name}")


def test_prefetch_yields_everything_in_order_and_closes_the_source() -> None:
    log: list[str] = []
    assert list(prefetch(_numbers(50, log), depth=2)) == list(range(50))
    assert log == ["closed in refsync-prefetch"]


def test_prefetch_raises_the_workers_exception_here() -> None:
    log: list[str] = []
    got: list[int] = []
    with pytest.raises(ValueError, match="boom at 7"):
        for i in prefetch(_numbers(50, log, fail_at=7)):
            got.append(i)
    assert got == list(range(7)) and log == ["closed in refsync-prefetch"]


def test_prefetch_stopping_early_stops_and_closes_the_worker() -> None:
    log: list[str] = []
    items = prefetch(_numbers(10_000, log), depth=2)
    assert next(items) == 0
    items.close()  # as a `for` loop left by an exception does
    assert log == ["closed in refsync-prefetch"]
    assert not any(t.name == "refsync-prefetch" for t in threading.enumerate())
