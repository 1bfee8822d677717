"""Fleet-neutral shipped playbooks: every playbook in playbooks/ reports nothing at warning or worse against
any healthy fleet, whatever its size and worker-naming scheme (issue 13, a healthy fleet got a critical alarm
from the example expectations in agents.yaml)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.engine.findings import is_problem
from bot.engine.playbook import find_playbooks, load_playbook
from bot.engine.runner import run_playbooks
from bot.sim.fleet import generate_healthy_fleet
from tests.helpers import server_settings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [load_playbook(p) for p in find_playbooks(REPO / "playbooks")]

HEALTHY_SHAPES = [
    pytest.param({"workers": 12, "queues": 4, "naming": "host"}, id="hosts-12"),
    pytest.param({"workers": 6, "queues": 3, "naming": "autoscaled"}, id="autoscaled-6"),
    pytest.param({"workers": 40, "queues": 5, "naming": "k8s"}, id="k8s-40"),
    pytest.param({"workers": 1, "queues": 1, "naming": "custom"}, id="single-agent"),
    pytest.param({"workers": 200, "queues": 20, "naming": "mixed"}, id="mixed-200"),
]


def problems_of(sim: Any) -> list[str]:
    result = asyncio.run(run_playbooks(SHIPPED, Settings(), server_settings(sim)))
    return [f"{f.severity} {f.check}: {f.title}" for f in result.findings if is_problem(f.severity)]


def test_every_shipped_playbook_is_covered() -> None:
    assert {pb.name for pb in SHIPPED} >= {"health", "agents", "queues", "storage", "reproducibility", "datasets"}


def test_shipped_playbooks_are_quiet_on_the_healthy_scenario(sim_factory: Any) -> None:
    assert problems_of(sim_factory(scenario="healthy")) == []


@pytest.mark.parametrize("shape", HEALTHY_SHAPES)
def test_shipped_playbooks_are_quiet_on_generated_healthy_fleets(sim_factory: Any, shape: dict[str, Any]) -> None:
    fleet = generate_healthy_fleet(tasks=60, seed=shape["workers"], **shape)
    assert problems_of(sim_factory(scenario=fleet)) == []


def test_the_example_expectations_are_comments_not_settings() -> None:
    agents = next(pb for pb in SHIPPED if pb.name == "agents")
    missing = next(e for e in agents.checks if e.check == "agents.missing")
    assert missing.params.get("expected", "auto") == "auto"
    text = (REPO / "playbooks" / "agents.yaml").read_text()
    assert '#     - {pattern: "dynamic_worker:gpu-a10:*", min: 2}' in text
