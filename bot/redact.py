"""Redaction of secrets from any text that leaves the process (Slack, logs, store, errors, CLI, audit, doctor).

One module, applied at every output boundary. Three layers, cheapest first:

1. the known secrets (ClearML keys, Slack tokens, values of secret-named environment variables): exact replacement;
2. provider shapes from Yelp's detect-secrets plugins (GitHub, GitLab, Slack, AWS, JWT, OpenAI, Stripe, PyPI, ...),
   plus the shapes those plugins lack (Hugging Face, Google API keys, current OpenAI/Anthropic keys, whole PEM
   blocks, Azure `AccountKey=`, Slack webhook URLs);
3. context: a value assigned to a name that looks secret (`HF_TOKEN=`, `Args/db_password: a -> b`, `--password x`,
   `Authorization: Token …`, `x-api-key:`), URL userinfo passwords, and high-entropy values after weaker key words
   (`key=`, `sig=`) — detect-secrets' entropy measure decides those.

`is_secret_name` is the same name test for structured data: `redact_tree` blanks the whole value of a dict entry
whose key looks secret (hyperparameters, env vars, config entries), whatever its shape.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

MARK = "[REDACTED]"

# detect-secrets' maintained provider regexes, used directly (its scan machinery - files, baselines, filters - is
# far too slow to run per log line). Plugins whose patterns match ordinary words (artifactory, discord, ibm,
# cloudant, keyword) are left out: the context layer below covers secret-named assignments instead.
_PLUGINS: tuple[type[RegexBasedDetector], ...] = (
    AWSKeyDetector, AzureStorageKeyDetector, GitHubTokenDetector, GitLabTokenDetector, JwtTokenDetector,
    MailchimpDetector, NpmDetector, OpenAIDetector, PypiTokenDetector, SendGridDetector, SlackDetector,
    StripeDetector, TelegramBotTokenDetector, TwilioKeyDetector,
)
_PROVIDER_REGEXES: tuple[re.Pattern[str], ...] = tuple(rx for plugin in _PLUGINS for rx in plugin.denylist)

# Shapes the plugins do not know, or match only in part (the PEM header, not its body; a JWT without its signature).
# Each starts with a literal so the regex engine skips ahead cheaply; case-insensitive ones are gated on a hint.
_EXTRA_SHAPES: tuple[re.Pattern[str], ...] = (
    re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
               r"|.*)", re.S),
    re.compile(r"PuTTY-User-Key-File-\d:.*", re.S),
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_.+/=-]*)?"),  # JWT incl. its signature
    re.compile(r"hf_[A-Za-z0-9]{20,}"),  # Hugging Face
    re.compile(r"AIza[0-9A-Za-z_-]{30,}"),  # Google API key
    re.compile(r"sk-(?:proj-|svcacct-|admin-|ant-[a-z0-9]+-|live-)?[A-Za-z0-9_-]{20,}"),  # OpenAI, Anthropic, ...
    re.compile(r"xox[abposre]-[A-Za-z0-9-]{8,}"),  # Slack tokens (any digit layout)
    re.compile(r"xapp-[A-Za-z0-9-]{8,}"),
    re.compile(r"https://hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/[^\s\"'<>|]+"),
    re.compile(r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Z0-9])"),
    re.compile(r"glpat-[A-Za-z0-9_-]{20,}"),
    re.compile(r"gh[pousr]_[A-Za-z0-9_]{30,}"),
    re.compile(r"github_pat_[A-Za-z0-9_]{30,}"),
)

# A name that looks secret, anywhere in an identifier: HF_TOKEN, CLEARML_API_SECRET_KEY, Args/db_password,
# PGPASSWORD, x-api-key. `token` is not a secret in "tokenizer" or "max_tokens" (common ML hyperparameters).
_SECRET_WORD = (
    r"(?:secret|token(?!i[sz]|s(?![a-z]))|passw|passphrase|api[_-]?key|apikey|access[_-]?key|private|credential"
    r"|auth[_-]?key|session[_-]?key|signing[_-]?key|account[_-]?key|conn(?:ection)?[_-]?str|sas[_-]?token"
    r"|(?<![a-z0-9])pass(?![a-z0-9]))"
)
_SECRET_NAME = re.compile(_SECRET_WORD)  # searched in lowercased text: much faster than re.I
# the secret word at the end of a name (for `name:value` with no space, which worker ids like `gpu-private:0` share)
_SECRET_END = (r"(?:secret|token|passw(?:or)?d|passphrase|api[_-]?key|apikey|access[_-]?key|credentials?|"
               r"private[_-]?key|client[_-]?secret|pass)(?![A-Za-z0-9_.\-/])")
_NAME = rf"[A-Za-z0-9_.\-/]*{_SECRET_WORD}[A-Za-z0-9_.\-/]*"
_VALUE = r"(?:\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;&<>`|]+)"  # not past a quote, a code span's or a link's end
_ARROW = rf"(?:\s*(?:->|→|=>)\s*{_VALUE})?"  # the other side of a diff: `a -> b`
# Only run when the text names a secret at all (the common log line does not; these are the costly ones).
_NAMED: tuple[tuple[re.Pattern[str], str], ...] = (
    # --password X, --api-key=X (only named options: a bare -p is too common)
    (re.compile(rf"(?i)(--{_NAME})(\s+|=)(?!-)({_VALUE})"), rf"\1\2{MARK}"),
    # NAME=VALUE, NAME: VALUE, "NAME": "VALUE", both sides of NAME: a -> b
    # (`:` counts only before a space or after a quoted key: `gpu-private:0`, a worker id, is not an assignment)
    (re.compile(rf"(?i)(?<![A-Za-z0-9_.\-/])({_NAME})((?:[\"']\s*[:=]|\s*(?::=|=>|=)|\s*:(?=\s))\s*)({_VALUE}){_ARROW}"),
     rf"\1\2{MARK}"),
    # NAME:VALUE without a space when the name ends with the secret word (`password:abc`, `HF_TOKEN:hf…`)
    (re.compile(rf"(?i)(?<![A-Za-z0-9_.\-/])([A-Za-z0-9_.\-/]*{_SECRET_END})(:)(?![\s/])({_VALUE})"),
     rf"\1\2{MARK}"),
)
# (hints in the lowercased text, pattern, replacement): the pattern runs only when one hint is present.
_CONTEXT: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = (
    (("accountkey=",), re.compile(r"(?i)AccountKey=[^;\s\"']+"), MARK),
    (("sharedaccesssignature=",), re.compile(r"(?i)SharedAccessSignature=[^;\s\"']+"), MARK),
    # Authorization headers of any scheme
    (("authorization",),
     re.compile(r"(?i)\b(authorization|proxy-authorization)(\s*[:=]\s*[\"']?)(?:(bearer|basic|token|digest|"
                r"apikey|api-key|key|aws4-hmac-sha256|negotiate)\s+)?[^\s\"',;]+(?:\s*,\s*[A-Za-z]+=[^\s,]+)*"),
     rf"\1\2\3 {MARK}"),
    (("bearer", "token"), re.compile(r"(?i)\b(bearer|token)\s+(?!\[REDACTED)[A-Za-z0-9._~+/-]{12,}=*"), rf"\1 {MARK}"),
    # URL userinfo: scheme://user:password@host (the password may contain `/`; `redis://:pw@`); not host:port/path@x
    (("://",), re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@\"'<>]*:)(?!\d+[/@])[^@\s\"'<>]+@"), rf"\1{MARK}@"),
    # AWS SigV4 / Azure SAS query signatures
    (("sig", "x-amz-"),
     re.compile(r"(?i)([?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|sig|signature)=)[^&\s\"'<>]+"),
     rf"\1{MARK}"),
)
# Weaker key words: the value is redacted only when it looks random (detect-secrets' Shannon entropy).
_WEAK_HINTS = ("key", "auth", "sig", "cred", "salt")
_WEAK_CONTEXT = re.compile(
    r"(?i)\b(key|auth|sig|signature|hash_?key|cred|salt)([\"']?\s*[:=]\s*[\"']?)([A-Za-z0-9+/=_\-]{16,})"
)

def _any_of(patterns: tuple[re.Pattern[str], ...]) -> re.Pattern[str]:
    """One alternation of `patterns`, each keeping its own flags: it matches somewhere exactly when one of them does,
    so one search decides whether the per-pattern substitutions have anything to do (most texts - ids, names,
    timestamps - hold no secret shape, and 37 separate scans of every short string dominated a run's redaction)."""
    flag_letters = {re.I: "i", re.S: "s", re.X: "x", re.M: "m"}
    parts = []
    for rx in patterns:
        letters = "".join(letter for flag, letter in flag_letters.items() if rx.flags & flag)
        parts.append(f"(?{letters}:{rx.pattern})" if letters else f"(?:{rx.pattern})")
    return re.compile("|".join(parts))


_ANY_SHAPE = _any_of(_EXTRA_SHAPES + _PROVIDER_REGEXES)
_ENTROPY = Base64HighEntropyString()
_ENTROPY_LIMIT = 3.5


# Keys that describe a secret rather than hold one (`credentials_source: key_env ML_KEY`, `secret_env: PROD_SECRET`,
# `token_expires_at`): their values are shown (redacted as text like any other).
_DESCRIBES = re.compile(r"[_.\-/](?:source|env|var|file|path|name|type|kind|status|count|ttl|expires?|expiry|age|at|"
                        r"configured|present|set|len|length|hint|fix)$")


def is_secret_name(name: str) -> bool:
    """True when an identifier names a secret (env var, hyperparameter, config key): its value is never shown."""
    low = (name or "").lower()
    return bool(low) and _SECRET_NAME.search(low) is not None and _DESCRIBES.search(low) is None


@functools.lru_cache(maxsize=64)
def _known(secrets: tuple[str, ...]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None, tuple[str, ...]]:
    """(one alternation of the known secrets, longest first, so a secret containing another goes whole; a pattern
    for a clipped start of one: 8+ of its first characters followed by the "…" a clipped text ends with, which the
    whole secret no longer matches; the secrets long enough to be clipped)."""
    wanted = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    if not wanted:
        return None, None, ()
    long = tuple(s for s in wanted if len(s) >= 12)
    starts = sorted({re.escape(s[:8]) for s in long})
    clipped = re.compile(f"(?:{'|'.join(starts)})[^\\s…]*…") if starts else None
    return re.compile("|".join(re.escape(s) for s in wanted)), clipped, long


def _weak(match: re.Match[str]) -> str:
    value = match.group(3)
    if _ENTROPY.calculate_shannon_entropy(value) < _ENTROPY_LIMIT:
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{MARK}"


# -- batch pre-scan ---------------------------------------------------------------------------------------------
# A run redacts thousands of short texts (ids, names, timestamps, evidence values); 37 shape scans and the context
# tests per text cost more than the run's own work. `scan_texts` looks at a whole batch once (joined by newlines)
# and records which layers can match anywhere in it; `redact(..., scan=)` then skips, per text, only what cannot
# match that text: a pattern that does not match the joined batch matches none of its texts (no shape or hint
# crosses a newline, and a newline satisfies the same boundary lookarounds as a text's start or end).

# Cheap necessary conditions for the patterns slowest to search over a large batch (no literal start): a pattern
# not listed here is simply searched. (kind, what): "in" = substring of the text, "in_low" = of the lowercased
# text, "rx" = a pattern with a literal start that any match of the slow one also matches.
_SLOW_GATES: dict[str, tuple[str, str]] = {
    r"[0-9a-z]{32}-us[0-9]{1,2}": ("in", "-us"),
    r"\d{8,10}:[0-9A-Za-z_-]{35}": ("rx", r":[0-9A-Za-z_-]{35}"),
    r"(?:r|s)k_live_[0-9a-zA-Z]{24}": ("in", "k_live_"),
}
# `_SECRET_NAME` cannot match a text holding none of these (each of its alternatives holds one).
_SECRET_NAME_STARTS = ("secret", "token", "pass", "private", "credential", "conn", "apikey", "api_key", "api-key",
                       *(f"{word}{sep}key" for word in ("access", "auth", "session", "signing", "account")
                         for sep in ("", "_", "-")),
                       "sastoken", "sas_token", "sas-token")


@dataclass(frozen=True)
class TextScan:
    """What a batch of texts can hold at all (see `scan_texts`)."""

    shapes: tuple[re.Pattern[str], ...]  # the shape patterns that match somewhere in the batch
    context: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...]  # the `_CONTEXT` entries whose hint occurs
    named: bool  # `_SECRET_NAME` matches somewhere
    weak: tuple[str, ...]  # the weak hints that occur
    # results so far, by (text, secrets): a batch repeats many texts (titles, remediations, timestamps, names)
    memo: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict, compare=False, repr=False)


