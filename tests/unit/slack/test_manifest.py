"""manifest.yml: what a workspace admin pastes into Slack. Its structure, its scopes (exactly what the code calls),
its command and usage hint (every implemented subcommand), checked against a copy of the public manifest schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bot.config import SlackSettings
from bot.slack.client import BOT_DISPLAY_NAME, METHOD_SCOPES, required_bot_scopes
from bot.slack.commands.jobs import HANDLERS
from bot.slack.commands.parsing import SUBCOMMANDS, usage_hint

REPO = Path(__file__).resolve().parents[3]
# A copy of SchemaStore's slack-app-manifest schema (draft-04), kept in the repository so the test needs nothing
# from outside it.
SCHEMA = json.loads((REPO / "tests" / "data" / "slack-app-manifest.schema.json").read_text())


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "manifest.yml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_manifest_passes_the_schema(manifest: dict[str, Any]) -> None:
    jsonschema.validate(manifest, SCHEMA)


def test_top_level_keys_and_types(manifest: dict[str, Any]) -> None:
    assert set(manifest) == {"_metadata", "display_information", "features", "oauth_config", "settings"}
    info = manifest["display_information"]
    assert isinstance(info["name"], str) and 0 < len(info["name"]) <= 35
    assert isinstance(info["description"], str) and len(info["description"]) <= 140
    # Slack rejects a long_description shorter than 175 characters
    assert 175 <= len(info.get("long_description", "x" * 175)) <= 4000
    features = manifest["features"]
    assert features["bot_user"]["display_name"] == BOT_DISPLAY_NAME
    assert features["bot_user"]["always_online"] is True
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True  # buttons (dataset hash check, actions)
    assert settings["socket_mode_enabled"] is True  # the default `serve` mode
    assert isinstance(settings["org_deploy_enabled"], bool) and isinstance(settings["token_rotation_enabled"], bool)
    # one Events API subscription: the Home tab (bot/slack/home), which the app_home feature enables
    assert settings["event_subscriptions"] == {"bot_events": ["app_home_opened"]}
    assert features["app_home"]["home_tab_enabled"] is True
    from bot.slack.app import LISTENER_MODULES
    from bot.slack.home import listeners as home_listeners

    assert home_listeners in LISTENER_MODULES  # the event has a listener the app registers


def test_scopes_are_exactly_what_the_code_needs(manifest: dict[str, Any]) -> None:
    scopes = manifest["oauth_config"]["scopes"]
    assert set(scopes) == {"bot"}
    assert sorted(scopes["bot"]) == sorted(set(scopes["bot"])), "duplicate scopes"
    assert set(scopes["bot"]) == required_bot_scopes()
    # the table behind required_bot_scopes covers the calls the outbox makes
    for method in ("chat.postMessage", "chat.update", "chat.delete", "chat.postEphemeral", "auth.test"):
        assert method in METHOD_SCOPES


def test_the_slash_command_and_its_usage_hint(manifest: dict[str, Any]) -> None:
    commands = manifest["features"]["slash_commands"]
    assert len(commands) == 1
    command = commands[0]
    assert command["command"] == SlackSettings().command == "/clearml"
    assert command["should_escape"] is False  # links arrive as typed; the parser unwraps <url> anyway
    assert len(command["description"]) <= 2000 and len(command["usage_hint"]) <= 1000
    assert command["usage_hint"] == usage_hint()
    implemented = {s.name for s in SUBCOMMANDS if s.instant} | set(HANDLERS)
    assert implemented == {s.name for s in SUBCOMMANDS}
    hinted = {part.split()[0] for part in command["usage_hint"].split(" | ")}
    assert implemented <= hinted, implemented - hinted
    assert {"help", "run", "status", "agents", "queues", "task", "diff", "dataset", "playbooks", "checks"} <= hinted
