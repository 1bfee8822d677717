"""`ec2` rotate backend: reboot, stop or terminate the agent's EC2 instance through boto3.

The instance is found, in the configured order (`find_by`), from:
- the worker id: the ClearML AWS autoscaler names its agents `<prefix>:<resource>:<instance type>:<i-…>`;
- a tag: `tag: <key>` with `tag_value` (default "{host}") — for agents started another way;
- the private IP the ClearML server saw the agent come from (only right without NAT in between).
Terminate is what autoscaled fleets want (the autoscaler spins up a fresh instance, like its own
spin_down_worker); reboot suits hand-made instances whose agent starts at boot. boto3 is synchronous, so calls
run in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.actions.base import BackendError, Refusal, Step
from bot.actions.context import ActionContext
from bot.actions.rotate import WorkerFacts, backend_settings
from bot.config import RotateBackend

INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_ALIVE_STATES = ["pending", "running", "stopping", "stopped"]


class Ec2Backend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str
    type: Literal["ec2"]
    on_rotate: Literal["reboot", "stop", "terminate"] = "reboot"
    region: str | None = None
    endpoint_url: str | None = None  # a VPC endpoint, or moto in tests
    profile: str | None = None
    access_key_env: str | None = None  # else boto3's default chain (env, profile, instance role)
    secret_key_env: str | None = None
    find_by: list[Literal["worker_id", "tag", "private_ip"]] = Field(
        default_factory=lambda: ["worker_id", "tag", "private_ip"]
    )
    tag: str | None = None  # tag key to look the instance up by, e.g. Name
    tag_value: str = "{host}"


def instance_id_from_worker(worker_id: str) -> str | None:
    """`dynamic_worker:aws4gpu:g4dn.4xlarge:i-07cf…` -> `i-07cf…` (any ':'-separated part that is one)."""
    for part in reversed(worker_id.split(":")):
        if INSTANCE_ID.match(part):
            return part
    return None


_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def make_client(cfg: Ec2Backend) -> Any:
    """A boto3 EC2 client, cached per settings: building a session costs ~0.3 s, and clients are thread-safe
    and refresh role credentials themselves."""
    import boto3

    kwargs: dict[str, Any] = {}
    if cfg.access_key_env or cfg.secret_key_env:
        key = os.environ.get(cfg.access_key_env or "")
        secret = os.environ.get(cfg.secret_key_env or "")
        if not key or not secret:
            raise Refusal(f"EC2 credentials: set {cfg.access_key_env} and {cfg.secret_key_env} in the environment")
        kwargs.update(aws_access_key_id=key, aws_secret_access_key=secret)
    # The ambient AWS_* variables are part of the key: boto3 reads them when the client is built.
    ambient = tuple(os.environ.get(n) for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"))
    cache_key = (cfg.profile, cfg.region, cfg.endpoint_url, tuple(sorted(kwargs.items())), ambient)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            session = boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region)
            client = _clients[cache_key] = session.client("ec2", endpoint_url=cfg.endpoint_url, **kwargs)
    return client


async def _aws(what: str, fn: Callable[[], Any], *, retry_ok: bool) -> Any:
    """Run a boto3 call in a thread; botocore failures become BackendError with AWS's own words."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    try:
        return await asyncio.to_thread(fn)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise BackendError(f"EC2 {what} failed: {err.get('Code')}: {err.get('Message')}") from None
    except NoCredentialsError:
        raise BackendError(f"EC2 {what} failed: no AWS credentials (set access_key_env/secret_key_env, a profile "
                           "or an instance role)") from None
    except EndpointConnectionError as exc:
        where = exc.kwargs.get("endpoint_url")
        raise BackendError(f"EC2 {what} failed: cannot reach {where}", retry=retry_ok) from None
    except BotoCoreError as exc:
        raise BackendError(f"EC2 {what} failed: {exc}", retry=retry_ok) from None


def _instances(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for r in answer.get("Reservations", []) for i in r.get("Instances", [])]


