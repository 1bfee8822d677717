"""`/clearml task` on a running task says what its agent's state means: alive, silent (stale) or gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.config import Settings
from bot.slack.commands import lookups
from bot.slack.commands.messages import render_task
from tests.helpers import server_settings


def scenario(agent_silent_for: str) -> dict[str, Any]:
    return {
        "name": "one-run",
        "projects": [{"name": "vision"}],
        "queues": [{"name": "gpu"}],
        "workers": [{"id": "gpu-box:0", "queues": ["gpu"], "last_activity": agent_silent_for,
                     "last_report": agent_silent_for, "task": "train"}],
        "tasks": [{"name": "train", "project": "vision", "status": "in_progress", "execution": {"queue": "gpu"},
                   "last_worker": "gpu-box:0", "started": "-1h", "last_update": agent_silent_for}],
    }


def diagnose(sim: Any) -> tuple[lookups.TaskDiagnosis, str]:
    async def go() -> lookups.TaskDiagnosis:
        meta = lookups.Meta()
        async with lookups.open_snapshot(Settings(), server_settings(sim, verify=False), meta) as snap:
            return await lookups.task(snap, meta, sim.task_id("train"))

    diagnosis = asyncio.run(go())
    message = render_task(diagnosis)
    text = "\n".join(str(b.to_dict()) for b in message.blocks)
    return diagnosis, text


def test_a_task_whose_agent_is_silent_for_5_minutes_is_not_called_alive(sim_factory: Any) -> None:
    diagnosis, text = diagnose(sim_factory(scenario("-330s")))  # 5 min 30 s
    assert diagnosis.worker is not None and diagnosis.worker.state == "stale"
    assert "stale, seen 5m" in text, text
    assert "alive" not in " ".join(diagnosis.notes)
    [note] = diagnosis.notes
    assert "has not reported for 5m" in note and "gpu-box:0" in note
    assert "presumed dead after 8m" in note  # the shipped thresholds: what happens next, and when


@pytest.mark.parametrize(("silent", "expected"), [("-10s", "It is running; its agent is alive."),
                                                  ("-9m", "is gone: the run is orphaned")])
def test_alive_and_dead_agents_keep_their_notes(sim_factory: Any, silent: str, expected: str) -> None:
    diagnosis, _ = diagnose(sim_factory(scenario(silent)))
    assert any(expected in n for n in diagnosis.notes), diagnosis.notes
