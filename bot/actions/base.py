"""The action core's vocabulary: who acts (Actor), what is asked (ActionRequest), what will happen (Plan of
Steps), what happened (ActionOutcome), and the `@action` registry (Robusta-style: a planner function plus a
pydantic params model).

An action is only a *planner*: `async def plan_x(ctx, subject, params) -> Plan`. The planner reads ClearML
(and EC2 / Kubernetes) state and returns the exact calls it would make, as data. The same Plan feeds the
confirm dialog, the terminal prompt and dry run, and `executor.execute_plan` runs it. Keeping planning
read-only and execution generic is what makes "dry run makes no mutating call" checkable in one place.
"""

from __future__ import annotations

import getpass
import hashlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.engine.findings import ACTION_IDS
from bot.errors import BotError

if TYPE_CHECKING:
    from bot.actions.context import ActionContext

Via = Literal["slack", "terminal"]
OutcomeStatus = Literal[
    "ok",  # executed
    "dry_run",  # planned and reported, nothing executed
    "refused",  # the planner said no (wrong state, nothing to do): nothing executed, reason given
    "failed",  # a step failed (server refusal 400/110, ClearML down, EC2/K8s/command error)
    "denied",  # the actor is not authorised for this action
    "expired",  # the button's signed value is past its expiry
    "tampered",  # the button's signed value does not verify
    "duplicate",  # already executed (double click / second person): the earlier result is returned
    "cancelled",  # the terminal user answered no at the prompt
]


class ActionError(BotError):
    """A usage problem with a request (unknown action, bad params, bad subject): nothing was attempted."""


class Refusal(BotError):
    """Raised by a planner when the action must not run in the subject's current state.

    `alternative` names another action that does what the user probably wants (e.g. clone for a completed
    task), so that Slack can offer it as a button and the terminal can print the command.
    """

    def __init__(self, reason: str, *, alternative: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.alternative = alternative


class BackendError(BotError):
    """A rotate backend call failed (EC2, Kubernetes, command). `retry`: worth trying again."""

    def __init__(self, message: str, *, retry: bool = False, output: str = "") -> None:
        super().__init__(message)
        self.retry = retry
        self.output = output


# --------------------------------------------------------------------------------------------- actor


@dataclass(frozen=True)
class Actor:
    """Who asked. For Slack: the user id (U…) and handle; for the terminal: the local OS user."""

    id: str
    name: str = ""
    via: Via = "slack"

    @classmethod
    def terminal(cls, name: str | None = None) -> Actor:
        # The terminal is authorised as whoever can run the CLI with the config; the OS user name is what
        # the audit trail records.
        user = name or _os_user()
        return cls(id=user, name=user, via="terminal")

    @property
    def label(self) -> str:
        """Plain text: @handle for Slack users, the OS user for the terminal."""
        if self.via == "slack":
            return f"@{self.name}" if self.name else self.id
        return self.name or self.id

    @property
    def mention(self) -> str:
        """Slack mrkdwn mention (renders as the user's current name); plain label elsewhere."""
        if self.via == "slack" and re.fullmatch(r"[UW][A-Z0-9]{2,20}", self.id or ""):
            return f"<@{self.id}>"
        return self.label.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (some containers)
        return "unknown-os-user"


# ------------------------------------------------------------------------------------------- request


class ActionRequest(BaseModel):
    """What is asked. From Slack, `action`/`subject`/`server` may be left None: the signed button value
    (confirm_token) is then the source of truth; if they are given they must match it."""

    model_config = ConfigDict(extra="forbid")

    action: str | None = None
    subject: str | None = None
    server: str | None = None  # server name from the config file; None = the default server
    params: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None  # default: the button's nonce (Slack) / none (terminal)
    dry_run: bool | None = None  # True forces a dry run; cannot switch off `actions.dry_run: true`
    confirmed_plan: str | None = None  # Plan.digest the user confirmed; execution refuses if the plan changed
    context: dict[str, Any] = Field(default_factory=dict)  # opaque to the core (Slack channel/ts/thread)


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Ref:
    """A value produced by an earlier step: `Ref("clone", "id")` is the new task id from tasks.clone."""

    step: str
    field: str
    label: str = ""  # how a plan shows it before it exists, e.g. "<new task>"

    def describe(self) -> str:
        return self.label or f"<{self.step}.{self.field}>"


@dataclass(frozen=True)
class Named:
    """An id sent to the API, shown with its human name: queue=gpu (3f2a9c1e)."""

    id: str
    name: str

    def describe(self) -> str:
        if not self.name or self.name == self.id:
            return self.id
        return f"{self.name} ({self.id[:8]})"


def _describe_value(value: Any) -> str:
    if isinstance(value, Ref | Named):
        return value.describe()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_describe_value(v) for v in value) + "]"
    if isinstance(value, str):
        # Quote strings that contain spaces or punctuation so the step reads unambiguously.
        return value if re.fullmatch(r"[\w.:/@=-]*", value) else json.dumps(value)
    return json.dumps(value, default=str)


