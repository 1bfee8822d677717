"""server.* checks through the real HTTP client: the simulator, raw loopback servers (HTML pages, silence) and TLS
servers with certificates made at test time."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.config import ServerSettings, Settings
from bot.engine.findings import Finding, is_problem
from bot.engine.playbook import CheckEntry, Playbook
from bot.engine.runner import RunResult, run_playbooks
from tests.fakes.clearml_raw import Canned, RawServer, envelope, free_port, server_tls_context
from tests.helpers import server_settings

pytest.importorskip("cryptography")


def run(server: ServerSettings, *checks: str | tuple[str, dict[str, Any]]) -> RunResult:
    entries = [CheckEntry(check=c) if isinstance(c, str) else CheckEntry(check=c[0], params=c[1]) for c in checks]
    return asyncio.run(run_playbooks([Playbook(name="test", checks=entries)], Settings(), server))


def only(result: RunResult, check_id: str) -> Finding:
    found = [f for f in result.findings if f.check == check_id]
    assert len(found) == 1, [f.title for f in found]
    return found[0]


def settings(api_url: str, **kw: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "name": "prod", "api_url": api_url, "web_url": api_url, "files_url": api_url,
        "access_key": SecretStr("AKEY0123"), "secret_key": SecretStr("SECRET0123"), "timeout_s": 2.0, "retries": 0,
    }
    values.update(kw)
    return ServerSettings(**values)


# -- server.reachable / server.credentials / server.version over the simulator ----------------------


def test_healthy_server_reports_ok_with_latency_versions_and_user(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy-fleet")
    result = run(server_settings(sim), "server.reachable", "server.credentials", "server.version", "server.tls")
    assert not result.problems, [f.title for f in result.problems]
    reach = only(result, "server.reachable")
    assert reach.severity == "ok" and reach.evidence["latency_ms"] >= 0
    assert reach.evidence["server_version"] == "2.3.0" and reach.evidence["api_version"] == "2.34"
    creds = only(result, "server.credentials")
    assert creds.severity == "ok" and creds.evidence["user"]["name"]
    assert only(result, "server.version").severity == "ok"
    # the simulator speaks plain http: server.tls only notes it
    assert {f.severity for f in result.findings if f.check == "server.tls"} == {"info"}


def test_old_server_warns_against_the_installed_sdk(sim_factory: Any) -> None:
    sim = sim_factory(scenario="zoo-fleet")
    finding = only(run(server_settings(sim), "server.version"), "server.version")
    assert finding.severity == "warning"
    assert finding.evidence["api_version"] == "2.20" and finding.evidence["server_version"] == "1.7.0"
    assert "2.23" in finding.evidence["sdk"]["api_versions"]
    assert "newest bundled API" in finding.detail and "upgrade" in finding.remediation.lower()


def test_wrong_keys_are_told_apart_from_a_wrong_host(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy-fleet")
    wrong = server_settings(sim).model_copy(update={"secret_key": SecretStr("not-the-secret")})
    result = run(wrong, "server.reachable", "server.credentials")
    assert only(result, "server.reachable").severity == "ok"  # the host is right...
    creds = only(result, "server.credentials")  # ...the keys are not
    assert creds.severity == "critical" and creds.title == "ClearML rejects the configured API keys"
    assert (creds.evidence["code"], creds.evidence["subcode"]) == (401, 22)
    assert "CLEARML_API_ACCESS_KEY" in creds.remediation
    assert "not-the-secret" not in json.dumps(creds.model_dump(mode="json"))


def test_missing_keys_name_the_settings(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy-fleet")
    bare = server_settings(sim).model_copy(update={"access_key": None, "secret_key": None})
    creds = only(run(bare, "server.credentials"), "server.credentials")
    assert creds.severity == "critical" and "CLEARML_API_SECRET_KEY" in creds.remediation


def test_connection_refused_names_the_reason_and_the_host_setting() -> None:
    server = settings(f"http://127.0.0.1:{free_port()}", source="api from CLEARML_API_HOST")
    for check_id in ("server.reachable", "server.credentials"):  # each alone: together they fold into one
        finding = only(run(server, check_id), check_id)
        assert finding.severity == "critical" and finding.evidence["reason"] == "refused"
        assert "refuses connections" in finding.title and "`CLEARML_API_HOST`" in finding.remediation
    # server.version cannot run without the server: an error finding, not a crash
    assert only(run(server, "server.version"), "server.version").severity == "error"
    # Together (issue 13): one root, the rest folded into it, the check that could not run named.
    result = run(server, "server.reachable", "server.credentials", "server.version")
    [root] = result.findings
    assert root.check == "server.reachable" and root.evidence["not_run"] == ["server.version"]
    assert {s.check for s in root.suppressed} == {"server.credentials", "server.version"}
    assert "Not run: 1 check (server.version)" in root.detail


def test_web_ui_port_instead_of_the_api_is_called_out() -> None:
    page = Canned(status=200, body="<html><head><title>ClearML</title></head><body>app</body></html>")
    routes = {name: page for name in ("debug.ping", "server.info", "auth.login", "users.get_current_user")}
    with RawServer(routes) as web:
        results = {c: run(settings(web.url), c) for c in ("server.reachable", "server.credentials")}
    for check_id in ("server.reachable", "server.credentials"):
        finding = only(results[check_id], check_id)
        assert finding.severity == "critical" and finding.evidence["reason"] == "not_json"
        assert "not as the ClearML API" in finding.title and "web UI" in finding.remediation


def test_silent_server_is_a_timeout() -> None:
    slow = Canned(status=200, body={"meta": {}, "data": {}}, delay_s=2.5)
    with RawServer({"debug.ping": slow, "auth.login": slow}) as srv:
        results = {c: run(settings(srv.url, timeout_s=0.5), c) for c in ("server.reachable", "server.credentials")}
    for check_id in ("server.reachable", "server.credentials"):
        finding = only(results[check_id], check_id)
        assert finding.severity == "critical" and finding.evidence["reason"] == "timeout"
        assert "firewall" in finding.remediation


def test_server_errors_and_slowness(sim_factory: Any) -> None:
    sim = sim_factory(scenario="healthy-fleet")
    sim.set_fault("debug.ping", status=500, message="Database is temporarily unavailable", subcode=102)
    finding = only(run(server_settings(sim).model_copy(update={"retries": 0}), "server.reachable"),
                   "server.reachable")
    assert finding.severity == "critical" and finding.evidence["reason"] == "http_5xx"
    assert "Database is temporarily unavailable" in finding.detail and "mongo" in finding.remediation
    sim.clear_faults()
    sim.latency_ms = 120
    slow = only(run(server_settings(sim), ("server.reachable", {"slow_after": "50ms"})), "server.reachable")
    assert slow.severity == "warning" and slow.evidence["latency_ms"] >= 100


# -- server.tls and TLS failures of the API ----------------------------------------------------------


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write(directory: Path, name: str, cert: Any, key: Any) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """A private CA and leaf certificates for 127.0.0.1 with various lifetimes and names (made at test time)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    base = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Acme Internal CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": _write(base, "ca", ca, ca_key)}

    def leaf(name: str, days: float, *, self_signed: bool = False, dns: str | None = None) -> None:
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns or "127.0.0.1")])
        sans: list[x509.GeneralName] = [x509.DNSName(dns)] if dns else [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject if self_signed else ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=2)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        )
        out[name] = _write(base, name, builder.sign(key if self_signed else ca_key, hashes.SHA256()), key)

    leaf("good", 200)
    leaf("soon", 12)
    leaf("very_soon", 3)
    leaf("expired", -1)
    leaf("self_signed", 200, self_signed=True)
    leaf("other_name", 200, dns="clearml.acme.example")
    return out


