"""Authorization, one model: default deny for actions from Slack, default allow for incident operations unless
restricted, users and user groups (one cache for both kinds, fail closed), terminal allowed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from bot.actions.base import Actor
from bot.actions.policy import Authorizer
from bot.config import ActionAllow, ActionsSettings, ConfigError
from bot.slack.delivery.sink import SlackWriteError
from bot.slack.incidents.listeners import press
from bot.slack.incidents.messages import RESOLVE_ACTION

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


class _Pipeline:
    """The incident pipeline as the Resolve button sees it: it records what was resolved."""

    def __init__(self) -> None:
        self.resolved: list[int] = []

    def resolve(self, incident_id: int, user: str) -> list[str]:
        self.resolved.append(incident_id)
        return [f"resolved by {user}"]


def _resolve_click(auth: Authorizer, actor: Actor) -> tuple[dict[str, Any] | None, list[str], _Pipeline]:
    """A click on an incident's Resolve button, through the listener's own blocking half (as the work pool runs it)."""
    pipeline, told = _Pipeline(), []
    services = SimpleNamespace(authorizer=auth, incidents=pipeline)
    audit = press(services, actor, "C0ALERTS1", None, RESOLVE_ACTION, "7", tell=told.append)  # type: ignore[arg-type]
    return audit, told, pipeline


def test_one_user_group_cache_for_action_buttons_and_incident_buttons() -> None:
    calls: list[str] = []

    def users_list(group: str) -> list[str]:  # usergroups.users.list, blocking like the Slack sink's
        calls.append(group)
        return ["U0GINA"]

    settings = ActionsSettings(allow={"requeue": ActionAllow(usergroups=["S0ONCALL"]),
                                      "resolve": ActionAllow(usergroups=["S0ONCALL"])})
    auth = Authorizer(settings, group_members=users_list)
    assert authorize(auth, SLACK_GINA, "requeue")  # a Requeue click: the action core awaits the authorizer
    audit, told, pipeline = _resolve_click(auth, SLACK_GINA)  # then a Resolve click on an incident
    assert audit is not None and audit["outcome"] == "ok" and pipeline.resolved == [7] and told == []
    assert calls == ["S0ONCALL"]  # one Slack call for both kinds
    # ana is not in the group: refused in each kind, with that kind's words, and still no second call
    assert not authorize(auth, SLACK_ANA, "requeue")
    audit, told, pipeline = _resolve_click(auth, SLACK_ANA)
    assert audit is not None and audit["outcome"] == "denied" and pipeline.resolved == []
    assert told == ["Not allowed: only the users and user groups in actions.allow.resolve may resolve."]
    assert calls == ["S0ONCALL"]


def test_an_unresolvable_group_grants_nothing_to_actions_nor_incident_operations() -> None:
    def refused(group: str) -> list[str]:
        raise SlackWriteError("usergroups.users.list", "missing_scope")

    settings = ActionsSettings(allow={x: ActionAllow(usergroups=["S0ONCALL"])
                                      for x in ("requeue", "verify_hashes", "resolve", "silence")})
    auth = Authorizer(settings, group_members=refused)
    for action in ("requeue", "verify_hashes"):
        decision = asyncio.run(auth.authorize(SLACK_GINA, action))
        assert not decision.allowed and "S0ONCALL could not be resolved" in decision.reason
    audit, told, pipeline = _resolve_click(auth, SLACK_GINA)
    assert audit is not None and audit["outcome"] == "denied" and pipeline.resolved == []
    assert told == ["Not allowed: only the users and user groups in actions.allow.resolve may resolve (user groups "
                    "S0ONCALL could not be listed: usergroups:read scope?)."]
    silence = auth.authorize_blocking(SLACK_GINA, "silence")
    assert not silence.allowed and "S0ONCALL could not be listed" in silence.reason
    # without any restriction the incident operations stay open to everyone, the actions closed
    open_auth = Authorizer(ActionsSettings(), group_members=refused)
    assert open_auth.authorize_blocking(SLACK_GINA, "resolve").allowed
    assert not open_auth.authorize_blocking(SLACK_GINA, "requeue").allowed


def test_clicks_from_threads_and_the_event_loop_share_one_group_lookup() -> None:
    calls: list[str] = []
    release = threading.Event()

    def users_list(group: str) -> list[str]:
        calls.append(group)
        release.wait(5)
        return ["U0GINA"]

    auth = Authorizer(ActionsSettings(allow={"clone": ActionAllow(usergroups=["S0ML"]),
                                             "resolve": ActionAllow(usergroups=["S0ML"])}), group_members=users_list)
    with concurrent.futures.ThreadPoolExecutor(4) as threads:
        blocking = [threads.submit(auth.authorize_blocking, SLACK_GINA, "resolve") for _ in range(3)]

        async def loop_clicks() -> list[bool]:
            release.set()
            return [d.allowed for d in await asyncio.gather(*(auth.authorize(SLACK_GINA, "clone") for _ in range(3)))]

        assert asyncio.run(loop_clicks()) == [True] * 3
        assert [f.result(5).allowed for f in blocking] == [True] * 3
    assert calls == ["S0ML"]


def test_a_misspelt_rule_is_a_config_error_naming_the_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        Authorizer(ActionsSettings(allow={"resolv": ActionAllow(users=["U1"])}))
    message = str(caught.value)
    assert "actions.allow: resolv is not an action" in message and "resolve" in message and "requeue" in message
