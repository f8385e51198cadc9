"""The run lock's identity, which the writing targets take and `status` looks at (DESIGN 4.5).

PostgreSQL: a session advisory lock on `LOCK_KEY`; `LOCK_ROW` picks its row out of
`pg_locks` in the current database. SQLite: a lock file beside the database, held with
`flock`. No SQLAlchemy here: `status` imports this module and must start fast.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_KEY = 0x72656673796E63  # "refsync" in ASCII: the advisory lock every run takes
LOCK_ROW = (f"locktype = 'advisory' AND classid = {LOCK_KEY >> 32} "
            f"AND objid = {LOCK_KEY & 0xFFFFFFFF} AND objsubid = 1 AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def sqlite_lock_path(path: Path | None) -> Path | None:
    """The run lock of a SQLite target: a file beside the database (DESIGN 4.5)."""
    return None if path is None else path.with_name(path.name + ".refsync.lock")


def sqlite_lock_held(path: Path | None) -> bool | None:
    """Whether a run holds the lock file now: try to share it without waiting."""
    lock_path = sqlite_lock_path(path)
    if lock_path is None:
        return None
    if not lock_path.exists():
        return False
    fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we got
    return False
