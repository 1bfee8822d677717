"""Typed errors of the ClearML REST client.

Each carries the endpoint, HTTP code, result subcode and the server's message so that a finding or a Slack
message can say exactly what the server answered. Messages never contain credentials.
"""

from __future__ import annotations

from bot.errors import BotError


class ClearMLError(BotError):
    """Any failure talking to a ClearML server."""

    attempts: int = 1  # how many requests were made before giving up (reads retry)

    def __init__(self, endpoint: str, code: int = 0, subcode: int = 0, message: str = "") -> None:
        self.endpoint = endpoint
        self.code = code
        self.subcode = subcode
        self.message = message
        super().__init__(self.describe())

    def evidence(self) -> dict[str, object]:
        """What the server answered, as a finding's evidence."""
        return {"endpoint": self.endpoint, "code": self.code, "subcode": self.subcode, "message": self.message}

    def describe(self) -> str:
        where = f"{self.endpoint}: " if self.endpoint else ""
        codes = f" ({self.code}/{self.subcode})" if self.code else ""
        return f"{where}{self.message}{codes}"


class CredentialsError(ClearMLError):
    """401 with subcode 20-22 (missing, malformed or unknown access key / secret key)."""


class InvalidTokenError(ClearMLError):
    """401/30: the session token is bad or expired (the client re-logs in once before raising this)."""


class ForbiddenError(ClearMLError):
    """403: the credentials' role may not call this endpoint."""


class NotFoundError(ClearMLError):
    """An id the server does not know: task 400/101, project 400/401, model 400/201, queue 400/701,
    worker 400/1001, or an endpoint 404/0."""


class StatusTransitionError(ClearMLError):
    """400/110 (or the 400/121 race): the task state machine refused the change."""


class BadRequestError(ClearMLError):
    """Any other 4xx API error (validation, queue already holds the task, ...)."""


class ServerUnavailableError(ClearMLError):
    """The server could not be reached or did not answer with the API envelope.

    `reason` is one of: "refused", "dns", "timeout", "tls", "http_5xx", "not_json", "network".
    """

    def __init__(
        self, endpoint: str, reason: str, message: str, code: int = 0, subcode: int = 0
    ) -> None:
        self.reason = reason
        super().__init__(endpoint, code, subcode, message)


NOT_FOUND_SUBCODES = {101, 201, 401, 701, 1001}
STATUS_TRANSITION_SUBCODES = {110, 121}
CREDENTIALS_SUBCODES = {10, 20, 21, 22}


def error_from_envelope(endpoint: str, code: int, subcode: int, message: str) -> ClearMLError:
    """The typed error for an API envelope whose result_code is not 2xx (message already redacted)."""
    if code == 401:
        # 401/30 (and the other 3x token subcodes: revoked, blocked) are token problems, the rest are keys
        if 30 <= subcode < 40:
            return InvalidTokenError(endpoint, code, subcode, message)
        return CredentialsError(endpoint, code, subcode, message)
    if code == 403:
        return ForbiddenError(endpoint, code, subcode, message)
    if code == 404 or (code == 400 and subcode in NOT_FOUND_SUBCODES):
        return NotFoundError(endpoint, code, subcode, message)
    if code == 400 and subcode in STATUS_TRANSITION_SUBCODES:
        return StatusTransitionError(endpoint, code, subcode, message)
    if code >= 500:
        return ServerUnavailableError(endpoint, "http_5xx", message, code, subcode)
    return BadRequestError(endpoint, code, subcode, message)
