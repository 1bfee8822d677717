"""Playbook errors name the file, the line and the key, and suggest the closest valid name."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine.playbook import PlaybookError, load_playbook, parse_playbook, resolve_playbook

REPO = Path(__file__).resolve().parents[3]


def error_of(text: str) -> str:
    with pytest.raises(PlaybookError) as info:
        parse_playbook(text, "pb.yaml")
    return str(info.value)


def test_unknown_check_suggests_the_closest_id() -> None:
    msg = error_of("name: x\nchecks:\n  - check: server.reachable\n  - check: agents.stal\n")
    assert msg.startswith("pb.yaml:4:")
    assert "unknown check `agents.stal`" in msg and "did you mean `agents.stale`" in msg


def test_unknown_parameter_suggests_the_closest_name() -> None:
    msg = error_of("name: x\nchecks:\n  - check: agents.stale\n    params:\n      stale_aftr: 2m\n")
    assert msg.startswith("pb.yaml:5:")
    assert "unknown parameter `stale_aftr`" in msg and "did you mean `stale_after`" in msg


def test_wrong_parameter_type_names_the_value() -> None:
    msg = error_of("name: x\nchecks:\n  - check: queues.backlog\n    params: {max_length: lots}\n")
    assert "pb.yaml:4:" in msg and "max_length" in msg and "'lots'" in msg


def test_misspelt_top_level_key_and_malformed_yaml() -> None:
    msg = error_of("name: x\nchekcs:\n  - check: agents.stale\n")
    assert msg.startswith("pb.yaml:2: unknown key `chekcs` (did you mean `checks`?)")
    assert error_of("name: [x\n").startswith("pb.yaml:2: not valid YAML")
    assert "a playbook is a mapping" in error_of("- just\n- a list\n")
    assert "missing required key `checks`" in error_of("name: x\n")


def test_schedules_are_validated() -> None:
    assert "needs 5 fields" in error_of("name: x\nschedule: '*/5 * *'\nchecks: [{check: agents.stale}]\n")
    assert "not a duration" in error_of("name: x\nschedule: {every: soon}\nchecks: [{check: agents.stale}]\n")
    ok = parse_playbook("name: x\nschedule: {every: 30s}\nchecks: [{check: agents.stale}]\n")
    assert ok.schedule is not None and ok.schedule.seconds == 30  # type: ignore[union-attr]
    assert parse_playbook("name: x\nschedule: '*/5 * * * *'\nchecks: [{check: agents.stale}]\n").cron == "*/5 * * * *"


def test_every_shipped_playbook_is_valid() -> None:
    shipped = sorted((REPO / "playbooks").glob("*.yaml"))
    names = {p.stem for p in shipped}
    assert {"health", "agents", "queues", "storage", "reproducibility", "datasets"} <= names
    for path in shipped:
        playbook = load_playbook(path)
        assert playbook.checks, path


def test_bare_names_resolve_in_the_playbooks_directory(tmp_path: Path) -> None:
    (tmp_path / "nightly.yaml").write_text("name: nightly\nchecks: [{check: agents.stale}]\n")
    assert resolve_playbook("nightly", tmp_path) == tmp_path / "nightly.yaml"
    with pytest.raises(PlaybookError, match="did you mean `nightly`"):
        resolve_playbook("nightlyy", tmp_path)
