"""Check: server.compatibility — the fleet's versions against a table of known-bad combinations.

Versions come from what the server already holds: the server's own (server.info, else the login token), the clearml
SDK versions recent tasks recorded in their installed packages, and the clearml-agent versions agents print at the
top of every task console log they run ("Current configuration (clearml_agent v1.9.3, location: ...)"). The table
(bot/checks/data/compatibility.yaml) lists each known-bad combination and each upgrade path that skips a required
step, with its sources.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.checks.common import Duration, matches_any, server_subject
from bot.engine.findings import Finding, fingerprint_for
from bot.engine.registry import CheckParams, check
from bot.store import AgentVersionSeen

if TYPE_CHECKING:
    from bot.engine.snapshot import Snapshot

TABLE_PATH = Path(__file__).parent / "data" / "compatibility.yaml"

Version = tuple[int, int, int]
_COMPARISON = re.compile(r"^\s*(==|!=|>=|<=|>|<)\s*([0-9][0-9A-Za-z.+-]*)\s*$")
# "clearml==1.16.2", "clearml == 2.0.1", "clearml===2.0" in pip freeze / requirements text; conda lists "clearml=1.16.2"
_SDK_LINE = re.compile(r"^\s*clearml\s*(?:===?|=)\s*([0-9][0-9A-Za-z.+-]*)", re.IGNORECASE | re.MULTILINE)
_AGENT_REQ_LINE = re.compile(
    r"^\s*clearml[-_]agent\s*(?:===?|=)\s*([0-9][0-9A-Za-z.+-]*)", re.IGNORECASE | re.MULTILINE
)
# clearml-agent prints this at the top of every task it runs (clearml_agent/commands/base.py)
_AGENT_LOG_LINE = re.compile(r"clearml_agent v([0-9]+\.[0-9]+\.[0-9]+[0-9A-Za-z.+-]*)")


def parse_version(value: Any) -> Version | None:
    """"2.0.0-613" -> (2, 0, 0); "1.17" -> (1, 17, 0); "2.0.0rc4" -> (2, 0, 0); None without a number."""
    if value is None:
        return None
    numbers = re.findall(r"\d+", str(value).split("-", 1)[0].split("+", 1)[0])[:3]
    if not numbers:
        return None
    padded = [int(n) for n in numbers] + [0] * (3 - len(numbers))
    return (padded[0], padded[1], padded[2])


def _fmt(version: Version | None) -> str:
    return ".".join(str(n) for n in version) if version else "?"


def satisfies(version: Version | None, spec: str) -> bool:
    """True if `version` meets every comma-separated comparison of `spec` (">=1.9.3,<2")."""
    if version is None:
        return False
    for part in spec.split(","):
        match = _COMPARISON.match(part)
        if match is None:
            raise ValueError(f"bad version condition {part!r} in {spec!r} (use e.g. \">=1.9.3,<2.0.0\")")
        op, raw = match.groups()
        other = parse_version(raw)
        assert other is not None
        ok = {
            "==": version == other, "!=": version != other, ">=": version >= other,
            "<=": version <= other, ">": version > other, "<": version < other,
        }[op]
        if not ok:
            return False
    return True


# ------------------------------------------------------------------------------------------------ the table


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Conditions(_Strict):
    server: str | None = None
    api: str | None = None
    agent: str | None = None
    sdk: str | None = None
    same_task: bool = False
    agents: list[str] = Field(default_factory=list)

    @field_validator("server", "api", "agent", "sdk")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            satisfies((0, 0, 0), value)  # raises on a malformed condition
        return value


class KnownBad(_Strict):
    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    when: Conditions
    symptom: str = Field(min_length=1)
    remediation: str = Field(min_length=1)
    severity: Literal["warning", "critical"] = "warning"
    sources: list[str] = Field(min_length=1)


class UpgradePath(_Strict):
    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    to: str
    from_: str = Field(alias="from")
    via: str = Field(min_length=1)
    symptom: str = Field(min_length=1)
    remediation: str = Field(min_length=1)
    sources: list[str] = Field(min_length=1)


class CompatibilityTable(_Strict):
    known_bad: list[KnownBad] = Field(default_factory=list)
    upgrade_paths: list[UpgradePath] = Field(default_factory=list)


@functools.lru_cache(maxsize=4)
def load_table(path: Path = TABLE_PATH) -> CompatibilityTable:
    """The shipped table (validated: a malformed entry fails loudly, in tests, not silently at run time)."""
    return CompatibilityTable.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


# ------------------------------------------------------------------------------------------------ inventory


@dataclass
class Sighting:
    """One version seen on the fleet: which agent (worker id) or task it came from."""

    version: Version
    raw: str
    task_id: str
    task_name: str
    worker: str = ""


@dataclass
class Inventory:
    server: Version | None
    server_raw: str | None
    api: Version | None
    api_raw: str | None
    sdks: list[Sighting] = field(default_factory=list)
    agents: list[Sighting] = field(default_factory=list)
    # per task: (sdk version, agent version) both listed in one task's requirements
    same_task: list[tuple[Sighting, Sighting]] = field(default_factory=list)
    logs_read: int = 0
    agents_known: int = 0  # agents whose version an earlier run read (no log read now)
    agents_unread: int = 0  # agents left for later runs by the `agent_logs` cap


class CompatibilityParams(CheckParams):
    window: Duration = Field(default=7 * 86400.0, description="read versions from tasks updated within this time")
    recent_tasks: int = Field(
        default=300, ge=1, le=5000, description="at most this many of the most recently updated tasks are read"
    )
    agent_logs: int = Field(
        default=5, ge=0, le=500,
        description="at most this many console logs are read per run for agent versions (one per agent whose "
        "version is not known from an earlier run, live agents first; the rest wait for the next runs)",
    )
    recheck_after: Duration = Field(
        default=7 * 86400.0,
        description="read an agent's version again after this long (sooner when the agent re-registers)",
    )
    log_lines: int = Field(
        default=50, ge=5, le=1000, description="lines read from the top of a task's log (where the agent's banner is)"
    )
    planned_upgrade: str | None = Field(
        default=None, description='server version you plan to upgrade to, e.g. "2.1.0": named if the path skips a step'
    )


_TASK_FIELDS = ["id", "name", "status", "last_worker", "last_update", "script.requirements", "runtime"]


def _requirements_text(doc: dict[str, Any]) -> str:
    reqs = (doc.get("script") or {}).get("requirements") if isinstance(doc.get("script"), dict) else None
    if not isinstance(reqs, dict):
        return ""
    return "\n".join(str(v) for k, v in reqs.items() if k in ("pip", "conda", "org_pip") and v)


async def _inventory(snap: Snapshot, params: CompatibilityParams) -> Inventory:
    info = await snap.server_info()
    server_raw = info.get("version") or snap.client.server_version
    api_raw = info.get("api_version") or snap.client.api_version
    inv = Inventory(parse_version(server_raw), server_raw, parse_version(api_raw), api_raw)

    async def fetch() -> list[dict[str, Any]]:
        since = snap.now - timedelta(seconds=params.window)
        return await snap.client.get_all(
            "tasks.get_all",
            {"only_fields": _TASK_FIELDS, "order_by": ["-last_update"], "search_hidden": True,
             "last_update": [">=" + since.strftime("%Y-%m-%dT%H:%M:%S")]},
            key="tasks", max_items=params.recent_tasks,
        )

    docs = await snap.memoized(("compat_tasks", params.window, params.recent_tasks), fetch)
    for doc in docs:
        text = _requirements_text(doc)
        if not text:
            continue
        sdk_match, agent_match = _SDK_LINE.search(text), _AGENT_REQ_LINE.search(text)
        sdk = agent = None
        if sdk_match and (version := parse_version(sdk_match.group(1))):
            sdk = Sighting(version, sdk_match.group(1), str(doc.get("id")), str(doc.get("name") or ""))
            inv.sdks.append(sdk)
        if agent_match and (version := parse_version(agent_match.group(1))):
            agent = Sighting(version, agent_match.group(1), str(doc.get("id")), str(doc.get("name") or ""))
        if sdk and agent:
            inv.same_task.append((sdk, agent))

    # One log per agent: the task a live agent runs now, else the latest task it (or a finished pod) ran.
    candidates: dict[str, tuple[str, str]] = {}
    for worker in await snap.workers():
        if worker.task_id:
            candidates[worker.id] = (worker.task_id, worker.task_name)
    for worker in await snap.workers():
        if worker.id not in candidates:
            latest = next((d for d in docs if d.get("last_worker") == worker.id), None)
            if latest:
                candidates[worker.id] = (str(latest["id"]), str(latest.get("name") or ""))
    for doc in docs:
        last_worker = doc.get("last_worker")
        if last_worker and last_worker not in candidates:
            candidates[str(last_worker)] = (str(doc["id"]), str(doc.get("name") or ""))
    # Versions an earlier run read (the store keeps them per worker) stand until the agent re-registers or
    # `recheck_after` passes; only the others cost a log read, at most `agent_logs` per run.
    known = snap.known_agent_versions or {}
    registered = {w.id: w.register_time for w in await snap.workers()}
    unread: list[tuple[str, str, str]] = []
    for worker_id, (task_id, task_name) in candidates.items():
        seen = known.get(worker_id)
        if seen is not None and _still_valid(seen, task_id, registered.get(worker_id), snap, params.recheck_after):
            snap.seen_agent_versions[worker_id] = seen
            inv.agents_known += 1
            if seen.version and (version := parse_version(seen.version)):
                inv.agents.append(Sighting(version, seen.version, seen.task_id, seen.task_name, worker=worker_id))
        else:
            unread.append((worker_id, task_id, task_name))
    inv.agents_unread = max(0, len(unread) - params.agent_logs)
    for worker_id, task_id, task_name in unread[: params.agent_logs]:
        lines = await snap.task_log(task_id, params.log_lines, head=True)
        inv.logs_read += 1
        found: str | None = None
        for line in lines:
            match = _AGENT_LOG_LINE.search(line)
            if match and (version := parse_version(match.group(1))):
                found = match.group(1)
                inv.agents.append(Sighting(version, found, task_id, task_name, worker=worker_id))
                break
        snap.seen_agent_versions[worker_id] = AgentVersionSeen(worker_id, found, task_id, task_name, snap.now)
    return inv


def _still_valid(
    seen: AgentVersionSeen, task_id: str, registered_at: datetime | None, snap: Snapshot, recheck_after: float
) -> bool:
    """Whether a version read in an earlier run still stands for this agent without reading a log again."""
    if seen.task_id == task_id:
        return True  # the same log says the same
    if seen.version is None:
        return False  # that log had no banner; this newer one may
    if registered_at is not None and registered_at > seen.seen_at:
        return False  # the agent restarted since (an upgrade is a restart)
    return (snap.now - seen.seen_at).total_seconds() < recheck_after


# ------------------------------------------------------------------------------------------------ matching


def _sighting(s: Sighting) -> dict[str, Any]:
    out: dict[str, Any] = {"version": s.raw, "task": {"id": s.task_id, "name": s.task_name}}
    if s.worker:
        out["worker"] = s.worker
    return out


def match_entry(entry: KnownBad, inv: Inventory) -> dict[str, Any] | None:
    """Evidence of the entry's conditions on this fleet, or None if one of them does not hold."""
    when = entry.when
    if when.server is not None and not satisfies(inv.server, when.server):
        return None
    if when.api is not None and not satisfies(inv.api, when.api):
        return None
    evidence: dict[str, Any] = {}
    if when.same_task:
        pairs = [
            (sdk, agent) for sdk, agent in inv.same_task
            if (when.sdk is None or satisfies(sdk.version, when.sdk))
            and (when.agent is None or satisfies(agent.version, when.agent))
        ]
        if not pairs:
            return None
        evidence["tasks"] = [
            {"id": sdk.task_id, "name": sdk.task_name, "sdk": sdk.raw, "agent": agent.raw} for sdk, agent in pairs[:20]
        ]
        return evidence
    if when.agent is not None:
        agents = [
            a for a in inv.agents
            if satisfies(a.version, when.agent) and (not when.agents or matches_any(a.worker, when.agents))
        ]
        if not agents:
            return None
        evidence["agents"] = [_sighting(a) for a in agents[:20]]
    if when.sdk is not None:
        sdks = [s for s in inv.sdks if satisfies(s.version, when.sdk)]
        if not sdks:
            return None
        evidence["sdk_tasks"] = [_sighting(s) for s in sdks[:20]]
    return evidence


