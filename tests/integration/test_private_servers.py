"""The private servers the fault tests start leave the shared servers alone."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from private_mariadb import PrivateMariaDBs


def test_a_private_mariadb_leaves_the_shared_tmpdir_alone(
        private_mariadbs: PrivateMariaDBs) -> None:
    """At start-up mariadbd deletes every ``#sql*`` file in its tmpdir: in the shared /tmp
    those are the shared server's temporary tables, and its running queries then fail
    ("Error on delete of '/tmp/#sql-temptable-...MAI'")."""
    canary = Path(tempfile.gettempdir()) / f"#sql-refsync-canary-{os.getpid()}.MAI"
    canary.write_bytes(b"")
    try:
        server = private_mariadbs.get("--max-connections=77")  # a server of its own, started now
        assert server.process is not None and server.process.poll() is None
        assert canary.exists()
    finally:
        canary.unlink(missing_ok=True)
