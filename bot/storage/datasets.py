"""ClearML dataset internals: the `state` artifact, chunk access and file re-hashing.

A dataset version keeps its file list in `state.json` (the `state` artifact: file entries with sha256,
size and the chunk artifact `data`/`data_NNN` holding each file, plus the dependency graph of parent
versions); the files themselves are zip chunks uploaded as artifacts. Verification reads the state
(checking its own sha256 against the artifact hash), checks every chunk a file entry needs, and with
hashing enabled downloads each chunk and re-hashes every member.

Memory stays bounded: chunks stream to a temporary file (never into memory), and each hashing thread
reads zip members through one 1 MiB buffer. Disk use is bounded by `downloads` chunks at a time.
Hashing runs in a thread pool (hashlib and zlib release the GIL on large buffers, so threads scale
with cores); downloads overlap with hashing of the previous chunks.

Progress: `set_progress_hook(callback)` installs a process-wide callback that receives `Progress`
snapshots (called in the event-loop thread, throttled to ~10 per second per dataset, plus one final
`phase="done"`). The CLI uses it to draw a progress bar; anything else may leave it unset. The hook
must be quick and must not raise (exceptions from it are swallowed so they cannot fail a check).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import stat
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from bot.errors import BotError
from bot.storage import s3
from bot.storage.credentials import locate, resolve_s3
from bot.storage.fileserver import classify_http_exception

if TYPE_CHECKING:
    import httpx

    from bot.clearml.models import Task
    from bot.storage.probe import StorageContext

STATE_ARTIFACT = "state"
DATA_ARTIFACT = "data"
DATA_PREFIX = "data_"
BLOCK = 1 << 20  # read buffer per hashing thread
MAX_STATE_BYTES = 256 << 20


class ArtifactError(BotError):
    """An artifact could not be read; the message says why in words (no secrets)."""


# ------------------------------------------------------------------------------------------------
# State


@dataclass
class FileEntry:
    relative_path: str
    hash: str | None = None
    size: int | None = None
    artifact_name: str | None = None
    parent_dataset_id: str | None = None
    local_path: str | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FileEntry:
        size = doc.get("size")
        return cls(
            relative_path=str(doc.get("relative_path") or ""),
            hash=str(doc["hash"]) if doc.get("hash") else None,
            size=int(size) if isinstance(size, int | float) else None,
            artifact_name=str(doc["artifact_name"]) if doc.get("artifact_name") else None,
            parent_dataset_id=str(doc["parent_dataset_id"]) if doc.get("parent_dataset_id") else None,
            local_path=str(doc["local_path"]) if doc.get("local_path") else None,
        )


@dataclass
class DatasetState:
    """The parsed state.json of one dataset version."""

    id: str
    dirty: bool
    file_entries: list[FileEntry]
    link_entries: list[dict[str, Any]]
    dependency_graph: dict[str, list[str]]
    file_count: int | None = None
    total_size: int | None = None

    @classmethod
    def from_json(cls, doc: Any) -> DatasetState:
        if not isinstance(doc, dict):
            raise ValueError(f"state.json is a {type(doc).__name__}, expected an object")
        entries = doc.get("dataset_file_entries") or []
        if not isinstance(entries, list):
            raise ValueError("state.json dataset_file_entries is not a list")
        graph_raw = doc.get("dependency_graph") or {}
        graph = {
            str(k): [str(p) for p in (v or []) if p]
            for k, v in (graph_raw.items() if isinstance(graph_raw, dict) else [])
        }
        return cls(
            id=str(doc.get("id") or ""),
            dirty=bool(doc.get("dirty")),
            file_entries=[FileEntry.from_json(e) for e in entries if isinstance(e, dict)],
            link_entries=[e for e in doc.get("dataset_link_entries") or [] if isinstance(e, dict)],
            dependency_graph=graph,
            file_count=doc.get("file_count") if isinstance(doc.get("file_count"), int) else None,
            total_size=doc.get("total_size") if isinstance(doc.get("total_size"), int) else None,
        )

    def parents_of(self, dataset_id: str) -> list[str]:
        return [p for p in self.dependency_graph.get(dataset_id, []) if p != dataset_id]


@dataclass
class StateRead:
    """The outcome of reading one dataset's state artifact."""

    dataset_id: str
    uri: str | None = None
    state: DatasetState | None = None
    sha256: str | None = None  # of the bytes downloaded
    expected_sha256: str | None = None  # the artifact's recorded hash
    size: int | None = None
    error: str | None = None  # why the state could not be read

    @property
    def hash_ok(self) -> bool | None:
        if not self.sha256 or not self.expected_sha256:
            return None
        return self.sha256 == self.expected_sha256.lower()


