"""datasets.* checks end to end: dataset versions materialized by the simulator (state.json and zip chunks on its
file server, real sha256 hashes), read through the real HTTP client with the API token; one version whose chunks
live in S3 (moto on loopback, real boto3 calls)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import boto3

from bot.config import Settings, StorageTarget
from bot.engine.findings import Finding
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import RunResult, run_playbooks
from bot.storage.datasets import Progress, set_progress_hook
from tests.fakes.moto_server import _moto_server_process, moto_server  # noqa: F401
from tests.helpers import server_settings

SCENARIOS = Path(__file__).resolve().parents[2] / "bot" / "sim" / "scenarios"
ZOO_DATA = SCENARIOS / "zoo-data.yaml"
HEALTHY_DATA = SCENARIOS / "healthy-data.yaml"


def run(sim: Any, *checks: tuple[str, dict[str, Any]], settings: Settings | None = None) -> RunResult:
    playbook = Playbook(name="test", checks=[CheckEntry(check=c, params=p) for c, p in checks])
    return asyncio.run(run_playbooks([playbook], settings or Settings(), server_settings(sim), deadline_s=45))


def of(result: RunResult, check: str) -> list[Finding]:
    return [f for f in result.findings if f.check == check]


def by_name(findings: list[Finding]) -> dict[str, Finding]:
    return {f.subject.name: f for f in findings}


# ------------------------------------------------------------------------------------------------ incomplete


def test_incomplete_finds_every_kind_of_broken_upload(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    findings = by_name(of(run(sim, ("datasets.incomplete", {})), "datasets.incomplete"))
    kinds = {name: {p["kind"] for p in f.evidence["problems"]} for name, f in findings.items()}
    assert kinds == {
        "dashcam-night 0.3.0": {"stale_in_progress"},
        "speech-accents 1.0.0": {"interrupted"},
        "text-corpus-de 3.0.0": {"no_state"},
        "lidar-scans 0.9.0": {"dirty", "unuploaded_files"},
        "satellite-tiles 2.1.0": {"missing_chunk"},
        "street-signs 2.0.0": {"missing_chunk"},  # its files live in a deleted parent
    }
    assert findings["dashcam-night 0.3.0"].severity == "warning"
    assert findings["text-corpus-de 3.0.0"].severity == "critical"
    assert findings["lidar-scans 0.9.0"].evidence["unuploaded_files"] == ["scans/0042.bin"]
    assert findings["satellite-tiles 2.1.0"].evidence["missing_chunk_files"][0]["chunk"] == "data_001"
    for finding in findings.values():
        assert finding.subject.kind == "dataset"
        assert finding.links and "/datasets/" in finding.links[0]
        assert finding.remediation


def test_incomplete_quiet_on_healthy_and_threshold_is_a_param(sim_factory: Any) -> None:
    assert of(run(sim_factory(scenario=HEALTHY_DATA), ("datasets.incomplete", {})), "datasets.incomplete") == []
    sim = sim_factory(scenario=ZOO_DATA)
    relaxed = by_name(of(run(sim, ("datasets.incomplete", {"stale_after": "6h", "names": ["dashcam-*"]})),
                         "datasets.incomplete"))
    assert relaxed == {}  # silent for 5 h is fine under a 6 h threshold


# ------------------------------------------------------------------------------------------------ integrity


def test_integrity_exists_finds_missing_chunks(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    findings = by_name(of(run(sim, ("datasets.integrity", {})), "datasets.integrity"))
    assert findings["audio-commands 1.0.0"].severity == "critical"
    problem = findings["audio-commands 1.0.0"].evidence["chunk_problems"][0]
    assert problem["chunk"] == "data_001" and "404" in problem["problem"]
    assert findings["satellite-tiles 2.1.0"].severity == "critical"
    assert findings["street-signs 2.0.0"].evidence["missing_count"] == 3
    assert findings["text-corpus-de 3.0.0"].severity == "critical"
    # existence alone cannot see a corrupted file: that needs verify: hash
    assert findings["cityscapes-seg 1.2.0"].severity == "ok"


def test_integrity_hash_finds_the_corrupted_file_and_reports_progress(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    events: list[Progress] = []
    previous = set_progress_hook(events.append)
    try:
        result = run(sim, ("datasets.integrity", {"names": ["cityscapes-seg"], "verify": "hash", "workers": 2}))
    finally:
        set_progress_hook(previous)
    findings = by_name(of(result, "datasets.integrity"))
    broken = findings["cityscapes-seg 1.2.0"]
    assert broken.severity == "critical"
    assert [m["path"] for m in broken.evidence["mismatched"]] == ["gtFine/bochum_000000_labelIds.png"]
    assert broken.evidence["files_verified"] == 2 and "bochum_000000_labelIds" in broken.detail
    assert findings["cityscapes-seg 1.1.0"].severity == "ok"
    done = [e for e in events if e.phase == "done"]
    assert {e.dataset_name for e in done} == {"cityscapes-seg 1.1.0", "cityscapes-seg 1.2.0"}
    assert all(e.files_done == e.files_total for e in done)


def test_integrity_hash_all_ok_on_healthy(sim_factory: Any) -> None:
    sim = sim_factory(scenario=HEALTHY_DATA)
    findings = of(run(sim, ("datasets.integrity", {"verify": "hash"})), "datasets.integrity")
    assert {f.subject.name: f.severity for f in findings} == {
        "coco-subset 1.0.0": "ok", "coco-subset 1.1.0": "ok", "alpaca-cleaned 2.0.0": "ok"}
    child = by_name(findings)["coco-subset 1.1.0"]
    assert child.evidence["files_verified"] == 4  # its own file plus the three inherited from 1.0.0
    assert child.related[0].name == "coco-subset 1.0.0"


def test_integrity_hashes_a_local_copy(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(scenario=HEALTHY_DATA)
    # the files of coco-subset 1.0.0 as healthy-data.yaml generates them (size + seed)
    copy = tmp_path / "coco-subset-1.0.0"
    for rel, content in {
        "images/000000000139.jpg": random.Random(21).randbytes(3000),
        "images/000000000285.jpg": random.Random(22).randbytes(3000),
        "annotations/instances.json": b'{"images": 2}',
    }.items():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(content)
    params = {"names": ["coco-subset 1.0.0"], "verify": "hash", "local_copy": str(tmp_path / "{name}-{version}")}
    [ok] = of(run(sim, ("datasets.integrity", params)), "datasets.integrity")
    assert ok.severity == "ok" and ok.evidence["files_verified"] == 3 and ok.evidence["bytes_downloaded"] == 0
    (copy / "annotations/instances.json").write_bytes(b'{"images": 3}')
    (copy / "images/000000000285.jpg").unlink()
    [bad] = of(run(sim, ("datasets.integrity", params)), "datasets.integrity")
    assert [m["path"] for m in bad.evidence["mismatched"]] == ["annotations/instances.json"]
    assert [m["path"] for m in bad.evidence["missing"]] == ["images/000000000285.jpg"]


def test_integrity_detects_a_tampered_state_and_unknown_ids(sim_factory: Any) -> None:
    sim = sim_factory(scenario=HEALTHY_DATA)
    with sim.state.lock:
        path = next(k for k in sim.state.files if "alpaca-cleaned" in k and k.endswith("state.json"))
        state = json.loads(sim.state.files[path])
        state["dirty"] = False
        state["total_size"] += 1
        sim.state.files[path] = json.dumps(state).encode()
    result = run(sim, ("datasets.integrity", {"names": ["alpaca-*"]}),
                 ("datasets.integrity", {"ids": ["f" * 32]}))
    findings = of(result, "datasets.integrity")
    tampered = next(f for f in findings if f.subject.name == "alpaca-cleaned 2.0.0")
    assert tampered.severity == "critical" and "sha256" in tampered.title
    unknown = next(f for f in findings if f.subject.id == "f" * 32)
    assert unknown.severity == "error" and "does not exist" in unknown.title


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


S3_DSID = "5e5e5e5e5e5e4e5e8e5e5e5e5e5e5e5e"
S3_FILES = {"a.txt": b"alpha" * 100, "sub/b.bin": bytes(range(256)) * 10}
S3_PREFIX = f"vision/.datasets/s3-ds/s3-ds.{S3_DSID}/artifacts"


def s3_dataset(endpoint: str, *, stored: bytes | None = None) -> tuple[Any, dict[str, Any]]:
    """One completed dataset version (S3_FILES) whose state.json and chunk live in bucket `datasets` on the moto
    server at `endpoint`: its S3 client and the scenario (projects and the version's task). `stored`: the chunk as
    the object store holds it (default: the true files zipped)."""
    host = endpoint.split("://", 1)[1]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1")
    s3.create_bucket(Bucket="datasets", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    chunk = zip_bytes(S3_FILES) if stored is None else stored
    state = {
        "id": S3_DSID, "dirty": False, "file_count": 2, "total_size": sum(len(v) for v in S3_FILES.values()),
        "dependency_graph": {S3_DSID: []}, "dataset_link_entries": [],
        "dataset_file_entries": [
            {"relative_path": k, "hash": hashlib.sha256(v).hexdigest(), "size": len(v), "artifact_name": "data",
             "parent_dataset_id": S3_DSID} for k, v in S3_FILES.items()
        ],
    }
    state_blob = json.dumps(state).encode()
    s3.put_object(Bucket="datasets", Key=f"{S3_PREFIX}/state/state.json", Body=state_blob)
    s3.put_object(Bucket="datasets", Key=f"{S3_PREFIX}/data/dataset.{S3_DSID}.zip", Body=chunk)
    base = f"s3://{host}/datasets/{S3_PREFIX}"
    scenario = {
        "projects": [{"name": "vision"}, {"name": "vision/.datasets", "system_tags": ["hidden"]},
                     {"name": "vision/.datasets/s3-ds", "system_tags": ["hidden", "dataset"]}],
        "tasks": [{
            "id": S3_DSID, "name": "s3-ds", "project": "vision/.datasets/s3-ds", "type": "data_processing",
            "status": "completed", "status_changed": "-1d", "system_tags": ["dataset"],
            "runtime": {"version": "1.0.0", "ds_file_count": 2},
            "execution": {"artifacts": [
                {"key": "state", "type": "dict", "uri": f"{base}/state/state.json",
                 "hash": hashlib.sha256(state_blob).hexdigest(), "content_size": len(state_blob)},
                {"key": "data", "type": "custom", "uri": f"{base}/data/dataset.{S3_DSID}.zip",
                 "hash": hashlib.sha256(chunk).hexdigest(), "content_size": len(chunk)},
            ]},
        }],
    }
    return s3, scenario


def test_integrity_reads_chunks_from_s3(sim_factory: Any, moto_server: str) -> None:  # noqa: F811
    host = moto_server.split("://", 1)[1]
    s3, scenario = s3_dataset(moto_server)
    chunk = zip_bytes(S3_FILES)
    sim = sim_factory(scenario={"name": "s3-dataset", **scenario})
    settings = Settings(storage=[StorageTarget(url=f"s3://{host}/datasets", secure=False)])
    [ok] = of(run(sim, ("datasets.integrity", {"verify": "hash"}), settings=settings), "datasets.integrity")
    assert ok.severity == "ok", ok
    assert ok.evidence["files_verified"] == 2 and ok.evidence["bytes_downloaded"] == len(chunk)
    # the object store silently serves other bytes for one file
    s3.put_object(Bucket="datasets", Key=f"{S3_PREFIX}/data/dataset.{S3_DSID}.zip",
                  Body=zip_bytes({"a.txt": b"ALPHA" * 100, "sub/b.bin": S3_FILES["sub/b.bin"]}))
    [bad] = of(run(sim, ("datasets.integrity", {"verify": "hash"}), settings=settings), "datasets.integrity")
    assert bad.severity == "critical" and [m["path"] for m in bad.evidence["mismatched"]] == ["a.txt"]


# ------------------------------------------------------------------------------------------------ lineage


def test_lineage_missing_and_unfinalized_parents(sim_factory: Any) -> None:
    sim = sim_factory(scenario=ZOO_DATA)
    findings = by_name(of(run(sim, ("datasets.lineage", {})), "datasets.lineage"))
    assert set(findings) == {"street-signs 2.0.0", "dashcam-night 0.4.0"}
    orphan = findings["street-signs 2.0.0"]
    assert orphan.severity == "critical"
    assert orphan.evidence["missing_parents"] == ["deadbeef0c0c4f2a8e1b5d7c9a3f6e21"]
    child = findings["dashcam-night 0.4.0"]
    assert child.severity == "warning"
    assert [(p["name"], p["status"]) for p in child.evidence["unfinalized_parents"]] == [
        ("dashcam-night", "in_progress")]
    assert child.related[0].kind == "dataset"
    assert "finalize" in child.remediation


def test_lineage_quiet_on_healthy(sim_factory: Any) -> None:
    assert of(run(sim_factory(scenario=HEALTHY_DATA), ("datasets.lineage", {})), "datasets.lineage") == []
