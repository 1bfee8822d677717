"""The Slack Web API client: slack_sdk's WebClient with retries for rate limits (429 + Retry-After), server
errors (5xx) and connection errors, pointed at `SLACK_API_URL` / `slack.api_url` when set.

`METHOD_SCOPES` lists every Web API method the bot calls and the bot-token scopes it needs. The manifest's scopes
are derived from (and tested against) this table, so it is the single place to touch when a new call is added.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler

from bot import metrics

if TYPE_CHECKING:
    from bot.config import Settings

DEFAULT_API_URL = "https://slack.com/api/"
# The bot user's name in manifest.yml (`features.bot_user.display_name`): what people type to invite it.
BOT_DISPLAY_NAME = "clearml-chatops"

# Web API method -> bot scopes it needs. Methods with no scope (auth.test) or that use the app-level token
# (apps.connections.open: `connections:write` on the xapp- token, not a bot scope) map to ().
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "apps.connections.open": (),
    # chat:write posts where the bot is a member; chat:write.public lets it post to any public channel without
    # joining first (so routing to a public channel needs no invite; private channels still need one).
    "chat.postMessage": ("chat:write", "chat:write.public"),
    "chat.update": ("chat:write",),
    "chat.delete": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    # tell the owner (playbooks with notify_owner): find the task owner's Slack user by e-mail, open the DM
    "users.lookupByEmail": ("users:read.email",),
    "conversations.open": ("im:write",),
    # who may press a mutating button: `actions.allow.<action>.usergroups` (bot/actions/policy.py)
    "usergroups.users.list": ("usergroups:read",),
    # the durable outbox (bot/slack/delivery): after a crash mid-send it looks for the message it may have posted (by
    # the dedupe key in its metadata) before posting again, and turns a routed `#name` into the channel's id
    "conversations.history": ("channels:history", "groups:history"),
    "conversations.replies": ("channels:history", "groups:history"),
    "conversations.list": ("channels:read", "groups:read"),
    "conversations.info": ("channels:read", "groups:read"),  # `doctor`: can the bot post in each routed channel
    # charts (bot/charts) into digest and incident threads, by slack_sdk's files_upload_v2 (through the outbox)
    "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",),
    # the App Home tab (bot/slack/home): Slack documents no scope for publishing a bot's own Home view
    "views.publish": (),
    # links to incident threads (digest, `/clearml incidents`) in the workspace's own domain: no scope needed
    "chat.getPermalink": (),
}

# Scopes the bot works without, with what is lost: `doctor` warns instead of failing, and the bot leaves the
# feature out when the token's scopes (X-OAuth-Scopes of auth.test) do not include the scope.
OPTIONAL_SCOPES: dict[str, str] = {
    "files:write": "charts are not uploaded: digests and incident threads go out with text trends only",
    # only playbooks with notify_owner use these
    "users:read.email": "playbooks with notify_owner cannot find a task owner by e-mail (slack.owners entries that "
    "give a Slack user id still work)",
    "im:write": "playbooks with notify_owner cannot open a DM with a task's owner",
}

# Scopes not tied to a Web API call: `commands` is what lets the app own a slash command.
FEATURE_SCOPES: tuple[str, ...] = ("commands",)


def required_bot_scopes() -> set[str]:
    """Exactly the bot scopes the code needs: the manifest must list these and no others."""
    scopes = set(FEATURE_SCOPES)
    for needed in METHOD_SCOPES.values():
        scopes.update(needed)
    return scopes


def api_base_url(settings: Settings | None = None) -> str:
    """`SLACK_API_URL`, else `slack.api_url` from the config file, else Slack's own; always ends with `/`."""
    url = os.environ.get("SLACK_API_URL") or (settings.slack.api_url if settings is not None else None)
    url = (url or DEFAULT_API_URL).strip()
    return url if url.endswith("/") else url + "/"


def retry_handlers(max_rate_limit_retries: int = 5, max_server_error_retries: int = 3) -> list[RetryHandler]:
    """429 -> wait Retry-After and retry; 500/503 -> backoff and retry; connection reset -> retry.

    WebClient retries only connection errors by default, so without these a burst of posts (30 people typing at
    once) would lose messages to `ratelimited`.
    """
    return [
        ConnectionErrorRetryHandler(max_retry_count=2),
        RateLimitErrorRetryHandler(max_retry_count=max_rate_limit_retries),
        ServerErrorRetryHandler(max_retry_count=max_server_error_retries),
    ]


def make_web_client(
    token: str | None,
    settings: Settings | None = None,
    *,
    base_url: str | None = None,
    timeout: int = 15,
    logger: logging.Logger | None = None,
) -> WebClient:
    """A WebClient for the bot token with the retry handlers and the configured base URL."""
    return WebClient(
        token=token,
        base_url=base_url or api_base_url(settings),
        timeout=timeout,
        retry_handlers=metrics.counting(retry_handlers()),  # each retry (429, 5xx, connection) shows on /metrics
        logger=logger or logging.getLogger("bot.slack.web"),
    )
