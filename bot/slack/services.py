"""What the listeners need, built once by `create_app` and handed to every listener through Bolt's context
(`context["services"]`): settings, store, outbox, router, work pool, playbooks, and the secrets to redact.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import ServerSettings, Settings
from bot.engine.lookups import configured_servers
from bot.engine.playbook import IntervalSchedule, Playbook, PlaybookError, find_playbooks, load_playbook
from bot.slack.messages.help import PlaybookInfo
from bot.slack.outbox import Outbox
from bot.slack.routing import Router
from bot.slack.workpool import WorkPool
from bot.store import Store

log = logging.getLogger(__name__)

_PLAYBOOK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class BotServices:
    settings: Settings
    store: Store
    outbox: Outbox
    router: Router
    pool: WorkPool
    playbooks_dir: Path
    command: str = "/clearml"
    slack_secrets: list[str] = field(default_factory=list)
    _servers: list[ServerSettings] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- servers and secrets ----------------------------------------------------------------------------------
    @property
    def servers(self) -> list[ServerSettings]:
        """Configured ClearML servers, resolved once (resolution may parse clearml.conf: not in the ack path)."""
        with self._lock:
            if self._servers is None:
                self._servers = configured_servers(self.settings)
            return self._servers

    def secrets(self) -> list[str]:
        """Everything that must never reach Slack: ClearML keys of every server and the Slack tokens."""
        out = list(self.slack_secrets)
        for server in self.servers:
            out.extend(server.secrets())
        return out

    # -- playbooks --------------------------------------------------------------------------------------------
    def playbook_infos(self) -> list[PlaybookInfo]:
        """Every playbook file in the directory, loaded fresh (edits apply without a restart); broken ones with
        their error so that `/clearml playbooks` shows what to fix."""
        infos = []
        for path in find_playbooks(self.playbooks_dir) if self.playbooks_dir.is_dir() else []:
            try:
                pb = load_playbook(path)
            except PlaybookError as exc:
                infos.append(PlaybookInfo(name=path.stem, error=str(exc)))
                continue
            schedule = pb.cron or (f"every {pb.schedule.every}" if isinstance(pb.schedule, IntervalSchedule) else "")
            infos.append(PlaybookInfo(pb.name, pb.description, len(pb.checks), schedule, pb.channel or ""))
        return infos

    def playbooks(self) -> list[Playbook]:
        """The playbooks that load (for thresholds shared with look-ups)."""
        out = []
        for path in find_playbooks(self.playbooks_dir) if self.playbooks_dir.is_dir() else []:
            try:
                out.append(load_playbook(path))
            except PlaybookError:
                continue
        return out

    def find_playbook(self, name: str) -> Playbook:
        """A playbook by name from the playbooks directory only: Slack users cannot point the bot at other files."""
        if not _PLAYBOOK_NAME.match(name) or name.startswith("."):
            raise PlaybookError(f"`{name[:60]}` is not a playbook name (letters, digits, `-`, `_` and `.` only)")
        names = []
        for path in find_playbooks(self.playbooks_dir) if self.playbooks_dir.is_dir() else []:
            names.append(path.stem)
            if path.stem == name or path.name == name:
                return load_playbook(path)
        for path in find_playbooks(self.playbooks_dir) if self.playbooks_dir.is_dir() else []:
            try:
                pb = load_playbook(path)
            except PlaybookError:
                continue
            if pb.name == name:
                return pb
        import difflib

        guess = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" Did you mean `{guess[0]}`?" if guess else ""
        listing = f" Available: {', '.join(f'`{n}`' for n in names)}." if names else " There are no playbooks yet."
        raise PlaybookError(f"There is no playbook `{name}`.{hint}{listing}")


def slack_secrets_from_env() -> list[str]:
    return [v for k in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET") if (v := os.environ.get(k))]
