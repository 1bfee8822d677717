"""Authorization, checked on every click on the server side (hiding buttons is not a control).

Rules (config `actions.allow.<action>.users` / `.usergroups`, Slack ids):
- read-only commands are for everyone; every remediation action is mutating and allowed to nobody until the
  config names users or user groups for it;
- user-group membership comes from a callable the Slack side provides (it calls usergroups.users.list),
  cached for `ttl_s` so a burst of clicks costs one API call; a group that cannot be resolved grants nothing
  (fail closed) and the denial says so;
- the terminal is authorised as the local OS user: whoever can run the CLI with the config (and so its
  credentials) could call the APIs directly anyway. It is still audited under the OS user's name.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from bot.actions.base import Actor
from bot.config import ActionsSettings
from bot.engine.findings import ACTION_IDS

log = logging.getLogger(__name__)

# group id -> member user ids; sync or async
GroupResolver = Callable[[str], Iterable[str] | Awaitable[Iterable[str]]]

MUTATING_ACTIONS = frozenset(ACTION_IDS)
# Not mutating, but costly enough (downloads and re-hashes a whole dataset) that whoever may click it is decided by
# the config, like an action: nobody until `actions.allow.verify_hashes` names users or user groups.
VERIFY_HASHES = "verify_hashes"
GUARDED_ACTIONS = MUTATING_ACTIONS | {VERIFY_HASHES}


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
    ) -> None:
        self.actions = actions
        self.group_members = group_members
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        # asyncio locks belong to one event loop; a sync Slack listener may run each click in its own
        # asyncio.run(), so locks are kept per loop (and vanish with it).
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )

    async def _members(self, group: str) -> frozenset[str]:
        cached = self._cache.get(group)
        if cached and cached[0] > self._clock():
            return cached[1]
        # One resolution per group at a time: concurrent clicks share it instead of each calling Slack.
        loop_locks = self._locks.setdefault(asyncio.get_running_loop(), {})
        lock = loop_locks.setdefault(group, asyncio.Lock())
        async with lock:
            cached = self._cache.get(group)
            if cached and cached[0] > self._clock():
                return cached[1]
            if self.group_members is None:
                raise LookupError("no user-group resolver (Slack not connected)")
            result = self.group_members(group)
            if inspect.isawaitable(result):
                result = await result
            members = frozenset(str(u) for u in result)  # type: ignore[union-attr]
            self._cache[group] = (self._clock() + self.ttl_s, members)
            return members

    def invalidate(self, group: str | None = None) -> None:
        """Forget cached memberships (e.g. on a subteam_members_changed event)."""
        if group is None:
            self._cache.clear()
        else:
            self._cache.pop(group, None)

    async def authorize(self, actor: Actor, action: str) -> Decision:
        if actor.via == "terminal":
            return Decision(True, f"terminal user {actor.label} (anyone who can run the CLI with this config)")
        if action not in GUARDED_ACTIONS:
            return Decision(True, "read-only")
        rule = self.actions.allow.get(action)
        if rule is None or not (rule.users or rule.usergroups):
            return Decision(
                False,
                f"nobody may {action} from Slack until an admin lists users or user groups under "
                f"actions.allow.{action} in the bot's config",
            )
        if actor.id in rule.users:
            return Decision(True, f"user {actor.id} is in actions.allow.{action}.users")
        unresolved: list[str] = []
        for group in rule.usergroups:
            try:
                members = await self._members(group)
            except Exception as exc:  # Slack API error, missing scope, resolver missing: grant nothing
                log.warning("cannot resolve user group %s: %s", group, exc)
                unresolved.append(group)
                continue
            if actor.id in members:
                return Decision(True, f"user {actor.id} is in user group {group} (actions.allow.{action}.usergroups)")
        reason = f"{actor.label} is not allowed to {action} (actions.allow.{action})"
        if unresolved:
            reason += f"; user groups {', '.join(unresolved)} could not be resolved (usergroups:read scope?)"
        return Decision(False, reason)
