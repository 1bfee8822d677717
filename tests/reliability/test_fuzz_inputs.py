"""Property-based fuzzing of what comes from outside: playbook YAML, ClearML responses with missing, extra or
oddly typed fields, and worker ids reaching the `command` rotation backend. No crash, a clear error.

Bounded and deterministic: the `ci` hypothesis profile (tests/reliability/conftest.py) fixes the examples;
`HYPOTHESIS_PROFILE=thorough` explores more."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.actions.base import Refusal
from bot.actions.rotate.command import KNOWN, check_value, render_argv, run_argv
from bot.clearml.client import CallStats
from bot.clearml.models import Queue, Task, Worker, parse_time
from bot.config import ServerSettings, Settings
from bot.engine.playbook import CheckEntry, Playbook, PlaybookError, parse_playbook
from bot.engine.registry import REGISTRY, load_builtin_checks
from bot.engine.runner import run_playbooks
from bot.engine.snapshot import Snapshot

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
# A check that meets data it cannot use says so (CheckError: "... returned `x` as bool, expected a list"); these
# exception names in a finding mean the bot itself tripped over the data.
BUG_MARKERS = ("KeyError", "TypeError", "AttributeError", "ValueError", "IndexError", "OverflowError",
               "RecursionError", "ZeroDivisionError", "OSError")

# -- playbook YAML ---------------------------------------------------------------------------------------------

load_builtin_checks()
CHECK_IDS = sorted(REGISTRY)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["5m", "1h30m", "-3s", "0", "*/5 * * * *", "gpu-*",
                                                           "Europe/Berlin", "Mars/Base", "1e400", "UTC"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
param_names = st.sampled_from([*sorted({n for spec in REGISTRY.values() for n in spec.params_model.model_fields}),
                               "stale_aftr", "urls", "", "max_findings"])
check_entry = st.fixed_dictionaries(
    {"check": st.one_of(st.sampled_from(CHECK_IDS), st.text(max_size=15))},
    optional={"params": st.dictionaries(param_names, values, max_size=4), "name": values,
              "severity": st.sampled_from(["info", "warning", "critical", "error", "fatal", None])},
)
schedule = st.one_of(values, st.fixed_dictionaries({}, optional={"every": scalars, "cron": scalars,
                                                               "timezone": scalars}))
playbook_doc = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=10), values)},
    optional={"checks": st.one_of(st.lists(check_entry, max_size=4), values), "schedule": schedule,
              "timezone": scalars, "channel": values, "server": values, "description": values, "extra": values},
)


def _parse_or_error(text: str) -> None:
    try:
        pb = parse_playbook(text, "fuzz.yaml")
    except PlaybookError as exc:
        assert str(exc).startswith("fuzz.yaml")  # names the file (and the line, where there is one)
        return
    assert pb.checks and all(c.check in REGISTRY for c in pb.checks)


@given(playbook_doc)
def test_structured_playbooks_load_or_give_a_playbook_error(doc: dict[str, Any]) -> None:
    _parse_or_error(yaml.safe_dump(doc, allow_unicode=True))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("name:checks- []{}&*!|>'\"#%@`\n\t ,?0123456789agents.stale")),
               max_size=300))
def test_arbitrary_yaml_text_loads_or_gives_a_playbook_error(text: str) -> None:
    _parse_or_error(text)


def test_hostile_yaml_gives_a_playbook_error_quickly() -> None:
    laughs = "".join(f"{a}: &{a} [{', '.join([f'*{p}'] * 10)}]\n" for p, a in zip("abcdefgh", "bcdefghi", strict=True))
    for text in ("a: &a x\n" + laughs + "name: x\nchecks: [*i]\n",  # a billion values from 80 aliases
                 "name: x\nchecks: " + "[" * 3000 + "]" * 3000,  # deeper than Python's recursion limit
                 "name: x\nchecks: &a [*a]\n"):  # a recursive node
        _parse_or_error(text)


# -- ClearML responses with missing, extra and oddly typed fields ------------------------------------------------

odd = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                st.text(max_size=12), st.lists(st.text(max_size=6), max_size=3), st.dictionaries(
                    st.text(max_size=6), st.text(max_size=6), max_size=3))
iso = st.integers(0, 90 * 24 * 3600).map(lambda s: (NOW - timedelta(seconds=s)).isoformat())
stamp = st.one_of(iso, odd, st.integers(0, 2 * 10**12))
ident = st.one_of(st.text(alphabet="0123456789abcdef", min_size=1, max_size=32), odd)


def doc_of(fields: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A document with any subset of `fields`, each plausible or oddly typed, plus unknown extra fields."""
    return st.fixed_dictionaries({}, optional={k: st.one_of(v, odd) for k, v in fields.items()}).flatmap(
        lambda d: st.dictionaries(st.text(max_size=8), odd, max_size=2).map(lambda extra: {**extra, **d}))


