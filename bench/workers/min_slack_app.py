"""Baseline of benchmark 3: the least any Slack app served over HTTP must do for a slash command.

    python -m bench.workers.min_slack_app --port N

The same server stack as `serve --http` (uvicorn, Starlette), one route: read the form, verify Slack's request
signature with slack_sdk's SignatureVerifier, answer 200 with an empty body. No Bolt, no parsing of the command,
no work queued. Prints `READY` once listening.
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def build(secret: str) -> Starlette:
    verifier = SignatureVerifier(secret)

    async def events(request: Request) -> Response:
        body = await request.body()
        if not verifier.is_valid_request(body, dict(request.headers)):
            return Response(status_code=401)
        return Response(status_code=200)

    return Starlette(routes=[Route("/slack/events", events, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = build(os.environ["SLACK_SIGNING_SECRET"])
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    print("READY", flush=True)
    server.run()


if __name__ == "__main__":
    main()
