"""The simulator speaks clearml-server's protocol: URL forms, envelope, auth and error codes, faults."""

from __future__ import annotations

import base64
import time
from email.utils import parsedate_to_datetime

import httpx
import jwt
import pytest

from bot.sim.server import SimServer
from tests.helpers import sim_data, sim_request


def test_envelope_of_a_versioned_get_with_a_json_body(sim: SimServer) -> None:
    resp = sim_request(sim, "debug.ping", {"hello": 1, "method": "get"}, method="GET", version="2.23", auth=None)
    assert resp.status_code == 200
    assert resp.headers["server"] == "clearml"
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    meta = body["meta"]
    assert meta["endpoint"] == {"name": "debug.ping", "requested_version": "2.23", "actual_version": "1.0"}
    assert (meta["result_code"], meta["result_subcode"], meta["result_msg"]) == (200, 0, "OK")
    assert meta["error_stack"] == "" and meta["error_data"] == {}
    assert len(meta["id"]) == 32 and meta["trx"] == meta["id"]
    assert body["data"] == {"msg": "ClearML server", "hello": 1, "method": "get"}


def test_unversioned_path_uses_the_newest_api_and_picks_the_implementation(sim: SimServer) -> None:
    meta = sim_request(sim, "server.info", auth=None).json()["meta"]
    assert meta["endpoint"]["requested_version"] == "2.34" and meta["endpoint"]["actual_version"] == "2.12"
    old = sim_request(sim, "server.info", auth=None, version="2.5").json()
    assert old["meta"]["endpoint"]["actual_version"] == "1.0"
    assert "api_version" not in old["data"]
    info = sim_data(sim, "server.info", auth=None)
    assert info["version"] == "2.3.0" and info["api_version"] == "2.34"


def test_unknown_endpoint_version_and_path(sim: SimServer) -> None:
    resp = sim_request(sim, "tasks.no_such_thing")
    assert resp.status_code == 404
    assert resp.json()["meta"]["result_msg"] == "Unable to find endpoint for name tasks.no_such_thing and version 2.34"
    # queues.peek_task exists only from 2.15 on
    old = sim_request(sim, "queues.peek_task", {"queue": "x"}, version="2.4")
    assert old.status_code == 404 and old.json()["meta"]["result_subcode"] == 0
    bad = httpx.get(sim.api_url + "/")
    assert bad.status_code == 400 and bad.json()["meta"]["result_msg"] == "Invalid request path /"
    # the open-source server has no runtime properties: the agent copes with a 404
    assert sim_request(sim, "workers.get_runtime_properties", {"worker": "w"}).status_code == 404


def test_query_string_merges_into_the_body_and_unknown_fields_are_ignored(sim: SimServer) -> None:
    data = sim_data(sim, "tasks.get_all", {"bogus_field": {"x": 1}, "only_fields": ["id", "status"]},
                    query="status=queued&page_size=1")
    assert [t["status"] for t in data["tasks"]] == ["queued"]
    assert sim.calls_to("tasks.get_all")[-1]["status"] == "queued"


def test_date_header_follows_the_simulated_clock(sim: SimServer) -> None:
    sim.clock.advance(3 * 3600)
    resp = sim_request(sim, "debug.ping", auth=None)
    server_now = parsedate_to_datetime(resp.headers["date"]).timestamp()
    assert abs(server_now - (time.time() + 3 * 3600)) < 5


