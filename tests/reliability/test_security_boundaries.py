"""Boundaries: what a playbook or a ClearML record can make the bot contact (only the configured ClearML servers and
storage targets; a URL anywhere else is refused with a finding that says why, and is never requested), and which
HTTP requests reach the bot's listeners at all (only those carrying Slack's valid, fresh signature; the basic
forged/replayed cases are in tests/e2e/test_slack_security.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import Settings
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import RunResult, run_playbooks
from bot.sim.server import SimServer
from tests.e2e.conftest import HttpBot, command_form, signed_headers
from tests.helpers import server_settings

SCENARIOS = Path(__file__).resolve().parents[2] / "bot" / "sim" / "scenarios"


class Recorder:
    """An HTTP server standing for a host nobody configured (a cloud metadata service, an internal admin page):
    it records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                recorder.requests.append((self.command, self.path))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    try:
        yield rec
    finally:
        rec.stop()


def run(sim: SimServer, settings: Settings, *checks: tuple[str, dict[str, Any]]) -> RunResult:
    playbook = Playbook(name="urls", checks=[CheckEntry(check=c, params=p) for c, p in checks])
    return asyncio.run(run_playbooks([playbook], settings, server_settings(sim), deadline_s=30))


def test_a_playbook_cannot_point_storage_probes_at_an_arbitrary_host(
    sim_factory: Callable[..., SimServer], recorder: Recorder, tmp_path: Path
) -> None:
    sim = sim_factory("basic")
    local = tmp_path / "somewhere"
    urls = [
        f"{recorder.url}/latest/meta-data/",  # not configured: never contacted
        f"file://{local}",  # the bot's own disk: never written
        "s3://someone-elses-bucket/probe/",  # a bucket nobody gave the bot credentials for
        f"{sim.files_url}/probes/",  # the ClearML server's own file server: allowed
    ]
    result = run(sim, Settings(), ("storage.probe", {"urls": urls}))
    assert recorder.requests == []
    assert not local.exists()
    refused = {f.subject.id: f for f in result.findings if f.title.startswith("Not probed")}
    assert set(refused) == set(urls[:3])
    for finding in refused.values():
        assert finding.severity == "error" and "storage:" in finding.remediation
    probed = [f for f in result.findings if f.subject.id == urls[3]]
    assert probed and probed[0].severity == "ok"

    # Once an admin lists the host under `storage:`, the same playbook may probe it.
    configured = Settings(storage=[recorder.url + "/"])
    run(sim, configured, ("storage.probe", {"urls": [f"{recorder.url}/latest/meta-data/"]}))
    assert recorder.requests


def _dataset_artifacts(sim: SimServer, name: str) -> Iterator[dict[str, Any]]:
    """The artifact records of the dataset versions whose name contains `name`, to rewrite as a ClearML user who can
    edit tasks could (the caller holds the simulator's lock)."""
    for doc in sim.state.tasks.values():
        if name not in str(doc.get("name")):
            continue
        artifacts = (doc.get("execution") or {}).get("artifacts") or []
        yield from (artifacts.values() if isinstance(artifacts, dict) else artifacts)


def _point_dataset_at(sim: SimServer, name: str, url: str) -> int:
    """Rewrite a dataset version's artifact URIs (state.json and chunks) to `url`; returns how many were changed."""
    changed = 0
    with sim.state.lock:
        for artifact in _dataset_artifacts(sim, name):
            uri = str(artifact.get("uri") or "")
            if uri.startswith(sim.files_url):
                artifact["uri"] = url + uri[len(sim.files_url):]
                changed += 1
    return changed


def test_a_dataset_record_cannot_point_the_bot_at_an_arbitrary_host(
    sim_factory: Callable[..., SimServer], recorder: Recorder
) -> None:
    sim = sim_factory(scenario=SCENARIOS / "healthy-data.yaml")
    assert _point_dataset_at(sim, "alpaca-cleaned", recorder.url) >= 2
    result = run(sim, Settings(), ("datasets.integrity", {"names": ["alpaca-*"], "verify": "hash"}))
    assert recorder.requests == []  # neither state.json nor a chunk was fetched from there
    [finding] = [f for f in result.findings if f.check == "datasets.integrity"]
    assert finding.severity in ("critical", "error", "warning")
    assert "not fetched" in str(finding.model_dump()) and "storage:" in str(finding.model_dump())


