"""The bot's settings: pydantic schema for the YAML config file, plus ClearML connection resolution.

ClearML connection settings come, in this order, from the bot's config file, the standard CLEARML_*
environment variables, and the user's clearml.conf (read with the clearml package's own loader).
Secrets are held as SecretStr so that they never print.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bot.durations import parse_duration
from bot.errors import BotError


class ConfigError(BotError):
    """A missing, malformed or contradictory setting. The message names the setting and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- schedules (playbooks' `schedule:` and the digest's): config types, so config imports no feature -------


def validate_timezone(value: str | None) -> str | None:
    """An IANA timezone name APScheduler accepts (else the scheduler would fail when the job is added)."""
    if value is None:
        return value
    from apscheduler.util import astimezone

    try:
        astimezone(value)
    except Exception:
        raise ValueError(f"unknown timezone {value!r}: use an IANA name such as Europe/Berlin or UTC") from None
    return value


class IntervalSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every: str | float
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        return validate_timezone(value)

    @field_validator("every")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        seconds = parse_duration(value)
        if seconds < 1:
            raise ValueError("`every` must be at least 1s")
        return value

    @property
    def seconds(self) -> float:
        return parse_duration(self.every)


class CronSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str
    timezone: str | None = None


def validate_cron(expr: str, timezone: str | None = None) -> None:
    """Raise ValueError unless `expr` is a 5-field crontab expression APScheduler accepts."""
    from apscheduler.triggers.cron import CronTrigger

    if len(expr.split()) != 5:
        raise ValueError(f"cron schedule {expr!r} needs 5 fields (minute hour day month weekday), e.g. '*/5 * * * *'")
    try:
        CronTrigger.from_crontab(expr, timezone=timezone or "UTC")
    except Exception as exc:
        raise ValueError(f"cron schedule {expr!r} is not valid: {exc}") from None


class DigestSettings(BaseModel):
    """`slack.digest` in the config file (the channel digest, bot/incidents/digest.py):

    ```yaml
    slack:
      digest:
        schedule: "0 9 * * 1-5"      # cron (5 fields) or {every: 24h} or {cron: ..., timezone: ...}
        timezone: Europe/Berlin       # for a cron string; default UTC
        channel: "#ml-platform"       # default: slack.default_channel
        period: 24h                   # what the first digest covers (later ones: since the previous digest)
        top: 5                        # top offenders listed
        max_items: 10                 # new / ongoing / resolved incidents listed each
    ```"""

    model_config = ConfigDict(extra="forbid")

    schedule: str | IntervalSchedule | CronSchedule = "0 9 * * *"
    timezone: str | None = None
    channel: str | None = None
    period: str | float = "24h"
    top: int = 5
    max_items: int = 10
    enabled: bool = True

    @field_validator("schedule")
    @classmethod
    def _valid(cls, value: Any) -> Any:
        if isinstance(value, str):
            validate_cron(value)
        elif isinstance(value, CronSchedule):
            validate_cron(value.cron, value.timezone)
        return value

    @field_validator("period")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration(value)
        return value

    @property
    def period_s(self) -> float:
        return parse_duration(self.period)

    @classmethod
    def from_settings(cls, settings: Settings | None) -> DigestSettings | None:
        raw = settings.slack.digest if settings is not None else None
        if raw is None:
            return None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"] if p not in ("str", "IntervalSchedule", "CronSchedule"))
            where = f" in {settings.config_path}" if settings is not None and settings.config_path else ""
            raise ConfigError(f"setting `slack.digest.{loc}`{where}: {err['msg']}") from None



class ServerSettings(BaseModel):
    """One resolved ClearML server: where it is and how to authenticate."""

    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    api_url: str
    web_url: str
    files_url: str
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    verify: bool | str = True  # True, False, or a CA bundle path
    timeout_s: float = 10.0
    retries: int = 2
    source: str = ""  # where the settings came from, for error messages

    @property
    def has_credentials(self) -> bool:
        return bool(self.access_key and self.secret_key)

    def secrets(self) -> list[str]:
        return [s.get_secret_value() for s in (self.access_key, self.secret_key) if s is not None]


class ServerConfig(_Strict):
    """A server as written in the bot's config file (all optional: env and clearml.conf fill gaps)."""

    api: str | None = None
    web: str | None = None
    files: str | None = None
    access_key_env: str | None = None
    secret_key_env: str | None = None
    credentials_env: list[str] | None = None  # [ACCESS_KEY_VAR, SECRET_KEY_VAR]
    config_file: str | None = None  # a clearml.conf for this server
    verify: bool | str | None = None
    timeout: str | float | None = None
    retries: int | None = None

    @field_validator("credentials_env")
    @classmethod
    def _two_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(value) != 2:
            raise ValueError("credentials_env takes two environment variable names: [ACCESS_KEY_VAR, SECRET_KEY_VAR]")
        return value


