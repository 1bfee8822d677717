"""The real clearml SDK (APIClient), configured only by CLEARML_* variables, works against the simulator.

The SDK runs in a subprocess: it caches its configuration per process, and this way nothing from the
machine running the tests (a ~/clearml.conf) can leak in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from bot.sim.server import SimServer

FAILED = "a1000000000000000000000000000002"

SDK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from clearml.backend_api.session.client import APIClient, APIError, StrictSession

    # Bounded retries: the SDK's default (240 retries, backoff up to 120 s) would hang a broken test for hours.
    retries = {"total": 1, "connect": 1, "read": 1, "redirect": 1, "status": 1, "backoff_factor": 0.1,
               "backoff_max": 1}
    client = APIClient(session=StrictSession(http_retries_config=retries))
    session = type(client.session)
    out = {"api_version": session.max_api_version, "server_version": session.server_version}
    out["workers"] = sorted(w.id for w in client.workers.get_all(last_seen=600))
    queues = client.queues.get_all()
    out["queues"] = sorted(q.name for q in queues)
    failed = client.tasks.get_all(status=["failed"], only_fields=["id", "name", "status"])
    out["failed"] = [(t.id, t.name, str(t.status)) for t in failed]
    out["task_count"] = len(client.tasks.get_all())
    try:
        client.tasks.get_by_id(task="0123456789abcdef0123456789abcdef")
    except APIError as exc:
        out["missing"] = [exc.code, exc.subcode, exc.message]
    clone = client.tasks.clone(task=failed[0].id, new_task_name="retry from the sdk")
    gpu = next(q for q in queues if q.name == "gpu")
    enqueued = client.tasks.enqueue(task=clone.id, queue=gpu.id)
    out["clone"] = clone.id
    out["enqueued"] = [enqueued.queued, enqueued.fields.get("status")]
    out["clone_status"] = str(client.tasks.get_by_id(task=clone.id).status)
    print("RESULT " + json.dumps(out))
    """
)


def run_sdk(sim: SimServer, tmp_path: Path) -> dict[str, object]:
    script = tmp_path / "sdk_client.py"
    script.write_text(SDK_SCRIPT)
    return run_script(sim, tmp_path, script)


def run_script(sim: SimServer, tmp_path: Path, script: Path) -> dict[str, Any]:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env.update(sim.env())
    env.update({"HOME": str(home), "CLEARML_CONFIG_FILE": str(home / "no-such-clearml.conf")})
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    assert not list(home.iterdir()), "the SDK wrote into HOME"
    return result


def test_clearml_sdk_lists_clones_and_enqueues(sim: SimServer, tmp_path: Path) -> None:
    result = run_sdk(sim, tmp_path)
    assert (result["api_version"], result["server_version"]) == ("2.34", "2.3.0")  # read from the login JWT
    assert result["workers"] == ["cpu-box-1:0", "gpu-box-1:gpu0"]
    assert result["queues"] == ["default", "gpu", "services"]
    assert result["failed"] == [[FAILED, "train-vit-failed", "failed"]]
    assert result["task_count"] == 7
    assert result["missing"] == [400, 101, "Invalid task id: ids=(0123456789abcdef0123456789abcdef)"]
    assert result["enqueued"] == [1, "queued"] and result["clone_status"] == "queued"

    clone = str(result["clone"])
    with sim.state.lock:
        doc = sim.state.tasks[clone]
        entries = [e["task"] for e in sim.state.queues[sim.queue_id("gpu")]["entries"]]
    assert doc["parent"] == FAILED and doc["name"] == "retry from the sdk" and entries == [clone]

    # The SDK logs in unversioned, then calls /v2.23/... with GET and a JSON body (plus its stray "method").
    requests = sim.requests
    assert requests[0] == ("GET", "/auth.login")
    assert ("GET", "/v2.23/workers.get_all") in requests and ("GET", "/v2.23/tasks.enqueue") in requests
    assert sim.calls_to("workers.get_all")[0] == {"last_seen": 600, "method": "get"}


API_CLIENT_SCRIPT = textwrap.dedent(
    """
    import json
    from clearml.backend_api.session.client import APIClient, StrictSession

    retries = {"total": 1, "connect": 1, "read": 1, "redirect": 1, "status": 1, "backoff_factor": 0.1,
               "backoff_max": 1}
    client = APIClient(session=StrictSession(http_retries_config=retries))
    out = {
        "tasks": sorted(t.name for t in client.tasks.get_all(only_fields=["id", "name", "status"])),
        "queues": sorted(q.name for q in client.queues.get_all()),
        "workers": sorted(w.id for w in client.workers.get_all(last_seen=600)),
    }
    session = type(client.session)
    out["versions"] = [session.server_version, session.max_api_version]
    print("RESULT " + json.dumps(out))
    """
)


def test_api_client_works_against_the_simulators_default_current_server(sim_factory: Any, tmp_path: Path) -> None:
    # no `server:` block: the simulator impersonates a current clearml-server (2.3.0, API 2.34), whose login JWT
    # makes the SDK pick its newest bundled services; APIClient builds every service class at construction
    sim = sim_factory({"name": "current", "queues": [{"name": "default"}],
                       "workers": [{"id": "box:0", "queues": ["default"], "last_activity": "-5s"}],
                       "tasks": [{"name": "train", "status": "completed"}]})
    script = tmp_path / "api_client.py"
    script.write_text(API_CLIENT_SCRIPT)
    result = run_script(sim, tmp_path, script)
    assert result["versions"] == ["2.3.0", "2.34"]
    assert (result["tasks"], result["queues"], result["workers"]) == (["train"], ["default"], ["box:0"])
    info = sim.state.server
    assert (info["version"], info["api_version"]) == ("2.3.0", "2.34")
