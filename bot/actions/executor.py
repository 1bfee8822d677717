"""The one entry point both front ends call: `execute_action`, plus `plan_action` (for confirm dialogs and the
terminal prompt), `button_value` and `confirm_spec` (for rendering buttons).

Order of checks in execute_action, each ending in an audit row when it stops the action:
verify the signed button value (tampered / expired) -> validate the action and params -> authorize (denied)
-> claim the idempotency key (duplicate) -> plan (read-only; refused) -> dry run? report the plan
-> execute the steps in order (failed: reported with what was and was not done, retry offered when the
failure is transient) -> ok.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bot.actions import audit, runs
from bot.actions.base import (
    ActionError,
    ActionOutcome,
    ActionRequest,
    ActionSpec,
    Actor,
    BackendError,
    ExecState,
    Link,
    OutcomeLink,
    Plan,
    Refusal,
    get_spec,
    resolve_value,
    utc_hhmm,
)
from bot.actions.context import ActionContext, ClientLike
from bot.actions.policy import Authorizer
from bot.actions.tokens import ButtonClaims, ExpiredToken, Signer, TokenError
from bot.clearml.errors import ClearMLError, ServerUnavailableError, StatusTransitionError
from bot.config import ConfigError, ServerSettings, Settings, resolve_server
from bot.durations import parse_duration
from bot.errors import BotError
from bot.mrkdwn import neutral
from bot.redact import redact
from bot.store import Store

ClientFactory = Callable[[ServerSettings], ClientLike]
log = logging.getLogger(__name__)


@dataclass
class ActionDeps:
    """Injectable collaborators. Create one per process and reuse it: the authorizer caches group members.

    client_factory: ClearML client for a server (default: bot.clearml.client.ClearMLClient).
    server_resolver: server name (None = default) -> ServerSettings (default: config.resolve_server).
    authorizer: who may do what (default: from settings.actions, no user-group resolver).
    signer: button signing (default: $CLEARML_CHATOPS_SIGNING_KEY or signing.key next to the store).
    clock: now() as an aware datetime (tests pin it).
    owns_clients: True (default) closes each client after the action. Set False when client_factory hands out
        long-lived shared clients (e.g. the Slack app's one client per server): building a client costs
        ~0.1 s (TLS trust store), so reusing one matters on a busy bot.
    """

    client_factory: ClientFactory | None = None
    server_resolver: Callable[[str | None], ServerSettings] | None = None
    authorizer: Authorizer | None = None
    signer: Signer | None = None
    clock: Callable[[], datetime] | None = None
    owns_clients: bool = True
    extra_secrets: list[str] = field(default_factory=list)  # more strings to redact (Slack tokens, ...)

    def now(self) -> datetime:
        return self.clock() if self.clock else datetime.now(UTC)


def default_client(server: ServerSettings) -> ClientLike:
    """The ClearML client an action uses when `ActionDeps.client_factory` is not set (public: the reproduce
    watcher opens its clients the same way)."""
    from bot.clearml.client import ClearMLClient

    return ClearMLClient(server)


async def release(client: ClientLike, deps: ActionDeps) -> None:
    """Close a client we created; leave shared ones (owns_clients=False) open. Never raises: closing must not
    turn a done action into an error."""
    if not deps.owns_clients:
        return
    try:
        await client.aclose()
    except Exception:
        pass


def signer_for(store: Store | None, deps: ActionDeps | None = None) -> Signer:
    if deps and deps.signer:
        return deps.signer
    directory = None if store is None or str(store.path) == ":memory:" else store.path.parent
    signer = Signer.from_env_or_dir(directory)
    if deps is not None:
        deps.signer = signer
    return signer


def server_resolver_for(settings: Settings, deps: ActionDeps) -> Callable[[str | None], ServerSettings]:
    """Server name -> its settings: `deps.server_resolver`, else the configuration's."""
    return deps.server_resolver or (lambda name: resolve_server(settings, name))


# -------------------------------------------------------------------------------------- for rendering


def button_value(
    settings: Settings,
    store: Store | None,
    action: str,
    subject: str,
    *,
    server: str | None = None,
    params: dict[str, Any] | None = None,
    deps: ActionDeps | None = None,
    channel: str | None = None,
) -> str:
    """The signed value for a button (expires after actions.button_ttl; bound to `channel` when given)."""
    spec = get_spec(action)
    clean = spec.params_model.model_validate(params or {}).model_dump(exclude_defaults=True)
    ttl = parse_duration(settings.actions.button_ttl)
    now = (deps or ActionDeps()).now()
    return signer_for(store, deps).issue(action, subject, server=server, params=clean, ttl_s=ttl, now=now.timestamp(),
                                         bind={"c": channel} if channel else None)


@dataclass(frozen=True)
class ConfirmSpec:
    """What a confirm dialog says, without calling any server (rendered before anyone clicks)."""

    title: str
    text: str
    confirm: str
    deny: str = "Cancel"
    style: str = "primary"  # "danger" for abort and rotate


def confirm_spec(
    action: str, subject_label: str, params: dict[str, Any] | None = None, *, rotation: str | None = None
) -> ConfirmSpec:
    """`rotation`: what rotate will run for this worker (bot.actions.rotate.describe_rotation)."""
    spec = get_spec(action)
    p = params or {}
    queue = p.get("queue")
    texts = {
        "clone": f"Create a draft copy of {subject_label}"
        + (f" and enqueue it into queue {queue}." if queue else ". You can enqueue it afterwards."),
        "requeue": f"Enqueue {subject_label} into "
        + (f"queue {queue}" if queue else "its original queue")
        + ". If it is stuck running on a dead worker it is stopped (and reset if needed) first.",
        "abort": f"Stop {subject_label}. A running task is killed by its agent; a queued one leaves its queue.",
        "rotate": f"Restart agent {subject_label}: "
        + (rotation or "through the rotate backend configured for it (actions.rotate.backends).")
        + (" Then requeue the task it was running." if p.get("requeue") else ""),
        "reproduce": f"Clone {subject_label}, enqueue the clone, and post how it compares with the original "
        "when it finishes.",
        "prioritize": f"Move {subject_label} to the front of its queue.",
    }
    return ConfirmSpec(
        title=spec.title[:24],  # fits both a confirm object's title and a modal's (24 chars)
        text=texts.get(action, spec.summary),
        confirm=spec.title.split()[0],
        style="danger" if spec.danger else "primary",
    )


async def queue_choices(
    settings: Settings, server: str | None = None, deps: ActionDeps | None = None
) -> list[tuple[str, str]]:
    """(id, name) of the server's queues, for a queue select (clone, requeue, reproduce)."""
    deps = deps or ActionDeps()
    srv = server_resolver_for(settings, deps)(server)
    client = (deps.client_factory or default_client)(srv)
    try:
        queues = await client.get_all("queues.get_all", {}, key="queues")
    finally:
        await release(client, deps)
    return sorted(((q["id"], q.get("name") or q["id"]) for q in queues if q.get("id")), key=lambda x: x[1])


# --------------------------------------------------------------------------------------------- plan


async def plan_action(
    request: ActionRequest,
    *,
    settings: Settings,
    actor: Actor,
    deps: ActionDeps | None = None,
) -> Plan:
    """The plan for a request without executing it (read-only calls only).

    Raises ActionError (bad request), Refusal (not in this state), ConfigError, ClearMLError.
    """
    deps = deps or ActionDeps()
    if not request.action or not request.subject:
        raise ActionError("an action and a subject are required")
    spec = get_spec(request.action)
    params = _validate(spec, request.params)
    server = server_resolver_for(settings, deps)(request.server)
    client = (deps.client_factory or default_client)(server)
    try:
        ctx = ActionContext(client=client, server=server, settings=settings, actor=actor, clock=deps.clock,
                            dry_run=True)
        return await spec.planner(ctx, request.subject, params)
    finally:
        await release(client, deps)


def _validate(spec: ActionSpec, params: dict[str, Any]) -> Any:
    try:
        return spec.params_model.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "params"
        raise ActionError(f"{spec.id}: parameter `{loc}`: {err['msg']}") from None


# ------------------------------------------------------------------------------------------ execute


class StepFailed(BotError):
    def __init__(self, index: int, error: BaseException, state: ExecState) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error
        self.state = state


async def execute_plan(ctx: ActionContext, plan: Plan) -> ExecState:
    """Run the plan's steps in order; StepFailed carries what was done before the failing step."""
    state = ExecState()
    for i, step in enumerate(plan.steps):
        try:
            if step.when is not None and not await step.when.check(state):
                state.skipped.append(step.describe())
                continue
            args = {k: resolve_value(v, state.results) for k, v in step.args.items() if v is not None}
            if step.system == "clearml":
                # Writes are never retried by the client: a lost answer must not apply a change twice.
                result = await ctx.client.call(step.call, args)
            elif step.run is not None:
                result = await step.run(args)
            else:  # pragma: no cover - a planner bug
                raise RuntimeError(f"step {step.call} has no way to run")
        except Exception as exc:
            # finish() still runs: what the done steps created (a clone whose enqueue failed) must be reported
            await _finish_plan(plan, state)
            raise StepFailed(i, exc, state) from exc
        if step.key:
            state.results[step.key] = result if isinstance(result, dict) else {"result": result}
        state.done.append(step.describe())
    await _finish_plan(plan, state)
    return state


async def _finish_plan(plan: Plan, state: ExecState) -> None:
    """Collect links and created ids; a bug here must not turn a done action into a failure."""
    if plan.finish is None:
        return
    try:
        await plan.finish(state)
    except Exception:
        log.exception("finishing plan %s for %s", plan.action, plan.subject)


def _describe_error(exc: BaseException, secrets: list[str]) -> tuple[str, bool]:
    """(message, retry makes sense)."""
    if isinstance(exc, StatusTransitionError):
        return f"the ClearML server refused the status change: {exc.message} ({exc.code}/{exc.subcode})", False
    if isinstance(exc, ServerUnavailableError):
        return f"the ClearML server is unavailable ({exc.reason}): {exc.message}", True
    if isinstance(exc, ClearMLError):
        return f"the ClearML server answered {exc.describe()}", False
    if isinstance(exc, BackendError):
        return redact(str(exc), secrets), exc.retry
    return redact(f"{type(exc).__name__}: {exc}", secrets), False


async def execute_action(
    request: ActionRequest,
    *,
    settings: Settings,
    store: Store,
    actor: Actor,
    confirm_token: str | None = None,
    deps: ActionDeps | None = None,
) -> ActionOutcome:
    """Authorize, plan and execute one action; always returns an outcome (and writes one audit row).

    Slack: pass the clicked button's `value` as `confirm_token` (required for actor.via == "slack") and put
    the user's choices (e.g. `{"queue": "<id>"}` from a select) in `request.params`; leave request.action /
    subject / server None, they come from the signed value. Terminal: set action/subject/server/params on the
    request and pass no token.
    """
    deps = deps or ActionDeps()
    now = deps.now()
    secrets = list(deps.extra_secrets)
    ctx_info: dict[str, Any] = {
        "action": request.action or "?",
        "subject": request.subject or "?",
        "server": request.server or "",
        "params": dict(request.params),
    }

    def finish(status: str, text: str, **kw: Any) -> ActionOutcome:
        # Everything that leaves this function is redacted: command output, argv, server messages.
        for name in ("detail", "plan"):
            if name in kw:
                kw[name] = [redact(line, secrets) for line in kw[name]]
        if kw.get("error"):
            kw["error"] = redact(kw["error"], secrets)
        outcome = ActionOutcome(
            status=status,  # type: ignore[arg-type]
            action=ctx_info["action"],
            server=ctx_info["server"] or "",
            subject=ctx_info["subject"],
            actor_id=actor.id,
            actor_name=actor.name,
            via=actor.via,
            text=redact(text, secrets),
            # no mrkdwn given: the plain text (which quotes task, queue and worker names) as data, never formatting
            mrkdwn=redact(kw.pop("mrkdwn", None) or _as_mrkdwn(text), secrets),
            at=now,
            **kw,
        )
        outcome.audit_id = audit.record(
            store,
            actor=actor,
            action=outcome.action,
            server=outcome.server,
            subject=outcome.subject,
            outcome=status,
            params=ctx_info["params"],
            error=outcome.error,
            # a duplicate created nothing: the ids it shows belong to the first run's row
            created_ids=outcome.created_ids if status != "duplicate" else (),
            detail=outcome.detail or outcome.plan,
            idempotency_key=ctx_info.get("key"),
            context=request.context,
            at=now,
            secrets=secrets,
        )
        return outcome

    # -- 1. the signed button value ---------------------------------------------------------------
    claims: ButtonClaims | None = None
    if actor.via == "slack" or confirm_token is not None:
        if not confirm_token:
            return finish("tampered", "Refused: a Slack action must carry its signed button value.",
                          error="missing signed button value")
        try:
            signer = signer_for(store, deps)
        except (ValueError, OSError) as exc:  # no key and nowhere to keep one: a deployment problem
            return finish("failed", f"Not done: the bot cannot verify buttons: {exc}", error=str(exc))
        try:
            claims = signer.verify(confirm_token, now=now.timestamp())
        except ExpiredToken as exc:
            ctx_info.update(action=exc.claims.action, subject=exc.claims.subject, server=exc.claims.server or "",
                            params=exc.claims.params, key=exc.claims.nonce)
            return finish("expired", f"Not done: {exc}", error=str(exc))
        except TokenError as exc:
            return finish("tampered", "Refused: this button's value failed verification and was not acted on.",
                          error=str(exc))
        mismatch = [
            name
            for name, asked, signed in (
                ("action", request.action, claims.action),
                ("subject", request.subject, claims.subject),
                ("server", request.server, claims.server),
            )
            if asked is not None and asked != signed
        ]
        ctx_info.update(action=claims.action, subject=claims.subject, server=claims.server or "", key=claims.nonce)
        if mismatch:
            return finish("tampered", "Refused: the request does not match its signed button.",
                          error=f"request {', '.join(mismatch)} differ from the signed value")
        misplaced = _misplaced(claims, request.context)
        if misplaced:
            return finish("tampered", "Refused: this button was not clicked where it was posted.", error=misplaced)
    # -- 2. action and params -------------------------------------------------------------------------
    try:
        if claims is not None:
            spec = get_spec(claims.action)
            params_in = dict(claims.params)
            for name, value in request.params.items():
                if name in spec.user_choices:
                    params_in[name] = value  # e.g. the queue picked from a select
                elif name not in claims.params or claims.params[name] != value:
                    raise ActionError(f"parameter `{name}` is fixed by the button and cannot be changed")
            subject, server_name = claims.subject, claims.server
        else:
            if not request.action or not request.subject:
                raise ActionError("an action and a subject are required")
            spec = get_spec(request.action)
            params_in, subject, server_name = dict(request.params), request.subject, request.server
        ctx_info["params"] = params_in
        params = _validate(spec, params_in)
    except ActionError as exc:
        return finish("failed", f"Not done: {exc}", error=str(exc))
    title = spec.title

    # -- 3. authorization ---------------------------------------------------------------------------
    authorizer = deps.authorizer or Authorizer(settings.actions)
    decision = await authorizer.authorize(actor, spec.id)
    if not decision.allowed:
        return finish("denied", f"Not allowed: {decision.reason}.", error=decision.reason)

    # -- 4. server ------------------------------------------------------------------------------------
    try:
        server = server_resolver_for(settings, deps)(server_name)
    except ConfigError as exc:
        return finish("failed", f"Not done: {exc}", error=str(exc))
    ctx_info["server"] = server.name
    secrets += server.secrets()
    dry_run = bool(settings.actions.dry_run or request.dry_run)

    # -- 5. idempotency -------------------------------------------------------------------------------
    key = request.idempotency_key or (claims.nonce if claims else None)
    claimed = False
    if not dry_run:
        key = key or f"terminal-{uuid.uuid4().hex}"
        ctx_info["key"] = key
        existing = runs.claim(store, key, actor=actor, action=spec.id, server=server.name, subject=subject, now=now,
                              context={k: v for k, v in request.context.items()
                                       if k in ("channel", "thread_ts", "message_ts", "incident")})
        if existing is not None:
            return _duplicate(finish, existing)
        claimed = True

    # -- 6. plan and execute --------------------------------------------------------------------------
    client = (deps.client_factory or default_client)(server)
    outcome: ActionOutcome
    try:
        ctx = ActionContext(client=client, server=server, settings=settings, actor=actor, clock=deps.clock,
                            dry_run=dry_run)
        # The same list object: what backends add (command env values, ...) is redacted from the outcome too.
        ctx.secrets = secrets
        ctx.store = store
        ctx.request_context = dict(request.context)
        outcome = await _plan_and_run(ctx, spec, subject, params, request, finish, title, now)
    except Exception as exc:  # a bug, or an error no layer expected: still audited, and the key is released
        log.exception("action %s on %s", spec.id, subject)
        message = redact(f"{type(exc).__name__}: {exc}", secrets)
        outcome = finish("failed", f"{title} failed: internal error ({message}).", error=message)
    finally:
        await release(client, deps)
    if claimed and key:
        status = {"ok": "ok", "refused": "refused"}.get(outcome.status, "failed")
        runs.finish(store, key, status=status, outcome=outcome.model_dump(mode="json"), now=deps.now())
    return outcome


async def _plan_and_run(
    ctx: ActionContext,
    spec: ActionSpec,
    subject: str,
    params: Any,
    request: ActionRequest,
    finish: Callable[..., ActionOutcome],
    title: str,
    now: datetime,
) -> ActionOutcome:
    secrets = ctx.secrets
    try:
        plan = await spec.planner(ctx, subject, params)
    except Refusal as exc:
        # name the alternative once: unless the reason already says what to do instead
        says_it = exc.alternative is None or exc.alternative in exc.reason or "instead" in exc.reason
        reason = exc.reason.rstrip()
        text = f"Not done: {reason}" + ("" if reason.endswith((".", "!", "?")) else ".")
        if not says_it:
            text += f" Use {exc.alternative} instead."
        return finish("refused", text, error=exc.reason, alternative=exc.alternative)
    except (ClearMLError, BackendError) as exc:
        message, retry = _describe_error(exc, secrets)
        return finish("failed", f"{title} not started: {message}." + (" Retry?" if retry else ""),
                      error=message, retry=retry)
    ctx_subject_label = plan.subject_label
    lines = plan.lines() + [f"note: {n}" for n in plan.notes]
    if request.confirmed_plan and request.confirmed_plan != plan.digest:
        reason = "the situation changed since you confirmed; review the new plan"
        return finish("refused", f"Not done: {reason}.", error=reason, plan=lines, detail=lines,
                      plan_digest=plan.digest)
    if ctx.dry_run:
        text = f"Dry run, nothing done. {plan.summary} Would call: " + "; ".join(s.describe() for s in plan.steps)
        return finish("dry_run", text, plan=lines, detail=lines,
                      plan_digest=plan.digest, links=_links(plan.links))
    try:
        state = await execute_plan(ctx, plan)
    except StepFailed as failure:
        message, retry = _describe_error(failure.error, secrets)
        if isinstance(failure.error, BackendError) and failure.error.output:
            failure.state.detail.append(redact(failure.error.output, secrets))
        step = plan.steps[failure.index]
        done = failure.state.done
        detail = [f"done: {d}" for d in done] + [f"FAILED: {step.describe()}: {message}"]
        detail += [f"not done: {s.describe()}" for s in plan.steps[failure.index + 1:]]
        detail += failure.state.detail
        progress = f" after {len(done)} of {len(plan.steps)} steps" if done else ""
        text = f"{title} failed for {ctx_subject_label} at {step.call}{progress}: {message}." + (
            " Retry?" if retry else ""
        )
        return finish("failed", text, error=message, retry=retry, plan=lines, detail=detail,
                      created_ids=failure.state.created_ids, links=_links(failure.state.links),
                      plan_digest=plan.digest)
    links = state.links or plan.links
    when = utc_hhmm(now)
    text = f"{plan.verb} by {ctx.actor.label} at {when}"
    mrkdwn = f"{plan.verb} by {ctx.actor.mention} at {when}"
    if links:
        text += f" → {links[0].label} {links[0].url}"
        mrkdwn += f" → <{links[0].url}|{_mrkdwn_escape(links[0].label)}>"
    detail = [f"done: {d}" for d in state.done] + [f"skipped: {s}" for s in state.skipped] + state.detail
    return finish("ok", text, mrkdwn=mrkdwn, plan=lines, detail=detail, links=_links(links),
                  created_ids=state.created_ids, watch_id=state.extra.get("watch_id"), plan_digest=plan.digest)


def _misplaced(claims: ButtonClaims, context: dict[str, Any]) -> str | None:
    """Why a click's place does not match its signed value (None when it does): the channel and message the value
    is bound to, and (from Slack's payload) whether the clicked message really carries this value."""
    channel, message = context.get("channel"), context.get("message_ts")
    if claims.bound.get("c") and channel and channel != claims.bound["c"]:
        return f"the value is bound to channel {claims.bound['c']}, clicked in {channel}"
    if claims.bound.get("m") and message and message != claims.bound["m"]:
        return f"the value is bound to message {claims.bound['m']}, clicked on {message}"
    if context.get("in_message") is False:
        return "the value is not one of the clicked message's buttons"
    return None


def _links(links: list[Link]) -> list[OutcomeLink]:
    return [OutcomeLink(label=link.label, url=link.url) for link in links]


def _mrkdwn_escape(text: str) -> str:
    """A link label: data (see `_as_mrkdwn`), and no `|` (it would split the link)."""
    return _as_mrkdwn(text).replace("|", "¦")


def _as_mrkdwn(text: str) -> str:
    """Plain outcome text for Slack: escaped, formatting and newlines neutralised (no mention or link survives)."""
    return neutral(text)


def _duplicate(finish: Callable[..., ActionOutcome], existing: runs.RunRow) -> ActionOutcome:
    when = utc_hhmm(existing.started_at)
    mention = f"<@{existing.actor_id}>" if existing.via == "slack" else _as_mrkdwn(existing.actor_label)
    prior = existing.outcome or {}
    if existing.status == "running":
        text = f"Already in progress: started by {existing.actor_label} at {when}."
        mrkdwn = f"Already in progress: started by {mention} at {when}."
    else:
        at = utc_hhmm(existing.finished_at or existing.started_at)
        text = f"Already done by {existing.actor_label} at {at}: {prior.get('text', existing.status)}"
        mrkdwn = (f"Already done by {mention} at {at}: "
                  f"{prior.get('mrkdwn') or _as_mrkdwn(str(prior.get('text', existing.status)))}")
    return finish(
        "duplicate",
        text,
        mrkdwn=mrkdwn,
        done_by=existing.actor_label,
        done_by_id=existing.actor_id,
        done_at=existing.finished_at or existing.started_at,
        links=[OutcomeLink(**link) for link in prior.get("links") or []],
        created_ids=prior.get("created_ids") or [],
        detail=[f"original outcome: {prior.get('status', existing.status)}"],
    )


def execute_action_sync(request: ActionRequest, **kwargs: Any) -> ActionOutcome:
    """execute_action for synchronous callers (a sync Bolt listener thread, the CLI): runs its own loop."""
    return asyncio.run(execute_action(request, **kwargs))
