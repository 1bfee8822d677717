"""A playbook run as a Slack message: header with the overall state, findings grouped by severity and check (count
and the worst examples), a context line (server, duration, API calls), and within Slack's limits a summary of the
rest with the command that shows everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slack_sdk.models.blocks import Block

from bot.durations import format_duration
from bot.engine.findings import SEVERITIES_WORST_FIRST, Finding, consequences_by_root, folded_summary, worst_severity
from bot.slack.messages.common import (
    MAX_BLOCKS,
    MAX_FALLBACK_TEXT,
    MAX_MESSAGE_TEXT,
    SEVERITY_EMOJI,
    SlackMessage,
    block_text_length,
    chunk_lines,
    clip,
    code,
    context,
    format_value,
    header,
    link,
    plural,
    safe,
    section,
    severity_count,
)

if TYPE_CHECKING:
    from bot.engine.runner import RunResult
    from bot.slack.actions.messages import ActionButton

# A finding's action buttons (bot/slack/actions/buttons.py signs them before rendering).
FindingButtons = Callable[[Finding], Sequence["ActionButton"]]

# Evidence keys that are bulky or only for machines.
_HIDDEN_EVIDENCE = {"lines", "log_tail", "raw"}


@dataclass(frozen=True)
class ReportOptions:
    command: str = "/clearml"
    requested_by: str | None = None  # Slack user id
    examples_per_group: int = 3
    evidence_items: int = 4
    show_info: bool = True
    # list `ok` findings too (a hash check someone asked for should say "intact", not just nothing)
    show_ok: bool = False
    # where the rest of the findings can be seen; default: `<command> run <playbook> --all`
    all_hint: str | None = None


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    return counts


def summary_phrase(findings: Sequence[Finding]) -> str:
    """`2 critical · 5 warnings · 1 error`, or `all checks passed`."""
    counts = severity_counts(findings)
    parts = []
    for sev in SEVERITIES_WORST_FIRST:
        n = counts.get(sev, 0)
        if n and sev != "ok":
            parts.append(severity_count(n, sev))
    return " · ".join(parts) if parts else "all checks passed"


def key_evidence(f: Finding, limit: int = 4) -> list[tuple[str, str]]:
    """The first `limit` evidence items worth reading: not empty, not a repeat of the subject, not machine-only;
    `*_s` seconds shown as durations."""
    out: list[tuple[str, str]] = []
    subject = {f.subject.name, f.subject.id}
    for key, value in f.evidence.items():
        if len(out) >= limit:
            break
        if key in _HIDDEN_EVIDENCE or value is None or value == "" or value == [] or value == {}:
            continue
        if key.endswith("_s") and isinstance(value, int | float) and not isinstance(value, bool):
            key, text = key[:-2], format_duration(float(value))
        else:
            text = format_value(value)
        if key == f.subject.kind or text in subject:
            continue  # already in the subject link
        out.append((key, text))
    return out


def finding_lines(
    f: Finding,
    *,
    secrets: Sequence[str] = (),
    evidence_items: int = 4,
    consequences: Sequence[Finding] = (),
) -> list[str]:
    """One finding as mrkdwn lines: title, subject link and key evidence, remediation, and (for a root cause) the
    consequences reported under it and the count of those folded into it."""
    title = safe(f.title, secrets, 200)
    url = f.links[0] if f.links else (f.subject.id if f.subject.id.startswith(("http://", "https://")) else None)
    subject_label = safe(f.subject.name or f.subject.id, secrets, 80)
    lines = [f"*{title}*"]
    facts = [f"{f.subject.kind} {link(url, subject_label)}"]
    for key, text in key_evidence(f, evidence_items):
        facts.append(f"{safe(key, secrets, 40)}: {safe(text, secrets, 100)}")
    if f.data_age_s is not None:
        facts.append(data_age_text(f.data_age_s))
    lines.append(" · ".join(facts))
    if f.detail and f.severity == "error":
        lines.append(safe(f.detail, secrets, 400))
    if f.remediation:
        lines.append(f"→ {safe(f.remediation, secrets, 400)}")
    for c in consequences[:5]:
        label = safe(c.subject.name or c.subject.id, secrets, 80)
        lines.append(f"↳ {SEVERITY_EMOJI[c.severity]} {safe(c.title, secrets, 160)} ({c.subject.kind} {label})")
    if len(consequences) > 5:
        lines.append(f"↳ …and {len(consequences) - 5} more consequences")
    folded = folded_summary(f)
    if folded:
        lines.append(f"↳ {safe(folded, secrets, 300)}")
    return lines


def group_findings(
    findings: Iterable[Finding], *, show_info: bool = True, show_ok: bool = False
) -> list[tuple[str, str, list[Finding]]]:
    """(severity, check, findings) worst severity first, then by check id; `ok` findings only when asked; a
    consequence whose root is among `findings` is left to its root (see `finding_lines`)."""
    findings = list(findings)

    def shown(f: Finding) -> bool:
        return not ((f.severity == "ok" and not show_ok) or (f.severity == "info" and not show_info))

    roots = {f.fingerprint for f in findings if shown(f)}
    under_root = {c.fingerprint for root, items in consequences_by_root(findings).items() if root in roots
                  for c in items}
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        if f.fingerprint in under_root:
            continue  # shown under its root cause
        if (f.severity == "ok" and not show_ok) or (f.severity == "info" and not show_info):
            continue
        groups.setdefault((f.severity, f.check), []).append(f)
    order: dict[str, int] = {sev: i for i, sev in enumerate(SEVERITIES_WORST_FIRST)}
    out = []
    for (sev, check_id), items in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        items.sort(key=lambda f: (-f.rank, f.subject.name or f.subject.id))
        out.append((sev, check_id, items))
    return out


def _group_text(
    sev: str,
    check_id: str,
    items: list[Finding],
    shown: int,
    *,
    more_hint: str,
    secrets: Sequence[str],
    opts: ReportOptions,
    consequences: dict[str, list[Finding]] | None = None,
) -> list[str]:
    head = f"{SEVERITY_EMOJI[sev]} *{check_id}* — {plural(len(items), 'finding')}"
    lines = [head]
    for f in items[:shown]:
        lines.append("")
        lines.extend(
            finding_lines(
                f,
                secrets=secrets,
                evidence_items=opts.evidence_items,
                consequences=(consequences or {}).get(f.fingerprint, ()),
            )
        )
    if len(items) > shown:
        lines.append("")
        lines.append(f"_…and {len(items) - shown} more: {more_hint}_")
    return lines


def run_title(result: RunResult) -> str:
    return ", ".join(result.playbooks) or "run"


def data_age_text(age_s: float) -> str:
    """How old shared data was (the read window, bot/engine/window.py): said wherever it was used."""
    return f"data {age_s:.0f} s old (shared)" if age_s >= 1 else "data under 1 s old (shared)"


def run_context(result: RunResult, opts: ReportOptions) -> list[str]:
    parts = [
        f"server *{safe(result.server)}* ({safe(result.server_url)})",
        f"{result.duration_s:.1f} s",
        plural(result.api_calls, "API call"),
        plural(len(result.checks), "check"),
    ]
    if result.data_age_s is not None:
        parts.append(data_age_text(result.data_age_s))
    if opts.requested_by:
        parts.append(f"requested by <@{opts.requested_by}>")
    return parts


def render_run(
    result: RunResult,
    *,
    opts: ReportOptions | None = None,
    secrets: Sequence[str] = (),
    buttons: FindingButtons | None = None,
    queues: Sequence[tuple[str, str]] = (),
) -> SlackMessage:
    """The report of one run in one message (≤ 50 blocks, each section ≤ 3000 characters).

    `buttons`: the action buttons of a finding; each group's shown findings get one actions block (with a select
    of `queues`, the server's (id, name), when a button can use one)."""
    from bot.slack.actions.messages import actions_block

    opts = opts or ReportOptions()
    worst = worst_severity(result.findings)
    title = run_title(result)
    phrase = summary_phrase(result.findings)
    all_cmd = opts.all_hint or f"`{opts.command} run {result.playbooks[0] if result.playbooks else title} --all`"

    blocks: list[Block] = [header(f"{_state_icon(worst)} {title} on {result.server}: {phrase}")]
    failed = [c for c in result.checks if c.status in ("failed", "error", "timeout")]
    broken = [c for c in result.checks if c.status in ("error", "timeout")]
    passed = len(result.checks) - len(failed)
    summary = f"{plural(len(result.checks), 'check')} ran: {passed} passed, {len(failed)} found problems"
    if broken:
        names = ", ".join(code(c.id, 60) for c in broken[:8])
        summary += f"; {len(broken)} could not run ({names}{', …' if len(broken) > 8 else ''})"
    blocks.append(section(summary))

    # Reserve room for the overflow note and the context line, in blocks and in total text (Slack refuses a message
    # whose blocks carry too much text: msg_blocks_too_long).
    budget = MAX_BLOCKS - len(blocks) - 2
    text_budget = MAX_MESSAGE_TEXT - block_text_length(blocks) - 1200
    leftover: dict[str, int] = {}
    consequences = consequences_by_root(result.findings)
    for sev, check_id, items in group_findings(result.findings, show_info=opts.show_info, show_ok=opts.show_ok):
        texts = chunk_lines(
            _group_text(
                sev,
                check_id,
                items,
                min(opts.examples_per_group, len(items)),
                more_hint=all_cmd,
                secrets=secrets,
                opts=opts,
                consequences=consequences,
            )
        )
        shown_items = items[: min(opts.examples_per_group, len(items))]
        group_buttons = [b for f in shown_items for b in buttons(f)] if buttons is not None else []
        block = actions_block(group_buttons, block_id=f"acts:{len(blocks)}", queues=queues)
        needed = len(texts) + (1 if block is not None else 0)
        chars = sum(len(t) for t in texts) + (block_text_length([block]) if block is not None else 0)
        if needed <= budget and chars <= text_budget:
            blocks.extend(section(t) for t in texts)
            if block is not None:
                blocks.append(block)
            budget -= needed
            text_budget -= chars
        else:
            leftover[sev] = leftover.get(sev, 0) + len(items)
    if leftover:
        counts = ", ".join(severity_count(n, s, "more ") for s in SEVERITIES_WORST_FIRST if (n := leftover.get(s)))
        blocks.append(section(f"_…and {counts}: {all_cmd}_"))
    blocks.append(context(*run_context(result, opts)))
    text = clip(f"{title} on {result.server}: {phrase}", MAX_FALLBACK_TEXT)
    return SlackMessage(text=text, blocks=blocks)


