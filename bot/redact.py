"""Redaction of secrets from any text that leaves the process (Slack, logs, store, errors)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# Credential-looking strings: Slack tokens, AWS access key ids, `key=value` pairs of secret-ish names,
# bearer/basic authorization values and URLs with user:password.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"xox[abposr]-[A-Za-z0-9-]{8,}"), "xox?-[REDACTED]"),
    (re.compile(r"xapp-[A-Za-z0-9-]{8,}"), "xapp-[REDACTED]"),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "[REDACTED-AWS-KEY-ID]"),
    (re.compile(r"(?i)\b(authorization\s*:\s*(?:bearer|basic))\s+[A-Za-z0-9._~+/=-]+"), r"\1 [REDACTED]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/-]{16,}=*"), r"\1 [REDACTED]"),
    (
        re.compile(
            r"(?i)\b((?:aws_)?(?:secret(?:_access)?_key|access_key(?:_id)?|secret|password|passwd|token|api_key)"
            r"[\"']?\s*[:=]\s*[\"']?)([^\s\"',;]{4,})"
        ),
        r"\1[REDACTED]",
    ),
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1[REDACTED]@"),
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret and credential-looking string replaced."""
    if not text:
        return text
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "[REDACTED]")
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


# Machine fields of Slack payloads: ids, the dedupe key in message metadata, signed button values.
# Redacting them could only break them; everything else is text a person reads.
SLACK_MACHINE_FIELDS = frozenset({"value", "action_id", "block_id", "metadata", "user", "ts", "thread_ts", "type"})


def redact_tree(value: Any, secrets: Iterable[str], key: str = "") -> Any:
    """A JSON-like payload with `redact` applied to every text field except the machine fields."""
    secrets = list(secrets)
    if isinstance(value, str):
        return value if key in SLACK_MACHINE_FIELDS else redact(value, secrets)
    if isinstance(value, list):
        return [redact_tree(v, secrets, key) for v in value]
    if isinstance(value, dict):
        return {k: (v if k in SLACK_MACHINE_FIELDS else redact_tree(v, secrets, k)) for k, v in value.items()}
    return value
