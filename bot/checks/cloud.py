"""Check: agents.cloud_drift — the ClearML worker list against the EC2 instances the autoscaler runs (optional; needs
AWS read access: ec2:DescribeInstances).

Two drifts cost money or capacity (clearml#1201, #979):
- an instance the autoscaler started (found by its resource tags) that runs longer than the boot grace with no
  worker registered for it: it bills while doing nothing (the agent never came up: user data failed, no route to
  the API server, wrong keys);
- a `dynamic_worker:*` worker whose instance is gone, terminated or stopped (a spot reclaim, a scale-in): the
  server keeps listing it until its registration expires, and the autoscaler counts it as capacity meanwhile.

Instances are matched to workers by the instance id the autoscaler puts in the worker id
(`dynamic_worker:<resource>:<type>:<i-…>`), else by private IP. The EC2 client, its settings and its error handling
are the rotate action's (bot/actions/rotate/ec2.py), so the rotate button acts on what this check saw.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import Field

from bot.checks.common import CheckError, Duration, OptionalDuration, Patterns, human, iso, matches_any, worker_subject
from bot.engine.findings import ActionId, Finding, Severity, Subject
from bot.engine.registry import CheckParams, check

if TYPE_CHECKING:
    from bot.clearml.models import Worker
    from bot.engine.snapshot import Snapshot

_GONE_STATES = ("shutting-down", "terminated", "stopping", "stopped")


class CloudDriftParams(CheckParams):
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="the tags your autoscaler resources put on their instances, key -> value (EC2 wildcards * and ? "
        'allowed), e.g. {"Name": "clearml-autoscaler-*"}; required',
    )
    region: str | None = Field(default=None, description="AWS region (default: boto3's, e.g. AWS_DEFAULT_REGION)")
    endpoint_url: str | None = Field(default=None, description="EC2 endpoint (a VPC endpoint; moto in tests)")
    profile: str | None = Field(default=None, description="AWS profile (default: boto3's credential chain)")
    access_key_env: str | None = Field(default=None, description="environment variable holding the access key")
    secret_key_env: str | None = Field(default=None, description="environment variable holding the secret key")
    boot_grace: Duration = Field(
        default=900.0, description="an instance may run this long before its agent must be registered"
    )
    critical_after: OptionalDuration = Field(
        default=7200.0, description="an instance without an agent for this long is critical (null: never)"
    )
    workers: Patterns = Field(
        default=["dynamic_worker:*"], description="worker id globs of autoscaled agents whose instance must exist"
    )


def _tag(instance: dict[str, Any], key: str) -> str:
    for tag in instance.get("Tags") or []:
        if tag.get("Key") == key:
            return str(tag.get("Value") or "")
    return ""


def _instance_ref(instance: dict[str, Any]) -> dict[str, Any]:
    launched = instance.get("LaunchTime")
    return {
        "id": instance.get("InstanceId"),
        "type": instance.get("InstanceType"),
        "state": (instance.get("State") or {}).get("Name"),
        "state_reason": (instance.get("StateReason") or {}).get("Message") or None,
        "lifecycle": instance.get("InstanceLifecycle") or "on-demand",
        "private_ip": instance.get("PrivateIpAddress"),
        "launched": iso(launched) if isinstance(launched, datetime) else None,
        "name": _tag(instance, "Name") or None,
    }


async def _describe(params: CloudDriftParams, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """describe_instances over every page, through the rotate action's client and error handling."""
    from bot.actions.base import BackendError, Refusal
    from bot.actions.rotate.ec2 import Ec2Backend, _aws, _instances, make_client

    cfg = Ec2Backend(match="*", type="ec2", region=params.region, endpoint_url=params.endpoint_url,
                     profile=params.profile, access_key_env=params.access_key_env,
                     secret_key_env=params.secret_key_env)
    try:
        client = make_client(cfg)

        def all_pages() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for page in client.get_paginator("describe_instances").paginate(Filters=filters):
                out.extend(_instances(page))
            return out

        result: list[dict[str, Any]] = await _aws("describe_instances", all_pages, retry_ok=True)
        return result
    except Refusal as exc:
        raise CheckError(f"{exc.reason}; set them or drop access_key_env/secret_key_env") from None
    except BackendError as exc:
        raise CheckError(
            f"{exc} (region {params.region or 'default'}): give the bot ec2:DescribeInstances there"
        ) from None


