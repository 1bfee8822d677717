"""Messages for the look-up subcommands: status, agents, queues, task, diff, dataset (bot.slack.commands.lookups)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject, PlainTextObject

from bot.durations import format_duration
from bot.slack.commands.lookups import (
    AgentsView,
    DatasetView,
    DiffView,
    Meta,
    QueuesView,
    StatusView,
    TaskDiagnosis,
    WorkerState,
)
from bot.slack.messages.common import (
    MAX_BLOCKS,
    MAX_FALLBACK_TEXT,
    MAX_MESSAGE_TEXT,
    SEVERITY_EMOJI,
    SlackMessage,
    chunk_lines,
    clip,
    code,
    context,
    fit_lines,
    header,
    link,
    plural,
    safe,
    section,
    severity_count,
)
from bot.slack.messages.report import data_age_text, finding_lines

if TYPE_CHECKING:
    from bot.slack.actions.messages import ActionButton

STATE_EMOJI = {"alive": ":large_green_circle:", "stale": ":large_yellow_circle:", "dead": ":red_circle:"}
_STATE_ICON = {"critical": "🔴", "error": "🟠", "warning": "🟡", "info": "🟢", "ok": "🟢"}

# action_id of the "verify hashes" button on a dataset message (listener in bot/slack/actions/verify_hashes.py)
VERIFY_DATASET_ACTION = "dataset_verify_hashes"


def meta_context(meta: Meta, *extra: str) -> list[str]:
    return [
        f"server *{safe(meta.server)}* ({safe(meta.server_url)})",
        f"{meta.duration_s:.1f} s",
        plural(meta.api_calls, "API call"),
        *([data_age_text(meta.data_age_s)] if meta.data_age_s is not None else []),
        *[e for e in extra if e],
    ]


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{format_duration(seconds)} ago"


def _requested(user: str | None) -> str:
    return f"requested by <@{user}>" if user else ""


def _finish(text: str, blocks: list[Block], trailer: Block) -> SlackMessage:
    """Keep the message within the block limit: the context line always survives."""
    if len(blocks) > MAX_BLOCKS - 1:
        blocks = [*blocks[: MAX_BLOCKS - 2], section("_…list cut to fit one Slack message._")]
    return SlackMessage(text=clip(text, MAX_FALLBACK_TEXT), blocks=[*blocks, trailer])


# -- status ---------------------------------------------------------------------------------------------------


def render_status(view: StatusView, *, requested_by: str | None = None, command: str = "/clearml") -> SlackMessage:
    m = view.meta
    if not view.reachable:
        text = f"ClearML server {m.server} is unreachable"
        blocks: list[Block] = [
            header(f"🔴 {m.server}: unreachable"),
            section(
                f"*{safe(m.server_url)}* did not answer: {safe(view.error, limit=1500)}\n"
                "→ Check that the API server is up and reachable from the bot (DNS, firewall, TLS)."
            ),
        ]
        return _finish(text, blocks, context(*meta_context(m, _requested(requested_by))))
    worst = view.worst
    problems = list(view.failing)
    headline = (
        "all good"
        if not problems
        else ", ".join(
            severity_count(sum(1 for f in problems if f.severity == s), s)
            for s in ("critical", "error", "warning")
            if any(f.severity == s for f in problems)
        )
    )
    blocks = [header(f"{_STATE_ICON[worst]} {m.server}: {headline}")]
    server_line = f":satellite_antenna: *Server* reachable in {view.latency_ms or 0:.0f} ms"
    if view.version:
        server_line += f", version {safe(view.version)}" + (
            f" (API {safe(view.api_version)})" if view.api_version else ""
        )
    a = view.agents
    agents_line = (
        f":robot_face: *Agents* {a.get('alive', 0)} alive ({view.busy} busy) · {a.get('stale', 0)} stale · "
        f"{a.get('dead', 0)} dead"
        if a
        else ":robot_face: *Agents* unknown"
    )
    if view.backlog:
        shown = ", ".join(
            f"{link(q.link, safe(q.name, limit=40))} {q.length} waiting"
            + (f" (oldest {format_duration(q.oldest_wait_s)})" if q.oldest_wait_s is not None else "")
            + (" :no_entry: no live agent" if q.workers_alive == 0 else "")
            for q in view.backlog[:8]
        )
        more = f", +{len(view.backlog) - 8} more" if len(view.backlog) > 8 else ""
        queues_line = f":inbox_tray: *Queues with backlog* {shown}{more}"
    else:
        queues_line = ":inbox_tray: *Queues* nothing waiting"
    blocks.append(section("\n".join([server_line, agents_line, queues_line])))
    if problems:
        lines = [f"*Failing checks* (playbook {code(view.playbook)})"]
        for f in problems[:15]:
            lines.append(
                f"{SEVERITY_EMOJI[f.severity]} `{f.check}` — {plural(f.count, 'finding')}, "
                f"e.g. {safe(f.example, limit=150)}"
            )
        if len(problems) > 15:
            lines.append(f"_…and {len(problems) - 15} more checks_")
        lines.append(f"Details: `{command} run {view.playbook if view.playbook != 'status' else 'health'}`")
        blocks.extend(section(t) for t in chunk_lines(lines))
    elif view.result is not None:
        blocks.append(
            section(
                f":white_check_mark: All {plural(len(view.result.checks), 'check')} of {code(view.playbook)} passed."
            )
        )
    if view.error:
        blocks.append(section(f":warning: Part of the overview is missing: {safe(view.error, limit=500)}"))
    text = f"{m.server}: {headline}"
    return _finish(text, blocks, context(*meta_context(m, _requested(requested_by))))


# -- agents ---------------------------------------------------------------------------------------------------


def _worker_line(w: WorkerState) -> str:
    parts = [f"{STATE_EMOJI[w.state]} {link(w.link, safe(w.id, limit=80))}", f"{w.state}, seen {_ago(w.age_s)}"]
    if w.task_id:
        parts.append(f"running {link(w.task_link, safe(w.task_name or w.task_id, limit=60))}")
    else:
        parts.append("idle")
    if w.queues:
        parts.append(
            "queues " + ", ".join(safe(q, limit=30) for q in w.queues[:4]) + (" …" if len(w.queues) > 4 else "")
        )
    return " · ".join(parts)


def render_agents(view: AgentsView, *, requested_by: str | None = None) -> SlackMessage:
    m = view.meta
    counts = f"{view.count('alive')} alive · {view.count('stale')} stale · {view.count('dead')} dead"
    scope = f" matching {code(view.pattern, 40)}" if view.pattern else ""
    blocks: list[Block] = [header(f"Agents on {m.server}{' (filtered)' if view.pattern else ''}: {counts}")]
    if not view.workers:
        msg = (
            f"No registered agent{scope} (of {view.total})."
            if view.pattern
            else "No agent is registered: nothing will run queued tasks. "
            "Start one with `clearml-agent daemon --queue <name>`."
        )
        blocks.append(section(msg))
    else:
        # within Slack's total text per message (msg_blocks_too_long), not only its block count
        more = "_…and {n} more agents: narrow the list with `/clearml agents <pattern>`._"
        lines = fit_lines([_worker_line(w) for w in view.workers], MAX_MESSAGE_TEXT - 1500, more)
        blocks.extend(section(t) for t in chunk_lines(lines)[: MAX_BLOCKS - 3])
    legend = (
        f"stale after {format_duration(view.stale_after)}, dead after {format_duration(view.dead_after)} of silence"
    )
    text = f"Agents on {m.server}{scope}: {counts}"
    return _finish(text, blocks, context(*meta_context(m, legend, _requested(requested_by))))


# -- queues ---------------------------------------------------------------------------------------------------


def render_queues(view: QueuesView, *, requested_by: str | None = None) -> SlackMessage:
    m = view.meta
    waiting = sum(q.length for q in view.queues)
    blocks: list[Block] = [
        header(f"Queues on {m.server}: {plural(len(view.queues), 'queue')}, {waiting} tasks waiting")
    ]
    lines = []
    for q in view.queues:
        icon = ":inbox_tray:" if q.length else ":white_circle:"
        line = f"{icon} {link(q.link, safe(q.name, limit=60))} · {q.length} waiting"
        if q.oldest_wait_s is not None and q.length:
            line += f" (oldest {format_duration(q.oldest_wait_s)})"
        line += f" · agents {q.workers_alive}/{q.workers_total} live"
        if q.length and q.workers_alive == 0:
            line += " :no_entry: *nobody serves it*"
        lines.append(line)
    if not lines:
        lines.append("No queue exists on this server.")
    chunks = chunk_lines(lines)
    blocks.extend(section(t) for t in chunks[: MAX_BLOCKS - 3])
    text = f"Queues on {m.server}: {waiting} tasks waiting"
    return _finish(text, blocks, context(*meta_context(m, _requested(requested_by))))


# -- task -----------------------------------------------------------------------------------------------------

_TASK_STATUS_ICON = {
    "failed": "🔴",
    "stopped": "🟠",
    "in_progress": "🔵",
    "queued": "⏳",
    "completed": "🟢",
    "published": "🟢",
    "created": "📝",
    "closed": "⚪",
}

ACTION_TEXT = {
    "requeue": "requeue it (stop, reset, enqueue again)",
    "abort": "abort it",
    "clone": "clone it and run the copy",
    "reproduce": "reproduce it (clone, run, compare with this run)",
    "prioritize": "move it to the front of its queue",
    "rotate": "restart its agent",
}


def render_task(
    d: TaskDiagnosis,
    *,
    requested_by: str | None = None,
    secrets: Sequence[str] = (),
    buttons: Sequence[ActionButton] = (),
    queues: Sequence[tuple[str, str]] = (),
) -> SlackMessage:
    """One task's diagnosis; `buttons` (signed by the caller) for its suggested actions, with a select of `queues`
    when one of them can run it elsewhere."""
    from bot.slack.actions.messages import actions_block

    icon = _TASK_STATUS_ICON.get(d.status, "•")
    blocks: list[Block] = [header(f"{icon} Task {clip(d.name or d.id, 100)}: {d.status}")]
    facts = [
        f"*Task* {link(d.link, safe(d.name or d.id, secrets, 80))} (`{d.id}`)",
        f"*Status* {d.status}" + (f" — {safe(d.status_reason, secrets, 200)}" if d.status_reason else ""),
    ]
    if d.status_message:
        facts.append(f"*Message* {safe(d.status_message, secrets, 300)}")
    facts.append(
        f"*Project* {safe(d.project or '—', limit=80)} · *type* {safe(d.type or '—')}"
        + (f" · *last update* {_ago(d.last_update_age_s)}" if d.last_update_age_s is not None else "")
    )
    if d.worker_id:
        if d.worker_gone:
            facts.append(f"*Worker* {code(d.worker_id, 80)} :red_circle: no longer registered")
        elif d.worker is not None:
            w = d.worker
            doing = ""
            if w.task_id and w.task_id != d.id:
                doing = f", now running {link(w.task_link, safe(w.task_name or w.task_id, limit=50))}"
            facts.append(
                f"*Worker* {link(w.link, safe(w.id, limit=80))} {STATE_EMOJI[w.state]} {w.state}, "
                f"seen {_ago(w.age_s)}{doing}"
            )
    if d.queue:
        q = f"*Queue* {link(d.queue_link, safe(d.queue, limit=60))}"
        if d.queue_position:
            q += f" · position {d.queue_position} of {d.queue_length}"
        if d.queue_workers_alive is not None:
            q += f" · {plural(d.queue_workers_alive, 'live agent')}"
        facts.append(q)
    blocks.append(section("\n".join(facts)))
    if d.failure:
        lines = [f":mag: *Failure cause: {safe(d.failure.title, secrets, 200)}* (`{d.failure.cause}`)"]
        lines += [f"> {code(line, 280)}" for line in d.failure.lines]
        lines.append(f"→ {safe(d.failure.advice, secrets)}")
        blocks.extend(section(t) for t in chunk_lines(lines))
    elif d.status in ("failed", "stopped"):
        why = f" (the log could not be read: {safe(d.log_error, secrets, 200)})" if d.log_error else ""
        blocks.append(section(f":mag: No known failure pattern in the status or the last 100 log lines{why}."))
    if d.env_gaps:
        gaps = "\n".join(
            f"• {g.what.replace('_', ' ')}" + (f": {safe(g.detail, secrets, 200)}" if g.detail else "")
            for g in d.env_gaps[:10]
        )
        blocks.append(section(f":package: *Environment capture gaps*\n{gaps}"))
    advice = [f"• {safe(n, secrets, 300)}" for n in d.notes]
    if d.actions:
        advice.append("*Suggested:* " + "; ".join(ACTION_TEXT.get(a, a) for a in d.actions))
    if advice:
        blocks.append(section("\n".join(advice)))
    block = actions_block(buttons, block_id="acts:task", queues=queues)
    if block is not None:
        blocks.append(block)
    text = f"Task {d.name or d.id}: {d.status}" + (f" ({d.failure.title})" if d.failure else "")
    return _finish(text, blocks, context(*meta_context(d.meta, _requested(requested_by))))


# -- diff -----------------------------------------------------------------------------------------------------


def render_diff(view: DiffView, *, requested_by: str | None = None, secrets: Sequence[str] = ()) -> SlackMessage:
    a, b = view.a, view.b
    blocks: list[Block] = [
        header(f"Diff: {clip(a.name or a.id, 60)} ↔ {clip(b.name or b.id, 60)}"),
        section(
            f"*A* {link(a.link, safe(a.name or a.id, secrets, 80))} (`{a.id}`, {a.status})\n"
            f"*B* {link(b.link, safe(b.name or b.id, secrets, 80))} (`{b.id}`, {b.status})"
        ),
    ]
    if view.differences:
        lines = [
            f"• *{safe(aspect, limit=60)}*: A {code(va, 200)} → B {code(vb, 200)}"
            if vb
            else f"• *{safe(aspect, limit=60)}*: {safe(va, secrets, 400)}"
            for aspect, va, vb in view.differences
        ]
        blocks.extend(section(t) for t in chunk_lines(lines)[: MAX_BLOCKS - 6])
    problems = [f for f in view.findings if f.severity != "ok"]
    if not view.differences:
        if problems:
            for f in problems[:10]:
                blocks.append(section("\n".join(finding_lines(f, secrets=secrets, evidence_items=8))))
        else:
            blocks.append(
                section(
                    ":white_check_mark: No difference in commit, diff, requirements, Python, container, "
                    "hyperparameters or input datasets."
                )
            )
    n = len(view.differences) or len(problems)
    text = f"Diff {a.name or a.id} vs {b.name or b.id}: {plural(n, 'difference')}"
    return _finish(text, blocks, context(*meta_context(view.meta, _requested(requested_by))))


# -- dataset --------------------------------------------------------------------------------------------------


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def render_dataset(
    view: DatasetView, *, requested_by: str | None = None, secrets: Sequence[str] = (), button_value: str = ""
) -> SlackMessage:
    if not view.complete:
        state, icon = "incomplete or broken", "🔴"
    elif view.unchecked:
        state, icon = "not fully checked", "🟠"
    else:
        state, icon = "nothing missing", "🟢"
    version = f" v{view.version}" if view.version else ""
    blocks: list[Block] = [header(f"{icon} Dataset {clip(view.name, 80)}{version}: {view.status}, {state}")]
    facts = [
        f"*Dataset* {link(view.link, safe(view.name, secrets, 80))}{version} (`{view.id}`) in "
        f"{safe(view.project or '—', limit=80)}",
        f"*Status* {view.status} · *files* {view.file_count if view.file_count is not None else '—'} · "
        f"*size* {_size(view.total_size)} · *last update* {_ago(view.last_update_age_s)}",
    ]
    if view.parents:
        facts.append("*Parents* " + ", ".join(f"`{p}`" for p in view.parents[:5]))
    blocks.append(section("\n".join(facts)))
    problems = [f for f in view.findings if f.severity != "ok"]
    if problems:
        for f in problems[:10]:
            lines = [f"{SEVERITY_EMOJI[f.severity]} `{f.check}`", *finding_lines(f, secrets=secrets)]
            blocks.extend(section(t) for t in chunk_lines(lines))
    else:
        blocks.append(section(":white_check_mark: Finalized, its state and chunks are listed, and its parents exist."))
    if view.can_verify and button_value:
        blocks.append(
            section(
                "Hash check: downloads every chunk and re-hashes each file against the dataset's state "
                "(sha256). The result goes into this thread."
            )
        )
        blocks.append(
            ActionsBlock(
                elements=[
                    ButtonElement(
                        text=PlainTextObject(text="Verify file hashes"),
                        action_id=VERIFY_DATASET_ACTION,
                        value=button_value,
                        confirm=ConfirmObject(
                            title="Verify every file?",
                            text=clip(
                                f"This downloads all of {view.name}{version} ({_size(view.total_size)}) "
                                "from storage and re-hashes it.",
                                300,
                            ),
                            confirm="Verify",
                            deny="Cancel",
                        ),
                    )
                ]
            )
        )
    text = f"Dataset {view.name}{version}: {view.status}, {state}"
    return _finish(text, blocks, context(*meta_context(view.meta, _requested(requested_by))))
