"""Signed, expiring button values.

A button's `value` is `<payload>.<mac>`: the payload is compact JSON (action, server, subject, params,
issued-at, expiry, nonce) in base64url, the mac is HMAC-SHA256 over the encoded payload with the bot's
signing key. Slack hands the value back verbatim on a click, so anything a user (or a forged request) changes
fails the MAC, and an old message's buttons stop working after `actions.button_ttl`.

The key comes from $CLEARML_CHATOPS_SIGNING_KEY, else from `signing.key` next to the store, created once
(0600) on first use so that restarts keep old buttons valid.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.errors import BotError

ENV_KEY = "CLEARML_CHATOPS_SIGNING_KEY"
KEY_FILE = "signing.key"
MAX_VALUE_LEN = 2000  # Slack's limit for a button value
_VERSION = 1


class TokenError(BotError):
    """A button value that must not be acted on."""

    outcome = "tampered"


class TamperedToken(TokenError):
    """Malformed, or the MAC does not match (changed, forged, or signed with another key)."""

    outcome = "tampered"


class ExpiredToken(TokenError):
    """Validly signed but past its expiry; `claims` says what it was for (safe: the MAC verified)."""

    outcome = "expired"

    def __init__(self, message: str, claims: ButtonClaims) -> None:
        super().__init__(message)
        self.claims = claims


@dataclass(frozen=True)
class ButtonClaims:
    action: str
    server: str | None
    subject: str
    params: dict[str, Any]
    issued_at: int  # epoch seconds
    expires_at: int
    nonce: str  # identifies this button: the idempotency key of its click
    bound: dict[str, str] = field(default_factory=dict)  # where it may be clicked: {"c": channel id, "m": message ts}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the signing key must be at least 16 bytes")
        self._key = key

    @classmethod
    def from_env_or_dir(cls, directory: str | os.PathLike[str] | None) -> Signer:
        """$CLEARML_CHATOPS_SIGNING_KEY, else `<directory>/signing.key` (generated once)."""
        env = os.environ.get(ENV_KEY)
        if env:
            if len(env) < 16:
                raise ValueError(f"{ENV_KEY} is too short: use 16+ random characters (e.g. openssl rand -hex 32)")
            return cls(env.encode())
        if directory is None:
            raise ValueError(f"no signing key: set {ENV_KEY} or use a store file (its directory keeps {KEY_FILE})")
        return cls(_load_or_create_key(Path(directory) / KEY_FILE))

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(
        self,
        action: str,
        subject: str,
        *,
        server: str | None = None,
        params: dict[str, Any] | None = None,
        ttl_s: float = 86400.0,
        now: float | None = None,
        nonce: str | None = None,
        bind: dict[str, str] | None = None,
    ) -> str:
        """`bind`: the channel ("c") and, when known, the message ("m") the button is posted in; a click anywhere
        else is refused (the executor compares them with where the click came from)."""
        issued = int(now if now is not None else time.time())
        body = {
            "v": _VERSION,
            "a": action,
            "s": server,
            "j": subject,
            "p": params or {},
            "i": issued,
            "e": issued + int(ttl_s),
            "n": nonce or secrets.token_urlsafe(9),
        }
        if bind:
            body["b"] = {k: str(v) for k, v in bind.items() if v}
        payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        value = f"{payload}.{self._mac(payload)}"
        if len(value) > MAX_VALUE_LEN:
            raise ValueError(f"button value is {len(value)} characters, over Slack's {MAX_VALUE_LEN}: params too big")
        return value

    def verify(self, value: str, *, now: float | None = None) -> ButtonClaims:
        """The claims of a genuine, unexpired value; TamperedToken / ExpiredToken otherwise."""
        if not isinstance(value, str) or value.count(".") != 1 or len(value) > MAX_VALUE_LEN:
            raise TamperedToken("button value is not a signed clearml-chatops value")
        payload, mac = value.split(".")
        # compare_digest: no timing oracle for forging the MAC byte by byte
        if not hmac.compare_digest(self._mac(payload), mac):
            raise TamperedToken("button value signature does not match (changed, forged or from another bot key)")
        try:
            body = json.loads(_unb64(payload))
            claims = ButtonClaims(
                action=str(body["a"]),
                server=body.get("s"),
                subject=str(body["j"]),
                params=dict(body.get("p") or {}),
                issued_at=int(body["i"]),
                expires_at=int(body["e"]),
                nonce=str(body["n"]),
                bound={str(k): str(v) for k, v in (body.get("b") or {}).items()},
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            # Signed by us but unreadable: a bug or a key shared with something else. Refuse the same way.
            raise TamperedToken(f"button value payload is unreadable: {type(exc).__name__}") from None
        if body.get("v") != _VERSION:
            raise TamperedToken(f"button value version {body.get('v')!r} is not supported")
        current = now if now is not None else time.time()
        if current >= claims.expires_at:
            when = datetime.fromtimestamp(claims.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
            raise ExpiredToken(f"this button expired at {when}: run the check again for fresh buttons", claims)
        return claims


def _load_or_create_key(path: Path) -> bytes:
    """Read the key file, creating it atomically (O_EXCL) if missing so two processes agree on one key."""
    for _ in range(50):
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue  # another process won the race: read its key
            tmp_key = secrets.token_hex(32)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(tmp_key + "\n")
            return tmp_key.encode()
        if text:
            return text.encode()
        time.sleep(0.01)  # created by another process but not written yet
    raise ValueError(f"signing key file {path} stays empty: delete it, or set {ENV_KEY}")