def test_only_requests_with_a_valid_fresh_signature_reach_a_listener(http_bot: HttpBot) -> None:
    body = urllib.parse.urlencode(command_form("status"))
    good = signed_headers(body)
    now = int(time.time())
    bad_headers = [
        {**good, "X-Slack-Request-Timestamp": "yesterday"},  # not a number
        {k: v for k, v in good.items() if k != "X-Slack-Request-Timestamp"},  # no timestamp at all
        {**good, "X-Slack-Signature": good["X-Slack-Signature"].replace("v0=", "v1=")},  # unknown scheme
        {**good, "X-Slack-Signature": "v0=" + "0" * 64},  # right shape, wrong value
        signed_headers(body, timestamp=now - 299) | {"X-Slack-Request-Timestamp": str(now - 400)},  # re-dated
    ]
    for headers in bad_headers:
        assert http_bot.post(body, headers).status_code == 401, headers
    # a payload Slack would never send, unsigned: refused before it is parsed into anything
    junk = urllib.parse.urlencode({"payload": json.dumps({"type": "block_actions", "user": False})})
    assert http_bot.post(junk, {"Content-Type": "application/x-www-form-urlencoded"}).status_code in (400, 401)
    time.sleep(0.3)  # anything wrongly accepted would have started posting by now
    assert http_bot.slack.calls_to("chat.postMessage") == [] and http_bot.slack.responses == []
    assert http_bot.post(body, signed_headers(body)).status_code == 200  # and the genuine request still works


# -- request limits before work (issue #14 item 3) ----------------------------------------------------------------


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _send_huge(url: str, total: int, *, chunked: bool) -> tuple[int | None, int]:
    """POST `total` bytes of junk to `url` over a raw socket, unsigned, as fast as the server takes them: (the HTTP
    status answered, or None when the server hung up without one; bytes the server let us send)."""
    import socket

    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n")
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    chunk = b"payload=" + b"A" * (1 << 20)
    sent = 0
    try:
        sock.sendall(head.encode())
        while sent < total:
            data = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk
            sock.sendall(data)
            sent += len(chunk)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except OSError:  # the server refused and closed: exactly what should happen
        pass
    try:
        answer = sock.recv(4096).decode("latin-1")
    except OSError:
        answer = ""
    finally:
        sock.close()
    status = int(answer.split()[1]) if answer.startswith("HTTP/1.1 ") else None
    return status, sent


def test_an_unsigned_100_mb_body_is_refused_before_it_is_read(
    sim_factory: Callable[..., SimServer], tmp_path: Path
) -> None:
    """A real `serve --http` process: 100 MB posted with a Content-Length, and 100 MB chunked (no length), both
    unsigned. Each is refused with 413 after at most about 1 MB; the process's peak memory stays under 150 MB."""
    from tests.fakes.slack_history import HistoryFakeSlack
    from tests.reliability.test_process_kill import Serve, config_file

    sim = sim_factory("basic")
    with HistoryFakeSlack() as slack:
        config, _ = config_file(tmp_path, sim, slack)
        serve = Serve(config, slack, sim, tmp_path)
        try:
            url = f"{serve.url}/slack/events"
            before = _peak_rss_mb(serve.proc.pid)
            status, _sent = _send_huge(url, 100 << 20, chunked=False)
            assert status == 413
            status, sent = _send_huge(url, 100 << 20, chunked=True)
            assert status in (413, None) and sent < 100 << 20  # cut off mid-stream, not read to the end
            peak = _peak_rss_mb(serve.proc.pid)
            print(f"serve peak RSS: {before:.0f} MB before, {peak:.0f} MB after 2 x 100 MB")
            assert peak < 150, (before, peak)
            # a signed 2 MB body is refused too (Slack never sends one): the cap does not depend on the signature
            body = "payload=" + "B" * (2 << 20)
            assert httpx.post(url, content=body.encode(), headers=signed_headers(body), timeout=30).status_code == 413
            # and the bot still answers a genuine request afterwards
            assert serve.post(urllib.parse.urlencode(command_form("help"))).status_code == 200
            assert "AAAAAAAAAA" not in serve.log() and "BBBBBBBBBB" not in serve.log()
        finally:
            serve.stop()


