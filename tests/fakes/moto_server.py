"""moto's real HTTP server (ThreadedMotoServer) on 127.0.0.1 and a free port, for AWS-backed tests (EC2, S3).

Real sockets and boto3's real request path; only the AWS side is simulated. Use the `moto_server` fixture and
pass its URL as `endpoint_url`:

    def test_x(moto_server: str) -> None:
        ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name="eu-west-1")

One server per test session (starting and stopping one costs about a second); every test starts from an empty
AWS account (moto's state is reset after each test). The fixture also sets fake AWS credentials in the
environment so that real ones can never be picked up.
"""

from __future__ import annotations

import contextlib
import socket
import urllib.request
from collections.abc import Iterator

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def _moto_server_process() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_server(_moto_server_process: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    try:
        yield _moto_server_process
    finally:
        # moto keeps its backends in process globals: reset so the next test starts from an empty account
        request = urllib.request.Request(f"{_moto_server_process}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=5).close()


@contextlib.contextmanager
def iam_enforced() -> Iterator[None]:
    """Make the (in-process) moto server authenticate every request against its IAM users and policies, as AWS
    does: unknown access keys, wrong secrets and denied actions then fail like on AWS. Restores moto's default
    (no authentication) afterwards, since the setting is process-global."""
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin

    previous = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield
    finally:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = previous
        ActionAuthenticatorMixin.request_count = 0