def resolve_value(value: Any, results: dict[str, dict[str, Any]]) -> Any:
    """Replace Refs by earlier results and Named by their ids: what actually goes over the wire."""
    if isinstance(value, Ref):
        data = results.get(value.step) or {}
        if value.field not in data:
            raise KeyError(f"step {value.step!r} returned no {value.field!r}")
        return data[value.field]
    if isinstance(value, Named):
        return value.id
    if isinstance(value, list):
        return [resolve_value(v, results) for v in value]
    if isinstance(value, dict):
        return {k: resolve_value(v, results) for k, v in value.items()}
    return value


System = Literal["clearml", "ec2", "kubernetes", "command", "bot"]


@dataclass
class Condition:
    """A step runs only if `check(results)` says so at execution time (e.g. reset only if the stop left the
    task in_progress). `text` is how plans show it."""

    text: str
    check: Callable[[ExecState], Awaitable[bool]]


@dataclass
class Step:
    """One call. `system="clearml"` steps are `client.call(call, args)`; other systems carry `run`, an
    async function that performs the call (boto3, kubernetes, subprocess) with the resolved args."""

    system: System
    call: str
    args: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # results are stored under this name (for Refs and conditions)
    note: str = ""  # why, in words, shown under the step
    when: Condition | None = None
    run: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
    mutating: bool = True  # False for bookkeeping steps that only touch the bot's own store

    def describe(self) -> str:
        inner = ", ".join(f"{k}={_describe_value(v)}" for k, v in self.args.items())
        text = f"{self.call}({inner})"
        if self.when is not None:
            text += f"  [only if {self.when.text}]"
        return text


@dataclass
class Link:
    label: str
    url: str


