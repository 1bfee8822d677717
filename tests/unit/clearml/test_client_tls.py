"""TLS failures name the exact problem; verify accepts a CA bundle path. Certificates are made at test time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.clearml.client import ClearMLClient
from bot.clearml.errors import ServerUnavailableError
from tests.fakes.clearml_raw import RawServer, envelope, make_cert, server_tls_context
from tests.unit.clearml.test_client_errors import failing, run, settings

pytest.importorskip("cryptography")

PING = {"debug.ping": envelope({"msg": "ClearML server"})}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("tls")
    return {
        "good": make_cert(base, common_name="localhost"),
        "other_host": make_cert(base, common_name="clearml.example.com", san_dns=("clearml.example.com",), san_ip=()),
        "expired": make_cert(base, common_name="localhost", expired=True),
    }


def tls_error(url: str, verify: bool | str) -> ServerUnavailableError:
    cl = ClearMLClient(settings(url, verify=verify))
    err = run(failing(cl, "debug.ping", auth=False))
    assert isinstance(err, ServerUnavailableError) and err.reason == "tls", err
    assert cl.stats.calls == 1  # a certificate problem does not go away by retrying
    return err


def ping(url: str, verify: bool | str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with ClearMLClient(settings(url, verify=verify)) as cl:
            return await cl.call("debug.ping", {}, auth=False)

    return run(go())


def test_self_signed_certificate(certs: dict[str, tuple[Path, Path]]) -> None:
    with RawServer(PING, tls=server_tls_context(*certs["good"])) as srv:
        err = tls_error(srv.url, True)
    assert "certificate verify failed" in err.message and "self-signed" in err.message.replace(" signed", "-signed")
    assert "127.0.0.1" in err.message


def test_ca_bundle_path_and_verify_off(certs: dict[str, tuple[Path, Path]]) -> None:
    with RawServer(PING, tls=server_tls_context(*certs["good"])) as srv:
        assert ping(srv.url, str(certs["good"][0])) == {"msg": "ClearML server"}
        assert ping(srv.url, False) == {"msg": "ClearML server"}


def test_hostname_mismatch(certs: dict[str, tuple[Path, Path]]) -> None:
    with RawServer(PING, tls=server_tls_context(*certs["other_host"])) as srv:
        err = tls_error(srv.url, str(certs["other_host"][0]))
    assert "certificate verify failed" in err.message and "mismatch" in err.message.lower()


def test_expired_certificate(certs: dict[str, tuple[Path, Path]]) -> None:
    with RawServer(PING, tls=server_tls_context(*certs["expired"])) as srv:
        err = tls_error(srv.url, str(certs["expired"][0]))
    assert "certificate verify failed" in err.message and "expired" in err.message


def test_https_to_a_plain_http_port() -> None:
    with RawServer(PING) as srv:
        err = tls_error(srv.url.replace("http://", "https://"), True)
    assert "does not speak TLS" in err.message


def test_unreadable_ca_bundle(tmp_path: Path) -> None:
    with RawServer(PING) as srv:
        cl = ClearMLClient(settings(srv.url, verify=str(tmp_path / "missing-ca.pem")))
        err = run(failing(cl, "debug.ping", auth=False))
        assert srv.requests == []
    assert isinstance(err, ServerUnavailableError) and err.reason == "tls" and "missing-ca.pem" in err.message
