"""Pure pieces: plan rendering and digests, the @action registry, confirm dialogs, backend selection, worker
id parsing, task references."""

from __future__ import annotations

import pytest

from bot.actions import REGISTRY, confirm_spec
from bot.actions.base import ActionParams, Named, Plan, Ref, Refusal, Step, action
from bot.actions.rotate import select_backend
from bot.actions.rotate.ec2 import instance_id_from_worker
from bot.config import RotateBackend
from bot.diagnosis.refs import task_id_of

TID = "3f2a9c1e" + "0" * 24


def test_plan_lines_name_the_exact_calls() -> None:
    plan = Plan(action="clone", server="prod", subject=TID, subject_label="task t", title="Clone task?",
                summary="Copy it.", verb="Cloned",
                steps=[Step("clearml", "tasks.clone", {"task": TID, "new_task_comment": "Cloned by @ana"}, key="clone"),
                       Step("clearml", "tasks.enqueue", {"task": Ref("clone", "id", "<new task>"),
                                                         "queue": Named("ab" * 16, "gpu"), "force": False})],
                notes=["careful"])
    assert plan.lines() == [
        f'1. tasks.clone(task={TID}, new_task_comment="Cloned by @ana")',
        "2. tasks.enqueue(task=<new task>, queue=gpu (abababab), force=false)",
    ]
    assert "note: careful" in plan.render()
    same = Plan(**{**plan.__dict__})
    assert same.digest == plan.digest
    same.steps = plan.steps[:1]
    assert same.digest != plan.digest


def test_registry_has_every_finding_action_with_its_danger_and_choices() -> None:
    assert sorted(REGISTRY) == ["abort", "clone", "prioritize", "reproduce", "requeue", "rotate"]
    assert {a for a, s in REGISTRY.items() if s.danger} == {"abort", "rotate"}
    assert REGISTRY["clone"].user_choices == {"queue"} and REGISTRY["abort"].user_choices == set()
    with pytest.raises(ValueError, match="not one of"):
        action("explode", params=ActionParams, subject="task", title="x")
    with pytest.raises(ValueError, match="user_choices"):
        action("clone", params=ActionParams, subject="task", title="x", user_choices=("queue",))


def test_confirm_dialogs_say_what_happens_without_calling_anything() -> None:
    abort = confirm_spec("abort", "task train (3f2a9c1e)")
    assert abort.style == "danger" and "Stop task train" in abort.text and len(abort.title) <= 24
    requeue = confirm_spec("requeue", "task t", {"queue": "gpu"})
    assert requeue.style == "primary" and "queue gpu" in requeue.text
    assert "requeue the task" in confirm_spec("rotate", "worker w:0", {"requeue": True}).text


def test_backend_selection_is_the_first_matching_glob() -> None:
    backends = [RotateBackend(match="dynamic_worker:*", type="ec2"),
                RotateBackend(match="k8s-*", type="kubernetes"),
                RotateBackend(match="*", type="command", argv=["true"])]
    assert select_backend(backends, "dynamic_worker:aws:g4dn:i-0123456789abcdef0")[0] == 0
    assert select_backend(backends, "k8s-agent-1:0")[0] == 1
    assert select_backend(backends, "K8S-agent:0")[0] == 2  # case-sensitive
    with pytest.raises(Refusal, match="no rotate backend"):
        select_backend(backends[:2], "gpu-box:0")


def test_instance_ids_and_task_references() -> None:
    assert instance_id_from_worker("dynamic_worker:aws4gpu:g4dn.4xlarge:i-07cf1a2b3c4d5e6f7") == "i-07cf1a2b3c4d5e6f7"
    assert instance_id_from_worker("dynamic_worker:r:t:i-0123abcd") == "i-0123abcd"
    assert instance_id_from_worker("gpu-box:0") is None
    assert instance_id_from_worker("x:i-nothex00") is None
    url = f"https://app.clearml.acme/projects/p1/experiments/{TID}/output/log"
    assert task_id_of(url) == TID and task_id_of(f" {TID} ") == TID
