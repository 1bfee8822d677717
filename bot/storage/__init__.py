"""Storage access for the checks: probing storage targets and reading dataset artifacts.

Public API:
- `StorageContext` (probe.py): client + server + storage targets + clearml.conf; `from_snapshot(snap)`.
- `probe_target(ctx, target, timeout_s=, payload_bytes=) -> ProbeResult`: credentials, bucket,
  write -> read -> delete with per-step latency and a classified error (`results.ERROR_CLASSES`).
- `probe_fileserver(client, base_url=None, ...) -> ProbeResult`: the ClearML file server protocol.
- `resolve_s3(url, targets, conf) -> S3Access`, `resolve_gcs`, `resolve_azure`, `load_clearml_conf(path)`:
  where credentials come from and which setting to fix.
- `parse_storage_url(url)`, `is_loopback_host`, `is_internal_name` (urls.py).
- datasets.py: `read_state(ctx, dataset_task) -> StateRead`, `plan_chunks`, `ArtifactReader`,
  `verify_chunks(...) -> VerifyReport`, `set_progress_hook(callback)` for a terminal progress bar.
"""

from bot.storage.credentials import (
    AzureAccess,
    ClearmlConf,
    GCSAccess,
    S3Access,
    conf_path_for,
    load_clearml_conf,
    resolve_azure,
    resolve_gcs,
    resolve_s3,
)
from bot.storage.datasets import (
    ArtifactReader,
    DatasetState,
    Progress,
    StateRead,
    VerifyReport,
    plan_chunks,
    read_state,
    set_progress_hook,
    verify_chunks,
)
from bot.storage.fileserver import probe_fileserver
from bot.storage.probe import StorageContext, probe_target
from bot.storage.results import ERROR_CLASSES, ProbeResult, ProbeStep
from bot.storage.urls import StorageLocation, is_internal_name, is_loopback_host, parse_storage_url

__all__ = [
    "ERROR_CLASSES",
    "ArtifactReader",
    "AzureAccess",
    "ClearmlConf",
    "DatasetState",
    "GCSAccess",
    "ProbeResult",
    "ProbeStep",
    "Progress",
    "S3Access",
    "StateRead",
    "StorageContext",
    "StorageLocation",
    "VerifyReport",
    "conf_path_for",
    "is_internal_name",
    "is_loopback_host",
    "load_clearml_conf",
    "parse_storage_url",
    "plan_chunks",
    "probe_fileserver",
    "probe_target",
    "read_state",
    "resolve_azure",
    "resolve_gcs",
    "resolve_s3",
    "set_progress_hook",
    "verify_chunks",
]
