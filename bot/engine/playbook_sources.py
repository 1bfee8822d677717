"""Where playbooks come from: the user's directory, else the playbooks shipped inside the package.

Order: `--playbooks DIR`, else the config file's `playbooks`, else `./playbooks` when it exists, else the shipped
ones (installed with the package as `bot/playbooks`, from the repository's top-level `playbooks/` directory). A
user's directory replaces the shipped set as a whole: a playbook left out there does not run (its schedule
included), which is how a team turns a shipped one off.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Origin = Literal["option", "config", "cwd", "shipped"]
SHIPPED_PACKAGE = "bot.playbooks"
LOCAL_DIR = "playbooks"


def shipped_playbooks_dir() -> Path | None:
    """The playbooks that came with the package, or None when this installation has none."""
    import bot

    package_root = Path(bot.__file__).resolve().parent
    candidates = [package_root / "playbooks"]  # a wheel install: bot/playbooks/*.yaml
    try:
        # an editable install maps the package `bot.playbooks` onto the repository's playbooks/
        spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) for p in spec.submodule_search_locations]
    candidates.append(package_root.parent / "playbooks")  # a source checkout on PYTHONPATH
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    return None


@dataclass(frozen=True)
class PlaybookDir:
    path: Path
    origin: Origin

    @property
    def shipped(self) -> bool:
        return self.origin == "shipped"

    def describe(self) -> str:
        """Where these playbooks came from, in words a user can act on."""
        if self.origin == "shipped":
            from bot import __version__

            return f"shipped with clearml-chatops {__version__}"
        if self.origin == "option":
            return "--playbooks"
        if self.origin == "config":
            return "the config file's `playbooks`"
        return "your ./playbooks directory"


def playbooks_location(
    explicit: str | os.PathLike[str] | None = None, configured: str | os.PathLike[str] | None = None
) -> PlaybookDir:
    """The playbooks directory in use (see the module doc for the order)."""
    if explicit:
        return PlaybookDir(Path(explicit), "option")
    if configured:
        return PlaybookDir(Path(configured), "config")
    local = Path(LOCAL_DIR)
    if local.is_dir():
        return PlaybookDir(local, "cwd")
    shipped = shipped_playbooks_dir()
    if shipped is not None:
        return PlaybookDir(shipped, "shipped")
    return PlaybookDir(local, "cwd")  # nothing anywhere: messages name ./playbooks, where a user would add some


def origin_of(directory: str | os.PathLike[str]) -> str:
    """How to name a directory's origin when only its path is known (the Slack bot keeps just the path)."""
    shipped = shipped_playbooks_dir()
    path = Path(directory)
    if shipped is not None and path.resolve() == shipped.resolve():
        return PlaybookDir(path, "shipped").describe()
    return "your own directory: it replaces the shipped playbooks"
