"""The simulated ClearML file server (clearml-server fileserver/fileserver.py) over SimState.files.

`GET /` answers "OK" (validating a token only if one is sent); `POST /` takes a multipart upload whose field
names are the target paths and answers the JSON list of stored paths; `GET|HEAD /<path>` downloads (with
Range support); `DELETE /<path>` deletes; `POST /delete_many` deletes files or folders. Objects are bytes in
memory, or `DiskFile`s (scenario `files: {path: {file: /abs/path}}`) served from disk through mmap, so that a
multi-gigabyte dataset costs the simulator no memory and no copies. Everything but the
ping needs `Authorization: Bearer <api token>` (or the `clearml_token_basic` cookie), like a server with
`fileserver.auth.enabled: true`.
"""

from __future__ import annotations

import json
import mimetypes
import mmap
import os
import re
import urllib.parse
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING

from bot.sim.errors import ApiError
from bot.sim.state import DiskFile

if TYPE_CHECKING:
    from bot.sim.api import ApiApp, Response


def _response(status: int, body: bytes | str, content_type: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None) -> Response:
    from bot.sim.api import Response

    return Response(status, body.encode() if isinstance(body, str) else body, content_type, headers or {})


def _werkzeug_page(status: int, title: str, text: str) -> str:
    return (f'<!doctype html>\n<html lang=en>\n<title>{status} {title}</title>\n<h1>{title}</h1>\n'
            f"<p>{text}</p>\n")


