"""API errors as clearml-server reports them (apierrors/errors.conf): code, subcode and message format.

The message format is the server's: `"<Default msg capitalized>[ (<extra>)][: k1=v1, k2=(a, b)]"`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.errors import BotError

# (http code, subcode) -> default message, from clearml-server apierrors/errors.conf (only those we raise).
DEFAULT_MESSAGES: dict[tuple[int, int], str] = {
    (400, 0): "bad request",
    (400, 11): "missing required fields",
    (400, 12): "validation error",
    (400, 16): "invalid value for fields",
    (400, 17): "batch request contains no items",
    (400, 21): "malformed regular expression",
    (400, 101): "invalid task id",
    (400, 110): "invalid task status",
    (400, 121): "failed changing task status. probably someone changed it before you",
    (400, 122): "task is missing expected fields",
    (400, 201): "invalid model id",
    (400, 401): "invalid project id",
    (400, 701): "invalid queue id",
    (400, 702): "queue is not empty",
    (400, 703): "invalid queue id or task not in queue",
    (400, 706): "failed adding task to queue since task is already queued",
    (400, 707): "no queue is tagged as the default queue for this company",
    (400, 708): "more than one queue is tagged as the default queue for this company",
    (400, 1001): "invalid worker id",
    (400, 1004): "worker is not registered",
    (400, 1104): "Invalid scroll id",
    (401, 1): "unauthorized (not authorized for endpoint)",
    (401, 10): "unauthorized (bad authentication header type)",
    (401, 20): "unauthorized (missing credentials)",
    (401, 21): "unauthorized (malformed credentials)",
    (401, 22): "unauthorized (invalid credentials)",
    (401, 30): "invalid token",
    (401, 31): "token is blocked",
    (403, 20): "forbidden (not allowed for role)",
    (403, 21): "forbidden (modification not allowed)",
    (404, 0): "not found",
    (415, 0): "unsupported media type",
    (500, 0): "general server error",
    (500, 1): "internal server error",
    (500, 4): (
        "Critical server error! Server reports low or insufficient disk space. Please resolve immediately "
        "by allocating additional disk space or freeing up storage space."
    ),
    (500, 100): "general data error",
    (500, 102): "database is temporarily unavailable",
    (502, 0): "bad gateway",
    (503, 0): "service unavailable",
}


def default_message(code: int, subcode: int) -> str:
    """The capitalized default message for (code, subcode), or a generic one."""
    msg = DEFAULT_MESSAGES.get((code, subcode)) or DEFAULT_MESSAGES.get((code, 0)) or "error"
    return msg[:1].upper() + msg[1:]


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable) and not isinstance(value, bytes | dict):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


class ApiError(BotError):
    """An error the simulator answers with (HTTP status == result_code)."""

    def __init__(
        self,
        code: int,
        subcode: int = 0,
        extra: str | None = None,
        *,
        replacement: str | None = None,
        error_stack: str | None = None,
        **kwargs: Any,
    ) -> None:
        message = replacement if replacement is not None else default_message(code, subcode)
        if extra:
            message += f" ({extra})"
        if kwargs:
            message += ": " + ", ".join(f"{k}={_format_value(v)}" for k, v in kwargs.items())
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.message = message
        self.error_stack = error_stack
        self.error_data: dict[str, Any] = {
            k: (list(v) if isinstance(v, tuple | set | frozenset) else v) for k, v in kwargs.items()
        }


def required(data: dict[str, Any], *fields: str) -> None:
    """400/12 for the first missing required field, worded like the server's jsonmodels validation."""
    for name in fields:
        if data.get(name) in (None, ""):
            raise ApiError(400, 12, f"error for field '{name}'. field is required!")


def validation(extra: str, **kwargs: Any) -> ApiError:
    return ApiError(400, 12, extra, **kwargs)
