"""A signal stops the run without leaving work on the servers (DESIGN 4.7).

A signal that lands while a statement runs on the target must not raise inside the driver
(the connection would be left mid-command: "another command is already in progress"), nor
leave the statement running on the server. So the handler cancels the statements in flight
on the server (PostgreSQL cancel, MySQL KILL QUERY through the sources' `cancel()`), records
the signal as pending, and lets the cancelled statement fail; `converting()` turns whatever
that failure raises into `Interrupted`, and `check()` stops at the next statement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from refsync.errors import Interrupted

log = logging.getLogger(__name__)

_pending: list[int] = []
_cancellers: list[Callable[[], object]] = []


def pending() -> int | None:
    """The signal that stopped the run, if one did."""
    return _pending[0] if _pending else None


def reset() -> None:
    _pending.clear()


def check() -> None:
    """Raise Interrupted when a signal arrived: called before each statement."""
    if _pending:
        raise Interrupted(_pending[0])


def register(cancel: Callable[[], object] | None) -> Callable[[], None]:
    """Until the returned function is called, a signal calls `cancel` (True when it stopped
    a statement in flight, which then fails with an error `converting` turns into
    Interrupted). A source's `cancel` (MySQL KILL QUERY) may return anything."""
    if cancel is None:
        return lambda: None
    _cancellers.append(cancel)

    def unregister() -> None:
        if cancel in _cancellers:
            _cancellers.remove(cancel)

    return unregister


@contextmanager
def cancellable(cancel: Callable[[], object] | None) -> Iterator[None]:
    """`register` for the span of a block."""
    unregister = register(cancel)
    try:
        yield
    finally:
        unregister()


def cancel_in_flight(signum: int) -> bool:
    """Note the signal and cancel what runs on the servers; True when a cancelled statement
    will end the work in flight (the handler must then not raise inside the driver)."""
    if not _pending:
        _pending.append(signum)
    cancelled = False
    for cancel in list(_cancellers):
        try:
            cancelled = cancel() is True or cancelled
        except Exception:  # noqa: BLE001 - a failed cancel falls back to raising
            log.debug("cancelling the statement in flight failed", exc_info=True)
    return cancelled


@contextmanager
def converting() -> Iterator[None]:
    """After a signal, any error the cancelled work raises is the interruption."""
    try:
        yield
    except Interrupted:
        raise
    except Exception as exc:
        if _pending:
            raise Interrupted(_pending[0]) from exc
        raise
