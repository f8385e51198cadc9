"""Threads refsync starts: each is a daemon (a stuck server can never keep the process
alive at exit) and owns whatever connection it opens (DESIGN 4.9)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from refsync import interrupts
from refsync.errors import RefsyncError

log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S")
_END = object()  # what a stream's producer puts after its last item
# how long a session's thread may take to finish its request once asked to close (a chunk's
# read, bounded on its server by the read timeout, or cancelled by a stop)
JOIN_TIMEOUT_S = 35.0


def run_in_thread(work: Callable[[], T], name: str) -> Future[T]:
    """`work()` in a daemon thread of its own; its result or its error in the future."""
    done: Future[T] = Future()

    def run() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(work())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the result
            done.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return done


class SessionEnded(RefsyncError):
    """A request to a session whose thread has ended (after an earlier request failed)."""

    error_class = "internal"


class ReadAbandoned(RefsyncError):
    """The consumer stopped reading early: the session ends without draining the rest."""

    error_class = "internal"


class Session(Generic[S]):
    """A connection's whole life in one thread: `open_()` (a context manager that opens and
    owns what it yields: a source's snapshot) runs in a daemon thread of its own, which then
    answers `call`s in order and streams `stream`s, until `close()`. The caller's every
    wait is bounded by the run's stop and deadline (DESIGN 4.9: no connection is touched by
    two threads; every wait has a bound)."""

    def __init__(self, open_: Callable[[], AbstractContextManager[S]], name: str) -> None:
        self._requests: queue.Queue[tuple[Callable[[S], Any], Future[Any]] | None] = (
            queue.Queue())
        self._opened: Future[None] = Future()
        self._guard = threading.Lock()
        self._ended = False
        self._thread = threading.Thread(target=self._serve, args=(open_,), name=name,
                                        daemon=True)
        self._thread.start()
        try:
            interrupts.wait(self._opened)  # an error opening it is raised here
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Session[S]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self, open_: Callable[[], AbstractContextManager[S]]) -> None:
        """Open, answer requests in order, close. A request that fails ends the session
        through `open_`'s exit (which classifies the error and drops the connection); its
        caller gets that error."""
        current: list[Future[Any]] = []
        try:
            with open_() as opened:
                self._opened.set_result(None)
                while (item := self._requests.get()) is not None:
                    fn, done = item
                    if done.set_running_or_notify_cancel():
                        current[:] = [done]
                        result = fn(opened)
                        current.clear()
                        done.set_result(result)
        except BaseException as exc:  # noqa: BLE001 - raised by whoever waits on it
            if not self._opened.done():
                self._opened.set_exception(exc)
            elif current:
                current[0].set_exception(exc)
            else:
                log.debug("a source session ended with an error", exc_info=True)
        finally:  # nothing waits on a request this thread will never answer
            with self._guard:
                self._ended = True
            while True:
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[1].set_exception(SessionEnded("the source's session has ended"))

    def call(self, fn: Callable[[S], T]) -> Future[T]:
        """`fn(opened)` in the session's thread, after the requests before it."""
        done: Future[T] = Future()
        with self._guard:
            if self._ended:
                done.set_exception(SessionEnded("the source's session has ended"))
            else:
                self._requests.put((fn, done))
        return done

    def stream(self, fn: Callable[[S], Iterator[T]], depth: int = 2) -> Iterator[T]:
        """What `fn(opened)` yields, produced up to `depth` ahead in the session's thread
        (the source server formats the next chunk while the target loads this one).
        Stopping early stops the producer after its current item."""
        slots: queue.Queue[Any] = queue.Queue(depth)
        stop = threading.Event()

        def put(item: Any) -> None:
            while not stop.is_set():
                try:
                    slots.put(item, timeout=interrupts.POLL_S)
                    return
                except queue.Full:
                    continue
            raise ReadAbandoned("the read was stopped before its end")  # the connection goes

        def produce(opened: S) -> None:
            items = fn(opened)
            try:
                for item in items:
                    put(item)
                put(_END)  # the consumer need not wait for a poll to learn the end
            finally:
                close = getattr(items, "close", None)  # a generator's cleanup runs here
                if close is not None:
                    close()

        producing = self.call(produce)
        try:
            while True:
                try:
                    item = slots.get(timeout=interrupts.POLL_S)
                except queue.Empty:  # every wait has a bound: the run's stop or deadline
                    interrupts.check()
                    if producing.done() and slots.empty():
                        producing.result()  # its error, if it failed
                        return
                    continue
                if item is _END:
                    interrupts.wait(producing)
                    return
                yield item
        finally:
            stop.set()

    def close(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """End the session: its thread finishes the request in flight (a statement bounded
        on its server by the read timeout, or cancelled by a stop) and closes the
        connection."""
        self._requests.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the source's thread is still busy after %.0f s; going on without it",
                        timeout, extra={"event": "reader_stuck"})
