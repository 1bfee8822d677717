"""Redacting a batch with one pre-scan (`scan_texts`) gives exactly what redacting each text alone gives: the
runner redacts every finding this way, so a difference would be a leak (or a mangled finding)."""

from __future__ import annotations

import random
import string

from bot.engine.findings import Finding, Subject
from bot.engine.runner import finding_texts, redact_finding
from bot.redact import redact, redact_tree, scan_texts, tree_texts

M = "ZQ9xK2mP7vL4tR8w"
SECRET_LINES = [
    f"HF_TOKEN={M}", f"db_password={M}", f"password:{M}", f'{{"api_key":"{M}"}}', f"ghp_{M}abcdefghij0123456789",
    f"glpat-{M}abcdefgh", f"hf_{M}abcdefghijklmno", f"sk-proj-{M}abcdefgh", f"AIza{M}abcdefghijklmnopqrs",
    f"https://hooks.slack.com/services/T000/B000/{M}", f"AccountName=x;AccountKey={M}==;EndpointSuffix=x",
    f"-----BEGIN RSA PRIVATE KEY-----\nMIIE{M}\n-----END RSA PRIVATE KEY-----", f"redis://:{M}@cache:6379/0",
    f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.{M}", f"run --password {M} --x", f"Authorization: Token {M}",
    "xoxb-1111-2222-abcdefghijkl", "AKIAABCDEFGHIJKLMNOP", "12345678:" + "a" * 35, "a" * 32 + "-us12",
    f"sig={M}Qx7Lk2", "rk_live_" + "a1" * 12,
]
ORDINARY = ["max_tokens=512", "tokenizer=bert-base-uncased", "http://h:8080/x@y", "node0477:gpu1",
            "2026-12-07T06:37:19+00:00", "03000000000000000000000000000115", "key: train/loss", "gpu-pool-191"]
# a known secret right before a word: once it is [REDACTED], `pass` stands alone (a match the raw text lacks)
KNOWN = "ZX81SPECTRUM"
ADJACENT = [f"{KNOWN}pass: hunter2x", "AKIAABCDEFGHIJKLMNOPpass: hunter2x"]


def _same_as_alone(batch: list[str], secrets: list[str]) -> None:
    scan = scan_texts(batch)
    assert [redact(t, secrets, scan=scan) for t in batch] == [redact(t, secrets) for t in batch]


def test_a_batch_redacts_each_text_as_alone() -> None:
    _same_as_alone(SECRET_LINES + ORDINARY + ADJACENT, [KNOWN])
    for line in SECRET_LINES:  # each secret alone among ordinary texts: the scan must still find it
        _same_as_alone([*ORDINARY, line], [KNOWN])
        assert M not in redact(line, scan=scan_texts([*ORDINARY, line]))
    _same_as_alone(ORDINARY, [KNOWN])
    assert [redact(t, scan=scan_texts(ORDINARY)) for t in ORDINARY] == ORDINARY


def test_a_secret_redacted_next_to_a_word_is_rescanned() -> None:
    alone = [redact(t, [KNOWN]) for t in ADJACENT]
    assert all("hunter2x" not in t for t in alone)
    _same_as_alone(ADJACENT, [KNOWN])


def test_random_batches_match_per_text_redaction() -> None:
    rng = random.Random(14)
    pieces = SECRET_LINES + ORDINARY + ADJACENT + [KNOWN, "token", "pass", "key=", "://", " ", "\n", ":", "="]
    for _ in range(200):
        batch = ["".join(rng.choice(pieces + list(string.ascii_letters)) for _ in range(rng.randint(1, 6)))
                 for _ in range(rng.randint(1, 8))]
        _same_as_alone(batch, [KNOWN])


def test_findings_redacted_with_one_scan_equal_findings_redacted_alone() -> None:
    findings = [
        Finding(check="agents.stale", severity="warning", title=f"worker {i} silent",
                subject=Subject(kind="worker", id=f"node{i}:gpu0", name=f"node{i}"),
                detail=line, remediation="restart the agent", links=[f"https://app.example/workers/{i}"],
                evidence={"last_seen": "2026-12-07T06:37:19+00:00", "env": {"HF_TOKEN": "x"}, "log": [line]},
                related=[Subject(kind="storage", id=f"s3://b/{line}", name=line)], fingerprint=f"fp{i}")
        for i, line in enumerate(SECRET_LINES + ORDINARY)
    ]
    scan = scan_texts(t for f in findings for t in finding_texts(f))
    batch = [redact_finding(f, [KNOWN], scan=scan) for f in findings]
    assert batch == [redact_finding(f, [KNOWN]) for f in findings]
    assert all(M not in str(f.model_dump()) for f in batch)  # the related subjects' ids and names too
    ev = {"a": [M, {"b": f"password={M}"}]}
    assert redact_tree(ev, keep=frozenset(), scan=scan_texts(tree_texts(ev))) == redact_tree(ev, keep=frozenset())