def artifacts_of(task: Task) -> dict[str, dict[str, Any]]:
    """The task's artifacts by key (the API returns them as a list sorted by key)."""
    raw = task.get("execution.artifacts") or []
    if isinstance(raw, dict):  # tolerate the Mongo dict shape
        raw = [dict(v, key=v.get("key", k)) for k, v in raw.items() if isinstance(v, dict)]
    return {str(a.get("key")): a for a in raw if isinstance(a, dict) and a.get("key")}


def is_chunk_artifact(key: str) -> bool:
    return key == DATA_ARTIFACT or key.startswith(DATA_PREFIX)


async def read_state(ctx: StorageContext, dataset: Task, max_bytes: int = MAX_STATE_BYTES) -> StateRead:
    """Download and parse the dataset's state.json; never raises (problems land in `.error`)."""
    out = StateRead(dataset_id=dataset.id)
    artifact = artifacts_of(dataset).get(STATE_ARTIFACT)
    if artifact is None:
        out.error = "the dataset has no `state` artifact"
        return out
    out.uri = str(artifact.get("uri") or "") or None
    out.expected_sha256 = str(artifact.get("hash") or "") or None
    if not out.uri:
        out.error = "the `state` artifact has no URI"
        return out
    try:
        data = await read_artifact(ctx, out.uri, max_bytes)
    except ArtifactError as exc:
        out.error = f"state.json could not be downloaded: {exc}"
        return out
    out.size = len(data)
    out.sha256 = hashlib.sha256(data).hexdigest()
    try:
        out.state = DatasetState.from_json(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        out.error = f"state.json is not a valid dataset state: {exc}"
    return out


# ------------------------------------------------------------------------------------------------
# Reading artifacts wherever they live (file server, other http hosts, S3, local files)


def _local_path(uri: str) -> str | None:
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if "://" not in uri:
        return uri
    return None


# -- the one read policy --------------------------------------------------------------------------------------
# Dataset records and artifact URIs are written by anyone with ClearML access. Every read of an artifact goes
# through `reach()`: http(s) only on the server's file host or a configured storage target; s3 only on a configured
# target or a bucket clearml.conf holds credentials for; local paths (file:// or bare) only under a configured
# `file://` storage target (or a playbook's `local_copy` folder), after resolving symlinks and `..`.


@dataclass(frozen=True)
class Reach:
    """Where an allowed read goes: `kind` is http, s3 or file; `path` is the resolved local path for file."""

    kind: str
    path: str | None = None


def local_roots(ctx: StorageContext) -> list[str]:
    """The local directories reads may come from: configured `file://` (or bare path) storage targets and any
    folder the run added (`ctx.local_roots`), each resolved (realpath)."""
    roots = [path for t in ctx.targets if (path := _local_path(t.url)) is not None]
    roots += list(getattr(ctx, "local_roots", []) or [])
    return [os.path.realpath(os.path.expanduser(r)) for r in roots if r]


def under_root(path: str, roots: list[str]) -> str | None:
    """`path` resolved (symlinks, `..`) if it stays inside one of `roots`, else None."""
    real = os.path.realpath(path)
    return real if _inside(real, roots) else None


def _inside(real: str, roots: list[str]) -> bool:
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _open_under(root: str, name: str, real_dirs: dict[str, str]) -> IO[bytes] | None:
    """`name` under the resolved folder `root` opened as `open_regular` does, or None when its resolved path leads
    outside `root` (the read policy of `under_root`). Fast path: the folders are resolved once each (`real_dirs`
    caches them; a dataset has far fewer folders than files) and the file itself is opened with O_NOFOLLOW, so it
    is not a symlink; a symlinked file (or an odd name) takes the full `under_root` path."""
    path = os.path.join(root, name)
    folder, base = os.path.split(path)
    if base not in ("", ".", ".."):
        real_dir = real_dirs.get(folder)
        if real_dir is None:
            real_dir = real_dirs[folder] = os.path.realpath(folder)
        if _inside(real_dir, [root]):
            try:
                return open_regular(os.path.join(real_dir, base))
            except OSError as exc:
                if exc.errno != errno.ELOOP:  # ELOOP: the file is a symlink; resolve it in full below
                    raise
    real = under_root(path, [root])
    return open_regular(real) if real is not None else None


def reach(ctx: StorageContext, uri: str) -> Reach:
    """The read policy for an artifact URI; raises ArtifactError (saying what to configure) when it is outside."""
    from bot.storage.credentials import match_target

    loc = locate(uri, ctx.targets, ctx.conf)
    if loc.kind == "http":
        if ctx.is_files_url(uri) or match_target(loc, ctx.targets, ctx.conf) is not None:
            return Reach("http")
        raise ArtifactError(_not_allowed(uri))
    if loc.kind == "s3":
        if ctx.allows(uri):
            return Reach("s3")
        raise ArtifactError(_not_allowed(uri))
    path = _local_path(uri)
    if path is not None and loc.kind in ("file", "unknown"):
        real = under_root(path, local_roots(ctx))
        if real is None:
            raise ArtifactError(
                f"not read: {uri} is a local path outside every configured `file://` storage target (dataset "
                "records are written by anyone with ClearML access, so the bot reads local files only under a "
                "folder its config names); add the folder under `storage:` if this dataset really lives there"
            )
        return Reach("file", real)
    raise ArtifactError(f"cannot read {uri}: unsupported scheme (gs:// and azure:// need their SDKs)")


def open_regular(path: str) -> IO[bytes]:
    """Open `path` for reading only if it is a regular file (not /dev/zero, a FIFO, /proc's endless files)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ArtifactError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


async def read_artifact(ctx: StorageContext, uri: str, max_bytes: int) -> bytes:
    """A small artifact's bytes (state.json): the file server via the API client's token, other hosts
    plainly, S3 through boto3, local paths from disk."""
    loc = locate(uri, ctx.targets, ctx.conf)
    try:
        where = reach(ctx, uri)
        if where.kind == "http" and ctx.is_files_url(uri):
            resp = await ctx.client.fileserver("GET", uri)
            if resp.status_code >= 400:
                raise ArtifactError(f"HTTP {resp.status_code} from the file server for {uri}")
            data = resp.content
        elif where.kind == "http":
            import httpx

            async with httpx.AsyncClient(verify=_verify(ctx), timeout=30.0, follow_redirects=True,
                                         event_hooks={"request": [_redirect_guard(ctx)]}) as http:
                resp = await http.get(uri)
            if resp.status_code >= 400:
                raise ArtifactError(f"HTTP {resp.status_code} for {uri}")
            data = resp.content
        elif where.kind == "s3":
            access = resolve_s3(uri, ctx.targets, ctx.conf)
            data = await asyncio.to_thread(s3.read_sync, access, loc.key, max_bytes)
        else:
            assert where.path is not None
            data = await asyncio.to_thread(_read_file, where.path, max_bytes)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(_describe(exc, uri, loc.kind, ctx)) from None
    if len(data) > max_bytes:
        raise ArtifactError(f"{uri} is larger than {max_bytes} bytes")
    return data


def _not_allowed(uri: str) -> str:
    # Dataset records are written by anyone with ClearML access: the bot only fetches from hosts its own
    # configuration names, never from wherever a record points (cloud metadata services, internal admin pages).
    return (f"not fetched: {uri} is on neither the ClearML file server nor a configured storage target; add its host "
            "under `storage:` in the bot's config if it is a real artifact store")


def _redirect_guard(ctx: StorageContext) -> Callable[[Any], Any]:
    """An httpx request hook: every request, redirects included, must pass `reach` (a configured host cannot
    bounce the bot to a metadata service)."""

    async def check(request: Any) -> None:
        reach(ctx, str(request.url))

    return check


def _read_file(path: str, max_bytes: int) -> bytes:
    with open_regular(path) as fh:
        return fh.read(max_bytes + 1)


def _verify(ctx: StorageContext) -> bool | str:
    return ctx.server.verify


def _describe(exc: BaseException, uri: str, kind: str, ctx: StorageContext) -> str:
    if kind == "s3":
        try:
            access = resolve_s3(uri, ctx.targets, ctx.conf)
            return s3.classify(exc, "read", access)[1]
        except Exception:
            pass
    if kind == "http":
        return classify_http_exception(exc, uri)[1]
    return f"{type(exc).__name__}: {exc}"


class ArtifactReader:
    """Existence checks and streaming downloads of chunk artifacts (one HTTP pool per reader)."""

    def __init__(self, ctx: StorageContext, timeout_s: float = 60.0) -> None:
        self.ctx = ctx
        self.timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> ArtifactReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _client(self) -> httpx.AsyncClient:
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(
                verify=_verify(self.ctx),
                timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
                follow_redirects=True,
                event_hooks={"request": [_redirect_guard(self.ctx)]},
            )
        return self._http

    async def _headers(self, uri: str) -> dict[str, str]:
        # Like the SDK: the API token goes only to the configured files host, never to other hosts.
        if self.ctx.is_files_url(uri) and self.ctx.server.has_credentials:
            return {"Authorization": f"Bearer {await self.ctx.client.token()}"}
        return {}

    async def exists(self, uri: str) -> tuple[bool, str]:
        """(exists, problem): does the chunk's URI answer? Reads at most one byte."""
        loc = locate(uri, self.ctx.targets, self.ctx.conf)
        try:
            try:
                where = reach(self.ctx, uri)
            except ArtifactError as exc:
                return False, str(exc)
            if where.kind == "http":
                http = await self._client()
                headers = await self._headers(uri)
                resp = await http.head(uri, headers=headers)
                if resp.status_code in (405, 501):  # no HEAD support: ask for one byte instead
                    async with http.stream("GET", uri, headers={**headers, "Range": "bytes=0-0"}) as got:
                        status = got.status_code
                else:
                    status = resp.status_code
                if status >= 400:
                    return False, f"HTTP {status}"
                return True, ""
            if where.kind == "s3":
                access = resolve_s3(uri, self.ctx.targets, self.ctx.conf)
                ok, _, problem = await asyncio.to_thread(s3.head_sync, access, loc.key)
                return ok, problem
            assert where.path is not None
            return (True, "") if os.path.isfile(where.path) else (False, "file not found")
        except Exception as exc:
            return False, _describe(exc, uri, loc.kind, self.ctx)

    async def download(
        self, uri: str, out: IO[bytes], on_bytes: Callable[[int], None] | None = None, *, limit: int | None = None
    ) -> int:
        """Stream the artifact at `uri` into `out`; returns the byte count. Raises ArtifactError, also when the
        artifact turns out larger than `limit` (its recorded size): nothing more than that is read."""
        loc = locate(uri, self.ctx.targets, self.ctx.conf)
        try:
            where = reach(self.ctx, uri)
            if where.kind == "http":
                http = await self._client()
                total = 0
                async with http.stream("GET", uri, headers=await self._headers(uri)) as resp:
                    if resp.status_code >= 400:
                        raise ArtifactError(f"HTTP {resp.status_code} for {uri}")
                    async for piece in resp.aiter_bytes(BLOCK):
                        out.write(piece)
                        total += len(piece)
                        if limit is not None and total > limit:
                            raise ArtifactError(f"{uri} is larger than its recorded size of {limit} bytes")
                        if on_bytes:
                            on_bytes(len(piece))
                return total
            if where.kind == "s3":
                access = resolve_s3(uri, self.ctx.targets, self.ctx.conf)
                loop = asyncio.get_running_loop()

                def callback(n: int) -> None:
                    if on_bytes:
                        loop.call_soon_threadsafe(on_bytes, n)

                await asyncio.to_thread(s3.download_sync, access, loc.key, out, self.timeout_s, callback)
                return out.tell()
            raise ArtifactError(f"cannot download {uri}: unsupported scheme")
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(_describe(exc, uri, loc.kind, self.ctx)) from None


# ------------------------------------------------------------------------------------------------
# Verification


@dataclass
class ChunkPlan:
    """One chunk artifact and the file entries that live in it."""

    artifact_name: str
    owner_id: str  # the dataset version whose task holds the artifact
    uri: str | None
    size: int | None
    entries: list[FileEntry] = field(default_factory=list)


@dataclass
class VerifyReport:
    files_checked: int = 0
    files_ok: int = 0
    bytes_hashed: int = 0
    bytes_downloaded: int = 0
    chunks_checked: int = 0
    mismatched: list[dict[str, Any]] = field(default_factory=list)  # {path, expected, actual, chunk}
    missing: list[dict[str, Any]] = field(default_factory=list)  # {path, chunk, reason}
    chunk_problems: list[dict[str, Any]] = field(default_factory=list)  # {chunk, dataset, uri, problem}
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.chunk_problems)


