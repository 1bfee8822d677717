"""Tell the owner: a finding about one task can also go to the task's owner as a Slack direct message.

Opt-in per playbook (`notify_owner: true`). After such a playbook runs, `attach_owners` records each task finding's
owner (the task's ClearML user: id, name and, when the server has one, e-mail) in `evidence["owner"]`; when the
finding's incident opens, the pipeline also posts its root message (same rendering, redaction and buttons) to
`owner_target(...)`, an outbox channel of the form "dm:<Slack user id or e-mail>" that the Slack sender turns into a
DM (users.lookupByEmail, conversations.open). The channel keeps the thread and the digest.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bot.targets import DM_PREFIX
from bot.targets import is_dm_target as is_dm_target  # re-exported for code written against owners
from bot.targets import slack_user_ref as slack_user_ref

if TYPE_CHECKING:
    from bot.config import SlackSettings
    from bot.engine.findings import Finding
    from bot.engine.snapshot import Snapshot

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


async def attach_owners(snap: Snapshot, findings: list[Finding]) -> int:
    """Fill `evidence["owner"]` of every task finding with its task's owner; returns how many got one.

    Two requests at most: the tasks' `user` (memoized by the snapshot, usually already fetched) and users.get_all
    for those users. A failure leaves the findings as they were (no DM is better than no report)."""
    from bot.clearml.errors import ClearMLError

    task_findings = [f for f in findings if f.subject.kind == "task" and "owner" not in f.evidence]
    if not task_findings:
        return 0
    try:
        tasks = await snap.tasks_by_id(f.subject.id for f in task_findings)
        user_ids = sorted({t.user for t in tasks.values() if t.user})
        if not user_ids:
            return 0
        data = await snap.client.call("users.get_all", {"id": user_ids, "only_fields": ["id", "name", "email"]})
    except ClearMLError:
        return 0
    users = {str(u.get("id")): u for u in data.get("users") or [] if isinstance(u, dict)}
    attached = 0
    for finding in task_findings:
        task = tasks.get(finding.subject.id)
        user = users.get(task.user) if task is not None and task.user else None
        if user is None:
            continue
        owner: dict[str, Any] = {"id": str(user.get("id")), "name": str(user.get("name") or "")}
        if user.get("email"):
            owner["email"] = str(user["email"])
        finding.evidence["owner"] = owner
        attached += 1
    return attached


def owner_target(owner: dict[str, Any] | None, slack: SlackSettings | None) -> str | None:
    """The outbox channel for the owner's DM ("dm:U123" or "dm:alice@example.com"), or None when unknown."""
    if not owner:
        return None
    mapping = slack.owners if slack is not None else {}
    for key in (owner.get("id"), owner.get("name"), owner.get("email")):
        if key and key in mapping:
            return DM_PREFIX + mapping[key]
    if slack is not None and not slack.owner_lookup_by_email:
        return None
    for candidate in (owner.get("email"), owner.get("name")):
        if candidate and _EMAIL.match(str(candidate)):
            return DM_PREFIX + str(candidate)
    return None

