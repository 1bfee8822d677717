"""The real clearml SDK against the simulator's `datasets-demo` scenario: Dataset.get, get_local_copy (zip chunks
downloaded from the simulator's file server with the login token), verify_dataset_hash, StorageManager (upload,
exists, size, download, delete), task artifacts, Task.get_task / Task.clone / Task.enqueue. Runs in a subprocess
with only CLEARML_* variables and an empty HOME (nothing from this machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx

from bot.sim.server import SimServer

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    from clearml import Dataset, StorageManager, Task
    from clearml.storage.helper import StorageHelper

    out = {}
    latest = Dataset.get(dataset_project="datasets-demo", dataset_name="flowers")
    out["latest"] = [latest.id, latest.version, sorted(latest.list_files())]
    folder = latest.get_local_copy()
    out["local"] = {rel: hashlib.sha256(open(os.path.join(folder, rel), "rb").read()).hexdigest()
                    for rel in latest.list_files()}
    out["labels"] = open(os.path.join(folder, "labels.csv")).read()
    out["verify"] = latest.verify_dataset_hash()
    first = Dataset.get(dataset_project="datasets-demo", dataset_name="flowers", dataset_version="1.0.0")
    out["first"] = [first.version, sorted(first.list_files()), first.id in latest.get_dependency_graph()[latest.id]]
    corrupt = Dataset.get(dataset_project="datasets-demo", dataset_name="flowers-corrupt")
    corrupt.get_local_copy()
    out["corrupt_verify"] = corrupt.verify_dataset_hash()
    out["readme"] = open(StorageManager.get_local_copy(sys.argv[1] + "/datasets-demo/README.txt")).read()
    task = Task.get_task(project_name="datasets-demo", task_name="train-on-flowers")
    out["task"] = [task.status, sorted(task.artifacts)]
    out["artifact"] = json.load(open(task.artifacts["metrics"].get_local_copy()))
    # Upload (POST), look (HEAD/GET), download (GET) and delete (DELETE) on the file server, with the login token.
    open("note.txt", "w").write("uploaded by the sdk\\n")
    url = StorageManager.upload_file("note.txt", sys.argv[1] + "/datasets-demo/uploads/note.txt", wait_for_upload=True)
    out["upload"] = [url, StorageManager.exists_file(url), StorageManager.get_file_size_bytes(url),
                     open(StorageManager.get_local_copy(url, force_download=True)).read()]
    out["uploaded_then"] = StorageHelper.get(url).delete(url)
    out["exists_after_delete"] = StorageManager.exists_file(url)
    clone = Task.clone(source_task=task, name="retrain-on-flowers")
    Task.enqueue(clone, queue_name="default")
    out["clone"] = [clone.id, str(Task.get_task(task_id=clone.id).status), clone.parent == task.id]
    print("RESULT " + json.dumps(out))
    """
)


def test_sdk_downloads_and_verifies_datasets_from_the_file_server(
    sim_factory: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = sim_factory("datasets-demo")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env.update({**sim.env(), "HOME": str(home), "CLEARML_CONFIG_FILE": str(home / "no-such-clearml.conf")})
    proc = subprocess.run([sys.executable, "-c", SCRIPT, sim.files_url], env=env, capture_output=True, text=True,
                          timeout=90, cwd=tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    out = json.loads(lines[-1][len("RESULT "):])
    assert "Could not" not in proc.stderr, proc.stderr  # e.g. "Could not repair dependency graph"

    # The newest version by default; its files include the parent's (downloaded from the parent's chunks).
    _, version, files = out["latest"]
    assert version == "1.1.0"
    assert files == ["daisy/1.jpg", "labels.csv", "roses/1.jpg", "roses/2.jpg", "tulips/1.jpg"]
    assert out["labels"].endswith("daisy/1.jpg,daisy\n")  # 1.1.0's labels.csv replaced 1.0.0's
    assert out["verify"] == []
    assert out["first"] == ["1.0.0", ["labels.csv", "roses/1.jpg", "roses/2.jpg", "tulips/1.jpg"], True]
    # Byte for byte what the scenario generated (sha256 recorded in the version's state.json on the file server).
    state_path = next(k for k in list(sim.state.files) if k.endswith("state.json") and out["latest"][0] in k)
    state = httpx.get(f"{sim.files_url}/{state_path}", headers={"Authorization": f"Bearer {sim.issue_token()}"},
                      timeout=10).json()
    assert out["local"] == {e["relative_path"]: e["hash"] for e in state["dataset_file_entries"]}
    assert len([k for k in sim.state.files if k.endswith(".zip")]) >= 4  # chunked over several zips
    # Only a hash check notices a same-size corruption.
    assert out["corrupt_verify"] == ["bad.bin"]
    assert out["readme"] == "flowers: roses, tulips and daisies\n"
    assert out["task"] == ["completed", ["metrics"]]
    assert out["artifact"] == {"accuracy": 0.93, "f1": 0.9}
    assert out["upload"] == [f"{sim.files_url}/datasets-demo/uploads/note.txt", True, 20, "uploaded by the sdk\n"]
    assert out["uploaded_then"] is True and out["exists_after_delete"] is False
    assert "datasets-demo/uploads/note.txt" not in sim.state.files
    clone_id, status, parented = out["clone"]
    assert (status, parented) == ("queued", True)
    assert [e["task"] for e in sim.state.queues[sim.queue_id("default")]["entries"]] == [clone_id]
