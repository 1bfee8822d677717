"""Which action buttons a finding, a task diagnosis or an outcome gets, with their signed values.

Signing needs the bot's key (bot/actions/tokens.py), so this is not a pure builder; it makes no network call.
The message builders (bot/slack/actions/messages.py) get the finished `ActionButton`s.

A finding suggests actions (`Finding.actions`); each action works on a subject of one kind (task or worker,
`get_spec(action).subject_kind`). A button is made when the finding's subject is of that kind. A backlog finding's
subject is a queue: its `prioritize` buttons name the waiting tasks it lists (all but the first, which is already
at the front).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.actions import ActionDeps, ActionError, button_value, confirm_spec, get_spec
from bot.slack.actions.messages import VERBS, ActionButton, queue_choice_actions

if TYPE_CHECKING:
    from bot.actions import ActionOutcome
    from bot.config import Settings
    from bot.engine.findings import Finding
    from bot.store import Store

log = logging.getLogger(__name__)

MAX_PER_FINDING = 4
MAX_PRIORITIZE = 2


class ButtonMaker:
    def __init__(self, settings: Settings, store: Store, deps: ActionDeps) -> None:
        self.settings = settings
        self.store = store
        self.deps = deps
        self._warned = False

    # -- one button ---------------------------------------------------------------------------------------------
    def make(
        self,
        action: str,
        subject: str,
        *,
        server: str | None,
        subject_label: str,
        text: str | None = None,
        params: dict[str, Any] | None = None,
        worker_ip: str | None = None,
        channel: str | None = None,
    ) -> ActionButton | None:
        """A signed button, or None when the bot cannot sign (no key and nowhere to keep one: logged once) or the
        action cannot be done (rotate without a backend for the worker). `worker_ip`: for rotate's confirm text."""
        params = dict(params or {})
        rotation = None
        if action == "rotate":
            from bot.actions.rotate import describe_rotation

            # no backend for this worker (or one that would refuse it): a button that can only fail is not offered
            rotation = describe_rotation(self.settings.actions.rotate.backends, subject, worker_ip)
            if rotation is None:
                return None
        if action == "reproduce":
            # the configured tolerances and timeout travel signed with the button
            params = {**self.settings.actions.reproduce.button_params(), **params}
        try:
            value = button_value(self.settings, self.store, action, subject, server=server, params=params,
                                 deps=self.deps, channel=channel)
        except (ValueError, OSError, ActionError) as exc:
            if not self._warned:
                log.warning("action buttons are off: %s", exc)
                self._warned = True
            return None
        return ActionButton(
            action=action,
            subject=subject,
            text=text or VERBS.get(action, action),
            value=value,
            confirm=confirm_spec(action, subject_label, params, rotation=rotation),
            queue_choice=action in queue_choice_actions(),
        )

    # -- for findings, diagnoses and outcomes -----------------------------------------------------------------------
    def for_finding(
        self, finding: Finding, server: str | None, *, named: bool = True, channel: str | None = None
    ) -> list[ActionButton]:
        """The buttons of one finding; `named`: put the subject's name on each (several findings in one block);
        `channel`: the channel the message goes to, when known (the values are bound to it)."""
        out: list[ActionButton] = []
        subject = finding.subject
        for action in finding.actions:
            try:
                kind = get_spec(action).subject_kind
            except ActionError:
                continue
            if kind == subject.kind:
                label = subject_label(kind, subject.id, subject.name)
                name = subject.name or subject.id
                text = f"{VERBS.get(action, action)} {name}" if named else None
                ip = finding.evidence.get("ip") if isinstance(finding.evidence, dict) else None
                button = self.make(action, subject.id, server=server, subject_label=label, text=text,
                                   worker_ip=str(ip) if ip else None, channel=channel)
                if button is not None:
                    out.append(button)
            elif action == "prioritize" and subject.kind == "queue":
                out += self._prioritize_waiting(finding, server, channel)
        return out[:MAX_PER_FINDING]

    def _prioritize_waiting(self, finding: Finding, server: str | None, channel: str | None) -> list[ActionButton]:
        out: list[ActionButton] = []
        for entry in finding.evidence.get("entries") or []:
            if not isinstance(entry, dict) or not entry.get("position"):
                continue  # the first one is already at the front
            task = entry.get("task") or {}
            task_id, name = str(task.get("id") or ""), str(task.get("name") or "")
            if not task_id:
                continue
            button = self.make("prioritize", task_id, server=server, subject_label=subject_label("task", task_id, name),
                               text=f"Move {name or task_id} to front", channel=channel)
            if button is not None:
                out.append(button)
            if len(out) >= MAX_PRIORITIZE:
                break
        return out

    def for_subject(
        self, actions: Sequence[str], kind: str, subject: str, name: str, server: str | None,
        channel: str | None = None,
    ) -> list[ActionButton]:
        """Buttons for one subject (a task diagnosis): the verbs alone, the message is about that subject."""
        label = subject_label(kind, subject, name)
        out = []
        for action in actions:
            try:
                if get_spec(action).subject_kind != kind:
                    continue
            except ActionError:
                continue
            button = self.make(action, subject, server=server, subject_label=label, channel=channel)
            if button is not None:
                out.append(button)
        return out

    def after(self, outcome: ActionOutcome, params: dict[str, Any], channel: str | None = None) -> list[ActionButton]:
        """Follow-up buttons for an outcome: retry (ClearML was down) and the alternative (clone for a task the
        server will not requeue)."""
        out: list[ActionButton] = []
        label = f"task {outcome.subject}" if outcome.action != "rotate" else outcome.subject
        server = outcome.server or None
        if outcome.status == "failed" and outcome.retry:
            button = self.make(outcome.action, outcome.subject, server=server, subject_label=label,
                               text=f"Retry: {VERBS.get(outcome.action, outcome.action).lower()}", params=params,
                               channel=channel)
            if button is not None:
                out.append(button)
        alternative = outcome.alternative
        if alternative is None and outcome.status == "failed" and outcome.action == "requeue" and \
                "(400/110)" in (outcome.error or ""):
            alternative = "clone"  # the task finished meanwhile: the server refused the status change
        if alternative and alternative != outcome.action:
            button = self.make(alternative, outcome.subject, server=server, subject_label=label,
                               text=f"{VERBS.get(alternative, alternative)} instead", channel=channel)
            if button is not None:
                out.append(button)
        return out


def subject_label(kind: str, subject_id: str, name: str = "") -> str:
    """How confirm dialogs name a subject: "task train-resnet (a1000000)", or the worker id for an agent."""
    if kind == "task":
        return f"task {name} ({subject_id[:8]})" if name else f"task {subject_id}"
    return subject_id
