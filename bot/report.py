"""Terminal rendering of a run: grouped by severity, then by check (count + worst examples)."""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from typing import IO, Any

from bot.engine.findings import SEVERITIES_WORST_FIRST, Finding, consequences_by_root, folded_summary, worst_severity
from bot.engine.runner import RunResult

_COLORS = {"critical": "31;1", "error": "35;1", "warning": "33;1", "info": "36", "ok": "32"}
_ICONS = {"critical": "CRIT", "error": "ERR ", "warning": "WARN", "info": "INFO", "ok": " OK "}
EXAMPLES_PER_CHECK = 5


def _use_color(stream: IO[str]) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


def _paint(text: str, severity: str, color: bool) -> str:
    return f"\x1b[{_COLORS[severity]}m{text}\x1b[0m" if color else text


def _evidence_line(evidence: dict[str, Any], limit: int = 4) -> str:
    parts = []
    for key, value in evidence.items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, list | dict):
            value = json.dumps(value, default=str)
        text = str(value)
        parts.append(f"{key}={text if len(text) <= 80 else text[:77] + '...'}")
        if len(parts) >= limit:
            break
    return ", ".join(parts)


def render_text(result: RunResult, *, stream: IO[str] | None = None, verbose: bool = False) -> str:
    out = stream or sys.stdout
    color = _use_color(out)
    lines: list[str] = []
    worst = worst_severity(result.findings)
    problems = len(result.problems)
    state = "all clear" if not problems else f"{problems} problem{'s' if problems != 1 else ''}"
    lines.append(
        _paint(f"== {', '.join(result.playbooks)} on {result.server} ({result.server_url}): {state}", worst, color)
    )
    lines.append(
        f"   {len(result.checks)} checks in {result.duration_s:.2f}s, {result.api_calls} API calls, "
        f"started {result.started_at.isoformat(timespec='seconds')}"
    )
    by_severity: dict[str, dict[str, list[Finding]]] = defaultdict(lambda: defaultdict(list))
    consequences = consequences_by_root(result.findings)
    shown_under_root = {f.fingerprint for items in consequences.values() for f in items}
    for finding in result.findings:
        if finding.fingerprint in shown_under_root:
            continue  # listed under its root cause
        by_severity[finding.severity][finding.check].append(finding)
    for severity in SEVERITIES_WORST_FIRST:
        groups = by_severity.get(severity)
        if not groups:
            continue
        if severity == "ok" and not verbose:
            ok_checks = ", ".join(sorted(groups))
            lines.append("")
            lines.append(_paint(f"[{_ICONS['ok']}] passed: {ok_checks}", "ok", color))
            continue
        lines.append("")
        count = sum(len(v) for v in groups.values())
        lines.append(_paint(f"[{_ICONS[severity]}] {severity.upper()} ({count})", severity, color))
        for check_id, items in sorted(groups.items()):
            lines.append(f"  {check_id} — {len(items)} finding{'s' if len(items) != 1 else ''}")
            shown = items if verbose else items[:EXAMPLES_PER_CHECK]
            for finding in shown:
                subject = finding.subject.name or finding.subject.id
                lines.append(f"    • {finding.title}  [{finding.subject.kind} {subject}]")
                if finding.detail:
                    lines.append(f"      {finding.detail}")
                evidence = _evidence_line(finding.evidence)
                if evidence:
                    lines.append(f"      evidence: {evidence}")
                if finding.remediation and finding.severity != "info":
                    lines.append(f"      fix: {finding.remediation}")
                if finding.actions:
                    lines.append(f"      actions: {', '.join(finding.actions)}")
                if finding.links:
                    lines.append(f"      {finding.links[0]}")
                for consequence in consequences.get(finding.fingerprint, []):
                    subject = consequence.subject.name or consequence.subject.id
                    lines.append(
                        f"      ↳ {consequence.severity}: {consequence.title}  [{consequence.subject.kind} {subject}]"
                    )
                folded = folded_summary(finding)
                if folded:
                    lines.append(f"      ↳ {folded}")
            if len(items) > len(shown):
                lines.append(f"    …and {len(items) - len(shown)} more (use --verbose or --format json)")
    silent = [c for c in result.checks if c.status in ("timeout", "error")]
    if silent:
        lines.append("")
        lines.append("Checks that did not complete: " + ", ".join(f"{c.id} ({c.status})" for c in silent))
    text = "\n".join(lines) + "\n"
    out.write(text)
    return text