def _may_match(rx: re.Pattern[str], joined: str, low: str) -> bool:
    gate = _SLOW_GATES.get(rx.pattern)
    if gate is None and rx.flags & re.I:
        literal = re.match(r"[a-z]{3,}", rx.pattern)  # a case-insensitive pattern starting with a word (aws, xox)
        gate = ("in_low", literal.group(0)) if literal else None
    if gate is not None:
        kind, what = gate
        if kind == "in" and what not in joined:
            return False
        if kind == "in_low" and what not in low:
            return False
        if kind == "rx" and re.search(what, joined) is None:
            return False
    return rx.search(joined) is not None


def scan_texts(texts: Iterable[str]) -> TextScan:
    """One look at a batch of texts: which redaction layers can change any of them."""
    joined = "\n".join(t for t in texts if t)
    low = joined.lower()
    return TextScan(
        shapes=tuple(rx for rx in _EXTRA_SHAPES + _PROVIDER_REGEXES if _may_match(rx, joined, low)),
        context=tuple(entry for entry in _CONTEXT if any(h in low for h in entry[0])),
        named=any(w in low for w in _SECRET_NAME_STARTS) and _SECRET_NAME.search(low) is not None,
        weak=tuple(h for h in _WEAK_HINTS if h in low),
    )


def redact(text: str, secrets: Iterable[str] = (), *, scan: TextScan | None = None) -> str:
    """`text` with every known secret and credential-looking string replaced by [REDACTED]. `scan`: what the batch
    `text` belongs to can hold (`scan_texts` over texts including this one); the result is the same, only faster."""
    if not text:
        return text
    if not isinstance(text, str):
        text = str(text)
    if scan is None:
        return _redact(text, tuple(secrets), None)
    key = (text, tuple(secrets))
    done = scan.memo.get(key)
    if done is None:
        done = scan.memo[key] = _redact(text, key[1], scan)
    return done