async def find_instance(ctx: ActionContext, cfg: Ec2Backend, facts: WorkerFacts, client: Any) -> tuple[dict, str]:
    """(instance description, how it was found); Refusal when none or several match."""
    tried: list[str] = []
    for method in cfg.find_by:
        filters: list[dict[str, Any]]
        if method == "worker_id":
            instance_id = instance_id_from_worker(facts.worker)
            if not instance_id:
                tried.append("no instance id in the worker id")
                continue

            def by_id(iid: str = instance_id) -> Any:
                return client.describe_instances(InstanceIds=[iid])

            try:
                found = _instances(await _aws("describe_instances", by_id, retry_ok=True))
            except BackendError as exc:
                if "InvalidInstanceID" in str(exc):
                    raise Refusal(f"instance {instance_id} (from the worker id) does not exist in EC2 "
                                  f"{cfg.region or ''}".rstrip()) from None
                raise
            how = f"instance id in the worker id ({instance_id})"
        elif method == "tag":
            if not cfg.tag:
                continue
            value = cfg.tag_value.replace("{host}", facts.host).replace("{worker}", facts.worker)
            filters = [{"Name": f"tag:{cfg.tag}", "Values": [value]}]
            how = f"tag {cfg.tag}={value}"
            found = await _describe(client, filters)
        else:
            if not facts.ip:
                tried.append("private IP unknown (worker not listed)")
                continue
            filters = [{"Name": "private-ip-address", "Values": [facts.ip]}]
            how = f"private IP {facts.ip}"
            found = await _describe(client, filters)
        found = [i for i in found if i.get("State", {}).get("Name") != "terminated"]
        if len(found) == 1:
            return found[0], how
        if len(found) > 1:
            ids = ", ".join(i["InstanceId"] for i in found)
            raise Refusal(f"{how} matches several EC2 instances ({ids}): refusing to guess")
        tried.append(f"{how}: no live instance")
    raise Refusal(f"cannot find the EC2 instance of worker {facts.worker}: {'; '.join(tried) or 'no lookup applies'}")


async def _describe(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    all_filters = [*filters, {"Name": "instance-state-name", "Values": _ALIVE_STATES}]
    return _instances(
        await _aws("describe_instances", lambda: client.describe_instances(Filters=all_filters), retry_ok=True)
    )


def _name(instance: dict[str, Any]) -> str:
    for tag in instance.get("Tags") or []:
        if tag.get("Key") == "Name":
            return str(tag.get("Value"))
    return ""


async def plan_rotation(
    ctx: ActionContext, facts: WorkerFacts, backend: RotateBackend, index: int
) -> tuple[list[Step], str, list[str]]:
    cfg: Ec2Backend = backend_settings(Ec2Backend, backend, index)
    client = make_client(cfg)
    instance, how = await find_instance(ctx, cfg, facts, client)
    iid = instance["InstanceId"]
    state = instance.get("State", {}).get("Name", "?")
    kind = instance.get("InstanceType", "?")
    label = f"EC2 instance {iid} ({kind}, {state}{', ' + _name(instance) if _name(instance) else ''})"
    if cfg.on_rotate == "reboot" and state != "running":
        raise Refusal(f"{label} is {state}: it cannot be rebooted")
    if cfg.on_rotate == "stop" and state in ("stopping", "stopped"):
        raise Refusal(f"{label} is already {state}")
    method = {"reboot": "reboot_instances", "stop": "stop_instances", "terminate": "terminate_instances"}[
        cfg.on_rotate
    ]

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        fn = getattr(client, method)
        answer = await _aws(method, lambda: fn(InstanceIds=list(args["InstanceIds"])), retry_ok=False)
        changes = answer.get("TerminatingInstances") or answer.get("StoppingInstances") or []
        return {"instance": iid, "state": [c.get("CurrentState", {}).get("Name") for c in changes]}

    notes = [f"found by {how}"]
    if cfg.on_rotate == "terminate":
        notes.append("the instance and its local disk are gone for good; the autoscaler starts a fresh one")
    step = Step("ec2", f"ec2.{method}", {"InstanceIds": [iid]}, key="rotate", run=run,
                note=f"{label}" + (f", region {cfg.region}" if cfg.region else ""))
    verb = {"reboot": "Reboot", "stop": "Stop", "terminate": "Terminate"}[cfg.on_rotate]
    return [step], f"{verb} {label}, which runs worker {facts.worker}.", notes