@dataclass
class Progress:
    dataset_id: str
    dataset_name: str
    phase: str  # "check" | "download" | "hash" | "done"
    files_done: int
    files_total: int
    bytes_done: int  # file bytes hashed
    bytes_total: int
    bytes_downloaded: int = 0


ProgressHook = Callable[[Progress], None]
_progress_hook: ProgressHook | None = None


def set_progress_hook(hook: ProgressHook | None) -> ProgressHook | None:
    """Install the process-wide progress callback (None removes it); returns the previous one."""
    global _progress_hook
    previous, _progress_hook = _progress_hook, hook
    return previous


class _Tracker:
    def __init__(self, dataset_id: str, name: str, files_total: int, bytes_total: int) -> None:
        self.p = Progress(dataset_id, name, "check", 0, files_total, 0, bytes_total)
        self._last = 0.0

    def update(
        self, *, files: int = 0, hashed: int = 0, downloaded: int = 0, phase: str | None = None, force: bool = False
    ) -> None:
        self.p.files_done += files
        self.p.bytes_done += hashed
        self.p.bytes_downloaded += downloaded
        if phase:
            self.p.phase = phase
        hook = _progress_hook
        if hook is None:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        try:
            hook(Progress(**vars(self.p)))
        except Exception:  # a broken progress bar must not fail a check
            pass


