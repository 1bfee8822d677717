"""Root-cause correlation: the stage after the checks that turns one cause's many findings into one root.

The rules follow ClearML's dependency chain (the idea of Alertmanager's inhibition rules, derived from what the
bot knows about ClearML instead of written per user):

- API server unreachable, or its keys rejected: every check that could not run because of it is listed in the
  root ("not run: 16 checks"), not reported one by one; the file server's refused token restates it.
- File server down: storage and dataset findings that only restate it (they name the file server's address)
  fold into it.
- Many agents silent since the same minute or two (>= 30 % and >= 5): one fleet-wide finding naming the likely
  shared cause, the agents in its evidence; their orphaned tasks and the queues they left fold into it.
- A dead agent: its orphaned tasks and the queues it left unserved are consequences (`caused_by`), kept as
  findings because each needs its own action (requeue; serve the queue).
- A running task close to the server's 2 h watchdog (agents.watchdog_risk): agents.orphaned_tasks' finding on the
  same task only restates its silence and folds into it; a dead agent's task at risk is the agent's consequence.
- A queue with no live agent: its waiting tasks (queues.stuck_queued) and its backlog are evidence of the
  queue's finding; a task stuck behind a long queue that agents do serve is the backlog's evidence.

Two outcomes for a consequence: *suppressed* (folded into its root's `suppressed` list, no finding of its own)
when it only restates the root, or a *consequence* (kept, `caused_by` = the root's fingerprint, listed in the
root's `consequences`) when a responder acts on it separately. Pure: findings in, findings out; no I/O.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from bot.engine.findings import (
    SEVERITY_RANK,
    SUPPRESSED_LISTED,
    Finding,
    Severity,
    Subject,
    SuppressedFinding,
    is_problem,
)

# Mass silence: this share of the registered agents, and at least this many, silent since within this window.
MASS_SHARE = 0.30
MASS_MIN_AGENTS = 5
MASS_WINDOW_S = 120.0
MASS_LISTED = 200
# Failure bursts: this many tasks failing on the same storage error are one finding; unread failures fold into a
# cause that explains this share of the failures that were read.
BURST_MIN_TASKS = 5
BURST_DOMINANT = 0.8

# What a queue with no live agent also shows: a backlog, long waits, no capacity. They restate it.
_QUEUE_RESTATEMENTS = ("queues.backlog", "queues.wait_time", "queues.capacity")
# A served queue this short that waits for hours waits for its head task, not for capacity.
_SHORT_QUEUE = 5
# The file server's probe failed in a way that makes every read from it fail (storage/results.py classes) ...
_FILE_SERVER_DOWN = {"endpoint_unreachable", "timeout", "tls", "unauthorized"}
# ... and a finding that restates it says so in words like these (a missing file does not).
_UNREACHABLE_WORDS = ("cannot reach", "connection refused", "unreachable", "timed out", "timeout", "unauthorized",
                      "401", "certificate", "could not be downloaded")


@dataclass
class _Graph:
    """Working state: the findings still reported, and what was folded into or linked to each root."""

    live: dict[str, Finding]
    folded: dict[str, list[Finding]] = field(default_factory=dict)
    parent: dict[str, str] = field(default_factory=dict)  # consequence fp -> the fp it points at
    extra_evidence: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fold(self, root: Finding, consequence: Finding) -> None:
        if consequence.fingerprint == root.fingerprint or consequence.fingerprint not in self.live:
            return
        del self.live[consequence.fingerprint]
        self.parent.pop(consequence.fingerprint, None)
        items = self.folded.setdefault(root.fingerprint, [])
        items.append(consequence)
        # What was folded into the consequence moves up with it (a queue's waiting tasks into a fleet event).
        items.extend(self.folded.pop(consequence.fingerprint, []))
        for child, target in list(self.parent.items()):
            if target == consequence.fingerprint:
                self.parent[child] = root.fingerprint

    def link(self, root: Finding, consequence: Finding) -> None:
        if consequence.fingerprint == root.fingerprint or consequence.fingerprint in self.parent:
            return
        if self.root_of(root.fingerprint) == consequence.fingerprint:
            return  # never a cycle
        self.parent[consequence.fingerprint] = root.fingerprint

    def root_of(self, fingerprint: str) -> str:
        seen = {fingerprint}
        while fingerprint in self.parent and self.parent[fingerprint] not in seen:
            fingerprint = self.parent[fingerprint]
            seen.add(fingerprint)
        return fingerprint

    def of(self, check: str, *, problems: bool = True) -> list[Finding]:
        """The live findings of `check` (warning or worse with `problems`); never "could not run" errors,
        which are about the check, not about a subject."""
        return [
            f
            for f in self.live.values()
            if f.check == check and f.severity != "error" and (not problems or is_problem(f.severity))
        ]

    def consequences(self) -> list[Finding]:
        """Live findings that may be folded or linked under a root: problems about a subject, not errors."""
        return [f for f in self.live.values() if f.severity != "error" and is_problem(f.severity)]


def correlate(
    findings: list[Finding], *, api_url: str, files_url: str = "", registered_agents: int | None = None
) -> list[Finding]:
    """Fold and link consequences under their root causes; returns the findings still reported."""
    graph = _Graph(live={f.fingerprint: f for f in findings})
    _server_root(graph, api_url, files_url)
    _file_server_root(graph)
    _unserved_queues(graph)  # before the fleet rule: a queue folded into a fleet event brings its waiting tasks
    _mass_silence(graph, api_url, registered_agents)
    _missing_pools(graph)
    _watchdog_restatements(graph)
    _dead_agents(graph)
    _backlogged_queues(graph)
    _failure_bursts(graph)
    return _materialize(graph)


# -- rules --------------------------------------------------------------------------------------------------


def _server_root(graph: _Graph, api_url: str, files_url: str) -> Finding | None:
    reach = next(iter(graph.of("server.reachable")), None)
    creds = next(iter(graph.of("server.credentials")), None)
    if reach is not None and reach.severity == "critical":
        root = reach
    elif creds is not None and creds.severity == "critical":
        root = creds
    else:
        root = reach  # slow (warning) or nothing
    if root is None:
        return None
    down = root.severity == "critical"
    if creds is not None and root is reach and down:
        graph.fold(root, creds)  # "refuses connections" twice
    not_run: list[str] = []
    for f in list(graph.live.values()):
        if f.severity != "error" or not f.fingerprint.endswith(f"|error|{api_url}"):
            continue
        if not down and not _mentions(f, ("deadline", "unavailable", "timed out", "timeout")):
            continue  # a slow server explains checks that ran out of time, not a check's own bug
        not_run.append(f.check)
        graph.fold(root, f)
    if not_run:
        graph.extra_evidence.setdefault(root.fingerprint, {})["not_run"] = sorted(set(not_run))
    if not down and root is reach:
        for fs in graph.of("storage.fileserver"):
            if not fs.evidence.get("error") and _host(fs.subject.id) == _host(api_url):
                graph.fold(root, fs)  # slow on the same host: one overloaded machine, not two problems
    if down:
        for fs in graph.of("storage.fileserver"):
            token_refused = fs.evidence.get("error") == "unauthorized" and root is creds
            same_host = root is reach and _host(fs.subject.id) == _host(api_url) and bool(fs.evidence.get("error"))
            if token_refused or same_host:
                graph.fold(root, fs)
    return root if down else None


def _file_server_root(graph: _Graph) -> None:
    for fs in graph.of("storage.fileserver"):
        if fs.evidence.get("error") not in _FILE_SERVER_DOWN:
            continue  # slow, or one operation refused: a missing file elsewhere is still its own finding
        address = _netloc(fs.subject.id)
        if not address:
            continue
        for f in graph.consequences():
            if f is fs or f.area not in ("storage", "datasets"):
                continue
            text = _text_of(f)
            if address in text and any(w in text.lower() for w in _UNREACHABLE_WORDS):
                graph.fold(fs, f)


def _mass_silence(graph: _Graph, api_url: str, registered: int | None) -> None:
    """Many agents silent since the same minute or two: one shared cause, not many broken machines."""
    stale = [f for f in graph.of("agents.stale", problems=False) if f.subject.kind == "worker" and f.severity != "ok"]
    timed = [(float(f.evidence.get("silent_s") or 0), f) for f in stale if f.evidence.get("silent_s") is not None]
    if len(timed) < MASS_MIN_AGENTS:
        return
    timed.sort(key=lambda t: t[0])
    best: tuple[int, int] = (0, 0)
    start = 0
    for end in range(len(timed)):  # the largest group whose silences began within MASS_WINDOW_S of each other
        while timed[end][0] - timed[start][0] > MASS_WINDOW_S:
            start += 1
        if end - start + 1 > best[1] - best[0]:
            best = (start, end + 1)
    group = [f for _, f in timed[best[0] : best[1]]]
    total = max(registered or 0, len(stale))
    if len(group) < MASS_MIN_AGENTS or len(group) < MASS_SHARE * total:
        return
    severity: Severity = max((f.severity for f in group), key=lambda s: SEVERITY_RANK[s])
    silences = [int(f.evidence["silent_s"]) for f in group]
    workers = sorted(f.subject.id for f in group)
    ips = [str(f.evidence.get("ip") or "") for f in group]
    subnet = _common_subnet(ips)
    causes = [
        "the API server itself (restarted, overloaded or its worker-status store lost): check its logs",
        "the API server's Redis (agent reports are kept there): `redis-cli ping`, memory, evictions",
        f"the network between the agents and the API server{f' ({subnet})' if subnet else ''}: DNS, load "
        "balancer, firewall, VPN",
        "a credentials rotation: agents whose keys were revoked cannot report (their logs show 401)",
    ]
    low, high = _human(min(silences)), _human(max(silences))
    since = f"{low}–{high}" if low != high else low
    root = Finding(
        check="agents.stale",
        severity=severity,
        title=f"{len(group)} of {total} agents stopped reporting at the same time (silent {since}): a shared "
        "cause, not broken machines",
        detail=(
            f"{len(group)} agents ({round(100 * len(group) / total)} % of {total}) fell silent within "
            f"{_human(MASS_WINDOW_S)} of each other. One cause explains that better than {len(group)} broken "
            "machines. Likely, in order: " + "; ".join(causes) + "."
        ),
        subject=Subject(kind="server", id=api_url, name="agent fleet"),
        fingerprint=f"agents.stale|mass|{api_url}",
        evidence={
            "count": len(group),
            "registered": total,
            "share": round(len(group) / total, 3),
            "silent_s_range": [min(silences), max(silences)],
            "common_subnet": subnet or None,
            "likely_causes": ["api_server", "redis", "network", "credentials_rotation"],
            "workers": workers[:MASS_LISTED],
            "workers_omitted": max(0, len(workers) - MASS_LISTED),
        },
        links=[group[0].links[0]] if group[0].links else [],
        remediation=(
            "Look at the shared path first: the API server's logs and health, its Redis, the network the agents "
            "use to reach it, and whether API keys were rotated. Do not restart agents one by one; once the cause "
            "is fixed they report again within 30 s."
        ),
        actions=[],
    )
    graph.live[root.fingerprint] = root
    members = {f.subject.id for f in group}
    for f in group:
        graph.fold(root, f)
    for f in graph.consequences():
        if f.check == "agents.orphaned_tasks" and f.evidence.get("last_worker") in members:
            graph.fold(root, f)  # the agents most likely still run them; requeueing now would run them twice
        elif f.check == "agents.unserved_queues":
            silent = {w.get("id") for w in f.evidence.get("silent_workers") or [] if isinstance(w, dict)}
            if silent and silent <= members:
                graph.fold(root, f)


def _missing_pools(graph: _Graph) -> None:
    """A pool of agents that is gone (agents.missing): the queues it served, left unserved, and the tasks its
    agents were running are its consequences."""
    for pool in graph.of("agents.missing"):
        pattern = str(pool.evidence.get("pattern") or "")
        queue_ids = {str(q.get("id")) for q in pool.evidence.get("queues") or [] if isinstance(q, dict)}
        for f in graph.consequences():
            left_queue = f.check == "agents.unserved_queues" and f.subject.id in queue_ids
            lost_task = (
                f.check == "agents.orphaned_tasks"
                and bool(pattern)
                and "worker_gone" in (f.evidence.get("reasons") or [])
                and fnmatchcase(str(f.evidence.get("last_worker") or ""), pattern)
            )
            if left_queue or lost_task:
                graph.link(pool, f)


def _watchdog_restatements(graph: _Graph) -> None:
    """A task the watchdog is about to stop: the orphaned-task finding on the same task says the same silence with
    less (no deadline), so it is the watchdog finding's evidence."""
    for risk in graph.of("agents.watchdog_risk"):
        for f in graph.of("agents.orphaned_tasks"):
            if f.subject == risk.subject:
                graph.fold(risk, f)


