"""The command rotate backend's argv handling, without ClearML: substitution per argument, no shell, refusal
of option-like and control-character values, timeout, redaction."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from bot.actions.base import BackendError, Refusal
from bot.actions.rotate.command import check_value, render_argv, run_argv

TEMPLATE = ["ssh", "{host}", "sudo", "systemctl", "restart", "clearml-agent@{worker}", "--ip={ip}"]


def test_placeholders_are_substituted_inside_each_argument_only() -> None:
    argv = render_argv(TEMPLATE, {"worker": "gpu-box:0", "host": "gpu-box", "ip": "10.0.0.5"})
    assert argv == ["ssh", "gpu-box", "sudo", "systemctl", "restart", "clearml-agent@gpu-box:0", "--ip=10.0.0.5"]
    hostile = "x; rm -rf / $(reboot) `id` {host}"
    argv = render_argv(["echo", "{worker}"], {"worker": hostile, "host": "h", "ip": None})
    assert argv == ["echo", hostile]  # one argument, and a value is never re-expanded


def test_unknown_or_missing_placeholders_and_unsafe_values_are_refused() -> None:
    with pytest.raises(Refusal, match="unknown placeholder"):
        render_argv(["ssh", "{worker.__class__}"], {"worker": "w", "host": "h", "ip": None})
    with pytest.raises(Refusal, match="ip"):
        render_argv(["ping", "{ip}"], {"worker": "w", "host": "h", "ip": None})
    for bad in ("-oProxyCommand=reboot", "--help"):
        with pytest.raises(Refusal, match="option"):
            check_value("host", bad)
    with pytest.raises(Refusal, match="control characters"):
        check_value("worker", "gpu\nbox")
    # issue #14: an argv may wrap ssh (a remote shell joins the arguments), so shell syntax is refused outright
    for bad in ("gpu-box:0; touch pwned", "$(reboot)", "a'b", "x y", "gpu|box"):
        with pytest.raises(Refusal, match="may only use letters"):
            check_value("worker", bad)
    check_value("worker", "gpu-box-1.example:gpu0@ops_x")


def test_run_argv_has_no_shell_captures_and_redacts() -> None:
    code = "import sys, json; print(json.dumps(sys.argv[1:])); print('secret=abcdefgh1234', file=sys.stderr)"
    out = asyncio.run(run_argv([sys.executable, "-c", code, "$(id)", "a b"], timeout_s=10, env={},
                               secrets=[]))
    first, second = out["output"].splitlines()
    assert json.loads(first) == ["$(id)", "a b"]
    assert second == "secret=[REDACTED]"


def test_failures_timeouts_and_missing_programs() -> None:
    with pytest.raises(BackendError, match="exited with code 4") as exc:
        asyncio.run(run_argv([sys.executable, "-c", "print('tok-SECRETVALUE'); raise SystemExit(4)"], timeout_s=10,
                             env={}, secrets=["tok-SECRETVALUE"]))
    assert exc.value.output == "[REDACTED]" and not exc.value.retry
    with pytest.raises(BackendError, match="timed out") as slow:
        asyncio.run(run_argv([sys.executable, "-c", "import time; time.sleep(20)"], timeout_s=0.3, env={},
                             secrets=[]))
    assert slow.value.retry
    with pytest.raises(BackendError, match="cannot run"):
        asyncio.run(run_argv(["/nonexistent/ssh-x", "host"], timeout_s=1, env={}, secrets=[]))