def plan_chunks(
    state: DatasetState, dataset_id: str, artifacts_by_dataset: dict[str, dict[str, dict[str, Any]]]
) -> tuple[list[ChunkPlan], list[dict[str, Any]]]:
    """Group file entries by (owner dataset, chunk artifact). Returns the plans and the problems found
    without downloading anything: entries never uploaded, and entries whose chunk artifact is missing."""
    plans: dict[tuple[str, str], ChunkPlan] = {}
    problems: list[dict[str, Any]] = []
    for entry in state.file_entries:
        owner = entry.parent_dataset_id or dataset_id
        if not entry.artifact_name:
            problems.append(
                {
                    "path": entry.relative_path,
                    "chunk": None,
                    "dataset": owner,
                    "reason": "never uploaded (no chunk artifact; local_path set)"
                    if entry.local_path
                    else "no chunk artifact recorded",
                }
            )
            continue
        artifacts = artifacts_by_dataset.get(owner)
        if artifacts is None:
            problems.append(
                {
                    "path": entry.relative_path,
                    "chunk": entry.artifact_name,
                    "dataset": owner,
                    "reason": f"the dataset version {owner} holding it was not found",
                }
            )
            continue
        artifact = artifacts.get(entry.artifact_name)
        if artifact is None:
            problems.append(
                {
                    "path": entry.relative_path,
                    "chunk": entry.artifact_name,
                    "dataset": owner,
                    "reason": f"chunk artifact `{entry.artifact_name}` is missing from dataset {owner}",
                }
            )
            continue
        key = (owner, entry.artifact_name)
        plan = plans.get(key)
        if plan is None:
            size = artifact.get("content_size")
            plan = plans[key] = ChunkPlan(
                entry.artifact_name,
                owner,
                str(artifact.get("uri") or "") or None,
                int(size) if isinstance(size, int | float) else None,
            )
        plan.entries.append(entry)
    return sorted(plans.values(), key=lambda p: (p.owner_id, p.artifact_name)), problems