def _dead_agents(graph: _Graph) -> None:
    """A stale agent, its orphaned tasks (or tasks at the watchdog's risk) and the queues it left: one group
    rooted at the agent."""
    stale = {f.subject.id: f for f in graph.of("agents.stale") if f.subject.kind == "worker"}
    orphans = graph.of("agents.orphaned_tasks")
    for f in [*orphans, *graph.of("agents.watchdog_risk")]:
        worker = stale.get(str(f.evidence.get("last_worker") or ""))
        if worker is not None:
            graph.link(worker, f)
    for q in graph.of("agents.unserved_queues"):
        silent = [w.get("id") for w in q.evidence.get("silent_workers") or [] if isinstance(w, dict)]
        worker = next((stale[w] for w in sorted(silent, key=str) if w in stale), None)
        if worker is not None:
            graph.link(worker, q)
            continue
        # The server already dropped the agent (10 minutes after its last report): its orphaned task, which
        # names it, stands for it.
        queue_id = q.subject.id
        orphan = next(
            (o for o in orphans if _queue_id(o) == queue_id and set(o.evidence.get("reasons") or []) & {
                "worker_gone", "worker_dead"}),
            None,
        )
        if orphan is not None:
            graph.link(orphan, q)


def _unserved_queues(graph: _Graph) -> None:
    """A queue nobody serves: its waiting tasks and its backlog are the queue's evidence."""
    for q in graph.of("agents.unserved_queues"):
        for f in graph.consequences():
            waiting_task = f.check == "queues.stuck_queued" and _queue_id(f) == q.subject.id
            same_queue = f.check in _QUEUE_RESTATEMENTS and f.subject == q.subject
            if waiting_task or same_queue:
                graph.fold(q, f)


