"""Checks register here by id: `@check("agents.stale", params=StaleParams)`.

A check is `async def fn(snapshot, params) -> list[Finding]`. It reads ClearML state only through the
snapshot (which fetches each collection once per run, shared by all checks) and never touches Slack.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bot.engine.findings import AREAS, Finding

if TYPE_CHECKING:
    from bot.engine.snapshot import Snapshot

CheckFunc = Callable[["Snapshot", Any], Awaitable[list[Finding]]]


class CheckParams(BaseModel):
    """Base for every check's parameters: unknown keys are an error (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid")

    # Duration parameters (seconds) the check compares ClearML ages against (a worker's silence, an entry's wait):
    # data served from the shared read window shifts those ages, so a run may reuse data only a small fraction of
    # the shortest of them old (bot/engine/runner.py: reuse_limit_s).
    age_thresholds: ClassVar[tuple[str, ...]] = ()

    max_findings: int = Field(
        default=100, ge=1, description="report at most this many problems, the worst first, plus one summary"
    )


class NoParams(CheckParams):
    pass


@dataclass(frozen=True)
class CheckSpec:
    id: str
    func: CheckFunc
    params_model: type[CheckParams]
    summary: str
    description: str

    @property
    def severities(self) -> dict[str, str]:
        """What this check reports at info, warning and critical, and why (bot/checks/severity.py, handed over by
        the check library when it loads: see `set_severity_policy`)."""
        return dict(_SEVERITY_POLICY.get(self.id, {}))

    @property
    def area(self) -> str:
        return self.id.split(".", 1)[0]


REGISTRY: dict[str, CheckSpec] = {}

# check id -> level -> why; the check library installs its table when it loads (bot/checks/__init__.py), so the
# registry reads it without importing the checks.
_SEVERITY_POLICY: dict[str, dict[str, str]] = {}

# The check library, loaded by name: it is a plug-in of the engine (its modules register themselves with `check`),
# and the engine uses no name from it, so the package layering stays one way (checks -> engine).
CHECK_LIBRARY = "bot.checks"


def set_severity_policy(policy: dict[str, dict[str, str]]) -> None:
    """Install the check library's severity table (what each check reports at info, warning and critical)."""
    global _SEVERITY_POLICY
    _SEVERITY_POLICY = policy


def check(check_id: str, params: type[CheckParams] = NoParams) -> Callable[[CheckFunc], CheckFunc]:
    area = check_id.split(".", 1)[0]
    if area not in AREAS or "." not in check_id:
        raise ValueError(f"check id {check_id!r} must start with one of {', '.join(a + '.' for a in AREAS)}")

    def register(func: CheckFunc) -> CheckFunc:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"check {check_id} must be an async function")
        if check_id in REGISTRY and REGISTRY[check_id].func is not func:
            raise ValueError(f"check id {check_id!r} registered twice")
        doc = inspect.cleandoc(func.__doc__ or "").strip()
        summary, _, rest = doc.partition("\n")
        REGISTRY[check_id] = CheckSpec(check_id, func, params, summary.strip(), rest.strip())
        return func

    return register


def load_builtin_checks() -> dict[str, CheckSpec]:
    """Import the check library so every built-in check is registered."""
    importlib.import_module(CHECK_LIBRARY)  # importing it registers the checks

    return REGISTRY
