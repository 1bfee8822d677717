"""tasks.* and events.* against the simulator: filters, paging, scroll, projection, the state machine."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
import pytest

from bot.sim.server import SimServer
from tests.helpers import sim_data, sim_request

RUNNING = "a1000000000000000000000000000001"
FAILED = "a1000000000000000000000000000002"
COMPLETED = "a1000000000000000000000000000003"
QUEUED = "a1000000000000000000000000000004"
DRAFT = "a1000000000000000000000000000005"
ARCHIVED = "a1000000000000000000000000000006"


def tasks(sim: SimServer, **payload: Any) -> list[dict[str, Any]]:
    return list(sim_data(sim, "tasks.get_all", payload)["tasks"])


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


def error(resp: httpx.Response) -> tuple[int, int, str]:
    meta = resp.json()["meta"]
    assert resp.status_code == meta["result_code"]
    return meta["result_code"], meta["result_subcode"], meta["result_msg"]


def many_tasks(n: int, status: str = "completed") -> dict[str, Any]:
    return {
        "queues": [{"name": "q"}],
        "tasks": [{"id": f"{i:032x}", "name": f"t-{i:04d}", "status": status, "last_update": -i} for i in range(n)],
    }


def test_filters_status_type_project_user(sim: SimServer) -> None:
    dataset = sim.task_id("cifar")  # a completed data_processing task in a hidden project
    assert ids(tasks(sim, status=["queued"])) == [QUEUED]
    assert set(ids(tasks(sim, status=["failed", "completed"]))) == {FAILED, COMPLETED, dataset}
    assert ids(tasks(sim, type=["testing"])) == [COMPLETED]
    assert set(ids(tasks(sim, user=["u-bob"]))) == {FAILED, QUEUED}
    nlp = sim_data(sim, "projects.get_all", {"name": "^nlp$"})["projects"][0]["id"]
    assert set(ids(tasks(sim, project=[nlp]))) == {COMPLETED, QUEUED, DRAFT}
    assert ids(tasks(sim, name="^train-vit")) == [FAILED]
    assert ids(tasks(sim, id=[DRAFT, "nope"])) == [DRAFT]
    assert ids(tasks(sim, **{"execution.queue": [sim.queue_id("default")]})) == [QUEUED]
    assert ids(tasks(sim, status=["completed"], type=["data_processing"])) == [dataset]


def test_system_tag_operators_and_hidden_tasks(sim_factory: Any) -> None:
    sim = sim_factory({"tasks": [
        {"id": "0" * 31 + "1", "name": "plain"},
        {"id": "0" * 31 + "2", "name": "archived", "system_tags": ["archived"]},
        {"id": "0" * 31 + "3", "name": "pipeline-step", "system_tags": ["hidden", "pipeline"]},
        {"id": "0" * 31 + "4", "name": "ds", "type": "data_processing", "system_tags": ["dataset"]},
        {"id": "0" * 31 + "5", "name": "old-ds", "type": "data_processing", "system_tags": ["dataset", "archived"]},
    ]})
    names = lambda **kw: sorted(t["name"] for t in tasks(sim, **kw))  # noqa: E731
    assert names() == ["archived", "ds", "old-ds", "plain"]  # hidden excluded by default
    assert "pipeline-step" in names(search_hidden=True) and names(id=["0" * 31 + "3"]) == ["pipeline-step"]
    assert names(system_tags=["-archived"]) == ["ds", "plain"]
    assert names(system_tags=["__$all", "dataset", "__$not", "archived"]) == ["ds"]
    assert names(system_tags=["__$any", "archived", "dataset"]) == ["archived", "ds", "old-ds"]
    assert names(system_tags=["__$all", "dataset", "archived"]) == ["old-ds"]
    assert names(system_tags=[None]) == ["plain"]  # null matches an empty list
    assert names(tags=["-x"]) == names()


def test_status_changed_and_last_update_comparisons(sim: SimServer) -> None:
    with sim.state.lock:
        changed = sim.state.tasks[FAILED]["status_changed"]
    after = (changed.replace(tzinfo=None)).isoformat(sep=" ")
    assert FAILED not in ids(tasks(sim, status_changed=[f">{after}"]))
    assert FAILED in ids(tasks(sim, status_changed=[f">={after}"]))
    epoch = changed.timestamp() - 1
    assert FAILED in ids(tasks(sim, status_changed=[f">{epoch}"], status=["failed"]))
    recent = ids(tasks(sim, last_update=[f">{datetime.now().timestamp() - 120}"]))
    assert RUNNING in recent and FAILED not in recent
    assert set(ids(tasks(sim, last_update=[None, f"<{epoch}"]))) >= {COMPLETED}


def test_only_fields_with_nesting_and_exclusion(sim: SimServer) -> None:
    task = tasks(sim, id=[FAILED], only_fields=["name", "script.requirements.pip", "execution.artifacts.key"])[0]
    assert task == {
        "id": FAILED,
        "name": "train-vit-failed",
        "script": {"requirements": {"pip": "torch==2.3.0\n"}},
        "execution": {"artifacts": [{"key": "dataset-list"}, {"key": "metrics"}]},
    }
    full = tasks(sim, id=[FAILED], only_fields=["-script", "-execution"])[0]
    assert "script" not in full and "execution" not in full and full["status"] == "failed"


def test_task_document_shape(sim: SimServer) -> None:
    task = sim_data(sim, "tasks.get_by_id", {"task": FAILED})["task"]
    assert task["company"] == "d1bd92a3b039400cbafc60a7a5b1e52b" and task["user"] == "u-bob"
    assert task["status_reason"] == "worker execution exit code 1"
    assert task["created"].endswith("+00:00") and len(task["created"]) == len("2020-02-24T15:05:35.426000+00:00")
    assert "started" in task and "completed" in task and "published" not in task
    artifact = task["execution"]["artifacts"][0]
    assert artifact["uri"] == f"{sim.files_url}/vision/inputs/list.json"
    assert task["output"]["destination"] == "s3://ml-artifacts/vision"
    draft = sim_data(sim, "tasks.get_by_id", {"task": DRAFT})["task"]
    assert "started" not in draft and draft["tags"] == [] and draft["execution"]["artifacts"] == []


def test_order_by_puts_empty_values_last(sim: SimServer) -> None:
    by_started = tasks(sim, order_by=["-started"], only_fields=["started"])
    stamps = [t.get("started") for t in by_started]
    filled = [s for s in stamps if s]
    assert filled == sorted(filled, reverse=True) and stamps[len(filled):] == [None] * (len(stamps) - len(filled))
    ascending = [t.get("started") for t in tasks(sim, order_by=["started"], only_fields=["started"])]
    assert ascending[0] is not None and ascending[-1] is None


def test_paging_caps_at_500_and_scroll_walks_everything(sim_factory: Any) -> None:
    sim = sim_factory(many_tasks(1200))
    assert len(tasks(sim)) == 500  # page_size omitted: the server still caps
    assert len(tasks(sim, page=0, page_size=2000)) == 500
    pages = [ids(tasks(sim, page=p, page_size=500, order_by=["-last_update"], only_fields=["id"])) for p in range(3)]
    assert [len(p) for p in pages] == [500, 500, 200]
    assert pages[0][0] == f"{0:032x}" and len({i for page in pages for i in page}) == 1200
    resp = sim_request(sim, "tasks.get_all", {"page": 1})
    assert error(resp)[:2] == (400, 11)
    assert error(sim_request(sim, "tasks.get_all", {"page": -1, "page_size": 5}))[:2] == (400, 12)

    seen: list[str] = []
    scroll_id = None
    while True:
        data = sim_data(sim, "tasks.get_all", {"scroll_id": scroll_id, "size": 400, "only_fields": ["id"]})
        scroll_id = data["scroll_id"]
        if not data["tasks"]:
            break
        seen += ids(data["tasks"])
    assert len(seen) == len(set(seen)) == 1200
    again = sim_data(sim, "tasks.get_all", {"scroll_id": scroll_id, "size": 10, "refresh_scroll": True})
    assert len(again["tasks"]) == 1200  # refresh re-reads everything up to the current position
    bad = sim_request(sim, "tasks.get_all", {"scroll_id": None})
    assert error(bad)[:2] == (400, 12) and "size parameter" in error(bad)[2]


def test_get_by_id_of_a_missing_task(sim: SimServer) -> None:
    assert error(sim_request(sim, "tasks.get_by_id", {"task": "nope"})) == (400, 101, "Invalid task id: ids=(nope)")
    assert error(sim_request(sim, "tasks.get_by_id", {}))[:2] == (400, 12)


def test_clone_follows_the_server(sim: SimServer) -> None:
    new_id = sim_data(sim, "tasks.clone", {"task": FAILED, "new_task_name": "retry of vit"})["id"]
    clone = sim_data(sim, "tasks.get_by_id", {"task": new_id})["task"]
    source = sim_data(sim, "tasks.get_by_id", {"task": FAILED})["task"]
    assert clone["status"] == "created" and clone["name"] == "retry of vit"
    assert clone["parent"] == FAILED and clone["project"] == source["project"]
    assert clone["script"] == source["script"] and clone["container"] == source["container"]
    assert [a["key"] for a in clone["execution"]["artifacts"]] == ["dataset-list"]  # output artifacts dropped
    assert "queue" not in clone["execution"] and clone["output"] == {"destination": "s3://ml-artifacts/vision"}
    assert "started" not in clone and "status_changed" not in clone and clone["user"] == "u-alice"
    named = sim_data(sim, "tasks.clone", {"task": FAILED, "new_project_name": "retries"})
    assert named["new_project"]["name"] == "retries"
    assert error(sim_request(sim, "tasks.clone", {"task": "nope"}))[:2] == (400, 101)


def test_enqueue_state_machine(sim: SimServer) -> None:
    res = sim_data(sim, "tasks.enqueue", {"task": FAILED, "queue": sim.queue_id("gpu"), "verify_watched_queue": True})
    assert res["queued"] == 1 and res["updated"] == 1 and res["queue_watched"] is True
    fields = res["fields"]
    assert fields["status"] == "queued" and fields["enqueue_status"] == "failed"
    assert fields["execution.queue"] == sim.queue_id("gpu") and fields["last_changed_by"] == "u-alice"
    with sim.state.lock:
        entries = [e["task"] for e in sim.state.queues[sim.queue_id("gpu")]["entries"]]
    assert entries == [FAILED]
    # already queued in that queue
    assert error(sim_request(sim, "tasks.enqueue", {"task": FAILED, "queue": sim.queue_id("gpu")}))[:2] == (400, 706)
    resp = sim_request(sim, "tasks.enqueue", {"task": COMPLETED, "queue": sim.queue_id("gpu")})
    assert error(resp) == (
        400, 110, "Invalid task status (Invalid status change): current_status=completed, new_status=queued"
    )
    forced = sim_data(sim, "tasks.enqueue", {"task": COMPLETED, "queue": sim.queue_id("gpu"), "force": True})
    assert forced["fields"]["status"] == "queued"
    assert error(sim_request(sim, "tasks.enqueue", {"task": "nope"}))[:2] == (400, 101)
    assert error(sim_request(sim, "tasks.enqueue", {"task": DRAFT, "queue": "nope"}))[:2] == (400, 701)
    assert sim_data(sim, "tasks.get_by_id", {"task": DRAFT})["task"]["status"] == "created"  # reverted


def test_enqueue_by_name_creates_the_queue_and_default_queue(sim: SimServer) -> None:
    res = sim_data(sim, "tasks.enqueue", {"task": DRAFT, "queue_name": "brand-new", "verify_watched_queue": True})
    assert res["queue_watched"] is False
    created = sim_data(sim, "queues.get_all", {"name": "^brand-new$"})["queues"]
    assert created and created[0]["entries"][0]["task"] == DRAFT
    both = sim_request(sim, "tasks.enqueue", {"task": DRAFT, "queue": "x", "queue_name": "y"})
    assert error(both)[:2] == (400, 12)
    clone = sim_data(sim, "tasks.clone", {"task": DRAFT})["id"]
    res = sim_data(sim, "tasks.enqueue", {"task": clone})
    assert res["fields"]["execution.queue"] == sim.queue_id("default")


def test_dequeue_returns_to_the_previous_status(sim: SimServer) -> None:
    sim_data(sim, "tasks.enqueue", {"task": FAILED, "queue": sim.queue_id("gpu")})
    res = sim_data(sim, "tasks.dequeue", {"task": FAILED})
    assert res["dequeued"] == 1 and res["fields"]["status"] == "failed"
    with sim.state.lock:
        assert sim.state.queues[sim.queue_id("gpu")]["entries"] == []
    assert sim_data(sim, "tasks.dequeue", {"task": DRAFT}) == {"dequeued": 1, "updated": 0}
    sim_data(sim, "tasks.enqueue", {"task": DRAFT})
    assert sim_data(sim, "tasks.dequeue", {"task": DRAFT, "new_status": "stopped"})["fields"]["status"] == "stopped"


def test_stop_semantics(sim: SimServer) -> None:
    # a running task with a live worker: only the status message changes, the agent does the rest
    res = sim_data(sim, "tasks.stop", {"task": RUNNING})
    assert res["fields"]["status"] == "in_progress" and res["fields"]["status_message"] == "stopping"
    # a queued task is dequeued and stopped at once
    res = sim_data(sim, "tasks.stop", {"task": QUEUED})
    assert res["fields"]["status"] == "stopped" and res["fields"]["status_message"] == "Stopped by Alice"
    with sim.state.lock:
        assert sim.state.queues[sim.queue_id("default")]["entries"] == []
    # a running task whose worker stopped updating it for 10 minutes is stopped immediately
    sim.clock.advance(601)
    assert sim_data(sim, "tasks.stop", {"task": RUNNING})["fields"]["status"] == "stopped"
    assert error(sim_request(sim, "tasks.stop", {"task": DRAFT}))[:2] == (400, 110)
    assert sim_data(sim, "tasks.stop", {"task": DRAFT, "force": True})["fields"]["status"] == "stopped"


def test_reset_clears_the_run(sim: SimServer) -> None:
    res = sim_data(sim, "tasks.reset", {"task": FAILED})
    assert res["fields"]["status"] == "created" and res["fields"]["status_reason"] == "reset"
    task = sim_data(sim, "tasks.get_by_id", {"task": FAILED})["task"]
    for gone in ("started", "completed", "last_worker", "active_duration"):
        assert gone not in task
    assert [a["key"] for a in task["execution"]["artifacts"]] == ["dataset-list"]
    assert sim_data(sim, "events.get_task_log", {"task": FAILED})["total"] == 0
    sim_data(sim, "tasks.completed", {"task": FAILED, "force": True, "publish": True})
    assert error(sim_request(sim, "tasks.reset", {"task": FAILED}))[:2] == (400, 110)
    assert sim_data(sim, "tasks.reset", {"task": FAILED, "force": True})["fields"]["status"] == "created"


def test_agent_status_calls_and_edits(sim: SimServer) -> None:
    started = sim_data(sim, "tasks.started", {"task": DRAFT})
    assert started["started"] == 1 and started["fields"]["status"] == "in_progress"
    assert error(sim_request(sim, "tasks.started", {"task": FAILED}))[:2] == (400, 110)
    sim_data(sim, "tasks.ping", {"task": DRAFT})
    failed = sim_data(sim, "tasks.failed", {"task": DRAFT, "status_reason": "worker execution exit code 2"})
    assert failed["fields"]["status"] == "failed" and "completed" in failed["fields"]
    assert sim_data(sim, "tasks.completed", {"task": COMPLETED})["fields"]["status"] == "completed"
    stopped = sim_data(sim, "tasks.stopped", {"task": RUNNING, "status_reason": "user abort"})
    assert stopped["fields"]["status"] == "stopped"
    # edits need a draft unless forced
    assert error(sim_request(sim, "tasks.edit", {"task": FAILED, "comment": "x"}))[:2] == (400, 110)
    edited = sim_data(sim, "tasks.edit", {"task": FAILED, "force": True, "script": {"branch": "fix"}})
    assert edited["fields"]["script"]["branch"] == "fix"
    assert edited["fields"]["script"]["entry_point"] == "train_vit.py"  # merged, not replaced
    req = sim_data(sim, "tasks.set_requirements", {"task": FAILED, "requirements": {"pip": "timm\n"}})
    assert req["fields"] == {"script.requirements": {"pip": "timm\n"}}
    assert error(sim_request(sim, "tasks.set_requirements", {"task": COMPLETED, "requirements": {}}))[:2] == (
        400, 122)


def test_console_log_paging(sim: SimServer) -> None:
    log = sim_data(sim, "events.get_task_log", {"task": FAILED})
    assert log["total"] == 3 and log["returned"] == 3
    newest = log["events"][0]
    assert newest["msg"].startswith("ModuleNotFoundError") or newest["msg"].startswith("Traceback")
    assert newest["type"] == "log" and newest["task"] == FAILED and isinstance(newest["timestamp"], int)
    first = sim_data(sim, "events.get_task_log", {"task": FAILED, "batch_size": 1, "navigate_earlier": False})
    assert [e["msg"] for e in first["events"]] == ["Starting training"]
    rest = sim_data(sim, "events.get_task_log", {"task": FAILED, "batch_size": 1, "navigate_earlier": False,
                                                 "from_timestamp": first["events"][0]["timestamp"]})
    assert len(rest["events"]) == 2  # both lines share a timestamp: none is lost between batches
    assert error(sim_request(sim, "events.get_task_log", {"task": "nope"}))[:2] == (400, 101)


def test_add_batch_takes_newline_delimited_json(sim: SimServer) -> None:
    events = [
        {"type": "log", "task": DRAFT, "timestamp": 1_700_000_000_000, "level": "info", "msg": "hello"},
        {"type": "training_stats_scalar", "task": DRAFT, "metric": "loss", "variant": "train", "value": 0.5,
         "iter": 7},
        {"type": "log", "task": "nope", "msg": "lost"},
    ]
    body = "\n".join(json.dumps(e) for e in events).encode()
    resp = httpx.post(sim.api_url + "/events.add_batch", content=body,
                      headers={"Authorization": f"Bearer {sim.issue_token()}"})
    assert resp.json()["data"]["added"] == 2 and resp.json()["data"]["errors"] == 1
    log = sim_data(sim, "events.get_task_log", {"task": DRAFT})
    assert [e["msg"] for e in log["events"]] == ["hello"]
    task = sim_data(sim, "tasks.get_by_id", {"task": DRAFT})["task"]
    assert task["last_iteration"] == 7
    assert [v["value"] for m in task["last_metrics"].values() for v in m.values()] == [0.5]


@pytest.mark.parametrize("endpoint", ["tasks.get_all", "tasks.get_all_ex"])
def test_get_all_ex_matches_get_all(sim: SimServer, endpoint: str) -> None:
    assert ids(sim_data(sim, endpoint, {"status": ["queued"]})["tasks"]) == [QUEUED]


def test_get_all_ex_joins_the_project_name(sim: SimServer) -> None:
    task = sim_data(sim, "tasks.get_all_ex", {"id": [QUEUED], "only_fields": ["name", "project.name"]})["tasks"][0]
    assert task["project"]["name"] == "nlp" and set(task) == {"id", "name", "project"}


def test_models_and_projects(sim: SimServer) -> None:
    models = sim_data(sim, "models.get_all", {"name": "resnet", "only_fields": ["name", "uri", "ready", "task"]})
    assert models["models"][0]["task"] == RUNNING and models["models"][0]["ready"] is False
    visible = {p["name"] for p in sim_data(sim, "projects.get_all", {})["projects"]}
    assert visible == {"vision", "nlp"}
    hidden = {p["name"] for p in sim_data(sim, "projects.get_all", {"search_hidden": True})["projects"]}
    assert {"vision/.datasets", "vision/.datasets/cifar"} <= hidden
    assert error(sim_request(sim, "projects.get_by_id", {"project": "nope"}))[:2] == (400, 401)