def _backlogged_queues(graph: _Graph) -> None:
    """A served queue with a backlog: the tasks waiting behind its head are the backlog's evidence; a task stuck
    at the head of a served queue stays a finding (agents there cannot or will not run it)."""
    queue_roots: dict[str, Finding] = {}
    for check in ("queues.capacity", "queues.backlog"):  # backlog wins when both exist
        for f in graph.of(check):
            if f.subject.kind == "queue":
                queue_roots[f.subject.id] = f
    if not queue_roots:
        return
    for f in graph.consequences():
        if f.check != "queues.stuck_queued":
            continue
        root = queue_roots.get(_queue_id(f))
        position = f.evidence.get("position")
        if root is None or not isinstance(position, int):
            continue
        if position > 0:
            graph.fold(root, f)
        elif int(f.evidence.get("queue_length") or 0) <= _SHORT_QUEUE:
            # A short queue waits because its head does not move: the queue's findings follow from that task.
            for q in graph.consequences():
                if q.subject == root.subject:
                    graph.link(f, q)
        else:
            graph.link(root, f)


def _failure_bursts(graph: _Graph) -> None:
    """Many failed tasks, one cause: one finding listing them.

    repro.failure_causes already groups the tasks it read by cause; the failures beyond its `max_tasks` (not
    read) fold into the cause that explains nearly all of those it did read. storage.upload_failures reports per
    task: five or more tasks failing on the same storage with the same error fold into the cause finding for
    storage errors, or else into the first of them."""
    causes = [f for f in graph.of("repro.failure_causes") if f.evidence.get("cause") not in (None, "unclassified")]
    unread = [f for f in graph.of("repro.failure_causes") if f.evidence.get("cause") == "unclassified"]
    read_total = sum(int(f.evidence.get("count") or 0) for f in causes)
    if unread and causes and read_total:
        top = max(causes, key=lambda f: int(f.evidence.get("count") or 0))
        if top.evidence.get("cause") not in ("unknown", "user_code") and (
            int(top.evidence.get("count") or 0) >= BURST_DOMINANT * read_total
        ):
            for f in unread:
                graph.fold(top, f)
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in graph.of("storage.upload_failures"):
        storage = (f.evidence.get("storage") or [""])[0]
        kinds = f.evidence.get("error_classes") or [""]
        groups.setdefault((str(storage), str(kinds[0])), []).append(f)
    storage_cause = next((f for f in causes if f.evidence.get("cause") == "storage"), None)
    for members in groups.values():
        if len(members) < BURST_MIN_TASKS:
            continue
        root = storage_cause or members[0]
        for f in members:
            graph.fold(root, f)