class FilesApp:
    """Request handling of the file server; shares the API's state and token validation."""

    def __init__(self, api: ApiApp) -> None:
        self.api = api

    def _token(self, headers: dict[str, str]) -> tuple[str | None, Response | None]:
        auth = headers.get("authorization")
        if auth:
            if not auth.startswith("Bearer "):
                return None, _response(401, "Only bearer token authorization is supported")
            return auth.partition(" ")[2], None
        for part in headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == "clearml_token_basic" and value:
                return value, None
        return None, None

    def _authorize(self, headers: dict[str, str], required: bool = True) -> Response | None:
        token, error = self._token(headers)
        if error is not None:
            return error
        if token is None:
            if not required:
                return None
            return _response(401, _werkzeug_page(
                401, "Unauthorized", "The server could not verify that you are authorized to access the URL "
                "requested. You either supplied the wrong credentials (e.g. a bad password), or your browser "
                "doesn't understand how to supply the credentials required."))
        try:
            self.api.identity_from_token(token)
        except ApiError as exc:
            return _response(401, exc.message, "text/plain; charset=utf-8")
        return None

    def handle(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> Response:
        state = self.api.state
        if headers.get("content-encoding"):
            return _response(415, f"Content encoding is not supported ({headers['content-encoding']})")
        rel = urllib.parse.unquote(path).lstrip("/")
        if method in ("GET", "HEAD") and not rel:
            denied = self._authorize(headers, required=False)
            return denied or _response(200, "OK")
        if method == "POST" and not rel:
            return self._upload(headers, body)
        if method == "POST" and rel == "delete_many":
            return self._delete_many(headers, body)
        if method in ("GET", "HEAD"):
            denied = self._authorize(headers)
            if denied:
                return denied
            with state.lock:
                content = state.files.get(rel)
            if content is None:
                return _response(404, _werkzeug_page(
                    404, "Not Found", "The requested URL was not found on the server. If you entered the URL "
                    "manually please check your spelling and try again."))
            return self._download(rel, content, headers, query, head=method == "HEAD")
        if method == "DELETE":
            denied = self._authorize(headers)
            if denied:
                return denied
            if state.faults.fail_deletes:
                return _response(500, _werkzeug_page(500, "Internal Server Error", "Delete failed"))
            with state.lock:
                if rel not in state.files:
                    return _response(404, f"File {rel} not found")
                del state.files[rel]
            return _response(200, json.dumps(rel), "text/html; charset=utf-8")
        return _response(405, _werkzeug_page(405, "Method Not Allowed",
                                             "The method is not allowed for the requested URL."))

    def _download(self, rel: str, content: bytes | DiskFile, headers: dict[str, str], query: str,
                  head: bool) -> Response:
        if isinstance(content, DiskFile):
            try:
                content = _mapped(content.path)
            except OSError:
                return _response(404, _werkzeug_page(
                    404, "Not Found", "The requested URL was not found on the server. If you entered the URL "
                    "manually please check your spelling and try again."))
        ctype = mimetypes.guess_type(rel)[0] or "application/octet-stream"
        extra = {"Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
        if "download" in urllib.parse.parse_qs(query, keep_blank_values=True):
            extra["Content-Disposition"] = f'attachment; filename="{rel.rsplit("/", 1)[-1]}"'
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", headers.get("range", "").strip())
        status = 200
        if match and (match.group(1) or match.group(2)):
            size = len(content)
            if match.group(1):
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else size - 1
            else:
                start, end = max(0, size - int(match.group(2))), size - 1
            if start >= size:
                return _response(416, "Requested Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"})
            end = min(end, size - 1)
            extra["Content-Range"] = f"bytes {start}-{end}/{size}"
            content = content[start : end + 1]
            status = 206
        resp = _response(status, b"" if head else content, ctype, extra)
        if head:
            resp.headers["X-Content-Length"] = str(len(content))
        return resp

    def _upload(self, headers: dict[str, str], body: bytes) -> Response:
        denied = self._authorize(headers)
        if denied:
            return denied
        state = self.api.state
        if state.faults.fail_uploads:
            return _response(500, _werkzeug_page(500, "Internal Server Error",
                                                 "The server encountered an internal error and was unable to "
                                                 "complete your request."))
        ctype = headers.get("content-type", "")
        if not ctype.startswith("multipart/"):
            return _response(400, _werkzeug_page(400, "Bad Request", "Expected a multipart/form-data upload"))
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + ctype.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
        )
        stored = []
        with state.lock:
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if not name:
                    continue
                target = str(name).lstrip("/")
                payload = part.get_payload(decode=True)
                state.files[target] = payload if isinstance(payload, bytes) else b""
                stored.append(target)
        return _response(200, json.dumps(stored))

    def _delete_many(self, headers: dict[str, str], body: bytes) -> Response:
        denied = self._authorize(headers)
        if denied:
            return denied
        state = self.api.state
        if state.faults.fail_deletes:
            return _response(500, _werkzeug_page(500, "Internal Server Error", "Delete failed"))
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            payload = None
        if not payload:
            return _response(400, "Json payload is missing")
        files = payload.get("files") if isinstance(payload, dict) else None
        if not files:
            return _response(400, "files are missing")
        deleted: dict[str, str] = {}
        errors: dict[str, list[str]] = {}
        with state.lock:
            for item in files:
                rel = urllib.parse.unquote_plus(str(item)).strip()
                if not rel.strip("/"):
                    errors.setdefault("Empty path not allowed", []).append(str(item))
                    continue
                rel = rel.lstrip("/")
                folder = rel.rstrip("/") + "/"
                if rel in state.files:
                    del state.files[rel]
                elif any(k.startswith(folder) for k in state.files):
                    for key in [k for k in state.files if k.startswith(folder)]:
                        del state.files[key]
                else:
                    errors.setdefault("Not found", []).append(str(item))
                    continue
                deleted[str(item)] = rel
        return _response(200, json.dumps({"deleted": deleted, "errors": errors}))


def _mapped(path: str) -> bytes:
    """The file's bytes without reading them: a read-only mmap viewed as bytes (slicing a memoryview copies
    nothing, and the socket sends straight from the page cache). Typed as bytes for Response, which only needs
    len(), slicing and a buffer to write."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return b""
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return memoryview(mapped)  # type: ignore[return-value]