def tls_run(pki: dict[str, tuple[Path, Path]], cert: str, verify: bool | str) -> Finding:
    """server.tls with the files host on a TLS server presenting `cert`; the other hosts are plain http."""
    with RawServer({}, tls=server_tls_context(*pki[cert])) as files:
        server = settings("http://127.0.0.1:9", files_url=files.url, verify=verify)
        result = run(server, "server.tls")
    [finding] = [f for f in result.findings if f.subject.id == files.url]
    assert finding.evidence["roles"] == ["files"]
    return finding


def test_tls_valid_chain_under_a_ca_bundle(pki: dict[str, tuple[Path, Path]]) -> None:
    finding = tls_run(pki, "good", str(pki["ca"][0]))
    assert finding.severity == "ok", finding.title
    assert 199 <= finding.evidence["days_left"] <= 200
    assert finding.evidence["protocol"].startswith("TLS")
    assert finding.evidence["certificate"]["issuer"] == "CN=Acme Internal CA"


@pytest.mark.parametrize(
    ("cert", "severity", "words"),
    [("soon", "warning", "expires in 12 days"), ("very_soon", "critical", "expires in 3 days")],
)
def test_tls_expiry_thresholds(pki: dict[str, tuple[Path, Path]], cert: str, severity: str, words: str) -> None:
    finding = tls_run(pki, cert, str(pki["ca"][0]))
    assert finding.severity == severity and words in finding.title
    assert "Renew" in finding.remediation


