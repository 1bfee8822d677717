"""`/clearml checks`: each check's description in whole sentences, within Slack's limits however long it is."""

from __future__ import annotations

import re
from typing import Any

from bot.engine.registry import REGISTRY, CheckSpec, NoParams, load_builtin_checks
from bot.slack.commands.help import render_checks
from tests.fakes.slack_api import validate_message


def lines_by_check(payload: dict[str, Any]) -> dict[str, str]:
    text = "\n".join(b["text"]["text"] for b in payload["blocks"] if b["type"] == "section")
    return {m.group(1): m.group(2) for m in re.finditer(r"^`([a-z_0-9]+\.[a-z_0-9]+)` — (.*)$", text, re.M)}


def first_paragraph(spec: CheckSpec) -> str:
    doc = f"{spec.summary}\n{spec.description}".split("\n\n")[0]
    return " ".join(doc.split())


def test_every_shipped_check_is_described_by_its_whole_first_paragraph() -> None:
    load_builtin_checks()
    message = render_checks(list(REGISTRY.values()))
    payload = {"text": message.text, "blocks": message.blocks_as_dicts()}
    assert validate_message(payload) == []
    lines = lines_by_check(payload)
    assert set(lines) == set(REGISTRY)
    for check_id, line in lines.items():
        # whole sentences; " …" marks that later sentences were left out
        assert line.removesuffix(" …").endswith((".", "?", "!", ".)")), f"{check_id} is cut mid-sentence: {line!r}"
    # the docstring's first sentence runs over a line break in the source: it is not cut at the break
    assert "silent longer than `worker_dead_after`, or alive but running something else)" in lines[
        "agents.orphaned_tasks"]
    assert lines["server.tls"].startswith("TLS of every https host") and "days to expiry." in lines["server.tls"]


def long_spec(i: int, sentences: int) -> CheckSpec:
    async def run(*_: Any) -> list[Any]:
        return []

    body = " ".join(f"Sentence {n} of check {i} explains one more thing about what it looks at." for n in
                    range(sentences))
    return CheckSpec(f"storage.long_{i}", run, NoParams, "A check with a lot to say.", body)


def test_long_descriptions_are_shortened_at_a_sentence_boundary_and_fit_slack() -> None:
    specs = [long_spec(i, 60) for i in range(40)]
    message = render_checks(specs)
    payload = {"text": message.text, "blocks": message.blocks_as_dicts()}
    assert validate_message(payload) == []
    lines = lines_by_check(payload)
    assert len(lines) == len(specs)
    for line in lines.values():
        assert line.startswith("A check with a lot to say. Sentence 0 of check")
        assert line.endswith("about what it looks at.") or line.endswith("about what it looks at. …"), line
        assert "…" not in line[:-1]
