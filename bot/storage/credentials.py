"""Where storage credentials come from: the bot's storage targets, then clearml.conf, then the environment.

The order mirrors what a user expects from the clearml SDK: an explicit storage target in the bot's config
wins (its `key_env` / `secret_env` name environment variables, so the config file holds no secret), then
the `sdk.aws.s3` / `sdk.google.storage` / `sdk.azure.storage` sections of clearml.conf (read with clearml's
own loader, not a hand-written parser), then the cloud SDKs' standard environment variables / chains.
Every resolution says where it found the credentials and which setting to change when they are wrong,
so a finding can name the fix; secrets are only ever held in fields excluded from repr.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.storage.urls import StorageLocation, parse_storage_url

if TYPE_CHECKING:
    from bot.config import ServerSettings, Settings, StorageTarget


# ------------------------------------------------------------------------------------------------
# clearml.conf


@dataclass
class ClearmlConf:
    """A parsed clearml.conf as plain dicts (empty when there is none); `error` when it did not parse."""

    path: str | None = None
    tree: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.tree
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def where(self, setting: str) -> str:
        return f"{setting} in {self.path}" if self.path else setting


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def load_clearml_conf(path: str | None = None) -> ClearmlConf:
    """clearml.conf at `path`, else $CLEARML_CONFIG_FILE, else ~/clearml.conf (none -> empty)."""
    candidates = [path] if path else [os.environ.get("CLEARML_CONFIG_FILE"), "~/clearml.conf"]
    for candidate in candidates:
        if not candidate:
            continue
        file = Path(os.path.expanduser(candidate))
        if not file.is_file():
            continue
        try:
            from clearml.backend_config.config import ConfigFactory  # type: ignore[import-untyped]

            tree = ConfigFactory.parse_file(str(file))
        except Exception as exc:  # a syntax error in the user's file: report it, never crash the probe
            return ClearmlConf(str(file), {}, f"{file} could not be parsed: {type(exc).__name__}: {exc}")
        return ClearmlConf(str(file), _plain(tree) or {})
    return ClearmlConf()


def conf_path_for(settings: Settings | None, server: ServerSettings | None) -> str | None:
    """The clearml.conf a server's config names (`servers.<name>.config_file`), if any."""
    if settings is None or server is None:
        return None
    cfg = settings.servers.get(server.name)
    return cfg.config_file if cfg is not None else None


# ------------------------------------------------------------------------------------------------
# Matching a URL to a configured target


def _host_of(url: str | None) -> str | None:
    if not url:
        return None
    text = url.split("://", 1)[-1]
    return text.split("/", 1)[0].lower() or None


def known_s3_hosts(targets: list[StorageTarget], conf: ClearmlConf) -> list[str]:
    """Hosts that may appear as the first component of an s3:// URL (MinIO style)."""
    hosts = [h for t in targets if (h := _host_of(t.endpoint_url))]
    for entry in conf.get("sdk.aws.s3.credentials", []) or []:
        if isinstance(entry, Mapping) and entry.get("host"):
            hosts.append(str(entry["host"]).lower())
    return hosts


def locate(url: str, targets: list[StorageTarget], conf: ClearmlConf) -> StorageLocation:
    return parse_storage_url(url, known_s3_hosts(targets, conf))


def match_target(location: StorageLocation, targets: list[StorageTarget], conf: ClearmlConf) -> StorageTarget | None:
    """The configured storage target that covers `location` (same kind, host and bucket; among several, the
    one whose path is the longest prefix of the location's key)."""
    hosts = known_s3_hosts(targets, conf)
    best: tuple[int, StorageTarget] | None = None
    for target in targets:
        tloc = parse_storage_url(target.url, hosts)
        if tloc.kind != location.kind:
            continue
        if location.kind == "http":
            if not (tloc.host and location.host and tloc.host.lower() == location.host.lower()):
                continue
        else:
            if tloc.bucket != location.bucket:
                continue
            endpoint_host = _host_of(target.endpoint_url)
            if location.host is None:
                # s3://bucket/...: the target's URL names no host either (AWS, or an endpoint_url target)
                if tloc.host is not None:
                    continue
            elif location.host.lower() not in {(tloc.host or "").lower(), endpoint_host or ""}:
                continue
        prefix = tloc.key.strip("/")
        key = location.key.strip("/")
        if prefix and not (key == prefix or key.startswith(prefix + "/")):
            continue
        if best is None or len(prefix) > best[0]:
            best = (len(prefix), target)
    return best[1] if best else None


