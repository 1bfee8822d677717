"""Storage errors in task logs and status texts (upload refused, bad credentials, TLS...), named with the storage
probe's failure classes so the two can be compared."""

from __future__ import annotations

import re
from collections.abc import Iterable

from bot.storage import results as r

# (compiled pattern, failure class). Classes reuse the probe's names so the two can be compared.
STORAGE_ERROR_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"Insufficient permissions \(write failed\)", re.I), r.ACCESS_DENIED_WRITE),
    (re.compile(r"Insufficient permissions \(delete failed\)", re.I), r.ACCESS_DENIED_DELETE),
    (re.compile(r"InvalidAccessKeyId", re.I), r.INVALID_ACCESS_KEY),
    (re.compile(r"SignatureDoesNotMatch", re.I), r.SIGNATURE_MISMATCH),
    (re.compile(r"AuthorizationHeaderMalformed|PermanentRedirect|IllegalLocationConstraint", re.I), r.REGION_MISMATCH),
    (re.compile(r"NoSuchBucket", re.I), r.NO_SUCH_BUCKET),
    (
        re.compile(r"(cannot|can't|could not|unable to) (find|locate|get access) credentials|NoCredentialsError", re.I),
        r.NO_CREDENTIALS,
    ),
    (re.compile(r"Could not connect to the endpoint URL", re.I), r.ENDPOINT_UNREACHABLE),
    (
        re.compile(
            r"(AccessDenied|Access Denied).*(PutObject|upload|write)|"
            r"(PutObject|upload).*(AccessDenied|Access Denied)",
            re.I,
        ),
        r.ACCESS_DENIED_WRITE,
    ),
    (
        re.compile(
            r"SSL.*(WRONG_VERSION_NUMBER|CERTIFICATE_VERIFY_FAILED|certificate verify failed)"
            r"|SSLError",
            re.I,
        ),
        r.TLS,
    ),
    (
        re.compile(
            r"Exception encountered while uploading|Failed uploading|Upload failed|failed to upload"
            r"|Could not upload|Error uploading",
            re.I,
        ),
        r.UPLOAD_REFUSED,
    ),
]
# An SSL error line is a storage problem only when it is about an upload / a bucket / the file server.
_STORAGE_CONTEXT = re.compile(r"upload|s3://|gs://|azure://|bucket|storage|files?server|:8081|artifact", re.I)


def match_storage_errors(lines: Iterable[str]) -> list[tuple[str, str]]:
    """[(line, failure class)] for log lines that show an upload/storage error."""
    out: list[tuple[str, str]] = []
    for line in lines:
        for pattern, kind in STORAGE_ERROR_PATTERNS:
            if pattern.search(line):
                if kind == r.TLS and not _STORAGE_CONTEXT.search(line):
                    continue
                out.append((line, kind))
                break
    return out