@dataclass
class ExecState:
    """What execution has produced so far; planners' `finish` and conditions read it."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)  # describe() of each executed step
    skipped: list[str] = field(default_factory=list)
    created_ids: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)  # extra lines for the outcome (command output, notes)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"watch_id": 3}


@dataclass
class Plan:
    action: str
    server: str
    subject: str
    subject_label: str  # "task train-resnet (3f2a9c1e)", "worker gpu-box:0"
    title: str  # confirm dialog title, "Requeue task?"
    summary: str  # one sentence: what will happen
    verb: str  # "Requeued", used in "Requeued by @x at 14:02"
    steps: list[Step] = field(default_factory=list)
    danger: bool = False  # red confirm button (abort, rotate)
    notes: list[str] = field(default_factory=list)  # warnings worth reading before confirming
    links: list[Link] = field(default_factory=list)  # links known before execution (the subject)
    finish: Callable[[ExecState], Awaitable[None]] | None = None  # adds links/ids after execution

    def lines(self) -> list[str]:
        """Numbered, human-readable steps: the same text for confirm dialogs, dry run and the terminal."""
        out = []
        for i, step in enumerate(self.steps, 1):
            system = "" if step.system in ("clearml", "bot") else f"{step.system}: "
            out.append(f"{i}. {system}{step.describe()}")
            if step.note:
                out.append(f"   {step.note}")
        return out

    def render(self) -> str:
        parts = [f"{self.title}", self.summary, *self.lines()]
        parts += [f"note: {n}" for n in self.notes]
        return "\n".join(parts)

    @property
    def digest(self) -> str:
        """Short hash of what would be done: lets execution refuse when the state changed since confirm."""
        raw = json.dumps([self.action, self.server, self.subject, [s.describe() for s in self.steps]])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- outcome


class OutcomeLink(BaseModel):
    label: str
    url: str


class ActionOutcome(BaseModel):
    """The result every caller renders. `text` is plain (terminal), `mrkdwn` is for Slack."""

    status: OutcomeStatus
    action: str
    server: str = ""
    subject: str = ""
    actor_id: str = ""
    actor_name: str = ""
    via: Via = "slack"
    text: str  # one line: "Requeued by @x at 14:02 UTC → train-resnet (http://…)"
    mrkdwn: str = ""  # the same line for Slack: "<@U1> … → <http://…|train-resnet>"
    detail: list[str] = Field(default_factory=list)  # steps done / would be done, command output, notes
    plan: list[str] = Field(default_factory=list)  # the plan's lines
    links: list[OutcomeLink] = Field(default_factory=list)
    created_ids: list[str] = Field(default_factory=list)
    error: str | None = None
    retry: bool = False  # a retry makes sense (ClearML down, transient failure): offer a retry button
    alternative: str | None = None  # another action to offer instead (e.g. "clone")
    done_by: str | None = None  # duplicate: who executed it first (actor label) ...
    done_by_id: str | None = None
    done_at: datetime | None = None  # ... and when
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    audit_id: int | None = None
    watch_id: int | None = None  # reproduce: the watcher's id (see bot.actions.reproduce.tick)
    plan_digest: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "dry_run")


# ------------------------------------------------------------------------------------------ registry


class ActionParams(BaseModel):
    """Base of every action's params: unknown keys are an error (a typo must not silently do something else)."""

    model_config = ConfigDict(extra="forbid")


Planner = Callable[["ActionContext", str, Any], Awaitable[Plan]]
SubjectKind = Literal["task", "worker"]


@dataclass(frozen=True)
class ActionSpec:
    id: str
    planner: Planner
    params_model: type[ActionParams]
    subject_kind: SubjectKind
    title: str  # "Requeue task"
    danger: bool
    mutating: bool
    # Params the clicking user may choose (a queue from a select) on top of the signed button params.
    user_choices: frozenset[str]
    summary: str


REGISTRY: dict[str, ActionSpec] = {}


def action(
    action_id: str,
    *,
    params: type[ActionParams],
    subject: SubjectKind,
    title: str,
    danger: bool = False,
    mutating: bool = True,
    user_choices: tuple[str, ...] = (),
) -> Callable[[Planner], Planner]:
    """Register a planner: `@action("requeue", params=RequeueParams, subject="task", title="Requeue task")`."""
    if action_id not in ACTION_IDS:
        raise ValueError(f"action id {action_id!r} is not one of {', '.join(ACTION_IDS)} (findings.ActionId)")
    unknown = set(user_choices) - set(params.model_fields)
    if unknown:
        raise ValueError(f"action {action_id}: user_choices {sorted(unknown)} are not fields of {params.__name__}")

    def register(func: Planner) -> Planner:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"action {action_id} planner must be async")
        if action_id in REGISTRY and REGISTRY[action_id].planner is not func:
            raise ValueError(f"action {action_id!r} registered twice")
        doc = inspect.cleandoc(func.__doc__ or "").strip()
        REGISTRY[action_id] = ActionSpec(
            id=action_id,
            planner=func,
            params_model=params,
            subject_kind=subject,
            title=title,
            danger=danger,
            mutating=mutating,
            user_choices=frozenset(user_choices),
            summary=doc.partition("\n")[0],
        )
        return func

    return register


def load_actions() -> dict[str, ActionSpec]:
    """Import the action modules so every action is registered."""
    from bot.actions import abort, clone, prioritize, reproduce, requeue, rotate  # noqa: F401

    return REGISTRY


def get_spec(action_id: str) -> ActionSpec:
    registry = load_actions()
    spec = registry.get(action_id)
    if spec is None:
        raise ActionError(f"unknown action {action_id!r}: use one of {', '.join(sorted(registry))}")
    return spec


def utc_hhmm(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%H:%M UTC")
