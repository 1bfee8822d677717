"""The simulator's file server: ClearML's upload/download/delete protocol, bearer auth, dataset chunks."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

import httpx
import pytest

from bot.sim.scenario import ScenarioError
from bot.sim.server import SimServer
from tests.helpers import sim_data


def bearer(sim: SimServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.issue_token()}"}


def test_upload_download_delete(sim: SimServer) -> None:
    assert httpx.get(sim.files_url + "/").text == "OK"
    files = {"vision/exp.abc/artifacts/model/model.pt": ("model.pt", b"\x00weights\xff")}
    resp = httpx.post(sim.files_url + "/", files=files, headers=bearer(sim))
    assert resp.status_code == 200 and resp.json() == ["vision/exp.abc/artifacts/model/model.pt"]
    url = sim.files_url + "/vision/exp.abc/artifacts/model/model.pt"
    got = httpx.get(url, headers=bearer(sim))
    assert got.status_code == 200 and got.content == b"\x00weights\xff"
    head = httpx.head(url, headers=bearer(sim))
    assert head.status_code == 200 and head.headers["content-length"] == "9"
    part = httpx.get(url, headers={**bearer(sim), "Range": "bytes=1-7"})
    assert part.status_code == 206 and part.content == b"weights"
    assert httpx.delete(url, headers=bearer(sim)).status_code == 200
    assert httpx.get(url, headers=bearer(sim)).status_code == 404
    assert httpx.delete(url, headers=bearer(sim)).status_code == 404


def test_delete_many_files_and_folders(sim: SimServer) -> None:
    for name in ("a/1.txt", "a/2.txt", "b.txt"):
        httpx.post(sim.files_url + "/", files={name: (name, b"x")}, headers=bearer(sim))
    resp = httpx.post(sim.files_url + "/delete_many", json={"files": ["a", "b.txt", "missing"]}, headers=bearer(sim))
    body = resp.json()
    assert body["deleted"] == {"a": "a", "b.txt": "b.txt"} and body["errors"] == {"Not found": ["missing"]}
    with sim.state.lock:
        assert not any(k.startswith(("a/", "b.txt")) for k in sim.state.files)


@pytest.mark.parametrize(
    ("headers", "text"),
    [
        ({}, "Unauthorized"),
        ({"Authorization": "Basic a2V5OnNlY3JldA=="}, "Only bearer token authorization is supported"),
        ({"Authorization": "Bearer garbage"}, "Invalid token"),
    ],
)
def test_file_server_auth(sim: SimServer, headers: dict[str, str], text: str) -> None:
    resp = httpx.get(sim.files_url + "/vision/inputs/list.json", headers=headers)
    assert resp.status_code == 401 and text in resp.text


def test_dataset_layout_like_the_sdk(sim: SimServer) -> None:
    dataset = sim_data(sim, "tasks.get_all", {"system_tags": ["dataset"], "search_hidden": True,
                                              "type": ["data_processing"]})["tasks"][0]
    assert dataset["name"] == "cifar" and dataset["status"] == "completed"
    project = sim_data(sim, "projects.get_by_id", {"project": dataset["project"]})["project"]
    assert project["name"] == "vision/.datasets/cifar" and project["system_tags"] == ["hidden", "dataset"]
    runtime = dataset["runtime"]
    assert runtime["version"] == "1.0.0" and runtime["ds_file_count"] == 3
    assert runtime["ds_total_size"] == 5 + 4096 + 1000
    artifacts = {a["key"]: a for a in dataset["execution"]["artifacts"]}
    assert sorted(artifacts) == ["data", "data_001", "state"]  # 4096-byte chunks: two zips
    state_art = artifacts["state"]
    raw = httpx.get(state_art["uri"], headers=bearer(sim)).content
    assert hashlib.sha256(raw).hexdigest() == state_art["hash"] and len(raw) == state_art["content_size"]
    state = json.loads(raw)
    assert state["id"] == dataset["id"] and state["dirty"] is False
    assert state["dependency_graph"] == {dataset["id"]: []}
    assert state["dependency_chunk_lookup"] == {dataset["id"]: 2}
    assert ["files added", "3"] in state_art["display_data"]
    entries = {e["relative_path"]: e for e in state["dataset_file_entries"]}
    for key in ("data", "data_001"):
        art = artifacts[key]
        assert art["uri"].startswith(f"{sim.files_url}/vision/.datasets/cifar/cifar.{dataset['id']}/artifacts/{key}/")
        blob = httpx.get(art["uri"], headers=bearer(sim)).content
        assert hashlib.sha256(blob).hexdigest() == art["hash"]
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            for name in archive.namelist():
                assert entries[name]["artifact_name"] == key
                assert hashlib.sha256(archive.read(name)).hexdigest() == entries[name]["hash"]
    assert httpx.get(sim.files_url + "/vision/inputs/list.json", headers=bearer(sim)).json() == ["a", "b"]


def broken_dataset(fault: dict[str, Any]) -> dict[str, Any]:
    return {"datasets": [{"name": "ds", "project": "p", "chunk_size": 10, "faults": fault, "files": [
        {"path": "a.bin", "size": 8, "seed": 1}, {"path": "b.bin", "size": 8, "seed": 2}]}]}


def dataset_parts(sim: SimServer) -> tuple[dict[str, Any], dict[str, Any] | None]:
    task = sim_data(sim, "tasks.get_all", {"system_tags": ["dataset"], "search_hidden": True})["tasks"][0]
    artifacts = {a["key"]: a for a in task["execution"]["artifacts"]}
    state = None
    if "state" in artifacts:
        state = json.loads(httpx.get(artifacts["state"]["uri"], headers=bearer(sim)).content)
    return artifacts, state


def test_dataset_faults(sim_factory: Any) -> None:
    artifacts, state = dataset_parts(sim_factory(broken_dataset({"missing_chunk": "data_001"})))
    assert "data_001" not in artifacts and state is not None
    assert {e["artifact_name"] for e in state["dataset_file_entries"]} == {"data", "data_001"}

    sim = sim_factory(broken_dataset({"missing_chunk_file": "data"}))
    artifacts, _ = dataset_parts(sim)
    assert httpx.get(artifacts["data"]["uri"], headers=bearer(sim)).status_code == 404

    sim = sim_factory(broken_dataset({"corrupt_file": "a.bin"}))
    artifacts, state = dataset_parts(sim)
    assert state is not None
    entry = next(e for e in state["dataset_file_entries"] if e["relative_path"] == "a.bin")
    blob = httpx.get(artifacts[entry["artifact_name"]]["uri"], headers=bearer(sim)).content
    content = zipfile.ZipFile(io.BytesIO(blob)).read("a.bin")
    assert len(content) == entry["size"] and hashlib.sha256(content).hexdigest() != entry["hash"]

    artifacts, state = dataset_parts(sim_factory(broken_dataset({"no_state": True})))
    assert state is None and "data" in artifacts
    _, state = dataset_parts(sim_factory(broken_dataset({"dirty": True, "unuploaded_file": "c.bin"})))
    assert state is not None and state["dirty"] is True
    entry = next(e for e in state["dataset_file_entries"] if e["relative_path"] == "c.bin")
    assert entry["artifact_name"] is None and entry["local_path"]


def test_dataset_parents(sim_factory: Any) -> None:
    sim = sim_factory({"datasets": [
        {"name": "base", "project": "p", "version": "1.0.0", "files": [{"path": "x", "content": "1"}]},
        {"name": "base", "project": "p", "version": "1.1.0", "parents": ["base@1.0.0"],
         "files": [{"path": "y", "content": "22"}]},
    ]})
    found = sim_data(sim, "tasks.get_all", {"system_tags": ["dataset"], "search_hidden": True,
                                            "only_fields": ["id", "runtime", "execution"]})["tasks"]
    child = next(t for t in found if t["runtime"]["version"] == "1.1.0")
    parent = next(t for t in found if t["runtime"]["version"] == "1.0.0")
    state_art = next(a for a in child["execution"]["artifacts"] if a["key"] == "state")
    state = json.loads(httpx.get(state_art["uri"], headers=bearer(sim)).content)
    assert state["dependency_graph"] == {child["id"]: [parent["id"]], parent["id"]: []}
    owners = {e["relative_path"]: e["parent_dataset_id"] for e in state["dataset_file_entries"]}
    assert owners == {"x": parent["id"], "y": child["id"]}
    assert child["runtime"]["ds_file_count"] == 2 and child["runtime"]["ds_change_add"] == 1


def test_file_server_faults(sim: SimServer) -> None:
    sim.state.faults.fail_uploads = True
    resp = httpx.post(sim.files_url + "/", files={"x": ("x", b"1")}, headers=bearer(sim))
    assert resp.status_code == 500
    url = sim.files_url
    sim.fileserver_enabled = False
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/", timeout=2)
    sim.clear_faults()
    assert httpx.get(url + "/", timeout=2).text == "OK"


def test_objects_served_from_disk(sim_factory: Any, tmp_path: Any) -> None:
    blob = bytes(range(256)) * 64
    (tmp_path / "chunk.zip").write_bytes(blob)
    scenario = {"name": "disk", "files": {"big/chunk.zip": {"file": str(tmp_path / "chunk.zip")}}}
    sim = sim_factory(scenario)
    url = sim.files_url + "/big/chunk.zip"
    got = httpx.get(url, headers=bearer(sim))
    assert got.status_code == 200 and got.content == blob
    part = httpx.get(url, headers={**bearer(sim), "Range": "bytes=256-511"})
    assert part.status_code == 206 and part.content == blob[256:512]
    assert httpx.head(url, headers=bearer(sim)).headers["content-length"] == str(len(blob))
    assert httpx.delete(url, headers=bearer(sim)).status_code == 200
    assert (tmp_path / "chunk.zip").read_bytes() == blob  # forgetting the object leaves the file alone
    with pytest.raises(ScenarioError, match="not an existing file"):
        SimServer({"name": "bad", "files": {"x.bin": {"file": str(tmp_path / "missing.bin")}}})
