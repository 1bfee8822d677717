"""Authorization: default deny for Slack, users and user groups (cached, fail closed), terminal allowed."""

from __future__ import annotations

import asyncio

from bot.actions.base import Actor
from bot.actions.policy import Authorizer
from bot.config import ActionAllow, ActionsSettings

SLACK_ANA = Actor("U0ANA", "ana", "slack")
SLACK_GINA = Actor("U0GINA", "gina", "slack")


def authorize(auth: Authorizer, actor: Actor, action: str) -> bool:
    return asyncio.run(auth.authorize(actor, action)).allowed


def test_nobody_may_act_from_slack_until_configured_but_the_terminal_may() -> None:
    auth = Authorizer(ActionsSettings())
    for action in ("clone", "requeue", "abort", "rotate", "reproduce", "prioritize"):
        decision = asyncio.run(auth.authorize(SLACK_ANA, action))
        assert not decision.allowed and f"actions.allow.{action}" in decision.reason
        assert authorize(auth, Actor.terminal("ops"), action)
    assert asyncio.run(auth.authorize(SLACK_ANA, "history")).allowed  # read-only commands: everyone
    empty = Authorizer(ActionsSettings(allow={"abort": ActionAllow()}))
    assert not authorize(empty, SLACK_ANA, "abort")


def test_users_and_usergroups_with_a_brief_cache() -> None:
    calls: list[str] = []
    members = {"S0ML": ["U0GINA"]}
    now = [0.0]

    async def resolve(group: str) -> list[str]:
        calls.append(group)
        return members[group]

    settings = ActionsSettings(allow={"requeue": ActionAllow(users=["U0ANA"], usergroups=["S0ML"]),
                                      "clone": ActionAllow(usergroups=["S0ML"])})
    auth = Authorizer(settings, group_members=resolve, ttl_s=60, clock=lambda: now[0])
    assert authorize(auth, SLACK_ANA, "requeue") and not authorize(auth, SLACK_ANA, "clone")
    assert authorize(auth, SLACK_GINA, "requeue") and authorize(auth, SLACK_GINA, "clone")
    assert calls == ["S0ML"]  # one Slack call for the burst
    members["S0ML"] = []  # gina leaves the group
    assert authorize(auth, SLACK_GINA, "clone")  # still cached
    now[0] = 61
    assert not authorize(auth, SLACK_GINA, "clone") and calls == ["S0ML", "S0ML"]


def test_a_group_that_cannot_be_resolved_grants_nothing() -> None:
    def broken(group: str) -> list[str]:
        raise RuntimeError("missing_scope")

    settings = ActionsSettings(allow={"abort": ActionAllow(usergroups=["S0OPS"])})
    decision = asyncio.run(Authorizer(settings, group_members=broken).authorize(SLACK_GINA, "abort"))
    assert not decision.allowed and "S0OPS could not be resolved" in decision.reason
    no_resolver = asyncio.run(Authorizer(settings).authorize(SLACK_GINA, "abort"))
    assert not no_resolver.allowed


def test_concurrent_clicks_share_one_group_lookup() -> None:
    calls = 0

    async def slow(group: str) -> list[str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return ["U0GINA"]

    auth = Authorizer(ActionsSettings(allow={"clone": ActionAllow(usergroups=["S0ML"])}), group_members=slow)

    async def many() -> list[bool]:
        return [d.allowed for d in await asyncio.gather(*(auth.authorize(SLACK_GINA, "clone") for _ in range(5)))]

    assert asyncio.run(many()) == [True] * 5 and calls == 1


def test_one_authorizer_serves_clicks_from_separate_event_loops() -> None:
    async def resolve(group: str) -> list[str]:
        await asyncio.sleep(0)
        return ["U0GINA"]

    auth = Authorizer(ActionsSettings(allow={"clone": ActionAllow(usergroups=["S0ML"])}), group_members=resolve,
                      ttl_s=0)  # no caching: every click resolves (and locks) again

    async def burst() -> list[bool]:
        return [d.allowed for d in await asyncio.gather(*(auth.authorize(SLACK_GINA, "clone") for _ in range(3)))]

    assert asyncio.run(burst()) == [True] * 3
    assert asyncio.run(burst()) == [True] * 3  # a sync Bolt listener: a new loop per click
