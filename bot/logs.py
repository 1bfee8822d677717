"""Structured logging: one line per event, as text or JSON, with secrets redacted on the way out.

    from bot.logs import setup_logging
    setup_logging()                      # LOG_LEVEL (default INFO), LOG_FORMAT=text|json (default text)
    setup_logging(fmt="json", secrets=lambda: [token])

- One line per event, whatever the message: newlines in a message or a traceback are escaped in text mode (`\\n`),
  and JSON lines are JSON. Text: `2026-11-26T14:02:00.123Z INFO bot.outbox: message key=value ...`;
  JSON: `{"ts": ..., "level": ..., "logger": ..., "msg": ..., "exc": ..., <extra fields>}`.
- `extra={...}` fields given to a log call become `key=value` pairs (text) or top-level keys (JSON).
- Every record passes `RedactFilter` (attached to the handlers, so records of every logger are covered:
  slack_sdk, Bolt, httpx, apscheduler): the message, its arguments, the traceback and extra fields are run
  through `bot.redact.redact` with the known secrets: the values of environment variables whose names look
  secret (`*TOKEN*`, `*SECRET*`, `*KEY*`, `*PASSWORD*`, ...), anything registered with `add_secrets()`, and the
  `secrets` callable; plus redact's own patterns (Slack tokens, AWS key ids, `password=...`, bearer values).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO, Any

from bot.redact import redact

ENV_LEVEL = "LOG_LEVEL"
ENV_FORMAT = "LOG_FORMAT"
FORMATS = ("text", "json")

# Environment variables whose values are secrets (names, not values, are matched).
_SECRET_NAME = re.compile(r"(?i)(secret|token|passw|api_?key|access_?key|private_?key|credential|signing)")
_MIN_SECRET_LEN = 8  # shorter values ("1", "true") would blank out ordinary words

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime", "taskName"}
)

_registered: set[str] = set()
_registered_lock = threading.Lock()


def add_secrets(values: Iterable[str | None]) -> None:
    """Register values that must never appear in a log line (e.g. ClearML keys resolved from the config)."""
    with _registered_lock:
        _registered.update(v for v in values if v and len(v) >= 4)


def env_secrets(environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if v and len(v) >= _MIN_SECRET_LEN and _SECRET_NAME.search(k)]


def known_secrets(extra: Callable[[], Iterable[str]] | None = None) -> list[str]:
    with _registered_lock:
        out = list(_registered)
    out.extend(env_secrets())
    if extra is not None:
        try:
            out.extend(s for s in extra() if s)
        except Exception:  # a broken secrets source must not silence logging
            pass
    return out


class RedactFilter(logging.Filter):
    """Redacts the message (after %-formatting), the traceback, the stack and string extras of each record."""

    def __init__(self, secrets: Callable[[], Iterable[str]] | None = None) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True  # the same record passes several handlers
        secrets = known_secrets(self._secrets)
        try:
            message = record.getMessage()
        except Exception as exc:  # bad %-args: keep the template, say what was wrong
            message = f"{record.msg!s} (log formatting failed: {type(exc).__name__})"
        record.msg = redact(message, secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value, secrets))
        record._redacted = True
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class TextFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> <logger>: <message> key=value ... exc=<traceback>` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, f"{record.name}:", _one_line(record.getMessage())]
        for key, value in _extras(record).items():
            shown = value if isinstance(value, int | float | bool) else json.dumps(str(value))
            parts.append(f"{key}={shown}")
        exc = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else "")
        if exc:
            parts.append("exc=" + _one_line(exc))
        if record.stack_info:
            parts.append("stack=" + _one_line(record.stack_info))
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.threadName and record.threadName != "MainThread":
            doc["thread"] = record.threadName
        for key, value in _extras(record).items():
            doc.setdefault(key, value)
        exc = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else "")
        if exc:
            doc["exc"] = exc
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, default=str, ensure_ascii=False)


def resolve_format(fmt: str | None = None) -> str:
    """`fmt`, else $LOG_FORMAT, else text; raises ValueError for anything else."""
    chosen = (fmt or os.environ.get(ENV_FORMAT) or "text").strip().lower()
    if chosen not in FORMATS:
        raise ValueError(f"{ENV_FORMAT}={chosen!r} is not a log format: use text or json")
    return chosen


def resolve_level(level: str | int | None = None) -> int:
    raw = level if level is not None else (os.environ.get(ENV_LEVEL) or "INFO")
    if isinstance(raw, int):
        return raw
    value = logging.getLevelName(str(raw).strip().upper())
    if not isinstance(value, int):
        raise ValueError(f"{ENV_LEVEL}={raw!r} is not a log level: use DEBUG, INFO, WARNING or ERROR")
    return value


def setup_logging(
    level: str | int | None = None,
    fmt: str | None = None,
    *,
    stream: IO[str] | None = None,
    secrets: Callable[[], Iterable[str]] | None = None,
) -> logging.Handler:
    """Install the bot's handler on the root logger (replacing one installed before), and the redaction filter
    on every other root handler too. Returns the handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_clearml_chatops", False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._clearml_chatops = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if resolve_format(fmt) == "json" else TextFormatter())
    redactor = RedactFilter(secrets)
    handler.addFilter(redactor)
    for other in root.handlers:
        if not any(isinstance(f, RedactFilter) for f in other.filters):
            other.addFilter(redactor)
    root.addHandler(handler)
    root.setLevel(resolve_level(level))
    # Chatty libraries: their INFO lines are per request, which is noise at INFO.
    for name in ("httpx", "httpcore", "urllib3", "apscheduler.executors.default", "botocore", "boto3"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return handler
