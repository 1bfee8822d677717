"""The larger failure-cause catalogue over the simulator: the incident-zoo has one failed run per cause, and
repro.failure_causes and `/clearml task` name each with its evidence line and the buttons that fit."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.config import Settings
from bot.diagnosis.failure_causes import CAUSE_IDS, CAUSES
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import run_playbooks
from bot.slack.commands import lookups
from tests.helpers import server_settings

BUTTONS = {c.id: c.actions for c in CAUSES}


def causes(sim: Any) -> dict[str, Any]:
    book = Playbook(name="t", checks=[CheckEntry(check="repro.failure_causes", params={"critical_count": None})])
    result = asyncio.run(run_playbooks([book], Settings(), server_settings(sim)))
    return {f.evidence["cause"]: f for f in result.findings if f.check == "repro.failure_causes"}


def diagnose(sim: Any, name: str) -> lookups.TaskDiagnosis:
    async def go() -> lookups.TaskDiagnosis:
        meta = lookups.Meta()
        async with lookups.open_snapshot(Settings(), server_settings(sim), meta) as snap:
            return await lookups.task(snap, meta, sim.task_id(name))

    return asyncio.run(go())


def test_zoo_shows_every_cause_with_its_evidence_and_buttons(sim_factory: Any) -> None:
    found = causes(sim_factory(scenario="incident-zoo"))
    assert set(found) == set(CAUSE_IDS) - {"unknown"}
    for cause_id, finding in found.items():
        assert finding.actions == BUTTONS[cause_id], cause_id
        assert finding.evidence["lines"], cause_id  # the evidence a user reads
    assert found["image_pull"].subject.name == "train-detr-private-image"
    assert "unauthorized: authentication required" in found["image_pull"].evidence["lines"][0]
    assert "too old (found version 11040)" in found["cuda_mismatch"].detail
    assert found["watchdog_stop"].evidence["tasks"][0]["name"] == "upload-raw-lidar-2024-05"
    assert found["upload_too_large"].evidence["tasks"][0]["name"] == "upload-eval-videos"
    assert "client_max_body_size" in found["upload_too_large"].remediation
    assert "Spot instance interruption" in found["spot_preemption"].evidence["lines"][0]


def test_task_lookup_offers_the_causes_buttons(sim_factory: Any) -> None:
    sim = sim_factory(scenario="incident-zoo")
    image = diagnose(sim, "train-detr-private-image")
    assert image.failure is not None and image.failure.cause == "image_pull"
    assert image.actions == ["clone", "requeue"]  # clone with another image, or fix registry access and rerun
    gpu = diagnose(sim, "eval-yolo-cpu-fallback")
    # the fitting button first (another queue, whose agents see a GPU), then the others
    assert gpu.failure is not None and gpu.failure.cause == "gpu_not_visible" and gpu.actions == ["requeue", "clone"]
    code = diagnose(sim, "tokenizer-bpe-sweep")
    assert code.failure is not None and code.actions == ["reproduce", "clone", "requeue"]
    assert "could not select device driver" in gpu.failure.lines[-1]


def test_healthy_runs_have_no_failure_causes(sim_factory: Any) -> None:
    assert causes(sim_factory(scenario="healthy")) == {}


def test_clone_with_another_image_fixes_an_image_pull_failure(sim_factory: Any, tmp_path: Any) -> None:
    from tests.integration.test_actions_sim import make_world

    sim = sim_factory(scenario="incident-zoo")
    failed = sim.task_id("train-detr-private-image")
    world = make_world(tmp_path, sim)
    try:
        image = "nvcr.io/nvidia/pytorch:24.05-py3"
        out = world.act("clone", failed, {"image": image, "queue": "gpu-debug"})
        assert out.status == "ok", out
        [new_id] = out.created_ids
        clone = world.task(new_id)
        assert clone["container"]["image"] == image and clone["status"] == "queued"
        assert world.task(failed)["container"]["image"] == "registry.acme.internal/ml/detr:2.4.1-cuda12"
        assert [n for n, _ in world.writes()] == ["tasks.clone", "tasks.edit", "tasks.enqueue"]
        bad = world.act("clone", failed, {"image": "img; rm -rf /"})
        assert bad.status == "failed" and "image" in bad.text
    finally:
        world.store.close()


def test_task_lookup_warns_before_the_watchdog_stops_a_silent_task(sim_factory: Any) -> None:
    sim = sim_factory(scenario="incident-zoo")
    silent = diagnose(sim, "export-raw-video-2024-05")  # 110 minutes without an update, run from a workstation
    assert any("Forced stop (non-responsive)" in n and "in about 10m" in n for n in silent.notes), silent.notes
    assert "abort" in silent.actions
    fresh = diagnose(sim, "train-yolov8m-coco")
    assert not any("Forced stop" in n for n in fresh.notes) and "abort" not in fresh.actions