class HashCancelled(BotError):
    """The run's deadline passed or the bot is shutting down: hashing stopped between two blocks."""


class HashingStopped(ArtifactError):
    """Raised by verify_chunks when its hashing was stopped from outside (shutdown): no partial verdict."""


# The stop flags of every verification running in this process: shutdown sets them all, so hashing threads end
# within one block instead of keeping the process alive (a thread pool's threads are joined at exit).
_RUNNING: set[threading.Event] = set()
_RUNNING_LOCK = threading.Lock()


def stop_all_hashing() -> int:
    """Stop every dataset hash check in progress (at shutdown); returns how many were running."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for flag in running:
        flag.set()
    return len(running)


# A hashing thread hands its byte count to the event loop at most every this many bytes and at each file's end:
# a loop wake-up per 1 MiB block (call_soon_threadsafe, then the GIL for the callback) slowed the threads down.
PROGRESS_STEP = 64 << 20


class _ThreadProgress:
    """One hashing thread's bytes not yet reported to the loop."""

    def __init__(self, report: Callable[[int, bool], None]) -> None:
        self.report = report
        self.pending = 0

    def add(self, nbytes: int) -> None:
        self.pending += nbytes
        if self.pending >= PROGRESS_STEP:
            self.report(self.pending, False)
            self.pending = 0

    def file_done(self) -> None:
        self.report(self.pending, True)
        self.pending = 0


