"""`clearml-chatops demo --live --quick`: the whole story through the CLI, in-process (its agents are separate
processes, stopped by the demo itself and again by this test's fixture by pid, whatever happens)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.live.agents import AgentFleet
from tests.live.conftest import needs_agent

pytestmark = needs_agent


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "live"
    try:
        yield path
    finally:
        AgentFleet(path / "agents").close(timeout=5)  # no-op when the demo cleaned up after itself


def test_live_demo_catches_the_killed_agent_rotates_it_and_recovers(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)  # the terminal story, whatever the machine has set
    code = main(["demo", "--live", "--quick", "--state-dir", str(state_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    # The order of the story, as a user reads it.
    assert first("agent live-a:0 registered") < first("SIGKILL to live-a:0") \
        < first("WARNING agents.stale: Agent live-a:0 silent") \
        < first("CRITICAL agents.orphaned_tasks: Task train-resnet is orphaned") \
        < first("the on-call presses Rotate on live-a:0") < first("rotate ok: Rotated by on-call") \
        < first("agent live-a:0 re-registered") < first("[RESOLVED] Agent live-a:0") \
        < first("train-resnet completed on live-a:0: saved checkpoint")
    assert "[WARNING] Agent live-a:0 silent" in out  # the incident's root message, as Slack would get it
    assert "task train-resnet: Task train-resnet is orphaned" in out  # ... with its consequence
    assert "done: exec(argv=[" in out and "bot.live.launcher, restart" in out  # the command backend, no shell
    assert "done: tasks.enqueue(task=" in out
    assert "warnings before the kill (healthy agents): 0" in out
    # a dataset verified by the agent of cpu-b, next to the storage
    assert first("datasets.integrity: INFO Dataset 'street-scenes 1.0.0': verification dispatched to queue cpu-b") \
        < first("datasets.integrity: OK Dataset 'street-scenes 1.0.0' is intact: 3 files re-hashed")
    assert "verified by live-b:0" in out
    assert "live-b:0" not in "".join(line for line in lines if "agents.stale" in line)  # never the healthy agent
    # Every agent the demo started (and the one the launcher restarted) is gone.
    assert not AgentFleet(state_dir / "agents").close()