queue_ref = doc_of({"id": ident, "name": st.text(max_size=8)})
workers = st.lists(doc_of({
    "id": ident, "ip": st.text(max_size=8), "register_time": stamp, "last_activity_time": stamp,
    "last_report_time": stamp, "task": doc_of({"id": ident, "name": st.text(max_size=8)}),
    "queues": st.lists(queue_ref, max_size=3), "tags": st.lists(st.text(max_size=4), max_size=2),
    "user": doc_of({"id": ident, "name": st.text(max_size=8)}),
}), max_size=5)
queues = st.lists(doc_of({
    "id": ident, "name": st.text(max_size=8), "display_name": st.text(max_size=8),
    "entries": st.lists(doc_of({"task": st.one_of(ident, doc_of({"id": ident})), "added": stamp}), max_size=4),
    "tags": st.lists(st.text(max_size=4), max_size=2), "system_tags": st.lists(st.text(max_size=4), max_size=2),
}), max_size=4)
tasks = st.lists(doc_of({
    "id": ident, "name": st.text(max_size=8),
    "status": st.sampled_from(["queued", "in_progress", "failed", "completed", "stopped", "created", "weird"]),
    "type": st.text(max_size=6), "project": ident, "status_changed": stamp, "created": stamp, "started": stamp,
    "last_update": stamp, "last_worker": st.text(max_size=8), "last_change": stamp,
    "execution": doc_of({"queue": ident}), "system_tags": st.lists(st.text(max_size=4), max_size=2),
}), max_size=6)
metrics = st.lists(doc_of({"queue": ident, "dates": st.lists(st.integers(0, 2 * 10**9), max_size=4),
                           "avg_waiting_times": st.lists(st.floats(allow_nan=True), max_size=4),
                           "queue_lengths": st.lists(st.integers(-5, 10**6), max_size=4)}), max_size=3)
info = doc_of({"version": st.text(max_size=8), "api_version": st.text(max_size=6), "build": st.text(max_size=4)})


