"""`clearml-chatops sim`: starts, prints where it listens and what to export, stops on request."""

from __future__ import annotations

import argparse
import io
import re
import threading
import time

import httpx
import pytest

from bot.sim.cli import add_arguments, main


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def run_until_ready(args: argparse.Namespace) -> tuple[threading.Event, threading.Thread, io.StringIO, list[int]]:
    stop, out, codes = threading.Event(), io.StringIO(), []
    thread = threading.Thread(target=lambda: codes.append(main(args, stop=stop, out=out)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while "Ctrl-C" not in out.getvalue():
        assert thread.is_alive() and time.monotonic() < deadline, out.getvalue()
        time.sleep(0.02)
    return stop, thread, out, codes


def test_sim_command_prints_urls_and_exports(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--scenario", "basic", "--port", "0", "--files-port", "0", "--keys", "K1:S1", "--latency-ms", "1")
    stop, thread, out, codes = run_until_ready(args)
    try:
        text = out.getvalue()
        env = dict(re.findall(r"export (CLEARML_\w+)=(\S+)", text))
        assert env["CLEARML_API_ACCESS_KEY"] == "K1" and env["CLEARML_API_SECRET_KEY"] == "S1"
        api = env["CLEARML_API_HOST"]
        assert f"API server:   {api}" in text and env["CLEARML_FILES_HOST"] != api
        login = httpx.get(api + "/auth.login", auth=("K1", "S1"))
        assert login.status_code == 200 and login.json()["data"]["token"]
        assert httpx.get(env["CLEARML_FILES_HOST"] + "/").text == "OK"
    finally:
        stop.set()
        thread.join(10)
    assert codes == [0]
    with pytest.raises(httpx.TransportError):
        httpx.get(api + "/debug.ping", timeout=2)


def test_sim_command_serves_a_generated_fleet() -> None:
    stop, thread, out, codes = run_until_ready(parse("--fleet", "workers=5,queues=3,tasks=50", "--port", "0",
                                                     "--files-port", "0"))
    try:
        assert "50 tasks, 3 queues, 5 workers" in out.getvalue()
    finally:
        stop.set()
        thread.join(10)
    assert codes == [0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
        (["--keys", "missing-colon"], "--keys takes KEY:SECRET"),
        (["--fleet", "workers=lots"], "bad fleet item"),
    ],
)
def test_sim_command_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(parse(*argv, "--port", "0", "--files-port", "0")) == 2
    assert message in capsys.readouterr().err


def test_sim_command_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(parse("--port", str(port), "--files-port", "0")) == 2
    assert "--port 0" in capsys.readouterr().err


def test_without_files_port_the_file_server_takes_a_free_port_even_when_8081_is_busy() -> None:
    import socket

    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            busy.bind(("127.0.0.1", 8081))
            busy.listen()
        except OSError:
            pass  # something else holds 8081 already: the same situation
        stop, thread, out, codes = run_until_ready(parse("--scenario", "basic", "--port", "0"))
        try:
            files = dict(re.findall(r"export (CLEARML_\w+)=(\S+)", out.getvalue()))["CLEARML_FILES_HOST"]
            assert not files.endswith(":8081")
            assert httpx.get(files + "/").text == "OK"
        finally:
            stop.set()
            thread.join(10)
    assert codes == [0]


def test_an_asked_for_files_port_is_used() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop, thread, out, codes = run_until_ready(parse("--port", "0", "--files-port", str(port)))
    try:
        assert f"File server:  http://127.0.0.1:{port}" in out.getvalue()
    finally:
        stop.set()
        thread.join(10)
    assert codes == [0]
