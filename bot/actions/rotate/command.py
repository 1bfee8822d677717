"""`command` rotate backend: run a configured argv template, e.g.
`[ssh, "{host}", sudo, systemctl, restart, clearml-agent]`.

Never through a shell: the template is split into arguments by the config author, placeholders ({worker},
{host} = worker id before the first ':', {ip}) are substituted inside each argument, and the list goes to
exec directly. Placeholder values may only contain letters, digits and `. _ : @ -`: the argv may wrap ssh, which
joins its arguments into a remote shell command line, so a worker id such as "x; rm -rf /" or "$(reboot)" is
refused (and audited), not passed. A value starting with "-" is refused too, since ssh/systemctl would read it as an
option ("-oProxyCommand=…" is the classic argument injection). For ssh, prefer the `ssh` backend (ssh.py): it
quotes the remote command and takes the host from a configured mapping, never from the worker id.
Output (stdout+stderr) is captured with a timeout and redacted before anyone sees it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.actions.base import BackendError, Refusal, Step
from bot.actions.context import ActionContext
from bot.actions.rotate import WorkerFacts, backend_settings
from bot.config import RotateBackend
from bot.durations import parse_duration
from bot.redact import redact

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
KNOWN = ("worker", "host", "ip")
MAX_OUTPUT = 4000
# Environment variables whose values never appear in reported output.
_SECRETISH = re.compile(r"(?i)(secret|token|password|passwd|key|credential)")


class CommandBackend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str
    type: Literal["command"]
    argv: list[str] = Field(min_length=1)
    timeout: str | float = "120s"
    env: dict[str, str] = Field(default_factory=dict)  # added to the bot's environment
    redact_env: list[str] = Field(default_factory=list)  # more variable names whose values are hidden


def render_argv(template: list[str], values: dict[str, str | None]) -> list[str]:
    """Substitute placeholders argument by argument; Refusal for unknown placeholders or unsafe values."""
    out = []
    for arg in template:
        unknown = [name for name in PLACEHOLDER.findall(arg) if name not in KNOWN]
        if unknown:
            raise Refusal(f"rotate command argv {arg!r} uses unknown placeholder {{{unknown[0]}}} "
                          f"(known: {', '.join('{' + k + '}' for k in KNOWN)})")

        def sub(match: re.Match[str]) -> str:
            value = values.get(match.group(1))
            if value is None:
                raise Refusal(f"rotate command needs {{{match.group(1)}}} but the worker's {match.group(1)} is "
                              "unknown (the server no longer lists the worker)")
            return value

        rendered = PLACEHOLDER.sub(sub, arg)
        out.append(rendered)
    return out


# What a placeholder value may contain. Worker ids are chosen by whoever registers a worker (anyone with ClearML
# keys); when the argv wraps ssh, the remote side joins the arguments into one shell command line, so a `;`, `$(…)`
# or quote in a value would run there. Host names, worker ids (`gpu-box-1:gpu0`), IPs and users fit this set.
SAFE_VALUE = re.compile(r"[A-Za-z0-9._:@-]+")


def check_value(name: str, value: str | None) -> None:
    if value is None:
        return
    if value.startswith("-"):
        raise Refusal(f"refusing to run the rotate command: {name} {value!r} starts with '-' and would be read "
                      "as an option")
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise Refusal(f"refusing to run the rotate command: {name} {value!r} contains control characters")
    if not SAFE_VALUE.fullmatch(value):
        bad = sorted({c for c in value if not SAFE_VALUE.fullmatch(c)})
        raise Refusal(f"refusing to run the rotate command: {name} {value!r} contains {''.join(bad)!r}; placeholder "
                      "values may only use letters, digits and . _ : @ - (a remote shell would interpret the rest)")


def env_secrets(extra_names: list[str]) -> list[str]:
    return [v for k, v in os.environ.items() if v and (_SECRETISH.search(k) or k in extra_names)]


async def run_argv(argv: list[str], *, timeout_s: float, env: dict[str, str], secrets: list[str]) -> dict[str, Any]:
    """exec argv (no shell), capture output, kill the whole process group on timeout."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group, so a timeout kills ssh and its children
        )
    except OSError as exc:
        raise BackendError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    try:
        raw, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raw = b""
        try:
            raw, _ = await asyncio.wait_for(proc.communicate(), 5)
        except TimeoutError:
            pass
        output = _clean(raw, secrets)
        raise BackendError(f"rotate command timed out after {timeout_s:g}s and was killed", retry=True,
                           output=output) from None
    output = _clean(raw, secrets)
    if proc.returncode != 0:
        raise BackendError(f"rotate command exited with code {proc.returncode}", output=output)
    return {"returncode": proc.returncode, "output": output}


def _clean(raw: bytes, secrets: list[str]) -> str:
    text = raw.decode("utf-8", errors="replace")
    if len(text) > MAX_OUTPUT:
        text = "…" + text[-MAX_OUTPUT:]  # the end says why it failed
    return redact(text.strip(), secrets)


async def plan_rotation(
    ctx: ActionContext, facts: WorkerFacts, backend: RotateBackend, index: int
) -> tuple[list[Step], str, list[str]]:
    cfg: CommandBackend = backend_settings(CommandBackend, backend, index)
    values = facts.placeholders()
    for name, value in values.items():
        check_value(name, value)
    argv = render_argv(cfg.argv, values)
    timeout_s = parse_duration(cfg.timeout)
    ctx.secrets.extend(env_secrets(cfg.redact_env))
    ctx.secrets.extend(v for k, v in cfg.env.items() if _SECRETISH.search(k) or k in cfg.redact_env)

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        return await run_argv(list(args["argv"]), timeout_s=timeout_s, env=cfg.env, secrets=ctx.secrets)

    step = Step("command", "exec", {"argv": argv}, key="rotate", run=run,
                note=f"no shell; output captured, killed after {timeout_s:g}s")
    return [step], f"Run the configured rotate command for worker {facts.worker}.", []