# ------------------------------------------------------------------------------------------------
# S3


@dataclass
class S3Access:
    """Everything needed to talk to one S3 bucket, plus where each part came from."""

    location: StorageLocation
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint_url: str | None = None
    verify: bool | str = True
    use_chain: bool = False  # no explicit keys: let boto3's chain (env, profile, instance role) look
    source: str = ""  # where the credentials came from (no secret values)
    key_setting: str = "sdk.aws.s3.key"
    secret_setting: str = "sdk.aws.s3.secret"
    region_setting: str = "sdk.aws.s3.region"
    endpoint_setting: str = "the storage target's endpoint_url"
    verify_setting: str = "sdk.aws.s3.verify"
    secure_setting: str = "sdk.aws.s3.credentials[].secure"
    target_name: str = ""
    conf_error: str | None = None

    def secrets(self) -> list[str]:
        return [s for s in (self.key, self.secret, self.token) if s]

    @property
    def has_keys(self) -> bool:
        return bool(self.key and self.secret)

    @property
    def partial(self) -> bool:
        return bool(self.key) != bool(self.secret)


def _truthy(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _verify(value: Any) -> bool | str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    return text  # a CA bundle path


def _conf_s3_entry(location: StorageLocation, host: str | None, conf: ClearmlConf) -> tuple[int, dict[str, Any]] | None:
    """The clearml.conf `sdk.aws.s3.credentials` entry for this bucket (and host), like the SDK picks it."""
    entries = conf.get("sdk.aws.s3.credentials", []) or []
    best: tuple[int, dict[str, Any]] | None = None
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            continue
        entry_host = str(entry.get("host") or "").lower() or None
        # the SDK also accepts host-only entries (any bucket on that endpoint)
        host_only = bool(entry_host and host and entry_host == host.lower() and not entry.get("bucket"))
        if str(entry.get("bucket") or "") != location.bucket and not host_only:
            continue
        if (entry_host or None) != (host.lower() if host else None):
            continue
        subdir = str(entry.get("subdir") or "").strip("/")
        if subdir and not location.key.startswith(subdir):
            continue
        if best is None or len(subdir) > len(str(best[1].get("subdir") or "")):
            best = (index, dict(entry))
    return best


def resolve_s3(
    url: str,
    targets: list[StorageTarget] | None = None,
    conf: ClearmlConf | None = None,
    env: Mapping[str, str] | None = None,
    *,
    target: StorageTarget | None = None,
) -> S3Access:
    """Credentials, region, endpoint and TLS settings for the S3 URL `url` (never raises). `target`: the
    storage target being probed (else the configured target covering `url`, if any)."""
    targets = list(targets or [])
    conf = conf or ClearmlConf()
    env = os.environ if env is None else env
    location = locate(url, targets, conf)
    if target is None:
        target = match_target(location, targets, conf)
    host = location.host or _host_of(target.endpoint_url if target else None)
    access = S3Access(location=location, conf_error=conf.error)
    label = target.label if target else ""
    access.target_name = label
    conf_entry = _conf_s3_entry(location, location.host, conf)
    entry = conf_entry[1] if conf_entry else {}
    entry_ref = f"sdk.aws.s3.credentials[{conf_entry[0]}] (bucket {location.bucket})" if conf_entry else ""

    if target is not None and (target.key_env or target.secret_env):
        key_env, secret_env = target.key_env or "", target.secret_env or ""
        access.key = env.get(key_env) or None if key_env else None
        access.secret = env.get(secret_env) or None if secret_env else None
        access.source = f"environment variables {key_env or '?'} / {secret_env or '?'} (storage target `{label}`)"
        access.key_setting = f"{key_env or 'key_env'} (storage target `{label}` key_env)"
        access.secret_setting = f"{secret_env or 'secret_env'} (storage target `{label}` secret_env)"
    elif entry.get("key") or entry.get("secret"):
        access.key, access.secret = entry.get("key") or None, entry.get("secret") or None
        access.token = entry.get("token") or None
        access.source = conf.where(entry_ref)
        access.key_setting = conf.where(f"{entry_ref}.key")
        access.secret_setting = conf.where(f"{entry_ref}.secret")
    elif location.host is None and (conf.get("sdk.aws.s3.key") or conf.get("sdk.aws.s3.secret")):
        # the SDK's default credentials apply to AWS buckets without their own entry (not to MinIO hosts)
        access.key, access.secret = conf.get("sdk.aws.s3.key") or None, conf.get("sdk.aws.s3.secret") or None
        access.token = conf.get("sdk.aws.s3.token") or None
        access.source = conf.where("sdk.aws.s3.key / sdk.aws.s3.secret")
        access.key_setting = conf.where("sdk.aws.s3.key")
        access.secret_setting = conf.where("sdk.aws.s3.secret")
    elif env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_SECRET_ACCESS_KEY"):
        access.key = env.get("AWS_ACCESS_KEY_ID") or None
        access.secret = env.get("AWS_SECRET_ACCESS_KEY") or None
        access.token = env.get("AWS_SESSION_TOKEN") or None
        access.source = "environment variables AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        access.key_setting, access.secret_setting = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
    else:
        # Nothing explicit: boto3 may still find a profile or an instance/IRSA role (use_credentials_chain).
        access.use_chain = True
        access.source = "boto3 default chain (AWS profile / instance role)"
        where = (
            f"storage target `{label}` key_env/secret_env"
            if target
            else (f"{entry_ref}.key/.secret" if entry_ref else "sdk.aws.s3.credentials (bucket, key, secret)")
        )
        access.key_setting = access.secret_setting = conf.where(where) if not target else where

    # region: target, the bucket's entry, clearml.conf default, environment
    if target is not None and target.region:
        access.region, access.region_setting = target.region, f"storage target `{label}` region"
    elif entry.get("region"):
        access.region, access.region_setting = str(entry["region"]), conf.where(f"{entry_ref}.region")
    elif conf.get("sdk.aws.s3.region"):
        access.region, access.region_setting = str(conf.get("sdk.aws.s3.region")), conf.where("sdk.aws.s3.region")
    elif env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"):
        access.region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")
        access.region_setting = "AWS_DEFAULT_REGION"
    else:
        access.region_setting = f"storage target `{label}` region" if target else conf.where("sdk.aws.s3.region")

    # endpoint: explicit endpoint_url, else the MinIO host from the URL with http(s) per `secure`
    secure = target.secure if target is not None and target.secure is not None else _truthy(entry.get("secure"))
    if target is not None and target.secure is not None:
        access.secure_setting = f"storage target `{label}` secure"
    elif entry_ref:
        access.secure_setting = conf.where(f"{entry_ref}.secure")
    if target is not None and target.endpoint_url:
        access.endpoint_url = target.endpoint_url.rstrip("/")
        access.endpoint_setting = f"storage target `{label}` endpoint_url"
    elif location.host:
        scheme = "http" if secure is False else "https"
        access.endpoint_url = f"{scheme}://{location.host}"
        access.endpoint_setting = (
            conf.where(f"{entry_ref}.host") if entry_ref else f"the host in the URL ({location.host})"
        )
    elif host:
        access.endpoint_url = f"{'http' if secure is False else 'https'}://{host}"

    verify = None
    if target is not None and target.verify is not None:
        verify, access.verify_setting = _verify(target.verify), f"storage target `{label}` verify"
    elif entry.get("verify") is not None:
        verify, access.verify_setting = _verify(entry.get("verify")), conf.where(f"{entry_ref}.verify")
    elif conf.get("sdk.aws.s3.verify") is not None:
        verify, access.verify_setting = _verify(conf.get("sdk.aws.s3.verify")), conf.where("sdk.aws.s3.verify")
    access.verify = True if verify is None else verify
    return access


# ------------------------------------------------------------------------------------------------
# GCS and Azure


@dataclass
class GCSAccess:
    location: StorageLocation
    project: str | None = None
    credentials_json: str | None = None  # a path to a service-account JSON file
    source: str = ""
    setting: str = "sdk.google.storage.credentials_json"


def resolve_gcs(url: str, conf: ClearmlConf | None = None, env: Mapping[str, str] | None = None) -> GCSAccess:
    conf = conf or ClearmlConf()
    env = os.environ if env is None else env
    location = parse_storage_url(url)
    access = GCSAccess(location=location)
    for index, entry in enumerate(conf.get("sdk.google.storage.credentials", []) or []):
        if isinstance(entry, Mapping) and str(entry.get("bucket") or "") == location.bucket:
            access.project = entry.get("project") or conf.get("sdk.google.storage.project")
            access.credentials_json = entry.get("credentials_json") or None
            access.setting = conf.where(f"sdk.google.storage.credentials[{index}].credentials_json")
            access.source = access.setting
            return access
    if conf.get("sdk.google.storage.credentials_json"):
        access.credentials_json = conf.get("sdk.google.storage.credentials_json")
        access.project = conf.get("sdk.google.storage.project")
        access.setting = access.source = conf.where("sdk.google.storage.credentials_json")
    elif env.get("GOOGLE_APPLICATION_CREDENTIALS"):
        access.credentials_json = env["GOOGLE_APPLICATION_CREDENTIALS"]
        access.setting = access.source = "GOOGLE_APPLICATION_CREDENTIALS"
    else:
        access.source = "Google application default credentials"
    return access


@dataclass
class AzureAccess:
    location: StorageLocation
    account_name: str | None = None
    account_key: str | None = field(default=None, repr=False)
    source: str = ""
    setting: str = "sdk.azure.storage.containers[].account_key"

    def secrets(self) -> list[str]:
        return [self.account_key] if self.account_key else []


def resolve_azure(
    url: str,
    targets: list[StorageTarget] | None = None,
    conf: ClearmlConf | None = None,
    env: Mapping[str, str] | None = None,
    *,
    target: StorageTarget | None = None,
) -> AzureAccess:
    conf = conf or ClearmlConf()
    env = os.environ if env is None else env
    location = parse_storage_url(url)
    account = location.hostname.split(".", 1)[0] if location.hostname else None
    access = AzureAccess(location=location, account_name=account)
    if target is None:
        target = match_target(location, list(targets or []), conf)
    if target is not None and target.secret_env:
        access.account_key = env.get(target.secret_env) or None
        access.account_name = (env.get(target.key_env) if target.key_env else None) or account
        access.source = f"environment variable {target.secret_env} (storage target `{target.label}`)"
        access.setting = f"{target.secret_env} (storage target `{target.label}` secret_env)"
        return access
    for index, entry in enumerate(conf.get("sdk.azure.storage.containers", []) or []):
        if not isinstance(entry, Mapping):
            continue
        if str(entry.get("container_name") or "") == location.bucket and (
            not account or str(entry.get("account_name") or "") == account
        ):
            access.account_name = entry.get("account_name") or account
            access.account_key = entry.get("account_key") or None
            access.setting = conf.where(f"sdk.azure.storage.containers[{index}].account_key")
            access.source = access.setting
            return access
    if env.get("AZURE_STORAGE_KEY"):
        access.account_name = env.get("AZURE_STORAGE_ACCOUNT") or account
        access.account_key = env["AZURE_STORAGE_KEY"]
        access.source = access.setting = "AZURE_STORAGE_ACCOUNT / AZURE_STORAGE_KEY"
    return access