class StorageTarget(_Strict):
    """A storage location the bot probes: s3://bucket/prefix (MinIO: s3://host:port/bucket/prefix),
    gs://, azure://, or the file server (http(s)://)."""

    url: str
    name: str | None = None
    endpoint_url: str | None = None  # explicit S3-compatible endpoint (MinIO, moto); else from the URL host
    region: str | None = None
    secure: bool | None = None
    verify: bool | str | None = None
    key_env: str | None = None
    secret_env: str | None = None
    probe_prefix: str = ".clearml-chatops-probe/"

    @property
    def label(self) -> str:
        return self.name or self.url


class SlackRoute(_Strict):
    channel: str
    severity: Literal["info", "warning", "critical", "error"] | None = None
    check: str | None = None  # glob on check ids


class SlackSettings(_Strict):
    default_channel: str | None = None
    # Task owners for playbooks with `notify_owner`: ClearML user (id, name or e-mail) -> Slack user id (U...) or
    # the e-mail Slack knows them by. Unmapped owners whose ClearML name or e-mail is an address are looked up with
    # users.lookupByEmail unless owner_lookup_by_email is false.
    owners: dict[str, str] = Field(default_factory=dict)
    owner_lookup_by_email: bool = True
    routes: list[SlackRoute] = Field(default_factory=list)
    command: str = "/clearml"
    api_url: str | None = None
    # the channel digest's schedule and contents (bot/incidents/digest.py); none: no digest
    digest: DigestSettings | None = None
    # also post each scheduled run's whole report (routed like `/clearml run`), besides the incident threads
    scheduled_reports: bool = False


@dataclass(frozen=True)
class TrackerPolicy:
    """The incident tracker's policy (bot/incidents/tracker.py); `IncidentSettings.policy()` builds it from
    `incidents:` in the config file."""

    resolve_after: int = 1  # consecutive clean runs before a member counts as recovered
    reopen_grace_s: float = 900.0  # flapping: back within 15 min of resolving -> same incident, same thread
    manual_resolve_grace_s: float = 900.0  # a manual resolve is believed for this long before it can reopen
    open_severities: frozenset[str] = frozenset({"warning", "critical"})
    # Alertmanager's group_wait: a new incident's first post waits this long, so that the rest of a cascade
    # arriving a run later (another playbook's run at the same minute, the orphan one run after its agent) joins it
    # before anyone is notified. 0: post at once. `serve` takes it from `incidents.settle` (default 60 s).
    settle_s: float = 0.0
    # A storm: this many new incidents in one run become one storm incident listing them. 0: never.
    storm_threshold: int = 0

    def __post_init__(self) -> None:
        if self.resolve_after < 1:
            raise ValueError("resolve_after must be at least 1")
        if self.settle_s < 0:
            raise ValueError("settle_s must not be negative")
        if self.storm_threshold < 0 or self.storm_threshold == 1:
            raise ValueError("storm_threshold must be 0 (off) or at least 2")


class IncidentSettings(_Strict):
    """How scheduled runs become incidents (docs/slack.md, "Incidents")."""

    # Alertmanager's group_wait: a new incident's first post waits this long, so that a cascade arriving over two
    # runs (another playbook's run the same minute, the orphaned task one run after its agent) is one post. 0: at once.
    settle: str | float = "60s"
    # this many new incidents in one run are one storm incident listing them (a fleet-wide outage); 0: never
    storm_threshold: int = Field(default=10, ge=0)
    # how often to check whether the bot was invited to a channel that refused an incident's root
    refused_retry: str | float = "5m"
    resolve_after: int = Field(default=1, ge=1)  # consecutive clean runs before a problem counts as recovered

    @field_validator("settle", "refused_retry")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration(value)
        return value

    @field_validator("storm_threshold")
    @classmethod
    def _storm(cls, value: int) -> int:
        if value == 1:
            raise ValueError("storm_threshold must be 0 (off) or at least 2")
        return value

    @property
    def settle_s(self) -> float:
        return parse_duration(self.settle)

    @property
    def refused_retry_s(self) -> float:
        return parse_duration(self.refused_retry)

    def policy(self) -> TrackerPolicy:
        return TrackerPolicy(resolve_after=self.resolve_after, settle_s=self.settle_s,
                             storm_threshold=self.storm_threshold)


class ActionAllow(_Strict):
    users: list[str] = Field(default_factory=list)
    usergroups: list[str] = Field(default_factory=list)


class RotateBackend(BaseModel):
    model_config = ConfigDict(extra="allow")

    match: str
    type: Literal["ec2", "kubernetes", "command", "ssh"]


class RotateSettings(_Strict):
    backends: list[RotateBackend] = Field(default_factory=list)
    requeue_task: bool = False