# -- output -------------------------------------------------------------------------------------------------


def _materialize(graph: _Graph) -> list[Finding]:
    children: dict[str, list[str]] = {}
    roots: dict[str, str] = {}
    for fp in graph.live:
        if fp in graph.parent:
            root = graph.root_of(fp)
            if root in graph.live and root != fp:
                roots[fp] = root
                children.setdefault(root, []).append(fp)
    out: list[Finding] = []
    for fp, f in graph.live.items():
        update: dict[str, Any] = {}
        if fp in roots:
            update["caused_by"] = roots[fp]
        if fp in children:
            update["consequences"] = sorted(children[fp])
        folded = graph.folded.get(fp, [])
        if folded:
            folded.sort(key=lambda c: (-c.rank, c.check, c.subject.name or c.subject.id))
            update["suppressed"] = [
                SuppressedFinding(
                    check=c.check, severity=c.severity, title=c.title, subject=c.subject, fingerprint=c.fingerprint
                )
                for c in folded[:SUPPRESSED_LISTED]
            ]
            update["suppressed_total"] = len(folded)
            update["detail"] = (f.detail + " " if f.detail else "") + _folded_phrase(folded, graph, fp)
            worst = max((c for c in folded if c.severity != "error"), key=lambda c: c.rank, default=None)
            if worst is not None and worst.rank > f.rank:
                update["severity"] = worst.severity  # the root is at least as bad as what it explains
        extra = graph.extra_evidence.get(fp)
        if extra:
            update["evidence"] = {**f.evidence, **extra}
        out.append(f.model_copy(update=update) if update else f)
    return out