@check("agents.cloud_drift", params=CloudDriftParams)
async def agents_cloud_drift(snap: Snapshot, params: CloudDriftParams) -> list[Finding]:
    """EC2 instances of the autoscaler without a registered agent after `boot_grace` (billing for nothing), and
    autoscaled workers (`workers` globs) whose instance is gone, terminated or stopped (zombies the autoscaler still
    counts). Optional: needs `tags` and ec2:DescribeInstances.

    Instance findings have the instance id as their (worker) subject, so `rotate` with an ec2 backend matching
    `i-*` and `on_rotate: terminate` stops the bill; zombie findings name the instance's state and AWS's reason
    (e.g. Server.SpotInstanceTermination).
    """
    if not params.tags:
        raise CheckError(
            "agents.cloud_drift needs `tags`: the tags your autoscaler puts on its instances (the resource's `tags` "
            'in the autoscaler configuration), e.g. {"Name": "clearml-autoscaler-*"}'
        )
    workers = await snap.workers()
    tag_filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in sorted(params.tags.items())]
    tagged = await _describe(params, [*tag_filters, {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    from bot.actions.rotate.ec2 import instance_id_from_worker

    by_instance: dict[str, Worker] = {}
    by_ip: dict[str, Worker] = {}
    for worker in workers:
        iid = instance_id_from_worker(worker.id)
        if iid:
            by_instance[iid] = worker
        if worker.ip:
            by_ip[worker.ip] = worker
    now = snap.now
    findings: list[Finding] = []
    for instance in tagged:
        iid = str(instance.get("InstanceId"))
        if (instance.get("State") or {}).get("Name") != "running":
            continue
        if iid in by_instance or (instance.get("PrivateIpAddress") and instance["PrivateIpAddress"] in by_ip):
            continue
        launched = instance.get("LaunchTime")
        if not isinstance(launched, datetime):
            continue
        age = (now - launched.astimezone(UTC)).total_seconds()
        if age < params.boot_grace:
            continue  # still booting: the agent registers once user data has installed and started it
        severity: Severity = (
            "critical" if params.critical_after is not None and age >= params.critical_after else "warning"
        )
        ref = _instance_ref(instance)
        findings.append(
            Finding(
                check="agents.cloud_drift",
                severity=severity,
                title=f"EC2 instance {iid} ({ref['type']}) has run {human(age)} with no ClearML agent registered",
                detail=(
                    f"The autoscaler's instance {iid}{' (' + ref['name'] + ')' if ref['name'] else ''} was launched "
                    f"{human(age)} ago (boot grace {human(params.boot_grace)}) and is billed, but no worker lists it. "
                    "Its agent never came up, or died and left the machine running."
                ),
                subject=Subject(kind="worker", id=iid, name=f"EC2 {iid} (no agent)"),
                evidence={
                    "instance": ref,
                    "running_s": int(age),
                    "boot_grace_s": params.boot_grace,
                    "region": params.region,
                    "tags": params.tags,
                },
                remediation=(
                    f"See why the agent did not start: `aws ec2 get-console-output --instance-id {iid}` (user data "
                    "errors, no route to the API server, wrong keys), and the autoscaler task's log. Then terminate "
                    "the instance: `rotate` does it when actions.rotate.backends has `{match: \"i-*\", type: ec2, "
                    "on_rotate: terminate}`, or the EC2 console does."
                ),
                actions=["rotate"],
            )
        )

    autoscaled = {iid: w for iid, w in by_instance.items() if matches_any(w.id, params.workers)}
    if autoscaled:
        found = await _describe(params, [{"Name": "instance-id", "Values": sorted(autoscaled)}])
        instances = {str(i.get("InstanceId")): i for i in found}
        for iid, worker in sorted(autoscaled.items()):
            instance = instances.get(iid)
            state = (instance.get("State") or {}).get("Name") if instance else None
            if instance is not None and state not in _GONE_STATES:
                continue
            ref = _instance_ref(instance) if instance else {"id": iid, "state": "not found"}
            reason = ref.get("state_reason")
            what = f"is {state}" if instance else "does not exist (any more) in this region"
            actions: list[ActionId] = ["rotate"] if state in ("stopping", "stopped") else []
            running = f"; it still lists task {worker.task_name or worker.task_id}" if worker.task_id else ""
            findings.append(
                Finding(
                    check="agents.cloud_drift",
                    severity="warning",
                    title=f"Worker {worker.id} is a zombie: its EC2 instance {iid} {what}",
                    detail=(
                        f"The server still lists the worker (last seen {human(snap.age_s(worker.last_seen))} ago)"
                        f"{running}, but its instance {what}"
                        + (f" ({reason})" if reason else "")
                        + ". Until the registration expires the autoscaler counts it as capacity and may not start "
                        "a replacement (clearml#1201)."
                    ),
                    subject=worker_subject(worker.id),
                    evidence={
                        "worker": worker.id,
                        "worker_last_seen": iso(worker.last_seen),
                        "running_task": {"id": worker.task_id, "name": worker.task_name} if worker.task_id else None,
                        "instance": ref,
                        "region": params.region,
                    },
                    remediation=(
                        "The worker disappears 10 minutes after its last report. Requeue the task it was running "
                        "(agents.orphaned_tasks offers it)"
                        + ("; a stopped instance still costs its disks: terminate it (rotate with on_rotate: "
                           "terminate) or start it again" if actions else "")
                        + ". For spot capacity, consider an on-demand queue for long runs."
                    ),
                    actions=actions,
                )
            )
    return findings
