"""`state.LastRun.left_in_step`: whether a table's next full read compares the whole table
before its parts. A guess about cost only (the digests decide what differs), but a wrong
guess pays both passes, so it is made only on evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from refsync.state import LastRun

READ = datetime(2026, 11, 30, 1, 0, 0, 500000, tzinfo=UTC)  # the last run's read began


@pytest.mark.parametrize(("last", "changed_at", "whole_first"), [
    (LastRun("unchanged", 0, False, READ), None, True),
    (LastRun("unchanged", 0, True, READ), None, True),  # an unchanged incremental run too
    (LastRun("unchanged", 2, False, READ), None, False),  # rejected rows stay behind
    # the source changed since the unchanged run's read: both passes would be paid
    (LastRun("unchanged", 0, False, READ), READ + timedelta(seconds=3), False),
    (LastRun("unchanged", 0, False, READ), READ.replace(microsecond=0), False),
    (LastRun("unchanged", 0, False, READ), READ - timedelta(seconds=5), True),
    (LastRun("unchanged", 0, False, None), READ - timedelta(seconds=5), True),  # older release
    (LastRun("ok", 0, False, READ), READ - timedelta(seconds=5), True),  # quiet since
    (LastRun("ok", 0, False, READ), READ - timedelta(seconds=1), True),
    (LastRun("ok", 0, False, READ), READ.replace(microsecond=0), False),  # that same second
    (LastRun("ok", 0, False, READ), READ + timedelta(seconds=3), False),  # changed since
    (LastRun("ok", 0, False, READ), None, False),  # unknown (the server restarted)
    (LastRun("ok", 0, True, READ), READ - timedelta(hours=1), False),  # a window, not all
    (LastRun("ok", 0, False, None), READ - timedelta(hours=1), False),  # an older release
    (LastRun("failed", 0, False, READ), READ - timedelta(hours=1), False),
    (LastRun("guarded", 0, False, READ), READ - timedelta(hours=1), False),
    (LastRun(None, 0, False, None), None, False),
])
def test_whole_first_only_on_evidence(last: LastRun, changed_at: datetime | None,
                                      whole_first: bool) -> None:
    assert last.left_in_step(changed_at) is whole_first
