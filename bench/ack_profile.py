"""Profile the slash-command ack path: what `serve --http` does between a signed request's arrival and its 200.

    .venv/bin/python -m bench.ack_profile [--requests 500] [--top 25]

In one process, against the fake Slack (for `auth.test` at start) and the simulator's basic scenario: the bot's
Starlette app (`build_asgi`, the same as `serve --http`) is called through ASGI with signed `/clearml status`
requests, one at a time, under cProfile with per-thread CPU time, in the thread that dispatches them. The work pool
is replaced by one that drops what is submitted: only the ack path is measured, not the command's work. Printed:
CPU per request of the whole path and of the minimal signed app (bench.workers.min_slack_app) through the same
in-process ASGI client (the client's own CPU is in both), of Bolt's `App.dispatch` alone under the profiler, and of
the signature check alone; then the top functions of `App.dispatch` by cumulative time (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import cProfile
import inspect
import io
import pstats
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.config import Settings
from bot.sim.server import SimServer
from bot.slack.app import create_app, shutdown_app
from bot.slack.serve import Health, build_asgi
from bot.slack.workpool import WorkPool
from bot.store import Store
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack

SECRET = "profile-signing-secret-0123456789"


class DroppingPool(WorkPool):
    """Accepts work and drops it: the profile sees the ack path only."""

    def submit(self, job: Any, *, name: str = "job", limited: bool = True) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        fut.set_result(None)
        return fut


def signed(text: str, user: str) -> tuple[bytes, dict[str, str]]:
    form = {"token": "legacy", "team_id": "T0FAKETEAM", "channel_id": "C0GENERAL", "channel_name": "general",
            "user_id": user, "user_name": user.lower(), "command": "/clearml", "text": text, "api_app_id": "A0FAKE",
            "response_url": "http://127.0.0.1:9/response", "trigger_id": "1.2.3"}
    body = urllib.parse.urlencode(form)
    ts = str(int(time.time()))
    sig = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body) or ""
    return body.encode(), {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig,
                           "Content-Type": "application/x-www-form-urlencoded"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ack_profile")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    playbooks = Path(__file__).resolve().parent.parent / "playbooks"
    with tempfile.TemporaryDirectory() as tmp, SimServer(scenario="basic") as sim, FakeSlack() as slack:
        key, secret = sim.keys[0]
        settings = Settings.model_validate({
            "servers": {"sim": {"api": sim.api_url, "web": sim.web_url, "files": sim.files_url}},
            "slack": {"api_url": slack.base_url}, "playbooks": str(playbooks),
        })
        import os

        os.environ.update({"CLEARML_API_ACCESS_KEY": key, "CLEARML_API_SECRET_KEY": secret})
        store = Store(Path(tmp) / "store.db")
        app = create_app(settings, store=store, token=BOT_TOKEN, signing_secret=SECRET, pool=DroppingPool())
        health = Health(BOT_TOKEN, slack.base_url, store.path)
        # serve's own signature check before Bolt takes the secret where it exists (the hardening branch's)
        takes_secret = len(inspect.signature(build_asgi).parameters) > 2
        asgi = build_asgi(app, health, *([SECRET] if takes_secret else []))
        requests = [signed("status", f"U{i:05d}") for i in range(args.requests)]
        verifier = SignatureVerifier(SECRET)

        async def serve_all(target: Any) -> float:
            transport = httpx.ASGITransport(app=target)
            async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
                for body, headers in requests[:20]:  # warm-up
                    await client.post("/slack/events", content=body, headers=headers)
                start = time.thread_time()
                for body, headers in requests:
                    response = await client.post("/slack/events", content=body, headers=headers)
                    assert response.status_code == 200, response.text
                return time.thread_time() - start

        from bench.workers.min_slack_app import build as minimal_app

        whole = asyncio.run(serve_all(asgi))
        minimal_whole = asyncio.run(serve_all(minimal_app(SECRET)))

        from slack_bolt.adapter.starlette.handler import to_bolt_request  # noqa: F401  (the adapter serve uses)
        from slack_bolt.request import BoltRequest

        profile = cProfile.Profile(time.thread_time)
        start = time.thread_time()
        profile.enable()
        for body, headers in requests:
            response = app.dispatch(BoltRequest(body=body.decode(), headers=headers))
            assert response.status == 200
        profile.disable()
        dispatch = time.thread_time() - start
        start = time.thread_time()
        for body, headers in requests:
            assert verifier.is_valid_request(body, headers)
        minimal = time.thread_time() - start
        shutdown_app(app)
        store.close()

    n = args.requests
    print(f"CPU per request (thread time, {n} sequential signed `/clearml status`):")
    print(f"  the bot's whole ack path through ASGI (Starlette, checks, Bolt dispatch), client side included: "
          f"{whole / n * 1000:.3f} ms")
    print(f"  the minimal signed app through the same ASGI client: {minimal_whole / n * 1000:.3f} ms")
    print(f"  Bolt App.dispatch alone (middleware, listener, ack; under the profiler): {dispatch / n * 1000:.3f} ms")
    print(f"  the minimal app's own work (signature check): {minimal / n * 1000:.3f} ms")
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs().sort_stats("cumulative")
    stats.print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
