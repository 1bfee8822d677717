"""Requirements parsing: what a task recorded of its packages (pip / conda) and its Python version."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.clearml.models import Task


@dataclass
class Requirement:
    name: str  # normalized: lower case, "_" and "." -> "-"
    spec: str  # "==2.3.0", ">=1.0", "@ https://...", "" (none)
    pinned: bool
    local: bool = False  # installed from a local path (pip freeze inside conda: "@ file:///...")
    line: str = ""


_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")
_PY_LINE = re.compile(r"^#\s*Python\s+(\d+\.\d+(?:\.\d+)?)", re.I)
_COMMIT_REF = re.compile(r"@[0-9a-f]{7,40}\b")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pip(text: str | None) -> tuple[list[Requirement], str | None]:
    """Requirements from pip requirements text, plus the Python version of the SDK's "# Python x.y" line."""
    reqs: list[Requirement] = []
    python: str | None = None
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            match = _PY_LINE.match(line)
            if match and python is None:
                python = match.group(1)
            continue
        line = line.split(" #", 1)[0].strip()
        if line.startswith(("-e ", "--editable ")):
            url = line.split(None, 1)[1]
            name = url.rsplit("#egg=", 1)[-1] if "#egg=" in url else url.rstrip("/").rsplit("/", 1)[-1]
            local = url.startswith(("file:", ".", "/"))
            reqs.append(Requirement(normalize(name), url, bool(_COMMIT_REF.search(url)) and not local, local, raw))
            continue
        if line.startswith("-"):
            continue  # --extra-index-url, -r, --find-links: options, not packages
        if line.startswith(("git+", "http://", "https://")):
            name = line.rsplit("#egg=", 1)[-1] if "#egg=" in line else line.rstrip("/").rsplit("/", 1)[-1]
            reqs.append(Requirement(normalize(name.split("@")[0]), line, bool(_COMMIT_REF.search(line)), False, raw))
            continue
        line = line.split(";", 1)[0].strip()  # environment markers
        match = _NAME.match(line)
        if not match:
            continue
        name, spec = match.group(1), match.group(3).strip()
        if spec.startswith("@"):
            url = spec[1:].strip()
            local = url.startswith(("file:", "/", "."))
            pinned = not local and (bool(_COMMIT_REF.search(url)) or url.endswith((".whl", ".tar.gz", ".zip")))
            reqs.append(Requirement(normalize(name), spec, pinned, local, raw))
            continue
        pinned = bool(re.match(r"^===?\s*[^*,\s]+$", spec))
        reqs.append(Requirement(normalize(name), spec, pinned, False, raw))
    return reqs, python


def parse_conda(text: str | None) -> list[Requirement]:
    """Packages from a conda environment / `conda list --export` text (name=version=build)."""
    reqs: list[Requirement] = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "@", "name:", "channels:", "dependencies:", "prefix:")):
            continue
        line = line.lstrip("- ").strip()
        if not line or line.endswith(":") or "://" in line:
            continue
        if "==" in line:
            name, _, version = line.partition("==")
        else:
            name, _, version = line.partition("=")
        version = version.split("=", 1)[0].strip()
        reqs.append(
            Requirement(
                normalize(name.strip()),
                f"={version}" if version else "",
                bool(version) and "*" not in version,
                False,
                raw,
            )
        )
    return reqs


def python_version(task: Task) -> tuple[str | None, str]:
    """(version, source): from script.binary ("python3.10") or the requirements' "# Python 3.10.4" line."""
    binary = str(task.get("script.binary") or "")
    match = re.search(r"python(\d+\.\d+)", binary)
    if match:
        return match.group(1), "script.binary"
    _, from_reqs = parse_pip(requirements_text(task, "pip"))
    if from_reqs:
        return from_reqs, "requirements"
    return None, ""


def requirements_text(task: Task, kind: str) -> str:
    reqs = task.get("script.requirements")
    if not isinstance(reqs, dict):
        return ""
    value = reqs.get(kind)
    if isinstance(value, list):  # some SDK versions store a list of lines
        return "\n".join(str(v) for v in value)
    return str(value or "")


def requirements_of(task: Task) -> dict[str, Requirement]:
    pip, _ = parse_pip(requirements_text(task, "pip"))
    conda = parse_conda(requirements_text(task, "conda"))
    out = {r.name: r for r in conda}
    out.update({r.name: r for r in pip})  # pip wins: it is what the agent installs by default
    return out


def diff_lines(diff: str) -> int:
    return sum(1 for line in diff.splitlines() if line.startswith(("+", "-")) and not line.startswith(("+++", "---")))
