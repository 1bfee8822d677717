"""Login, token refresh and the shared login lock of the ClearML client."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest

from bot.clearml.client import ClearMLClient
from bot.clearml.errors import CredentialsError, InvalidTokenError
from tests.fakes.clearml_raw import Canned, RawRequest, RawServer, envelope, make_token
from tests.unit.clearml.test_client_errors import ACCESS, SECRET, client, run, settings


class LoginCounter:
    """auth.login that checks Basic credentials and hands out tokens (optionally slowly)."""

    def __init__(self, delay_s: float = 0.0, tokens: list[str] | None = None) -> None:
        self.delay_s = delay_s
        self.tokens = tokens
        self.issued: list[str] = []

    def __call__(self, request: RawRequest) -> Canned:
        expected = "Basic " + base64.b64encode(f"{ACCESS}:{SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return envelope(code=401, subcode=22, msg="Unauthorized (invalid credentials)")
        token = self.tokens.pop(0) if self.tokens else make_token()
        self.issued.append(token)
        canned = envelope({"token": token})
        canned.delay_s = self.delay_s
        return canned


def bearer_required(issued: list[str], *, valid: int | None = None) -> Any:
    """An endpoint that accepts only the latest issued token (or the first `valid` ones)."""

    def handler(request: RawRequest) -> Canned:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        allowed = issued[-1:] if valid is None else issued[:valid]
        if token not in allowed:
            return envelope(code=401, subcode=30, msg="Invalid token (invalid jwt token): reason=Signature has expired")
        return envelope({"workers": []})

    return handler


def test_login_decodes_jwt_claims() -> None:
    login = LoginCounter(tokens=[make_token(api_version="2.31", server_version="2.0.0")])
    with RawServer({"auth.login": login}) as srv:

        async def go() -> ClearMLClient:
            async with client(srv.url) as cl:
                token = await cl.login()
                assert token == await cl.token()  # cached
                return cl

        cl = run(go())
        assert srv.count("auth.login") == 1
    assert cl.api_version == "2.31" and cl.server_version == "2.0.0" and cl.supports_scroll()
    assert cl.token_expires_at is not None


def test_401_30_relogin_once_then_success() -> None:
    login = LoginCounter()
    with RawServer({"auth.login": login, "workers.get_all": bearer_required(login.issued)}) as srv:
        # the first token is rejected (revoked server side): the client re-logs in and retries the call
        srv.routes["workers.get_all"] = [
            envelope(code=401, subcode=30, msg="Invalid token (revoked token)"),
            envelope({"workers": [{"id": "w"}]}),
        ]

        async def go() -> dict[str, Any]:
            async with client(srv.url) as cl:
                return await cl.call("workers.get_all", {})

        assert run(go()) == {"workers": [{"id": "w"}]}
        assert srv.count("auth.login") == 2 and srv.count("workers.get_all") == 2
        assert srv.requests[-1].headers["Authorization"] == f"Bearer {login.issued[-1]}"


def test_401_30_twice_is_invalid_token() -> None:
    login = LoginCounter()
    with RawServer({"auth.login": login, "workers.get_all": bearer_required([], valid=0)}) as srv:
        cl = client(srv.url)

        async def go() -> None:
            async with cl:
                with pytest.raises(InvalidTokenError) as info:
                    await cl.call("workers.get_all", {})
                assert (info.value.code, info.value.subcode) == (401, 30)
                for token in login.issued:
                    assert token not in str(info.value)

        run(go())
        assert srv.count("auth.login") == 2 and srv.count("workers.get_all") == 2


def test_concurrent_calls_share_one_login() -> None:
    login = LoginCounter(delay_s=0.1)
    with RawServer({"auth.login": login, "workers.get_all": bearer_required(login.issued)}) as srv:

        async def go() -> None:
            async with client(srv.url) as cl:
                await asyncio.gather(*(cl.call("workers.get_all", {}) for _ in range(20)))
                await asyncio.gather(*(cl.login() for _ in range(5)))  # explicit logins also coalesce

        run(go())
        assert srv.count("workers.get_all") == 20
        assert srv.count("auth.login") == 2  # one for the calls, one for the 5 explicit logins


def test_concurrent_401_30_share_one_relogin() -> None:
    login = LoginCounter(delay_s=0.05)
    with RawServer({"auth.login": login}) as srv:

        async def go() -> None:
            async with client(srv.url) as cl:
                await cl.login()
                # the server "restarts" with a new secret: only tokens issued from now on are valid
                issued_before = len(login.issued)

                def only_new(request: RawRequest) -> Canned:
                    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
                    if token in login.issued[issued_before:]:
                        return envelope({"workers": []})
                    return envelope(code=401, subcode=30, msg="Invalid token (invalid jwt token)")

                srv.routes["workers.get_all"] = only_new
                await asyncio.gather(*(cl.call("workers.get_all", {}) for _ in range(10)))

        run(go())
        assert srv.count("auth.login") == 2


def test_relogin_when_token_near_expiry() -> None:
    now = time.time()
    # 200 s left of a one-hour token: below the 5 minute margin -> log in again before the call
    tokens = [make_token(ttl_s=3600, iat=now - 3400), make_token(ttl_s=3600)]
    login = LoginCounter(tokens=tokens)
    with RawServer({"auth.login": login, "workers.get_all": envelope({"workers": []})}) as srv:

        async def go() -> None:
            async with client(srv.url) as cl:
                await cl.call("workers.get_all", {})
                await cl.call("workers.get_all", {})
                await cl.call("workers.get_all", {})

        run(go())
        assert srv.count("auth.login") == 2
        assert srv.requests[-1].headers["Authorization"] == f"Bearer {login.issued[-1]}"


def test_short_lived_tokens_do_not_force_a_login_per_call() -> None:
    login = LoginCounter(tokens=[make_token(ttl_s=120)])
    with RawServer({"auth.login": login, "workers.get_all": envelope({"workers": []})}) as srv:

        async def go() -> None:
            async with client(srv.url) as cl:
                for _ in range(3):
                    await cl.call("workers.get_all", {})

        run(go())
        assert srv.count("auth.login") == 1


def test_wrong_keys_are_credentials_error() -> None:
    with RawServer({"auth.login": LoginCounter()}) as srv:
        cl = ClearMLClient(settings(srv.url, secret_key="wrong-secret-value"))

        async def go() -> None:
            async with cl:
                with pytest.raises(CredentialsError) as info:
                    await cl.call("workers.get_all", {})
                assert "wrong-secret-value" not in str(info.value)

        run(go())
