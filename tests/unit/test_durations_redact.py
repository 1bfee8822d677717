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
