"""Target errors are classified by SQLSTATE and side (issue 11 item 5): a target error never
hints at the source; timeouts and a full disk are not retried as connection errors."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg.errors as pge
import pytest

from refsync import interrupts
from refsync.errors import Interrupted
from refsync.retry import is_transient
from refsync.targets.postgres import PostgresTarget


@pytest.fixture
def target() -> Iterator[PostgresTarget]:
    t = PostgresTarget("postgresql://etl:secret@db.example:5432/wh")  # never connects
    yield t
    t.close()


@pytest.mark.parametrize(("error", "error_class", "transient", "words"), [
    (pge.QueryCanceled, "query", False, "statement timed out on the target"),
    (pge.LockNotAvailable, "query", False, "lock timeout"),
    (pge.DiskFull, "disk_full", False, "disk is full"),
    (pge.OutOfMemory, "query", False, "out of memory"),
    (pge.ReadOnlySqlTransaction, "query", False, "read-only"),
    (pge.SerializationFailure, "query", True, "serialization failure"),
    (pge.DeadlockDetected, "query", True, "deadlock"),
    (pge.AdminShutdown, "connection", True, "shutting down"),
    (pge.InsufficientPrivilege, "query", False, "permission denied"),
    (pge.UndefinedTable, "query", False, "does not exist"),
])
def test_target_errors_by_sqlstate(target: PostgresTarget, error: type[Exception],
                                   error_class: str, transient: bool, words: str) -> None:
    got = target.classify(error("server says no"), "applying")
    assert (got.error_class, is_transient(got)) == (error_class, transient)
    assert words in got.message and "target" in got.message
    assert "source" not in got.hint and "secret" not in got.message


def test_an_unlisted_target_query_error_hints_at_the_target(target: PostgresTarget) -> None:
    got = target.classify(pge.FeatureNotSupported("nope"), "diffing")
    assert got.error_class == "query" and "source" not in got.hint


def test_a_cancel_refsync_sent_on_a_signal_is_the_interruption(target: PostgresTarget) -> None:
    interrupts.stop(15)
    try:
        got = target.classify(pge.QueryCanceled("canceling statement due to user request"), "x")
        assert isinstance(got, Interrupted) and got.signum == 15
        assert not is_transient(got)
    finally:
        interrupts.reset()
