"""Signed, expiring button values: what verifies, what is refused, and where the key comes from."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from bot.actions.tokens import ENV_KEY, MAX_VALUE_LEN, ExpiredToken, Signer, TamperedToken

KEY = b"unit-test-key-0123456789abcdef"
NOW = 1_800_000_000


def test_round_trip_carries_every_claim() -> None:
    signer = Signer(KEY)
    value = signer.issue("requeue", "a" * 32, server="prod", params={"queue": "gpu"}, ttl_s=3600, now=NOW)
    claims = signer.verify(value, now=NOW + 10)
    assert (claims.action, claims.server, claims.subject, claims.params) == ("requeue", "prod", "a" * 32,
                                                                              {"queue": "gpu"})
    assert (claims.issued_at, claims.expires_at) == (NOW, NOW + 3600)
    assert len(claims.nonce) >= 12
    assert signer.issue("requeue", "a" * 32, now=NOW) != signer.issue("requeue", "a" * 32, now=NOW)  # nonces


def test_expiry_is_refused_but_says_what_it_was_for() -> None:
    signer = Signer(KEY)
    value = signer.issue("abort", "t1", ttl_s=60, now=NOW)
    signer.verify(value, now=NOW + 59)
    with pytest.raises(ExpiredToken) as exc:
        signer.verify(value, now=NOW + 60)
    assert exc.value.claims.action == "abort" and "expired at" in str(exc.value)


@pytest.mark.parametrize("mutate", [
    lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"),  # MAC changed
    lambda v: ("f" if v[0] != "f" else "g") + v[1:],  # payload changed
    lambda v: v.replace(".", ""),  # no separator
    lambda v: v + ".x",
    lambda v: "",
    lambda v: "x" * (MAX_VALUE_LEN + 1),
])
def test_tampered_values_are_refused(mutate: object) -> None:
    signer = Signer(KEY)
    value = signer.issue("clone", "t1", now=NOW)
    with pytest.raises(TamperedToken):
        signer.verify(mutate(value), now=NOW)  # type: ignore[operator]


def test_another_key_does_not_verify_and_size_is_bounded() -> None:
    value = Signer(KEY).issue("clone", "t1", now=NOW)
    with pytest.raises(TamperedToken):
        Signer(b"another-key-0123456789abcdef").verify(value, now=NOW)
    with pytest.raises(ValueError, match="over Slack's 2000"):
        Signer(KEY).issue("clone", "t1", params={"name": "x" * 2000}, now=NOW)
    with pytest.raises(ValueError):
        Signer(b"short")


def test_key_from_env_else_generated_once_in_the_store_directory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)
    signers: list[Signer] = []

    def make() -> None:
        signers.append(Signer.from_env_or_dir(tmp_path))

    threads = [threading.Thread(target=make) for _ in range(8)]  # racing first uses agree on one key
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    value = signers[0].issue("clone", "t1", now=NOW)
    assert all(s.verify(value, now=NOW).subject == "t1" for s in signers)
    key_file = tmp_path / "signing.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert Signer.from_env_or_dir(tmp_path).verify(value, now=NOW)  # survives a restart
    monkeypatch.setenv(ENV_KEY, "env-key-0123456789abcdef")
    with pytest.raises(TamperedToken):
        Signer.from_env_or_dir(tmp_path).verify(value, now=NOW)  # the env key wins
    monkeypatch.setenv(ENV_KEY, "short")
    with pytest.raises(ValueError, match="too short"):
        Signer.from_env_or_dir(tmp_path)
    monkeypatch.delenv(ENV_KEY)
    with pytest.raises(ValueError, match=ENV_KEY):
        Signer.from_env_or_dir(None)
