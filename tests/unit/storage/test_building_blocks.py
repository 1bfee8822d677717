"""Unit tests of the storage and dataset building blocks: URL parsing, credential resolution, S3 error
classification, dataset state and hashing. (Reading job logs for storage errors, requirements, failure causes and
run comparison are in tests/unit/diagnosis/test_building_blocks.py.)

The checks themselves are tested end to end over the simulator in tests/integration/test_checks_*.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, SSLError

from bot.config import StorageTarget
from bot.storage import results as r
from bot.storage.credentials import ClearmlConf, load_clearml_conf, resolve_azure, resolve_gcs, resolve_s3
from bot.storage.datasets import (
    ArtifactReader,
    ChunkPlan,
    DatasetState,
    FileEntry,
    Progress,
    plan_chunks,
    set_progress_hook,
    verify_chunks,
)
from bot.storage.s3 import classify
from bot.storage.urls import is_internal_name, is_loopback_host, parse_storage_url

# ------------------------------------------------------------------------------------------------ URLs


def test_s3_urls_aws_and_minio_forms() -> None:
    aws = parse_storage_url("s3://ml-artifacts/vision/run1")
    assert (aws.kind, aws.host, aws.bucket, aws.key, aws.root) == ("s3", None, "ml-artifacts", "vision/run1",
                                                                    "s3://ml-artifacts")
    minio = parse_storage_url("s3://minio.lan:9000/clearml/models")
    assert (minio.host, minio.bucket, minio.key, minio.root) == ("minio.lan:9000", "clearml", "models",
                                                                  "s3://minio.lan:9000/clearml")
    # a host without a port is recognised when the configuration names it
    named = parse_storage_url("s3://minio/clearml/x", known_hosts=["http://minio"])
    assert (named.host, named.bucket) == ("minio", "clearml")


def test_other_schemes() -> None:
    assert parse_storage_url("gs://bucket/p").kind == "gcs"
    azure = parse_storage_url("azure://acct.blob.core.windows.net/container/p")
    assert (azure.kind, azure.bucket, azure.hostname) == ("azure", "container", "acct.blob.core.windows.net")
    http = parse_storage_url("http://files.example.com:8081/a/b")
    assert (http.kind, http.host, http.key, http.root) == ("http", "files.example.com:8081", "a/b",
                                                           "http://files.example.com:8081")
    assert parse_storage_url("/mnt/data/out").kind == "file"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.3.2.1", "::1", "0.0.0.0", "app.localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


def test_internal_names() -> None:
    assert is_internal_name("fileserver") and is_internal_name("clearml-fileserver") and is_internal_name("minio")
    assert not is_internal_name("files.example.com") and not is_internal_name("10.0.0.5")
    assert not is_internal_name("localhost")  # loopback is its own category


# ------------------------------------------------------------------------------------------------ credentials


def write_conf(tmp_path: Path, text: str) -> ClearmlConf:
    path = tmp_path / "clearml.conf"
    path.write_text(text)
    conf = load_clearml_conf(str(path))
    assert conf.error is None
    return conf


CONF = """
sdk {
  aws {
    s3 {
      key: "DEFAULTKEY"
      secret: "DEFAULTSECRET"
      region: "us-east-2"
      credentials: [
        { bucket: "team-bucket", key: "TEAMKEY", secret: "TEAMSECRET", region: "eu-central-1" }
        { host: "minio.lan:9000", bucket: "clearml", key: "MINIOKEY", secret: "MINIOSECRET", secure: false }
      ]
    }
  }
  google.storage { credentials_json: "/etc/gcs.json", project: "p1" }
  azure.storage { containers: [ { account_name: "acct", account_key: "AZKEY", container_name: "c1" } ] }
}
"""


def test_clearml_conf_bucket_entry_wins_over_defaults(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, CONF)
    team = resolve_s3("s3://team-bucket/x", [], conf, env={})
    assert (team.key, team.secret, team.region) == ("TEAMKEY", "TEAMSECRET", "eu-central-1")
    assert "sdk.aws.s3.credentials[0]" in team.key_setting and str(tmp_path) in team.key_setting
    other = resolve_s3("s3://other-bucket/x", [], conf, env={})
    assert (other.key, other.region) == ("DEFAULTKEY", "us-east-2")
    assert other.key_setting.startswith("sdk.aws.s3.key")


def test_minio_entry_gives_http_endpoint(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, CONF)
    minio = resolve_s3("s3://minio.lan:9000/clearml/models", [], conf, env={})
    assert (minio.key, minio.endpoint_url) == ("MINIOKEY", "http://minio.lan:9000")
    assert minio.location.bucket == "clearml"
    # the default keys do not apply to another MinIO host: nothing explicit, boto3's chain is the fallback
    unknown = resolve_s3("s3://other.lan:9000/b", [], conf, env={})
    assert unknown.use_chain and unknown.key is None and unknown.endpoint_url == "https://other.lan:9000"


def test_storage_target_env_vars_win(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, CONF)
    target = StorageTarget(url="s3://team-bucket/probe", key_env="K_VAR", secret_env="S_VAR", region="ap-south-1",
                           endpoint_url="http://127.0.0.1:5000", name="team")
    access = resolve_s3("s3://team-bucket/probe", [target], conf, env={"K_VAR": "K1", "S_VAR": "S1"})
    assert (access.key, access.secret, access.region, access.endpoint_url) == ("K1", "S1", "ap-south-1",
                                                                               "http://127.0.0.1:5000")
    assert "K_VAR" in access.key_setting and "team" in access.key_setting
    assert "K1" not in repr(access) and "S1" not in repr(access)  # secrets never in repr
    unset = resolve_s3("s3://team-bucket/probe", [target], conf, env={"K_VAR": "K1"})
    assert unset.partial


def test_environment_fallback_and_nothing() -> None:
    env = resolve_s3("s3://b/x", [], ClearmlConf(), env={"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "B"})
    assert (env.key, env.key_setting) == ("A", "AWS_ACCESS_KEY_ID")
    none = resolve_s3("s3://b/x", [], ClearmlConf(), env={})
    assert none.use_chain and not none.has_keys


def test_gcs_and_azure_from_conf(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, CONF)
    gcs = resolve_gcs("gs://any/x", conf, env={})
    assert (gcs.credentials_json, gcs.project) == ("/etc/gcs.json", "p1")
    azure = resolve_azure("azure://acct.blob.core.windows.net/c1/x", [], conf, env={})
    assert (azure.account_name, azure.account_key) == ("acct", "AZKEY")


def test_broken_clearml_conf_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "clearml.conf"
    path.write_text("sdk { aws { s3 { key: ")
    conf = load_clearml_conf(str(path))
    assert conf.error and str(path) in conf.error


# ------------------------------------------------------------------------------------------------ S3 errors


def client_error(code: str, status: int, op: str = "PutObject", headers: dict[str, str] | None = None) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status,
                                                                        "HTTPHeaders": headers or {}}},
        op,
    )


@pytest.mark.parametrize(
    ("exc", "step", "expected", "setting_part"),
    [
        (client_error("InvalidAccessKeyId", 403), "bucket", r.INVALID_ACCESS_KEY, "K_VAR"),
        (client_error("SignatureDoesNotMatch", 403), "write", r.SIGNATURE_MISMATCH, "S_VAR"),
        (client_error("AuthorizationHeaderMalformed", 400, headers={"x-amz-bucket-region": "eu-west-1"}), "bucket",
         r.REGION_MISMATCH, "region"),
        (client_error("301", 301, "HeadBucket", {"x-amz-bucket-region": "eu-west-1"}), "bucket", r.REGION_MISMATCH,
         "region"),
        (client_error("AccessDenied", 403), "write", r.ACCESS_DENIED_WRITE, "s3:PutObject"),
        (client_error("AccessDenied", 403, "DeleteObject"), "delete", r.ACCESS_DENIED_DELETE, "s3:DeleteObject"),
        (client_error("NoSuchBucket", 404), "write", r.NO_SUCH_BUCKET, "bucket name"),
        (client_error("404", 404, "HeadBucket"), "bucket", r.NO_SUCH_BUCKET, "bucket name"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b"), "bucket", r.ENDPOINT_UNREACHABLE, "endpoint"),
        (SSLError(endpoint_url="https://m:9000", error="[SSL: WRONG_VERSION_NUMBER] wrong version number"), "bucket",
         r.TLS, "secure"),
        (SSLError(endpoint_url="https://m:9000", error="[SSL: CERTIFICATE_VERIFY_FAILED]"), "bucket", r.TLS, "verify"),
        (NoCredentialsError(), "credentials", r.NO_CREDENTIALS, "K_VAR"),
    ],
)
def test_s3_errors_are_classified_and_name_the_setting(exc: Exception, step: str, expected: str,
                                                       setting_part: str) -> None:
    target = StorageTarget(url="s3://b/p", key_env="K_VAR", secret_env="S_VAR", region="us-east-1",
                           endpoint_url="https://m:9000", name="t")
    access = resolve_s3("s3://b/p", [target], ClearmlConf(), env={"K_VAR": "k", "S_VAR": "s"})
    kind, message, setting = classify(exc, step, access)
    assert kind == expected
    assert message
    assert setting_part in setting


# ------------------------------------------------------------------------------------------------ datasets


def make_zip(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_state_parsing_and_chunk_plan() -> None:
    state = DatasetState.from_json({
        "id": "child", "dirty": False, "dependency_graph": {"child": ["parent"], "parent": []},
        "dataset_file_entries": [
            {"relative_path": "a", "hash": "h", "size": 1, "artifact_name": "data", "parent_dataset_id": "child"},
            {"relative_path": "b", "hash": "h", "size": 1, "artifact_name": "data_001", "parent_dataset_id": "child"},
            {"relative_path": "c", "hash": "h", "size": 1, "artifact_name": "data", "parent_dataset_id": "parent"},
            {"relative_path": "d", "hash": "h", "size": 1, "artifact_name": None, "local_path": "/tmp/d",
             "parent_dataset_id": "child"},
            {"relative_path": "e", "hash": "h", "size": 1, "artifact_name": "data", "parent_dataset_id": "gone"},
        ],
    })
    assert state.parents_of("child") == ["parent"]
    plans, problems = plan_chunks(state, "child", {
        "child": {"data": {"uri": "file:///c/data.zip", "content_size": 10}},
        "parent": {"data": {"uri": "file:///p/data.zip"}},
    })
    assert [(p.owner_id, p.artifact_name, [e.relative_path for e in p.entries]) for p in plans] == [
        ("child", "data", ["a"]), ("parent", "data", ["c"])]
    reasons = {p["path"]: p["reason"] for p in problems}
    assert set(reasons) == {"b", "d", "e"}
    assert "missing" in reasons["b"] and "never uploaded" in reasons["d"] and "not found" in reasons["e"]
    with pytest.raises(ValueError):
        DatasetState.from_json(["not", "a", "state"])


def test_verify_chunks_hashes_in_parallel_and_reports(tmp_path: Path) -> None:
    good = {f"img/{i:03d}.bin": bytes([i]) * (1000 + i) for i in range(20)}
    zip_a = tmp_path / "a.zip"
    make_zip(zip_a, {**good, "labels.txt": b"corrupted"})
    entries = [FileEntry(k, sha(v), len(v), "data", "ds") for k, v in good.items()]
    entries.append(FileEntry("labels.txt", sha(b"original!"), 9, "data", "ds"))
    entries.append(FileEntry("not-in-zip.txt", sha(b"x"), 1, "data", "ds"))
    plans = [
        ChunkPlan("data", "ds", f"file://{zip_a}", zip_a.stat().st_size, entries),
        ChunkPlan("data_001", "ds", f"file://{tmp_path / 'gone.zip'}", None, [FileEntry("z", "h", 1, "data_001")]),
    ]
    events: list[Progress] = []
    previous = set_progress_hook(events.append)
    try:
        report = asyncio.run(run_verify(plans, hash_files=True))
    finally:
        set_progress_hook(previous)
    assert report.files_ok == 20 and report.files_checked == 22
    assert [m["path"] for m in report.mismatched] == ["labels.txt"]
    assert sorted(m["path"] for m in report.missing) == ["not-in-zip.txt", "z"]
    assert report.chunk_problems and report.chunk_problems[0]["chunk"] == "data_001"
    assert events[-1].phase == "done" and events[-1].files_done == events[-1].files_total == 23
    # exists-only mode does not open the zips
    light = asyncio.run(run_verify(plans, hash_files=False))
    assert light.files_ok == 22 and [m["path"] for m in light.missing] == ["z"] and not light.mismatched


def test_corrupt_zip_is_reported_per_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    plans = [ChunkPlan("data", "ds", f"file://{bad}", None, [FileEntry("a", "h", 1, "data")])]
    report = asyncio.run(run_verify(plans, hash_files=True))
    assert report.mismatched and "not a readable zip" in report.mismatched[0]["error"]


async def run_verify(plans: list[ChunkPlan], *, hash_files: bool) -> Any:
    folders = sorted({os.path.dirname(p.uri[len("file://"):]) for p in plans if p.uri})

    class NoCtx:  # file:// URIs never touch the client
        targets: list[Any] = []
        conf = ClearmlConf()
        local_roots = folders  # the folders the chunks are in, as if configured under `storage:`

        def is_files_url(self, url: str) -> bool:
            return False

    async with ArtifactReader(NoCtx()) as reader:  # type: ignore[arg-type]
        return await verify_chunks(reader, plans, hash_files=hash_files, dataset_id="ds", workers=3, downloads=2)


def test_state_json_roundtrip_hash() -> None:
    doc = {"id": "x", "dataset_file_entries": [], "dependency_graph": {"x": []}, "dirty": True}
    data = json.dumps(doc).encode()
    state = DatasetState.from_json(json.load(io.BytesIO(data)))
    assert state.dirty and state.parents_of("x") == []
