"""Remediation actions: clone, requeue, abort, rotate, reproduce, prioritize — one core for Slack and the terminal.

Public API (everything async runs on the caller's event loop; `execute_action_sync` wraps it for sync code)
==========================================================================================================

Rendering a finding's buttons (no server calls):

    value = button_value(settings, store, "requeue", task_id, server="prod", params={}, deps=deps)
        # signed, expiring (actions.button_ttl) button value, ≤ 2000 chars; put it in the button's `value`
    dialog = confirm_spec("requeue", "task train-resnet (3f2a9c1e)", params)
        # ConfirmSpec(title, text, confirm, deny, style): style "danger" for abort and rotate
    REGISTRY / get_spec(action).user_choices
        # params the clicking user may pick (e.g. {"queue"}: render a queue select; options from
        # `await queue_choices(settings, server, deps)` -> [(queue id, name)])

A click (Slack listener, after ack(); ~0.1–1 s of ClearML calls, more for rotate commands):

    outcome = await execute_action(
        ActionRequest(params={"queue": chosen_queue_id} if chosen else {},
                      context={"channel": ch, "message_ts": ts, "thread_ts": thread}),
        settings=settings, store=store,
        actor=Actor(id=user_id, name=user_handle, via="slack"),   # name: the handle shown as "@name"
        confirm_token=button_value_from_payload,
        deps=deps,              # ONE ActionDeps per process (it caches user-group members):
                                # ActionDeps(authorizer=Authorizer(settings.actions, group_members=resolve))
    )                           # where resolve(group_id) -> user ids (usergroups.users.list), sync or async;
                                # optionally client_factory=<shared per-server ClearMLClient>, owns_clients=False

  The signed value decides action, server, subject and params; request.params may only add the user's
  choices (spec.user_choices). The call never raises for expected problems; it returns an ActionOutcome:
    status    ok | dry_run | refused | failed | denied | expired | tampered | duplicate
    text      plain one-liner ("Requeued by @ana at 14:02 UTC → train-resnet http://…")
    mrkdwn    the same for Slack ("Requeued by <@U1> at 14:02 UTC → <http://…|train-resnet>"): replace the
              original message's buttons with it and post it into the finding's thread
    detail, plan, links, created_ids, error
    retry     True when trying again makes sense (ClearML down, timeouts): offer a retry button (issue a new
              button_value for the same action; a failed run does not lock its idempotency key)
    alternative  another action to offer (e.g. "clone" when a completed task cannot be requeued)
    done_by / done_by_id / done_at  for duplicates ("already done by X at T")
    watch_id  for reproduce: results arrive through `reproduce.tick()`
  denied / expired / tampered outcomes are meant as ephemeral messages to the clicking user.
  Every call writes exactly one audit row (outcome.audit_id).

Before executing from a modal or the terminal prompt: `plan = await plan_action(request, settings=…, actor=…,
deps=…)` (read-only; raises Refusal / ActionError / ClearMLError); `plan.render()` / `plan.lines()` show the exact
calls; pass `request.confirmed_plan = plan.digest` to execute_action to refuse if the situation changed meanwhile.

Reproduce results: call `await reproduce.tick(store, settings, deps=deps)` periodically (e.g. every 30 s from
the scheduler); it returns a `WatchResult` (text, mrkdwn, context = the request's context) for each re-run
that ended; post it into `context["thread_ts"]`.

Audit: `audit.recent(store, n)` and `audit.format_rows(rows, mrkdwn=True)` for `/clearml audit [n]`.

Terminal: `bot.actions.cli` (`clearml-chatops act …` and `clearml-chatops audit`).
"""

from __future__ import annotations

from bot.actions.base import (
    REGISTRY,
    ActionError,
    ActionOutcome,
    ActionRequest,
    Actor,
    Plan,
    Refusal,
    get_spec,
    load_actions,
)
from bot.actions.executor import (
    ActionDeps,
    ConfirmSpec,
    button_value,
    confirm_spec,
    execute_action,
    execute_action_sync,
    plan_action,
    queue_choices,
)
from bot.actions.policy import Authorizer, Decision
from bot.actions.tokens import ExpiredToken, Signer, TamperedToken, TokenError

load_actions()

__all__ = [
    "REGISTRY",
    "ActionDeps",
    "ActionError",
    "ActionOutcome",
    "ActionRequest",
    "Actor",
    "Authorizer",
    "ConfirmSpec",
    "Decision",
    "ExpiredToken",
    "Plan",
    "Refusal",
    "Signer",
    "TamperedToken",
    "TokenError",
    "button_value",
    "confirm_spec",
    "execute_action",
    "execute_action_sync",
    "get_spec",
    "load_actions",
    "plan_action",
    "queue_choices",
]
