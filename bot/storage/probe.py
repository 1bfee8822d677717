"""Probing configured storage targets: one entry point for S3, GCS, Azure and file-server URLs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.config import StorageTarget
from bot.storage import cloud, s3
from bot.storage import results as r
from bot.storage.credentials import (
    ClearmlConf,
    conf_path_for,
    load_clearml_conf,
    locate,
    resolve_azure,
    resolve_gcs,
    resolve_s3,
)
from bot.storage.fileserver import probe_fileserver
from bot.storage.results import ProbeResult

if TYPE_CHECKING:
    from bot.clearml.client import ClearMLClient
    from bot.config import ServerSettings, Settings, StorageTarget
    from bot.engine.snapshot import Snapshot


@dataclass
class StorageContext:
    """What storage code needs from a run: the API client (file server, token), the server settings,
    the configured storage targets and the user's clearml.conf."""

    client: ClearMLClient
    server: ServerSettings
    targets: list[StorageTarget] = field(default_factory=list)
    conf: ClearmlConf = field(default_factory=ClearmlConf)
    refused: list[str] = field(default_factory=list)  # playbook URLs outside the configuration: never contacted
    local_roots: list[str] = field(default_factory=list)  # more local folders artifact reads may use (local_copy)

    @classmethod
    def from_snapshot(cls, snap: Snapshot, extra_urls: Iterable[str] = ()) -> StorageContext:
        """The configured targets, plus those of `extra_urls` (a playbook's) that the configuration already
        covers; the others go to `refused`, so a playbook cannot point the bot at an arbitrary host."""

        settings: Settings | None = snap.settings
        targets = list(settings.storage_targets) if settings is not None else []
        conf = load_clearml_conf(conf_path_for(settings, snap.server))
        ctx = cls(snap.client, snap.server, targets, conf)
        known = {t.url for t in targets}
        for url in extra_urls:
            if url in known:
                continue
            if ctx.allows(url):
                ctx.targets.append(StorageTarget(url=url))
            else:
                ctx.refused.append(url)
        return ctx

    def allows(self, url: str) -> bool:
        """Whether a playbook may name `url`: under a configured storage target, on one of the ClearML server's own
        hosts (api, web, files), or (s3://) a bucket clearml.conf holds credentials for. Local paths never."""
        from bot.storage.credentials import _conf_s3_entry, match_target

        loc = locate(url, self.targets, self.conf)
        if loc.kind in ("file", "unknown"):
            return False
        if match_target(loc, self.targets, self.conf) is not None:
            return True
        if loc.kind == "http":
            own = {_netloc(u) for u in (self.server.api_url, self.server.web_url, self.server.files_url)}
            return _netloc(url) in own
        if loc.kind == "s3":
            return _conf_s3_entry(loc, loc.host, self.conf) is not None
        return False

    def secrets(self) -> list[str]:
        """Every secret value this context could put into a message: redact them all."""
        out = list(self.server.secrets())
        for target in self.targets:
            for var in (target.key_env, target.secret_env):
                if var and os.environ.get(var):
                    out.append(os.environ[var])
        s3conf: Any = self.conf.get("sdk.aws.s3", {}) or {}
        entries = [s3conf, *(s3conf.get("credentials") or [])] if isinstance(s3conf, dict) else []
        entries += list(self.conf.get("sdk.azure.storage.containers", []) or [])
        for entry in entries:
            if isinstance(entry, dict):
                out += [str(entry[k]) for k in ("key", "secret", "token", "account_key") if entry.get(k)]
        for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY"):
            if os.environ.get(var):
                out.append(os.environ[var])
        return [s for s in out if s]

    def is_files_url(self, url: str) -> bool:
        files = self.server.files_url.rstrip("/")
        return url.rstrip("/") == files or url.startswith(files + "/")


def _netloc(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


async def probe_target(
    ctx: StorageContext,
    target: StorageTarget,
    *,
    timeout_s: float = 10.0,
    payload_bytes: int = 1024,
) -> ProbeResult:
    """Probe one storage target (never raises; failures are classified in the result)."""
    loc = locate(target.url, ctx.targets, ctx.conf)
    prefix = target.probe_prefix or ".clearml-chatops-probe/"
    name = target.label
    try:
        if loc.kind == "s3":
            access = resolve_s3(target.url, ctx.targets, ctx.conf, target=target)
            return await asyncio.to_thread(
                s3.probe_sync, access, prefix=prefix, timeout_s=timeout_s, payload_bytes=payload_bytes, name=name
            )
        if loc.kind == "gcs":
            gaccess = resolve_gcs(target.url, ctx.conf)
            return await asyncio.to_thread(
                cloud.probe_gcs_sync,
                gaccess,
                prefix=prefix,
                timeout_s=timeout_s,
                payload_bytes=payload_bytes,
                name=name,
            )
        if loc.kind == "azure":
            aaccess = resolve_azure(target.url, ctx.targets, ctx.conf, target=target)
            return await asyncio.to_thread(
                cloud.probe_azure_sync,
                aaccess,
                prefix=prefix,
                timeout_s=timeout_s,
                payload_bytes=payload_bytes,
                name=name,
            )
        if loc.kind == "http":
            setting = (
                "the server's files URL (servers.<name>.files / CLEARML_FILES_HOST)"
                if ctx.is_files_url(target.url)
                else f"storage target `{name}` url"
            )
            return await probe_fileserver(
                ctx.client,
                target.url,
                prefix=prefix,
                timeout_s=timeout_s,
                payload_bytes=payload_bytes,
                name=name,
                setting=setting,
            )
    except Exception as exc:  # a bug or an unforeseen library error: classify, never crash the check
        result = ProbeResult(target=target.url, kind=loc.kind, name=name)
        return result.fail(r.UNEXPECTED, f"{type(exc).__name__}: {exc}", f"storage target `{name}`")
    result = ProbeResult(target=target.url, kind=loc.kind, name=name)
    return result.fail(
        r.CONFIG_ERROR,
        f"unsupported storage URL scheme in {target.url} (use s3://, gs://, azure:// or http(s)://)",
        f"storage target `{name}` url",
    )
