"""The pure parts of the look-ups: task references (ids and web links, other servers refused), thresholds shared
with the playbooks, and repro.compare's evidence turned into rows."""

from __future__ import annotations

import pytest

from bot.config import ServerSettings
from bot.diagnosis.refs import parse_ref
from bot.engine.playbook import CheckEntry, Playbook
from bot.errors import LookupInputError
from bot.slack.commands.lookups import (
    _differences,
    agent_thresholds,
    classify_failure,
)

TASK = "4f2c0d7e9a8b4c1d8e5f6a7b8c9d0e1f"
PROJECT = "0123456789abcdef0123456789abcdef"
PROD = ServerSettings(
    name="prod",
    api_url="https://api.clearml.acme.io",
    web_url="https://app.clearml.acme.io",
    files_url="https://files.clearml.acme.io",
)
STAGING = ServerSettings(
    name="staging", api_url="http://10.0.0.9:8008", web_url="http://10.0.0.9:8080", files_url="http://10.0.0.9:8081"
)


@pytest.mark.parametrize(
    "text",
    [
        TASK,
        TASK.upper(),
        f"https://app.clearml.acme.io/projects/{PROJECT}/experiments/{TASK}/output/execution",
        f"https://app.clearml.acme.io/projects/*/experiments/{TASK}",
        f"https://app.clearml.acme.io/projects/{PROJECT}/tasks/{TASK}/info-output/metrics/scalar",
        f"<https://app.clearml.acme.io/projects/{PROJECT}/experiments/{TASK}|my run>",
        f"https://APP.clearml.acme.io:443/projects/{PROJECT}/experiments/{TASK}?columns=name",
        f"https://app.clearml.acme.io/datasets/simple/{PROJECT}/experiments/{TASK}",
    ],
)
def test_ids_and_links_of_a_configured_server(text: str) -> None:
    ref = parse_ref(text, [PROD, STAGING])
    assert ref.id == TASK
    assert ref.server == (None if len(text) == 32 else "prod")


def test_a_link_picks_the_server_it_belongs_to() -> None:
    ref = parse_ref(f"http://10.0.0.9:8080/projects/{PROJECT}/experiments/{TASK}", [PROD, STAGING])
    assert ref.server == "staging"
    # a link to the API host works too (people paste what they have)
    assert parse_ref(f"http://10.0.0.9:8008/projects/x/experiments/{TASK}", [PROD, STAGING]).server == "staging"


def test_a_link_to_another_server_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(LookupInputError) as err:
        parse_ref(f"https://app.clear.ml/projects/{PROJECT}/experiments/{TASK}", [PROD, STAGING])
    message = str(err.value)
    assert "app.clear.ml" in message and "prod (https://app.clearml.acme.io)" in message and "staging" in message
    with pytest.raises(LookupInputError, match="not a ClearML server"):
        parse_ref(f"http://10.0.0.9:9999/projects/x/experiments/{TASK}", [PROD, STAGING])  # same host, other port


def test_garbage_and_links_without_an_id() -> None:
    with pytest.raises(LookupInputError, match="is not a task id"):
        parse_ref("my-run", [PROD])
    with pytest.raises(LookupInputError, match="is not a dataset id"):
        parse_ref("abc", [PROD], kind="dataset")
    with pytest.raises(LookupInputError, match="found no task id"):
        parse_ref(f"https://app.clearml.acme.io/projects/{PROJECT}/experiments", [PROD])
    with pytest.raises(LookupInputError) as err:
        parse_ref("x" * 250, [PROD])
    assert len(str(err.value)) < 300


def test_agent_thresholds_follow_the_playbook() -> None:
    assert agent_thresholds([]) == (120.0, 480.0)
    pb = Playbook(
        name="health", checks=[CheckEntry(check="agents.stale", params={"stale_after": "1m", "dead_after": "5m"})]
    )
    assert agent_thresholds([pb]) == (60.0, 300.0)


def test_failure_classification_is_the_checks() -> None:
    cause = classify_failure("", "", ["Starting", "ModuleNotFoundError: No module named 'timm'"])
    assert cause is not None and cause.cause == "missing_module" and "timm" in cause.lines[-1]
    assert classify_failure("", "", ["all fine"]) is None


def test_compare_evidence_becomes_rows() -> None:
    evidence = {
        "diff": {
            "commit": {"version_num": ["abc", "def"]},
            "diff": {"a": {"changed_lines": 0}, "b": {"changed_lines": 12}},
            "requirements": {
                "changed": {"torch": ["==2.2", "==2.3"]},
                "added": {"timm": "==1.0"},
                "removed": {"numpy": "==1.26"},
            },
            "python": ["3.10", "3.11"],
            "configuration": ["General"],
        }
    }
    rows = _differences(evidence)
    assert ("commit.version_num", "abc", "def") in rows
    assert ("uncommitted changes", "0 lines", "12 lines") in rows
    assert ("requirements torch", "==2.2", "==2.3") in rows
    assert ("requirements timm", "(absent)", "==1.0") in rows
    assert ("requirements numpy", "==1.26", "(absent)") in rows
    assert ("python", "3.10", "3.11") in rows
    assert ("configuration", "changed: General", "") in rows
