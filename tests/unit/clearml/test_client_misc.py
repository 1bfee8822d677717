"""Server clock, file server and probe requests, and secrets staying out of logs."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest

from bot.clearml.client import ClearMLClient
from bot.clearml.errors import ServerUnavailableError
from tests.fakes.clearml_raw import Canned, RawRequest, RawServer, envelope, free_port, make_token
from tests.unit.clearml.test_client_errors import ACCESS, SECRET, client, run, settings


def test_server_time_follows_the_date_header() -> None:
    skewed = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)  # the server's clock is years ahead of ours
    with RawServer({"debug.ping": envelope({})}, date=skewed) as srv:

        async def go() -> tuple[dt.datetime | None, dt.datetime | None]:
            async with client(srv.url) as cl:
                before = cl.server_time()
                await cl.call("debug.ping", {}, auth=False)
                return before, cl.server_time()

        before, after = run(go())
    assert before is None
    assert after is not None and dt.timedelta(0) <= after - skewed < dt.timedelta(seconds=2)
    assert after.tzinfo is not None


def test_fileserver_sends_the_token_only_to_the_files_host() -> None:
    token = make_token()

    def files(request: RawRequest) -> Canned:
        return Canned(status=200, body=b"artifact-bytes")

    with RawServer({"auth.login": envelope({"token": token})}) as api, RawServer() as files_srv, RawServer() as other:
        files_srv.routes["proj/a.txt"] = files
        other.routes["proj/a.txt"] = files

        async def go() -> None:
            cl = ClearMLClient(settings(api.url, files_url=files_srv.url + "/"))
            async with cl:
                rel = await cl.fileserver("GET", "proj/a.txt")
                absolute = await cl.fileserver("get", f"{files_srv.url}/proj/a.txt")
                foreign = await cl.fileserver("GET", f"{other.url}/proj/a.txt")
                up = await cl.fileserver("POST", "proj/a.txt", content=b"x")
                assert rel.content == absolute.content == foreign.content == b"artifact-bytes"
                assert up.status_code == 200
                assert cl.stats.other_requests == 4 and cl.stats.calls == 1  # the login

        run(go())
        assert [r.headers.get("Authorization") for r in files_srv.requests] == [f"Bearer {token}"] * 3
        assert "Authorization" not in other.requests[0].headers
        assert files_srv.requests[2].method == "POST" and files_srv.requests[2].body == b"x"


def test_probe_is_a_plain_get_and_maps_failures() -> None:
    with RawServer({"": Canned(status=200, body="<html><title>ClearML</title></html>")}) as web:

        async def go() -> None:
            async with client(web.url) as cl:
                response = await cl.probe(web.url + "/", timeout=1.0)
                assert response.status_code == 200 and b"ClearML" in response.content
                with pytest.raises(ServerUnavailableError) as info:
                    await cl.probe(f"http://127.0.0.1:{free_port()}/")
                assert info.value.reason == "refused" and info.value.endpoint == "probe"

        run(go())
        assert web.requests[0].method == "GET" and "Authorization" not in web.requests[0].headers


def test_secrets_stay_out_of_logs_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    token = make_token()
    echo = envelope(code=400, subcode=12, msg=f"Validation error: Authorization: Bearer {token}")
    with RawServer({"auth.login": envelope({"token": token}), "tasks.get_all": echo}) as srv:

        async def go() -> Any:
            async with client(srv.url) as cl:
                try:
                    await cl.call("tasks.get_all", {})
                except Exception as exc:
                    return exc, cl

        with caplog.at_level(logging.DEBUG):
            err, cl = run(go())
    text = caplog.text + str(err) + repr(err) + repr(cl) + repr(cl.server)
    for secret in (ACCESS, SECRET, token):
        assert secret not in text