class ReproduceSettings(_Strict):
    """Defaults of the reproduce button: how close a re-run must come to count as reproduced, how long to watch it,
    and how often `serve` looks at the re-runs it watches."""

    metric_rel_tol: float = Field(default=0.05, ge=0)
    metric_abs_tol: float = Field(default=1e-9, ge=0)
    duration_rel_tol: float = Field(default=0.5, ge=0)
    metrics: list[str] = Field(default_factory=list)  # 'metric/variant' globs to compare (default: all)
    timeout: str | float = "24h"
    poll: str | float = "30s"

    @field_validator("timeout", "poll")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration(value)
        return value

    @property
    def poll_s(self) -> float:
        return parse_duration(self.poll)

    def button_params(self) -> dict[str, Any]:
        """The reproduce button's signed params: only what differs from the action's own defaults."""
        return self.model_dump(exclude={"poll"}, exclude_defaults=True)


class ActionsSettings(_Strict):
    dry_run: bool = False
    button_ttl: str | float = "24h"
    # keys: action ids (clone, requeue, abort, rotate, reproduce, prioritize) and verify_hashes (nobody until
    # listed), and `resolve` / `silence` / `digest` (a digest into another channel) to restrict those (anyone when
    # absent)
    allow: dict[str, ActionAllow] = Field(default_factory=dict)
    rotate: RotateSettings = Field(default_factory=RotateSettings)
    reproduce: ReproduceSettings = Field(default_factory=ReproduceSettings)


class Settings(_Strict):
    servers: dict[str, ServerConfig] = Field(default_factory=dict)
    default_server: str | None = None
    storage: list[StorageTarget | str] = Field(default_factory=list)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    actions: ActionsSettings = Field(default_factory=ActionsSettings)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    store: str | None = None
    playbooks: str | None = None
    run_deadline: str | float = "60s"
    # ClearML reads younger than this (relative to when a command was typed) are shared by `serve`'s commands, runs
    # and Home tab instead of asked again; requests in flight are always shared while it is on. 0 turns sharing off.
    # Never shared across servers or credentials; scheduled runs accept less when their thresholds need it.
    read_window: str | float = "5s"
    config_path: str | None = Field(default=None, exclude=True)

    @field_validator("read_window")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration(value)
        return value

    @property
    def storage_targets(self) -> list[StorageTarget]:
        return [StorageTarget(url=t) if isinstance(t, str) else t for t in self.storage]

    @property
    def store_path(self) -> Path:
        if self.store:
            return Path(os.path.expanduser(self.store))
        state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        return Path(state) / "clearml-chatops" / "store.db"

    @property
    def run_deadline_s(self) -> float:
        return parse_duration(self.run_deadline)

    @property
    def read_window_s(self) -> float:
        return parse_duration(self.read_window)


# ------------------------------------------------------------------------------------------------
# Loading the bot's config file


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the bot's YAML config (`--config`, else $CLEARML_CHATOPS_CONFIG); no file -> defaults."""
    chosen = path or os.environ.get("CLEARML_CHATOPS_CONFIG")
    if not chosen:
        return Settings()
    file = Path(os.path.expanduser(str(chosen)))
    if not file.is_file():
        raise ConfigError(
            f"config file {file} does not exist (set by {'--config' if path else 'CLEARML_CHATOPS_CONFIG'}): "
            "create it or point to an existing file"
        )
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {file}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {file}: the top level must be a mapping (servers:, storage:, slack:, ...)")
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        # drop the union-branch tags pydantic adds (`str`, `IntervalSchedule`, `function-after[...]`)
        loc = ".".join(str(p) for p in err["loc"] if not _union_tag(p))
        raise ConfigError(f"config file {file}: setting `{loc}`: {err['msg']}") from None
    settings.config_path = str(file)
    if settings.default_server and settings.default_server not in settings.servers:
        raise ConfigError(
            f"config file {file}: default_server `{settings.default_server}` is not one of servers: "
            f"{', '.join(settings.servers) or '(none defined)'}"
        )
    return settings


def _union_tag(part: Any) -> bool:
    text = str(part)
    return text in ("str", "int", "float", "bool", "IntervalSchedule", "CronSchedule", "StorageTarget") or "[" in text


# ------------------------------------------------------------------------------------------------
# Resolving one ClearML server


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _read_clearml_conf(path: str | None) -> dict[str, Any]:
    """Read clearml.conf with the clearml package's own loader (pyhocon); {} when there is none."""
    candidates = [path] if path else [_env("CLEARML_CONFIG_FILE"), os.path.expanduser("~/clearml.conf")]
    for candidate in candidates:
        if not candidate:
            continue
        file = Path(os.path.expanduser(candidate))
        if not file.is_file():
            if path:
                raise ConfigError(f"clearml.conf {file} (servers.*.config_file) does not exist")
            continue
        try:
            from clearml.backend_config.config import ConfigFactory  # type: ignore[import-untyped]

            tree = ConfigFactory.parse_file(str(file))
        except Exception as exc:
            raise ConfigError(f"clearml.conf {file} could not be parsed: {type(exc).__name__}: {exc}") from None
        return {"path": str(file), "tree": tree}
    return {}


