"""The fake Slack Web API (tests/fakes/slack_api.py) in a process of its own, for benchmarks 3 and 5.

    python -m bench.workers.fake_slack

Prints `URL <base url>` once serving. Then reads commands on stdin: `dump` prints `CALLS <json>` (every Web API
call and response_url post so far: method, time, ok, ts, text prefix); end of input stops it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.fakes.slack_api import FakeSlack


def _summary(call: Any) -> dict[str, Any]:
    return {
        "method": call.method,
        "at": call.at,
        "ok": call.ok if call.method != "response_url" else call.status == 200,
        "ts": str(call.args.get("ts") or call.response.get("ts") or ""),
        "text": str(call.args.get("text") or "")[:80],
        "channel": str(call.args.get("channel") or ""),
    }


def main() -> None:
    with FakeSlack() as slack:
        slack.add_channel("ml-alerts")
        print(f"URL {slack.base_url}", flush=True)
        for line in sys.stdin:
            if line.strip() == "dump":
                with slack._lock:
                    calls = [_summary(c) for c in [*slack.calls, *slack.responses]]
                    violations = list(slack.violations)
                print("CALLS " + json.dumps({"calls": calls, "violations": violations}), flush=True)


if __name__ == "__main__":
    main()
