"""Envelope parsing and error classification of the ClearML client, against a raw loopback server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from bot.clearml.client import ClearMLClient, is_read_endpoint
from bot.clearml.errors import (
    BadRequestError,
    ClearMLError,
    CredentialsError,
    ForbiddenError,
    NotFoundError,
    ServerUnavailableError,
    StatusTransitionError,
)
from bot.config import ServerSettings
from tests.fakes.clearml_raw import Canned, RawRequest, RawServer, envelope, free_port, make_token

T = TypeVar("T")
ACCESS, SECRET = "AKEYZ0123456789", "s3cr3t-VALUE-abcdef"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def settings(url: str, **kw: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "name": "t",
        "api_url": url,
        "web_url": url,
        "files_url": url,
        "access_key": SecretStr(ACCESS),
        "secret_key": SecretStr(SECRET),
        "timeout_s": 2.0,
        "retries": 2,
    }
    values.update(kw)
    return ServerSettings(**values)


def login_route(token: str | None = None) -> Canned:
    return envelope({"token": token or make_token()}, endpoint="auth.login")


def client(url: str, **kw: Any) -> ClearMLClient:
    # fast backoff keeps the retry tests quick; the budget logic is the same
    return ClearMLClient(settings(url, **kw), retry_base_s=0.01)


async def failing(cl: ClearMLClient, endpoint: str, **kw: Any) -> ClearMLError:
    async with cl:
        with pytest.raises(ClearMLError) as info:
            await cl.call(endpoint, {}, **kw)
    return info.value


def test_success_request_shape() -> None:
    with RawServer({"auth.login": login_route(), "workers.get_all": envelope({"workers": [{"id": "w1"}]})}) as srv:

        async def go() -> dict[str, Any]:
            async with client(srv.url) as cl:
                return await cl.call("workers.get_all", {"last_seen": 0})

        assert run(go()) == {"workers": [{"id": "w1"}]}
        login, call = srv.requests
        assert login.method == "POST" and login.headers["Authorization"].startswith("Basic ")
        assert call.method == "POST" and call.path == "workers.get_all"
        assert call.json() == {"last_seen": 0}
        assert call.headers["Authorization"].startswith("Bearer ")
        assert call.headers["X-ClearML-Client"].startswith("clearml-chatops/")
        assert call.headers["Content-Type"] == "application/json"


def test_unauthenticated_call_sends_no_credentials() -> None:
    with RawServer({"debug.ping": envelope({"msg": "ClearML server"})}) as srv:

        async def go() -> dict[str, Any]:
            async with client(srv.url) as cl:
                return await cl.call("debug.ping", {}, auth=False)

        assert run(go()) == {"msg": "ClearML server"}
        assert [r.path for r in srv.requests] == ["debug.ping"]
        assert "Authorization" not in srv.requests[0].headers


def test_refused_port_is_retried_for_reads() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    cl = client(url)
    err = run(failing(cl, "debug.ping", auth=False))
    assert isinstance(err, ServerUnavailableError) and err.reason == "refused"
    assert err.endpoint == "debug.ping" and "127.0.0.1" in err.message
    assert cl.stats.calls == 3 and cl.stats.retries == 2 and err.attempts == 3


def test_dns_failure_is_not_retried() -> None:
    cl = client("http://clearml-api.nonexistent.invalid:8008")
    err = run(failing(cl, "debug.ping", auth=False))
    assert isinstance(err, ServerUnavailableError) and err.reason == "dns"
    assert "clearml-api.nonexistent.invalid" in err.message
    assert cl.stats.calls == 1


def test_timeout_is_bounded() -> None:
    with RawServer({"debug.ping": Canned(delay_s=1.5, body={"x": 1})}) as srv:
        cl = ClearMLClient(settings(srv.url, timeout_s=0.2, retries=5), retry_base_s=0.01, retry_budget_s=0.5)
        start = time.monotonic()
        err = run(failing(cl, "debug.ping", auth=False))
        elapsed = time.monotonic() - start
    assert isinstance(err, ServerUnavailableError) and err.reason == "timeout"
    assert "0.2 s" in err.message
    # retries stop once the budget is spent, whatever `retries` says
    assert 2 <= cl.stats.calls <= 4 and elapsed < 1.5


def test_html_502_proxy_page() -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
    with RawServer({"debug.ping": Canned(status=502, body=page)}) as srv:
        cl = client(srv.url)
        err = run(failing(cl, "debug.ping", auth=False))
    assert isinstance(err, ServerUnavailableError) and err.reason == "not_json"
    assert err.code == 502 and '"502 Bad Gateway"' in err.message and "text/html" in err.message
    assert cl.stats.calls == 3  # a 5xx proxy page is transient: reads retry


def test_500_with_traceback_keeps_only_result_msg() -> None:
    failure = envelope(
        code=500,
        subcode=102,
        msg="Database is temporarily unavailable",
        error_stack='Traceback (most recent call last):\n  File "/opt/clearml/apiserver/x.py", line 1\nKeyError',
    )
    with RawServer({"auth.login": login_route(), "tasks.get_by_id": failure}) as srv:
        cl = client(srv.url, retries=0)
        err = run(failing(cl, "tasks.get_by_id"))
    assert isinstance(err, ServerUnavailableError) and err.reason == "http_5xx"
    assert (err.code, err.subcode) == (500, 102)
    assert err.message == "Database is temporarily unavailable"
    assert "Traceback" not in str(err) and "apiserver" not in str(err)


def test_non_json_200_is_not_retried() -> None:
    with RawServer({"debug.ping": Canned(status=200, body="<html><title>ClearML</title>web app</html>")}) as srv:
        cl = client(srv.url)
        err = run(failing(cl, "debug.ping", auth=False))
    assert isinstance(err, ServerUnavailableError) and err.reason == "not_json" and err.code == 200
    assert '"ClearML"' in err.message
    assert cl.stats.calls == 1


def test_json_without_envelope() -> None:
    with RawServer({"debug.ping": Canned(status=200, body={"status": "ok"})}) as srv:
        err = run(failing(client(srv.url), "debug.ping", auth=False))
    assert isinstance(err, ServerUnavailableError) and err.reason == "not_json" and "meta" in err.message


def test_redirect_names_the_location() -> None:
    redirect = Canned(status=301, body="", headers={"Location": "https://api.example.com/debug.ping"})
    with RawServer({"debug.ping": redirect}) as srv:
        err = run(failing(client(srv.url), "debug.ping", auth=False))
    assert isinstance(err, ServerUnavailableError) and err.reason == "not_json" and err.code == 301
    assert "https://api.example.com/debug.ping" in err.message


@pytest.mark.parametrize(
    ("code", "subcode", "error_type"),
    [
        (400, 101, NotFoundError),
        (400, 201, NotFoundError),
        (400, 401, NotFoundError),
        (400, 701, NotFoundError),
        (400, 1001, NotFoundError),
        (404, 0, NotFoundError),
        (400, 110, StatusTransitionError),
        (400, 121, StatusTransitionError),
        (403, 20, ForbiddenError),
        (400, 12, BadRequestError),
        (400, 706, BadRequestError),
        (409, 0, BadRequestError),
    ],
)
def test_api_errors_are_typed_and_never_retried(code: int, subcode: int, error_type: type[ClearMLError]) -> None:
    msg = "Invalid task id: id=abc, company=c1"
    with RawServer(
        {"auth.login": login_route(), "tasks.get_by_id": envelope(code=code, subcode=subcode, msg=msg)}
    ) as srv:
        cl = client(srv.url)
        err = run(failing(cl, "tasks.get_by_id"))
        assert srv.count("tasks.get_by_id") == 1
    assert type(err) is error_type
    assert (err.endpoint, err.code, err.subcode, err.message) == ("tasks.get_by_id", code, subcode, msg)
    assert str(err) == f"tasks.get_by_id: {msg} ({code}/{subcode})"


def test_bad_credentials_on_login_redacted() -> None:
    # A server (or proxy) that echoes what it got must not make the client leak it.
    msg = f"Unauthorized (invalid credentials) (failed to locate provided credentials): key={ACCESS} s={SECRET}"
    with RawServer({"auth.login": envelope(code=401, subcode=22, msg=msg)}) as srv:
        cl = client(srv.url)
        err = run(failing(cl, "workers.get_all"))
        assert srv.count("auth.login") == 1  # 4xx: no retry
    assert isinstance(err, CredentialsError) and (err.code, err.subcode) == (401, 22)
    assert err.endpoint == "auth.login"
    assert ACCESS not in str(err) and SECRET not in str(err) and "invalid credentials" in str(err)
    assert ACCESS not in repr(cl) and SECRET not in repr(cl)


def test_missing_credentials_fail_without_a_request() -> None:
    with RawServer({}) as srv:
        cl = ClearMLClient(settings(srv.url, access_key=None, secret_key=None))
        err = run(failing(cl, "workers.get_all"))
        assert srv.requests == []
    assert isinstance(err, CredentialsError) and "CLEARML_API_ACCESS_KEY" in err.message


def test_reads_retry_then_succeed_writes_never_retry() -> None:
    bad = Canned(status=503, body="<title>503 Service Unavailable</title>")
    ok = envelope({"tasks": []})
    with RawServer({"auth.login": login_route(), "tasks.get_all": [bad, bad, ok], "tasks.enqueue": [bad, ok]}) as srv:

        async def go() -> tuple[dict[str, Any], ClearMLError]:
            async with client(srv.url) as cl:
                data = await cl.call("tasks.get_all", {})
                with pytest.raises(ServerUnavailableError) as info:
                    await cl.call("tasks.enqueue", {"task": "t1", "queue": "q1"})
                assert cl.stats.retries == 2
                return data, info.value

        data, err = run(go())
        assert data == {"tasks": []}
        assert srv.count("tasks.get_all") == 3
        assert srv.count("tasks.enqueue") == 1 and err.attempts == 1


def test_read_inference() -> None:
    for endpoint in (
        "tasks.get_all",
        "tasks.get_by_id",
        "debug.ping",
        "server.info",
        "queues.peek_task",
        "events.get_task_log",
        "users.get_current_user",
        "queues.get_queue_metrics",
    ):
        assert is_read_endpoint(endpoint), endpoint
    for endpoint in (
        "tasks.clone",
        "tasks.enqueue",
        "tasks.stop",
        "tasks.reset",
        "tasks.dequeue",
        "queues.move_task_to_front",
        "queues.get_next_task",
        "workers.register",
    ):
        assert not is_read_endpoint(endpoint), endpoint


def test_stats_and_call_log() -> None:
    def echo(request: RawRequest) -> Canned:
        return envelope({"echo": request.json()})

    with RawServer({"auth.login": login_route(), "debug.ping": echo, "tasks.get_by_id": echo}) as srv:

        async def go() -> ClearMLClient:
            async with ClearMLClient(settings(srv.url), record_calls=True) as cl:
                await cl.call("debug.ping", {"a": 1}, auth=False)
                await cl.call("tasks.get_by_id", {"task": "t1"})
                await cl.call("tasks.get_by_id", {"task": "t2"})
                return cl

        cl = run(go())
    stats = cl.stats
    assert stats.calls == 4 and stats.logins == 1 and stats.errors == 0
    assert stats.by_endpoint == {"debug.ping": 1, "auth.login": 1, "tasks.get_by_id": 2}
    assert stats.bytes_received > 0
    assert stats.log is not None and [e[0] for e in stats.log] == [
        "debug.ping",
        "auth.login",
        "tasks.get_by_id",
        "tasks.get_by_id",
    ]
    assert stats.log[2][1] == {"task": "t1"} and stats.log[2][2] <= stats.log[2][3]