def _conf_get(conf: dict[str, Any], key: str) -> Any:
    tree = conf.get("tree")
    if tree is None:
        return None
    try:
        return tree.get(key, None)
    except Exception:
        return None


def derive_web_and_files(api_url: str) -> tuple[str, str]:
    """What the clearml SDK does: :8008 -> :8080 / :8081, or api. -> app. / files."""
    api = api_url.rstrip("/")
    if re.search(r":8008\b", api):
        return api.replace(":8008", ":8080"), api.replace(":8008", ":8081")
    if "://api." in api:
        return api.replace("://api.", "://app.", 1), api.replace("://api.", "://files.", 1)
    return api, api


def _bool(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    return text  # a CA bundle path


def resolve_server(settings: Settings, name: str | None = None) -> ServerSettings:
    """The effective connection for server `name` (or the default one), or one ConfigError."""
    servers = settings.servers
    if name is None:
        name = settings.default_server or (next(iter(servers)) if len(servers) == 1 else None)
        if name is None and servers:
            raise ConfigError(
                f"several servers are configured ({', '.join(servers)}): pass --server NAME or set default_server"
            )
    if name is not None and servers and name not in servers:
        raise ConfigError(f"unknown server `{name}`: the config file defines {', '.join(servers)}")
    if name is not None and not servers and name != "default":
        raise ConfigError(
            f"unknown server `{name}`: no servers are defined in the config file"
            f"{' ' + settings.config_path if settings.config_path else ''}"
        )
    server = servers.get(name or "", ServerConfig())
    conf = _read_clearml_conf(server.config_file)
    sources: list[str] = []

    def pick(setting: str, from_file: Any, env_name: str, conf_key: str) -> Any:
        if from_file not in (None, ""):
            sources.append(f"{setting} from config file")
            return from_file
        env_value = _env(env_name)
        if env_value is not None:
            sources.append(f"{setting} from {env_name}")
            return env_value
        conf_value = _conf_get(conf, conf_key)
        if conf_value not in (None, ""):
            sources.append(f"{setting} from {conf.get('path')}")
            return conf_value
        return None

    api = pick("api", server.api, "CLEARML_API_HOST", "api.api_server")
    if not api:
        where = f"servers.{name}.api" if name and servers else "CLEARML_API_HOST"
        raise ConfigError(
            f"no ClearML API server configured: set {where} (e.g. http://clearml.example.com:8008), "
            "or CLEARML_API_HOST, or api.api_server in clearml.conf"
        )
    api = str(api).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", api):
        raise ConfigError(
            f"ClearML API host `{api}` is not an http(s) URL: fix servers.{name or 'default'}.api or CLEARML_API_HOST"
        )
    derived_web, derived_files = derive_web_and_files(api)
    web = str(pick("web", server.web, "CLEARML_WEB_HOST", "api.web_server") or derived_web).rstrip("/")
    files = str(pick("files", server.files, "CLEARML_FILES_HOST", "api.files_server") or derived_files).rstrip("/")

    key_env, secret_env = "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"
    if server.credentials_env:
        key_env, secret_env = server.credentials_env
    key_env = server.access_key_env or key_env
    secret_env = server.secret_key_env or secret_env
    access = _env(key_env) or _conf_get(conf, "api.credentials.access_key")
    secret = _env(secret_env) or _conf_get(conf, "api.credentials.secret_key")
    if bool(access) != bool(secret):
        missing = secret_env if access else key_env
        raise ConfigError(
            f"ClearML credentials are half set: {missing} is empty while its pair is set; "
            "set both the access key and the secret key (or neither, for read-only unauthenticated probes)"
        )
    verify_raw = server.verify
    if verify_raw is None:
        verify_raw = _env("CLEARML_API_HOST_VERIFY_CERT")
    if verify_raw is None:
        verify_raw = _conf_get(conf, "api.verify_certificate")
    verify = True if verify_raw is None else _bool(verify_raw)
    timeout = parse_duration(server.timeout) if server.timeout is not None else 10.0
    return ServerSettings(
        name=name or "default",
        api_url=api,
        web_url=web,
        files_url=files,
        access_key=SecretStr(str(access)) if access else None,
        secret_key=SecretStr(str(secret)) if secret else None,
        verify=verify,
        timeout_s=timeout,
        retries=server.retries if server.retries is not None else 2,
        source="; ".join(sources),
    )