def _capped_digest(fh: IO[bytes], view: memoryview, limit: int | None, stop: threading.Event,
                   progress: _ThreadProgress) -> tuple[str, int]:
    """sha256 and size of what `fh` yields, reading at most `limit` + 1 bytes (one more than recorded shows the
    file is larger) and giving up as soon as `stop` is set (checked before every block)."""
    digest = hashlib.sha256()
    total = 0
    block = len(view)
    while True:
        if stop.is_set():
            raise HashCancelled()
        want = block if limit is None else min(block, limit + 1 - total)
        if want <= 0:
            break
        n = fh.readinto(view if want == block else view[:want])  # type: ignore[attr-defined]
        if not n:
            break
        digest.update(view if n == block else view[:n])
        total += n
        progress.add(n)
    return digest.hexdigest(), total


def _hash_members(zip_path: str, names: list[str], sizes: dict[str, int | None], stop: threading.Event,
                  report: Callable[[int, bool], None]) -> dict[str, Any]:
    """Hash `names` inside one zip (one open handle, one buffer), each read capped at its recorded size. Runs in a
    worker thread; returns early (what is done so far) when `stop` is set."""
    out: dict[str, Any] = {}
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    progress = _ThreadProgress(report)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        return {n: ("error", f"chunk is not a readable zip: {exc}") for n in names}
    with zf:
        for name in names:
            try:
                with zf.open(name) as fh:
                    out[name] = ("ok", *_capped_digest(fh, view, sizes.get(name), stop, progress))
            except HashCancelled:
                return out
            except KeyError:
                out[name] = ("missing", "not in the chunk")
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # bad CRC, truncated
                out[name] = ("error", f"unreadable in the chunk: {exc}")
            progress.file_done()
    return out


