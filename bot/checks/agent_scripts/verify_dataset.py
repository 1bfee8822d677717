"""clearml-chatops dataset verification, run by a clearml-agent next to the storage.

A standalone script (the standard library only; boto3 only for s3:// chunks, when the environment has it). The
clearml-chatops bot creates a task with this script as its body and enqueues it; the agent that pulls it runs it
with its usual environment: CLEARML_TASK_ID and CLEARML_CONFIG_FILE (the configuration the agent wrote for the
task, JSON), or CLEARML_API_HOST / CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY / CLEARML_FILES_HOST.

The job (which dataset versions, how many paths to list) is the task's configuration object
"clearml-chatops verification". For each version the script reads the dataset task's `state` artifact
(state.json: file entries with sha256, size and chunk artifact), checks the state's own sha256, downloads every
chunk the entries need (the version's own or its parents'), compares each chunk's size with the artifact record
and re-hashes every file in it. The result (one JSON document) is uploaded to the file server and registered as
the task's output artifact "verification"; the bot reads only that document. Exit code 0 means the verification
ran (whatever it found); non-zero means it could not run (the bot reports the task's log tail).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from typing import Any

JOB_SECTION = "clearml-chatops verification"
RESULT_ARTIFACT = "verification"
RESULT_VERSION = 1
BLOCK = 1 << 20
MAX_STATE_BYTES = 256 << 20


class VerifyError(Exception):
    """Something this script cannot work around; the message says what."""


# ------------------------------------------------------------------------------------------------ configuration


def _hocon_value(text: str, key: str) -> str | None:
    """`key: "value"` / `key = value` anywhere in a clearml.conf (enough for the four keys read here)."""
    match = re.search(r"(?:^|[\s{,])" + re.escape(key) + r"\s*[:=]\s*(\"(?:[^\"\\]|\\.)*\"|[^\s,}#]+)", text, re.M)
    if not match:
        return None
    raw = match.group(1)
    return json.loads(raw) if raw.startswith('"') else raw


def load_config() -> dict[str, Any]:
    """The API/files hosts and credentials the agent gave this task, plus the `sdk` section when readable."""
    conf: dict[str, Any] = {}
    path = os.environ.get("CLEARML_CONFIG_FILE") or os.path.expanduser("~/clearml.conf")
    text = ""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        pass
    parsed: Any = None
    if text:
        try:
            parsed = json.loads(text)  # what clearml-agent writes for the tasks it runs
        except ValueError:
            parsed = None
    conf["source"] = f"{path} (JSON)" if isinstance(parsed, dict) else (path if text else "the environment")
    if isinstance(parsed, dict):
        api = parsed.get("api") or {}
        creds = api.get("credentials") or {}
        conf.update(api_server=api.get("api_server"), files_server=api.get("files_server"),
                    access_key=creds.get("access_key"), secret_key=creds.get("secret_key"),
                    verify=api.get("verify_certificate", True), sdk=parsed.get("sdk") or {})
    elif text:
        for key in ("api_server", "files_server", "access_key", "secret_key"):
            conf[key] = _hocon_value(text, key)
    env = {"api_server": "CLEARML_API_HOST", "files_server": "CLEARML_FILES_HOST",
           "access_key": "CLEARML_API_ACCESS_KEY", "secret_key": "CLEARML_API_SECRET_KEY"}
    for key, var in env.items():
        if os.environ.get(var):
            conf[key] = os.environ[var]
    if not conf.get("api_server"):
        raise VerifyError("no ClearML API server configured (CLEARML_API_HOST or api.api_server in "
                          f"{path}): run this script under clearml-agent")
    conf["api_server"] = str(conf["api_server"]).rstrip("/")
    conf["files_server"] = str(conf.get("files_server") or "").rstrip("/")
    return conf


# ------------------------------------------------------------------------------------------------ HTTP


class Api:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.token = os.environ.get("CLEARML_AUTH_TOKEN") or ""
        files = urllib.parse.urlsplit(conf["files_server"]) if conf["files_server"] else None
        self.files_netloc = files.netloc if files else ""

    def _login(self) -> str:
        if not self.token:
            key, secret = self.conf.get("access_key"), self.conf.get("secret_key")
            if not key or not secret:
                raise VerifyError("no ClearML credentials (api.credentials or CLEARML_API_ACCESS_KEY/SECRET_KEY)")
            basic = base64.b64encode(f"{key}:{secret}".encode()).decode()
            answer = self._post("auth.login", {}, {"Authorization": "Basic " + basic})
            self.token = str(answer["token"])
        return self.token

    def _post(self, endpoint: str, payload: Any, headers: dict[str, str]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.conf['api_server']}/{endpoint}", data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                body = json.loads(resp.read().decode() or "{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise VerifyError(f"{endpoint}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise VerifyError(f"{endpoint}: cannot reach {self.conf['api_server']}: {exc.reason}") from None
        return body.get("data") or {}

    def call(self, endpoint: str, payload: Any) -> dict[str, Any]:
        return self._post(endpoint, payload, {"Authorization": "Bearer " + self._login()})

    def auth_for(self, url: str) -> dict[str, str]:
        # like the SDK: the API token goes to the configured file server only, never to other hosts
        if self.files_netloc and urllib.parse.urlsplit(url).netloc == self.files_netloc:
            return {"Authorization": "Bearer " + self._login()}
        return {}


def open_uri(api: Api, uri: str) -> Any:
    """A readable binary stream of the object at `uri` (http(s), s3 with boto3, file:// or a plain path)."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("http", "https"):
        request = urllib.request.Request(uri, headers=api.auth_for(uri))
        try:
            return urllib.request.urlopen(request, timeout=120)
        except urllib.error.HTTPError as exc:
            raise VerifyError(f"HTTP {exc.code} for {uri}") from None
        except urllib.error.URLError as exc:
            raise VerifyError(f"cannot reach {uri}: {exc.reason}") from None
    if scheme == "s3":
        return _open_s3(api, uri)
    if scheme in ("", "file"):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        try:
            return open(path, "rb")  # the caller closes it
        except OSError as exc:
            raise VerifyError(f"{path}: {exc.strerror or exc}") from None
    raise VerifyError(f"unsupported storage scheme in {uri} (http, https, s3 and local paths are)")


def _open_s3(api: Api, uri: str) -> Any:
    """s3://bucket/key on AWS, s3://host:port/bucket/key on MinIO and other endpoints (ClearML's two forms), with
    the credentials of the matching sdk.aws.s3.credentials entry, else the top-level ones, else boto3's own chain
    (environment, instance role)."""
    try:
        import boto3  # type: ignore[import-not-found]
    except ImportError:
        raise VerifyError(f"{uri}: reading s3:// needs boto3 in the agent's Python environment") from None
    parts = urllib.parse.urlsplit(uri)
    netloc, path = parts.netloc, parts.path.lstrip("/")
    s3conf = ((api.conf.get("sdk") or {}).get("aws") or {}).get("s3") or {}
    entries = [e for e in s3conf.get("credentials") or [] if isinstance(e, dict)]
    on_host = [e for e in entries if e.get("host") == netloc]
    if on_host or ":" in netloc:  # an endpoint of its own: the bucket is the first path element
        bucket, _, key = path.partition("/")
        entry = next((e for e in on_host if e.get("bucket") == bucket), on_host[0] if on_host else {})
        endpoint = ("https://" if entry.get("secure", True) and on_host else "http://") + netloc
    else:
        bucket, key = netloc, path
        entry = next((e for e in entries if e.get("bucket") == bucket and not e.get("host")), {})
        endpoint = ""
    settings = {**{k: s3conf.get(k) for k in ("key", "secret", "token", "region")}, **entry}
    kwargs: dict[str, Any] = {}
    if settings.get("key") and settings.get("secret"):
        kwargs.update(aws_access_key_id=settings["key"], aws_secret_access_key=settings["secret"])
        if settings.get("token"):
            kwargs["aws_session_token"] = settings["token"]
    if settings.get("region"):
        kwargs["region_name"] = settings["region"]
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    try:
        return boto3.client("s3", **kwargs).get_object(Bucket=bucket, Key=key)["Body"]
    except Exception as exc:
        raise VerifyError(f"{uri}: {type(exc).__name__}: {exc}") from None


def read_small(api: Api, uri: str, limit: int) -> bytes:
    with contextlib.closing(open_uri(api, uri)) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise VerifyError(f"{uri} is larger than {limit} bytes")
    return data


def upload_result(api: Api, task: dict[str, Any], payload: bytes) -> str:
    """POST the result to the file server (multipart, field name = target path, as the SDK does); its URL."""
    if not api.conf["files_server"]:
        raise VerifyError("no file server configured (api.files_server or CLEARML_FILES_HOST): the result cannot "
                          "be uploaded")
    target = f"clearml-chatops/{task['id']}/artifacts/{RESULT_ARTIFACT}/verification.json"
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{target}\"; filename=\"verification.json\"\r\n"
            "Content-Type: application/json\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    url = api.conf["files_server"] + "/"
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", **api.auth_for(url)})
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        raise VerifyError(f"uploading the result to {url}: HTTP {exc.code} "
                          f"{exc.read().decode(errors='replace')[:300]}") from None
    except urllib.error.URLError as exc:
        raise VerifyError(f"uploading the result: cannot reach {url}: {exc.reason}") from None
    return f"{api.conf['files_server']}/{target}"


# ------------------------------------------------------------------------------------------------ verification


def artifacts_of(task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = (task.get("execution") or {}).get("artifacts") or []
    if isinstance(raw, dict):
        raw = [dict(v, key=v.get("key", k)) for k, v in raw.items() if isinstance(v, dict)]
    return {str(a["key"]): a for a in raw if isinstance(a, dict) and a.get("key")}


def fetch_tasks(api: Api, ids: list[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    found = api.call("tasks.get_all", {"id": ids, "search_hidden": True,
                                       "only_fields": ["id", "name", "status", "runtime", "execution.artifacts"]})
    return {str(t["id"]): t for t in found.get("tasks") or [] if isinstance(t, dict) and t.get("id")}


def hash_stream(stream: Any) -> tuple[str, int]:
    digest, total = hashlib.sha256(), 0
    while True:
        piece = stream.read(BLOCK)
        if not piece:
            return digest.hexdigest(), total
        digest.update(piece)
        total += len(piece)


def verify_dataset(api: Api, dataset_id: str, tasks: dict[str, dict[str, Any]], work_dir: str) -> dict[str, Any]:
    started = time.time()
    out: dict[str, Any] = {"id": dataset_id, "files": 0, "chunks": 0, "files_verified": 0, "bytes_hashed": 0,
                           "bytes_downloaded": 0, "mismatched": [], "missing": [], "chunk_problems": [],
                           "state": {}}
    task = tasks.get(dataset_id)
    if task is None:
        out["error"] = f"dataset version {dataset_id} does not exist"
        return out
    state_artifact = artifacts_of(task).get("state")
    if state_artifact is None or not state_artifact.get("uri"):
        out["error"] = "the dataset has no `state` artifact"
        return out
    uri = str(state_artifact["uri"])
    out["state"] = {"uri": uri, "expected_sha256": state_artifact.get("hash") or None}
    try:
        raw = read_small(api, uri, MAX_STATE_BYTES)
    except VerifyError as exc:
        out["error"] = f"state.json could not be downloaded: {exc}"
        return out
    out["state"].update(sha256=hashlib.sha256(raw).hexdigest(), size=len(raw))
    try:
        state = json.loads(raw.decode("utf-8"))
        entries = [e for e in state.get("dataset_file_entries") or [] if isinstance(e, dict)]
    except (UnicodeDecodeError, ValueError, AttributeError) as exc:
        out["error"] = f"state.json is not a valid dataset state: {exc}"
        return out
    out["files"] = len(entries)

    owners_needed = sorted({str(e["parent_dataset_id"]) for e in entries if e.get("parent_dataset_id")}
                           - {dataset_id} - set(tasks))
    tasks.update(fetch_tasks(api, owners_needed))
    out["related_ids"] = sorted({str(e.get("parent_dataset_id")) for e in entries if e.get("parent_dataset_id")}
                                - {dataset_id})
    plans: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        path = str(entry.get("relative_path") or "")
        owner = str(entry.get("parent_dataset_id") or dataset_id)
        chunk = entry.get("artifact_name")
        if not chunk or entry.get("local_path"):
            reason = ("never uploaded (no chunk artifact; local_path set)" if entry.get("local_path")
                      else "no chunk artifact recorded")
            out["missing"].append({"path": path, "chunk": None, "dataset": owner, "reason": reason})
            continue
        owner_task = tasks.get(owner)
        if owner_task is None:
            out["missing"].append({"path": path, "chunk": chunk, "dataset": owner,
                                   "reason": f"the dataset version {owner} holding it was not found"})
            continue
        artifact = artifacts_of(owner_task).get(str(chunk))
        if artifact is None:
            out["missing"].append({"path": path, "chunk": chunk, "dataset": owner,
                                   "reason": f"chunk artifact `{chunk}` is missing from dataset {owner}"})
            continue
        plan = plans.setdefault((owner, str(chunk)), {"artifact": artifact, "entries": []})
        plan["entries"].append(entry)
    out["chunks"] = len(plans)
    for (owner, chunk), plan in sorted(plans.items()):
        verify_chunk(api, owner, chunk, plan["artifact"], plan["entries"], out, work_dir)
    out["duration_s"] = round(time.time() - started, 3)
    return out


def verify_chunk(api: Api, owner: str, chunk: str, artifact: dict[str, Any], entries: list[dict[str, Any]],
                 out: dict[str, Any], work_dir: str) -> None:
    uri = str(artifact.get("uri") or "")

    def unavailable(problem: str) -> None:
        out["chunk_problems"].append({"chunk": chunk, "dataset": owner, "uri": uri, "problem": problem})
        for entry in entries:
            out["missing"].append({"path": entry.get("relative_path"), "chunk": chunk,
                                   "reason": f"chunk unavailable: {problem}"})

    if not uri:
        unavailable("the artifact has no URI")
        return
    local = uri[len("file://"):] if uri.startswith("file://") else (uri if "://" not in uri else None)
    if local is not None and os.path.isdir(local):  # files kept as plain files (external files)
        results = {}
        for entry in entries:
            rel = str(entry.get("relative_path") or "")
            try:
                with open(os.path.join(local, rel), "rb") as fh:
                    results[rel] = ("ok", *hash_stream(fh))
            except FileNotFoundError:
                results[rel] = ("missing", "file not found")
            except OSError as exc:
                results[rel] = ("error", str(exc))
        record(chunk, entries, results, out)
        return
    path = os.path.join(work_dir, "chunk.zip")
    try:
        with contextlib.closing(open_uri(api, uri)) as stream, open(path, "wb") as fh:
            shutil.copyfileobj(stream, fh, BLOCK)
            size = fh.tell()
    except VerifyError as exc:
        unavailable(str(exc))
        return
    except OSError as exc:
        unavailable(f"reading {uri}: {exc}")
        return
    try:
        out["bytes_downloaded"] += size
        recorded = artifact.get("content_size")
        if isinstance(recorded, (int, float)) and int(recorded) != size:  # tuple: agents may run Python < 3.10
            out["chunk_problems"].append({"chunk": chunk, "dataset": owner, "uri": uri,
                                          "problem": f"downloaded {size} bytes, the artifact records {int(recorded)}"})
        results: dict[str, Any] = {}
        try:
            with zipfile.ZipFile(path) as zf:
                for entry in entries:
                    rel = str(entry.get("relative_path") or "")
                    try:
                        with zf.open(rel) as member:
                            results[rel] = ("ok", *hash_stream(member))
                    except KeyError:
                        results[rel] = ("missing", "not in the chunk")
                    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                        results[rel] = ("error", f"unreadable in the chunk: {exc}")
        except (zipfile.BadZipFile, OSError) as exc:
            results = {str(e.get("relative_path") or ""): ("error", f"chunk is not a readable zip: {exc}")
                       for e in entries}
        record(chunk, entries, results, out)
    finally:
        os.unlink(path)


def record(chunk: str, entries: list[dict[str, Any]], results: dict[str, Any], out: dict[str, Any]) -> None:
    for entry in entries:
        rel = str(entry.get("relative_path") or "")
        got = results.get(rel, ("missing", "not in the chunk"))
        expected = str(entry.get("hash") or "").lower() or None
        if got[0] == "ok":
            out["bytes_hashed"] += got[2]
            if expected and got[1] != expected:
                out["mismatched"].append({"path": rel, "chunk": chunk, "expected": expected, "actual": got[1],
                                          "expected_size": entry.get("size"), "actual_size": got[2]})
            else:
                out["files_verified"] += 1
        elif got[0] == "missing":
            out["missing"].append({"path": rel, "chunk": chunk, "reason": got[1]})
        else:
            out["mismatched"].append({"path": rel, "chunk": chunk, "expected": expected, "actual": None,
                                      "error": got[1]})


def cap(report: dict[str, Any], limit: int) -> dict[str, Any]:
    """Counts of everything, at most `limit` entries of each list (the result stays small)."""
    for key in ("mismatched", "missing", "chunk_problems"):
        report[f"{key}_count"] = len(report[key])
        report[key] = report[key][:limit]
    return report


def main() -> int:
    task_id = os.environ.get("CLEARML_TASK_ID") or (sys.argv[1] if len(sys.argv) > 1 else "")
    if not task_id:
        print("clearml-chatops verification: no CLEARML_TASK_ID: this script runs as a task under clearml-agent",
              file=sys.stderr)
        return 2
    try:
        api = Api(load_config())
        me = api.call("tasks.get_by_id", {"task": task_id})["task"]
        section = (me.get("configuration") or {}).get(JOB_SECTION) or {}
        job = json.loads(section.get("value") or "{}")
        ids = [str(i) for i in job.get("datasets") or []]
        limit = int(job.get("max_listed") or 20)
        print(f"clearml-chatops verification: {len(ids)} dataset version(s) on {platform.node()}; server "
              f"{api.conf['api_server']}, files {api.conf['files_server'] or '-'} (from {api.conf['source']})",
              flush=True)
        tasks = fetch_tasks(api, ids)
        reports = []
        for dataset_id in ids:
            with tempfile.TemporaryDirectory(prefix="clearml-chatops-verify-") as work_dir:
                report = cap(verify_dataset(api, dataset_id, tasks, work_dir), limit)
            print(f"clearml-chatops verification: {dataset_id}: {report['files_verified']}/{report['files']} files "
                  f"intact, {report['mismatched_count']} differ, {report['missing_count']} missing, "
                  f"{report.get('error') or 'state read'}", flush=True)
            reports.append(report)
        result = {"version": RESULT_VERSION, "task": task_id, "round": job.get("round"),
                  "finished": time.time(), "host": platform.node(), "datasets": reports}
        payload = json.dumps(result, sort_keys=True).encode()
        uri = upload_result(api, me, payload)
        api.call("tasks.add_or_update_artifacts", {"task": task_id, "force": True, "artifacts": [{
            "key": RESULT_ARTIFACT, "type": "JSON", "mode": "output", "uri": uri,
            "hash": hashlib.sha256(payload).hexdigest(), "content_size": len(payload),
            "timestamp": int(time.time()), "type_data": {"content_type": "application/json"}}]})
        print(f"clearml-chatops verification: result uploaded ({len(payload)} bytes)", flush=True)
    except VerifyError as exc:
        print(f"clearml-chatops verification FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
