"""What a person sees on a terminal (DESIGN 2.1): a real demo-sized sync on a pseudo-terminal.

Log lines print above the live progress display, never glued to a bar; each table ends as one
permanent result line, printed once per run; times carry the configured zone.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ (?:INFO|WARNING|ERROR) ")
TABLES = ("年金计划", "组合计划", "组织架构", "产品线")


def run_on_a_terminal(argv: list[str], cwd: Path, timeout: float = 120) -> tuple[int, str]:
    """Run argv with stdin/stdout/stderr on a 120x40 pseudo-terminal; (exit code, all output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    for key in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(key, None)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                            close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> str:
    where = tmp_path_factory.mktemp("terminal")
    code, raw = run_on_a_terminal(
        [sys.executable, "-m", "refsync", "demo", "--dir", str(where / "demo"), "--rows", "2000"],
        cwd=where)
    assert code == 0, ANSI.sub("", raw)[-3000:]
    return ANSI.sub("", raw)  # what is left: text, \r (back to the line start) and \n


def _line_at(text: str, index: int) -> tuple[str, str]:
    """(what precedes index on its terminal line, the rest of that line)."""
    start = max(text.rfind("\r", 0, index), text.rfind("\n", 0, index)) + 1
    ends = [i for i in (text.find("\r", index), text.find("\n", index)) if i != -1]
    return text[start:index], text[index:min(ends) if ends else len(text)]


def test_progress_was_live(screen: str) -> None:
    assert "━" in screen, "no progress bar was drawn on a terminal"


def test_log_lines_are_never_glued_to_a_bar(screen: str) -> None:
    logs = list(LOG_LINE.finditer(screen))
    assert len(logs) >= 8, screen[:2000]
    for match in logs:
        before, line = _line_at(screen, match.start())
        assert before == "", f"a log line glued after {before!r}"
        assert "━" not in line, f"a bar glued to a log line: {line!r}"


def test_each_table_ends_as_one_result_line_per_run(screen: str) -> None:
    for table in TABLES:
        results = list(re.finditer(rf"✓ {table} (?:ok|unchanged)  [\d,]+ rows in ", screen))
        assert len(results) == 2, (table, len(results))  # the full sync and the incremental one
        for match in results:
            before, line = _line_at(screen, match.start())
            assert before == "" and "━" not in line, line


def test_times_on_screen_name_the_configured_zone(screen: str) -> None:
    zones = {match.group(0).split()[2] for match in LOG_LINE.finditer(screen)}
    assert zones == {"CST"}, zones  # Asia/Shanghai, the demo's configured zone
