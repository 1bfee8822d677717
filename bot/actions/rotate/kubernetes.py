"""`kubernetes` rotate backend: delete the agent's pod so its Deployment (the clearml-agent helm chart)
recreates it.

The pod is found in `namespace` by name (`pod`, default "{host}": inside a pod the hostname, and so the
agent's default worker name, is the pod name) or by a label selector (`selector`, placeholders allowed). When
a selector matches several pods, the one named like the worker's host is taken; otherwise the bot refuses
rather than deleting a random replica. Cluster access: `api_url` + `token_env` (+ `verify_ssl`/`ca_cert`), else
`kubeconfig`/`context`, else the in-cluster service account. The kubernetes client is synchronous, so calls
run in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from bot.actions.base import BackendError, Refusal, Step
from bot.actions.context import ActionContext
from bot.actions.rotate import WorkerFacts, backend_settings
from bot.config import RotateBackend
from bot.durations import parse_duration


class KubernetesBackend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str
    type: Literal["kubernetes"]
    namespace: str = "default"
    pod: str = "{host}"  # pod name template
    selector: str | None = None  # label selector template, e.g. "app=clearml-agent"
    api_url: str | None = None
    token_env: str | None = None  # env var holding a bearer token for api_url
    verify_ssl: bool = True
    ca_cert: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    grace_period: str | float | None = None  # default: the pod's own terminationGracePeriodSeconds


def _fill(template: str, facts: WorkerFacts) -> str:
    return template.replace("{worker}", facts.worker).replace("{host}", facts.host).replace("{ip}", facts.ip or "")


def make_api(cfg: KubernetesBackend) -> tuple[Any, list[str]]:
    """(CoreV1Api, secrets to redact)."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise Refusal("the kubernetes rotate backend needs the kubernetes package: "
                      "pip install 'clearml-chatops[kubernetes]'") from None

    conf = client.Configuration()
    secrets: list[str] = []
    try:
        if cfg.api_url:
            conf.host = cfg.api_url.rstrip("/")
            conf.verify_ssl = cfg.verify_ssl
            if cfg.ca_cert:
                conf.ssl_ca_cert = cfg.ca_cert
            if cfg.token_env:
                token = os.environ.get(cfg.token_env)
                if not token:
                    raise Refusal(f"Kubernetes token: set {cfg.token_env} in the environment")
                conf.api_key = {"authorization": token}
                conf.api_key_prefix = {"authorization": "Bearer"}
                secrets.append(token)
        elif cfg.kubeconfig or cfg.context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_kube_config(config_file=cfg.kubeconfig, context=cfg.context, client_configuration=conf)
        else:
            config.load_incluster_config(client_configuration=conf)
    except config.ConfigException as exc:
        raise Refusal(f"cannot configure Kubernetes access: {exc}") from None
    return client.CoreV1Api(client.ApiClient(conf)), secrets


async def _kube(what: str, fn: Callable[[], Any], *, retry_ok: bool) -> Any:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return await asyncio.to_thread(fn)
    except ApiException as exc:
        raise BackendError(f"Kubernetes {what} failed: {exc.status} {exc.reason}", retry=retry_ok and
                           (exc.status or 0) >= 500) from None
    except HTTPError as exc:
        raise BackendError(f"Kubernetes {what} failed: cannot reach the API server ({type(exc).__name__})",
                           retry=retry_ok) from None


async def find_pod(api: Any, cfg: KubernetesBackend, facts: WorkerFacts) -> tuple[str, str]:
    """(pod name, how it was found)."""
    from kubernetes.client.exceptions import ApiException

    name = _fill(cfg.pod, facts)
    if not cfg.selector:
        try:
            pod = await asyncio.to_thread(lambda: api.read_namespaced_pod(name=name, namespace=cfg.namespace))
        except ApiException as exc:
            if exc.status == 404:
                raise Refusal(f"no pod named {name} in namespace {cfg.namespace}") from None
            raise BackendError(f"Kubernetes read pod {name} failed: {exc.status} {exc.reason}", retry=True) from None
        except Exception as exc:
            raise BackendError(f"Kubernetes read pod {name} failed: {type(exc).__name__}", retry=True) from None
        return str(pod.metadata.name), f"pod name {name}"
    selector = _fill(cfg.selector, facts)
    pods = await _kube(
        "list pods",
        lambda: api.list_namespaced_pod(namespace=cfg.namespace, label_selector=selector),
        retry_ok=True,
    )
    names = [p.metadata.name for p in pods.items if p.metadata is not None]
    if name in names:
        return name, f"selector {selector} and pod name {name}"
    if len(names) == 1:
        return names[0], f"selector {selector}"
    if not names:
        raise Refusal(f"no pod matches selector {selector} in namespace {cfg.namespace}")
    raise Refusal(
        f"selector {selector} matches {len(names)} pods in namespace {cfg.namespace} and none is named {name}: "
        "refusing to guess (narrow the selector, e.g. with {host})"
    )


async def plan_rotation(
    ctx: ActionContext, facts: WorkerFacts, backend: RotateBackend, index: int
) -> tuple[list[Step], str, list[str]]:
    cfg: KubernetesBackend = backend_settings(KubernetesBackend, backend, index)
    api, secrets = make_api(cfg)
    ctx.secrets.extend(secrets)
    pod, how = await find_pod(api, cfg, facts)
    grace = int(parse_duration(cfg.grace_period)) if cfg.grace_period is not None else None
    args: dict[str, Any] = {"name": pod, "namespace": cfg.namespace}
    if grace is not None:
        args["grace_period_seconds"] = grace

    async def run(call_args: dict[str, Any]) -> dict[str, Any]:
        await _kube(f"delete pod {pod}", lambda: api.delete_namespaced_pod(**call_args), retry_ok=False)
        return {"pod": pod, "namespace": cfg.namespace}

    step = Step("kubernetes", "core_v1.delete_namespaced_pod", args, key="rotate", run=run,
                note=f"found by {how}; its Deployment/ReplicaSet creates a fresh pod")
    return [step], f"Delete pod {pod} in namespace {cfg.namespace}, which runs worker {facts.worker}.", []
