"""How a run stops: signals, the run deadline, and waits that always end (DESIGN 4.7, 4.9).

A signal (or the passed deadline, delivered as SIGALRM) that lands while a statement runs
must not raise inside the driver (the connection would be left mid-command), nor leave the
statement running on the server. So the handler notes the stop as pending and, when work is
in flight, hands it to a *stopper* thread and returns: the stopper cancels the statements on
their servers (PostgreSQL cancel, MySQL KILL QUERY), and the cancelled statement fails;
`converting()` turns whatever that failure raises into the stop's error, and `check()` stops
at the next statement or wait. When the work does not end (a frozen server, a black-holed
socket) the stopper closes the connections' sockets under the blocked call, and, where the
process may be ended (the console script), exits it when even that did not finish in time.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from refsync.errors import DeadlinePassed, Interrupted

log = logging.getLogger(__name__)

T = TypeVar("T")

DEADLINE = signal.SIGALRM  # the pending "signal" of a passed run deadline
POLL_S = 0.25  # how often a wait looks whether the run is stopping

# after a signal: cancel at once, close the sockets after ABORT_AFTER, exit after EXIT_AFTER
# (DESIGN 4.9: the process ends within 10 s whatever it is doing)
SIGNAL_ABORT_AFTER_S = 3.0
SIGNAL_EXIT_AFTER_S = 8.5
# after the deadline: the same steps, with more time for a clean rollback and record
DEADLINE_ABORT_AFTER_S = 15.0
DEADLINE_EXIT_AFTER_S = 60.0
CANCEL_TIMEOUT_S = 3.0  # one cancel request (a new connection to the server) at most


@dataclass
class Stoppable:
    """Work on one server that a stop can end: `busy()` says (without I/O) whether a statement
    is in flight, `cancel()` stops it on the server (bounded), `abort()` closes the sockets so
    a call blocked on a peer that stopped answering returns."""

    busy: Callable[[], bool]
    cancel: Callable[[], object]
    abort: Callable[[], object]


_pending: list[int] = []
_stoppables: list[Stoppable] = []
_guard = threading.RLock()  # re-entrant: the handler runs on the main thread
_ended = threading.Event()  # set when the stopped run has finished its clean path
_deadline: list[float] = []  # monotonic time of the run deadline, while one is armed
_max_run_time: list[timedelta] = []
_process: dict[str, bool] = {"may_exit": False}


def allow_process_exit(allowed: bool = True) -> None:
    """The console script may end the process when a stop cannot finish cleanly in time; the
    library (tests, embedders) never exits."""
    _process["may_exit"] = allowed


def pending() -> int | None:
    """The signal that stopped the run (SIGALRM: the deadline), if one did."""
    return _pending[0] if _pending else None


def reset() -> None:
    """The run ended: forget its stop, and tell a stopper thread it may rest."""
    _ended.set()
    _pending.clear()
    _deadline.clear()
    _max_run_time.clear()


def stop_error(code: int) -> Interrupted:
    if code == DEADLINE:
        limit = _max_run_time[0] if _max_run_time else None
        return DeadlinePassed(limit)
    return Interrupted(code)


def check() -> None:
    """Raise the stop's error when the run was stopped or its deadline passed: called before
    each statement and inside every wait."""
    if not _pending and _deadline and time.monotonic() >= _deadline[0]:
        _pending.append(DEADLINE)  # a thread noticed first (no SIGALRM off the main thread)
    if _pending:
        raise stop_error(_pending[0])


def wait(future: Future[T]) -> T:
    """`future.result()`, bounded by the run: a stop or a passed deadline ends the wait."""
    while True:
        try:
            return future.result(timeout=POLL_S)
        except FutureTimeout:
            check()


def arm_deadline(max_run_time: timedelta | None) -> None:
    """Start the run's clock: past `max_run_time`, SIGALRM stops it (main thread) and every
    wait and `check()` (any thread) raises DeadlinePassed."""
    _ended.clear()
    if not max_run_time:
        return
    seconds = max_run_time.total_seconds()
    _deadline[:] = [time.monotonic() + seconds]
    _max_run_time[:] = [max_run_time]
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, seconds)


def disarm_deadline() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


def register(stoppable: Stoppable) -> Callable[[], None]:
    """Until the returned function is called, a stop cancels (then aborts) `stoppable`."""
    with _guard:
        _stoppables.append(stoppable)

    def unregister() -> None:
        with _guard:
            if stoppable in _stoppables:
                _stoppables.remove(stoppable)

    return unregister


@contextmanager
def stoppable(item: Stoppable) -> Iterator[None]:
    """`register` for the span of a block."""
    unregister = register(item)
    try:
        yield
    finally:
        unregister()


def stop(code: int) -> bool:
    """Note the stop and start ending the work in flight; True when a statement is in flight
    (it fails on its server now: the handler must not raise inside the driver)."""
    if not _pending:
        _pending.append(code)
    with _guard:
        items = list(_stoppables)
    busy = False
    for item in items:
        try:
            busy = item.busy() or busy
        except Exception:  # noqa: BLE001 - a broken connection has nothing in flight
            log.debug("asking whether work is in flight failed", exc_info=True)
    _start_stopper(code, items)
    return busy


def exit_later(code: int) -> None:
    """A stop that must not cancel anything (a commit is completing): only the bound on the
    process's life starts."""
    _start_stopper(code, None)


