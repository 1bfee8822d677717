"""The agent-side verification script (bot/checks/agent_scripts/verify_dataset.py): where it finds the server and
credentials under clearml-agent, and that the API token only ever goes to the configured file server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.checks.agent_scripts import verify_dataset as script
from bot.live.agents import ServerRef, clearml_conf

SERVER = ServerRef("http://api.example:8008", "http://app.example:8080", "http://files.example:8081", "AK", "SK")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("CLEARML_API_HOST", "CLEARML_FILES_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY",
                "CLEARML_CONFIG_FILE", "CLEARML_AUTH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_reads_the_json_config_clearml_agent_writes_for_its_tasks(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / ".clearml_agent.abc.cfg"
    path.write_text(json.dumps({"api": {"api_server": "http://api.example:8008/", "files_server": SERVER.files_url,
                                        "credentials": {"access_key": "AK", "secret_key": "SK"}},
                                "sdk": {"aws": {"s3": {"region": "eu-west-1"}}}}))
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(path))
    conf = script.load_config()
    assert conf["api_server"] == "http://api.example:8008" and conf["files_server"] == SERVER.files_url
    assert (conf["access_key"], conf["secret_key"]) == ("AK", "SK")
    assert conf["sdk"]["aws"]["s3"]["region"] == "eu-west-1" and conf["source"].endswith("(JSON)")


def test_reads_a_hocon_clearml_conf_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clearml.conf").write_text(clearml_conf(SERVER, "w:0", tmp_path))
    conf = script.load_config()  # ~/clearml.conf
    assert conf["api_server"] == SERVER.api_url and conf["files_server"] == SERVER.files_url
    assert (conf["access_key"], conf["secret_key"]) == ("AK", "SK")
    monkeypatch.setenv("CLEARML_API_HOST", "https://other.example")
    monkeypatch.setenv("CLEARML_API_SECRET_KEY", "SK2")
    conf = script.load_config()
    assert conf["api_server"] == "https://other.example" and conf["secret_key"] == "SK2"


def test_no_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(script.VerifyError, match="no ClearML API server configured"):
        script.load_config()


def test_the_token_goes_to_the_file_server_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARML_AUTH_TOKEN", "tok")
    api = script.Api({"api_server": SERVER.api_url, "files_server": SERVER.files_url})
    assert api.auth_for("http://files.example:8081/a/b.zip") == {"Authorization": "Bearer tok"}
    assert api.auth_for("http://169.254.169.254/latest/meta-data/") == {}
    assert api.auth_for("https://bucket.s3.amazonaws.com/files.example:8081/x") == {}