def test_login_issues_a_jwt_with_the_claims_the_sdk_reads(sim: SimServer) -> None:
    key, secret = sim.keys[0]
    resp = sim_request(sim, "auth.login", method="GET", auth=(key, secret))
    assert resp.status_code == 200
    token = resp.json()["data"]["token"]
    assert "clearml_token_basic=" in resp.headers["set-cookie"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["api_version"] == "2.34" and claims["server_version"] == "2.3.0"
    assert claims["feature_set"] == "basic" and claims["exp"] - claims["iat"] == 2592000
    assert set(claims["identity"]) == {"user", "company", "role", "user_name", "company_name"}
    assert claims["identity"]["company_name"] == "acme" and claims["session_id"]
    bearer = {"Authorization": f"Bearer {token}"}
    user = httpx.post(sim.api_url + "/users.get_current_user", headers=bearer).json()["data"]["user"]
    assert user["name"] == "Alice" and user["company"]["name"] == "acme"


def test_basic_auth_works_on_any_endpoint(sim: SimServer) -> None:
    workers = sim_data(sim, "workers.get_all", {}, auth=sim.keys[0])["workers"]
    assert {w["id"] for w in workers} == {"gpu-box-1:gpu0", "cpu-box-1:0"}


@pytest.mark.parametrize(
    ("headers", "subcode", "message"),
    [
        ({}, 20, "Unauthorized (missing credentials)"),
        ({"Authorization": "Basic abc"}, 21, "Unauthorized (malformed credentials) (Incorrect padding)"),
        ({"Authorization": "Basic " + base64.b64encode(b"nope:wrong").decode()}, 22,
         "Unauthorized (invalid credentials) (failed to locate provided credentials)"),
        ({"Authorization": "Bearer garbage"}, 30, "Invalid token (invalid jwt token): reason=Not enough segments"),
        ({"Authorization": "Token abc"}, 10, "Unauthorized (bad authentication header type)"),
    ],
)
def test_auth_errors(sim: SimServer, headers: dict[str, str], subcode: int, message: str) -> None:
    resp = sim_request(sim, "tasks.get_all", {}, auth=None, headers=headers)
    meta = resp.json()["meta"]
    assert resp.status_code == 401 == meta["result_code"]
    assert meta["result_subcode"] == subcode
    assert meta["result_msg"].startswith(message)
    assert meta["error_stack"] is None and resp.json()["data"] == {}


def test_tokens_expire_on_the_simulated_clock(sim: SimServer) -> None:
    sim.token_ttl_s = 60
    token = sim_data(sim, "auth.login", auth=sim.keys[0])["token"]
    ok = httpx.post(sim.api_url + "/tasks.get_all", json={}, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    sim.clock.advance(61)
    expired = httpx.post(sim.api_url + "/tasks.get_all", json={}, headers={"Authorization": f"Bearer {token}"})
    assert expired.status_code == 401
    assert expired.json()["meta"]["result_msg"] == "Invalid token (invalid jwt token): reason=Signature has expired"
    assert expired.json()["meta"]["result_subcode"] == 30


def test_token_from_another_simulator_is_rejected(sim: SimServer, sim_factory: object) -> None:
    other = sim_factory("basic")  # type: ignore[operator]
    resp = sim_request(sim, "tasks.get_all", {}, auth=None,
                       headers={"Authorization": f"Bearer {other.issue_token()}"})
    assert resp.status_code == 401
    assert resp.json()["meta"]["result_msg"].endswith("reason=Signature verification failed")


def test_rejected_logins_but_the_unauthenticated_endpoints_still_answer(sim: SimServer) -> None:
    sim.reject_logins = True
    resp = sim_request(sim, "auth.login", auth=sim.keys[0])
    assert resp.status_code == 401 and resp.json()["meta"]["result_subcode"] == 22
    assert sim_request(sim, "debug.ping", auth=None).status_code == 200
    sim.reject_logins = False
    assert sim_request(sim, "auth.login", auth=sim.keys[0]).status_code == 200


def test_keys_override(sim_factory: object) -> None:
    sim = sim_factory("basic", keys=[("MYKEY", "MYSECRET")])  # type: ignore[operator]
    assert sim.keys == [("MYKEY", "MYSECRET")]
    assert sim_request(sim, "auth.login", auth=("MYKEY", "MYSECRET")).status_code == 200
    default_key = ("SIMDEMOKEY0000000001", "SIMDEMOSECRET00000000000000000000000000000000001")
    assert sim_request(sim, "auth.login", auth=default_key).status_code == 401


def test_fault_with_traceback_fails_only_n_times(sim: SimServer) -> None:
    sim.set_fault("tasks.get_all", status=500, message="General server error (boom)", traceback=True, times=2)
    for _ in range(2):
        resp = sim_request(sim, "tasks.get_all", {})
        meta = resp.json()["meta"]
        assert resp.status_code == 500 and meta["result_msg"] == "General server error (boom)"
        assert meta["error_stack"].startswith("Traceback (most recent call last):")
    assert sim_request(sim, "tasks.get_all", {}).status_code == 200


def test_html_fault_and_pattern_faults(sim: SimServer) -> None:
    sim.set_fault("queues.*", html=True)
    resp = sim_request(sim, "queues.get_all", {})
    assert resp.status_code == 502 and resp.headers["content-type"].startswith("text/html")
    assert "<h1>502 Bad Gateway</h1>" in resp.text
    sim.set_fault("workers.get_all", status=403, subcode=20, message="Forbidden (not allowed for role)")
    resp = sim_request(sim, "workers.get_all", {})
    assert (resp.status_code, resp.json()["meta"]["result_subcode"]) == (403, 20)
    sim.clear_faults()
    assert sim_request(sim, "queues.get_all", {}).status_code == 200


def test_latency_is_added_to_api_calls(sim: SimServer) -> None:
    sim.latency_ms = 300
    started = time.monotonic()
    sim_request(sim, "debug.ping", auth=None)
    assert time.monotonic() - started >= 0.3


def test_invalid_json_body(sim: SimServer) -> None:
    resp = httpx.post(sim.api_url + "/debug.ping", content=b"{not json")
    assert resp.status_code == 400 and resp.json()["meta"]["result_code"] == 400


def test_calls_are_recorded(sim: SimServer) -> None:
    sim.reset_calls()
    sim_request(sim, "tasks.get_all", {"status": ["failed"]}, version="2.23", method="GET")
    assert sim.calls == [("tasks.get_all", {"status": ["failed"]})]
    assert sim.requests == [("GET", "/v2.23/tasks.get_all")]


def test_stop_closes_the_port(sim_factory: object) -> None:
    sim = sim_factory("basic")  # type: ignore[operator]
    url = sim.api_url
    with httpx.Client() as client:  # a keep-alive connection must not keep the server alive
        assert client.post(url + "/debug.ping").status_code == 200
        sim.stop()
        with pytest.raises(httpx.TransportError):
            client.post(url + "/debug.ping")
