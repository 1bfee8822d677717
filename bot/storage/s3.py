"""S3 (AWS and S3-compatible: MinIO, Ceph, moto) through boto3, with failures classified.

boto3 is synchronous: every function here blocks and is meant to run in a worker thread
(`asyncio.to_thread`). Clients get short connect/read timeouts and at most two attempts, never the
SDK-style hour-long retry loops, so a dead endpoint costs seconds, not a run.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import IO, Any

from bot.storage import results as r
from bot.storage.credentials import S3Access
from bot.storage.results import ProbeResult

PROBE_HEADER = b"clearml-chatops storage probe\n"


def make_session(access: S3Access) -> Any:
    """A boto3 session with the resolved keys (or boto3's own chain when there are none)."""
    import boto3
    import botocore.session

    core = botocore.session.Session()
    # When falling back to the default chain, do not let an instance-metadata lookup on a machine that
    # is not on EC2 eat the deadline: one short attempt.
    core.set_config_variable("metadata_service_timeout", 1)
    core.set_config_variable("metadata_service_num_attempts", 1)
    return boto3.session.Session(
        aws_access_key_id=access.key if access.has_keys else None,
        aws_secret_access_key=access.secret if access.has_keys else None,
        aws_session_token=access.token if access.has_keys else None,
        region_name=access.region or None,
        botocore_session=core,
    )


_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()
_CLIENTS_MAX = 32


def cached_client(access: S3Access, timeout_s: float = 10.0) -> Any:
    """A shared client per (credentials, endpoint, region, TLS, timeout): creating a boto3 client costs
    ~0.1-0.3 s, and dataset verification asks for one per chunk. boto3 clients are thread-safe."""
    digest = hashlib.sha256(f"{access.key}\0{access.secret}\0{access.token}".encode()).hexdigest()
    key = (digest, access.use_chain, access.endpoint_url, access.region, str(access.verify), timeout_s)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            if len(_CLIENTS) >= _CLIENTS_MAX:
                _CLIENTS.pop(next(iter(_CLIENTS)))
            client = _CLIENTS[key] = make_client(access, timeout_s)
        return client


def make_client(access: S3Access, timeout_s: float = 10.0) -> Any:
    """A boto3 S3 client for `access` with short timeouts and at most two attempts."""
    from botocore.config import Config

    config = Config(
        connect_timeout=max(1.0, timeout_s / 2),
        read_timeout=timeout_s,
        retries={"max_attempts": 2, "mode": "standard"},
        signature_version="s3v4",
        # custom endpoints (MinIO, moto) rarely do virtual-hosted buckets; AWS does both
        s3={"addressing_style": "path" if access.endpoint_url else "auto"},
    )
    return make_session(access).client(
        "s3",
        endpoint_url=access.endpoint_url or None,
        verify=access.verify,
        config=config,
        region_name=access.region or None,
    )


def _error_code(exc: Exception) -> tuple[str, int, str, dict[str, str]]:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    headers = {str(k).lower(): str(v) for k, v in (meta.get("HTTPHeaders") or {}).items()}
    return str(error.get("Code") or ""), int(meta.get("HTTPStatusCode") or 0), str(error.get("Message") or ""), headers


def classify(exc: BaseException, step: str, access: S3Access) -> tuple[str, str, str]:
    """(error class, message, setting to fix) for a boto3/botocore exception raised during `step`."""
    from botocore import exceptions as be

    endpoint = access.endpoint_url or "AWS S3"
    bucket = access.location.bucket
    if isinstance(exc, be.NoCredentialsError):
        return (
            r.NO_CREDENTIALS,
            f"no credentials for s3://{bucket}: nothing in the bot's storage targets, clearml.conf "
            "or the AWS environment/profile",
            access.key_setting,
        )
    if isinstance(exc, be.PartialCredentialsError):
        return r.PARTIAL_CREDENTIALS, f"only half of the key pair for s3://{bucket} is set", access.secret_setting
    if isinstance(exc, be.SSLError):
        text = str(exc)
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text.lower():
            return (
                r.TLS,
                f"TLS handshake with {endpoint} failed (WRONG_VERSION_NUMBER): the endpoint speaks plain "
                "HTTP but the client uses HTTPS",
                f"{access.secure_setting} (set secure: false for an http endpoint) or {access.endpoint_setting}",
            )
        return (
            r.TLS,
            f"TLS verification of {endpoint} failed: {_short(text)}",
            f"{access.verify_setting} (a CA bundle path, or false to skip verification)",
        )
    if isinstance(exc, be.ReadTimeoutError):
        return r.TIMEOUT, f"{endpoint} accepted the connection but did not answer in time", access.endpoint_setting
    if isinstance(exc, be.EndpointConnectionError | be.ConnectTimeoutError | be.ProxyConnectionError):
        return (
            r.ENDPOINT_UNREACHABLE,
            f"cannot connect to the endpoint {endpoint}: {_short(str(exc))}",
            access.endpoint_setting,
        )
    if isinstance(exc, be.ConnectionClosedError | be.HTTPClientError):
        return r.ENDPOINT_UNREACHABLE, f"connection to {endpoint} failed: {_short(str(exc))}", access.endpoint_setting
    if isinstance(exc, be.ClientError):
        code, status, message, headers = _error_code(exc)
        bucket_region = headers.get("x-amz-bucket-region")
        if code == "InvalidAccessKeyId":
            return (
                r.INVALID_ACCESS_KEY,
                f"{endpoint} does not know the access key id ({access.source})",
                access.key_setting,
            )
        if code == "SignatureDoesNotMatch":
            return (
                r.SIGNATURE_MISMATCH,
                f"{endpoint} rejected the request signature: the secret key does not belong to the access "
                f"key ({access.source}), or the region/endpoint is wrong",
                f"{access.secret_setting} (or {access.region_setting})",
            )
        if code in ("InvalidToken", "ExpiredToken", "TokenRefreshRequired"):
            return r.EXPIRED_TOKEN, f"the session token was rejected ({code})", access.key_setting
        if (
            code in ("AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException")
            or status == 301
            or code == "301"
            or (code == "400" and bucket_region and bucket_region != (access.region or "us-east-1"))
        ):
            where = f" (the bucket is in {bucket_region})" if bucket_region else ""
            return (
                r.REGION_MISMATCH,
                f"region mismatch for s3://{bucket}: configured {access.region or 'none (us-east-1)'}{where}",
                access.region_setting,
            )
        if code == "NoSuchBucket" or (code == "404" and step == "bucket"):
            return (
                r.NO_SUCH_BUCKET,
                f"bucket {bucket} does not exist at {endpoint}",
                f"the bucket name in {access.location.root}",
            )
        if code in ("AccessDenied", "403", "AllAccessDisabled", "Forbidden"):
            kind = {
                "write": r.ACCESS_DENIED_WRITE,
                "read": r.ACCESS_DENIED_READ,
                "delete": r.ACCESS_DENIED_DELETE,
            }.get(step, r.ACCESS_DENIED)
            needs = {"write": "s3:PutObject", "read": "s3:GetObject", "delete": "s3:DeleteObject"}.get(
                step, "s3:ListBucket"
            )
            return (
                kind,
                f"access denied on {step} in s3://{bucket} for the credentials from {access.source}",
                f"the IAM/bucket policy of those credentials (needs {needs} on {access.location.root}/*)",
            )
        return r.UNEXPECTED, f"{step} failed: {code or status} {_short(message)}".strip(), access.endpoint_setting
    return r.UNEXPECTED, f"{step} failed: {type(exc).__name__}: {_short(str(exc))}", access.endpoint_setting


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def probe_key(access: S3Access, prefix: str) -> str:
    base = access.location.key.strip("/")
    name = f"{prefix.strip('/')}/{uuid.uuid4().hex}.probe"
    return f"{base}/{name}" if base else name


def probe_sync(
    access: S3Access,
    *,
    prefix: str = ".clearml-chatops-probe/",
    timeout_s: float = 10.0,
    payload_bytes: int = 1024,
    name: str = "",
) -> ProbeResult:
    """credentials -> bucket -> write -> read -> delete, timing each step. Blocking; never raises."""
    loc = access.location
    result = ProbeResult(
        target=loc.url, kind="s3", name=name, endpoint=access.endpoint_url or "AWS S3", credentials_source=access.source
    )
    if access.conf_error:
        result.add("credentials", False, detail=access.conf_error)
        return result.fail(r.CONFIG_ERROR, access.conf_error, "clearml.conf", "credentials")
    if access.partial:
        result.add("credentials", False, detail="half of the key pair is set")
        missing = access.secret_setting if access.key else access.key_setting
        return result.fail(
            r.PARTIAL_CREDENTIALS, f"only half of the key pair for {loc.root} is set", missing, "credentials"
        )
    if not access.has_keys and not access.use_chain:
        # the configuration names where the keys should be (a target's key_env/secret_env) and they are empty:
        # do not let boto3 silently fall back to other credentials
        result.add("credentials", False, detail="configured credentials are empty")
        return result.fail(
            r.NO_CREDENTIALS,
            f"the credentials configured for {loc.root} are not set ({access.source})",
            access.key_setting,
            "credentials",
        )
    if not loc.bucket:
        result.add("credentials", False)
        return result.fail(r.CONFIG_ERROR, f"{loc.url} names no bucket", "the storage target url", "credentials")
    try:
        if access.use_chain:
            creds = make_session(access).get_credentials()  # what boto3's chain finds, without a request
            if creds is None:
                raise _no_credentials()
            result.credentials_source = f"boto3 chain ({getattr(creds, 'method', 'unknown')})"
        client = make_client(access, timeout_s)
    except Exception as exc:
        result.add("credentials", False)
        return result.fail(*classify(exc, "credentials", access), "credentials")
    result.add("credentials", True, detail=result.credentials_source)

    # bucket: HEAD answers carry no error code, so ambiguous statuses are re-asked with a GET (list)
    start = time.perf_counter()
    try:
        client.head_bucket(Bucket=loc.bucket)
        result.add("bucket", True, _ms(start))
    except Exception as exc:
        code, status, _, _ = _error_code(exc)
        if code in ("400", "403", "301") or status in (400, 403, 301):
            try:
                client.list_objects_v2(Bucket=loc.bucket, MaxKeys=1, Prefix=prefix)
                result.add("bucket", True, _ms(start), detail="HEAD refused, listing allowed")
            except Exception as exc2:
                code2 = _error_code(exc2)[0]
                if code2 in ("AccessDenied", "403"):
                    # exists (AWS says NoSuchBucket otherwise); listing is not needed to upload artifacts
                    result.add("bucket", True, _ms(start), detail="exists; listing not permitted")
                else:
                    result.add("bucket", False, _ms(start))
                    return result.fail(*classify(exc2, "bucket", access), "bucket")
        else:
            result.add("bucket", False, _ms(start))
            return result.fail(*classify(exc, "bucket", access), "bucket")

    key = probe_key(access, prefix)
    payload = PROBE_HEADER + os.urandom(max(0, payload_bytes - len(PROBE_HEADER)))
    start = time.perf_counter()
    try:
        client.put_object(Bucket=loc.bucket, Key=key, Body=payload)
        result.add("write", True, _ms(start))
    except Exception as exc:
        result.add("write", False, _ms(start))
        return result.fail(*classify(exc, "write", access), "write")
    result.probe_key = f"{loc.root}/{key}"

    start = time.perf_counter()
    try:
        body = client.get_object(Bucket=loc.bucket, Key=key)["Body"].read()
        same = body == payload
        result.add("read", same, _ms(start), "" if same else f"got {len(body)} bytes, sent {len(payload)}")
        if not same:
            result.fail(
                r.CONTENT_MISMATCH,
                f"the probe object read back from {loc.root} differs from what "
                "was written (a proxy or gateway rewrites objects?)",
                access.endpoint_setting,
                "read",
            )
    except Exception as exc:
        result.add("read", False, _ms(start))
        result.fail(*classify(exc, "read", access), "read")

    start = time.perf_counter()
    try:
        client.delete_object(Bucket=loc.bucket, Key=key)
        result.add("delete", True, _ms(start))
        if result.ok:
            result.probe_key = None
    except Exception as exc:
        result.add("delete", False, _ms(start))
        result.fail(*classify(exc, "delete", access), "delete")
    return result


def _no_credentials() -> Exception:
    from botocore.exceptions import NoCredentialsError

    return NoCredentialsError()


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


# ------------------------------------------------------------------------------------------------
# Object access used by dataset verification


def head_sync(access: S3Access, key: str, timeout_s: float = 10.0) -> tuple[bool, int | None, str]:
    """(exists, size, problem) for one object. Blocking."""
    try:
        meta = cached_client(access, timeout_s).head_object(Bucket=access.location.bucket, Key=key)
        return True, int(meta.get("ContentLength") or 0), ""
    except Exception as exc:
        code, status, _, _ = _error_code(exc)
        if code in ("404", "NoSuchKey") or status == 404:
            return False, None, "object not found"
        return False, None, classify(exc, "read", access)[1]


def download_sync(
    access: S3Access,
    key: str,
    out: IO[bytes],
    timeout_s: float = 30.0,
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Stream one object into `out` (boto3 streams in parts: memory stays bounded). Blocking; raises."""
    client = cached_client(access, timeout_s)
    client.download_fileobj(access.location.bucket, key, out, Callback=on_bytes)


def read_sync(access: S3Access, key: str, max_bytes: int, timeout_s: float = 10.0) -> bytes:
    client = cached_client(access, timeout_s)
    body = client.get_object(Bucket=access.location.bucket, Key=key)["Body"]
    data = body.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"object is larger than {max_bytes} bytes")
    return data