def render_run_details(
    result: RunResult, *, opts: ReportOptions | None = None, secrets: Sequence[str] = (), max_blocks: int = 45
) -> list[SlackMessage]:
    """Every finding of a run, in as many messages as needed (for `run ... --all`, posted in the thread): each
    within `max_blocks` sections and Slack's total text limit (MAX_MESSAGE_TEXT)."""
    opts = opts or ReportOptions()
    sections: list[str] = []
    consequences = consequences_by_root(result.findings)
    for sev, check_id, items in group_findings(result.findings, show_info=True):
        sections.extend(
            chunk_lines(
                _group_text(
                    sev, check_id, items, len(items), more_hint="", secrets=secrets, opts=opts,
                    consequences=consequences,
                )
            )
        )
    pages_of: list[list[str]] = []
    for text in sections:
        page_text = sum(len(t) for t in pages_of[-1]) if pages_of else 0
        if not pages_of or len(pages_of[-1]) >= max_blocks or page_text + len(text) > MAX_MESSAGE_TEXT - 500:
            pages_of.append([])
        pages_of[-1].append(text)
    messages: list[SlackMessage] = []
    for page, part in enumerate(pages_of, 1):
        text = f"{run_title(result)} on {result.server}: all findings ({page}/{len(pages_of)})"
        messages.append(SlackMessage(text=text, blocks=[section(t) for t in part]))
    if not messages:
        messages.append(SlackMessage(text="No findings", blocks=[section("No findings to list.")]))
    return messages


def _state_icon(worst: str) -> str:
    return {"critical": "🔴", "error": "🟠", "warning": "🟡", "info": "🟢", "ok": "🟢"}[worst]
