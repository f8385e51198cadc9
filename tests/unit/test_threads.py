"""threads.Session: a connection's whole life in one thread; every wait of its caller bounded."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager

import pytest

from refsync import interrupts
from refsync.errors import DeadlinePassed
from refsync.threads import ReadAbandoned, Session, SessionEnded


class Opened:
    """Stands for a connection: records which thread opened, used and closed it."""

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.closed_with: list[str] = []

    def numbers(self, n: int, fail_at: int | None = None) -> Generator[int, None, None]:
        for i in range(n):
            self.threads.add(threading.current_thread().name)
            if i == fail_at:
                raise ValueError(f"boom at {i}")
            yield i


@contextmanager
def opening(opened: Opened) -> Iterator[Opened]:
    opened.threads.add(threading.current_thread().name)
    try:
        yield opened
    except BaseException as exc:
        opened.closed_with.append(type(exc).__name__)
        raise
    else:
        opened.closed_with.append("clean")


def test_a_session_opens_uses_and_closes_its_connection_in_one_thread() -> None:
    opened = Opened()
    with Session(lambda: opening(opened), "s-test") as session:
        assert interrupts.wait(session.call(lambda o: o.numbers(3) and 7)) == 7
        assert list(session.stream(lambda o: o.numbers(50))) == list(range(50))
    assert opened.threads == {"s-test"} and opened.closed_with == ["clean"]


def test_an_error_in_a_stream_reaches_the_caller_and_ends_the_session() -> None:
    opened = Opened()
    got: list[int] = []
    with Session(lambda: opening(opened), "s-test") as session:
        with pytest.raises(ValueError, match="boom at 7"):
            for i in session.stream(lambda o: o.numbers(50, fail_at=7)):
                got.append(i)
        with pytest.raises(SessionEnded):  # the connection went with the error
            interrupts.wait(session.call(lambda o: 1))
    assert got == list(range(7)) and opened.closed_with == ["ValueError"]


def test_stopping_a_stream_early_drops_the_connection_without_draining_it() -> None:
    opened = Opened()
    with Session(lambda: opening(opened), "s-test") as session:
        items = session.stream(lambda o: o.numbers(10_000))
        assert next(items) == 0
        items.close()  # as a `for` loop left by an exception does
    assert opened.closed_with == [ReadAbandoned.__name__]
    assert not any(t.name == "s-test" for t in threading.enumerate())


def test_an_error_opening_the_session_is_raised_by_its_constructor() -> None:
    @contextmanager
    def broken() -> Iterator[Opened]:
        raise ConnectionError("refused")
        yield Opened()  # pragma: no cover

    with pytest.raises(ConnectionError, match="refused"):
        Session(broken, "s-test")


def test_a_wait_on_a_session_ends_at_the_run_deadline() -> None:
    release = threading.Event()
    with Session(lambda: opening(Opened()), "s-test") as session:
        slow = session.call(lambda o: release.wait(10))
        interrupts.arm_deadline(None)
        interrupts._deadline[:] = [0.0]  # the deadline has passed
        try:
            with pytest.raises(DeadlinePassed):
                interrupts.wait(slow)
        finally:
            interrupts.reset()
            release.set()