def test_a_timestamp_of_400_digits_is_a_401_and_rejected_bodies_are_not_logged(
    http_bot: HttpBot, caplog: pytest.LogCaptureFixture
) -> None:
    body = urllib.parse.urlencode(command_form("status")) + "&junk=" + "Z" * 5000
    for stamp in ("9" * 400, "1" * 13, str(int(time.time())) + "0" * 3):
        headers = {**signed_headers(body), "X-Slack-Request-Timestamp": stamp}
        assert http_bot.post(body, headers).status_code == 401, stamp
    # a wrong signature with a sane timestamp: 401, and neither Bolt nor the bot logs the sender's body
    with caplog.at_level(logging.DEBUG):
        bad = {**signed_headers(body), "X-Slack-Signature": "v0=" + "1" * 64}
        assert http_bot.post(body, bad).status_code == 401
    assert "ZZZZZZZZZZ" not in caplog.text
    assert http_bot.slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize("text", [
    "task http://h:8080.evil.example/projects/x/experiments/a1000000000000000000000000000002",
    "task http://[::1/projects/x/experiments/a1000000000000000000000000000002",
    "task http://a:99999/projects/x/experiments/a1000000000000000000000000000002",
    "dataset https://x:y/datasets/simple/p/experiments/a1000000000000000000000000000002",
    "diff a1000000000000000000000000000002 http://h:p/projects/x/experiments/a1000000000000000000000000000001",
])
def test_a_malformed_link_gets_a_clear_answer_not_a_500(http_bot: HttpBot, text: str) -> None:
    response, _ = http_bot.command(text)
    assert response.status_code == 200
    said = json.dumps(response.json()) if response.content not in (b"", b"{}") else ""
    if "not a valid link" not in said:  # answered after the ack: the reply replaces the placeholder
        http_bot.slack.wait_for("chat.update", timeout=20)
        said = json.dumps([c.args for c in http_bot.slack.calls])
    assert "not a valid link" in said, said


# -- Slack text is data (issue #14 item 2) ------------------------------------------------------------------------

HOSTILE_QUEUE = "<!here> q *URGENT*"
HOSTILE_WORKER = "<!channel>:gpu0"
HOSTILE_TASK = "x <https://evil.example|click me> <@U0EVIL> ~gone~\n:white_check_mark: all fine"
# What must never reach Slack as markup: pings, a foreign user's mention, a link the attacker labelled.
INJECTED = ("<!here>", "<!channel>", "<https://evil.example", "<@U0EVIL>")


