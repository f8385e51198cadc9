"""Every command is explained: in `--help` and in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from refsync.cli import app

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)  # type: ignore[attr-defined]


def test_the_commands_are_the_documented_ones() -> None:
    assert set(COMMANDS) >= {"plan", "sync", "sync-table", "status", "init-db", "demo"}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_text(name: str) -> None:
    command = GROUP.commands[name]  # type: ignore[attr-defined]
    assert (command.help or "").strip(), f"refsync {name} has no help text"
    for param in command.params:
        if param.name == "help":
            continue
        assert (getattr(param, "help", None) or "").strip(), \
            f"refsync {name}: {param.opts[0]} has no help text"


def test_readme_exists_and_says_something() -> None:
    assert README.exists(), "README.md is missing"
    assert README.read_text(encoding="utf-8").strip(), "README.md is empty"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_appears_in_the_readme(name: str) -> None:
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    assert re.search(rf"refsync\s+{re.escape(name)}\b(?!-)", text), \
        f"README.md does not show `refsync {name}`"