class ServerDouble:
    """Stands in for the ClearML server's answers (not for our client): the Snapshot asks, this answers with
    the fuzzed documents, filtered the way the server would by status and id."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.stats = CallStats()

    def server_time(self) -> datetime:
        return NOW

    async def call(self, endpoint: str, payload: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        if endpoint == "workers.get_all":
            return {"workers": self.data["workers"]}
        if endpoint == "queues.get_queue_metrics":
            return {"queues": self.data["metrics"]}
        if endpoint == "server.info":
            return self.data["info"]
        if endpoint == "debug.ping":
            return {"msg": "ClearML server"}
        return {}

    async def get_all(self, endpoint: str, payload: dict[str, Any], *, key: str, **_: Any) -> list[dict[str, Any]]:
        if endpoint == "queues.get_all":
            return list(self.data["queues"])
        if endpoint != "tasks.get_all":
            return []
        docs = list(self.data["tasks"])
        if isinstance(payload.get("status"), list):
            docs = [t for t in docs if t.get("status") in payload["status"]]
        if isinstance(payload.get("id"), list):
            docs = [t for t in docs if t.get("id") in payload["id"]]
        return docs


FLEET_CHECKS = ["agents.stale", "agents.missing", "agents.orphaned_tasks", "agents.unserved_queues",
                "queues.backlog", "queues.wait_time", "queues.capacity", "queues.stuck_queued"]
SERVER = ServerSettings(name="fuzz", api_url="http://clearml.invalid:8008", web_url="http://clearml.invalid:8080",
                        files_url="http://clearml.invalid:8081")


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.fixed_dictionaries({"workers": workers, "queues": queues, "tasks": tasks, "metrics": metrics,
                              "info": info}))
def test_checks_survive_clearml_answers_with_missing_extra_and_odd_fields(data: dict[str, Any]) -> None:
    for doc in data["workers"]:
        Worker.from_api(doc)
    for doc in data["queues"]:
        Queue.from_api(doc)
    for doc in data["tasks"]:
        Task.from_api(doc)
    snap = Snapshot(ServerDouble(data), SERVER, Settings(), clock=lambda: NOW)  # type: ignore[arg-type]
    pb = Playbook(name="fuzz", checks=[CheckEntry(check=c) for c in FLEET_CHECKS])
    result = asyncio.run(run_playbooks([pb], Settings(), SERVER, snapshot=snap))
    crashed = [f"{f.check}: {f.detail}" for f in result.findings
               if f.severity == "error" and any(m in f.detail for m in BUG_MARKERS)]
    assert not crashed, crashed
    json.dumps(result.to_json())  # the report (and so Slack and the store) can always be serialized


@given(st.one_of(odd, stamp, st.floats(), st.integers()))
def test_any_timestamp_parses_or_is_none(value: Any) -> None:
    parsed = parse_time(value)
    assert parsed is None or parsed.tzinfo is not None


# -- worker ids reaching the `command` rotation backend ----------------------------------------------------------

TEMPLATE = ["ssh", "{host}", "sudo", "systemctl", "restart", "clearml-agent@{worker}", "--ip={ip}"]


@given(st.text(max_size=60), st.one_of(st.none(), st.text(max_size=20)))
def test_no_worker_id_changes_the_shape_of_the_command(worker: str, ip: str | None) -> None:
    values = {"worker": worker, "host": worker.split(":", 1)[0], "ip": ip}
    try:
        for name, value in values.items():
            check_value(name, value)
        argv = render_argv(TEMPLATE, values)
    except Refusal as exc:
        assert any(w in str(exc) for w in ("option", "control characters", "unknown", "may only use letters")), exc
        return
    # issue #14: what is accepted holds nothing a remote shell (ssh joins its arguments) could interpret
    assert all(re.fullmatch(r"[A-Za-z0-9._:@-]+", v) for v in values.values() if v is not None)
    # one argument per template argument, the value inside it verbatim: nothing a shell could split or expand
    assert len(argv) == len(TEMPLATE)
    assert argv[5] == f"clearml-agent@{worker}" and argv[1] == values["host"]
    assert not any(v.startswith("-") for v in (worker, values["host"], ip or "x"))
    assert set(KNOWN) == {"worker", "host", "ip"}


HOSTILE = ["$(touch {marker})", "`touch {marker}`", "x; touch {marker}", "x && touch {marker}", "x | touch {marker}",
           "x\ttouch {marker}", "'; touch {marker}; '", "x > {marker}", "${{IFS}}touch${{IFS}}{marker}"]


def test_hostile_worker_ids_run_as_one_literal_argument(tmp_path: Any) -> None:
    marker = tmp_path / "pwned"
    code = "import sys, json; print(json.dumps(sys.argv[1:]))"
    for pattern in HOSTILE:
        worker = pattern.format(marker=marker)
        try:
            check_value("worker", worker)
        except Refusal:
            continue  # refused outright (control characters) is fine too
        argv = render_argv([sys.executable, "-c", code, "{worker}"], {"worker": worker, "host": "h", "ip": None})
        out = asyncio.run(run_argv(argv, timeout_s=10, env={}, secrets=[]))
        assert json.loads(out["output"]) == [worker]
        assert not marker.exists(), f"{worker!r} ran a shell"
