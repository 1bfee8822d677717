"""The App Home's behaviour: gather, render, publish; the buttons; the refresh after each scheduled run.

- Opening the tab (`app_home_opened`) publishes the viewer's Home view. The ClearML part comes from `FleetCache`
  (one fetch per server per `ttl_s`, shared by every viewer and by concurrent opens); the store part (incidents,
  schedules, the last digest) is read fresh, it costs no network call. A viewer whose view was published less than
  `republish_s` ago is not published again (a flurry of tab switches costs nothing).
- After each scheduled run the cache is dropped and the viewers of the last `viewers_s` see their tab updated
  (one ClearML fetch for all of them). Nobody looking: nothing happens, so an idle bot costs what it did.
- Buttons (status, run a playbook, incident acknowledge / snooze / resolve): the outcome is shown at the top of
  the presser's own Home view. A Home tab has no channel to post an ephemeral message in, and a Home view is per
  user, so only the presser sees it: the Home tab's equivalent of an ephemeral answer. "Running…" shows first.
  The incident buttons go through the same authorisation, pipeline and audit as in the incident thread.

Everything runs on the work pool: the listener only hands over (Slack's 3 s ack is never at stake).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bot.clearml.errors import ClearMLError, CredentialsError
from bot.config import ConfigError, ServerSettings
from bot.engine.playbook import PlaybookError
from bot.errors import LookupInputError
from bot.redact import redact
from bot.slack.commands.lookups import Meta, open_snapshot, pick_server
from bot.slack.delivery.sink import SlackWriteError
from bot.slack.home.messages import (
    HOME_INC_ACK,
    HOME_INC_RESOLVE,
    HOME_INC_SNOOZE,
    FleetState,
    HomeData,
    HomeResult,
    render_home,
)
from bot.slack.home.state import FleetCache, fetch_fleet, incident_lines, last_digest, next_runs
from bot.slack.incidents.messages import ACK_ACTION, RESOLVE_ACTION
from bot.slack.workpool import PoolBusyError

if TYPE_CHECKING:
    from bot.slack.services import BotServices

log = logging.getLogger(__name__)

INCIDENT_ACTIONS = {HOME_INC_ACK: ACK_ACTION, HOME_INC_SNOOZE: "inc_snooze_1h", HOME_INC_RESOLVE: RESOLVE_ACTION}
MAX_VIEWERS = 50  # refreshed after a scheduled run: the most recent viewers only


class HomeService:
    def __init__(
        self,
        services: BotServices,
        *,
        ttl_s: float = 30.0,
        republish_s: float = 10.0,
        viewers_s: float = 3600.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.services = services
        # the Home tab's fleet states live in the process's shared read window (no cache of its own)
        self.cache = FleetCache(self._fetch, ttl_s=ttl_s, clock=clock, window=services.reads)
        self.republish_s = republish_s
        self.viewers_s = viewers_s
        self._clock = clock
        self.results: dict[str, HomeResult] = {}
        self.viewers: dict[str, float] = {}  # user -> when they last opened the tab
        self._published: dict[str, float] = {}
        self._busy: set[str] = set()
        self._lock = threading.Lock()  # viewers and busy: touched by listener threads, the loop and the scheduler
        self.publishes = 0

    # -- data ---------------------------------------------------------------------------------------------------
    async def _fetch(self, server: ServerSettings) -> FleetState:
        try:
            playbooks = await self.services.pool.io(self.services.playbooks)
            return await fetch_fleet(self.services.settings, server, playbooks, self.services.reads)
        except Exception as exc:  # a bug must not blank everyone's Home tab: show it as this server's state
            log.exception("the Home tab's look at %s failed", server.name)
            return FleetState(server=server.name, web_url=server.web_url, fetched_at=_now(), reachable=False,
                              error=redact(f"{type(exc).__name__}: {exc}", self.services.secrets())
                              + " (a bug in the bot: the log has details)")

    async def gather(self, *, max_age_s: float | None = None) -> HomeData:
        services = self.services
        servers = await services.pool.io(lambda: services.servers)
        fleets = await asyncio.gather(*(self.cache.get(s, max_age_s=max_age_s) for s in servers))
        now = datetime.now(UTC)

        def from_store() -> tuple[Any, Any, Any, Any]:
            from bot.slack.incidents.service import open_incidents

            incidents = sorted(open_incidents(services), key=lambda v: (-_rank(v.severity), v.opened_at))
            names = [i.name for i in services.playbook_infos() if not i.error]
            return incident_lines(services, incidents), next_runs(services, now), last_digest(services), names

        incidents, runs, digest, playbooks = await services.pool.io(from_store)
        return HomeData(now=now, fleets=tuple(fleets), incidents=tuple(incidents), next_runs=tuple(runs),
                        digest=digest, playbooks=tuple(playbooks), command=services.command)

    # -- publishing ---------------------------------------------------------------------------------------------
    async def publish(self, user: str, *, force: bool = False, max_age_s: float | None = None) -> bool:
        """Publish `user`'s Home view; False when throttled (published moments ago) or Slack refused."""
        last = self._published.get(user)
        if not force and last is not None and self._clock() - last < self.republish_s:
            return False
        self._published[user] = self._clock()
        data = await self.gather(max_age_s=max_age_s)
        view = render_home(data, self.results.get(user))
        try:
            await self.services.pool.io(self.services.outbox.publish_home, user, view)
        except SlackWriteError as exc:
            log.warning("could not publish the Home tab of %s: %s", user, exc.error)
            return False
        self.publishes += 1
        return True

    def opened(self, user: str) -> None:
        """`app_home_opened` (from the listener's thread): publish on the work pool."""
        with self._lock:
            self.viewers[user] = self._clock()
        self._submit(lambda: self.publish(user), f"home {user}")

    def refresh_after_run(self) -> int:
        """After a scheduled run: fresh data for the recent viewers (none: nothing to do). Returns how many."""
        cutoff = self._clock() - self.viewers_s
        with self._lock:
            for user in [u for u, t in self.viewers.items() if t < cutoff]:
                del self.viewers[user]
            recent = sorted(self.viewers, key=lambda u: -self.viewers[u])[:MAX_VIEWERS]
        if not recent:
            return 0

        async def job() -> None:
            self.cache.invalidate()
            for user in recent:
                await self.publish(user, force=True)

        self._submit(job, "home refresh")
        return len(recent)

    def _submit(self, job: Any, name: str) -> bool:
        try:
            self.services.pool.submit(job, name=name)
        except PoolBusyError:
            log.warning("%s dropped: the work pool is full", name)
            return False
        return True

    # -- buttons ------------------------------------------------------------------------------------------------
    def pressed(self, user: str, action_id: str, value: str) -> None:
        """A Home button (from the listener's thread)."""
        from bot.slack.home.messages import HOME_DISMISS, HOME_REFRESH, HOME_RUN, HOME_STATUS

        with self._lock:
            self.viewers[user] = self._clock()
        if action_id == HOME_REFRESH:
            # data at most `republish_s` old: fresher than the cache, yet many presses still share one fetch
            self._submit(lambda: self.publish(user, force=True, max_age_s=self.republish_s), f"home refresh {user}")
            return
        if action_id == HOME_DISMISS:
            self.results.pop(user, None)
            self._submit(lambda: self.publish(user, force=True), f"home {user}")
            return
        if action_id not in (HOME_STATUS, HOME_RUN, *INCIDENT_ACTIONS):
            return
        with self._lock:
            if user in self._busy:
                return  # one request at a time per person: their tab already says "running…"
            self._busy.add(user)
        if action_id == HOME_STATUS:
            what, work = f"`status` of {value[:60]}", lambda: self._status(user, value)
        elif action_id == HOME_RUN:
            what, work = f"`run {value[:60]}`", lambda: self._run(user, value)
        else:
            what, work = f"incident #{value[:12]}", lambda: self._incident(user, action_id, value)
        if not self._submit(lambda: self._guarded(user, what, work), f"home {action_id} {user}"):
            with self._lock:
                self._busy.discard(user)

    async def _guarded(self, user: str, what: str, work: Any) -> None:
        """Running… first, then the outcome, whatever fails (never leaves the tab saying running)."""
        from bot.slack.commands.help import render_failure, render_input_error

        try:
            secrets = self.services.secrets()
            self.results[user] = HomeResult(what, running=True)
            await self.publish(user, force=True)
            try:
                self.results[user] = await work()
            except (LookupInputError, PlaybookError, ConfigError) as exc:
                msg = render_input_error(redact(str(exc), secrets), command=self.services.command)
                self.results[user] = HomeResult(what, list(msg.blocks), at=_now())
            except CredentialsError as exc:
                msg = render_failure(what, redact(exc.describe(), secrets),
                                     hint="The bot's ClearML keys were refused: an admin must fix them.")
                self.results[user] = HomeResult(what, list(msg.blocks), at=_now())
            except ClearMLError as exc:
                msg = render_failure(what, redact(exc.describe(), secrets),
                                     hint="ClearML did not answer properly: check that it is up, then try again.")
                self.results[user] = HomeResult(what, list(msg.blocks), at=_now())
            except Exception as exc:  # a bug: say so, keep the traceback in the log
                log.exception("home %s failed", what)
                msg = render_failure(what, redact(f"{type(exc).__name__}: {exc}", secrets),
                                     hint="This is a bug in the bot; the log has details.")
                self.results[user] = HomeResult(what, list(msg.blocks), at=_now())
            await self.publish(user, force=True)
        finally:
            with self._lock:
                self._busy.discard(user)

    async def _status(self, user: str, server_name: str) -> HomeResult:
        from bot.slack.commands import lookups
        from bot.slack.commands.messages import render_status

        services = self.services
        server = pick_server(services.settings, server_name or None)
        playbooks = await services.pool.io(services.playbooks)
        meta = Meta()
        async with open_snapshot(services.settings, server, meta, window=services.reads) as snap:
            view = await lookups.status(snap, meta, services.settings, playbooks)
        message = render_status(view, requested_by=user, command=services.command)
        return HomeResult(f"`status` of {server.name}", list(message.blocks), at=_now())

    async def _run(self, user: str, name: str) -> HomeResult:
        from bot.slack.commands.jobs import run_with_queues
        from bot.slack.messages.report import ReportOptions, render_run
        from bot.store import StoreError

        services = self.services
        playbook = await services.pool.io(services.find_playbook, name)
        server = pick_server(services.settings, playbook.server)
        result, _ = await run_with_queues(services, playbook, server, "slack (Home tab)")
        try:
            await services.pool.io(services.store.record_run, result)
        except StoreError as exc:
            log.error("run not recorded: %s", exc)
        # no action buttons here: they answer in the channel of the message they sit in, and a Home tab has none
        message = render_run(result, opts=ReportOptions(command=services.command, requested_by=user),
                             secrets=services.secrets())
        return HomeResult(f"`run {playbook.name}` on {server.name}", list(message.blocks), at=_now())

    async def _incident(self, user: str, action_id: str, value: str) -> HomeResult:
        from bot.actions import Actor
        from bot.actions import audit as audit_mod
        from bot.slack.incidents.listeners import press
        from bot.slack.messages.common import section

        services = self.services
        actor = Actor(id=user, via="slack")
        said: list[str] = []
        audit = await services.pool.io(press, services, actor, "", None, INCIDENT_ACTIONS[action_id], value,
                                       said.append)
        if audit is not None:  # on the loop thread, which owns the actions' store connection
            audit_mod.record(services.action_store or services.store, actor=actor, **audit)
        done = {HOME_INC_ACK: "acknowledged", HOME_INC_SNOOZE: "snoozed for 1h", HOME_INC_RESOLVE: "resolved"}
        if said:
            text = " ".join(said)
        elif audit is not None and audit.get("outcome") == "ok":
            text = f":white_check_mark: Incident #{value} {done[action_id]}; its thread says so too."
        else:
            text = "Nothing changed."
        return HomeResult(f"incident #{value[:12]}", [section(text)], at=_now())


def _rank(severity: str) -> int:
    from bot.engine.findings import SEVERITY_RANK

    return SEVERITY_RANK.get(severity, 0)


def _now() -> datetime:
    return datetime.now(UTC)
