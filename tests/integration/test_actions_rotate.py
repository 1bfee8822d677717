"""rotate against real protocol endpoints: EC2 on moto's server (boto3 over HTTP), Kubernetes on a fake API
server (the official kubernetes client over HTTP), and real subprocesses for the command backend. The
ClearML side is the simulator, so "requeue the task the agent was running" is asserted on its state."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest

from bot.config import RotateBackend, RotateSettings
from bot.sim.server import SimServer
from tests.fakes.kube_api import FakeKube, fake_kube  # noqa: F401  (fixture)
from tests.fakes.moto_server import _moto_server_process, moto_server  # noqa: F401  (fixtures)
from tests.integration.test_actions_sim import World, make_world, scenario

REGION = "eu-west-1"


@contextlib.contextmanager
def _world(tmp_path: Path, backends: list[dict[str, Any]], *, workers: Sequence[dict[str, Any]] = (),
           tasks: Sequence[dict[str, Any]] = (), requeue: bool = False, **kw: Any) -> Iterator[World]:
    with SimServer(scenario=scenario(workers=workers, tasks=tasks)) as sim:
        rotate = RotateSettings(backends=[RotateBackend(**b) for b in backends], requeue_task=requeue)
        world = make_world(tmp_path, sim, rotate=rotate, **kw)
        sim.reset_calls()
        try:
            yield world
        finally:
            world.store.close()


def _instance(ec2: Any, name: str) -> dict[str, Any]:
    answer = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
                               TagSpecifications=[{"ResourceType": "instance",
                                                   "Tags": [{"Key": "Name", "Value": name}]}])
    return answer["Instances"][0]


def _state(ec2: Any, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def _spot_worker(worker_id: str, ip: str = "10.1.2.3") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    workers = [{"id": worker_id, "ip": ip, "queues": ["gpu"], "last_activity": "-15s", "last_report": "-15s",
                "task": "train-on-spot"}]
    tasks = [{"name": "train-on-spot", "project": "vision", "status": "in_progress", "execution": {"queue": "gpu"},
              "last_worker": worker_id, "started": "-1h", "last_update": "-15s"}]
    return workers, tasks


# ================================================================================================ EC2


def test_ec2_terminate_from_autoscaler_worker_id_then_requeue_its_task(tmp_path: Path, moto_server: str) -> None:  # noqa: F811
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name=REGION)
    instance = _instance(ec2, "autoscaled")
    worker_id = f"dynamic_worker:aws4gpu:g4dn.xlarge:{instance['InstanceId']}"
    workers, tasks = _spot_worker(worker_id)
    backends = [{"match": "dynamic_worker:*", "type": "ec2", "on_rotate": "terminate", "region": REGION,
                 "endpoint_url": moto_server},
                {"match": "*", "type": "command", "argv": ["false"]}]
    with _world(tmp_path, backends, workers=workers, tasks=tasks, requeue=True) as world:
        out = world.click(world.token("rotate", worker_id))
        assert out.status == "ok", out
        assert _state(ec2, instance["InstanceId"]) == "terminated"
        # the task the agent ran: stop(force) leaves it "stopping" (last report 15 s ago), reset, enqueue
        tid = world.tid("train-on-spot")
        assert [n for n, _ in world.writes()] == ["tasks.stop", "tasks.reset", "tasks.enqueue"]
        assert world.task(tid)["status"] == "queued" and tid in world.entries("gpu")
        assert "ec2: ec2.terminate_instances(InstanceIds=[" + instance["InstanceId"] + "])" in "\n".join(out.plan)
        assert out.text.startswith("Rotated by @ana")
        assert world.audit()[0]["outcome"] == "ok"


def test_ec2_reboot_found_by_tag(tmp_path: Path, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from moto.ec2.models.instances import Instance

    rebooted: list[str] = []
    original = Instance.reboot

    def spy(self: Any) -> None:  # moto keeps a rebooted instance "running": record that it was rebooted
        rebooted.append(self.id)
        original(self)

    monkeypatch.setattr(Instance, "reboot", spy)
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name=REGION)
    instance = _instance(ec2, "gpu-host-7")
    _instance(ec2, "gpu-host-8")
    backends = [{"match": "gpu-host-*", "type": "ec2", "region": REGION, "endpoint_url": moto_server,
                 "tag": "Name", "find_by": ["worker_id", "tag"]}]
    with _world(tmp_path, backends) as world:
        out = world.act("rotate", "gpu-host-7:gpu0")
        assert out.status == "ok", out
        assert rebooted == [instance["InstanceId"]]
        assert _state(ec2, instance["InstanceId"]) == "running"
        assert "note: found by tag Name=gpu-host-7" in out.plan


def test_ec2_stop_found_by_private_ip_and_dry_run_touches_nothing(tmp_path: Path, moto_server: str) -> None:  # noqa: F811
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name=REGION)
    instance = _instance(ec2, "hand-made")
    workers, tasks = _spot_worker("box-17:0", ip=instance["PrivateIpAddress"])
    backends = [{"match": "box-*", "type": "ec2", "region": REGION, "endpoint_url": moto_server,
                 "on_rotate": "stop"}]
    with _world(tmp_path, backends, workers=workers, tasks=tasks) as world:
        dry = world.act("rotate", "box-17:0", {"requeue": True}, dry_run=True)
        assert dry.status == "dry_run", dry
        assert "ec2.stop_instances" in dry.text and "tasks.enqueue(" in dry.text
        assert _state(ec2, instance["InstanceId"]) == "running" and world.writes() == []
        out = world.act("rotate", "box-17:0")
        assert out.status == "ok", out
        assert _state(ec2, instance["InstanceId"]) in ("stopping", "stopped")
        # requeue not asked (config default false): the task is left alone and the plan said so
        assert world.writes() == [] and any("left orphaned" in line for line in out.plan)
        assert world.task("train-on-spot")["status"] == "in_progress"


def test_ec2_unknown_instance_is_refused(tmp_path: Path, moto_server: str) -> None:  # noqa: F811
    backends = [{"match": "dynamic_worker:*", "type": "ec2", "region": REGION, "endpoint_url": moto_server,
                 "find_by": ["worker_id"]}]
    with _world(tmp_path, backends) as world:
        out = world.act("rotate", "dynamic_worker:aws:g4dn.xlarge:i-0123456789abcdef0")
        assert out.status == "refused" and "i-0123456789abcdef0" in out.text


# ================================================================================================ Kubernetes


def _kube_backend(kube: FakeKube, **extra: Any) -> dict[str, Any]:
    return {"match": "clearml-agent-*", "type": "kubernetes", "namespace": "clearml", "api_url": kube.url,
            "token_env": "KUBE_TEST_TOKEN", **extra}


def test_kubernetes_deletes_the_agents_pod(tmp_path: Path, fake_kube: FakeKube,  # noqa: F811
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBE_TEST_TOKEN", fake_kube.token or "")
    labels = {"app": "clearml-agent", "pod-template-hash": "6d8f9c"}
    fake_kube.add_pod("clearml-agent-6d8f9c-x2k4p", "clearml", labels)
    fake_kube.add_pod("clearml-agent-6d8f9c-b7q1z", "clearml", labels)
    fake_kube.add_pod("clearml-agent-6d8f9c-x2k4p", "other-namespace", labels)
    backends = [_kube_backend(fake_kube, selector="app=clearml-agent")]
    with _world(tmp_path, backends) as world:
        out = world.click(world.token("rotate", "clearml-agent-6d8f9c-x2k4p:0"))
        assert out.status == "ok", out
        assert fake_kube.deletes == [{"namespace": "clearml", "name": "clearml-agent-6d8f9c-x2k4p",
                                      "body": fake_kube.deletes[0]["body"]}]
        delete = next(r for r in fake_kube.requests if r.method == "DELETE")
        assert delete.headers["authorization"] == f"Bearer {fake_kube.token}"
        names = fake_kube.pod_names("clearml")
        assert "clearml-agent-6d8f9c-x2k4p" not in names and len(names) == 2  # the ReplicaSet replaced it
        assert "other-namespace" not in str(fake_kube.deletes)
        assert fake_kube.token not in json.dumps(world.audit(), default=str)


def test_kubernetes_refuses_to_guess_and_dry_run_deletes_nothing(tmp_path: Path, fake_kube: FakeKube,  # noqa: F811
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBE_TEST_TOKEN", fake_kube.token or "")
    for name in ("agent-a", "agent-b"):
        fake_kube.add_pod(name, "clearml", {"app": "clearml-agent"})
    fake_kube.add_pod("clearml-agent-solo", "clearml", {"app": "solo"})
    backends = [_kube_backend(fake_kube, selector="app=clearml-agent")]
    with _world(tmp_path, backends) as world:
        ambiguous = world.act("rotate", "clearml-agent-zzz:0")
        assert ambiguous.status == "refused" and "matches 2 pods" in ambiguous.text
        world.settings.actions.rotate.backends = [RotateBackend(**_kube_backend(fake_kube))]  # by pod name
        dry = world.act("rotate", "clearml-agent-solo:0", dry_run=True)
        assert dry.status == "dry_run" and "core_v1.delete_namespaced_pod(name=clearml-agent-solo" in dry.text
        missing = world.act("rotate", "clearml-agent-gone:0")
        assert missing.status == "refused" and "no pod named clearml-agent-gone" in missing.text
        assert fake_kube.deletes == []


# ================================================================================================ command


def _recorder(tmp_path: Path, *extra: str) -> list[str]:
    """argv that records its own arguments as JSON (no braces in the code: they are placeholder syntax)."""
    code = "import sys, json; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:])); print(sys.argv[2])"
    return [sys.executable, "-c", code, str(tmp_path / "argv.json"), *extra]


@pytest.mark.parametrize("worker_id", ["x; touch {p}/pwned", "$(touch {p}/pwned)", "`touch {p}/pwned`:0",
                                       "a' && touch {p}/pwned && echo 'b", "gpu-x:0;touch {p}/pwned"])
def test_command_backend_refuses_shell_metacharacters_in_worker_ids(tmp_path: Path, worker_id: str) -> None:
    """Issue #14: placeholder values are restricted to [A-Za-z0-9._:@-] (an argv wrapping ssh would hand them to a
    remote shell), so these worker ids are refused and audited, and nothing runs. (Before: passed as one argument.)"""
    worker = worker_id.replace("{p}", str(tmp_path))
    backends = [{"match": "*", "type": "command", "argv": _recorder(tmp_path, "{worker}", "{host}")}]
    with _world(tmp_path, backends) as world:
        out = world.act("rotate", worker)
        assert out.status == "refused" and "may only use letters, digits" in out.text, out
        assert not (tmp_path / "argv.json").exists() and not (tmp_path / "pwned").exists()
        assert world.audit()[0]["outcome"] == "refused"
        ok = world.act("rotate", "gpu-box-1:gpu0")  # an ordinary worker id still works
        assert ok.status == "ok" and json.loads((tmp_path / "argv.json").read_text()) == ["gpu-box-1:gpu0",
                                                                                          "gpu-box-1"]


def _fake_ssh(tmp_path: Path) -> Path:
    """An ssh stand-in that behaves like ssh where it matters: options, `--`, the destination, then the rest joined
    with spaces into one line that a shell runs (locally here). It records the destination and that line."""
    script = tmp_path / "fake-ssh"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, subprocess, sys\n"
        "args = sys.argv[1:]\n"
        "i = args.index('--')\n"
        "destination, line = args[i + 1], ' '.join(args[i + 2:])\n"
        f"open({str(tmp_path / 'ssh.json')!r}, 'w').write(json.dumps([destination, line]))\n"
        "sys.exit(subprocess.call(['sh', '-c', line]))\n"
    )
    script.chmod(0o755)
    return script


def test_an_ssh_like_command_backend_cannot_be_steered_by_a_worker_id(tmp_path: Path) -> None:
    """The attack from the issue: `argv: [ssh, "{host}", …, "clearml-agent@{worker}"]` and a worker registered as
    `gpu-x:0;touch pwned`: the remote shell would run `touch`. Refused now, before ssh is started."""
    ssh = _fake_ssh(tmp_path)
    pwned = tmp_path / "pwned"
    backends = [{"match": "*", "type": "command", "argv": [str(ssh), "--", "{host}", "echo", "restart",
                                                            "clearml-agent@{worker}"]}]
    with _world(tmp_path, backends) as world:
        out = world.act("rotate", f"gpu-x:0;touch {pwned}")
        assert out.status == "refused" and not pwned.exists() and not (tmp_path / "ssh.json").exists()


def test_ssh_backend_takes_the_host_from_the_config_and_quotes_the_remote_command(tmp_path: Path) -> None:
    ssh = _fake_ssh(tmp_path)
    pwned = tmp_path / "pwned"
    backends = [{"match": "*", "type": "ssh", "ssh": [str(ssh)],
                 "hosts": {"gpu-x:*": "ops@gpu-x.internal", "evil*": "ops@bastion.internal"},
                 # a config argument with shell syntax in it stays one literal argument on the remote side
                 "command": ["echo", "restart", "clearml-agent@{worker}", f"a;touch {pwned}", "$(id)"]}]
    with _world(tmp_path, backends) as world:
        out = world.act("rotate", "gpu-x:0")
        assert out.status == "ok", out
        destination, line = json.loads((tmp_path / "ssh.json").read_text())
        assert destination == "ops@gpu-x.internal"  # from `hosts`, not from the worker id
        assert f"'a;touch {pwned}' '$(id)'" in line  # quoted for the remote shell
        assert any(f"restart clearml-agent@gpu-x:0 a;touch {pwned} $(id)" in d for d in out.detail), out.detail
        assert not pwned.exists()
        hostile = world.act("rotate", f"evil:0;touch {pwned}")  # matches a hosts glob, still refused
        assert hostile.status == "refused" and not pwned.exists()
        unknown = world.act("rotate", "cpu-1:0")  # no hosts entry: refused, never "ssh cpu-1"
        assert unknown.status == "refused" and "no ssh host is configured for worker cpu-1:0" in unknown.text
        assert [r["outcome"] for r in world.audit()[:2]] == ["refused", "refused"]


def test_command_backend_refuses_option_like_values_and_redacts_output(tmp_path: Path) -> None:
    code = ("import sys; print('restarting ' + sys.argv[1]); "
            "print('password=hunter2hunter2 token: xoxb-1234-5678-abcdefgh'); sys.exit(3)")
    noisy = [sys.executable, "-c", code, "{host}"]
    backends = [{"match": "*", "type": "command", "argv": noisy}]
    with _world(tmp_path, backends) as world:
        dash = world.act("rotate", "-oProxyCommand=reboot:0")
        assert dash.status == "refused" and "would be read as an option" in dash.text
        out = world.act("rotate", "gpu-box:0")
        assert out.status == "failed" and "exited with code 3" in out.text
        everything = json.dumps([out.model_dump(mode="json"), world.audit()], default=str)
        assert "restarting gpu-box" in everything
        assert "hunter2hunter2" not in everything and "xoxb-1234" not in everything


def test_command_backend_timeout_kills_and_offers_retry(tmp_path: Path) -> None:
    slow = [sys.executable, "-c", "import time; print('connecting', flush=True); time.sleep(30)"]
    backends = [{"match": "*", "type": "command", "argv": slow, "timeout": "0.5s"}]
    with _world(tmp_path, backends) as world:
        out = world.act("rotate", "gpu-box:0")
        assert out.status == "failed" and out.retry and "timed out after 0.5s" in out.text
        assert any("connecting" in line for line in out.detail)


def test_command_backend_config_errors_are_clear(tmp_path: Path) -> None:
    backends = [{"match": "*", "type": "command", "argv": ["ssh", "{hostname}", "reboot"]}]
    with _world(tmp_path, backends) as world:
        out = world.act("rotate", "gpu-box:0")
        assert out.status == "refused" and "unknown placeholder {hostname}" in out.text
        world.settings.actions.rotate.backends = [RotateBackend(match="*", type="command", argv=[],
                                                                on_rotate="x")]
        bad = world.act("rotate", "gpu-box:0")
        assert bad.status == "refused" and "actions.rotate.backends[0]" in bad.text