def _start_stopper(code: int, items: list[Stoppable] | None) -> None:
    _ended.clear()
    deadline = code == DEADLINE
    threading.Thread(
        target=_stopper, name="refsync-stopper", daemon=True,
        args=(items, code, DEADLINE_ABORT_AFTER_S if deadline else SIGNAL_ABORT_AFTER_S,
              DEADLINE_EXIT_AFTER_S if deadline else SIGNAL_EXIT_AFTER_S)).start()


def _stopper(items: list[Stoppable] | None, code: int, abort_after: float,
             exit_after: float) -> None:
    started = time.monotonic()
    if items is None:  # nothing to cancel: only the process's bound
        abort_after = exit_after
    for item in items or ():
        threading.Thread(target=_quietly, args=(item.cancel, "cancelling"), daemon=True,
                         name="refsync-cancel").start()
    if _ended.wait(abort_after):
        return
    if items is not None:
        log.warning("the work in flight did not stop within %.0f s: closing its connections",
                    abort_after, extra={"event": "stop_abort"})
        with _guard:
            items = list(_stoppables)
        for item in items:
            _quietly(item.abort, "closing a connection")
    if _ended.wait(max(0.0, exit_after - (time.monotonic() - started))):
        return
    if not _process["may_exit"]:
        log.error("the run did not stop within %.0f s", exit_after, extra={"event": "stop_stuck"})
        return
    exit_now(code, f"the run could not stop cleanly within {exit_after:.0f} s")


def exit_now(code: int, why: str) -> None:
    """End the process at once (the console script only): a `running` record left behind
    shows as `abandoned` in `status` once the run's lock session is gone."""
    status = 1 if code == DEADLINE else 128 + code
    log.error("%s: exiting with %d", why, status, extra={"event": "exit_now"})
    for handler in logging.getLogger().handlers:
        _quietly(handler.flush, "flushing the log")
    for stream in (sys.stdout, sys.stderr):
        _quietly(stream.flush, "flushing output")
    os._exit(status)


def may_exit() -> bool:
    return _process["may_exit"]


def _quietly(call: Callable[[], object], doing: str) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - best effort: the stop goes on
        log.debug("%s failed while stopping", doing, exc_info=True)


@contextmanager
def converting() -> Iterator[None]:
    """After a stop, any error the cancelled work raises is the stop's error."""
    try:
        yield
    except Interrupted:
        raise
    except Exception as exc:
        if _pending:
            raise stop_error(_pending[0]) from exc
        raise
