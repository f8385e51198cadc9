"""Read ahead in a thread, so the source server formats the next chunk while the target
loads this one (the work overlaps as it does in a shell pipe). Only for sources whose
per-chunk Python work is small: the GIL is released while the driver waits on its socket."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

from refsync import interrupts

log = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()
# after the consumer stops: how long the worker may take to finish its item (a chunk's read,
# bounded on its server by the read timeout, or cancelled by a stop)
JOIN_TIMEOUT_S = 35.0


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield what `items` yields, produced up to `depth` ahead in a worker thread.

    An exception in the worker is raised here; stopping early (or an exception here) stops
    the worker after its current item and closes `items`, so its cleanup runs."""
    slots: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as exc:  # handed to the consumer, who raises it
            put(exc)
        finally:
            close = getattr(items, "close", None)  # a generator's cleanup runs here
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="refsync-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = slots.get(timeout=interrupts.POLL_S)
            except queue.Empty:  # every wait has a bound: the run's stop or deadline
                interrupts.check()
                if not worker.is_alive() and slots.empty():
                    raise RuntimeError("the reader thread ended without its last item") from None
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(JOIN_TIMEOUT_S)
        if worker.is_alive():  # its statement ends on its own server (read timeout, cancel)
            log.warning("the reader thread is still busy after %.0f s; going on without it",
                        JOIN_TIMEOUT_S, extra={"event": "reader_stuck"})
