"""What `serve` runs besides answering Slack: the durable outbox's worker, the scheduler (playbooks with a
`schedule`, the digest of `slack.digest`), and the reproduce watcher.

    background = Background(services, bot_token).start()   # BotServer._setup
    background.stop_scheduling(); shutdown_app(app); background.stop_outbox()   # BotServer.close, on SIGTERM

A scheduled run is `bot.schedule.playbook_runner`, the one the demo runs too: the playbook runs against its server
(with the store's fleet history and agent versions, and the task owners when it notifies them; one snapshot through
the shared read window, whose queue list also feeds the queue select of the incident messages), is recorded, and
goes through the incident pipeline, which queues the root messages, updates and thread replies in the same
transaction as the incident change; the outbox worker sends them. With `slack.scheduled_reports: true` the whole
report is queued too.

Nothing here sleeps in a test: `run_playbook`, `run_digest` and `tick_reproduce` can be called directly, and the
scheduler's `run_job(job_id)` runs any job now.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from apscheduler.triggers.interval import IntervalTrigger
from slack_sdk import WebClient

from bot.schedule import ScheduledRun, Scheduler, playbook_runner
from bot.slack.client import api_base_url
from bot.slack.delivery import OutboxWorker, WebClientSender

if TYPE_CHECKING:
    from bot.actions.reproduce import WatchResult
    from bot.engine.playbook import Playbook
    from bot.engine.runner import RunResult
    from bot.slack.services import BotServices

log = logging.getLogger(__name__)

REPRODUCE_JOB = "reproduce-watch"
PRUNE_JOB = "outbox-prune"
INCIDENTS_JOB = "incidents-tick"


class Background:
    def __init__(
        self,
        services: BotServices,
        token: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        idle_s: float = 5.0,
    ) -> None:
        self.services = services
        settings = services.settings
        durable = services.outbox.durable
        if durable is None or services.incidents is None:
            raise RuntimeError("create_app() builds the durable outbox and the incident pipeline first")
        # Its own client without retry handlers: the outbox retries durably, honouring Retry-After without holding
        # a thread, and checks Slack before re-posting something that may have gone through (bot/slack/delivery).
        self.client = WebClient(token=token, base_url=api_base_url(settings), retry_handlers=[], timeout=15,
                                logger=logging.getLogger("bot.slack.web.outbox"))
        self.sender = WebClientSender(self.client)  # the rows are redacted as they are queued
        durable.rng = durable.rng or random.Random()  # spread retries after an outage
        self.worker = OutboxWorker(durable, self.sender, clock=clock, idle_s=idle_s)
        playbooks = services.playbooks()
        for info in services.playbook_infos():
            if info.error:
                log.warning("playbook %s does not load and is not scheduled: %s", info.name, info.error)
        self.scheduler = Scheduler.from_settings(
            settings, services.store, playbooks, run_playbook=self.run_playbook, run_digest=self.run_digest,
            clock=clock,
        )
        poll = settings.actions.reproduce.poll_s
        self.scheduler.scheduler.add_job(
            self._tick_quietly, trigger=IntervalTrigger(seconds=poll), id=REPRODUCE_JOB, name="reproduce watcher",
            coalesce=True, max_instances=1, misfire_grace_time=int(max(poll, 30)), replace_existing=True,
        )
        self.scheduler.scheduler.add_job(
            self._prune, trigger=IntervalTrigger(hours=24), id=PRUNE_JOB, name="outbox prune", coalesce=True,
            max_instances=1, replace_existing=True,
        )
        # Incidents between runs: posts whose settle time is over, roots a channel refused (fallback, then back
        # once the bot is invited). Often enough that a settle time is kept to about a second.
        tick_s = 1.0 if settings.incidents.settle_s <= 10 else 5.0
        self.scheduler.scheduler.add_job(
            self._tick_incidents_quietly, trigger=IntervalTrigger(seconds=tick_s), id=INCIDENTS_JOB,
            name="incidents tick", coalesce=True, max_instances=1, misfire_grace_time=30, replace_existing=True,
        )
        from bot.slack.commands.jobs import result_queues, shared_snapshot

        self._run = playbook_runner(
            settings, services.store, services.incidents, snapshot=lambda server: shared_snapshot(services, server),
            while_connected=lambda snap, result: result_queues(services, snap, result), on_result=self._after_run,
        )
        services.scheduler = self.scheduler
        services.background = self
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> Background:
        self.worker.start()
        catchups = self.scheduler.start()
        for c in catchups:
            log.info("catch-up: %s %s", c.job_id, c.note)
        self._started = True
        jobs = ", ".join(f"{i.job_id} ({i.schedule})" for i in self.scheduler.next_runs()) or "none"
        log.info("scheduled jobs: %s", jobs)
        return self

    def stop_scheduling(self, timeout: float = 15.0) -> None:
        """No new runs; waits up to `timeout` for a running one (a run is atomic: cutting it short loses nothing)."""
        if not self._started:
            return
        stopper = threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}, daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            log.warning("a scheduled run is still going after %.0fs; stopping without it", timeout)

    def stop_outbox(self, drain_s: float = 5.0) -> None:
        """Send what is queued (bounded: Slack may be down; what is left goes out at the next start), then stop."""
        if not self._started:
            return
        durable = self.services.outbox.durable
        deadline = time.monotonic() + drain_s
        self.worker.wake()
        while durable is not None and time.monotonic() < deadline:
            try:
                if durable.depth() == 0:
                    break
            except Exception:  # the store is going away: nothing more to wait for
                break
            report = self.worker.last_report
            if report is not None and report.paused_until is not None:
                break  # rate limited or refused: do not hold the shutdown for it
            time.sleep(0.05)
        self.worker.stop(timeout=5)
        self._started = False

    # -- jobs ------------------------------------------------------------------------------------------------------
    def run_playbook(self, playbook: Playbook, trigger: str) -> RunResult:
        """One scheduled run: `bot.schedule.playbook_runner` (the one the demo uses too: the store's fleet history
        and agent versions, the owners' DMs, record, incidents), over the shared read window, with the queue list
        for the buttons, then `_after_run` (charts, Home tabs, the report when configured)."""
        return self._run(playbook, trigger)

    def run_digest(self, trigger: str) -> Any:
        assert self.services.incidents is not None
        digest = self.services.incidents.post_digest()
        try:  # the charts follow the text in its thread; the digest stands without them
            from bot.slack.delivery.charts import post_digest_charts

            post_digest_charts(self.services, digest)
        except Exception:
            log.exception("digest charts failed; the digest went out with its text trends")
        return digest

    def _after_run(self, run: ScheduledRun) -> None:
        """After a scheduled run: a backlog incident's chart once its trend shows; fresh Home tabs for whoever
        looked recently; the report with `slack.scheduled_reports`. None of them may fail the run (it is recorded
        and its messages queued already)."""
        services = self.services
        try:
            from bot.slack.delivery.charts import post_incident_charts
            from bot.slack.incidents.service import open_incidents

            post_incident_charts(services, list(open_incidents(services)))
        except Exception:
            log.exception("incident charts failed")
        if services.home is not None:
            try:
                services.home.refresh_after_run()
            except Exception:
                log.exception("refreshing the Home tabs failed")
        if services.settings.slack.scheduled_reports:
            from bot.slack.delivery.reports import queue_run_report
            from bot.slack.messages.report import ReportOptions

            maker, result = services.buttons, run.result
            queue_run_report(
                services.outbox, services.router, result, run.playbook, key=str(run.run_id),
                opts=ReportOptions(command=services.command), secrets=services.secrets(),
                buttons=(lambda f: maker.for_finding(f, result.server)) if maker is not None else None,
                queues=run.gathered or [],
            )

    def tick_reproduce(self) -> list[WatchResult]:
        """Look at every re-run being watched once; post each finished comparison into its thread."""
        from bot.actions import reproduce

        services = self.services
        store = services.action_store or services.store
        # on the work pool's loop: the thread that owns the actions' store connection (and the deps' caches)
        results = services.pool.run_sync(
            lambda: reproduce.tick(store, services.settings, deps=services.action_deps), timeout=300
        )
        for result in results:
            self._post_repro(result)
        return results

    def _post_repro(self, result: WatchResult) -> None:
        from bot.incidents.tracker import root_key
        from bot.slack.actions.messages import render_repro_result

        ctx = result.context or {}
        channel = ctx.get("channel")
        if not channel:
            log.info("reproduce watch %s ended (%s) with nowhere to post: %s", result.watch_id, result.status,
                     result.text.splitlines()[0] if result.text else "")
            return
        message = render_repro_result(result)
        key = f"repro:{result.watch_id}:result"
        incident = ctx.get("incident")
        if isinstance(incident, int):
            self.services.outbox.enqueue(key, channel, "reply", message.as_payload(),
                                         root_key=root_key(incident))
        else:
            self.services.outbox.enqueue(key, channel, "reply", message.as_payload(),
                                         thread_ts=ctx.get("thread_ts") or ctx.get("message_ts"))

    def _tick_quietly(self) -> None:
        try:
            self.tick_reproduce()
        except Exception:  # the next tick tries again; the watches are in the store
            log.exception("reproduce watcher failed")

    def tick_incidents(self) -> list[Any]:
        """Post settled incidents; re-route refused roots, and move them back once the bot is a member."""
        assert self.services.incidents is not None
        return self.services.incidents.tick(can_post=self.can_post)

    def can_post(self, channel: str) -> bool:
        from bot.slack.incidents.service import bot_is_member

        return bot_is_member(self.client, self.sender, channel)

    def _tick_incidents_quietly(self) -> None:
        try:
            self.tick_incidents()
        except Exception:  # the next tick tries again; everything is in the store
            log.exception("incidents tick failed")

    def _prune(self) -> None:
        durable = self.services.outbox.durable
        if durable is not None:
            removed = durable.prune()
            if removed:
                log.info("outbox: pruned %d old rows", removed)