def _redact(text: str, secrets: tuple[str, ...], scan: TextScan | None) -> str:
    raw = text
    known, clipped, long = _known(secrets)
    if known is not None:
        text = known.sub(MARK, text)
    if clipped is not None and "…" in text:
        text = clipped.sub(lambda m: MARK if any(s.startswith(m.group(0)[:-1]) for s in long) else m.group(0), text)
    if text != raw:  # the scan saw the raw text; a [REDACTED] next to a word can start a match it did not see
        scan = None
    if scan is None:
        shaped = _ANY_SHAPE.search(text) is not None
    else:
        shaped = any(rx.search(text) is not None for rx in scan.shapes)
    if shaped:  # else every substitution below would leave `text` as it is
        before = text
        for rx in _EXTRA_SHAPES:  # first: some match more than the plugin's pattern (a JWT's signature, a PEM body)
            text = rx.sub(MARK, text)
        for rx in _PROVIDER_REGEXES:  # the whole match is blanked (a plugin's groups may be only part of a secret)
            text = rx.sub(MARK, text)
        if text != before:  # as above
            scan = None
    low = text.lower()
    for hints, rx, repl in (_CONTEXT if scan is None else scan.context):
        if any(h in low for h in hints):
            text = rx.sub(repl, text)
    if (scan is None or scan.named) and _SECRET_NAME.search(low):
        for rx, repl in _NAMED:
            text = rx.sub(repl, text)
    if not any(h in low for h in (_WEAK_HINTS if scan is None else scan.weak)):
        return text
    return _WEAK_CONTEXT.sub(_weak, text)


