"""datasets.integrity with `on_agent`: the verification task is dispatched into a queue, the test plays the agent's
side exactly as clearml-agent does (pull from the queue, mark started, run the task's script as a subprocess with
CLEARML_TASK_ID and a JSON CLEARML_CONFIG_FILE, mark completed or failed with its output as the log), and the next
run turns the uploaded result into findings. The script is the one the bot ships; it really downloads and re-hashes
the simulator's chunks through the file server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from bot.config import Settings
from bot.engine.findings import Finding
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import run_playbooks
from tests.fakes.moto_server import _moto_server_process, moto_server  # noqa: F401
from tests.helpers import cityscapes_datasets, server_settings, sim_data, sim_request
from tests.integration.test_checks_datasets import S3_FILES, s3_dataset, zip_bytes

CHECK = "datasets.integrity"
QUEUE = "data-near-storage"
WORKER = "storage-box:0"


def scenario() -> dict[str, Any]:
    return {
        "name": "on-agent",
        "projects": [{"name": "perception"}],
        "queues": [{"name": QUEUE}, {"name": "default", "system_tags": ["default"]}],
        "datasets": [
            *cityscapes_datasets(),
            {"name": "audio-commands", "project": "perception", "version": "1.0.0", "status": "completed",
             "last_update": "-4d", "chunk_size": 2048,
             "files": [{"path": "yes/0001.wav", "size": 1500, "seed": 8},
                       {"path": "no/0001.wav", "size": 1500, "seed": 9}],
             "faults": {"missing_chunk_file": "data_001"}},
        ],
    }


def run(sim: Any, **params: Any) -> dict[str, Finding]:
    book = Playbook(name="t", checks=[CheckEntry(check=CHECK, params={"on_agent": QUEUE, **params})])
    result = asyncio.run(run_playbooks([book], Settings(), server_settings(sim), deadline_s=45))
    return {f.subject.name: f for f in result.findings if f.check == CHECK}


def agent_runs_next(sim: Any, tmp_path: Path, *, config: dict[str, Any] | None = None) -> tuple[str, int]:
    """clearml-agent's part: pull the next task of the queue, run its script, report the outcome."""
    entry = sim_data(sim, "queues.get_next_task", {"queue": sim.queue_id(QUEUE)})["entry"]
    task_id = entry["task"]
    sim_request(sim, "tasks.started", {"task": task_id}, headers={"X-ClearML-Worker": WORKER}).raise_for_status()
    sim_data(sim, "workers.status_report", {"worker": WORKER, "timestamp": int(sim.clock.time() * 1000),
                                            "task": task_id, "queue": sim.queue_id(QUEUE)})
    task = sim_data(sim, "tasks.get_by_id", {"task": task_id})["task"]
    script = tmp_path / task["script"]["entry_point"]
    script.write_text(task["script"]["diff"])
    key, secret = sim.keys[0]
    conf = config or {"api": {"api_server": sim.api_url, "web_server": sim.web_url, "files_server": sim.files_url,
                              "credentials": {"access_key": key, "secret_key": secret}}}
    conf_path = tmp_path / "agent-task.cfg"
    conf_path.write_text(json.dumps(conf, indent=4))  # clearml-agent writes the task's config as JSON
    env = {"PATH": os.environ.get("PATH", ""), "CLEARML_TASK_ID": task_id, "CLEARML_CONFIG_FILE": str(conf_path),
           "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    body = "\n".join(json.dumps({"type": "log", "task": task_id, "msg": line, "worker": WORKER}) for line in lines)
    if body:
        httpx.post(f"{sim.api_url}/events.add_batch", content=body.encode(),
                   headers={"Authorization": f"Bearer {sim.issue_token()}"}, timeout=10).raise_for_status()
    sim.clock.advance(30)
    if proc.returncode == 0:
        sim_data(sim, "tasks.completed", {"task": task_id})
    else:
        sim_data(sim, "tasks.failed", {"task": task_id, "status_reason": f"worker execution exit code "
                                                                          f"{proc.returncode}"})
    return task_id, proc.returncode


def spy_on_file_server(sim: Any) -> list[tuple[str, str]]:
    """Every (method, path) the simulator's file server is asked for from now on."""
    seen: list[tuple[str, str]] = []
    original = sim.files.handle

    def handle(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        seen.append((method, path))
        return original(method, path, *args, **kwargs)

    sim.files.handle = handle
    return seen


def verification_tasks(sim: Any) -> list[dict[str, Any]]:
    return [t for t in sim.iter_tasks() if "clearml-chatops-dataset-verification" in (t.get("tags") or [])]


def test_verification_runs_on_the_agent_and_reports_the_same_findings(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(scenario())
    file_reads = spy_on_file_server(sim)
    first = run(sim)
    assert set(first) == {"cityscapes-seg 1.1.0", "cityscapes-seg 1.2.0", "audio-commands 1.0.0"}
    assert all(f.severity == "info" and f"verification dispatched to queue {QUEUE}" in f.title
               for f in first.values())
    [task] = verification_tasks(sim)
    assert task["status"] == "queued" and not task["script"].get("repository")
    assert sim.state.projects[task["project"]]["name"] == "clearml-chatops/verification"
    assert "hidden" in sim.state.projects[task["project"]]["system_tags"]
    assert file_reads == []  # dispatching reads no storage at all
    waiting = run(sim)
    assert all("waiting in queue" in f.title for f in waiting.values())
    assert len(sim.calls_to("tasks.enqueue")) == 1 and len(verification_tasks(sim)) == 1  # one in flight

    task_id, code = agent_runs_next(sim, tmp_path)
    assert code == 0
    file_reads.clear()
    done = run(sim)
    # the bot read only the result document; the agent read state.json and the chunks
    assert file_reads and all(path.endswith("/verification.json") for _, path in file_reads), file_reads
    broken = done["cityscapes-seg 1.2.0"]
    assert broken.severity == "critical" and "1 file differs from the recorded sha256" in broken.title
    assert [m["path"] for m in broken.evidence["mismatched"]] == ["gtFine/bochum_labelIds.png"]
    assert broken.evidence["files_verified"] == 2  # its own intact file plus the one inherited from 1.1.0
    assert broken.evidence["on_agent"]["task"] == task_id and broken.evidence["on_agent"]["worker"] == WORKER
    assert any(task_id in link for link in broken.links)
    missing = done["audio-commands 1.0.0"]
    assert missing.severity == "critical" and missing.evidence["missing_count"] == 1
    assert missing.evidence["chunk_problems"][0]["chunk"] == "data_001"
    assert "404" in missing.evidence["chunk_problems"][0]["problem"]
    intact = done["cityscapes-seg 1.1.0"]
    assert intact.severity == "ok" and "1 file re-hashed" in intact.title

    # the local path gives the same verdicts
    book = Playbook(name="t", checks=[CheckEntry(check=CHECK, params={"verify": "hash"})])
    local = asyncio.run(run_playbooks([book], Settings(), server_settings(sim), deadline_s=45))
    local_by = {f.subject.name: f for f in local.findings if f.check == CHECK}
    for name, finding in done.items():
        assert local_by[name].severity == finding.severity, name
        assert local_by[name].evidence["mismatched"] == finding.evidence["mismatched"], name

    # results stay reported (no flapping) until `every`, then the same task goes round again
    assert run(sim)["cityscapes-seg 1.2.0"].severity == "critical"
    sim.clock.advance(86400 + 60)  # `every` (24 h) after the round completed
    again = run(sim)
    assert again["cityscapes-seg 1.2.0"].severity == "critical"  # last result still shown while re-verifying
    assert [t["status"] for t in verification_tasks(sim)] == ["queued"] and len(sim.calls_to("tasks.create")) == 1
    # while the next round waits, the previous result stays reported (the reset task lost its artifact)
    waiting_again = run(sim)
    assert waiting_again["cityscapes-seg 1.2.0"].severity == "critical"
    assert waiting_again["cityscapes-seg 1.2.0"].evidence["on_agent"]["next_round"] is True
    assert waiting_again["cityscapes-seg 1.2.0"].evidence["on_agent"]["worker"] == WORKER
    assert waiting_again["cityscapes-seg 1.1.0"].severity == "ok"
    assert len(sim.calls_to("tasks.enqueue")) == 2
    second_task, _ = agent_runs_next(sim, tmp_path)
    assert second_task == task_id  # the same task, reset and sent again
    fresh = run(sim)["cityscapes-seg 1.2.0"]
    assert fresh.severity == "critical" and fresh.evidence["on_agent"]["next_round"] is False
    assert fresh.evidence["on_agent"]["finished_age_s"] < 60


def test_a_size_mismatch_is_found_on_the_agent(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(scenario())
    with sim.state.lock:
        [ds] = [t for t in sim.state.tasks.values() if t["name"] == "cityscapes-seg"
                and (t.get("runtime") or {}).get("version") == "1.1.0"]
        for artifact in ds["execution"]["artifacts"]:
            if artifact["key"] == "data":
                artifact["content_size"] = int(artifact["content_size"]) + 7
    run(sim, names=["cityscapes-seg"])
    agent_runs_next(sim, tmp_path)
    finding = run(sim, names=["cityscapes-seg"])["cityscapes-seg 1.1.0"]
    assert finding.severity == "critical"
    assert "the artifact records" in finding.evidence["chunk_problems"][0]["problem"]


def test_a_failed_verification_is_a_warning_with_its_log_and_is_retried(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(scenario())
    run(sim)
    # the agent's host has no file server configured: the script cannot upload its result
    key, secret = sim.keys[0]
    bad = {"api": {"api_server": sim.api_url, "files_server": "",
                   "credentials": {"access_key": key, "secret_key": secret}}}
    task_id, code = agent_runs_next(sim, tmp_path, config=bad)
    assert code == 1
    [failed] = run(sim).values()
    assert failed.severity == "warning" and failed.subject.kind == "queue" and failed.subject.name == QUEUE
    assert failed.evidence["verification_task"] == task_id
    assert "verification task failed on agent" in failed.title
    assert "no file server configured" in failed.detail
    assert any("verification FAILED" in line for line in failed.evidence["log_tail"])
    sim.clock.advance(3600 + 60)  # `retry_after` (1 h) after the failure
    run(sim)
    assert [t["status"] for t in verification_tasks(sim)] == ["queued"]


def test_not_picked_up_and_unknown_queue(sim_factory: Any) -> None:
    sim = sim_factory(scenario())
    run(sim)
    sim.clock.advance(3700)
    [stuck] = run(sim).values()
    assert stuck.severity == "warning" and "no agent picked it up in 62 min" in stuck.title
    book = Playbook(name="t", checks=[CheckEntry(check=CHECK, params={"on_agent": "nope"})])
    result = asyncio.run(run_playbooks([book], Settings(), server_settings(sim), deadline_s=45))
    [error] = [f for f in result.findings if f.check == CHECK]
    assert error.severity == "error" and "queue 'nope'" in error.title


def test_the_agent_reads_s3_chunks_with_its_own_credentials(sim_factory: Any, moto_server: str,  # noqa: F811
                                                           tmp_path: Path) -> None:
    """A version whose state and chunk live on an S3 endpoint (s3://host:port/bucket/key, moto on loopback): the
    bot has no storage configured at all; the agent's clearml.conf (sdk.aws.s3.credentials for that host) lets the
    script read them, and boto3 is declared as the task's requirement."""
    host = moto_server.split("://", 1)[1]
    stored = zip_bytes({"a.txt": b"ALPHA" * 100, "sub/b.bin": S3_FILES["sub/b.bin"]})  # the store rewrote a.txt
    _, scenario = s3_dataset(moto_server, stored=stored)
    sim = sim_factory({"name": "s3-on-agent", "queues": [{"name": QUEUE}], **scenario})
    run(sim)
    [task] = verification_tasks(sim)
    assert task["script"]["requirements"] == {"pip": "boto3\n"}
    key, secret = sim.keys[0]
    conf = {"api": {"api_server": sim.api_url, "files_server": sim.files_url,
                    "credentials": {"access_key": key, "secret_key": secret}},
            "sdk": {"aws": {"s3": {"region": "eu-west-1", "credentials": [
                {"host": host, "key": "testing", "secret": "testing", "secure": False}]}}}}
    _, code = agent_runs_next(sim, tmp_path, config=conf)
    assert code == 0
    [bad] = run(sim).values()
    assert bad.severity == "critical" and [m["path"] for m in bad.evidence["mismatched"]] == ["a.txt"]
    assert bad.evidence["files_verified"] == 1 and bad.evidence["bytes_downloaded"] == len(stored)
