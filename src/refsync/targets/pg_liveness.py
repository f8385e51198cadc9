"""A PostgreSQL server that stopped answering is noticed while refsync waits on it (DESIGN 4.9).

A peer that is gone (a host down, a cable pulled: no ACK any more) is found by the kernel:
TCP keepalives on an idle connection and `tcp_user_timeout` on unacknowledged data (both set
in the connection's arguments). A peer that is there but stopped answering (a frozen server,
a proxy that stopped forwarding while keeping its sockets open) acknowledges everything and
says nothing: only a bound on the wait finds it. A statement may legitimately run for long
(a big diff, a lock wait up to lock_timeout), so the bound is not on the statement: while one
has been in flight for `PROBE_AFTER_S`, a watchdog thread asks the server, on a connection of
its own, to answer `SELECT 1` within `PROBE_TIMEOUT_S`. No answer: the statements in flight
are cut (their sockets shut down) and fail as lost connections, which are retried. A server
that answers others but not refsync's own session (one backend stopped) is bounded by
`statement_timeout` where one is set, and by the run's max_run_time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from refsync.threads import run_in_thread

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0
PROBE_AFTER_S = 15.0
PROBE_TIMEOUT_S = 15.0
# the longest a target that stopped answering goes unnoticed (README states it)
DETECTED_WITHIN_S = CHECK_EVERY_S + PROBE_AFTER_S + PROBE_TIMEOUT_S


class Watchdog:
    """Watches one target's statements in flight; `stop()` ends its thread."""

    def __init__(self, conninfo: str, connect_args: dict[str, Any],
                 active: Callable[[], list[Any]], abort: Callable[[Any], None],
                 where: str) -> None:
        self._conninfo, self._args = conninfo, connect_args
        self._active, self._abort, self._where = active, abort, where
        self._stopped = threading.Event()
        self._since: dict[int, float] = {}  # id of a connection in flight -> since when
        self._thread = threading.Thread(target=self._watch, name="refsync-watchdog",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(CHECK_EVERY_S):
            try:
                self._check()
            except Exception:  # noqa: BLE001 - the watchdog never ends a run by itself
                log.debug("target watchdog check failed", exc_info=True)

    def _check(self) -> None:
        now = time.monotonic()
        active = {id(c): c for c in self._active()}
        self._since = {k: self._since.get(k, now) for k in active}
        waited = [k for k, since in self._since.items() if now - since >= PROBE_AFTER_S]
        if not waited:
            return
        if self._answers():
            for k in waited:
                self._since[k] = now
            return
        log.warning("target %s did not answer a probe within %.0f s: the statements in flight "
                    "are cut and retried as lost connections", self._where, PROBE_TIMEOUT_S,
                    extra={"event": "target_unresponsive"})
        for k in waited:
            self._abort(active[k])

    def _answers(self) -> bool:
        """Whether the server answers `SELECT 1` on a new connection in time."""
        import psycopg

        held: list[Any] = []

        # the probe's own connect bound is longer than ours: a timeout is ours to see
        args = {**self._args, "connect_timeout": int(PROBE_TIMEOUT_S) + 5}

        def probe() -> None:
            with psycopg.connect(self._conninfo, **args) as conn:
                held.append(conn)
                conn.execute("SELECT 1")

        pending = run_in_thread(probe, "refsync-probe")
        try:
            pending.result(timeout=PROBE_TIMEOUT_S)
            return True
        except FutureTimeout:
            for conn in held:  # the probe's own socket, so its thread ends too
                self._abort(conn)
            return False
        except Exception as exc:  # noqa: BLE001 - refused, reset: the server did answer
            log.debug("target probe failed: %s", exc)
            return True
