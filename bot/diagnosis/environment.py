"""What a task did not capture that a faithful rerun needs (the gaps `repro.environment` and `task` report)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from bot.diagnosis.requirements import diff_lines, parse_conda, parse_pip, python_version, requirements_text
from bot.engine.findings import Severity

if TYPE_CHECKING:
    from bot.clearml.models import Task

GapName = Literal[
    "no_requirements",
    "local_requirements",
    "unpinned_requirements",
    "no_code",
    "no_repository",
    "no_commit",
    "uncommitted_changes",
    "no_python_version",
]

# Default severity per gap, and why:
# - no_requirements / no_code / no_commit: the run cannot be rebuilt at all (the agent installs nothing, has
#   no code, or checks out whatever the branch is today): warning.
# - local_requirements: "pkg @ file:///..." lines (pip freeze inside conda) fail to install anywhere else:
#   warning.
# - unpinned_requirements, uncommitted_changes, no_repository (a standalone script kept in the diff),
#   no_python_version: the run can be rebuilt, but may differ (newer packages, a diff that no longer
#   applies, another interpreter): info.
GAP_SEVERITY: dict[str, Severity] = {
    "no_requirements": "warning",
    "local_requirements": "warning",
    "no_code": "warning",
    "no_commit": "warning",
    "unpinned_requirements": "info",
    "uncommitted_changes": "info",
    "no_repository": "info",
    "no_python_version": "info",
}

GAP_FIX: dict[str, str] = {
    "no_requirements": "Let the SDK record the packages (do not set `sdk.development.detect_with_pip_freeze: "
    "false` together with disabled auto-detection; call `Task.add_requirements(...)` for packages it misses), or "
    "set the requirements in the task's Execution tab before cloning.",
    "local_requirements": "Replace `pkg @ file:///...` lines with pinned versions (`pkg==x.y`): set "
    "`sdk.development.detect_with_pip_freeze: false` so the SDK records imports, not a conda freeze.",
    "unpinned_requirements": "Pin versions (`pkg==x.y.z`), e.g. with `sdk.development.detect_with_pip_freeze: "
    "true` in clearml.conf, so a clone installs what the original ran with.",
    "no_code": "Run from a git repository (the SDK records repository, commit and diff), or keep the script in "
    "the task (`Task.init` stores a standalone script in the diff).",
    "no_repository": "The code is a standalone script stored in the task; consider running it from a git "
    "repository so changes are versioned.",
    "no_commit": "Push the commit and run from a clean checkout so `script.version_num` is recorded.",
    "uncommitted_changes": "Commit and push before running: an agent re-applies the stored diff, and "
    "`Failed applying git diff` is a common failure when the base commit moved or was never pushed.",
    "no_python_version": "Record the interpreter: set `script.binary` (e.g. python3.10) or run in a container "
    "image (`Task.set_base_docker(...)` / agent `--docker`).",
}



def environment_gaps(task: Task) -> dict[str, Any]:
    """Gap name -> details for one task (empty when the environment is fully captured)."""
    gaps: dict[str, Any] = {}
    pip_text, conda_text = requirements_text(task, "pip"), requirements_text(task, "conda")
    pip, _ = parse_pip(pip_text)
    conda = parse_conda(conda_text)
    packages = pip + conda
    if not packages:
        gaps["no_requirements"] = "script.requirements has no pip or conda packages"
    else:
        local = [r.line.strip() for r in packages if r.local]
        unpinned = [r.line.strip() for r in packages if not r.pinned and not r.local]
        if local:
            gaps["local_requirements"] = local
        if unpinned:
            gaps["unpinned_requirements"] = unpinned
    repository = str(task.get("script.repository") or "").strip()
    diff = str(task.get("script.diff") or "")
    if not repository:
        gaps["no_code" if not diff.strip() else "no_repository"] = (
            "no repository and no stored script" if not diff.strip() else "standalone script stored in script.diff"
        )
    else:
        if not str(task.get("script.version_num") or "").strip():
            gaps["no_commit"] = f"{repository} without a commit (script.version_num)"
        if diff.strip():
            gaps["uncommitted_changes"] = f"{diff_lines(diff)} changed lines in script.diff"
    version, _ = python_version(task)
    image = str(task.get("container.image") or "").strip()
    if not version and not image:
        gaps["no_python_version"] = "neither script.binary / '# Python' nor container.image"
    return gaps
