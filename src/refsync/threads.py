"""Threads refsync starts: each is a daemon (a stuck server can never keep the process
alive at exit) and owns whatever connection it opens (DESIGN 4.9)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


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