def hostile_scenario(tmp_path: Path) -> Path:
    """The basic scenario with mention and link injections in a queue name, a worker id and task names."""
    import yaml

    text = (SCENARIOS / "basic.yaml").read_text()
    text = text.replace('"gpu-box-1:gpu0"', json.dumps(HOSTILE_WORKER)).replace(
        "gpu-box-1:gpu0", HOSTILE_WORKER.replace('"', ""))
    data = yaml.safe_load(text)
    for queue in data["queues"]:
        if queue["name"] == "gpu":
            queue["name"] = HOSTILE_QUEUE
    for worker in data["workers"]:
        worker["queues"] = [HOSTILE_QUEUE if q == "gpu" else q for q in worker["queues"]]
    for task in data["tasks"]:
        if (task.get("execution") or {}).get("queue") == "gpu":
            task["execution"]["queue"] = HOSTILE_QUEUE
        if task.get("name") in ("train-vit-failed", "eval-bert"):
            task["name"] = f"{task['name']} {HOSTILE_TASK}"
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _rendered_texts(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(where, text) of everything Slack parses as markup: top-level `text` and every mrkdwn text object. plain_text
    (headers, buttons, options, confirm dialogs) is shown literally by Slack, so it may quote anything."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            value = json.loads(value)  # blocks sent form-encoded arrive as a JSON string
        except ValueError:
            pass
    if isinstance(value, dict):
        if value.get("type") == "plain_text":
            return
        for key, item in value.items():
            if key in ("value", "action_id", "block_id", "metadata", "url", "_url_id", "channel", "ts", "thread_ts"):
                continue
            if isinstance(item, str) and key == "text":
                yield f"{where}.text", item
            else:
                yield from _rendered_texts(item, f"{where}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _rendered_texts(item, f"{where}[{n}]")


def _markup_leaks(payloads: list[dict[str, Any]]) -> list[str]:
    """Each injected markup found in rendered text, with where."""
    return [f"{bad} at {where}: {text[:200]}" for where, text in _rendered_texts(payloads)
            for bad in INJECTED if bad in text]


def test_mentions_and_links_in_clearml_names_reach_slack_only_as_text(
    fake_slack: Any, sim_factory: Callable[..., SimServer], tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    from bot.actions.tokens import ENV_KEY
    from tests.e2e.conftest import sim_settings
    from tests.e2e.test_slack_actions import (
        SIGNING_KEY,
        _serve,
        allow,
        blocks_of,
        buttons_in,
        click,
        diagnose,
        private_note,
        thread_replies,
    )

    sim = sim_factory(scenario=str(hostile_scenario(tmp_path)))
    clean_env.setenv(ENV_KEY, SIGNING_KEY)
    settings = allow(sim_settings(sim, fake_slack, tmp_path, clean_env))
    with _serve(settings, fake_slack, sim) as bot:
        message = diagnose(bot, "a1000000000000000000000000000002")  # the failed task, hostile name
        buttons = buttons_in(blocks_of(message))
        confirms = [element["confirm"] for _, element in buttons.values() if "confirm" in element]
        assert confirms and all(c["text"]["type"] == "plain_text" for c in confirms)
        # a refusal quoting the names goes into the thread: abort of a task that is not running
        click(bot, message, "Requeue", queue=HOSTILE_QUEUE)
        thread_replies(bot, message.args["ts"])
        denied = click(bot, message, "Requeue", user="U0MALLORY")
        private_note(bot, denied)
        for text in ("agents", "queues", "status", "audit 10", "task a1000000000000000000000000000003",
                     f"agents {HOSTILE_WORKER}"):
            before = len(fake_slack.calls_to("chat.update"))
            response, _ = bot.command(text)
            if not (response.content and response.json().get("text")):
                fake_slack.wait_for("chat.update", count=before + 1, timeout=20)
            else:
                assert _markup_leaks([response.json()]) == [], text
        payloads = [c.args for c in fake_slack.calls] + [c.args for c in fake_slack.responses]
    shown = json.dumps(payloads, ensure_ascii=False)
    assert "evil.example" in shown and "&lt;!here&gt;" in shown  # the names are shown, as text
    assert _markup_leaks(payloads) == []
    import re

    # outside code spans (where Slack formats nothing)
    rendered = re.sub(r"`[^`]*`", "", "\n".join(text for _, text in _rendered_texts(payloads)))
    leftover = [line for line in rendered.splitlines() if "*URGENT*" in line or "~gone~" in line]
    assert leftover == [], leftover  # formatting characters neutralised


def test_the_incident_thread_mentions_only_people_the_bot_recorded(tmp_path: Path) -> None:
    """"also affected" lines, refusals and acknowledgements in an incident thread: names from ClearML stay text,
    the person who acknowledged is a mention."""
    from bot.actions import ActionDeps
    from bot.actions.tokens import Signer
    from bot.incidents.pipeline import IncidentPipeline, Rendered
    from bot.slack.actions.buttons import ButtonMaker
    from bot.slack.incidents.messages import SlackIncidentRenderer
    from bot.store import Store
    from tests.unit._incidents_support import at, dead_worker, orphaned_task, run, unserved_queue

    store = Store(tmp_path / "store.db")
    try:
        maker = ButtonMaker(Settings(), store, ActionDeps(signer=Signer(b"unit-test-signing-key-0123456789")))
        renderer = SlackIncidentRenderer(buttons=lambda f, server: maker.for_finding(f, server),
                                         queues=lambda server: [], actions_taken=lambda view: [],
                                         secrets=lambda: [])
        sent: list[tuple[str, str, Rendered]] = []
        pipe = IncidentPipeline(store, renderer=renderer,
                                settings=Settings.model_validate({"slack": {"default_channel": "#ml-alerts"}}),
                                sink=lambda ch, kind, m: sent.append((ch, kind, m)))
        worker = HOSTILE_WORKER
        pipe.handle_run(run(dead_worker(worker), started=at(0)), at(0))
        task = orphaned_task(task="t-1", worker=worker)
        task = task.model_copy(update={"subject": task.subject.model_copy(update={"name": HOSTILE_TASK})})
        queue = unserved_queue(queue="q-1", worker=worker)
        queue = queue.model_copy(update={"subject": queue.subject.model_copy(update={"name": HOSTILE_QUEUE})})
        pipe.handle_run(run(dead_worker(worker), task, queue, started=at(5)), at(5))  # "also affected" lines
        pipe.acknowledge(1, "<@U0ANA>", at(6))
        payloads = [{"text": m.text, "blocks": m.blocks} for _, _, m in sent]
    finally:
        store.close()
    shown = json.dumps(payloads, ensure_ascii=False)
    assert "also affected" in shown and "&lt;!here&gt;" in shown
    assert _markup_leaks(payloads) == []
    assert "<@U0ANA>" in shown  # the acknowledging user, recorded by the bot, is still mentioned


# -- storage reach (issue #14 item 4) -----------------------------------------------------------------------------


def _set_dataset_uris(sim: SimServer, name: str, state_uri: str, chunk_uri: str) -> None:
    """Rewrite a dataset version's state and chunk artifact URIs, as a ClearML user who can edit tasks could."""
    with sim.state.lock:
        for artifact in _dataset_artifacts(sim, name):
            key = str(artifact.get("key"))
            artifact["uri"] = state_uri if key == "state" else chunk_uri if key.startswith("data") else \
                artifact.get("uri")


@pytest.mark.parametrize(("state_uri", "chunk_uri"), [
    ("file:///etc/passwd", "file:///etc/passwd"),
    ("/proc/self/environ", "/dev/zero"),
    ("file:///etc/hostname", "/dev"),
])
def test_a_dataset_record_cannot_make_the_bot_read_local_files(
    sim_factory: Callable[..., SimServer], state_uri: str, chunk_uri: str
) -> None:
    sim = sim_factory(scenario=SCENARIOS / "healthy-data.yaml")
    _set_dataset_uris(sim, "alpaca-cleaned", state_uri, chunk_uri)
    result = run(sim, Settings(), ("datasets.integrity", {"names": ["alpaca-*"], "verify": "hash"}))
    [finding] = [f for f in result.findings if f.check == "datasets.integrity"]
    shown = json.dumps(finding.model_dump(mode="json"))
    assert "not read" in shown and "file://" in shown  # says why, and what to configure
    state = finding.evidence.get("state") or {}
    assert state.get("sha256") is None and state.get("size") is None  # nothing was read, nothing hashed


def _verify_local(root: Path, plans: list[Any], timeout: float | None = None) -> Any:
    from bot.storage.credentials import ClearmlConf
    from bot.storage.datasets import ArtifactReader, verify_chunks

    class Ctx:  # only local paths: the client is never used
        targets: list[Any] = []
        conf = ClearmlConf()
        local_roots = [str(root)]  # as if `storage: [file://<root>]` were configured

        def is_files_url(self, url: str) -> bool:
            return False

    async def go() -> Any:
        async with ArtifactReader(Ctx()) as reader:  # type: ignore[arg-type]
            job = verify_chunks(reader, plans, hash_files=True, dataset_id="ds", workers=2)
            return await (asyncio.wait_for(job, timeout) if timeout else job)

    return asyncio.run(go())


def test_entries_cannot_leave_the_dataset_folder_or_read_devices(tmp_path: Path) -> None:
    import hashlib

    from bot.storage.datasets import ChunkPlan, FileEntry

    root = tmp_path / "datasets"
    folder = root / "ds1"
    folder.mkdir(parents=True)
    (folder / "ok.txt").write_bytes(b"fine")
    (folder / "zero").symlink_to("/dev/zero")  # a symlink inside the folder to a device
    (folder / "passwd").symlink_to("/etc/passwd")
    entries = [
        FileEntry("ok.txt", hashlib.sha256(b"fine").hexdigest(), 4, "data"),
        FileEntry("../../../../../../etc/passwd", "0" * 64, 10, "data"),
        FileEntry("zero", "0" * 64, 10, "data"),
        FileEntry("passwd", "0" * 64, 10, "data"),
        FileEntry("/proc/self/environ", "0" * 64, 10, "data"),
    ]
    report = _verify_local(root, [ChunkPlan("data", "ds", f"file://{folder}", None, entries)])
    assert report.files_ok == 1
    refused = {m["path"]: m.get("error") or "" for m in report.mismatched}
    assert set(refused) == {e.relative_path for e in entries[1:]}
    assert report.bytes_hashed == 4  # nothing outside the folder was read
    # the whole chunk pointing at /dev or /etc: refused before anything is opened
    for uri in ("file:///dev", "/etc/passwd", f"file://{folder}/../../../../etc/passwd"):
        outside = _verify_local(root, [ChunkPlan("data", "ds", uri, None, [FileEntry("zero", "0" * 64, 1, "data")])])
        assert outside.chunk_problems and "not read" in outside.chunk_problems[0]["problem"], uri
        assert outside.bytes_hashed == 0


def test_hashing_reads_at_most_the_recorded_size_and_stops_at_the_deadline(tmp_path: Path) -> None:
    import threading

    from bot.storage.datasets import ChunkPlan, FileEntry

    root = tmp_path / "datasets"
    root.mkdir()
    big = root / "huge.bin"
    with big.open("wb") as fh:  # sparse: 64 GB of zeros that take no disk, but minutes to hash
        fh.truncate(64 << 30)
    small = root / "small.bin"
    small.write_bytes(b"x" * 5000)
    # recorded as 1000 bytes: only 1001 are read, and the file is reported as not matching
    capped = _verify_local(root, [ChunkPlan("data", "ds", f"file://{root}", None,
                                            [FileEntry("small.bin", "0" * 64, 1000, "data")])])
    assert capped.bytes_hashed == 1001 and capped.mismatched[0]["actual_size"] == 1001
    # no recorded size and a deadline: hashing stops, and its threads end promptly (no core burnt afterwards)
    with pytest.raises(asyncio.TimeoutError):
        _verify_local(root, [ChunkPlan("data", "ds", f"file://{root}", None,
                                       [FileEntry("huge.bin", "0" * 64, None, "data")])], timeout=0.5)
    deadline = time.monotonic() + 5
    while any(t.name.startswith("dataset-hash") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("dataset-hash") for t in threading.enumerate())


def _click_verify(bot: HttpBot, value: str, *, user: str, channel: str, ts: str) -> str:
    response_url = bot.slack.response_url()
    bot.action({
        "type": "block_actions", "user": {"id": user, "username": user.lower()}, "team": {"id": "T0FAKETEAM"},
        "channel": {"id": channel}, "message": {"ts": ts},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel},
        "response_url": response_url, "trigger_id": "1.2.3",
        "actions": [{"type": "button", "action_id": "dataset_verify_hashes", "block_id": "b1", "value": value,
                     "action_ts": str(time.time())}],
    })
    return response_url


def test_verify_file_hashes_is_authorized_audited_and_bound_to_its_channel(http_bot: HttpBot) -> None:
    """Any user could click "Verify file hashes" (minutes of downloads and a core per click): now only users under
    `actions.allow.verify_hashes`, and a value copied into another channel is refused. Each attempt is audited."""
    from bot.actions import audit as audit_mod
    from bot.config import ActionAllow
    from bot.slack.app import services_of

    http_bot.command("dataset dac1d9d5694d5fb69a31633e9c88164a")
    post = http_bot.slack.wait_for("chat.postMessage")[0]
    update = http_bot.slack.wait_for("chat.update")[0]
    [button] = [e for b in update.args["blocks"] if b["type"] == "actions" for e in b["elements"]]
    channel, ts = post.response["channel"], post.response["ts"]
    # nobody is allowed by default
    denied = _click_verify(http_bot, button["value"], user="U0MALLORY", channel=channel, ts=ts)
    note = http_bot.slack.wait_for("response_url", predicate=lambda c: c.args.get("_url_id") == denied.rsplit("/")[-1])
    assert "Not allowed" in json.dumps(note[0].args) and "actions.allow.verify_hashes" in json.dumps(note[0].args)
    # the same signed value clicked in another channel
    services = services_of(http_bot.server.app)  # type: ignore[arg-type]
    services.settings.actions.allow["verify_hashes"] = ActionAllow(users=["U0MALLORY"])  # even an allowed user
    moved = _click_verify(http_bot, button["value"], user="U0MALLORY", channel="C0OTHER", ts=ts)
    note = http_bot.slack.wait_for("response_url", predicate=lambda c: c.args.get("_url_id") == moved.rsplit("/")[-1])
    assert "another channel" in json.dumps(note[0].args)
    # a hand-made value (the old unsigned JSON shape)
    forged = _click_verify(http_bot, '{"server": "prod", "dataset": "dac1d9d5694d5fb69a31633e9c88164a"}',
                           user="U0MALLORY", channel=channel, ts=ts)
    http_bot.slack.wait_for("response_url", predicate=lambda c: c.args.get("_url_id") == forged.rsplit("/")[-1])
    time.sleep(0.3)
    assert not [c for c in http_bot.slack.calls_to("chat.postMessage") if c.args.get("thread_ts") == ts]
    rows = services.on_loop(lambda: audit_mod.recent(services.action_store, 10))
    assert [r["outcome"] for r in rows if r["action"] == "verify_hashes"] == ["tampered", "tampered", "denied"]


# -- playbook limits (issue #14 item 6) ---------------------------------------------------------------------------


def _big_playbook(path: Path, megabytes: int) -> None:
    """A syntactically valid playbook of `megabytes` MB (thousands of checks), like the 3 MB one from the issue."""
    entry = "  - check: agents.stale\n    params: {stale_after: 2m, dead_after: 8m}\n"
    path.write_text("name: huge\nchecks:\n" + entry * (megabytes * (1 << 20) // len(entry)))


def test_an_oversized_playbook_is_refused_before_it_is_read_and_never_parsed_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.engine.playbook as playbook_mod

    big = tmp_path / "huge.yaml"
    _big_playbook(big, 3)
    parsed: list[str] = []
    real_parse = playbook_mod.parse_playbook
    monkeypatch.setattr(playbook_mod, "parse_playbook", lambda text, source="": parsed.append(source) or
                        real_parse(text, source))
    opened: list[str] = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(str(self)) or real_open(self, *a, **k))
    for _ in range(3):
        with pytest.raises(playbook_mod.PlaybookError, match="over the 64 kB"):
            playbook_mod.load_playbook(big)
    assert parsed == [] and opened == []  # refused from its size alone: not read, not parsed
    # a normal playbook is parsed once, then served from the cache until the file changes
    small = tmp_path / "small.yaml"
    small.write_text("name: small\nchecks:\n  - check: agents.stale\n")
    for _ in range(3):
        assert playbook_mod.load_playbook(small).name == "small"
    assert parsed == [str(small)]
    small.write_text("name: small2\nchecks:\n  - check: agents.stale\n")
    assert playbook_mod.load_playbook(small).name == "small2" and len(parsed) == 2
    # `validate` on a 50 MB file: one clear error (the issue saw 300 s and 5.3 GB)
    huge = tmp_path / "fifty.yaml"
    with huge.open("wb") as fh:
        fh.truncate(50 << 20)
    with pytest.raises(playbook_mod.PlaybookError, match="split it into several playbooks"):
        playbook_mod.load_playbook(huge)


def test_the_slash_command_ack_parses_no_playbook(http_bot: HttpBot, monkeypatch: pytest.MonkeyPatch) -> None:
    """`/clearml run <typo>` and `/clearml playbooks` with a 3 MB playbook in the directory: the ack path reads only
    cached parses; the oversized file is reported, and the typo gets its "no playbook" answer."""
    import bot.engine.playbook as playbook_mod

    directory = Path(http_bot.settings.playbooks or "")
    _big_playbook(directory / "huge.yaml", 3)
    # and a normal playbook added after the bot started: not parsed (cached) yet when the commands arrive
    (directory / "later.yaml").write_text("name: later\nchecks:\n  - check: agents.stale\n")
    listener_threads: list[str] = []
    real_parse = playbook_mod.parse_playbook

    def spy(text: str, source: str = "") -> Any:
        import threading

        listener_threads.append(threading.current_thread().name)
        return real_parse(text, source)

    monkeypatch.setattr(playbook_mod, "parse_playbook", spy)
    def answer(text: str, expected: str) -> str:
        """The ack's text, or (when the ack deferred to the work pool) what the job said, privately or in place."""
        response, _ = http_bot.command(text)
        assert response.status_code == 200
        said = json.dumps(response.json()) if response.content not in (b"", b"{}") else ""
        deadline = time.monotonic() + 20
        while expected not in said and time.monotonic() < deadline:
            time.sleep(0.05)
            said = json.dumps([c.args for c in (*http_bot.slack.calls, *http_bot.slack.responses)])
        return said

    said = answer("run helht", "There is no playbook")
    assert "There is no playbook `helht`" in said and "Did you mean `health`" in said
    assert "over the 64 kB" in answer("playbooks", "over the 64 kB")
    response, _ = http_bot.command("run huge")  # now cached as broken: answered in the ack, nothing parsed
    assert "over the 64 kB" in json.dumps(response.json())
    assert listener_threads  # `later.yaml` was parsed: by the work pool
    # the uvicorn event loop and Bolt's listener threads never parsed; only the work pool did
    assert not any(name.startswith(("ThreadPoolExecutor", "AnyIO", "MainThread")) for name in listener_threads), \
        listener_threads


# -- response_url, button binding (issue #14 item 7) --------------------------------------------------------------


def test_a_response_url_outside_slack_is_never_posted_to(http_bot: HttpBot, recorder: Recorder) -> None:
    """A signed request's body names the response_url; only Slack's hook hosts (and the configured Slack API host)
    get the bot's answers. The user is still answered (privately, through chat.postEphemeral)."""
    from bot.slack.delivery.sink import response_url_allowed

    response, _ = http_bot.command("task 0123456789abcdef0123456789abcdef",
                                   response_url=f"{recorder.url}/commands/T0/1/abc")
    assert response.status_code == 200
    http_bot.slack.wait_for("chat.postEphemeral", timeout=20)
    assert recorder.requests == []
    assert response_url_allowed("https://hooks.slack.com/commands/T0/1/abc")
    for bad in ("http://hooks.slack.com/commands/x", "https://hooks.slack.com.evil.example/x",
                "https://user:pw@hooks.slack.com/x", "https://169.254.169.254/latest/meta-data/",
                "https://hooks.slack.com:8443/x", "file:///etc/passwd", "https://[::1/x"):
        assert not response_url_allowed(bad, "https://slack.com/api/"), bad


def test_a_button_value_only_runs_where_it_was_posted(
    fake_slack: Any, basic_sim: SimServer, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """A signed Requeue value from one channel's message, clicked in another channel (or on a message that does not
    carry it), is refused as tampered and audited; nothing is requeued."""
    from bot.actions import audit as audit_mod
    from bot.actions.tokens import ENV_KEY
    from bot.slack.app import services_of
    from tests.e2e.conftest import sim_settings
    from tests.e2e.test_slack_actions import SIGNING_KEY, _serve, allow, blocks_of, buttons_in, diagnose

    clean_env.setenv(ENV_KEY, SIGNING_KEY)
    settings = allow(sim_settings(basic_sim, fake_slack, tmp_path, clean_env))
    with _serve(settings, fake_slack, basic_sim) as bot:
        message = diagnose(bot, "a1000000000000000000000000000002")
        blocks = blocks_of(message)
        block_id, element = buttons_in(blocks)["Requeue"]
        home = message.args["channel"]

        def click(channel: str, message_blocks: list[dict[str, Any]]) -> None:
            ts = message.args["ts"]
            bot.action({
                "type": "block_actions", "user": {"id": "U0ALICE", "username": "alice"}, "team": {"id": "T0FAKETEAM"},
                "channel": {"id": channel}, "container": {"type": "message", "message_ts": ts, "channel_id": channel},
                "message": {"ts": ts, "text": "x", "blocks": message_blocks}, "state": {"values": {}},
                "response_url": bot.slack.response_url(), "trigger_id": "1.2.3",
                "actions": [{"type": "button", "action_id": element["action_id"], "block_id": block_id,
                             "value": element["value"], "action_ts": str(time.time())}],
            })

        click("C0OTHERCHAN", blocks)  # the value (and a copy of its message) replayed in another channel
        other_message = [{"type": "actions", "block_id": "b", "elements": [
            {"type": "button", "action_id": "act:abort:0", "value": "something-else"}]}]
        click(home, other_message)  # right channel, but on a message that does not carry this value
        services = services_of(bot.server.app)  # type: ignore[arg-type]

        def rows() -> list[dict[str, Any]]:
            return services.on_loop(lambda: audit_mod.recent(services.action_store, 10))  # type: ignore[no-any-return]

        deadline = time.monotonic() + 15
        while len(rows()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        found = rows()
        assert [r["outcome"] for r in found] == ["tampered", "tampered"], found
        assert "another" in json.dumps(found) or "bound to channel" in json.dumps(found)
        assert not basic_sim.calls_to("tasks.enqueue")


def test_shutdown_stops_a_hash_check_at_once(tmp_path: Path) -> None:
    """SIGTERM used never to complete while a hash check ran: `shutdown_app` now stops every check in progress
    (`stop_all_hashing`); the check ends with "stopped" (no partial verdict) and its threads end."""
    import threading

    from bot.storage.datasets import ChunkPlan, FileEntry, HashingStopped, stop_all_hashing

    root = tmp_path / "datasets"
    root.mkdir()
    with (root / "huge.bin").open("wb") as fh:
        fh.truncate(64 << 30)
    outcome: list[BaseException | Any] = []

    def verify() -> None:
        try:
            outcome.append(_verify_local(root, [ChunkPlan("data", "ds", f"file://{root}", None,
                                                          [FileEntry("huge.bin", "0" * 64, None, "data")])]))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=verify)
    worker.start()
    deadline = time.monotonic() + 10
    while not any(t.name.startswith("dataset-hash") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stop_all_hashing() == 1
    worker.join(timeout=10)
    assert not worker.is_alive() and outcome and isinstance(outcome[0], HashingStopped), outcome
    deadline = time.monotonic() + 5
    while any(t.name.startswith("dataset-hash") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("dataset-hash") for t in threading.enumerate())
