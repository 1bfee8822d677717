"""storage.* checks end to end: the simulator (API + file server) through the real HTTP client, and S3 through
real boto3 calls against moto's server on loopback (with IAM enforcement for the key/permission failures)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bot.config import Settings, StorageTarget
from bot.engine.findings import Finding, Subject
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import RunResult, run_playbooks
from tests.fakes.moto_server import _moto_server_process, free_port, iam_enforced, moto_server  # noqa: F401
from tests.helpers import server_settings

SCENARIOS = Path(__file__).resolve().parents[2] / "bot" / "sim" / "scenarios"
ZOO_DATA = SCENARIOS / "zoo-data.yaml"
HEALTHY_DATA = SCENARIOS / "healthy-data.yaml"


def run(sim: Any, *checks: tuple[str, dict[str, Any]], settings: Settings | None = None) -> RunResult:
    playbook = Playbook(name="test", checks=[CheckEntry(check=c, params=p) for c, p in checks])
    return asyncio.run(run_playbooks([playbook], settings or Settings(), server_settings(sim), deadline_s=45))


def of(result: RunResult, check: str) -> list[Finding]:
    return [f for f in result.findings if f.check == check]


def probe_files(sim: Any) -> list[str]:
    with sim.state.lock:
        return [k for k in sim.state.files if ".clearml-chatops-probe" in k]


# ------------------------------------------------------------------------------------------------ fileserver


def test_fileserver_roundtrip_is_ok_and_cleans_up(sim_factory: Any) -> None:
    sim = sim_factory(scenario=HEALTHY_DATA)
    result = run(sim, ("storage.fileserver", {}))
    [finding] = of(result, "storage.fileserver")
    assert finding.severity == "ok", finding
    assert finding.subject.kind == "storage" and finding.subject.id == sim.files_url
    steps = {s["step"]: s for s in finding.evidence["steps"]}
    assert list(steps) == ["ping", "write", "read", "delete"]
    assert all(s["ok"] and s["latency_ms"] >= 0 for s in steps.values())
    assert probe_files(sim) == []  # nothing left behind


def test_fileserver_delete_refused_is_a_warning(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)  # its file server refuses deletes
    [finding] = of(run(sim, ("storage.fileserver", {})), "storage.fileserver")
    assert finding.severity == "warning"
    assert finding.evidence["error"] == "delete_refused" and finding.evidence["failed_step"] == "delete"
    assert "delete" in finding.title.lower() and "HTTP 500" in finding.detail
    assert finding.evidence["probe_object"].startswith(sim.files_url)  # the user can remove it


def test_fileserver_upload_refused_and_unreachable_are_critical(sim_factory: Any) -> None:
    sim = sim_factory(scenario=HEALTHY_DATA)
    sim.state.faults.fail_uploads = True
    [refused] = of(run(sim, ("storage.fileserver", {})), "storage.fileserver")
    assert (refused.severity, refused.evidence["error"], refused.evidence["failed_step"]) == (
        "critical", "upload_refused", "write")
    sim.state.faults.fail_uploads = False
    sim.fileserver_enabled = False
    [down] = of(run(sim, ("storage.fileserver", {"timeout": "3s"})), "storage.fileserver")
    assert (down.severity, down.evidence["error"], down.evidence["failed_step"]) == (
        "critical", "endpoint_unreachable", "ping")
    assert "files" in down.remediation.lower() or "CLEARML_FILES_HOST" in down.remediation


def test_fileserver_without_a_valid_token(sim_factory: Any) -> None:
    sim = sim_factory(scenario=HEALTHY_DATA)
    server = server_settings(sim).model_copy(update={"secret_key": None, "access_key": None})
    playbook = Playbook(name="t", checks=[CheckEntry(check="storage.fileserver")])
    result = asyncio.run(run_playbooks([playbook], Settings(), server))
    [finding] = of(result, "storage.fileserver")
    assert finding.severity == "critical" and finding.evidence["error"] == "unauthorized"
    assert "token" in finding.title.lower()


# ------------------------------------------------------------------------------------------------ storage.probe


@pytest.fixture
def s3(moto_server: str) -> Iterator[tuple[str, Any]]:  # noqa: F811 (the imported fixture)
    client = boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-1")
    client.create_bucket(Bucket="ml-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    yield moto_server, client


def iam_user(url: str, name: str, actions: list[str], resources: list[str] | None = None) -> tuple[str, str]:
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1")
    iam.create_user(UserName=name)
    resources = resources or ["arn:aws:s3:::ml-artifacts", "arn:aws:s3:::ml-artifacts/*"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]}
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def target(url: str, endpoint: str, name: str, env: str, **extra: Any) -> StorageTarget:
    return StorageTarget(url=url, endpoint_url=endpoint, name=name, key_env=f"{env}_KEY", secret_env=f"{env}_SECRET",
                         region="eu-west-1", **extra)


def test_probe_writes_reads_and_deletes_in_s3(sim_factory: Any, s3: tuple[str, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url, client = s3
    monkeypatch.setenv("ML_KEY", "testing")
    monkeypatch.setenv("ML_SECRET", "testing")
    host = url.split("://", 1)[1]
    settings = Settings(storage=[
        target("s3://ml-artifacts/probe", url, "aws-style", "ML"),
        # MinIO style: the endpoint host is part of the URL, plain http via secure: false
        StorageTarget(url=f"s3://{host}/ml-artifacts/minio", name="minio-style", key_env="ML_KEY",
                      secret_env="ML_SECRET", secure=False),
    ])
    sim = sim_factory(scenario=HEALTHY_DATA)
    findings = of(run(sim, ("storage.probe", {}), settings=settings), "storage.probe")
    assert {f.subject.name: f.severity for f in findings} == {"aws-style": "ok", "minio-style": "ok"}
    for finding in findings:
        assert [s["step"] for s in finding.evidence["steps"]] == ["credentials", "bucket", "write", "read", "delete"]
        assert "ML_KEY" in finding.evidence["credentials_source"]
    assert client.list_objects_v2(Bucket="ml-artifacts").get("KeyCount", 0) == 0  # probe objects deleted


def test_probe_classifies_each_failure_and_names_the_setting(sim_factory: Any, s3: tuple[str, Any],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    url, client = s3
    no_delete = iam_user(url, "writer", ["s3:ListBucket", "s3:GetObject", "s3:PutObject"])
    admin = iam_user(url, "admin", ["s3:*"], ["*"])
    for env, (key, secret) in {
        "NODEL": no_delete, "ADMIN": admin, "BADKEY": ("AKIAIOSFODNN7EXAMPLE", admin[1]),
        "BADSECRET": (admin[0], "not-the-secret-key-0123456789"),
    }.items():
        monkeypatch.setenv(f"{env}_KEY", key)
        monkeypatch.setenv(f"{env}_SECRET", secret)
    settings = Settings(storage=[
        target("s3://ml-artifacts/a", url, "no-delete", "NODEL"),
        target("s3://ml-artifacts/b", url, "bad-key", "BADKEY"),
        target("s3://ml-artifacts/c", url, "bad-secret", "BADSECRET"),
        target("s3://no-such-bucket/d", url, "typo-bucket", "ADMIN"),
        target("s3://ml-artifacts/e", url, "unset-env", "UNSET"),
        target("s3://ml-artifacts/f", f"http://127.0.0.1:{free_port()}", "dead-endpoint", "ADMIN"),
        StorageTarget(url="gs://ml-gcs-bucket/x", name="gcs"),
    ])
    sim = sim_factory(scenario=HEALTHY_DATA)
    with iam_enforced():
        result = run(sim, ("storage.probe", {"timeout": "3s"}), settings=settings)
    findings = {f.subject.name: f for f in of(result, "storage.probe")}
    expected = {
        "no-delete": ("critical", "access_denied_delete", "delete", "s3:DeleteObject"),
        "bad-key": ("critical", "invalid_access_key", "bucket", "BADKEY_KEY"),
        "bad-secret": ("critical", "signature_mismatch", "bucket", "BADSECRET_SECRET"),
        "typo-bucket": ("critical", "no_such_bucket", "bucket", "no-such-bucket"),
        "unset-env": ("critical", "no_credentials", "credentials", "UNSET_KEY"),
        "dead-endpoint": ("critical", "endpoint_unreachable", "bucket", "endpoint_url"),
        "gcs": ("info", "missing_library", "credentials", "google-cloud-storage"),
    }
    for name, (severity, error, step, setting) in expected.items():
        finding = findings[name]
        assert (finding.severity, finding.evidence["error"], finding.evidence["failed_step"]) == (
            severity, error, step), (name, finding)
        assert setting in finding.evidence["setting"] + finding.remediation, (name, finding)
    # the denied delete left the probe object: the finding says where, and it is really there
    leftover = findings["no-delete"].evidence["probe_object"]
    assert leftover.startswith("s3://ml-artifacts/a/.clearml-chatops-probe/")
    assert client.head_object(Bucket="ml-artifacts", Key=leftover.split("ml-artifacts/", 1)[1])
    # no secret ends up in any finding
    dump = json.dumps([f.model_dump(mode="json") for f in result.findings])
    for secret in (no_delete[1], admin[1], "not-the-secret-key-0123456789"):
        assert secret not in dump


def test_probe_file_server_target_relates_to_storage_fileserver(sim_factory: Any) -> None:
    sim = sim_factory(scenario=HEALTHY_DATA)
    settings = Settings(storage=[StorageTarget(url=f"{sim.files_url}/team-area", name="files")])
    result = run(sim, ("storage.probe", {}), ("storage.fileserver", {}), settings=settings)
    [probe] = of(result, "storage.probe")
    [files] = of(result, "storage.fileserver")
    assert probe.severity == "ok" and probe.evidence["kind"] == "http"
    assert probe.related == [Subject(kind="storage", id=files.subject.id, name="ClearML file server")]
    assert probe_files(sim) == []


def test_probe_discovers_buckets_tasks_write_to(sim_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    sim = sim_factory(scenario=ZOO_DATA)
    # off by default: the bot contacts only hosts its config names
    assert [f.severity for f in of(run(sim, ("storage.probe", {})), "storage.probe")] == ["info"]
    [finding] = of(run(sim, ("storage.probe", {"discover": True})), "storage.probe")
    assert finding.subject.id == "s3://127.0.0.1:59000/ml-artifacts"
    assert finding.severity == "warning" and finding.evidence["error"] == "no_credentials"
    assert finding.evidence["discovered_from"][0]["name"] == "train-yolov8l-traffic"
    assert "discover: false" in finding.remediation
    # nothing configured and nothing discovered: a note, not a problem
    healthy = of(run(sim_factory(scenario=HEALTHY_DATA), ("storage.probe", {})), "storage.probe")
    assert [f.severity for f in healthy] == ["info"]


# ------------------------------------------------------------------------------------------------ destinations


def test_destinations_flags_local_and_internal_hosts(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    findings = {f.subject.name: f for f in of(run(sim, ("storage.destinations", {})), "storage.destinations")}
    assert set(findings) == {"train-depth-anything-v2", "eval-map-segmentation", "train-yolov8l-traffic"}
    reasons = {name: {u["reason"] for u in f.evidence["uris"]} for name, f in findings.items()}
    assert reasons == {"train-depth-anything-v2": {"loopback"}, "eval-map-segmentation": {"internal"},
                       "train-yolov8l-traffic": {"loopback"}}
    depth = findings["train-depth-anything-v2"]
    assert depth.severity == "warning"
    assert {u["where"] for u in depth.evidence["uris"]} == {"output.destination", "artifact:depth-samples"}
    assert "api.files_server" in depth.remediation and depth.links[0].startswith(sim.web_url)
    assert all(f.subject.kind == "task" for f in findings.values())


def test_destinations_unknown_hosts_only_with_configured_targets(sim_factory: Any) -> None:
    scenario = {
        "name": "dest",
        "projects": [{"name": "p"}],
        "tasks": [
            {"name": "to-team-bucket", "project": "p", "status": "completed", "status_changed": "-1h",
             "output": {"destination": "s3://team-bucket/runs"}},
            {"name": "to-random-bucket", "project": "p", "status": "completed", "status_changed": "-1h",
             "output": {"destination": "s3://someones-bucket/runs"}},
            {"name": "to-files", "project": "p", "status": "completed", "status_changed": "-1h",
             "output": {"destination": "{files_url}"}},
        ],
    }
    sim = sim_factory(scenario=scenario)
    assert of(run(sim, ("storage.destinations", {})), "storage.destinations") == []  # no targets: cannot judge
    settings = Settings(storage=["s3://team-bucket"])
    flagged = of(run(sim, ("storage.destinations", {}), settings=settings), "storage.destinations")
    assert [(f.subject.name, f.evidence["uris"][0]["reason"]) for f in flagged] == [
        ("to-random-bucket", "unknown_host")]
    allowed = of(run(sim, ("storage.destinations", {"allowed": ["s3://someones-*"]}), settings=settings),
                 "storage.destinations")
    assert allowed == []


def test_destinations_quiet_on_healthy(sim_factory: Any) -> None:
    sim = sim_factory(scenario=HEALTHY_DATA)
    assert of(run(sim, ("storage.destinations", {})), "storage.destinations") == []


# ------------------------------------------------------------------------------------------------ upload failures


def test_upload_failures_show_redacted_lines_and_point_at_the_storage(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    result = run(sim, ("storage.upload_failures", {}), ("storage.probe", {"discover": True}))
    findings = {f.subject.name: f for f in of(result, "storage.upload_failures")}
    assert set(findings) == {"train-yolov8l-traffic", "export-onnx-resnet50"}
    export = findings["export-onnx-resnet50"]
    assert export.severity == "warning" and export.evidence["error_classes"][0] == "access_denied_write"
    assert any("AccessDenied" in line for line in export.evidence["lines"])
    assert "AKIAZ7QWERTY1234ABCD" not in json.dumps(export.model_dump(mode="json"))  # redacted
    assert export.related == [Subject(kind="storage", id="s3://ml-artifacts-prod")]
    assert export.actions == ["requeue", "clone"]
    traffic = findings["train-yolov8l-traffic"]
    assert traffic.evidence["error_classes"][0] == "endpoint_unreachable"
    # the same storage subject the probe reports on: an incident can group them
    [probe] = of(result, "storage.probe")
    assert Subject(kind="storage", id=probe.subject.id) in traffic.related


def test_upload_failures_quiet_on_healthy_and_error_when_logs_unreadable(sim_factory: Any) -> None:
    assert of(run(sim_factory(scenario=HEALTHY_DATA), ("storage.upload_failures", {})),
              "storage.upload_failures") == []
    sim = sim_factory(scenario=ZOO_DATA)
    sim.set_fault("events.get_task_log", status=403, subcode=20, message="Forbidden (not allowed for role)")
    [finding] = of(run(sim, ("storage.upload_failures", {})), "storage.upload_failures")
    assert finding.severity == "error" and "events.get_task_log" in finding.detail
