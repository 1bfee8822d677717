"""The Bolt app factory. Nothing is built at import time: `create_app(settings, store=...)` builds the Web API
client, the outbox, the router and the work pool, registers the listener modules, and returns the `App`.

Listeners are registered per domain (`bot/slack/listeners/<domain>.py`, each with `register(app)`); what they need
arrives in Bolt's context as `context["services"]` (a `BotServices`), put there by a global middleware.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slack_bolt import App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.error import BoltError
from slack_sdk import WebClient

from bot.config import Settings
from bot.slack.client import make_web_client
from bot.slack.listeners import commands, datasets
from bot.slack.outbox import Outbox
from bot.slack.routing import Router
from bot.slack.services import BotServices, slack_secrets_from_env
from bot.slack.workpool import WorkPool
from bot.store import Store

log = logging.getLogger(__name__)

# Listener modules, each with `register(app)`. Actions (issue 5) and incident buttons (issue 6) add theirs here.
LISTENER_MODULES = (commands, datasets)

_SERVICES: weakref.WeakKeyDictionary[App, BotServices] = weakref.WeakKeyDictionary()


class SlackAuthError(Exception):
    """Slack refused the bot token (invalid_auth and friends): the message says which variable to fix."""


def playbooks_directory(settings: Settings, override: str | os.PathLike[str] | None = None) -> Path:
    """`--playbooks DIR`, else the config file's `playbooks`, else ./playbooks."""
    return Path(override or settings.playbooks or "playbooks")


def create_app(
    settings: Settings,
    *,
    store: Store,
    token: str | None = None,
    signing_secret: str | None = None,
    client: WebClient | None = None,
    socket_mode: bool = False,
    playbooks_dir: str | os.PathLike[str] | None = None,
    pool: WorkPool | None = None,
    extra_secrets: list[str] | None = None,
    logger: logging.Logger | None = None,
) -> App:
    """Build the Bolt app. Calls `auth.test` once (through Bolt) and raises SlackAuthError if Slack refuses the token.

    `socket_mode=True` disables request signing checks (the websocket is authenticated); in HTTP mode the signing
    secret is required. The returned app owns a started WorkPool: call `shutdown_app(app)` to stop it.
    """
    token = token or os.environ.get("SLACK_BOT_TOKEN")
    if not token:
        raise SlackAuthError("SLACK_BOT_TOKEN is not set (the Bot User OAuth Token, xoxb-…)")
    if not socket_mode:
        signing_secret = signing_secret or os.environ.get("SLACK_SIGNING_SECRET")
        if not signing_secret:
            raise SlackAuthError("SLACK_SIGNING_SECRET is not set (Basic Information → App Credentials)")
    client = client or make_web_client(token, settings)
    secrets = [s for s in (token, signing_secret, *(extra_secrets or []), *slack_secrets_from_env()) if s]
    services: BotServices | None = None
    # late-bound: the outbox redacts with everything the services know (ClearML keys of every server included)
    outbox = Outbox(client, secrets=lambda: services.secrets() if services is not None else secrets)
    services = BotServices(
        settings=settings,
        store=store,
        outbox=outbox,
        router=Router(settings.slack),
        pool=pool or WorkPool(),
        playbooks_dir=playbooks_directory(settings, playbooks_dir),
        command=settings.slack.command,
        slack_secrets=secrets,
    )
    try:
        app = App(
            client=client,  # carries the token (passing both makes Bolt warn that `token` is unused)
            signing_secret=signing_secret or "",
            request_verification_enabled=not socket_mode,
            # Listeners run inline and ack at once, handing slow work to our WorkPool: Bolt's own listener thread
            # pool is not in the request path at all, so it cannot be what fills up under load.
            process_before_response=True,
            name="clearml-chatops",
            logger=logger or logging.getLogger("bot.slack.bolt"),
        )
    except BoltError as exc:
        raise SlackAuthError(
            f"Slack refused SLACK_BOT_TOKEN ({_short_error(exc)}): copy the Bot User OAuth Token (xoxb-…) from "
            "the app's OAuth & Permissions page, or reinstall the app to the workspace"
        ) from None
    app.use(_inject(services))
    app.error(_on_error)
    for module in LISTENER_MODULES:
        module.register(app)
    services.pool.start()
    _SERVICES[app] = services
    # Warm up what the first command would otherwise pay for in its ack: the check registry and server resolution.
    from bot.engine.registry import load_builtin_checks

    load_builtin_checks()
    if not services.servers:
        log.warning(
            "no ClearML server is configured (servers: in the config file, or CLEARML_API_HOST): commands that ask "
            "ClearML will answer with that error"
        )
    return app


def services_of(app: App) -> BotServices:
    return _SERVICES[app]


def shutdown_app(app: App, timeout: float = 10.0) -> None:
    """Let running jobs finish (up to `timeout`), then stop the work pool."""
    services = _SERVICES.get(app)
    if services is not None:
        services.pool.stop(timeout)


def _inject(services: BotServices) -> Callable[..., BoltResponse]:
    def inject_services(context: BoltContext, next: Callable[[], BoltResponse]) -> BoltResponse:
        context["services"] = services
        return next()

    return inject_services


def _on_error(error: Exception, body: dict[str, Any], request: BoltRequest) -> None:
    # Bolt answers 500 (or nothing, after an ack); the log gets the traceback, never the tokens.
    log.exception("listener failed for a %s request: %s", body.get("type") or body.get("command"), type(error).__name__)


def _short_error(exc: BoltError) -> str:
    text = str(exc)
    for code in ("invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"):
        if code in text:
            return code
    return text[:120]