def _versions_summary(sightings: list[Sighting]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in sightings:
        out[_fmt(s.version)] = out.get(_fmt(s.version), 0) + 1
    return dict(sorted(out.items()))


@check("server.compatibility", params=CompatibilityParams)
async def server_compatibility(snap: Snapshot, params: CompatibilityParams) -> list[Finding]:
    """The server, SDK and agent versions on the fleet against a table of known-bad combinations, and a planned
    server upgrade against upgrade paths that skip a required step.

    Versions: server.info (else the login token), the clearml SDK in recent tasks' installed packages, and the
    clearml-agent banner at the top of task console logs (one log per agent, at most `agent_logs` per run; versions
    earlier runs read are reused until the agent re-registers or `recheck_after` passes). Each matching entry of
    bot/checks/data/compatibility.yaml is one finding with the agents or tasks concerned and the entry's sources.
    A server older than an upgrade path's required step gets an `info` note with that step.
    """
    table = load_table()
    inv = await _inventory(snap, params)
    subject = server_subject(snap)
    inventory = {
        "server_version": inv.server_raw,
        "api_version": inv.api_raw,
        "sdk_versions": _versions_summary(inv.sdks),
        "agent_versions": _versions_summary(inv.agents),
        "agents_identified": len(inv.agents),
        "logs_read": inv.logs_read,
        "agents_known_from_earlier_runs": inv.agents_known,
        "agents_not_read_yet": inv.agents_unread,
    }
    findings: list[Finding] = []
    for entry in table.known_bad:
        matched = match_entry(entry, inv)
        if matched is None:
            continue
        who = []
        if "agents" in matched:
            who.append("agent(s) " + ", ".join(sorted({a["worker"] for a in matched["agents"]}))[:200])
        if "tasks" in matched or "sdk_tasks" in matched:
            count = len(matched.get("tasks") or matched.get("sdk_tasks") or [])
            who.append(f"{count} recent task(s)")
        findings.append(
            Finding(
                check="server.compatibility",
                severity=entry.severity,
                title=f"Known-bad versions: {entry.title}",
                detail=f"On this fleet: {'; '.join(who) or 'the server itself'} (server {inv.server_raw or '?'}, "
                f"API {inv.api_raw or '?'}). What users see: {entry.symptom}",
                subject=subject,
                fingerprint=fingerprint_for("server.compatibility", subject, entry.id),
                evidence={"entry": entry.id, "conditions": entry.when.model_dump(exclude_defaults=True),
                          **matched, "inventory": inventory, "sources": entry.sources},
                links=list(entry.sources),
                remediation=entry.remediation,
            )
        )
    for path in table.upgrade_paths:
        if not satisfies(inv.server, path.from_):
            continue
        target = parse_version(params.planned_upgrade) if params.planned_upgrade else None
        planned = target is not None and satisfies(target, path.to)
        evidence = {"entry": path.id, "from": path.from_, "to": path.to, "via": path.via,
                    "server_version": inv.server_raw, "planned_upgrade": params.planned_upgrade,
                    "sources": path.sources}
        findings.append(
            Finding(
                check="server.compatibility",
                severity="warning" if planned else "info",
                title=(
                    f"Planned upgrade {inv.server_raw} -> {params.planned_upgrade} skips {path.via}: {path.title}"
                    if planned
                    else f"Server {inv.server_raw}: an upgrade to {path.to.lstrip('>=')} must go through {path.via}"
                ),
                detail=f"{path.title}. If skipped: {path.symptom}",
                subject=subject,
                fingerprint=fingerprint_for("server.compatibility", subject, path.id),
                evidence=evidence,
                links=list(path.sources),
                remediation=path.remediation,
            )
        )
    if not findings:
        findings.append(
            Finding(
                check="server.compatibility",
                severity="ok",
                title=f"No known-bad version combination (server {inv.server_raw or '?'}, API {inv.api_raw or '?'})",
                detail=(
                    f"Checked {len(table.known_bad)} known-bad combinations against SDK versions "
                    f"{', '.join(inventory['sdk_versions']) or 'none recorded'} and agent versions "
                    f"{', '.join(inventory['agent_versions']) or 'none identified'}."
                    + (f" {inv.agents_unread} agent(s) not identified yet: their logs are read by the next runs "
                       "(`agent_logs` per run)." if inv.agents_unread else "")
                ),
                subject=subject,
                evidence=inventory,
            )
        )
    return findings