def _hash_local_files(root: str, names: list[str], sizes: dict[str, int | None], stop: threading.Event,
                      report: Callable[[int, bool], None]) -> dict[str, Any]:
    """Hash the plain files `names` under the folder `root` (resolved). An entry whose path leads outside `root`
    (`../../etc/passwd`, a symlink out) is refused by the read policy; paths are resolved here, in the worker
    thread, so the lookups run in parallel with the hashing rather than before it on the event loop."""
    out: dict[str, Any] = {}
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    progress = _ThreadProgress(report)
    real_dirs: dict[str, str] = {}
    for name in names:
        try:
            opened = _open_under(root, name, real_dirs)
            if opened is None:
                out[name] = ("error", "not read: the entry's path leads outside the dataset's folder")
            else:
                with opened as fh:
                    out[name] = ("ok", *_capped_digest(fh, view, sizes.get(name), stop, progress))
        except HashCancelled:
            return out
        except FileNotFoundError:
            out[name] = ("missing", "file not found")
        except ArtifactError as exc:
            out[name] = ("error", str(exc))
        except OSError as exc:
            out[name] = ("error", exc.strerror or type(exc).__name__)
        progress.file_done()
    return out


def _balanced_groups(entries: list[FileEntry], groups: int) -> list[list[str]]:
    """Split entries into up to `groups` lists of similar total size (largest first, greedy)."""
    buckets: list[tuple[int, list[str]]] = [(0, []) for _ in range(max(1, groups))]
    for entry in sorted(entries, key=lambda e: -(e.size or 0)):
        index = min(range(len(buckets)), key=lambda i: buckets[i][0])
        size, names = buckets[index]
        names.append(entry.relative_path)
        buckets[index] = (size + (entry.size or 0), names)
    return [names for _, names in buckets if names]


