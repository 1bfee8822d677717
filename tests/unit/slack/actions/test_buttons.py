"""Which action buttons a finding gets (bot/slack/actions/buttons.py). The "Restart agent" button: only when a rotate
backend is configured for that worker, and its confirm dialog says exactly what will run (the backend, the EC2
instance, the pod, or the command after substitution). Every button is bound to the channel it is posted in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.actions import ActionDeps
from bot.actions.tokens import Signer
from bot.config import ActionsSettings, RotateBackend, RotateSettings, Settings
from bot.engine.findings import Finding, Subject
from bot.slack.actions.buttons import ButtonMaker
from bot.slack.actions.messages import actions_block
from bot.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.db")
    yield s
    s.close()


def maker(store: Store, *backends: dict[str, Any]) -> ButtonMaker:
    settings = Settings(actions=ActionsSettings(rotate=RotateSettings(
        backends=[RotateBackend.model_validate(b) for b in backends])))
    return ButtonMaker(settings, store, ActionDeps(signer=Signer(b"unit-test-signing-key-0123456789")))


def stale(worker: str, ip: str | None = "10.0.0.7") -> Finding:
    return Finding(check="agents.stale", severity="critical", title=f"Agent {worker} silent for 9m",
                   subject=Subject(kind="worker", id=worker, name=worker),
                   evidence={"ip": ip, "queues": ["gpu"]}, remediation="Restart it.", actions=["rotate"])


def confirm_text(buttons: list[Any]) -> str:
    block = actions_block(buttons, block_id="b")
    assert block is not None
    [button] = [e for e in block.to_dict()["elements"] if e["type"] == "button"]
    return str(button["confirm"]["text"]["text"])


def test_no_backend_configured_means_no_restart_button(store: Store) -> None:
    assert maker(store).for_finding(stale("gpu-box-1:0"), "prod") == []
    # a backend for other workers only: still none for this one
    other = {"match": "cpu-*", "type": "command", "argv": ["ssh", "{host}", "reboot"]}
    assert maker(store, other).for_finding(stale("gpu-box-1:0"), "prod") == []


def test_command_backend_confirm_shows_the_argv_after_substitution(store: Store) -> None:
    backend = {"match": "gpu-*", "type": "command",
               "argv": ["ssh", "ops@{ip}", "sudo", "systemctl", "restart", "clearml-agent@{host}"]}
    buttons = maker(store, backend).for_finding(stale("gpu-box-1:0"), "prod")
    assert [b.text for b in buttons] == ["Restart agent gpu-box-1:0"]
    text = confirm_text(buttons)
    assert "ssh ops@10.0.0.7 sudo systemctl restart clearml-agent@gpu-box-1" in text
    assert "command" in text and "gpu-*" in text and "EC2" not in text


def test_ec2_backend_confirm_names_the_instance_from_the_worker_id(store: Store) -> None:
    worker = "dynamic_worker:gpu-a10:g5.xlarge:i-0abc12de34f567890"
    backend = {"match": "dynamic_worker:*", "type": "ec2", "on_rotate": "terminate", "region": "eu-west-1"}
    text = confirm_text(maker(store, backend).for_finding(stale(worker), "prod"))
    assert "Terminate EC2 instance i-0abc12de34f567890" in text and "eu-west-1" in text
    assert "command" not in text and "pod" not in text


def test_ec2_backend_without_an_instance_id_says_how_it_will_be_found(store: Store) -> None:
    backend = {"match": "gpu-*", "type": "ec2", "find_by": ["tag", "private_ip"], "tag": "Name"}
    text = confirm_text(maker(store, backend).for_finding(stale("gpu-box-2:1"), "prod"))
    assert "Reboot the EC2 instance tagged Name=gpu-box-2" in text


def test_kubernetes_backend_confirm_names_the_pod(store: Store) -> None:
    backend = {"match": "k8s-*", "type": "kubernetes", "namespace": "ml", "pod": "clearml-agent-{host}"}
    text = confirm_text(maker(store, backend).for_finding(stale("k8s-7f9:0"), "prod"))
    assert "Delete pod clearml-agent-k8s-7f9 in namespace ml" in text


def test_a_worker_the_command_would_refuse_gets_no_button(store: Store) -> None:
    backend = {"match": "*", "type": "command", "argv": ["ssh", "{host}", "reboot"]}
    assert maker(store, backend).for_finding(stale("-oProxyCommand=evil:0"), "prod") == []


def test_every_button_of_a_finding_is_bound_to_the_channel_it_is_posted_in(store: Store) -> None:
    # the "Move … to front" buttons of a backlog too: a value copied into another channel is refused at the click
    backlog = Finding(
        check="queues.backlog", severity="warning", title="Queue gpu: 3 waiting",
        subject=Subject(kind="queue", id="q1", name="gpu"), actions=["prioritize"],
        evidence={"entries": [{"position": p, "task": {"id": f"t{p}", "name": f"train-{p}"}} for p in range(3)]},
    )
    signer = Signer(b"unit-test-signing-key-0123456789")
    buttons = ButtonMaker(Settings(), store, ActionDeps(signer=signer)).for_finding(backlog, "prod", channel="C0ML")
    assert [b.text for b in buttons] == ["Move train-1 to front", "Move train-2 to front"]
    assert [signer.verify(b.value).bound.get("c") for b in buttons] == ["C0ML", "C0ML"]
