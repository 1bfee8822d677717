"""`python -m bot.slack.healthcheck [URL]`: exit 0 when the bot's /healthz answers 200, else 1.

For the container's HEALTHCHECK (the slim image has no curl). Both Socket Mode and HTTP mode serve /healthz on
$PORT (default 3000), so one probe fits both.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    url = argv[0] if argv else f"http://127.0.0.1:{os.environ.get('PORT') or 3000}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read(2000).decode("utf-8", "replace")
            ok = resp.status == 200
    except urllib.error.HTTPError as exc:
        body, ok = exc.read(2000).decode("utf-8", "replace"), False
    except (urllib.error.URLError, OSError) as exc:
        body, ok = f"{url}: {exc}", False
    print(body, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
