"""The one error base (every exception the bot raises on purpose is a BotError; what a user typed wrong is a
UsageError) and the one YAML-with-lines loader shared by playbooks and simulator scenarios."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import bot
from bot.engine.playbook import PlaybookError, parse_playbook
from bot.errors import BotError, LookupInputError, UsageError
from bot.sim.clock import SimClock
from bot.sim.scenario import ScenarioError, build_state
from bot.slack.commands.parsing import CommandUsageError, parse
from bot.yamlload import LocatedDict, LocatedList, YamlKeyError, load_with_lines

# Exception classes that stay outside BotError on purpose, with the reason.
OUTSIDE_BOT_ERROR = {
    # runs on a ClearML agent with the standard library only: it cannot import the bot
    "bot.checks.agent_scripts.verify_dataset.VerifyError",
}


def _bot_exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(bot.__path__, "bot."):
        if info.name.endswith("__main__"):  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_exception_class_of_the_bot_derives_from_bot_error() -> None:
    classes = _bot_exception_classes()
    assert {"bot.config.ConfigError", "bot.clearml.errors.NotFoundError", "bot.actions.base.Refusal",
            "bot.engine.playbook.PlaybookError"} <= set(classes)
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, BotError))
    assert outside == sorted(n for n in OUTSIDE_BOT_ERROR if n in classes)


def test_delivery_errors_are_bot_errors_and_keep_what_callers_catch() -> None:
    from bot.slack.delivery.queue import OutboxError
    from bot.slack.delivery.sink import SlackWriteError

    assert issubclass(OutboxError, BotError) and issubclass(OutboxError, ValueError)  # callers catch ValueError
    error = SlackWriteError("chat.postMessage", "not_in_channel", channel="C0ABCDEF12")
    assert isinstance(error, BotError) and "/invite" in error.explain()


def test_user_input_errors_share_one_usage_error() -> None:
    with pytest.raises(UsageError, match="needs a task id"):
        parse("task", "/clearml")
    assert issubclass(CommandUsageError, UsageError) and issubclass(LookupInputError, UsageError)
    assert not issubclass(PlaybookError, UsageError)


def test_lenient_load_remembers_key_and_mapping_lines_last_duplicate_wins() -> None:
    doc = load_with_lines("name: a\nchecks:\n  - check: x\n    params: {n: 1}\nname: b\n", "pb.yaml")
    assert isinstance(doc, LocatedDict) and doc["name"] == "b"
    assert doc.line == 1 and doc.key_lines["checks"] == ("pb.yaml", 2) and doc.key_lines["name"] == ("pb.yaml", 5)
    entry = doc["checks"][0]
    assert type(doc["checks"]) is list and entry.line == 3 and entry.key_lines["params"] == ("pb.yaml", 4)


def test_strict_load_refuses_duplicate_and_non_scalar_keys_naming_the_line() -> None:
    with pytest.raises(YamlKeyError, match=r"^s.yaml:3: duplicate key 'a'$"):
        load_with_lines("a: 1\nb: 2\na: 3\n", "s.yaml", strict_keys=True)
    with pytest.raises(YamlKeyError, match=r"^s.yaml:2: a mapping key must be a plain value$"):
        load_with_lines("a: 1\n? [x, y]\n: 2\n", "s.yaml", strict_keys=True)
    doc = load_with_lines("items:\n  - 1\n  - 2\n", "s.yaml", strict_keys=True, located_lists=True)
    assert isinstance(doc["items"], LocatedList) and doc["items"].item_lines == [("s.yaml", 2), ("s.yaml", 3)]


def test_a_playbook_error_names_the_line_of_the_bad_key() -> None:
    with pytest.raises(PlaybookError, match=r"^pb.yaml:4: checks\[1\].check: unknown check `agents.stal`"):
        parse_playbook("name: t\nchecks:\n  - check: agents.stale\n  - check: agents.stal\n", "pb.yaml")


def test_a_scenario_with_a_duplicate_key_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: dup\nqueues: []\nqueues: []\n")
    with pytest.raises(ScenarioError, match=r"dup.yaml:3: duplicate key 'queues'$"):
        build_state(path, SimClock(), files_url="http://files.test:8081")
