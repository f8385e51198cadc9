"""Unit tests for refsync.retry.until_done: the bounded loop that records pending failures."""

from __future__ import annotations

from refsync.retry import until_done


def test_until_done_stops_at_the_first_success_after_the_backoff() -> None:
    results = iter([False, True, True])
    slept: list[float] = []
    assert until_done(lambda: next(results), tries=3, backoff=2.0, sleep=slept.append) is True
    assert slept == [2.0]


def test_until_done_gives_up_after_its_tries_waiting_more_each_time() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def step() -> bool:
        calls.append(1)
        return False

    assert until_done(step, tries=3, backoff=2.0, sleep=slept.append) is False
    assert len(calls) == 3
    assert slept == [2.0, 4.0]