# Machine fields of Slack payloads: ids, the dedupe key in message metadata, signed button values.
# Redacting them could only break them; everything else is text a person reads.
SLACK_MACHINE_FIELDS = frozenset({"value", "action_id", "block_id", "metadata", "user", "ts", "thread_ts", "type"})


def redact_tree(
    value: Any, secrets: Iterable[str] = (), key: str = "", *, keep: frozenset[str] = SLACK_MACHINE_FIELDS,
    scan: TextScan | None = None,
) -> Any:
    """A JSON-like payload with `redact` applied to every text field except the `keep` fields (Slack's machine
    fields by default; pass `frozenset()` for data such as finding evidence); the whole value of an entry whose key
    looks secret (`db_password: [a, b]`, `HF_TOKEN: x`) is blanked. `scan`: as for `redact`, over a batch that
    includes every text of `value` (`tree_texts`)."""
    return _tree(value, tuple(secrets), key, keep, scan)


def tree_texts(value: Any) -> list[str]:
    """Every string inside a JSON-like value, in no particular order (for `scan_texts`, which needs none)."""
    out: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return out


def _tree(value: Any, secrets: tuple[str, ...], key: str, keep: frozenset[str], scan: TextScan | None) -> Any:
    if key in keep:
        return value
    if key and is_secret_name(key) and not isinstance(value, bool) and value not in (None, "", [], {}):
        if isinstance(value, str | int | float):
            return MARK
        if isinstance(value, list | tuple):
            return [MARK if not isinstance(v, dict | list) else _tree(v, secrets, key, keep, scan) for v in value]
        if isinstance(value, dict) and "value" in value:  # ClearML's {"name", "value", "type"} parameter shape
            return {k: (MARK if k == "value" else _tree(v, secrets, k, keep, scan)) for k, v in value.items()}
    if isinstance(value, str):
        return redact(value, secrets, scan=scan)
    if isinstance(value, list | tuple):
        return [_tree(v, secrets, key, keep, scan) for v in value]
    if isinstance(value, dict):
        if "name" in value and "value" in value and is_secret_name(str(value.get("name"))):
            return {k: (MARK if k == "value" else _tree(v, secrets, k, keep, scan)) for k, v in value.items()}
        return {k: _tree(v, secrets, str(k), keep, scan) for k, v in value.items()}
    return value
