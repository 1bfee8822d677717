"""repro.* checks end to end over the simulator through the real HTTP client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.engine.findings import Finding
from bot.engine.playbook import CheckEntry, Playbook, PlaybookError, parse_playbook
from bot.engine.runner import RunResult, run_playbooks
from tests.helpers import server_settings

SCENARIOS = Path(__file__).resolve().parents[2] / "bot" / "sim" / "scenarios"
ZOO_DATA = SCENARIOS / "zoo-data.yaml"
HEALTHY_DATA = SCENARIOS / "healthy-data.yaml"
ORIGINAL = "b2c3d4e5f60718293a4b5c6d7e8f9012"  # segformer-b5-cityscapes, completed
CLONE = "c3d4e5f60718293a4b5c6d7e8f901234"  # its failed clone (newer torch, doubled batch)


def run(sim: Any, *checks: tuple[str, dict[str, Any]]) -> RunResult:
    playbook = Playbook(name="test", checks=[CheckEntry(check=c, params=p) for c, p in checks])
    return asyncio.run(run_playbooks([playbook], Settings(), server_settings(sim), deadline_s=45))


def of(result: RunResult, check: str) -> list[Finding]:
    return [f for f in result.findings if f.check == check]


# ------------------------------------------------------------------------------------------------ environment


def test_environment_lists_what_each_task_is_missing(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    findings = {f.subject.name: f for f in of(run(sim, ("repro.environment", {})), "repro.environment")}
    gaps = {name: set(f.evidence["gaps"]) for name, f in findings.items()}
    assert gaps == {
        "notebook-quick-finetune": {"no_code", "no_requirements", "no_python_version"},
        "train-asr-distill": {"no_commit", "uncommitted_changes", "unpinned_requirements"},
        "map-tiles-preprocess": {"local_requirements"},
        "train-pointpillars-kitti": {"uncommitted_changes"},
    }
    severities = {name: f.severity for name, f in findings.items()}
    assert severities == {"notebook-quick-finetune": "warning", "train-asr-distill": "warning",
                          "map-tiles-preprocess": "warning", "train-pointpillars-kitti": "info"}
    distill = findings["train-asr-distill"]
    assert distill.evidence["gaps"]["unpinned_requirements"] == {"count": 3, "packages": ["clearml", "torch>=2.0",
                                                                                          "transformers"]}
    assert "version_num" in distill.remediation
    assert distill.links[0].startswith(sim.web_url) and distill.subject.id in distill.links[0]
    assert all(f.subject.kind == "task" for f in findings.values())


def test_environment_params_ignore_and_override(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    result = run(sim, ("repro.environment", {
        "ignore": ["uncommitted_changes", "local_requirements"],
        "severities": {"unpinned_requirements": "critical"},
        "projects": ["speech", "mapping"],
    }))
    findings = {f.subject.name: f for f in of(result, "repro.environment")}
    assert set(findings) == {"train-asr-distill"}  # perception filtered out; the others only had ignored gaps
    assert findings["train-asr-distill"].severity == "critical"


def test_environment_quiet_on_healthy(sim_factory: Any) -> None:
    assert of(run(sim_factory(scenario=HEALTHY_DATA), ("repro.environment", {})), "repro.environment") == []


# ------------------------------------------------------------------------------------------------ failure causes


def test_failure_causes_group_failed_runs_by_cause(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    first = of(run(sim, ("repro.failure_causes", {})), "repro.failure_causes")
    by_cause = {f.evidence["cause"]: f for f in first}
    assert set(by_cause) == {"python_not_found", "requirements_install", "git_diff", "missing_module", "cuda_oom",
                             "storage", "agent_killed", "user_code"}
    storage = by_cause["storage"]
    assert storage.evidence["count"] == 2
    assert {t["name"] for t in storage.evidence["tasks"]} == {"train-yolov8l-traffic", "export-onnx-resnet50"}
    assert storage.subject.name == "train-yolov8l-traffic"  # the most recent failure of that cause
    assert all(t["link"].startswith(sim.web_url) for t in storage.evidence["tasks"])
    assert "AKIA" not in str(storage.model_dump())  # log lines are redacted
    python = by_cause["python_not_found"]
    assert python.subject.name == "legacy-lstm-forecast"  # not "requirements install": the root cause wins
    assert "requested by the Task" in python.evidence["lines"][0]
    assert by_cause["agent_killed"].actions == ["requeue"]
    assert by_cause["missing_module"].actions == ["clone"]
    assert by_cause["user_code"].severity == "info" and by_cause["cuda_oom"].severity == "warning"
    # the fingerprint follows the cause, not the task: a new failure of the same cause updates one incident
    assert len({f.fingerprint for f in first}) == len(first)
    again = {f.evidence["cause"]: f.fingerprint for f in of(run(sim, ("repro.failure_causes", {})),
                                                            "repro.failure_causes")}
    assert again == {cause: f.fingerprint for cause, f in by_cause.items()}


def test_failure_causes_critical_when_one_cause_dominates(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    result = run(sim, ("repro.failure_causes", {"critical_count": 2}))
    assert {f.evidence["cause"] for f in of(result, "repro.failure_causes") if f.severity == "critical"} == {
        "storage"}


def test_failure_causes_counts_failures_beyond_max_tasks(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    everything = of(run(sim, ("repro.failure_causes", {})), "repro.failure_causes")
    total = sum(f.evidence["count"] for f in everything)
    capped = of(run(sim, ("repro.failure_causes", {"max_tasks": 3})), "repro.failure_causes")
    unread = [f for f in capped if f.evidence["cause"] == "unclassified"]
    assert len(unread) == 1 and unread[0].evidence["count"] == total - 3 and unread[0].evidence["classified"] == 3
    assert sum(f.evidence["count"] for f in capped) == total  # a burst never looks smaller than it is
    assert "max_tasks" in unread[0].remediation and unread[0].severity == "warning"


def test_failure_causes_quiet_without_failures(sim_factory: Any) -> None:
    assert of(run(sim_factory(scenario=HEALTHY_DATA), ("repro.failure_causes", {})), "repro.failure_causes") == []


# ------------------------------------------------------------------------------------------------ compare


def test_compare_two_given_tasks(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    [finding] = of(run(sim, ("repro.compare", {"task_a": ORIGINAL, "task_b": CLONE})), "repro.compare")
    assert finding.severity == "info" and finding.subject.id == CLONE
    diff = finding.evidence["diff"]
    assert diff["requirements"]["changed"] == {"torch": ["==2.2.2", "==2.3.0"],
                                               "transformers": ["==4.40.0", "==4.41.2"]}
    assert diff["hyperparams"] == {"changed": {"Args/batch_size": ["8", "16"]}}
    assert diff["datasets"] == {"changed": {"Datasets/cityscapes": ["cityscapes-seg 1.1.0", "cityscapes-seg 1.2.0"]}}
    assert "version_num" in diff["commit"] and "container" not in diff and "python" not in diff
    assert finding.evidence["environment_differs"] is True
    assert "torch: ==2.2.2 -> ==2.3.0" in finding.detail
    assert any("compare-experiments" in link for link in finding.links)


def test_compare_unknown_task_is_an_error_naming_it(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    missing = "0" * 32
    [finding] = of(run(sim, ("repro.compare", {"task_a": ORIGINAL, "task_b": missing})), "repro.compare")
    assert finding.severity == "error" and missing in finding.title and "task_b" in finding.detail


def test_compare_needs_both_ids() -> None:
    with pytest.raises(PlaybookError, match="task_a"):
        parse_playbook("name: x\nchecks:\n  - check: repro.compare\n    params: {task_a: abc}\n")


def test_compare_auto_mode_explains_a_broken_clone(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    [finding] = of(run(sim, ("repro.compare", {})), "repro.compare")
    assert finding.severity == "warning" and finding.subject.id == CLONE
    assert finding.evidence["task_a"]["id"] == ORIGINAL and finding.evidence["task_a"]["status"] == "completed"
    assert "requirements" in finding.title and finding.actions == ["clone", "reproduce"]
    assert of(run(sim_factory(scenario=HEALTHY_DATA), ("repro.compare", {})), "repro.compare") == []
