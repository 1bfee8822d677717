"""Incidents: the state machine that turns runs' findings into one thread per problem.

Input: a `RunResult` (plus button presses: acknowledge, snooze, resolve). Output: a list of `Notification`s,
plain data (open the root message, update it, post a thread reply, resolve) for a renderer and the outbox. No
Slack here: the pipeline (`pipeline.py`) renders notifications and queues them in the same SQLite transaction
that changed the incident, so a crash can never leave an incident without its message or a message without its
incident.

Model
- An incident groups *members*: one per finding fingerprint (per server). A fingerprint is live (firing or
  cleared) in at most one open incident; a partial UNIQUE index enforces it, so not even a restart or a bug can
  open a second incident for the same open fingerprint.
- Correlation is data: a finding names the subjects it is a consequence of in `Finding.related`. A finding's
  *anchor* (the likely cause) is the related subject (followed transitively); a finding without `related` is
  its own anchor. Findings with the same anchor share an incident: the dead worker (anchor = itself), the task
  it orphaned and the queue it left unserved (both related to it). When the anchor has no finding of its own
  (the worker is gone from the registry) the incident still names it, as the inferred cause.
- Root causes first: a finding whose `caused_by` (set by the engine's correlation) names a live fingerprint joins
  that fingerprint's incident, whatever run it came from; a root that arrives after its consequences joins their
  incident and becomes its anchor ("🔎 Likely cause"). A finding about a subject already in an incident joins it.
- Placement is sticky: a live member stays in its incident; only new fingerprints are placed.
- Settle time (`settle_s`, Alertmanager's group_wait): a new incident is not announced until it has existed that
  long, so a cascade arriving over two runs is one post (`announce_due` posts it between runs). A storm (at least
  `storm_threshold` new incidents in one run) is one storm incident listing them.
- A member is clean in a run when a check run covering its scope (same server, playbook and check entry)
  finished `ok`/`failed` without reporting it at warning or worse. A check that errored or timed out, or that
  was truncated by `max_findings`, says nothing about the subject: that is not clean, and it breaks the streak.
  Nor is a check that passed because the server no longer lists the subject (`RunResult.listed`: a worker dropped
  10 minutes after its last report, a deleted queue): the member is *gone*, still firing, and the incident stays
  open until a check sees the subject healthy or a person resolves it.
  After `resolve_after` consecutive clean runs a member is cleared; when every member is cleared the incident
  resolves. When the cause is cleared but consequences still fail (the worker is back, the task still
  orphaned), each consequence moves into an incident of its own and the old incident resolves, saying where
  they went.
- Flapping: a fingerprint that comes back within `reopen_grace` of its incident resolving reopens that incident
  (same thread) instead of opening a new one. After a manual resolve, firings within `manual_resolve_grace` are
  absorbed; if the problem is still failing after that grace, the incident reopens.
- Muted (snoozed, or every firing member silenced): still tracked; no new root message and no thread replies.
  Root edits still happen (an edit notifies nobody, and keeps the message truthful). An incident that opened
  while muted is announced when the mute ends and it is still failing; one that changed while muted (it turned
  critical, more subjects joined) says what changed meanwhile in one thread reply when the mute ends.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from bot.config import TrackerPolicy  # a config type (incidents: in the config file); the pipeline imports it from here
from bot.durations import format_duration
from bot.engine.findings import SEVERITY_RANK, Finding, Subject, SubjectKind
from bot.errors import BotError
from bot.incidents import silences as silences_mod
from bot.incidents.evidence import evidence_changes, evidence_key
from bot.incidents.views import IncidentView, MemberView, Notification, NotificationKind
from bot.store import insert, iso, parse_iso, row, rows, schema, transaction, update, utc

if TYPE_CHECKING:
    import sqlite3

    from bot.engine.runner import RunResult
    from bot.store import Store

CLEAN_STATUSES = ("ok", "failed")  # the check ran to the end; anything else (error, timeout, skipped) is unknown
_SUBJECT_KINDS = set(get_args(SubjectKind))


class IncidentError(BotError):
    """An action on an incident that cannot be done (unknown id, already resolved); the message says why."""


# -- schema ------------------------------------------------------------------------------------------------------


def ensure_schema(store: Store) -> None:
    """Create the incident tables if missing (idempotent; safe on every start): bot/store/schema.py."""
    schema.ensure_incidents(store)


# -- the tracker -------------------------------------------------------------------------------------------------


def scope_key(server: str, playbook: str, check_name: str) -> str:
    """What "the check ran for that subject's scope" means: the same check entry of the same playbook on the same
    server (a playbook that watches `gpu-*` queues says nothing about the `cpu` queue another one watches)."""
    return f"{server}|{playbook}|{check_name}"


def _subject_key(subject: Subject) -> tuple[str, str]:
    return (subject.kind, subject.id)


def stored_finding(raw: str) -> Finding:
    """A member's finding as stored in `incident_members.finding`.

    Compatibility: rows written before `Finding.related` was typed hold the related subjects as dicts in
    `evidence.related`, and a root's consequence fingerprints in `related`; they are read into `related` and
    `consequences`, so a store keeps working after an upgrade (grouping, silences, evidence changes)."""
    doc = json.loads(raw)
    if any(isinstance(fp, str) for fp in doc.get("related") or []):
        doc["consequences"], doc["related"] = doc["related"], []
    evidence = doc.get("evidence")
    old = evidence.pop("related", None) if isinstance(evidence, dict) else None
    if isinstance(old, list):
        doc["related"] = [
            {"kind": r["kind"], "id": str(r["id"]), "name": str(r.get("name") or "")}
            for r in old
            if isinstance(r, dict) and r.get("kind") in _SUBJECT_KINDS and r.get("id")
        ]
    return Finding.model_validate(doc)


def _group_workers(member: dict[str, Any]) -> list[str]:
    """The agents a finding about a group names (a fleet-wide silence lists them in `evidence.workers`)."""
    if member["subject_kind"] == "worker":
        return []
    try:
        workers = json.loads(member["finding"]).get("evidence", {}).get("workers")
    except (ValueError, AttributeError):
        return []
    return [w for w in workers if isinstance(w, str)] if isinstance(workers, list) else []


def _worst(severities: list[str]) -> str:
    return max(severities, key=lambda s: SEVERITY_RANK[s]) if severities else "ok"


@dataclass
class _Touch:
    """What happened to one incident during one `process` call."""

    fired: bool = False
    opened: str = ""  # "" | opened | reopened | split
    lines: list[str] = field(default_factory=list)
    severity_before: str = ""


class IncidentTracker:
    def __init__(self, store: Store, policy: TrackerPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or TrackerPolicy()
        ensure_schema(store)

    # -- queries ----------------------------------------------------------------------------------------------

    def get(self, incident_id: int) -> IncidentView | None:
        with transaction(self.store) as conn:
            return self._view(conn, incident_id)

    def list_incidents(
        self, status: Literal["open", "resolved", "all"] = "open", *, since: datetime | None = None, limit: int = 100
    ) -> list[IncidentView]:
        """For `/clearml incidents`: worst and newest first."""
        where, args = [], []
        if status != "all":
            where.append("status = ?")
            args.append(status)
        if since is not None:
            where.append("(opened_at >= ? OR resolved_at >= ? OR status = 'open')")
            args += [iso(since), iso(since)]
        sql = "SELECT id FROM incidents" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with transaction(self.store) as conn:
            ids = [r["id"] for r in rows(conn, sql, args)]
            views = [v for v in (self._view(conn, i) for i in ids) if v is not None]
        return sorted(views, key=lambda v: (v.status != "open", -SEVERITY_RANK[v.severity], -v.id))

    def set_channel(self, incident_id: int, channel: str) -> None:
        with transaction(self.store) as conn:
            update(conn, "incidents", incident_id, {"channel": channel})

    def add_mirror(self, incident_id: int, channel: str) -> bool:
        """Remember that the root is also posted in `channel` (the critical route after an escalation)."""
        with transaction(self.store) as conn:
            inc = row(conn, "SELECT mirrors FROM incidents WHERE id = ?", (incident_id,))
            mirrors = json.loads(inc["mirrors"] or "[]") if inc else []
            if inc is None or channel in mirrors:
                return False
            update(conn, "incidents", incident_id, {"mirrors": json.dumps([*mirrors, channel])})
            return True

    def mirrors(self, incident_id: int) -> list[str]:
        with transaction(self.store) as conn:
            inc = row(conn, "SELECT mirrors FROM incidents WHERE id = ?", (incident_id,))
        return json.loads(inc["mirrors"] or "[]") if inc else []

    def mark_refused(self, incident_id: int, refused: str, error: str, fallback: str, now: datetime) -> None:
        """The routed channel refused the root: the incident lives in `fallback` until the bot can post there."""
        with transaction(self.store) as conn:
            update(conn, "incidents", incident_id, {"refused_channel": refused, "refused_error": error,
                                                     "channel": fallback, "refused_checked_at": iso(now)})

    def refused(self) -> list[tuple[int, str, datetime | None]]:
        """Open incidents waiting to move to the channel that refused them: (id, channel, last checked)."""
        with transaction(self.store) as conn:
            found = rows(conn, "SELECT id, refused_channel, refused_checked_at FROM incidents WHERE status = 'open' "
                               "AND refused_channel IS NOT NULL ORDER BY id")
        return [(r["id"], r["refused_channel"], parse_iso(r["refused_checked_at"])) for r in found]

    def checked_refused(self, incident_id: int, now: datetime) -> None:
        with transaction(self.store) as conn:
            update(conn, "incidents", incident_id, {"refused_checked_at": iso(now)})

    def moved(self, incident_id: int, channel: str, now: datetime) -> list[Notification]:
        """The bot can post in the channel that refused the root now: the incident moves there (a new root)."""
        with transaction(self.store) as conn:
            inc = row(conn, "SELECT channel FROM incidents WHERE id = ?", (incident_id,))
            if inc is None:
                return []
            update(conn, "incidents", incident_id, {"channel": channel, "refused_channel": None,
                                                     "refused_error": None, "updated_at": iso(now)})
            return [self._note(conn, incident_id, "open", "moved",
                               (f"Moved here from {inc['channel']}: I can post in this channel now.",))]

    # -- runs -------------------------------------------------------------------------------------------------

    def process(self, result: RunResult, now: datetime | None = None) -> list[Notification]:
        """Fold one run into the incidents; return what to tell Slack. Atomic: all of it or none of it."""
        now = utc(now)
        server = result.server
        open_sev = self.policy.open_severities
        with transaction(self.store) as conn:
            silences = silences_mod.active_silences(self.store, now)
            reported: dict[str, Finding] = {}
            for f in result.findings:
                if f.severity in open_sev and (f.fingerprint not in reported or f.rank > reported[f.fingerprint].rank):
                    reported[f.fingerprint] = f
            check_scopes: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for cr in result.checks:
                check_scopes[cr.id].append((scope_key(server, cr.playbook, cr.name), cr.status))
            # The runner keeps the worst `max_findings` and adds a `<check>|summary|` finding: the rest still fail.
            truncated = {f.check for f in result.findings if f.fingerprint.startswith(f"{f.check}|summary|")}
            # Correlation folds findings that only restate their root into it (`suppressed`): they still fail, so
            # they are not clean (another playbook's run, without that root, may report them on their own). When
            # a root lists only some of them, the rest of those checks are unknown too.
            folded: set[str] = set()
            for f in result.findings:
                shown = getattr(f, "suppressed", None) or []
                folded.update(str(sf.fingerprint) for sf in shown)
                if getattr(f, "suppressed_total", 0) > len(shown):
                    truncated.update(str(sf.check) for sf in shown)
            # The playbook an incident came from (its `channel` may route it): the first that ran the check.
            playbook_of = {cr.id: cr.playbook for cr in reversed(result.checks)}
            default_playbook = result.playbooks[0] if result.playbooks else None

            live = {
                m["fingerprint"]: m
                for m in rows(
                    conn,
                    "SELECT * FROM incident_members WHERE server = ? AND state IN ('firing', 'cleared')",
                    (server,),
                )
            }
            touched: dict[int, _Touch] = {}

            def touch(incident_id: int) -> _Touch:
                if incident_id not in touched:
                    inc = row(conn, "SELECT severity FROM incidents WHERE id = ?", (incident_id,))
                    touched[incident_id] = _Touch(severity_before=inc["severity"] if inc else "")
                return touched[incident_id]

            def scopes_of(f: Finding) -> list[str]:
                return [s for s, _ in check_scopes.get(f.check, [])]

            # 1. fingerprints already live: refresh them where they are (placement is sticky)
            fresh: list[Finding] = []
            for fp, f in reported.items():
                m = live.get(fp)
                if m is None:
                    fresh.append(f)
                    continue
                t = touch(m["incident_id"])
                t.fired = True
                t.lines.extend(self._refresh_member(conn, m, f, scopes_of(f), silences, now))

            # 2. new fingerprints: place them by root cause (caused_by), then by anchor (related)
            self._place(
                conn, server, fresh, reported, scopes_of, silences,
                lambda f: playbook_of.get(f.check, default_playbook), now, touch, live,
            )

            # 3. live members not reported: clean, gone, or unknown. Only a subject the server listed before can
            # vanish (an agents.missing pool pattern is a "worker" that no list ever holds).
            listed: dict[str, Any] = getattr(result, "listed", None) or {}
            fp_by_row = {m["id"]: fp for fp, m in live.items()}
            if listed:
                for m in rows(conn, "SELECT id, subject_kind, subject_id, finding FROM incident_members WHERE "
                                    "server = ? AND state IN ('firing', 'cleared') AND seen_listed = 0", (server,)):
                    ids = listed.get(m["subject_kind"])
                    group = _group_workers(m)
                    if (ids is not None and m["subject_id"] in ids) or (group and set(group) & listed.get("worker",
                                                                                                       set())):
                        update(conn, "incident_members", m["id"], {"seen_listed": 1})
                        if m["id"] in fp_by_row:
                            live[fp_by_row[m["id"]]] = {**live[fp_by_row[m["id"]]], "seen_listed": 1}
            for fp, m in live.items():
                if fp in reported:
                    continue
                mine = set(json.loads(m["scopes"]))
                statuses = [status for scope, status in check_scopes.get(m["check_id"], []) if scope in mine]
                if not statuses:
                    continue  # this run did not look at it at all
                if fp in folded or m["check_id"] in truncated or any(s not in CLEAN_STATUSES for s in statuses):
                    if m["clean_runs"]:
                        update(conn, "incident_members", m["id"], {"clean_runs": 0})
                    continue
                label = f"{m['subject_kind']} {m['subject_name'] or m['subject_id']}"
                present = listed.get(m["subject_kind"])
                group = _group_workers(m)
                vanished = bool(m["seen_listed"]) and (
                    (present is not None and m["subject_id"] not in present)
                    or (bool(group) and "worker" in listed and not set(group) & listed["worker"])
                )
                if vanished:
                    # The check passed because the subject is not there any more (the server drops a worker 10
                    # minutes after its last report; a queue was deleted; every agent of a fleet-wide silence was
                    # dropped): that is not a recovery.
                    if m["state"] == "firing" and not m["gone_at"]:
                        update(conn, "incident_members", m["id"], {"gone_at": iso(now), "clean_runs": 0})
                        what = (f"{label}: the server no longer lists any of its {len(group)} agents" if group
                                else f"{label} is gone: the server no longer lists it")
                        touch(m["incident_id"]).lines.append(
                            f"👻 {what}. That is not a recovery, so the incident stays open until a check sees it "
                            "healthy again or someone resolves it."
                        )
                    continue
                clean_runs = m["clean_runs"] + 1
                values: dict[str, Any] = {"clean_runs": clean_runs}
                if m["state"] == "firing" and clean_runs >= self.policy.resolve_after:
                    values.update(state="cleared", cleared_at=iso(now), gone_at=None)
                    back = " (listed by the server again)" if m["gone_at"] else ""
                    touch(m["incident_id"]).lines.append(f"✅ {m['check_id']} passes again for {label}{back}")
                update(conn, "incident_members", m["id"], values)

            # 4. decide per incident
            notes: list[Notification] = []
            for incident_id in sorted(touched):
                notes.extend(self._settle(conn, incident_id, touched[incident_id], now))
            # incidents held for the settle time that this run did not touch
            notes.extend(self._announce_due(conn, now, server=server, skip=set(touched)))
        return notes

    def announce_due(self, now: datetime | None = None) -> list[Notification]:
        """Post the incidents whose settle time is over (the pipeline's timer calls this between runs)."""
        now = utc(now)
        with transaction(self.store) as conn:
            return self._announce_due(conn, now)

    def _announce_due(
        self, conn: sqlite3.Connection, now: datetime, *, server: str | None = None, skip: set[int] | None = None
    ) -> list[Notification]:
        sql = "SELECT id, opened_at FROM incidents WHERE status = 'open' AND announced = 0"
        args: list[Any] = []
        if server is not None:
            sql += " AND server = ?"
            args.append(server)
        notes: list[Notification] = []
        for r in rows(conn, sql + " ORDER BY id", args):
            if skip and r["id"] in skip:
                continue
            opened_at = parse_iso(r["opened_at"]) or now
            if (now - opened_at).total_seconds() < self.policy.settle_s:
                continue
            view = self._view(conn, r["id"])
            if view is None or view.muted(now) or not view.firing:
                continue
            notes.append(self._note(conn, r["id"], "open", "opened", ()))
        return notes

    def _refresh_member(
        self,
        conn: sqlite3.Connection,
        m: dict[str, Any],
        f: Finding,
        scopes: list[str],
        silences: list[silences_mod.Silence],
        now: datetime,
    ) -> list[str]:
        """A live member fired again: count it, keep the current evidence, say what changed meaningfully."""
        lines: list[str] = []
        label = f"{f.subject.kind} {f.subject.name or f.subject.id}"
        old = stored_finding(m["finding"])
        if m["state"] == "cleared":
            lines.append(f"🔁 {f.check} fails again for {label}: {f.title}")
        elif m["gone_at"]:
            lines.append(f"↩️ {label} is listed by the server again, and still fails: {f.title}")
        elif old.severity != f.severity:
            lines.append(f"{f.check} for {label}: {old.severity} → {f.severity} ({f.title})")
        # Evidence news only about the likely cause (a consequence earns a reply when it appears, changes severity
        # or recovers), and only against what was last announced, so a slow drift is told once it means something.
        new_key = evidence_key(f.evidence)
        if m["role"] == "cause" and m["state"] != "cleared" and not m["gone_at"]:
            try:
                baseline = json.loads(m["evidence_key"]) if m["evidence_key"] else None
            except ValueError:
                baseline = None
            changes = evidence_changes(old.evidence, f.evidence, baseline if isinstance(baseline, dict) else None)
            if changes:
                lines.append(f"{f.check} for {label}: " + "; ".join(changes[:4]))
            else:
                new_key = m["evidence_key"] or new_key  # keep the baseline
        update(
            conn,
            "incident_members",
            m["id"],
            {
                "state": "firing",
                "cleared_at": None,
                "severity": f.severity,
                "last_seen": iso(now),
                "count": m["count"] + 1,
                "clean_runs": 0,
                "scopes": json.dumps(sorted(set(json.loads(m["scopes"])) | set(scopes))),
                "evidence_key": new_key,
                "silenced": int(silences_mod.matching_silence(silences, f) is not None),
                "subject_name": f.subject.name,
                "finding": f.model_dump_json(),
                "gone_at": None,
                "caused_by": f.caused_by,
            },
        )
        return lines

    def _place(
        self,
        conn: sqlite3.Connection,
        server: str,
        fresh: list[Finding],
        reported: dict[str, Finding],
        scopes_of: Any,
        silences: list[silences_mod.Silence],
        playbook_of: Callable[[Finding], str | None],
        now: datetime,
        touch: Any,
        live: dict[str, dict[str, Any]],
    ) -> None:
        open_rows = rows(
            conn,
            "SELECT id, anchor_kind, anchor_id, anchor_name, announced, storm FROM incidents WHERE server = ? "
            "AND status = 'open' ORDER BY id",
            (server,),
        )
        incidents_by_id = {r["id"]: r for r in open_rows}
        open_by_anchor: dict[tuple[str, str], int] = {
            (r["anchor_kind"], r["anchor_id"]): r["id"] for r in open_rows if not r["storm"]
        }
        # Where each live fingerprint and subject is: a finding caused by a live root, or about a subject that is
        # already part of an incident (as its cause first), joins that incident instead of opening another.
        incident_of_fp = {fp: m["incident_id"] for fp, m in live.items()}
        incident_of_subject: dict[tuple[str, str], int] = {}
        for m in sorted(live.values(), key=lambda m: (m["role"] != "cause", m["id"])):
            incident_of_subject.setdefault((m["subject_kind"], m["subject_id"]), m["incident_id"])
        # Live members whose root (caused_by) had no finding when they were placed: the root joins them later.
        awaiting_root: dict[str, int] = {}
        for m in live.values():
            if m["caused_by"] and m["caused_by"] not in live:
                awaiting_root.setdefault(m["caused_by"], m["incident_id"])
        fresh_fps = {f.fingerprint for f in fresh}
        firing_on: dict[tuple[str, str], Finding] = {}
        for f in sorted(reported.values(), key=lambda f: -f.rank):
            firing_on.setdefault(_subject_key(f.subject), f)

        by_fingerprint = {f.fingerprint: f for f in reported.values()}

        def anchor_of(f: Finding, seen: frozenset[tuple[str, str]] = frozenset()) -> Subject:
            # Correlation (bot/engine/correlation.py) named this finding's root cause: its incident is the root's.
            root = by_fingerprint.get(f.caused_by) if f.caused_by else None
            if root is not None and root is not f and _subject_key(root.subject) not in seen:
                return anchor_of(root, seen)
            candidates = []
            for rel in f.related:
                key = _subject_key(rel)
                if key in seen or key == _subject_key(f.subject):
                    continue
                upstream = firing_on.get(key)
                if rel.kind == f.subject.kind and upstream is None and key not in open_by_anchor:
                    # A task "related" to another task (a comparison baseline, members of a group) is not a
                    # likely cause unless it has a problem of its own: infer causes only across kinds
                    # (task -> worker, queue -> worker, task -> storage).
                    continue
                # Follow the chain (task -> queue -> worker) while the related subject is itself a consequence.
                if upstream is not None and upstream.related:
                    rel = anchor_of(upstream, seen | {_subject_key(f.subject)})
                elif upstream is not None and not rel.name:
                    rel = upstream.subject
                candidates.append(rel)
            if not candidates:
                return f.subject
            for rule in (lambda s: _subject_key(s) in open_by_anchor, lambda s: _subject_key(s) in firing_on):
                chosen = next((s for s in candidates if rule(s)), None)
                if chosen is not None:
                    return chosen
            return candidates[0]

        def target_of(f: Finding, depth: int = 0) -> tuple[tuple[str, ...], Subject | None]:
            """(("incident", id) | ("new", kind, id), the anchor) for a new finding."""
            root = f.caused_by
            if root and root != f.fingerprint and depth < 8:
                if root in incident_of_fp:  # the root is live: its incident, whatever run it came from
                    return ("incident", str(incident_of_fp[root])), None
                if root in fresh_fps:  # the root is new in this run too: wherever it goes
                    return target_of(reported[root], depth + 1)
            if f.fingerprint in awaiting_root:  # this is the root a live consequence was waiting for
                return ("incident", str(awaiting_root[f.fingerprint])), f.subject
            anchor = anchor_of(f)
            key = _subject_key(anchor)
            if key in open_by_anchor:
                return ("incident", str(open_by_anchor[key])), anchor
            if key in incident_of_subject:
                return ("incident", str(incident_of_subject[key])), None
            if _subject_key(f.subject) in incident_of_subject:
                return ("incident", str(incident_of_subject[_subject_key(f.subject)])), None
            return ("new", *key), anchor

        groups: dict[tuple[str, ...], tuple[Subject | None, list[Finding]]] = {}
        for f in fresh:
            target, anchor = target_of(f)
            if target in groups:
                groups[target][1].append(f)
                if anchor is not None and groups[target][0] is None:
                    groups[target] = (anchor, groups[target][1])
            else:
                groups[target] = (anchor, [f])

        # Findings joining an open incident (an ongoing cascade, or the root its consequences were waiting for).
        for target in sorted(t for t in groups if t[0] == "incident"):
            new_anchor, findings = groups[target]
            incident_id = int(target[1])
            inc = incidents_by_id.get(incident_id) or row(conn, "SELECT * FROM incidents WHERE id = ?",
                                                          (incident_id,))
            assert inc is not None
            anchor = Subject(kind=inc["anchor_kind"], id=inc["anchor_id"], name=inc["anchor_name"])
            if (new_anchor is not None and not inc["storm"] and _subject_key(new_anchor) != _subject_key(anchor)
                    and any(f.fingerprint in awaiting_root for f in findings)):
                anchor = new_anchor  # the root arrived: the incident is about it now
                self._reanchor(conn, incident_id, anchor)
                open_by_anchor[_subject_key(anchor)] = incident_id
            t = touch(incident_id)
            t.fired = True
            for f in sorted(findings, key=lambda f: -f.rank):
                self._add_member(conn, incident_id, server, f, anchor, scopes_of(f), silences, now)
                incident_of_fp[f.fingerprint] = incident_id
                label = f"{f.subject.kind} {f.subject.name or f.subject.id}"
                if _subject_key(f.subject) == _subject_key(anchor) and not inc["storm"]:
                    t.lines.append(f"🔎 Likely cause: {label}: {f.title}")
                else:
                    t.lines.append(f"➕ also affected: {label}: {f.title}")

        # Findings of a new root cause: reopen a recently resolved incident (flapping / manual resolve), or open one.
        to_open: list[tuple[Subject, list[Finding]]] = []
        for target in sorted(t for t in groups if t[0] == "new"):
            group_anchor, findings = groups[target]
            assert group_anchor is not None
            remaining: list[Finding] = []
            reopen: dict[str, Any] | None = None
            for f in findings:
                previous = row(
                    conn,
                    "SELECT m.id AS member_id, m.last_seen AS member_last_seen, m.count AS member_count, i.* "
                    "FROM incident_members m JOIN incidents i ON i.id = m.incident_id "
                    "WHERE m.server = ? AND m.fingerprint = ? AND m.state = 'closed' AND i.status = 'resolved' "
                    "ORDER BY i.resolved_at DESC, i.id DESC LIMIT 1",
                    (server, f.fingerprint),
                )
                verdict = self._after_resolve(previous, now)
                if verdict == "absorb" and previous is not None:
                    # Believed resolved by a person for a while: remember it still fails, say nothing yet.
                    update(
                        conn,
                        "incident_members",
                        previous["member_id"],
                        {"last_seen": iso(now), "count": previous["member_count"] + 1, "finding": f.model_dump_json()},
                    )
                    continue
                remaining.append(f)
                if verdict == "reopen" and reopen is None:
                    reopen = previous
            if not remaining:
                continue
            if reopen is not None:
                incident_id = int(reopen["id"])
                manual = reopen["resolve_reason"] == "manual"
                update(
                    conn,
                    "incidents",
                    incident_id,
                    {
                        "status": "open",
                        "resolved_at": None,
                        "resolved_by": None,
                        "resolve_reason": None,
                        "reopen_count": reopen["reopen_count"] + 1,
                        "updated_at": iso(now),
                    },
                )
                t = touch(incident_id)
                t.fired = True
                t.opened = "reopened"
                resolved_at = parse_iso(reopen["resolved_at"]) or now
                ago = format_duration((now - resolved_at).total_seconds())
                if manual:
                    t.lines.append(f"🔁 Reopened: still failing {ago} after {reopen['resolved_by']} resolved it")
                else:
                    t.lines.append(f"🔁 Reopened: failing again {ago} after it resolved (flapping)")
                anchor = Subject(
                    kind=reopen["anchor_kind"], id=reopen["anchor_id"], name=reopen["anchor_name"]
                )
                for f in remaining:
                    self._add_member(conn, incident_id, server, f, anchor, scopes_of(f), silences, now)
                open_by_anchor.setdefault((reopen["anchor_kind"], reopen["anchor_id"]), incident_id)
                continue
            to_open.append((group_anchor, remaining))

        if not to_open:
            return
        storm = next((r for r in open_rows if r["storm"] and not r["announced"]), None)
        threshold = self.policy.storm_threshold
        if storm is None and threshold and len(to_open) >= threshold:
            # Many new root causes at once (a fleet-wide outage): one storm incident that lists them, not one root
            # message each. Its members keep their own checks and subjects; it resolves when they all do.
            every = [f for _, findings in to_open for f in findings]
            anchor = Subject(kind="server", id=f"storm:{server}", name=f"{server} (storm)")
            incident_id = self._new_incident(conn, server, anchor, every, playbook_of(max(every, key=lambda f: f.rank)),
                                             now)
            update(conn, "incidents", incident_id, {"storm": len(to_open)})
            storm = {"id": incident_id, "storm": len(to_open), "anchor_kind": anchor.kind, "anchor_id": anchor.id,
                     "anchor_name": anchor.name}
            opened = True
        elif storm is not None:
            update(conn, "incidents", storm["id"], {"storm": storm["storm"] + len(to_open)})
            opened = False
        if storm is not None:
            anchor = Subject(kind=storm["anchor_kind"], id=storm["anchor_id"], name=storm["anchor_name"])
            t = touch(storm["id"])
            t.fired = True
            if opened:
                t.opened = "opened"
            for _, findings in to_open:
                for f in findings:
                    self._add_member(conn, storm["id"], server, f, anchor, scopes_of(f), silences, now)
                    if not opened:
                        t.lines.append(f"➕ also affected: {f.subject.kind} {f.subject.name or f.subject.id}: "
                                       f"{f.title}")
            return
        for anchor, findings in to_open:
            worst = max(findings, key=lambda f: f.rank)
            incident_id = self._new_incident(conn, server, anchor, findings, playbook_of(worst), now)
            for f in findings:
                self._add_member(conn, incident_id, server, f, anchor, scopes_of(f), silences, now)
            t = touch(incident_id)
            t.fired = True
            t.opened = "opened"
            open_by_anchor[_subject_key(anchor)] = incident_id

    def _reanchor(self, conn: sqlite3.Connection, incident_id: int, anchor: Subject) -> None:
        """The incident's likely cause is `anchor` now: its members about that subject are the cause."""
        update(conn, "incidents", incident_id,
               {"anchor_kind": anchor.kind, "anchor_id": anchor.id, "anchor_name": anchor.name})
        conn.execute(
            "UPDATE incident_members SET role = CASE WHEN subject_kind = ? AND subject_id = ? THEN 'cause' "
            "ELSE 'consequence' END WHERE incident_id = ? AND state != 'moved'",
            (anchor.kind, anchor.id, incident_id),
        )

    def _after_resolve(self, previous: dict[str, Any] | None, now: datetime) -> str:
        """For a fingerprint firing with no live member: "new", "reopen" its last incident, or "absorb" it."""
        if previous is None or not previous["resolved_at"]:
            return "new"
        resolved_at = parse_iso(previous["resolved_at"])
        assert resolved_at is not None
        since = (now - resolved_at).total_seconds()
        if previous["resolve_reason"] == "manual":
            if since < self.policy.manual_resolve_grace_s:
                return "absorb"
            still_failing = (parse_iso(previous["member_last_seen"]) or resolved_at) > resolved_at
            if still_failing:
                return "reopen"
        return "reopen" if since <= self.policy.reopen_grace_s else "new"

    def _new_incident(
        self,
        conn: sqlite3.Connection,
        server: str,
        anchor: Subject,
        findings: list[Finding],
        playbook: str | None,
        now: datetime,
        *,
        opened_at: datetime | None = None,
        split_from: int | None = None,
    ) -> int:
        worst = max(findings, key=lambda f: f.rank)
        return insert(
            conn,
            "incidents",
            {
                "server": server,
                "anchor_kind": anchor.kind,
                "anchor_id": anchor.id,
                "anchor_name": anchor.name,
                "status": "open",
                "severity": worst.severity,
                "title": worst.title,
                "playbook": playbook,
                "opened_at": iso(opened_at or now),
                "last_seen": iso(now),
                "count": 1,
                "split_from": split_from,
                "updated_at": iso(now),
            },
        )

    def _add_member(
        self,
        conn: sqlite3.Connection,
        incident_id: int,
        server: str,
        f: Finding,
        anchor: Subject,
        scopes: list[str],
        silences: list[silences_mod.Silence],
        now: datetime,
        *,
        first_seen: datetime | None = None,
        count: int = 1,
    ) -> None:
        role = "cause" if _subject_key(f.subject) == _subject_key(anchor) else "consequence"
        closed = row(
            conn,
            "SELECT id, count, first_seen FROM incident_members WHERE incident_id = ? AND fingerprint = ? "
            "AND state = 'closed'",
            (incident_id, f.fingerprint),
        )
        values = {
            "incident_id": incident_id,
            "server": server,
            "fingerprint": f.fingerprint,
            "check_id": f.check,
            "subject_kind": f.subject.kind,
            "subject_id": f.subject.id,
            "subject_name": f.subject.name,
            "role": role,
            "state": "firing",
            "severity": f.severity,
            "first_seen": iso(first_seen or now),
            "last_seen": iso(now),
            "cleared_at": None,
            "count": count,
            "clean_runs": 0,
            "scopes": json.dumps(sorted(set(scopes))),
            "evidence_key": evidence_key(f.evidence),
            "silenced": int(silences_mod.matching_silence(silences, f) is not None),
            "finding": f.model_dump_json(),
            "gone_at": None,
            "caused_by": f.caused_by,
        }
        if closed is not None:  # reopening: the same member row comes back to life, history kept
            values["count"] = closed["count"] + 1
            values["first_seen"] = closed["first_seen"]
            update(conn, "incident_members", closed["id"], values)
        else:
            insert(conn, "incident_members", values)

    def _settle(self, conn: sqlite3.Connection, incident_id: int, t: _Touch, now: datetime) -> list[Notification]:
        """After a run touched an incident: resolve it, split it, or update it; and say so."""
        inc = row(conn, "SELECT * FROM incidents WHERE id = ?", (incident_id,))
        assert inc is not None
        members = rows(
            conn,
            "SELECT * FROM incident_members WHERE incident_id = ? AND state IN ('firing', 'cleared') ORDER BY id",
            (incident_id,),
        )
        firing = [m for m in members if m["state"] == "firing"]
        causes = [m for m in members if m["role"] == "cause"]
        consequences_firing = [m for m in firing if m["role"] == "consequence"]
        view = self._view(conn, incident_id)
        assert view is not None
        was_muted = view.muted(now)
        # what a mute that has ended held back comes first in whatever this run tells the thread
        held = [] if was_muted else self._take_held(conn, incident_id)

        if not firing:
            return self._close(conn, inc, now, reason="clean", by="auto", lines=[*held, *t.lines], muted=was_muted)

        if causes and all(m["state"] == "cleared" for m in causes) and consequences_firing:
            t.lines[:0] = held
            return self._split(conn, inc, consequences_firing, now, t, muted=was_muted)

        values: dict[str, Any] = {"updated_at": iso(now)}
        severity = _worst([m["severity"] for m in firing])
        values["severity"] = severity
        view_title = self._title(view)
        values["title"] = view_title
        if t.fired and not t.opened:
            values["count"] = inc["count"] + 1
        if t.fired:
            values["last_seen"] = iso(now)
        lines = list(t.lines)
        change: tuple[str, str] | None = None
        if t.severity_before and severity != t.severity_before and t.opened != "opened":
            change = (t.severity_before, severity)
            arrow = "raised" if SEVERITY_RANK[severity] > SEVERITY_RANK[t.severity_before] else "lowered"
            lines.insert(0, f"Severity {arrow}: {t.severity_before} → {severity}")
        update(conn, "incidents", incident_id, values)
        view = self._view(conn, incident_id)
        assert view is not None
        muted = view.muted(now)
        notes: list[Notification] = []
        if not inc["announced"]:
            opened_at = parse_iso(inc["opened_at"]) or now
            settling = t.opened != "split" and (now - opened_at).total_seconds() < self.policy.settle_s
            if not muted and not settling:
                reason = "unmuted" if not t.opened else ("split" if t.opened == "split" else t.opened)
                notes.append(self._note(conn, incident_id, "open", reason, ()))
            return notes
        if t.fired or lines or held:
            notes.append(self._note(conn, incident_id, "update", t.opened or ("changed" if lines else "repeat"), (),
                                    severity_change=change))
        if lines and muted:
            self._hold(conn, incident_id, lines, "snooze" if view.snoozed(now) else "silence", now)
        elif lines or held:
            reason = t.opened or ("changed" if lines else "unmuted")
            notes.append(self._note(conn, incident_id, "reply", reason, (*held, *lines),
                                    severity_change=change if lines else None))
        return notes

    MAX_HELD_LINES = 15

    @staticmethod
    def _hold(conn: sqlite3.Connection, incident_id: int, lines: list[str], muted_by: str, now: datetime) -> None:
        for line in lines:
            insert(conn, "incident_held_lines",
                   {"incident_id": incident_id, "at": iso(now), "muted_by": muted_by, "line": line})

    def _take_held(self, conn: sqlite3.Connection, incident_id: int) -> list[str]:
        """The lines held back while the incident was muted, with a header saying so; forgotten once taken."""
        held = rows(conn, "SELECT muted_by, line FROM incident_held_lines WHERE incident_id = ? ORDER BY id",
                    (incident_id,))
        if not held:
            return []
        conn.execute("DELETE FROM incident_held_lines WHERE incident_id = ?", (incident_id,))
        lines: list[str] = []
        for r in held:
            if not lines or lines[-1] != r["line"]:  # a change repeated run after run is told once
                lines.append(r["line"])
        more = len(lines) - self.MAX_HELD_LINES
        if more > 0:
            lines = [*lines[: self.MAX_HELD_LINES], f"…and {more} more changes"]
        header = ("💤 The snooze ended. While it was on:" if held[0]["muted_by"] == "snooze"
                  else "🔕 The silence ended. While it was on:")
        return [header, *lines]

    def _split(
        self,
        conn: sqlite3.Connection,
        inc: dict[str, Any],
        consequences: list[dict[str, Any]],
        now: datetime,
        t: _Touch,
        *,
        muted: bool,
    ) -> list[Notification]:
        """The cause recovered, some consequences did not: each moves into an incident of its own."""
        notes: list[Notification] = []
        moved_lines: list[str] = []
        new_ids: list[int] = []
        for m in consequences:
            f = stored_finding(m["finding"])
            new_id = self._new_incident(
                conn, inc["server"], f.subject, [f], inc["playbook"], now,
                opened_at=parse_iso(m["first_seen"]), split_from=inc["id"],
            )
            conn.execute("UPDATE incident_members SET state = 'moved', moved_to = ? WHERE id = ?", (new_id, m["id"]))
            self._add_member(
                conn, new_id, inc["server"], f, f.subject, json.loads(m["scopes"]), [], now,
                first_seen=parse_iso(m["first_seen"]), count=m["count"],
            )
            conn.execute(
                "UPDATE incident_members SET silenced = ? WHERE incident_id = ? AND fingerprint = ?",
                (m["silenced"], new_id, m["fingerprint"]),
            )
            update(conn, "incidents", new_id, {"channel": inc["channel"]})
            new_ids.append(new_id)
            label = f"{m['subject_kind']} {m['subject_name'] or m['subject_id']}"
            moved_lines.append(f"➡️ {label} still fails: moved to incident #{new_id}")
        anchor = inc["anchor_name"] or inc["anchor_id"]
        lines = [*t.lines, f"The likely cause ({inc['anchor_kind']} {anchor}) recovered.", *moved_lines]
        notes.extend(self._close(conn, inc, now, reason="split", by="auto", lines=lines, muted=muted))
        for new_id in new_ids:
            view = self._view(conn, new_id)
            assert view is not None
            if not view.muted(now):
                notes.append(
                    self._note(
                        conn, new_id, "open", "split",
                        (f"Split from incident #{inc['id']}: its likely cause ({inc['anchor_kind']} {anchor}) "
                         "recovered, but this still fails.",),
                    )
                )
        return notes

    def _close(
        self,
        conn: sqlite3.Connection,
        inc: dict[str, Any],
        now: datetime,
        *,
        reason: str,
        by: str,
        lines: list[str],
        muted: bool,
    ) -> list[Notification]:
        update(
            conn,
            "incidents",
            inc["id"],
            {"status": "resolved", "resolved_at": iso(now), "resolved_by": by, "resolve_reason": reason,
             "updated_at": iso(now)},
        )
        conn.execute(
            "UPDATE incident_members SET state = 'closed' WHERE incident_id = ? AND state IN ('firing', 'cleared')",
            (inc["id"],),
        )
        conn.execute("DELETE FROM incident_held_lines WHERE incident_id = ?", (inc["id"],))
        if not inc["announced"]:
            return []  # never posted (muted all along): nothing in Slack to resolve
        opened_at = parse_iso(inc["opened_at"]) or now
        summary = f"Resolved after {format_duration((now - opened_at).total_seconds())}"
        if reason == "manual":
            grace = format_duration(self.policy.manual_resolve_grace_s)
            summary = f"Resolved by {by}; it reopens if it still fails in {grace}"
        elif reason == "clean":
            runs = self.policy.resolve_after
            summary += f" ({runs} clean run{'s' if runs != 1 else ''})"
        return [self._note(conn, inc["id"], "resolve", reason, (*lines, summary), quiet=muted)]

    def _note(
        self,
        conn: sqlite3.Connection,
        incident_id: int,
        kind: NotificationKind,
        reason: str,
        lines: tuple[str, ...],
        *,
        quiet: bool = False,
        severity_change: tuple[str, str] | None = None,
    ) -> Notification:
        conn.execute(
            "UPDATE incidents SET events = events + 1, announced = CASE WHEN ? = 'open' THEN 1 ELSE announced END "
            "WHERE id = ?",
            (kind, incident_id),
        )
        seq = int(conn.execute("SELECT events FROM incidents WHERE id = ?", (incident_id,)).fetchone()[0])
        view = self._view(conn, incident_id)
        assert view is not None
        return Notification(kind=kind, incident=view, reason=reason, seq=seq, lines=lines, quiet=quiet,
                            severity_change=severity_change)

    @staticmethod
    def _title(view: IncidentView) -> str:
        if view.storm:
            live = [m for m in view.members if m.live]
            firing = [m for m in live if m.state == "firing"]
            still = f", {len(firing)} still failing" if len(firing) != len(live) else ""
            return (f"Storm on {view.server}: {len(live)} problems started at once "
                    f"({view.storm} likely causes{still})")
        primary = view.primary
        if view.cause_inferred:
            base = f"{primary.finding.title} (likely cause: {view.anchor.kind} {view.anchor.name or view.anchor.id})"
        else:
            base = primary.finding.title
        others = [m for m in view.consequences if m.state == "firing" and m is not primary]
        if others:
            base += f" (+{len(others)} consequence{'s' if len(others) != 1 else ''})"
        return base

    # -- people -----------------------------------------------------------------------------------------------

    def _open_incident(self, conn: sqlite3.Connection, incident_id: int) -> dict[str, Any]:
        inc = row(conn, "SELECT * FROM incidents WHERE id = ?", (incident_id,))
        if inc is None:
            raise IncidentError(f"there is no incident #{incident_id}")
        if inc["status"] != "open":
            raise IncidentError(f"incident #{incident_id} is already resolved")
        return inc

    def acknowledge(self, incident_id: int, user: str, now: datetime | None = None) -> list[Notification]:
        """Someone is on it: shown on the root message (who, when) and noted in the thread."""
        now = utc(now)
        with transaction(self.store) as conn:
            inc = self._open_incident(conn, incident_id)
            if inc["ack_by"] == user:
                return []
            update(conn, "incidents", incident_id, {"ack_by": user, "ack_at": iso(now), "updated_at": iso(now)})
            if not inc["announced"]:
                return []
            return [
                self._note(conn, incident_id, "update", "acknowledged", ()),
                self._note(conn, incident_id, "reply", "acknowledged", (f"👀 Acknowledged by {user}",)),
            ]

    def snooze(
        self, incident_id: int, user: str, until: datetime, now: datetime | None = None
    ) -> list[Notification]:
        """No notifications until `until`; the incident is still tracked (and can resolve meanwhile)."""
        now, until = utc(now), utc(until)
        if until <= now:
            raise IncidentError("a snooze must end in the future")
        with transaction(self.store) as conn:
            inc = self._open_incident(conn, incident_id)
            update(
                conn, "incidents", incident_id,
                {"snoozed_until": iso(until), "snoozed_by": user, "updated_at": iso(now)},
            )
            if not inc["announced"]:
                return []
            span = format_duration((until - now).total_seconds())
            return [
                self._note(conn, incident_id, "update", "snoozed", ()),
                self._note(
                    conn, incident_id, "reply", "snoozed",
                    (f"💤 Snoozed by {user} for {span} (until {until:%Y-%m-%d %H:%M} UTC)",),
                ),
            ]

    def resolve(self, incident_id: int, user: str, now: datetime | None = None) -> list[Notification]:
        """Resolved by a person. If the problem still fails after the grace period, the incident reopens."""
        now = utc(now)
        with transaction(self.store) as conn:
            inc = self._open_incident(conn, incident_id)
            return self._close(conn, inc, now, reason="manual", by=user, lines=[], muted=False)

    # -- views ------------------------------------------------------------------------------------------------

    def _view(self, conn: sqlite3.Connection, incident_id: int) -> IncidentView | None:
        inc = row(conn, "SELECT * FROM incidents WHERE id = ?", (incident_id,))
        if inc is None:
            return None
        members = tuple(
            MemberView(
                fingerprint=m["fingerprint"],
                check=m["check_id"],
                subject=Subject(kind=m["subject_kind"], id=m["subject_id"], name=m["subject_name"]),
                role=m["role"],
                state=m["state"],
                severity=m["severity"],
                first_seen=parse_iso(m["first_seen"]),  # type: ignore[arg-type]
                last_seen=parse_iso(m["last_seen"]),  # type: ignore[arg-type]
                cleared_at=parse_iso(m["cleared_at"]),
                count=m["count"],
                silenced=bool(m["silenced"]),
                finding=stored_finding(m["finding"]),
                moved_to=m["moved_to"],
                gone_at=parse_iso(m["gone_at"]),
            )
            for m in rows(conn, "SELECT * FROM incident_members WHERE incident_id = ? ORDER BY id", (incident_id,))
        )
        return IncidentView(
            id=inc["id"],
            server=inc["server"],
            status=inc["status"],
            severity=inc["severity"],
            title=inc["title"],
            anchor=Subject(kind=inc["anchor_kind"], id=inc["anchor_id"], name=inc["anchor_name"]),
            members=members,
            channel=inc["channel"],
            playbook=inc["playbook"],
            opened_at=parse_iso(inc["opened_at"]),  # type: ignore[arg-type]
            last_seen=parse_iso(inc["last_seen"]),  # type: ignore[arg-type]
            resolved_at=parse_iso(inc["resolved_at"]),
            resolved_by=inc["resolved_by"],
            resolve_reason=inc["resolve_reason"],
            count=inc["count"],
            reopen_count=inc["reopen_count"],
            ack_by=inc["ack_by"],
            ack_at=parse_iso(inc["ack_at"]),
            snoozed_until=parse_iso(inc["snoozed_until"]),
            snoozed_by=inc["snoozed_by"],
            announced=bool(inc["announced"]),
            split_from=inc["split_from"],
            storm=int(inc["storm"] or 0),
            mirrors=tuple(json.loads(inc["mirrors"] or "[]")),
            refused_channel=inc["refused_channel"],
            refused_error=inc["refused_error"],
        )


def root_key(incident_id: int) -> str:
    """The outbox dedupe key of an incident's root message (its thread hangs under it)."""
    return f"incident:{incident_id}:root"
