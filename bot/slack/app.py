"""The Bolt app factory. Nothing is built at import time: `create_app(settings, store=...)` builds the Web API
client, the outbox (with the durable outbox behind it), the router, the work pool, the action core's dependencies
and button signer, and the incident pipeline; registers the listener modules, and returns the `App`. The threads
that drain the durable outbox and run schedules are `serve`'s (bot/slack/background.py).

Listeners are registered per domain (`bot/slack/<domain>/listeners.py`, each with `register(app)`); what they need
arrives in Bolt's context as `context["services"]` (a `BotServices`), put there by a global middleware.
"""

from __future__ import annotations

import logging
import os
import random
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from slack_bolt import App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.error import BoltError
from slack_sdk import WebClient

from bot.actions.policy import Authorizer
from bot.config import Settings
from bot.engine.window import ReadWindow
from bot.errors import BotError
from bot.routing import Router
from bot.slack.actions import listeners as action_listeners
from bot.slack.actions import verify_hashes
from bot.slack.client import make_web_client
from bot.slack.commands import listeners as command_listeners
from bot.slack.delivery.sink import SlackSink
from bot.slack.home import listeners as home_listeners
from bot.slack.incidents import listeners as incident_listeners
from bot.slack.services import BotServices, slack_secrets_from_env
from bot.slack.workpool import WorkPool
from bot.store import Store

log = logging.getLogger(__name__)

# Listener modules, each with `register(app)`.
LISTENER_MODULES = (command_listeners, verify_hashes, action_listeners, incident_listeners, home_listeners)

_SERVICES: weakref.WeakKeyDictionary[App, BotServices] = weakref.WeakKeyDictionary()


class SlackAuthError(BotError):
    """Slack refused the bot token (invalid_auth and friends): the message says which variable to fix."""


def playbooks_directory(settings: Settings, override: str | os.PathLike[str] | None = None) -> Path:
    """`--playbooks DIR`, else the config file's `playbooks`, else ./playbooks, else the shipped playbooks."""
    from bot.engine.playbook_sources import playbooks_location

    return playbooks_location(override, settings.playbooks).path


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
    # late-bound: the Slack writes are redacted with everything the services know (ClearML keys of every server
    # included): interactive ones by the sink, queued ones by the durable outbox as it writes their rows
    def known_secrets() -> list[str]:
        return services.secrets() if services is not None else secrets

    outbox = SlackSink(client, secrets=known_secrets)
    outbox.durable = _durable_outbox(store, known_secrets)
    pool = pool or WorkPool(quiet_s=0.02)  # a burst of commands is acked before their work starts
    services = BotServices(
        settings=settings,
        store=store,
        outbox=outbox,
        router=Router(settings.slack),
        pool=pool,
        playbooks_dir=playbooks_directory(settings, playbooks_dir),
        # one per process, for action buttons and incident buttons alike: its user-group cache is the only one;
        # usergroups.users.list is a blocking call, run off the loop on the pool's I/O threads
        authorizer=Authorizer(settings.actions, group_members=outbox.usergroup_members, offload=pool.io),
        command=settings.slack.command,
        slack_secrets=secrets,
        reads=ReadWindow(settings.read_window_s),
    )
    _wire_actions(services)
    from bot.slack.incidents.service import build_pipeline

    services.incidents = build_pipeline(services)
    from bot.slack.home.service import HomeService

    services.home = HomeService(services)
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
    except BaseException as exc:
        if services.action_store is not None and services.action_store is not store:
            services.action_store.close()  # nobody else will: the caller gets no app to shut down
        if isinstance(exc, BoltError):
            raise SlackAuthError(
                f"Slack refused SLACK_BOT_TOKEN ({_short_error(exc)}): copy the Bot User OAuth Token (xoxb-…) from "
                "the app's OAuth & Permissions page, or reinstall the app to the workspace"
            ) from None
        raise
    app.use(_well_formed)  # first: listeners may rely on the field types Slack documents
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


def _durable_outbox(store: Store, secrets: Callable[[], Iterable[str]]) -> Any:
    """One per process: at construction it marks messages a killed predecessor was sending as uncertain."""
    from bot.slack.delivery import Outbox as DurableOutbox

    return DurableOutbox(store, rng=random.Random(), secrets=secrets)


