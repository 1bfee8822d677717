"""Authorization, checked on every click on the server side (hiding buttons is not a control). One model for every
guarded thing a Slack user can do, with one user-group cache.

Rules (config `actions.allow.<x>.users` / `.usergroups`, Slack ids):
- remediation actions (all mutating) and `verify_hashes` are allowed to nobody until the config names users or user
  groups for them (deny by default);
- incident operations (`resolve` on an incident's root, `/clearml silence` and `unsilence`, `/clearml digest` into
  another channel) are for anyone who can see them unless `actions.allow.<x>` names users or user groups, then only
  those (allow by default): a manual resolve hides a live problem until its grace period ends, a silence mutes a
  check for everybody. Acknowledge and snooze only change who is notified and are not checked;
- any other key under `actions.allow` is a config error (a misspelt restriction must not leave a button open);
- everything else (read-only commands) is for everyone;
- user-group membership comes from a resolver the Slack side provides (it calls usergroups.users.list), cached for
  `ttl_s` for all of the above alike, so a burst of clicks costs one API call and concurrent clicks share one
  resolution (from the event loop and from worker threads alike); a group that cannot be resolved grants nothing
  (fail closed) and the denial says so;
- the terminal is authorised as the local OS user: whoever can run the CLI with the config (and so its
  credentials) could call the APIs directly anyway. It is still audited under the OS user's name.

`await authorize(actor, x)` on an event loop; `authorize_blocking(actor, x)` on a thread without one (the incident
buttons run on the work pool's I/O threads, `unsilence` in the slash-command listener).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bot.actions.base import Actor
from bot.config import ActionAllow, ActionsSettings, ConfigError
from bot.engine.findings import ACTION_IDS

log = logging.getLogger(__name__)

# group id -> member user ids; sync or async
GroupResolver = Callable[[str], Iterable[str] | Awaitable[Iterable[str]]]
# runs a blocking call off the event loop: (fn, *args) -> awaitable result (asyncio.to_thread, WorkPool.io)
Offload = Callable[..., Awaitable[Any]]

MUTATING_ACTIONS = frozenset(ACTION_IDS)
# Not mutating, but costly enough (downloads and re-hashes a whole dataset) that whoever may click it is decided by
# the config, like an action: nobody until `actions.allow.verify_hashes` names users or user groups.
VERIFY_HASHES = "verify_hashes"
GUARDED_ACTIONS = MUTATING_ACTIONS | {VERIFY_HASHES}
# Open to anyone unless `actions.allow.<x>` names users or user groups: incident buttons and commands, and
# posting a digest into another channel (`/clearml digest #channel`).
INCIDENT_OPERATIONS = frozenset({"resolve", "silence", "digest"})
KNOWN_RULES = GUARDED_ACTIONS | INCIDENT_OPERATIONS


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


class Authorizer:
    def __init__(
        self,
        actions: ActionsSettings,
        group_members: GroupResolver | None = None,
        *,
        ttl_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        offload: Offload | None = None,
    ) -> None:
        unknown = sorted(set(actions.allow) - KNOWN_RULES)
        if unknown:
            # a typo must not pass quietly: `actions.allow.resolv` would leave Resolve open to everybody
            raise ConfigError(
                f"actions.allow: {', '.join(unknown)} {'is not an action' if len(unknown) == 1 else 'are not actions'}"
                f"; the keys are {', '.join(sorted(KNOWN_RULES))} (fix the bot's config file)"
            )
        self.actions = actions
        self.group_members = group_members
        self.ttl_s = ttl_s
        self._clock = clock
        # a sync resolver (a blocking Slack call) never runs on the event loop: default asyncio.to_thread
        self._offload: Offload = offload or asyncio.to_thread
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        # one resolution per group at a time, shared by every waiter: a thread-safe future (not an asyncio one), so
        # that callers on any event loop and on plain threads can wait for it
        self._resolving: dict[str, concurrent.futures.Future[frozenset[str]]] = {}

    # -- the rules ----------------------------------------------------------------------------------------------

    async def authorize(self, actor: Actor, action: str) -> Decision:
        """On an event loop: a sync resolver runs through `offload`."""
        early, rule = self._without_groups(actor, action)
        if early is not None:
            return early
        unresolved: list[str] = []
        for group in rule.usergroups:
            try:
                members = await self._members(group)
            except Exception as exc:  # Slack API error, missing scope, resolver missing: grant nothing
                log.warning("cannot resolve user group %s: %s", group, exc)
                unresolved.append(group)
                continue
            if actor.id in members:
                return self._granted_by_group(actor, action, group)
        return self._denied(actor, action, unresolved)

    def authorize_blocking(self, actor: Actor, action: str) -> Decision:
        """The same, on a thread without a running event loop (it may wait for Slack)."""
        early, rule = self._without_groups(actor, action)
        if early is not None:
            return early
        unresolved: list[str] = []
        for group in rule.usergroups:
            try:
                members = self._members_blocking(group)
            except Exception as exc:  # as above: grant nothing
                log.warning("cannot resolve user group %s: %s", group, exc)
                unresolved.append(group)
                continue
            if actor.id in members:
                return self._granted_by_group(actor, action, group)
        return self._denied(actor, action, unresolved)

    def _without_groups(self, actor: Actor, action: str) -> tuple[Decision | None, ActionAllow]:
        """The decision when no user group needs asking, else (None, the rule whose groups decide)."""
        rule = self.actions.allow.get(action) or ActionAllow()
        if actor.via == "terminal":
            return Decision(True, f"terminal user {actor.label} (anyone who can run the CLI with this config)"), rule
        if action in INCIDENT_OPERATIONS:
            if not (rule.users or rule.usergroups):
                return Decision(True, f"anyone may {action} (no actions.allow.{action})"), rule
            if actor.id in rule.users:
                return Decision(True, f"in actions.allow.{action}.users"), rule
            return None, rule
        if action not in GUARDED_ACTIONS:
            return Decision(True, "read-only"), rule
        if not (rule.users or rule.usergroups):
            return Decision(
                False,
                f"nobody may {action} from Slack until an admin lists users or user groups under "
                f"actions.allow.{action} in the bot's config",
            ), rule
        if actor.id in rule.users:
            return Decision(True, f"user {actor.id} is in actions.allow.{action}.users"), rule
        return None, rule

    @staticmethod
    def _granted_by_group(actor: Actor, action: str, group: str) -> Decision:
        if action in INCIDENT_OPERATIONS:
            return Decision(True, f"in user group {group}")
        return Decision(True, f"user {actor.id} is in user group {group} (actions.allow.{action}.usergroups)")

    @staticmethod
    def _denied(actor: Actor, action: str, unresolved: list[str]) -> Decision:
        groups = ", ".join(unresolved)
        if action in INCIDENT_OPERATIONS:
            reason = f"only the users and user groups in actions.allow.{action} may {action}"
            if unresolved:
                reason += f" (user groups {groups} could not be listed: usergroups:read scope?)"
            return Decision(False, reason)
        reason = f"{actor.label} is not allowed to {action} (actions.allow.{action})"
        if unresolved:
            reason += f"; user groups {groups} could not be resolved (usergroups:read scope?)"
        return Decision(False, reason)

    # -- the one user-group cache -------------------------------------------------------------------------------

    def invalidate(self, group: str | None = None) -> None:
        """Forget cached memberships (e.g. on a subteam_members_changed event)."""
        with self._lock:
            if group is None:
                self._cache.clear()
            else:
                self._cache.pop(group, None)

    def _claim(self, group: str) -> frozenset[str] | tuple[concurrent.futures.Future[frozenset[str]], bool]:
        """The cached members, else the resolution to wait for and whether this caller must do it."""
        with self._lock:
            cached = self._cache.get(group)
            if cached and cached[0] > self._clock():
                return cached[1]
            pending = self._resolving.get(group)
            if pending is not None:
                return pending, False
            pending = self._resolving[group] = concurrent.futures.Future()
            return pending, True

    def _settle(self, group: str, pending: concurrent.futures.Future[frozenset[str]],
                members: frozenset[str] | None, error: BaseException | None) -> None:
        with self._lock:
            if members is not None:
                self._cache[group] = (self._clock() + self.ttl_s, members)
            self._resolving.pop(group, None)
        if members is not None:
            pending.set_result(members)
        else:
            # waiters grant nothing; a cancelled resolver is a failed resolution to them, not their cancellation
            pending.set_exception(error if isinstance(error, Exception) else LookupError(f"resolving {group} stopped"))

    async def _members(self, group: str) -> frozenset[str]:
        claim = self._claim(group)
        if isinstance(claim, frozenset):
            return claim
        pending, mine = claim
        if not mine:
            return await asyncio.wrap_future(pending)
        try:
            if self.group_members is None:
                raise LookupError("no user-group resolver (Slack not connected)")
            if inspect.iscoroutinefunction(self.group_members):
                result = await self.group_members(group)
            else:
                result = await self._offload(self.group_members, group)
                if inspect.isawaitable(result):
                    result = await result
            members = frozenset(str(u) for u in result)
        except BaseException as exc:
            self._settle(group, pending, None, exc)
            raise
        self._settle(group, pending, members, None)
        return members

    def _members_blocking(self, group: str) -> frozenset[str]:
        claim = self._claim(group)
        if isinstance(claim, frozenset):
            return claim
        pending, mine = claim
        if not mine:
            return pending.result()
        try:
            if self.group_members is None:
                raise LookupError("no user-group resolver (Slack not connected)")
            result = self.group_members(group)
            if inspect.isawaitable(result):
                result = _run_awaitable(result)
            members = frozenset(str(u) for u in result)
        except BaseException as exc:
            self._settle(group, pending, None, exc)
            raise
        self._settle(group, pending, members, None)
        return members


def _run_awaitable(result: Awaitable[Iterable[str]]) -> Iterable[str]:
    """An async resolver's answer, from a thread without a running loop (on a loop: `await authorize()`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if inspect.iscoroutine(result):
            result.close()  # never awaited: say so without a "never awaited" warning
        raise RuntimeError("authorize_blocking() was called on an event loop: await authorize() there")

    async def wait() -> Iterable[str]:
        return await result

    return asyncio.run(wait())