def _folded_phrase(folded: list[Finding], graph: _Graph, fp: str) -> str:
    not_run = graph.extra_evidence.get(fp, {}).get("not_run") or []
    parts = []
    if not_run:
        parts.append(f"Not run: {len(not_run)} check{'s' if len(not_run) != 1 else ''} ({', '.join(not_run)}).")
    others = Counter(c.check for c in folded if c.severity != "error" or c.check not in not_run)
    if others:
        listed = ", ".join(f"{check} ×{n}" for check, n in sorted(others.items()))
        total = sum(others.values())
        parts.append(f"Folded in: {total} finding{'s' if total != 1 else ''} that follow from this ({listed}).")
    return " ".join(parts)


# -- helpers ------------------------------------------------------------------------------------------------


def _text_of(f: Finding) -> str:
    return " ".join((f.title, f.detail, json.dumps(f.evidence, default=str)))


def _mentions(f: Finding, words: Iterable[str]) -> bool:
    text = (f.title + " " + f.detail).lower()
    return any(w in text for w in words)


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc
    except ValueError:
        return ""


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _queue_id(f: Finding) -> str:
    queue = f.evidence.get("queue")
    return str(queue.get("id") or "") if isinstance(queue, dict) else ""


def _common_subnet(ips: list[str]) -> str:
    """"10.30.1.0/24"-style prefix every address shares (/8, /16 or /24), or ""."""
    parts = [ip.split(".") for ip in ips if ip.count(".") == 3]
    if not parts or len(parts) < len(ips):
        return ""
    for octets in (3, 2, 1):
        heads = {tuple(p[:octets]) for p in parts}
        if len(heads) == 1:
            head = list(next(iter(heads)))
            return ".".join(head + ["0"] * (4 - octets)) + f"/{octets * 8}"
    return ""


def _human(seconds: float) -> str:
    from bot.durations import format_duration

    return format_duration(seconds)