async def verify_chunks(
    reader: ArtifactReader,
    chunks: list[ChunkPlan],
    *,
    hash_files: bool,
    dataset_id: str = "",
    dataset_name: str = "",
    workers: int | None = None,
    downloads: int = 4,
    tmp_dir: str | None = None,
) -> VerifyReport:
    """Check that every chunk answers; with `hash_files`, download each and re-hash its files."""
    report = VerifyReport()
    started = time.perf_counter()
    entries_total = sum(len(c.entries) for c in chunks)
    tracker = _Tracker(dataset_id, dataset_name, entries_total, sum(e.size or 0 for c in chunks for e in c.entries))
    tracker.update(phase="check", force=True)
    loop = asyncio.get_running_loop()
    threads = max(1, workers or os.cpu_count() or 4)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dataset-hash") if hash_files else None
    gate = asyncio.Semaphore(max(1, downloads))

    stop = threading.Event()  # set when this coroutine ends for any reason (deadline, shutdown): threads stop
    with _RUNNING_LOCK:
        _RUNNING.add(stop)
    sizes = {e.relative_path: e.size for c in chunks for e in c.entries}

    def progress_from_thread(nbytes: int, file_done: bool) -> None:
        if stop.is_set():
            return
        try:
            loop.call_soon_threadsafe(lambda: tracker.update(files=int(file_done), hashed=nbytes, phase="hash"))
        except RuntimeError:  # the loop closed under a thread that is about to notice `stop`
            pass

    def missing_chunk(chunk: ChunkPlan, problem: str) -> None:
        report.chunk_problems.append(
            {"chunk": chunk.artifact_name, "dataset": chunk.owner_id, "uri": chunk.uri, "problem": problem}
        )
        for entry in chunk.entries:
            report.missing.append(
                {"path": entry.relative_path, "chunk": chunk.artifact_name, "reason": f"chunk unavailable: {problem}"}
            )
        tracker.update(files=len(chunk.entries))

    def record(chunk: ChunkPlan, results: dict[str, Any]) -> None:
        for entry in chunk.entries:
            got = results.get(entry.relative_path, ("missing", "not in the chunk"))
            report.files_checked += 1
            if got[0] == "ok":
                report.bytes_hashed += got[2]
                if entry.hash and got[1] != entry.hash.lower():
                    report.mismatched.append(
                        {
                            "path": entry.relative_path,
                            "chunk": chunk.artifact_name,
                            "expected": entry.hash,
                            "actual": got[1],
                            "expected_size": entry.size,
                            "actual_size": got[2],
                        }
                    )
                else:
                    report.files_ok += 1
            elif got[0] == "missing":
                report.missing.append({"path": entry.relative_path, "chunk": chunk.artifact_name, "reason": got[1]})
            else:
                report.mismatched.append(
                    {
                        "path": entry.relative_path,
                        "chunk": chunk.artifact_name,
                        "expected": entry.hash,
                        "actual": None,
                        "error": got[1],
                    }
                )

    async def one(chunk: ChunkPlan) -> None:
        if not chunk.uri:
            missing_chunk(chunk, "the artifact has no URI")
            return
        if not hash_files:
            async with gate:
                ok, problem = await reader.exists(chunk.uri)
            report.chunks_checked += 1
            if ok:
                report.files_checked += len(chunk.entries)
                report.files_ok += len(chunk.entries)
                tracker.update(files=len(chunk.entries))
            else:
                missing_chunk(chunk, problem)
            return
        assert pool is not None
        local: str | None = None
        if _local_path(chunk.uri) is not None:
            try:
                local = reach(reader.ctx, chunk.uri).path
            except ArtifactError as exc:
                missing_chunk(chunk, str(exc))
                return
        if local is not None and not local.endswith(".zip") and os.path.isdir(local):
            # a dataset kept as plain files (external files / local copy): hash them in place; an entry's
            # relative_path (`../../etc/passwd`) must not lead outside this folder
            groups = _balanced_groups(chunk.entries, threads)
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        pool, _hash_local_files, local, names, sizes, stop, progress_from_thread,
                    )
                    for names in groups
                )
            )
            merged: dict[str, Any] = {}
            for part in parts:
                merged.update(part)
            report.chunks_checked += 1
            record(chunk, merged)
            return
        async with gate:
            tmp = None
            try:
                if local is not None:
                    zip_path = local
                    if not os.path.isfile(zip_path):  # isfile: a regular file (not /dev/zero, not a FIFO)
                        missing_chunk(chunk, "file not found" if not os.path.exists(zip_path)
                                      else "not a regular file")
                        return
                else:
                    # closed in the inner finally, unlinked in the outer one (the hashing threads
                    # reopen it by name, so it must outlive this handle)
                    tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115
                        prefix="clearml-chatops-chunk-", suffix=".zip", dir=tmp_dir, delete=False
                    )
                    zip_path = tmp.name
                    try:
                        size = await reader.download(
                            chunk.uri, tmp, lambda n: tracker.update(downloaded=n, phase="download"),
                            limit=chunk.size,
                        )
                        report.bytes_downloaded += size
                    except ArtifactError as exc:
                        missing_chunk(chunk, str(exc))
                        return
                    finally:
                        tmp.close()
                    if chunk.size is not None and size != chunk.size:
                        report.chunk_problems.append(
                            {
                                "chunk": chunk.artifact_name,
                                "dataset": chunk.owner_id,
                                "uri": chunk.uri,
                                "problem": f"downloaded {size} bytes, the artifact records {chunk.size}",
                            }
                        )
                report.chunks_checked += 1
                groups = _balanced_groups(chunk.entries, threads)
                parts = await asyncio.gather(
                    *(
                        loop.run_in_executor(pool, _hash_members, zip_path, names, sizes, stop, progress_from_thread)
                        for names in groups
                    )
                )
                merged: dict[str, Any] = {}
                for part in parts:
                    merged.update(part)
                record(chunk, merged)
            finally:
                if tmp is not None:
                    try:
                        os.unlink(tmp.name)
                    except OSError:
                        pass

    try:
        await asyncio.gather(*(one(c) for c in chunks))
        if stop.is_set():  # stopped from outside while hashing: what was hashed is no verdict
            raise HashingStopped("hashing was stopped because the bot is shutting down; run the check again")
    finally:
        stop.set()  # a cancelled run (deadline, SIGTERM) stops its hashing threads at the next block
        with _RUNNING_LOCK:
            _RUNNING.discard(stop)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    report.duration_s = time.perf_counter() - started
    tracker.update(phase="done", force=True)
    return report
