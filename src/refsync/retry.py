"""The one retry policy (DESIGN 4.7): transient failures only, the configured back-off, logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import tenacity

from refsync.config import RetryPolicy
from refsync.errors import RefsyncError

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """Only errors classified as transient where they were raised (connection lost, refused…);
    never after a signal (a cancelled statement is not a lost connection)."""
    from refsync import interrupts

    return isinstance(exc, RefsyncError) and exc.transient and interrupts.pending() is None


def _worth_retrying(state: tenacity.RetryCallState) -> bool:
    """Transient, and within the error's own limit of retries where it has one."""
    exc = state.outcome.exception() if state.outcome else None
    if exc is None or not is_transient(exc):
        return False
    limit = getattr(exc, "max_retries", None)
    return limit is None or state.attempt_number <= limit


def retrying(policy: RetryPolicy, *, table: str, where: Callable[[], str],
             sleep: Callable[[float], None] | None = None) -> tenacity.Retrying:
    """A tenacity loop: 1 try + `policy.attempts` retries, waiting `policy.backoff` between."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s: attempt %d failed (%s: %s); retrying in %.1fs",
            table, state.attempt_number, getattr(exc, "error_class", "error"), exc, wait,
            extra={"event": "retry", "table": table, "attempts": state.attempt_number,
                   "error_class": getattr(exc, "error_class", None), "error": str(exc),
                   "host": where()},
        )

    return tenacity.Retrying(
        retry=_worth_retrying,
        stop=tenacity.stop_after_attempt(1 + policy.attempts),
        wait=tenacity.wait_chain(*(tenacity.wait_fixed(b) for b in policy.backoff)),
        reraise=True,
        before_sleep=before_sleep,
        sleep=sleep or time.sleep,
    )


def until_done(step: Callable[[], bool], *, tries: int, backoff: float,
               sleep: Callable[[float], None] | None = None) -> bool:
    """Call `step` until it returns True, at most `tries` times, waiting `backoff`,
    2 x `backoff`… between; whether it got there. `step` handles its own errors."""
    return bool(tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda done: not done),
        stop=tenacity.stop_after_attempt(tries),
        wait=tenacity.wait_incrementing(start=backoff, increment=backoff),
        retry_error_callback=lambda _state: False,
        sleep=sleep or time.sleep,
    )(step))