def _wire_actions(services: BotServices) -> None:
    """The action core's collaborators, once per process: a second store connection (audit and idempotency rows
    commit on their own), the services' authorizer, the button signer."""
    from bot.actions import ActionDeps
    from bot.actions.executor import signer_for
    from bot.slack.actions.buttons import ButtonMaker

    store = services.store
    services.action_store = store if str(store.path) == ":memory:" else Store(store.path)
    deps = ActionDeps(
        authorizer=services.authorizer,  # the services' one: action buttons share its user-group cache
        extra_secrets=list(services.slack_secrets),
    )
    try:
        signer_for(services.action_store, deps)  # the key now: a problem shows at start, not at the first click
    except (ValueError, OSError) as exc:
        log.warning("action buttons are off: %s", exc)
    services.action_deps = deps
    services.buttons = ButtonMaker(services.settings, services.action_store, deps)


def services_of(app: App) -> BotServices:
    return _SERVICES[app]


def shutdown_app(app: App, timeout: float = 10.0) -> None:
    """Let running jobs finish (up to `timeout`), then stop the work pool and close the actions' store connection."""
    services = _SERVICES.get(app)
    if services is not None:
        from bot.storage.datasets import stop_all_hashing

        stop_all_hashing()  # a dataset hash check can take hours: it ends now, not after the jobs' grace period
        services.pool.stop(timeout)
        if services.action_store is not None and services.action_store is not services.store:
            services.action_store.close()
            services.action_store = None


def _inject(services: BotServices) -> Callable[..., BoltResponse]:
    def inject_services(context: BoltContext, next: Callable[[], BoltResponse]) -> BoltResponse:
        context["services"] = services
        return next()

    return inject_services


# Interaction payload fields that Slack always sends as objects (when it sends them at all).
_OBJECT_FIELDS = ("user", "channel", "team", "container", "message", "view", "state", "enterprise")
_NULLABLE = ("enterprise", "team")


def _malformed(body: Any) -> str | None:
    """Why a request does not have the shape Slack documents (None when it does). Only Slack can send signed
    requests, so this is a guard against surprises, not a security boundary: listeners stay simple and a stray
    shape gets a clear 400 instead of a listener crashing half-way."""
    if not isinstance(body, dict):
        return "the body is not an object"
    if "type" in body and not isinstance(body["type"], str):
        return "`type` is not a string"
    for name in _OBJECT_FIELDS:
        # Slack sends `"enterprise": null` (and may for `team`) outside Enterprise Grid; the others are objects
        if name in body and not isinstance(body[name], dict) and not (body[name] is None and name in _NULLABLE):
            return f"`{name}` is not an object"
    actions = body.get("actions")
    if actions is not None:
        if not isinstance(actions, list) or not actions:
            return "`actions` is not a non-empty list"
        for action in actions:
            if not isinstance(action, dict) or not isinstance(action.get("action_id"), str):
                return "an action has no `action_id`"
            if any(k in action and not isinstance(action[k], str) for k in ("value", "block_id", "type")):
                return "an action's value, block_id or type is not a string"
    values = (body.get("state") or {}).get("values")
    if values is not None and not (isinstance(values, dict) and all(isinstance(v, dict) for v in values.values())):
        return "`state.values` is not an object of objects"
    blocks = (body.get("message") or {}).get("blocks")
    if blocks is not None and not isinstance(blocks, list):
        return "`message.blocks` is not a list"
    return None


def _well_formed(body: dict[str, Any], next: Callable[[], BoltResponse]) -> BoltResponse:
    problem = _malformed(body)
    if problem is not None:
        log.warning("refused a malformed Slack request: %s", problem)
        return BoltResponse(status=400, body=f"malformed Slack request: {problem}")
    return next()


def _on_error(error: Exception, body: dict[str, Any], request: BoltRequest) -> None:
    # Bolt answers 500 (or nothing, after an ack); the log gets the traceback, never the tokens.
    log.exception("listener failed for a %s request: %s", body.get("type") or body.get("command"), type(error).__name__)


def _short_error(exc: BoltError) -> str:
    text = str(exc)
    for code in ("invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"):
        if code in text:
            return code
    return text[:120]
