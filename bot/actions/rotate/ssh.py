"""`ssh` rotate backend: restart an agent over ssh on a host the config names.

    - match: "gpu-*"
      type: ssh
      hosts:                          # worker-id glob -> ssh destination; the first match wins
        "gpu-box-1:*": ops@gpu-box-1.internal
        "gpu-*": ops@gpu-pool.internal
      command: [sudo, systemctl, restart, "clearml-agent@{worker}"]
      ssh: [ssh, -o, BatchMode=yes, -o, ConnectTimeout=10]   # optional (this is the default)
      timeout: 120s

Why not the `command` backend with `[ssh, "{host}", …]`: ssh joins everything after the destination into ONE
command line that the remote shell parses, so a worker registered as `gpu-x:0;touch pwned` runs `touch` there; and
`{host}` comes from the worker id, so whoever registers a worker (anyone with ClearML keys) picks where the bot
connects. Here the destination comes only from `hosts` (config), placeholder values are restricted to
`[A-Za-z0-9._:@-]` (refused and audited otherwise), and each remote argument is `shlex.quote`d, so the remote shell
sees exactly the arguments the config wrote.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.actions.base import Refusal, Step
from bot.actions.context import ActionContext
from bot.actions.rotate import WorkerFacts, backend_settings
from bot.actions.rotate.command import check_value, env_secrets, render_argv, run_argv
from bot.config import RotateBackend
from bot.durations import parse_duration

# user@host, host, host:port is not ssh syntax (use -p in `ssh`); IPv6 literals without brackets
_DESTINATION = re.compile(r"(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9.:_-]+")


class SshBackend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str
    type: Literal["ssh"]
    hosts: dict[str, str] = Field(min_length=1)  # worker-id glob -> destination (user@host)
    command: list[str] = Field(min_length=1)  # the remote command, one element per argument
    ssh: list[str] = Field(default_factory=lambda: ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
    timeout: str | float = "120s"
    env: dict[str, str] = Field(default_factory=dict)
    redact_env: list[str] = Field(default_factory=list)

    @field_validator("hosts")
    @classmethod
    def _destinations(cls, hosts: dict[str, str]) -> dict[str, str]:
        for pattern, destination in hosts.items():
            if destination.startswith("-") or not _DESTINATION.fullmatch(destination):
                raise ValueError(f"hosts[{pattern!r}] = {destination!r} is not an ssh destination (user@host)")
        return hosts


def destination_for(cfg: SshBackend, worker_id: str) -> str:
    """The configured destination for a worker id; the worker id itself is never used as a host."""
    for pattern, destination in cfg.hosts.items():
        if fnmatch.fnmatchcase(worker_id, pattern):
            return destination
    raise Refusal(f"no ssh host is configured for worker {worker_id}: add a `hosts` entry (worker-id glob -> "
                  f"user@host) to the ssh backend matching {cfg.match!r}")


def ssh_argv(cfg: SshBackend, destination: str, remote: list[str]) -> list[str]:
    """[ssh…, --, destination, one quoted command line]: the remote shell splits it back into `remote` exactly."""
    return [*cfg.ssh, "--", destination, shlex.join(remote)]


async def plan_rotation(
    ctx: ActionContext, facts: WorkerFacts, backend: RotateBackend, index: int
) -> tuple[list[Step], str, list[str]]:
    cfg: SshBackend = backend_settings(SshBackend, backend, index)
    destination = destination_for(cfg, facts.worker)
    values: dict[str, str | None] = {"worker": facts.worker, "host": destination.rsplit("@", 1)[-1], "ip": facts.ip}
    for name, value in values.items():
        check_value(name, value)
    remote = render_argv(cfg.command, values)
    argv = ssh_argv(cfg, destination, remote)
    timeout_s = parse_duration(cfg.timeout)
    ctx.secrets.extend(env_secrets(cfg.redact_env))

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        return await run_argv(list(args["argv"]), timeout_s=timeout_s, env=cfg.env, secrets=ctx.secrets)

    step = Step("ssh", "exec", {"argv": argv}, key="rotate", run=run,
                note=f"host from the config ({destination}); remote command quoted; killed after {timeout_s:g}s")
    return [step], f"Restart the agent of worker {facts.worker} over ssh on {destination}.", []
