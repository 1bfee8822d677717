"""Where the ClearML connection comes from, in order, and how a bad setting is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings, resolve_server

CLEARML_VARS = [
    "CLEARML_API_HOST", "CLEARML_WEB_HOST", "CLEARML_FILES_HOST", "CLEARML_API_ACCESS_KEY",
    "CLEARML_API_SECRET_KEY", "CLEARML_API_HOST_VERIFY_CERT", "CLEARML_CONFIG_FILE", "CLEARML_CHATOPS_CONFIG",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in CLEARML_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


CLEARML_CONF = """
api {
  api_server: "http://conf-host:8008"
  web_server: "http://conf-host:8080"
  files_server: "http://conf-host:8081"
  verify_certificate: false
  credentials { "access_key" = "CONFKEY", "secret_key" = "CONFSECRET" }
}
"""


def test_env_vars_alone_configure_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARML_API_HOST", "http://clearml.example.com:8008/")
    monkeypatch.setenv("CLEARML_API_ACCESS_KEY", "AK")
    monkeypatch.setenv("CLEARML_API_SECRET_KEY", "SK")
    server = resolve_server(Settings())
    assert server.api_url == "http://clearml.example.com:8008"
    # web and files hosts derived the way the clearml SDK derives them
    assert server.web_url == "http://clearml.example.com:8080"
    assert server.files_url == "http://clearml.example.com:8081"
    assert server.access_key is not None and server.access_key.get_secret_value() == "AK"
    assert "SK" not in repr(server) and "SK" not in str(server.model_dump())


def test_clearml_conf_is_read_with_clearmls_loader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = write(tmp_path / "clearml.conf", CLEARML_CONF)
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(conf))
    server = resolve_server(Settings())
    assert server.api_url == "http://conf-host:8008"
    assert server.files_url == "http://conf-host:8081"
    assert server.verify is False
    assert server.secret_key is not None and server.secret_key.get_secret_value() == "CONFSECRET"


def test_home_clearml_conf_is_the_last_resort(tmp_path: Path) -> None:
    write(tmp_path / "home" / "clearml.conf", CLEARML_CONF)
    assert resolve_server(Settings()).api_url == "http://conf-host:8008"


def test_order_config_file_then_env_then_clearml_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(write(tmp_path / "clearml.conf", CLEARML_CONF)))
    monkeypatch.setenv("CLEARML_API_HOST", "http://env-host:8008")
    monkeypatch.setenv("CLEARML_WEB_HOST", "http://env-web")
    settings = Settings.model_validate({"servers": {"prod": {"api": "https://api.prod.example.com"}}})
    server = resolve_server(settings)
    assert server.name == "prod"
    assert server.api_url == "https://api.prod.example.com"  # config file wins over env
    assert server.web_url == "http://env-web"  # env wins over clearml.conf
    assert server.files_url == "http://conf-host:8081"  # clearml.conf fills the rest
    assert server.access_key is not None and server.access_key.get_secret_value() == "CONFKEY"


def test_several_servers_need_a_choice(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "bot.yaml",
        "servers:\n  prod: {api: 'https://api.a.com'}\n  staging: {api: 'https://api.b.com'}\n",
    )
    settings = load_settings(cfg)
    with pytest.raises(ConfigError, match="--server NAME or set default_server"):
        resolve_server(settings)
    assert resolve_server(settings, "staging").api_url == "https://api.b.com"
    assert resolve_server(settings, "staging").web_url == "https://app.b.com"
    with pytest.raises(ConfigError, match="unknown server `qa`: the config file defines prod, staging"):
        resolve_server(settings, "qa")


def test_credentials_from_named_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROD_KEY", "pk")
    monkeypatch.setenv("PROD_SECRET", "ps")
    settings = Settings.model_validate(
        {"servers": {"prod": {"api": "http://h:8008", "credentials_env": ["PROD_KEY", "PROD_SECRET"]}}}
    )
    server = resolve_server(settings)
    assert server.secrets() == ["pk", "ps"]


def test_missing_api_host_names_the_settings() -> None:
    with pytest.raises(ConfigError, match="CLEARML_API_HOST"):
        resolve_server(Settings())


def test_half_set_credentials_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARML_API_HOST", "http://h:8008")
    monkeypatch.setenv("CLEARML_API_ACCESS_KEY", "only-the-key")
    with pytest.raises(ConfigError, match="CLEARML_API_SECRET_KEY is empty"):
        resolve_server(Settings())


def test_non_url_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARML_API_HOST", "clearml:8008")
    with pytest.raises(ConfigError, match="not an http"):
        resolve_server(Settings())


def test_bad_config_file_errors_name_file_and_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad_yaml = write(tmp_path / "a.yaml", "servers: [\n")
    with pytest.raises(ConfigError, match=r"a\.yaml line 2: not valid YAML"):
        load_settings(bad_yaml)
    typo = write(tmp_path / "b.yaml", "servers:\n  prod: {apii: 'http://x'}\n")
    with pytest.raises(ConfigError, match=r"setting `servers.prod.apii`: Extra inputs are not permitted"):
        load_settings(typo)
    wrong_default = write(tmp_path / "c.yaml", "servers:\n  prod: {api: 'http://x'}\ndefault_server: prd\n")
    with pytest.raises(ConfigError, match="default_server `prd` is not one of servers: prod"):
        load_settings(wrong_default)


def test_config_path_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = write(tmp_path / "bot.yaml", "slack: {default_channel: '#ml-alerts'}\n")
    monkeypatch.setenv("CLEARML_CHATOPS_CONFIG", str(cfg))
    assert load_settings().slack.default_channel == "#ml-alerts"
