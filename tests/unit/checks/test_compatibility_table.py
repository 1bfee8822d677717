"""The known-bad versions table (bot/checks/data/compatibility.yaml) and the version matching it relies on."""

from __future__ import annotations

import pytest

from bot.checks.compatibility import Inventory, Sighting, load_table, match_entry, parse_version, satisfies


def test_every_entry_is_sourced_and_ids_are_unique() -> None:
    table = load_table()
    ids = [e.id for e in table.known_bad] + [p.id for p in table.upgrade_paths]
    assert len(ids) == len(set(ids)) and len(ids) >= 4
    for entry in [*table.known_bad, *table.upgrade_paths]:
        assert entry.sources and all(s.startswith("https://github.com/clearml/") for s in entry.sources), entry.id


@pytest.mark.parametrize(("version", "spec", "expected"), [
    ("1.9.3", ">=1.9.3", True),
    ("1.9.2", ">=1.9.3", False),
    ("2.0.0-613", ">=2.0.0,<3.0.0", True),
    ("3.24.1", "<3.0.0", False),
    ("1.17", ">=1.17.0", True),       # "1.17" is 1.17.0
    ("2.0.0rc4", "==2.0.0", True),    # a release candidate counts as its release
    ("1.16.2", "<1.17.0", True),
])
def test_version_conditions(version: str, spec: str, expected: bool) -> None:
    assert satisfies(parse_version(version), spec) is expected


def test_unknown_versions_match_nothing_and_bad_conditions_fail_loudly() -> None:
    assert parse_version("latest") is None and satisfies(None, ">=0") is False
    with pytest.raises(ValueError, match="bad version condition"):
        satisfies((1, 0, 0), "~1.9")


def test_agent_entries_respect_worker_globs() -> None:
    glue = next(e for e in load_table().known_bad if e.id == "k8s-glue-requeue-400")
    plain = Sighting((1, 9, 3), "1.9.3", "t1", "train", worker="gpu-box-1:gpu0")
    pod = Sighting((1, 9, 3), "1.9.3", "t2", "train", worker="clearml-id-9a8b")
    assert match_entry(glue, Inventory((2, 0, 0), "2.0.0", (2, 31, 0), "2.31", agents=[plain])) is None
    matched = match_entry(glue, Inventory((2, 0, 0), "2.0.0", (2, 31, 0), "2.31", agents=[plain, pod]))
    assert matched is not None and [a["worker"] for a in matched["agents"]] == ["clearml-id-9a8b"]
    assert match_entry(glue, Inventory((1, 17, 1), "1.17.1", (2, 30, 0), "2.30", agents=[pod])) is None
