"""Logging for people (text) and machines (one JSON object a line), with secrets redacted.

Library modules log with `log = logging.getLogger(__name__)`, %-style arguments and an event name
plus structured fields in `extra`:

    log.info("synced %s: %d read", name, n, extra={"event": "table.synced", "table": name, ...})

Only `cli.py` calls `configure_logging`, which owns the handler of the `refsync` logger: the
run key is stamped on every record inside `run_context(...)`, and every string registered with
the `SecretRedactor` is replaced by `***` in messages, extras and tracebacks before formatting.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, tzinfo
from typing import Any, Literal, TextIO
from urllib.parse import quote, quote_plus

from refsync.model import COUNT_FIELDS
from refsync.redact import url_secrets

__all__ = [
    "EXTRA_FIELDS",
    "JsonFormatter",
    "RunContextFilter",
    "SecretRedactor",
    "TextFormatter",
    "configure_logging",
    "current_run_key",
    "level_for",
    "register_secrets",
    "run_context",
    "set_display_zone",
]

LOGGER_NAME = "refsync"
REDACTED = "***"
MIN_MASKED = 4  # shorter secrets are never masked as substrings

#: Structured fields copied from a record's `extra` into the JSON line, in this order.
EXTRA_FIELDS: tuple[str, ...] = (
    "run_key", "table", "mode", "status", *COUNT_FIELDS, "duration_s", "attempts",
    "error_class", "error", "hint", "host", "database", "watermark", "phase",
)

# attributes every LogRecord has; anything else on a record came from `extra`
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("x", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}

_run_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "refsync_run_key", default=None
)


# ---------------------------------------------------------------- run key


@contextmanager
def run_context(run_key: str) -> Iterator[str]:
    """Stamp `run_key` on every record logged (in this thread or task) inside the block."""
    token = _run_key.set(run_key)
    try:
        yield run_key
    finally:
        _run_key.reset(token)


def current_run_key() -> str | None:
    """The run key set by the innermost `run_context`, if any."""
    return _run_key.get()


class RunContextFilter(logging.Filter):
    """Adds `run_key` to records that do not carry one (attached to the handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_key", None) is None:
            key = _run_key.get()
            if key is not None:
                setattr(record, "run_key", key)  # noqa: B010
        return True


# ---------------------------------------------------------------- redaction


class SecretRedactor(logging.Filter):
    """Replaces every registered secret with `***` in a record's message, extras and traceback.

    Attach it to a handler (as `configure_logging` does), not a logger: logger filters do not
    see records propagated from child loggers. Each secret is also matched URL-encoded, as it
    appears inside a database URL. Empty strings are ignored.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Register more secrets (e.g. once the settings are read). One shorter than
        `MIN_MASKED` is not masked wherever it occurs (a password `0` would mask every zero
        and so tell itself): the places a secret is written are redacted where it is shown."""
        found = set(self._secrets)
        for secret in secrets:
            if not secret or len(secret) < MIN_MASKED:
                continue
            found.update({secret, quote(secret, safe=""), quote_plus(secret, safe="")})
        # longest first, so a secret containing another is replaced whole
        self._secrets = tuple(sorted(found, key=len, reverse=True))

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format: leave it to the handler's error reporting
            message = str(record.msg)
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for key, value in list(record.__dict__.items()):
            if key in _STANDARD_ATTRS or value is None or isinstance(value, bool | int | float):
                continue
            text = value if isinstance(value, str) else str(value)
            clean = self.redact(text)
            if clean != text:
                setattr(record, key, clean)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


#: The redactor every handler made by `configure_logging` uses; secrets registered once stay
#: registered when logging is configured again.
REDACTOR = SecretRedactor()


def _secret_value(value: Any) -> str | None:
    getter = getattr(value, "get_secret_value", None)  # pydantic SecretStr
    if callable(getter):
        value = getter()
    return value if isinstance(value, str) and value else None


def register_secrets(*items: Any) -> None:
    """Register secrets with `REDACTOR`: strings, SecretStr values, or a `Settings` object.

    From a Settings object: the MySQL password and every password written in the target
    database URL (user-info, `password=` query parameter, libpq key=value string). A URL
    (`scheme://...`) registers its passwords (as written and URL-decoded), nothing else.
    """
    for item in items:
        if item is None:
            continue
        if hasattr(item, "legacy_mysql_password") or hasattr(item, "database_url"):
            register_secrets(getattr(item, "legacy_mysql_password", None))
            url = _secret_value(getattr(item, "database_url", None))
            if url:
                REDACTOR.add(*url_secrets(url))
            continue
        secret = _secret_value(item)
        if not secret:
            continue
        if "://" in secret:  # a URL: its passwords are the secrets, not the host or path
            REDACTOR.add(*url_secrets(secret))
        else:
            REDACTOR.add(secret)


# ---------------------------------------------------------------- formatters

#: The zone log times are shown in: the host's until the config names one (`timezone`).
_display_zone: tzinfo | None = None


def set_display_zone(zone: tzinfo | None) -> None:
    """Show log times in `zone` (the configured `timezone`), so one clock reads everywhere."""
    global _display_zone
    _display_zone = zone


def _when(record: logging.LogRecord) -> datetime:
    return datetime.fromtimestamp(record.created, _display_zone).astimezone(_display_zone)



def _event(record: logging.LogRecord, message: str) -> str:
    event = getattr(record, "event", None)
    return str(event) if event else message


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, event, msg, logger, then the EXTRA_FIELDS present.

    `ts` is ISO-8601 with milliseconds and the UTC offset (the configured zone once known). A
    traceback, if any, goes in `exc`. Values that JSON cannot hold are written as strings.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        doc: dict[str, Any] = {
            "ts": _when(record).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "event": _event(record, message),
            "msg": message,
            "logger": record.name,
        }
        for key in EXTRA_FIELDS:
            if key in record.__dict__:
                doc[key] = record.__dict__[key]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`2026-11-28 01:00:00.123 CST INFO  message` (the display zone, named), plus the hint."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        hint = getattr(record, "hint", None)
        if hint and str(hint) not in message:
            message = f"{message} (hint: {hint})"
        when = _when(record)
        line = (f"{when:%Y-%m-%d %H:%M:%S}.{int(record.msecs):03d} {when:%Z} "
                f"{record.levelname:<5} {message}")
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


# ---------------------------------------------------------------- setup


def level_for(verbosity: int) -> int:
    """-1 (or less, `-q`): WARNING; 0: INFO; 1 or more (`-v`): DEBUG."""
    if verbosity < 0:
        return logging.WARNING
    return logging.INFO if verbosity == 0 else logging.DEBUG


def configure_logging(
    fmt: Literal["text", "json"],
    verbosity: int,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
    emit: Callable[[str], None] | None = None,
) -> SecretRedactor:
    """Give the `refsync` logger one handler on `stream` (default: the current sys.stderr).

    Idempotent: earlier handlers of the `refsync` logger are removed. The logger does not
    propagate to the root logger, so a root handler set up by a library cannot print each
    line twice. With `emit`, formatted lines go to that callable instead of a stream (the
    terminal's console, so lines print above a live progress display). Returns the handler's
    redactor, the module's `REDACTOR`: register secrets with
    `register_secrets(settings)` or `.add(...)`, before or after this call.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    handler: logging.Handler = (
        _CallbackHandler(emit) if emit is not None
        else logging.StreamHandler(sys.stderr if stream is None else stream))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    REDACTOR.add(*secrets)
    handler.addFilter(RunContextFilter())
    handler.addFilter(REDACTOR)
    logger.addHandler(handler)
    logger.setLevel(level_for(verbosity))
    logger.propagate = False
    return REDACTOR


class _CallbackHandler(logging.Handler):
    """Hands each formatted line to a callable (a console that knows about its live display)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        super().__init__()
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(self.format(record))
        except Exception:
            self.handleError(record)
