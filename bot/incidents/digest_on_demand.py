"""A digest on demand (`/clearml digest [channel]`, `clearml-chatops digest`): what the scheduled digest would say
now. It is not recorded, so the schedule's next digest still covers everything since the previous scheduled one
and compares its trends with that."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.incidents.digest import Digest, DigestSettings, build_digest, resolve_permalinks, thread_refs
from bot.routing import Router

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.store import Store


def digest_channel(settings: Settings) -> str | None:
    """Where the scheduled digest goes (the same rule as IncidentPipeline.post_digest)."""
    digest_settings = DigestSettings.from_settings(settings) or DigestSettings()
    return digest_settings.channel or Router(settings.slack).default_channel


def digest_now(
    store: Store,
    settings: Settings,
    now: datetime,
    *,
    since: datetime | None = None,
    permalink: Callable[[str, str], str | None] | None = None,
) -> Digest:
    """The digest for (the last scheduled digest, or `since`, or `period` ago) .. now; reads only. `permalink`
    (channel id, ts) -> link, from Slack: the incident threads get links."""
    digest_settings = DigestSettings.from_settings(settings) or DigestSettings()
    channel = digest_channel(settings)
    digest = build_digest(store, now, settings=digest_settings, since=since, channel=channel)
    links = resolve_permalinks(thread_refs(digest), permalink)
    if not links:
        return digest
    return build_digest(store, now, settings=digest_settings, since=since, channel=channel, permalinks=links)


def digest_json(digest: Digest) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if hasattr(value, "model_dump"):
            return value.model_dump(mode="json")
        if isinstance(value, datetime):
            return value.isoformat()
        return str(value)

    import json

    return json.loads(json.dumps(dataclasses.asdict(digest), default=plain))
