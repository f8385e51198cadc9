"""Every table shape, size and path ends, and leaves the target equal to the source (issue 18).

One test per case (matrix_cases.py: a legacy MySQL table of one shape and size, on the real
MariaDB and PostgreSQL) drives the steps in order (matrix_runner.py): first load, verify,
unchanged `--full`, 0.01 % / 20 % / 100 % changed `--full`, a concurrent writer during a full
read (some cases), incremental (or plain) syncs without and with changes, deletes under
`delete_insert`, verify; each sync step runs `plan` first, and the target is compared with
the source after each.

The steps run in a child process that this test watches: every step has a deadline, and a
step that does not end in time kills the child's process group and fails the case as HUNG,
with every thread's stack (the suite itself never hangs). Other failures are collected step
by step and reported together, one line each: `<case id>-<step>: what differed`.

The slice (matrix_cases.SLICE) runs by default; the full matrix only with `-m matrix` or
REFSYNC_FULL_MATRIX=1 (tests/conftest.py deselects it otherwise).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from matrix_cases import SLICE, Case, full_matrix, params, shape

log = logging.getLogger(__name__)
RUNNER = Path(__file__).with_name("matrix_runner.py")
BUILD_DEADLINE_S = 120.0  # filling the source table (100,000 rows at most)


def _events(stream: Any, into: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream:
        if line.startswith("{"):
            into.put(json.loads(line))
    into.put(None)


def case_env(mysql_db_url: str, pg_url: str) -> dict[str, str]:
    """The runner's settings: the source and the target (refsync's WDH_* and the URL)."""
    my = sa.engine.make_url(mysql_db_url)
    return {"MATRIX_MYSQL_URL": mysql_db_url, "WDH_DATABASE_URL": pg_url,
            "WDH_LEGACY_MYSQL_HOST": my.host or "", "WDH_LEGACY_MYSQL_PORT": str(my.port or 3306),
            "WDH_LEGACY_MYSQL_USER": my.username or "",
            "WDH_LEGACY_MYSQL_PASSWORD": my.password or "",
            "WDH_LEGACY_MYSQL_DATABASE": my.database or ""}


def run_case(case: Case, mysql_db_url: str, pg_url: str, workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WDH_")}
    env.update(case_env(mysql_db_url, pg_url),
               PYTHONPATH=os.pathsep.join([str(RUNNER.parent), env.get("PYTHONPATH", "")]))
    failures: list[str] = []
    timings: list[str] = []
    stderr_path = workdir / "runner.stderr"
    with stderr_path.open("w") as stderr, subprocess.Popen(
            [sys.executable, str(RUNNER), case.id, str(workdir), str(case.step_deadline_s)],
            env=env, cwd=workdir,
            stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True) as child:
        events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        reader = threading.Thread(target=_events, args=(child.stdout, events), daemon=True)
        reader.start()
        step, deadline = "build", BUILD_DEADLINE_S
        while True:
            try:
                event = events.get(timeout=deadline)
            except queue.Empty:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                failures.append(f"{case.id}-{step}: HUNG: did not end within {deadline:.0f} s; "
                                f"killed, later steps not run. Threads:\n"
                                f"{_stacks(stderr_path.read_text())}")
                break
            if event is None:  # the child ended without `done`
                failures.append(f"{case.id}-{step}: the runner exited {child.wait()}: "
                                f"{stderr_path.read_text()[-3000:]}")
                break
            if event["event"] == "start":
                step = event["step"]
                deadline = BUILD_DEADLINE_S if step == "build" else case.step_deadline_s
            elif event["event"] == "end":
                timings.append(f"{step} {event['seconds']}s")
                if event["failure"]:
                    failures.append(f"{case.id}-{step}: {event['failure']}")
            elif event["event"] == "done":
                child.wait(timeout=30)
                break
        reader.join(timeout=10)
    log.info("%s: %s", case.id, ", ".join(timings))
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


def _stacks(stderr: str) -> str:
    """faulthandler's last dump of every thread, shortened to each thread's innermost frame
    and the frames of refsync and the runner; else the end of stderr."""
    at = stderr.rfind("Timeout (")
    if at < 0:
        return stderr[-3000:]
    lines, keep_next = [], False
    for line in stderr[at:].splitlines():
        if line.startswith(("Thread ", "Current thread ")):
            lines.append(line)
            keep_next = True
        elif line.strip().startswith("File ") and (
                keep_next or "/refsync/" in line or "matrix_runner" in line):
            lines.append(line)
            keep_next = False
    return "\n".join(lines)


@pytest.mark.parametrize("case", params(SLICE))
def test_matrix_slice(case: Case, mysql_db_url: str, pg_url: str, tmp_path: Path) -> None:
    run_case(case, mysql_db_url, pg_url, tmp_path)


@pytest.mark.parametrize("case", params(full_matrix(), pytest.mark.matrix))
def test_matrix_full(case: Case, mysql_db_url: str, pg_url: str, tmp_path: Path) -> None:
    run_case(case, mysql_db_url, pg_url, tmp_path)


def test_a_hung_step_fails_its_case_in_time(monkeypatch: pytest.MonkeyPatch, mysql_db_url: str,
                                            pg_url: str, tmp_path: Path) -> None:
    """The deadline itself: a step that never ends is killed and reported, with its stack
    (the first step: the steps before it would only add their time)."""
    monkeypatch.setenv("MATRIX_HANG_AT", "load")
    case = Case(shape("int-text"), 0)
    monkeypatch.setattr(Case, "step_deadline_s", property(lambda self: 4.0))
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as failed:
        run_case(case, mysql_db_url, pg_url, tmp_path)
    assert time.monotonic() - started < 40
    text = str(failed.value)
    assert f"{case.id}-load: HUNG: did not end within 4 s" in text, text
    assert "_hang_for_the_deadline_test" in text, text  # the hung thread's stack


def test_the_checks_see_a_target_that_differs(monkeypatch: pytest.MonkeyPatch, mysql_db_url: str,
                                              pg_url: str, tmp_path: Path) -> None:
    """The comparison and the expected counts are not blind: a value changed behind
    refsync's back, and a row it did not write, are both seen."""
    from matrix_runner import Harness, StepFailed

    for name, value in case_env(mysql_db_url, pg_url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    h = Harness(Case(shape("int-json"), 51), sa.engine.make_url(mysql_db_url), pg_url,
                tmp_path)
    h.build()
    try:
        h.plan_then_sync("load")
        with h.pg() as conn:
            conn.execute(f'UPDATE business."{h.case.table}" SET amount = amount + 0.01 '
                         "WHERE id = 4")
            conn.execute(f'UPDATE business."{h.case.table}" SET _needs_review = true '
                         "WHERE id = 7")
        with pytest.raises(StepFailed) as differs:
            h.assert_in_step()
        assert "1 target rows not stamped authoritative/layer 1" in str(differs.value)
        assert "1 rows missing from the target, e.g. [(7,)]" in str(differs.value)
        assert "1 rows differ, e.g. (4,)" in str(differs.value)
        want = h.expected(full=True, deletes=False)
        assert (want["inserted"], want["updated"], want["status"]) == (1, 1, "ok"), want
    finally:
        h.drop()
