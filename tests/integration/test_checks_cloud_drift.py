"""agents.cloud_drift against moto's EC2 server on loopback and the ClearML simulator: the autoscaler's instances
that bill with no agent, and autoscaled workers whose instance is gone; the rotate button terminates the former."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import boto3

from bot.config import RotateBackend, RotateSettings, Settings
from bot.engine.findings import Finding
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import RunResult, run_playbooks
from bot.sim.server import SimServer
from tests.fakes.moto_server import _moto_server_process, moto_server  # noqa: F401  (fixtures)
from tests.helpers import server_settings
from tests.integration.test_actions_sim import make_world

REGION = "eu-west-1"
TAGS = {"clearml-resource": "gpu-a10*"}
CHECK = "agents.cloud_drift"


def launch(ec2: Any, *, tagged: bool = True, resource: str = "gpu-a10-spot") -> str:
    tags = [{"Key": "clearml-resource", "Value": resource}, {"Key": "Name", "Value": f"clearml {resource}"}]
    answer = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
                               TagSpecifications=[{"ResourceType": "instance", "Tags": tags}] if tagged else [])
    return str(answer["Instances"][0]["InstanceId"])


def worker(instance_id: str, task: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"dynamic_worker:gpu-a10:g5.xlarge:{instance_id}", "queues": ["gpu-a10"],
                           "last_activity": "-20s", "last_report": "-20s", "register_timeout": 3600}
    if task:
        out["task"] = task
    return out


def fleet(workers: list[dict[str, Any]]) -> dict[str, Any]:
    tasks = [{"name": w["task"], "status": "in_progress", "started": "-1h", "last_update": "-20s",
              "last_worker": w["id"], "execution": {"queue": "gpu-a10"}} for w in workers if w.get("task")]
    return {"name": "cloud", "queues": [{"name": "gpu-a10"}], "workers": workers, "tasks": tasks}


def run(sim: Any, moto: str, **params: Any) -> RunResult:
    entry = CheckEntry(check=CHECK, params={"tags": TAGS, "region": REGION, "endpoint_url": moto, **params})
    return asyncio.run(run_playbooks([Playbook(name="t", checks=[entry])], Settings(), server_settings(sim)))


def drift(result: RunResult) -> dict[str, Finding]:
    assert not [f for f in result.findings if f.severity == "error"], [f.detail for f in result.findings]
    return {f.subject.id: f for f in result.findings if f.check == CHECK}


def test_instances_without_agents_and_zombie_workers(moto_server: str) -> None:  # noqa: F811
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name=REGION)
    healthy, idle, untagged = launch(ec2), launch(ec2), launch(ec2, tagged=False)
    reclaimed, stopped = launch(ec2), launch(ec2)
    ec2.terminate_instances(InstanceIds=[reclaimed])
    ec2.stop_instances(InstanceIds=[stopped])
    vanished = "i-0123456789abcdef0"
    scenario = fleet([worker(healthy, "train-on-a10"), worker(reclaimed, "eval-on-spot"), worker(stopped),
                      worker(vanished)])
    with SimServer(scenario=scenario) as sim:
        # just launched: the idle instance is inside its boot grace, only the zombies show
        early = drift(run(sim, moto_server))
        zombies = {f"dynamic_worker:gpu-a10:g5.xlarge:{i}" for i in (reclaimed, stopped, vanished)}
        assert set(early) == zombies
        gone = early[f"dynamic_worker:gpu-a10:g5.xlarge:{reclaimed}"]
        assert gone.severity == "warning" and gone.evidence["instance"]["state"] == "terminated"
        assert gone.evidence["running_task"]["name"] == "eval-on-spot" and "clearml#1201" in gone.detail
        assert gone.actions == []  # nothing left to rotate; its task is agents.orphaned_tasks' to requeue
        assert early[f"dynamic_worker:gpu-a10:g5.xlarge:{stopped}"].actions == ["rotate"]  # a stopped one still bills
        assert "does not exist" in early[f"dynamic_worker:gpu-a10:g5.xlarge:{vanished}"].title

        sim.clock.advance(16 * 60)  # past the 15-minute boot grace: the idle instance bills for nothing
        late = drift(run(sim, moto_server))
        assert set(late) == zombies | {idle}  # the untagged instance is not the autoscaler's business
        billing = late[idle]
        assert billing.subject.kind == "worker" and billing.severity == "warning" and billing.actions == ["rotate"]
        assert billing.evidence["instance"]["type"] == "g5.xlarge" and 950 <= billing.evidence["running_s"] <= 1100
        assert f"get-console-output --instance-id {idle}" in billing.remediation
        assert untagged not in late and healthy not in str(late)
        sim.clock.advance(2 * 3600)
        assert drift(run(sim, moto_server))[idle].severity == "critical"


def test_rotate_button_terminates_the_idle_instance(tmp_path: Path, moto_server: str) -> None:  # noqa: F811
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name=REGION)
    idle = launch(ec2)
    with SimServer(scenario=fleet([])) as sim:
        sim.clock.advance(20 * 60)
        [finding] = drift(run(sim, moto_server)).values()
        backends = [{"match": "i-*", "type": "ec2", "on_rotate": "terminate", "region": REGION,
                     "endpoint_url": moto_server}]
        world = make_world(tmp_path, sim, rotate=RotateSettings(backends=[RotateBackend(**b) for b in backends]))
        try:
            out = world.act(finding.actions[0], finding.subject.id)
        finally:
            world.store.close()
        assert out.status == "ok", out
        state = ec2.describe_instances(InstanceIds=[idle])["Reservations"][0]["Instances"][0]["State"]["Name"]
        assert state in ("shutting-down", "terminated")
        assert drift(run(sim, moto_server)) == {}


def test_healthy_fleet_is_quiet_and_missing_tags_say_what_to_set(moto_server: str) -> None:  # noqa: F811
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name=REGION)
    a, b = launch(ec2), launch(ec2)
    launch(ec2, tagged=False)  # someone else's machine
    with SimServer(scenario=fleet([worker(a, "train-a"), worker(b)])) as sim:
        sim.clock.advance(30 * 60)
        assert drift(run(sim, moto_server)) == {}
        entry = CheckEntry(check=CHECK, params={"region": REGION, "endpoint_url": moto_server})
        result = asyncio.run(run_playbooks([Playbook(name="t", checks=[entry])], Settings(), server_settings(sim)))
        [error] = [f for f in result.findings if f.check == CHECK]
        assert error.severity == "error" and "needs `tags`" in error.detail


def test_the_shipped_playbook_entry_is_valid_once_uncommented() -> None:
    from bot.engine.playbook import parse_playbook

    lines = Path("playbooks/agents.yaml").read_text().splitlines()
    start = lines.index("  # - check: agents.cloud_drift")
    block = [line.replace("  # ", "  ", 1) for line in lines[start:]
             if line.startswith("  #   ") or line == lines[start]]
    book = parse_playbook("name: x\nchecks:\n" + "\n".join(block) + "\n")
    [entry] = book.checks
    assert entry.check == CHECK and entry.params["tags"] == {"Name": "clearml-autoscaler-*"}