@pytest.mark.parametrize(
    ("cert", "verify", "failure", "words"),
    [
        ("self_signed", True, "self_signed", "self-signed"),
        ("good", True, "untrusted_issuer", "local issuer"),  # the private CA is not in the default store
        ("expired", "CA", "expired", "expired"),
        ("other_name", "CA", "hostname_mismatch", "mismatch"),
    ],
)
def test_tls_failures_are_named(
    pki: dict[str, tuple[Path, Path]], cert: str, verify: bool | str, failure: str, words: str
) -> None:
    finding = tls_run(pki, cert, str(pki["ca"][0]) if verify == "CA" else verify)
    assert finding.severity == "critical"
    assert finding.evidence["failure"] == failure and words in finding.evidence["message"].lower()
    assert "CLEARML_API_HOST_VERIFY_CERT" in finding.remediation and "REQUESTS_CA_BUNDLE" in finding.remediation
    assert finding.evidence["certificate"]["not_after"]  # read without verification, to show what is served


def test_tls_verification_off_is_a_note_saying_what_would_fail(pki: dict[str, tuple[Path, Path]]) -> None:
    finding = tls_run(pki, "self_signed", False)
    assert finding.severity == "info" and "not verified" in finding.title
    assert "self-signed" in finding.evidence["default_verification"]


def test_https_url_on_a_plain_http_port() -> None:
    with RawServer({"debug.ping": envelope({"msg": "ok"})}) as plain:
        url = plain.url.replace("http://", "https://")
        result = run(settings("http://127.0.0.1:9", files_url=url), "server.tls")
    [finding] = [f for f in result.findings if f.subject.id == url]
    assert finding.severity == "critical" and finding.evidence["failure"] == "not_tls"


def test_api_behind_an_untrusted_certificate_is_a_tls_credentials_failure(pki: dict[str, tuple[Path, Path]]) -> None:
    with RawServer({}, tls=server_tls_context(*pki["self_signed"])) as api:
        result = run(settings(api.url), "server.credentials", "server.tls")
    creds = only(result, "server.credentials")
    assert creds.severity == "critical" and creds.evidence["reason"] == "tls"
    assert "CLEARML_API_HOST_VERIFY_CERT" in creds.remediation and "REQUESTS_CA_BUNDLE" in creds.remediation
    tls = only(result, "server.tls")
    assert tls.severity == "critical" and tls.evidence["roles"] == ["api", "web", "files"]


def test_unreachable_tls_host_is_a_warning_not_a_crash() -> None:
    port = free_port()  # nothing listens there
    result = run(settings("http://127.0.0.1:9", files_url=f"https://127.0.0.1:{port}"), "server.tls")
    [finding] = [f for f in result.findings if f.subject.id.endswith(f":{port}")]
    assert finding.severity == "warning" and finding.evidence["failure"] == "refused"
    assert not any(is_problem(f.severity) for f in result.findings if f is not finding)
