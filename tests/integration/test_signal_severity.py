"""The severity policy is written down for every check, and titles agree with severities (issue 13: an `info`
finding said "cannot be reliably re-run")."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.engine.playbook import find_playbooks, load_playbook
from bot.engine.registry import load_builtin_checks
from bot.engine.runner import run_playbooks
from tests.helpers import server_settings

REPO = Path(__file__).resolve().parents[2]
# Words that say something is impossible, broken or lost: a finding that says them must be at least a warning
# ("1 failed task: ..." at info states a task status, and stays allowed).
ALARMING = re.compile(r"\b(cannot|can.t|broken|lost|dead|damaged|refused|unreachable|impossible)\b", re.I)


def test_every_check_states_what_each_severity_means() -> None:
    proc = subprocess.run([sys.executable, "-m", "bot", "checks", "--format", "json"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = {c["id"]: c for c in json.loads(proc.stdout)}
    assert set(listed) == set(load_builtin_checks())
    for check_id, spec in listed.items():
        policy = spec["severities"]
        assert set(policy) == {"info", "warning", "critical"}, check_id
        assert all(len(text) >= 5 for text in policy.values()), check_id
    text = subprocess.run([sys.executable, "-m", "bot", "checks"], cwd=REPO, capture_output=True, text=True,
                          timeout=60).stdout
    assert "  severity:\n    info: an agent missed two reports" in text


@pytest.mark.parametrize("scenario", ["incident-zoo", "healthy"])
def test_info_titles_do_not_claim_a_failure(sim_factory: Any, scenario: str) -> None:
    playbooks = [load_playbook(p) for p in find_playbooks(REPO / "playbooks")]
    result = asyncio.run(run_playbooks(playbooks, Settings(), server_settings(sim_factory(scenario=scenario))))
    infos = [f for f in result.findings if f.severity in ("info", "ok")]
    assert infos
    assert [f.title for f in infos if ALARMING.search(f.title)] == []
    # the case from the issue: an environment gap at info says what it is, not "cannot"
    env = [f for f in result.findings if f.check == "repro.environment"]
    for f in env:
        assert ("cannot be reliably re-run" in f.title) == (f.severity in ("warning", "critical")), f.title
