"""The `/clearml` command language: parsing, closest-command suggestions, limits on what users type."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.slack.commands.parsing import BY_NAME, MAX_ARG, SUBCOMMANDS, CommandUsageError, parse, unwrap, usage_hint


def test_every_subcommand_parses_with_its_example() -> None:
    for sub in SUBCOMMANDS:
        text = sub.example or sub.name
        parsed = parse(text)
        assert parsed.sub is sub


def test_empty_text_is_help() -> None:
    assert parse("").name == "help"
    assert parse("   \n").name == "help"


def test_case_and_spacing() -> None:
    parsed = parse("  RUN   health   prod  ")
    assert parsed.name == "run" and parsed.args == ["health", "prod"]


def test_flags() -> None:
    parsed = parse("run health --all")
    assert parsed.args == ["health"] and parsed.flags == {"--all"}
    with pytest.raises(CommandUsageError, match=r"has no option `--al`\. Did you mean `--all`"):
        parse("run health --al")
    with pytest.raises(CommandUsageError, match="has no option"):
        parse("status --verbose")


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [
        ("stauts", "status"),
        ("agent", "agents"),
        ("queue", "queues"),
        ("taks", "task"),
        ("playbook", "playbooks"),
        ("chekcs", "checks"),
        ("dataset", None),
        ("hepl", "help"),
    ],
)
def test_closest_command_is_suggested(typed: str, suggested: str | None) -> None:
    if suggested is None:
        with pytest.raises(CommandUsageError):
            parse(typed)  # `dataset` exists but needs an argument
        return
    with pytest.raises(CommandUsageError) as err:
        parse(typed + " x")
    assert err.value.suggestion is not None and err.value.suggestion.startswith(f"/clearml {suggested}")
    assert f"`/clearml {suggested}" in err.value.message


def test_garbage_gets_no_wild_guess() -> None:
    with pytest.raises(CommandUsageError) as err:
        parse("@@@@ ####")
    assert err.value.suggestion is None and "I don't know the subcommand" in err.value.message


def test_argument_counts() -> None:
    with pytest.raises(CommandUsageError, match="needs a task id"):
        parse("task")
    with pytest.raises(CommandUsageError, match="needs two task ids"):
        parse("diff abc")
    with pytest.raises(CommandUsageError, match="takes no arguments"):
        parse("status now")
    with pytest.raises(CommandUsageError, match="at most 2 arguments"):
        parse("run a b c")


def test_long_input_is_refused_without_echoing_it() -> None:
    with pytest.raises(CommandUsageError) as err:
        parse("task " + "a" * (MAX_ARG + 1))
    assert len(err.value.message) < 200
    with pytest.raises(CommandUsageError) as err:
        parse("x" * 5000)
    assert "5000 characters" in err.value.message and len(err.value.message) < 200


def test_slack_link_markup_is_unwrapped() -> None:
    assert (
        unwrap("<https://app.clear.ml/projects/x/experiments/abc|label>")
        == "https://app.clear.ml/projects/x/experiments/abc"
    )
    assert unwrap("<https://a.b/c>") == "https://a.b/c"
    assert unwrap("plain") == "plain"
    assert parse("task <https://a.b/c>").args == ["https://a.b/c"]


def test_usage_hint_lists_every_subcommand() -> None:
    hint = usage_hint()
    for sub in SUBCOMMANDS:
        assert sub.name in hint
    assert set(BY_NAME) == {s.name for s in SUBCOMMANDS}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_parses_or_gives_a_usage_error(text: str) -> None:
    try:
        parsed = parse(text)
    except CommandUsageError as err:
        assert err.message and len(err.message) < 600
    else:
        assert parsed.sub.min_args <= len(parsed.args) <= parsed.sub.max_args
