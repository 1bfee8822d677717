"""Task references: how a user names a task or dataset (an id or a ClearML web UI link), one grammar for the
slash-command look-ups and the actions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from bot.errors import LookupInputError

if TYPE_CHECKING:
    from bot.config import ServerSettings

TASK_ID = re.compile(r"^[0-9a-f]{32}$")
# Path segments after which the web UI puts a task id: /projects/<p>/experiments/<id>/..., /tasks/<id>,
# /datasets/simple/<p>/experiments/<id>.
_ID_AFTER = ("experiments", "tasks", "task", "datasets")
# Task ids out of pasted web UI links inside any text: .../projects/<p>/experiments/<id>/... or .../tasks/<id>/...
_TASK_URL = re.compile(r"/(?:experiments|tasks)/([0-9a-f]{32})(?:[/?#]|$)")


def _netloc(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}"


def _known_netlocs(server: ServerSettings) -> tuple[str, ...]:
    out = []
    for url in (server.web_url, server.api_url):
        try:
            out.append(_netloc(url))
        except ValueError:  # a misconfigured server URL matches nothing (doctor reports it)
            continue
    return tuple(out)


@dataclass(frozen=True)
class Ref:
    """A task or dataset reference as the user gave it: the id, and the server a link pointed at (if any)."""

    id: str
    server: str | None = None  # server name when given by a link
    from_url: bool = False


def parse_ref(text: str, servers: Sequence[ServerSettings], *, kind: str = "task") -> Ref:
    """A task/dataset id (32 hex characters) or a ClearML web UI link to one.

    A link must come from one of the configured servers' web (or API) hosts; a link to any other ClearML server is
    refused with a message naming the servers this bot knows, since silently looking the id up elsewhere would show
    the wrong thing or nothing.
    """
    value = text.strip().strip("<>").split("|", 1)[0]
    if TASK_ID.match(value.lower()):
        return Ref(value.lower())
    if not re.match(r"^https?://", value, re.I):
        raise LookupInputError(
            f"`{short(value)}` is not a {kind} id (32 hexadecimal characters, like "
            f"`4f2c0d7e9a8b4c1d8e5f6a7b8c9d0e1f`) or a link to the {kind} in the ClearML web UI."
        )
    try:
        where = _netloc(value)
    except ValueError:  # `http://h:8080.evil/…`, `http://[::1/…`, port 99999: urllib refuses to read the port
        raise LookupInputError(
            f"`{short(value)}` is not a valid link (its host or port cannot be read). Paste the address from the "
            f"ClearML web UI as it is, or just the 32-character {kind} id."
        ) from None
    match = next((s for s in servers if where in (_known_netlocs(s))), None)
    if match is None:
        known = ", ".join(f"{s.name} ({s.web_url})" for s in servers) or "none configured"
        raise LookupInputError(
            f"That link points at `{urlsplit(value).netloc}`, which is not a ClearML server this bot watches "
            f"({known}). Paste a link from one of those, or just the {kind} id."
        )
    found = _id_from_url(value)
    if found is None:
        raise LookupInputError(
            f"I found no {kind} id in that link. Open the {kind} in the ClearML web UI and copy the address "
            f"(it contains `/experiments/<id>`), or paste the 32-character {kind} id."
        )
    return Ref(found, server=match.name, from_url=True)


def _id_from_url(url: str) -> str | None:
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    for i, seg in enumerate(segments[:-1]):
        if seg.lower() in _ID_AFTER and TASK_ID.match(segments[i + 1].lower()):
            candidate = segments[i + 1].lower()
            # /datasets/simple/<project>/experiments/<id>: keep looking for the later, more specific id
            later = _id_after(segments[i + 2 :])
            return later or candidate
    for values in parse_qs(parts.query).values():
        for v in values:
            if TASK_ID.match(v.lower()):
                return v.lower()
    return None


def _id_after(segments: list[str]) -> str | None:
    for i, seg in enumerate(segments[:-1]):
        if seg.lower() in ("experiments", "tasks") and TASK_ID.match(segments[i + 1].lower()):
            return segments[i + 1].lower()
    return None


def short(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters, its backticks made quotes: safe inside a code span of an error."""
    text = text.replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def task_id_of(subject: str) -> str:
    """An action's subject as a task id, also out of a pasted web UI link; anything else is returned stripped (the
    server judges it). Unlike `parse_ref` it refuses nothing: a finding's or button's subject is already an id."""
    text = subject.strip()
    match = _TASK_URL.search(text)
    if match:
        return match.group(1)
    return text
