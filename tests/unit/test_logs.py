"""refsync.logs: JSON lines a machine can parse, text a person can read, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from refsync.config import Settings
from refsync.logs import (
    EXTRA_FIELDS,
    REDACTOR,
    SecretRedactor,
    configure_logging,
    current_run_key,
    register_secrets,
    run_context,
)

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")
log = logging.getLogger("refsync.api")  # a library module's logger, as the engine uses


@pytest.fixture(autouse=True)
def _restore_refsync_logger() -> Iterator[None]:
    logger = logging.getLogger("refsync")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handlers, level, propagate = saved
    for h in handlers:
        logger.addHandler(h)
    logger.setLevel(level)
    logger.propagate = propagate


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _secret() -> str:
    return f"pw-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- JSON


def test_json_line_carries_the_table_fields() -> None:
    out = io.StringIO()
    configure_logging("json", 0, stream=out)
    counts = {"read": 10000, "inserted": 9990, "updated": 5, "deleted": 0, "unchanged": 3,
              "promoted": 2, "rejected": 0}
    with run_context("reference_sync_2026-11-28T01:00:00.000+08:00"):
        log.info("%s: ok - read %d", "年金计划", 10000, extra={
            "event": "table_done", "table": "年金计划", "mode": "upsert", "status": "ok",
            **counts, "duration_s": 0.42, "attempts": 1, "error_class": None,
            "watermark": "2026-11-27T18:03:11",
        })
    (doc,) = _json_lines(out)
    assert TS.match(doc["ts"]), doc["ts"]
    assert doc["level"] == "INFO"
    assert doc["event"] == "table_done"
    assert doc["msg"] == "年金计划: ok - read 10000"
    assert doc["run_key"] == "reference_sync_2026-11-28T01:00:00.000+08:00"
    assert doc["table"] == "年金计划"
    assert doc["mode"] == "upsert"
    assert {k: doc[k] for k in counts} == counts
    assert (doc["duration_s"], doc["attempts"], doc["error_class"]) == (0.42, 1, None)
    assert doc["watermark"] == "2026-11-27T18:03:11"
    assert "年金计划" in out.getvalue(), "Chinese is written as is, not as \\u escapes"


def test_json_failure_line_has_error_fields() -> None:
    out = io.StringIO()
    configure_logging("json", 0, stream=out)
    log.error("connection refused", extra={
        "event": "table_done", "table": "组织架构", "attempts": 4, "error_class": "connection",
        "error": "connection refused", "hint": "check WDH_LEGACY_MYSQL_HOST",
        "host": "legacy-db:3306", "database": "legacy", "phase": "read",
    })
    (doc,) = _json_lines(out)
    assert doc["level"] == "ERROR"
    for key in ("attempts", "error_class", "error", "hint", "host", "database", "phase"):
        assert key in doc, key


def test_json_only_known_extras_and_base_fields() -> None:
    out = io.StringIO()
    configure_logging("json", 0, stream=out)
    log.info("hello", extra={"event": "x", "table": "t", "row": {"name": "private value"}})
    (doc,) = _json_lines(out)
    assert set(doc) == {"ts", "level", "event", "msg", "logger", "table"}
    assert doc["logger"] == "refsync.api"
    assert set(EXTRA_FIELDS) >= {"run_key", "table", "mode", "read", "duration_s", "attempts",
                                 "error_class"}


def test_json_event_falls_back_to_the_message() -> None:
    out = io.StringIO()
    configure_logging("json", 0, stream=out)
    log.info("reference sync disabled (%s)", "WDH_REFERENCE_SYNC_ENABLED=false")
    (doc,) = _json_lines(out)
    expected = "reference sync disabled (WDH_REFERENCE_SYNC_ENABLED=false)"
    assert doc["event"] == doc["msg"] == expected
    assert "run_key" not in doc


def test_json_multiline_message_and_traceback_stay_on_one_line() -> None:
    out = io.StringIO()
    configure_logging("json", 0, stream=out)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.exception("failed:\n  two lines", extra={"event": "crash"})
    log.info("next")
    first, second = _json_lines(out)
    assert first["msg"] == "failed:\n  two lines"
    assert "ValueError: bad" in first["exc"]
    assert second["msg"] == "next"


def test_values_json_cannot_hold_are_strings() -> None:
    from datetime import datetime
    from decimal import Decimal

    out = io.StringIO()
    configure_logging("json", 0, stream=out)
    log.info("w", extra={"watermark": datetime(2026, 11, 27, 18, 3, 11), "duration_s":
                         Decimal("0.5")})
    (doc,) = _json_lines(out)
    assert doc["watermark"] == "2026-11-27 18:03:11"
    assert doc["duration_s"] == "0.5"


# ---------------------------------------------------------------- run key


def test_run_context_stamps_and_unstamps() -> None:
    out = io.StringIO()
    configure_logging("json", 0, stream=out)
    with run_context("reference_sync_A"):
        assert current_run_key() == "reference_sync_A"
        log.info("inside")
        with run_context("reference_sync_B"):
            log.info("nested")
        log.info("explicit", extra={"run_key": "reference_sync_C"})
    log.info("outside")
    keys = [doc.get("run_key") for doc in _json_lines(out)]
    assert keys == ["reference_sync_A", "reference_sync_B", "reference_sync_C", None]
    assert current_run_key() is None


# ---------------------------------------------------------------- text


def test_text_format_is_short_and_readable() -> None:
    out = io.StringIO()
    configure_logging("text", 0, stream=out)
    log.info("年金计划: ok - read %d", 3, extra={"event": "table_done", "table": "年金计划"})
    log.warning("产品线: skipped", extra={"hint": "check file_path"})
    first, second = out.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ INFO  年金计划: ok - read 3",
                        first)
    assert second.endswith(" WARNING 产品线: skipped (hint: check file_path)")


def test_times_are_shown_in_the_configured_zone() -> None:
    """One clock for people: text lines name the zone, JSON lines carry its offset."""
    from zoneinfo import ZoneInfo

    from refsync.logs import set_display_zone

    out = io.StringIO()
    set_display_zone(ZoneInfo("Asia/Shanghai"))
    try:
        configure_logging("text", 0, stream=out)
        log.info("hello")
        configure_logging("json", 0, stream=out)
        log.info("hello")
    finally:
        set_display_zone(None)
    text, line = out.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} CST INFO  hello", text)
    assert json.loads(line)["ts"].endswith("+08:00")


def test_emit_sends_lines_to_a_callable() -> None:
    lines: list[str] = []
    configure_logging("text", 0, emit=lines.append)
    log.info("to the console")
    assert len(lines) == 1 and lines[0].endswith("INFO  to the console")


# ---------------------------------------------------------------- levels


@pytest.mark.parametrize(
    ("verbosity", "shown"),
    [
        pytest.param(-1, ["WARNING", "ERROR"], id="quiet"),
        pytest.param(0, ["INFO", "WARNING", "ERROR"], id="default"),
        pytest.param(1, ["DEBUG", "INFO", "WARNING", "ERROR"], id="verbose"),
        pytest.param(2, ["DEBUG", "INFO", "WARNING", "ERROR"], id="very-verbose"),
    ],
)
def test_verbosity_levels(verbosity: int, shown: list[str]) -> None:
    out = io.StringIO()
    configure_logging("json", verbosity, stream=out)
    log.debug("d", extra={"event": "sql_phase", "phase": "stage"})
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [doc["level"] for doc in _json_lines(out)] == shown


def test_configure_is_idempotent_and_does_not_propagate() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("text", 0, stream=first)
    configure_logging("json", 0, stream=second)
    log.info("once")
    assert first.getvalue() == ""
    assert len(_json_lines(second)) == 1
    assert len(logging.getLogger("refsync").handlers) == 1
    assert logging.getLogger("refsync").propagate is False


def test_default_stream_is_the_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", 0)
    log.info("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err)["msg"] == "to stderr"


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="text' or 'json"):
        configure_logging("yaml", 0)  # type: ignore[arg-type]


# ---------------------------------------------------------------- redaction


def test_secrets_are_redacted_in_message_extras_and_traceback() -> None:
    secret = _secret()
    out = io.StringIO()
    configure_logging("json", 0, stream=out, secrets=[secret])
    log.error("cannot connect as refsync:%s@legacy", secret,
              extra={"error": f"auth failed for password {secret}", "hint": secret})
    try:
        raise RuntimeError(f"dsn mysql://refsync:{secret}@legacy/db")
    except RuntimeError:
        log.exception("boom")
    text = out.getvalue()
    assert secret not in text
    first, second = _json_lines(out)
    assert first["msg"] == "cannot connect as refsync:***@legacy"
    assert first["error"] == "auth failed for password ***"
    assert first["hint"] == "***"
    assert "mysql://refsync:***@legacy/db" in second["exc"]


def test_secrets_registered_after_configure_are_redacted_in_text() -> None:
    secret = _secret()
    out = io.StringIO()
    redactor = configure_logging("text", 0, stream=out)
    redactor.add(secret)
    log.warning("password=%s", secret)
    assert out.getvalue().rstrip().endswith("WARNING password=***")


def test_register_secrets_from_settings() -> None:
    mysql_pw, db_pw = _secret(), _secret() + "@/:"
    from urllib.parse import quote

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        legacy_mysql_password=SecretStr(mysql_pw),
        database_url=SecretStr(f"postgresql://wdh:{quote(db_pw, safe='')}@pg:5432/wdh"),
    )
    register_secrets(settings)
    out = io.StringIO()
    configure_logging("json", 0, stream=out)
    log.info("a %s b %s c %s", mysql_pw, db_pw, quote(db_pw, safe=""))
    (doc,) = _json_lines(out)
    assert doc["msg"] == "a *** b *** c ***"
    assert mysql_pw in REDACTOR.secrets


def test_register_secrets_ignores_empty_values() -> None:
    before = REDACTOR.secrets
    empty_settings = SimpleNamespace(legacy_mysql_password=None, database_url=SecretStr(""))
    register_secrets(None, "", SecretStr(""), empty_settings, "sqlite:///no/password.db")
    # the same secrets (those of one length may come back in another order)
    assert sorted(REDACTOR.secrets) == sorted(before)


def test_redactor_prefers_the_longest_secret() -> None:
    short = _secret()
    redactor = SecretRedactor([short, short + "-longer"])
    assert redactor.redact(f"x {short}-longer y {short}") == "x *** y ***"


def test_redactor_applies_to_records_from_every_refsync_logger() -> None:
    secret = _secret()
    out = io.StringIO()
    configure_logging("json", 0, stream=out, secrets=[secret])
    for name in ("refsync", "refsync.sources.mysql", "refsync.targets.postgres"):
        logging.getLogger(name).warning("%s", secret)
    assert [doc["msg"] for doc in _json_lines(out)] == ["***"] * 3


def test_register_secrets_from_a_url_takes_only_its_password() -> None:
    password = _secret()
    register_secrets(f"mysql+pymysql://refsync:{password}@legacy-db:3306/legacy")
    out = io.StringIO()
    configure_logging("json", 0, stream=out)
    log.info("source mysql+pymysql://refsync:%s@legacy-db:3306/legacy", password)
    (doc,) = _json_lines(out)
    assert doc["msg"] == "source mysql+pymysql://refsync:***@legacy-db:3306/legacy"
