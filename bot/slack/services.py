"""What the listeners need, built once by `create_app` and handed to every listener through Bolt's context
(`context["services"]`): settings, store, outbox, router, work pool, playbooks, the secrets to redact, and for the
buttons: the action core's dependencies, the button signer, the incident pipeline, the scheduler, the live queues
of each server (for queue selects) and the one authorizer (with its Slack user-group cache).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.actions.policy import Authorizer
from bot.config import ServerSettings, Settings
from bot.engine.playbook import (
    IntervalSchedule,
    Playbook,
    PlaybookError,
    cached_playbook,
    find_playbooks,
    load_playbook,
)
from bot.engine.window import ReadWindow
from bot.routing import Router
from bot.slack.commands.help import PlaybookInfo
from bot.slack.commands.lookups import configured_servers
from bot.slack.delivery.sink import SlackSink
from bot.slack.workpool import WorkPool
from bot.store import Store

if TYPE_CHECKING:
    from bot.actions import ActionDeps
    from bot.incidents.pipeline import IncidentPipeline
    from bot.schedule import Scheduler
    from bot.slack.actions.buttons import ButtonMaker

log = logging.getLogger(__name__)


class QueueCache:
    """Each server's queues as (id, name), from the last run or look-up that listed them: the options of the queue
    select next to clone/requeue/reproduce buttons. Renderers must not call ClearML, so they read this."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_server: dict[str, list[tuple[str, str]]] = {}

    def set(self, server: str, queues: list[tuple[str, str]]) -> None:
        with self._lock:
            self._by_server[server] = sorted(queues, key=lambda q: q[1].lower())

    def get(self, server: str | None) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._by_server.get(server or "", []))


_PLAYBOOK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class BotServices:
    settings: Settings
    store: Store
    outbox: SlackSink
    router: Router
    pool: WorkPool
    playbooks_dir: Path
    # who may do what, with the one user-group cache: action buttons (through `action_deps`), verify_hashes,
    # incident buttons, silence / unsilence (bot/actions/policy.py)
    authorizer: Authorizer
    command: str = "/clearml"
    slack_secrets: list[str] = field(default_factory=list)
    # actions: a second connection to the store file (audit and idempotency rows commit on their own, never
    # inside another thread's incident transaction), the core's deps (one per process), the button signer.
    # The action core writes through it without a lock of its own, so it is used on the work pool's event-loop
    # thread only (`on_loop`): button clicks, the reproduce watcher, audit rows, `/clearml audit`.
    action_store: Store | None = None
    action_deps: ActionDeps | None = None
    buttons: ButtonMaker | None = None
    queues: QueueCache = field(default_factory=QueueCache)
    # set by `serve` (bot/slack/background.py): the incident pipeline and the scheduler
    incidents: IncidentPipeline | None = None
    scheduler: Scheduler | None = None
    background: Any = None
    home: Any = None  # the App Home (bot/slack/home/service.py: HomeService), set by create_app
    # ClearML reads shared by every command, run and Home view of this process (settings.read_window; 0: off)
    reads: ReadWindow = field(default_factory=lambda: ReadWindow(0))
    _servers: list[ServerSettings] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_loop(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run `fn` (blocking, e.g. an audit write) on the work pool's loop thread and wait for it: the thread that
        owns `action_store`. From the loop thread itself, just call it."""

        async def job() -> Any:
            return fn()

        return self.pool.run_sync(job, timeout=timeout)

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
    def playbook_infos(self, *, cached_only: bool = False) -> list[PlaybookInfo] | None:
        """Every playbook file in the directory, loaded fresh (edits apply without a restart); broken ones with
        their error so that `/clearml playbooks` shows what to fix. `cached_only`: None unless every file's parse is
        already cached (the slash-command ack must not parse YAML; the answer then comes from the work pool)."""
        infos = []
        for path in find_playbooks(self.playbooks_dir) if self.playbooks_dir.is_dir() else []:
            try:
                if cached_only:
                    cached = cached_playbook(path)
                    if cached is None:
                        return None
                    if isinstance(cached, PlaybookError):
                        raise cached
                    pb = cached
                else:
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

    def check_playbook_name(self, name: str) -> bool:
        """For the slash-command ack: without parsing anything, raise PlaybookError when `name` is certainly not a
        playbook (bad characters; no such file and no cached playbook of that name while every file's parse is
        cached). True when it certainly is one; False when only parsing could tell (the job will)."""
        if not _PLAYBOOK_NAME.match(name) or name.startswith("."):
            raise PlaybookError(f"`{name[:60]}` is not a playbook name (letters, digits, `-`, `_` and `.` only)")
        paths = find_playbooks(self.playbooks_dir) if self.playbooks_dir.is_dir() else []
        cached = [cached_playbook(path) for path in paths]
        for path, pb in zip(paths, cached, strict=True):
            if path.stem == name or path.name == name:
                if isinstance(pb, PlaybookError):  # known broken: say why at once
                    raise pb
                return pb is not None
        if any(isinstance(pb, Playbook) and pb.name == name for pb in cached):
            return True
        if any(pb is None for pb in cached):
            return False
        self.find_playbook(name)  # every parse is cached: this only formats the "no playbook" message
        return True

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
