from __future__ import annotations

import pytest

from bot.durations import format_duration, parse_duration
from bot.redact import redact


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90), ("2m", 120), ("6h", 21600), ("1d", 86400), ("1h30m", 5400), ("45", 45), (12.5, 12.5),
        ("250ms", 0.25),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "5 parsecs", "m5", "-3m", True])
def test_bad_durations_say_what_is_accepted(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(bad)  # type: ignore[arg-type]


def test_format_duration() -> None:
    assert [format_duration(s) for s in (5, 600, 3700, 200000)] == ["5s", "10m", "1h 1m", "2d 7h"]


def test_redact_known_secrets_and_credential_shapes() -> None:
    text = (
        "login with SECRETVALUE123 failed; token=abcdefgh1234; xoxb-1111-2222-abcdefghijkl; "
        "AKIAABCDEFGHIJKLMNOP; s3://minio:minio123@host/bucket; Authorization: Bearer eyJhbGciOi.x.y"
    )
    out = redact(text, ["SECRETVALUE123"])
    for leaked in ("SECRETVALUE123", "abcdefgh1234", "xoxb-1111", "AKIAABCDEFGHIJKLMNOP", "minio123", "eyJhbGciOi"):
        assert leaked not in out
    assert "failed" in out and "host/bucket" in out


def test_redact_every_shape_from_issue_14_and_leaves_ordinary_text_alone() -> None:
    m = "ZQ9xK2mP7vL4tR8w"
    planted = [
        f"CLEARML_API_SECRET_KEY={m}", f"HF_TOKEN={m}", f"WANDB_API_KEY={m}", f"OPENAI_API_KEY={m}",
        f"GITHUB_TOKEN={m}", f"AWS_SESSION_TOKEN={m}", f"PGPASSWORD={m}", f"DJANGO_SECRET_KEY={m}",
        f"db_password={m}", f"client_secret={m}", f"password:{m}", f'{{"api_key":"{m}"}}',
        f"ghp_{m}abcdefghij0123456789", f"glpat-{m}abcdefgh", f"hf_{m}abcdefghijklmno", f"sk-proj-{m}abcdefgh",
        f"AIza{m}abcdefghijklmnopqrs", f"https://hooks.slack.com/services/T000/B000/{m}",
        f"AccountName=x;AccountKey={m}==;EndpointSuffix=core.windows.net",
        f"-----BEGIN RSA PRIVATE KEY-----\nMIIE{m}\n-----END RSA PRIVATE KEY-----",
        f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.{m}", f"redis://:{m}@cache:6379/0", f"https://user:{m}/x@host/path",
        f"run --password {m} --x", f"Authorization: Token {m}", f"x-api-key: {m}", f"Args/db_password: a{m} -> b{m}",
    ]
    assert [line for line in planted if m in redact(line)] == []
    ordinary = ["max_tokens=512", "tokenizer=bert-base-uncased", "http://h:8080/x@y", "lr=0.001 batch=32",
                "worker private-gpu-01:gpu0 silent", "token-runner:0 died", "PWD=/home/u", "key: train/loss",
                "Failed uploading to s3://ml-artifacts/vision: AccessDenied", "https://files.example:8081/a/b.zip"]
    assert [redact(line) for line in ordinary] == ordinary
