'''Scenario files for the ClearML API simulator: loading, validation and materialization into a SimState.

Scenarios are YAML files shipped in ``bot/sim/scenarios/<name>.yaml`` (loadable by name, e.g. ``basic``) or
any path, or a Python dict with the same structure (the fleet generator builds one). All times are relative to
the moment the simulator loads the scenario: ``now``, ``-30s``, ``-15m``, ``-2h``, ``-3d``, ``-1h30m``; absolute
ISO-8601 is accepted too. After loading, the simulator's clock moves on in real time (and tests may advance
it), so a worker with ``last_activity: "-20s"`` that nobody updates goes stale exactly as on a real server.

Ids that are not given are derived deterministically: ``uuid5(NAMESPACE_URL, "<kind>:<name>").hex`` with kind
``project``, ``queue``, ``task``, ``user``, ``model`` or ``dataset`` (for datasets the name is
``<project>/<name>@<version>``). Authors MAY give explicit 32-hex ids (recommended for tasks referenced
elsewhere). Everything that refers to another object (``project``, ``queue``, ``task``, ``parent``, ``user``,
``queues``) takes either its id or its name.

A broken scenario raises ONE ``ScenarioError`` naming the file, the line (for YAML) and the key path, e.g.
``incident-zoo.yaml:42: tasks[3].status: 'runing' is not a task status; did you mean 'in_progress'?``

The format (the contract with scenario authors)::

    name: incident-zoo
    description: one fault for every check
    include: [other-file.yaml]        # optional; paths relative to this file. Included files come first:
                                      # top-level lists are concatenated, mappings merged recursively
                                      # (this file wins; nested lists are replaced, not concatenated)
    server:
      version: "2.3.0"                # server.info version (and the JWT's server_version); default 2.3.0
      api_version: "2.34"             # server.info api_version (and the JWT's api_version); default 2.34
      keys: [{key: "SIMKEY...", secret: "SIMSECRET...", user: "u-ml-1"}]   # default: one demo key pair;
                                      # `user` (extension) binds the key to a user, default the first user
      company: {id: "d1bd92a3b039400cbafc60a7a5b1e52b", name: "acme"}
      watchdog: {enabled: true, threshold_sec: 7200, watch_interval_sec: 900}
                                      # the server's non-responsive tasks watchdog (these are its defaults):
                                      # every watch_interval_sec after load, in_progress tasks whose
                                      # last_update is older than threshold_sec become stopped with status
                                      # reason/message "Forced stop (non-responsive)"
    users: [{id: "u-ml-1", name: "Alice", role: "admin"}]   # default: one user owning everything
    projects:
      - {name: "vision"}                              # id derived from name unless given
      - {name: "vision/.datasets/cifar", system_tags: [hidden, dataset]}
                                      # also: id, tags, description, user, created,
                                      # default_output_destination. Projects referenced by tasks but not
                                      # listed, and parents of "a/b" names, are created automatically.
    queues:
      - name: gpu
        id: <optional>
        display_name: <optional>
        system_tags: [default]        # `default` marks the default queue; `k8s-glue` hides it
        tags: []
        created: "-30d"               # default: load time
        entries:                      # FIFO, index 0 = next; task refs by id or by task name
          - {task: "train-resnet-queued", added: "-7h"}
          - "another-task"            # (extension) a bare task ref; added = the task's status_changed
    workers:
      - id: "gpu-box-1:gpu0"
        ip: "10.0.0.5"
        queues: [gpu]                 # queue names (or ids)
        register_time: "-3d"          # default: last_activity
        last_activity: "-20s"         # last_activity_time (default: last_report, else now)
        last_report: "-20s"           # last_report_time (omit -> never reported)
        task: "train-resnet"          # task ref the worker is running; omit when idle
        queue: gpu                    # (extension) queue the task came from; default: the task's
                                      # execution.queue
        tags: []
        system_tags: []
        user: "u-ml-1"
        register_timeout: 600         # seconds; the worker vanishes from workers.get_all this long after
                                      # its last activity (so a worker with last_activity -11m is GONE)
    tasks:
      - id: "<32 hex, optional>"
        name: "train-resnet"
        project: "vision"             # project name (or id)
        type: training                # training|testing|inference|data_processing|application|monitor|...
        status: in_progress           # created|queued|in_progress|stopped|published|failed|completed|closed
        status_reason: ""
        status_message: ""
        status_changed: "-2h"         # default: completed, else started, else created
        created: "-3h"                # default: the earliest time given, else now
        started: "-2h"
        completed: null
        last_update: "-20m"           # default: the latest time given
        last_worker: "gpu-box-1:gpu0"
        last_worker_report: "-20m"
        user: "u-ml-1"
        parent: null                  # task ref
        system_tags: []
        tags: []
        comment: ""
        script: {repository: "https://github.com/acme/vision.git", branch: main, version_num: "3f2a...",
                 entry_point: train.py, working_dir: ".", binary: "python3.10",
                 requirements: {pip: "torch==2.3.0\\nnumpy==1.26.4\\n"}, diff: ""}
        execution: {queue: "gpu", parameters: {},
                    artifacts: [{key, type, mode, uri, hash, content_size, timestamp, type_data, display_data}]}
                                      # artifact `timestamp` may be a relative time; `mode` defaults to output
        container: {image: "nvidia/cuda:12.1-runtime", arguments: "", setup_shell_script: ""}
        output: {destination: "s3://ml-artifacts/vision"}
        hyperparams: {Args: {lr: {section: Args, name: lr, value: "0.01", type: float}}}
        configuration: {}
        runtime: {}
        last_metrics: {<hash>: {<hash>: {metric: loss, variant: train, value: 0.12}}}
        last_iteration: 1200
        models: {input: [{name: "input", model: "<model ref>"}], output: []}
        active_duration: 3600         # (extension) seconds; default: computed from started/completed
        enqueue_status: created       # (extension) status the task returns to when dequeued
        log:                          # console output served by events.get_task_log
          - "Starting training"       # lines without `at` follow the previous one by 1 s (starting at
                                      # `started`, else `created`), never later than now
          - {msg: "ModuleNotFoundError: No module named 'timm'", at: "-1h", level: error, worker: "w:0"}
    queue_metrics:                    # optional explicit series for queues.get_queue_metrics
      gpu:                            # queue name or id
        interval: 300                 # seconds between points
        avg_waiting_times: [10, 12, 15, 600]   # oldest first, last = load time
        queue_lengths: [1, 1, 2, 9]
      # queues without explicit metrics (and the time after an explicit series ends) get points computed
      # from their current entries: length = entries added by then, wait = their mean age then.
    datasets:                         # sugar: each becomes a data_processing task with system tag `dataset`
                                      # in hidden project "<project>/.datasets/<name>", with a `state` artifact
                                      # (state.json on the simulator's file server) and zip chunk artifacts
                                      # data, data_001, ... (zips on the file server), as the clearml SDK lays
                                      # them out, with real sha256 hashes
      - id: "<optional 32 hex>"
        name: cifar
        project: vision
        version: "1.0.0"
        status: completed             # in_progress|completed|published|stopped|failed|created
        last_update: "-2d"
        parents: []                   # dataset refs (id or name@version or name = the last one declared)
        files:                        # file content given literally, or generated (size + seed)
          - {path: "train/a.bin", content: "hello"}
          - {path: "train/b.bin", size: 4096, seed: 1}
        chunk_size: 1048576           # bytes of files per zip chunk (default 512 MiB, the SDK's default)
        tags: []                      # (extension) user tags of the dataset task
        faults:                       # optional: break it the way real uploads break
          missing_chunk: data_001     # artifact listed in state but removed from the task
          missing_chunk_file: data    # artifact present but its zip gone from the file server
          corrupt_file: "train/a.bin" # zip holds different bytes (same size) than the state hash says
          no_state: true              # completed but no state artifact
          dirty: true                 # state.json dirty: true
          unuploaded_file: "train/c.bin"   # entry with local_path set and artifact_name null
    models:                           # (extension) models.get_all
      - {id: <optional>, name: "resnet50", task: "train-resnet", project: vision, uri: "s3://b/m.pt",
         ready: true, framework: PyTorch, tags: [], system_tags: [], created: "-1d"}
    files:                            # extra objects on the simulator's file server: path -> text content
      "vision/train.abc/artifacts/model/model.pt": "weights"
      "big/blob.bin": {size: 1048576, seed: 7}          # (extension) generated bytes
      "big/chunk.zip": {file: /tmp/bench/chunk.zip}     # (extension) served from this file on disk, read at
                                                        # request time (large objects: no copy in memory)
    faults:                           # server faults (also settable at runtime through SimServer)
      reject_logins: false            # every auth.login -> 401/22
      latency_ms: 0                   # added to every API call
      token_ttl_s: 2592000            # JWT lifetime
      endpoints:                      # per-endpoint failures; names may be fnmatch patterns ("tasks.*")
        "events.get_task_log": {status: 500, subcode: 0, message: "boom", traceback: true, times: null}
        "queues.get_queue_metrics": {html: true, status: 502}     # a proxy's HTML error page (502 default)
        "workers.get_all": {status: 403, subcode: 20, message: "Forbidden (not allowed for role)"}
      fileserver: {enabled: true, fail_uploads: false, fail_deletes: false}
                                      # enabled: false -> the file server port refuses connections
      events: {read_only: false, drop_writes: false}
                                      # read_only: Elasticsearch's flood-stage block (events.add_batch -> 500/100
                                      # "General data error" with cluster_block_exception, clearml#201);
                                      # drop_writes: add_batch acknowledges and stores nothing

Other extensions: a time may also be a number of seconds relative to load time (``-900`` = 15 minutes
ago; the fleet generator uses this because it is fast); ``"{files_url}"`` inside artifact ``uri`` and
``output.destination`` strings is replaced by the simulator's file-server URL; tasks with status ``queued``
and an ``execution.queue`` are appended to that queue's entries when the queue has no explicit ``entries``
list and the task is in no queue yet; a task listed in a queue's ``entries`` without a ``status`` of its own
becomes ``queued`` (with that ``execution.queue``); tasks with the same name and no id get distinct derived
ids (``task:<name>#2``, ...), and a reference by that name means the first of them.
'''

from __future__ import annotations

import difflib
import gc
import hashlib
import io
import json
import random
import re
import urllib.parse
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import yaml

from bot.durations import parse_duration
from bot.errors import BotError
from bot.sim.clock import SimClock, ms_precision
from bot.sim.ep_misc import log_event
from bot.sim.state import (
    DEFAULT_WORKER_TIMEOUT_S,
    TASK_STATUSES,
    TASK_TYPES,
    WATCHDOG_INTERVAL_S,
    WATCHDOG_THRESHOLD_S,
    Credential,
    DiskFile,
    EndpointFault,
    SimState,
    Watchdog,
    derived_id,
)
from bot.yamlload import LocatedDict, LocatedList, YamlKeyError, load_with_lines

SCENARIO_DIR = Path(__file__).parent / "scenarios"
DEFAULT_KEYS: list[tuple[str, str]] = [("SIMDEMOKEY0000000001", "SIMDEMOSECRET00000000000000000000000000000000001")]
DEFAULT_CHUNK_SIZE = 512 * 1024 * 1024
# The web UI's names for task statuses, which scenario authors tend to type.
_UI_STATUS_NAMES = {"draft": "created", "pending": "queued", "running": "in_progress", "runing": "in_progress",
                    "aborted": "stopped", "done": "completed"}
_NO_PARAMS: dict[str, Any] = {}  # shared, never mutated (state writes are copy-on-write)
_NO_ARTIFACTS: list[dict[str, Any]] = []

TOP_KEYS = ("name", "description", "include", "server", "users", "projects", "queues", "workers", "tasks",
            "queue_metrics", "datasets", "models", "files", "faults")
SERVER_KEYS = ("version", "api_version", "keys", "company", "build", "commit", "uid", "watchdog")
WATCHDOG_KEYS = ("enabled", "threshold_sec", "watch_interval_sec")
USER_KEYS = ("id", "name", "role", "email", "given_name", "family_name")
PROJECT_KEYS = ("id", "name", "system_tags", "tags", "description", "user", "created",
                "default_output_destination")
QUEUE_KEYS = ("id", "name", "display_name", "system_tags", "tags", "entries", "created", "user", "metadata")
WORKER_KEYS = ("id", "ip", "queues", "register_time", "last_activity", "last_report", "task", "queue", "tags",
               "system_tags", "user", "register_timeout")
TASK_KEYS = ("id", "name", "project", "type", "status", "status_reason", "status_message", "status_changed",
             "created", "started", "completed", "published", "last_update", "last_change", "last_worker",
             "last_worker_report", "user", "parent", "system_tags", "tags", "comment", "script", "execution",
             "container", "output", "hyperparams", "configuration", "runtime", "last_metrics",
             "last_iteration", "models", "log", "active_duration", "enqueue_status", "last_changed_by",
             "report")
_TASK_KEY_KINDS: dict[str, str] = {
    **{k: "time" for k in ("created", "started", "completed", "published", "status_changed", "last_update",
                           "last_change", "last_worker_report")},
    **{k: "str" for k in ("status_reason", "status_message", "comment", "last_worker", "enqueue_status",
                          "last_changed_by", "report")},
    **{k: "list" for k in ("tags", "system_tags")},
    **{k: "dict" for k in ("script", "container", "hyperparams", "configuration", "runtime", "last_metrics",
                           "models")},
    **{k: "int" for k in ("last_iteration", "active_duration")},
    **{k: "skip" for k in ("id", "name", "project", "type", "status", "user", "parent", "execution", "output",
                           "log")},
}
TASK_TIME_KEYS = ("created", "started", "completed", "published", "status_changed", "last_update",
                  "last_change", "last_worker_report")
ARTIFACT_KEYS = ("key", "type", "mode", "uri", "hash", "content_size", "timestamp", "type_data",
                 "display_data")
DATASET_KEYS = ("id", "name", "project", "version", "status", "last_update", "created", "parents", "files",
                "chunk_size", "faults", "tags", "user")
DATASET_FAULTS = ("missing_chunk", "missing_chunk_file", "corrupt_file", "no_state", "dirty", "unuploaded_file")
MODEL_KEYS = ("id", "name", "task", "project", "uri", "ready", "framework", "tags", "system_tags", "created",
              "last_update", "user", "comment", "design", "labels")
FAULT_KEYS = ("reject_logins", "latency_ms", "token_ttl_s", "endpoints", "fileserver", "events")
EVENTS_FAULT_KEYS = ("read_only", "drop_writes")
ENDPOINT_FAULT_KEYS = ("status", "subcode", "message", "traceback", "html", "times")
FILESERVER_KEYS = ("enabled", "fail_uploads", "fail_deletes")
LOG_KEYS = ("msg", "at", "level", "worker", "iter")


class ScenarioError(BotError):
    """A scenario that cannot be loaded; the message names the file, the line if known, and the key."""


def _read_yaml(path: Path) -> Any:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{source}: cannot read scenario file: {exc.strerror or exc}") from None
    try:
        return load_with_lines(text, source, strict_keys=True, located_lists=True)
    except YamlKeyError as exc:
        raise ScenarioError(str(exc)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ScenarioError(f"{source}{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: invalid YAML: {exc}") from None


def _merge(base: Any, top: Any, top_level: bool) -> Any:
    """Include semantics: the scenario's top-level lists (tasks:, queues:, ...) are concatenated, mappings
    merged recursively, and for anything else `top` (the including file) wins. `top_level` is True for the
    scenario mapping itself."""
    if isinstance(base, dict) and isinstance(top, dict):
        out = LocatedDict(base)
        out.source = getattr(top, "source", getattr(base, "source", "<dict>"))
        out.line = getattr(top, "line", None)
        out.key_lines = {**getattr(base, "key_lines", {}), **getattr(top, "key_lines", {})}
        for key, value in top.items():
            if key not in base:
                out[key] = value
            elif top_level and isinstance(base[key], list) and isinstance(value, list):
                out[key] = _concat(base[key], value)
            else:
                out[key] = _merge(base[key], value, False)
        return out
    return top


def _concat(base: list[Any], top: list[Any]) -> LocatedList:
    out_list = LocatedList([*base, *top])
    out_list.source = getattr(top, "source", "<dict>")
    out_list.line = getattr(top, "line", None)
    out_list.item_lines = [*getattr(base, "item_lines", [None] * len(base)),
                           *getattr(top, "item_lines", [None] * len(top))]
    return out_list


def _load_file(path: Path, stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(p.name for p in (*stack, path))
        raise ScenarioError(f"{stack[-1]}: include cycle: {chain}")
    data = _read_yaml(path)
    if data is None:
        data = LocatedDict()
        data.source, data.line, data.key_lines = str(path), 1, {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}:1: a scenario must be a mapping (name:, tasks:, ...), not "
                            f"{type(data).__name__}")
    includes = data.get("include") or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        _fail(data, "include", "include must be a list of file names")
    merged: dict[str, Any] = LocatedDict()
    for i, name in enumerate(includes):
        if not isinstance(name, str):
            _fail(includes, i, "include entries must be file names", path=f"include[{i}]")
        target = (path.parent / name)
        if not target.exists():
            _fail(data, "include", f"included file {name!r} not found (looked in {path.parent})")
        merged = _merge(merged, _load_file(target, (*stack, path)), True)
    own = LocatedDict({k: v for k, v in data.items() if k != "include"})
    own.source, own.line = getattr(data, "source", str(path)), getattr(data, "line", 1)
    own.key_lines = dict(getattr(data, "key_lines", {}))
    return _merge(merged, own, True) if merged else own


def resolve_scenario_path(name: str | Path) -> Path:
    """A scenario name (shipped in bot/sim/scenarios) or a path to a YAML file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists() or "/" in str(name):
        if not candidate.exists():
            raise ScenarioError(f"{candidate}: scenario file not found")
        return candidate
    shipped = SCENARIO_DIR / f"{name}.yaml"
    if shipped.exists():
        return shipped
    available = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
    hint = difflib.get_close_matches(str(name), available, n=1)
    extra = f"; did you mean {hint[0]!r}?" if hint else ""
    raise ScenarioError(f"unknown scenario {name!r}: not a file and not one of the shipped scenarios "
                        f"({', '.join(available) or 'none'}){extra}")


def load_scenario_data(scenario: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The merged scenario mapping (includes resolved) from a name, a path or a dict."""
    if isinstance(scenario, dict):
        if "include" in scenario:
            raise ScenarioError("<dict>: include: is only supported in scenario files")
        return scenario
    return _load_file(resolve_scenario_path(scenario))


def list_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


# ================================================================================================ errors
def _where(container: Any, key: Any = None) -> str:
    source = getattr(container, "source", "<dict>")
    if key is not None and isinstance(container, LocatedDict) and key in getattr(container, "key_lines", {}):
        file, line = container.key_lines[key]
        return f"{file}:{line}"
    if key is not None and isinstance(container, LocatedList) and isinstance(key, int):
        lines = getattr(container, "item_lines", [])
        if key < len(lines) and lines[key]:
            file, line_no = lines[key]
            return f"{file}:{line_no}"
    line = getattr(container, "line", None)
    return f"{source}:{line}" if line else source


def _fail(container: Any, key: Any, message: str, *, path: str | None = None) -> NoReturn:
    label = path if path is not None else str(key)
    raise ScenarioError(f"{_where(container, key)}: {label}: {message}")


def _check_keys(obj: Any, allowed: Iterable[str], path: str) -> None:
    if not isinstance(obj, dict):
        raise ScenarioError(f"{_where(obj)}: {path}: expected a mapping, got {type(obj).__name__}")
    allowed = tuple(allowed)
    for key in obj:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else f" (allowed: {', '.join(allowed)})"
            _fail(obj, key, f"unknown key {key!r}{extra}", path=f"{path}.{key}" if path else str(key))


def _list(obj: Any, key: str, path: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(obj, key, f"expected a list, got {type(value).__name__}", path=path)
    return value


def _str_list(obj: Any, key: str, path: str) -> list[str]:
    values = _list(obj, key, path)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            _fail(values, i, f"expected a string, got {value!r}", path=f"{path}[{i}]")
    return list(values)


# ================================================================================================ builder
class _Builder:
    """Turns validated scenario data into SimState documents."""

    def __init__(self, data: dict[str, Any], state: SimState, files_url: str,
                 keys: list[tuple[str, str]] | None) -> None:
        self.data = data
        self.state = state
        self.files_url = files_url.rstrip("/")
        self.keys_override = keys
        self.now = state.loaded_at
        self.now_ms = int(state.loaded_at.timestamp() * 1000)
        self.task_names: dict[str, str] = {}
        self.dataset_ids: dict[str, str] = {}
        self.user_names: dict[str, str] = {}
        self.project_names: dict[str, str] = {}
        self.queue_names: dict[str, str] = {}
        self.task_ids: list[str] = []  # scenario task index -> id
        self.explicit_status: set[str] = set()  # tasks whose status the author gave

    # ---------------------------------------------------------------- values
    def offset(self, seconds: float) -> datetime:
        """Load time + seconds, at millisecond precision (exact integer arithmetic, no float drift)."""
        # fromtimestamp rounds to the nearest microsecond, so whole milliseconds stay exact.
        return datetime.fromtimestamp((self.now_ms + int(seconds * 1000)) / 1000, UTC)

    def when(self, container: Any, key: Any, path: str) -> datetime | None:
        value = container.get(key) if isinstance(container, dict) else None
        if value is None:
            return None
        if isinstance(value, bool):
            _fail(container, key, f"{value!r} is not a time (use now, -15m, -2h or an ISO-8601 datetime)",
                  path=path)
        if isinstance(value, int | float):
            return self.offset(value)
        if isinstance(value, datetime):
            return ms_precision(value if value.tzinfo else value.replace(tzinfo=UTC))
        text = str(value).strip()
        if text == "now":
            return ms_precision(self.now)
        if text[:1] in "+-":
            try:
                seconds = parse_duration(text[1:])
            except ValueError:
                _fail(container, key, f"{value!r} is not a relative time (use e.g. -30s, -15m, -2h, -1h30m)",
                      path=path)
            return ms_precision(self.now + timedelta(seconds=seconds if text[0] == "+" else -seconds))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            hint = " (relative times need a sign: -15m)" if re.fullmatch(r"[\d.]+[smhdw].*", text) else ""
            _fail(container, key, f"{value!r} is not a time: use now, -15m, -2h, -3d or ISO-8601{hint}",
                  path=path)
        return ms_precision(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))

    def choice(self, container: Any, key: str, options: tuple[str, ...], path: str, default: str) -> str:
        value = container.get(key, default)
        if value is None:
            return default
        if value not in options:
            ui_name = _UI_STATUS_NAMES.get(str(value).lower()) if key == "status" else None
            hint = [ui_name] if ui_name else difflib.get_close_matches(str(value), options, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else f" (use one of: {', '.join(options)})"
            _fail(container, key, f"{value!r} is not a valid {key}{extra}", path=path)
        return str(value)

    def integer(self, container: Any, key: str, path: str, default: int | None = None) -> int | None:
        value = container.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(container, key, f"expected a number, got {value!r}", path=path)
        return int(value)

    def subst(self, value: Any) -> Any:
        if isinstance(value, str) and "{files_url}" in value:
            return value.replace("{files_url}", self.files_url)
        return value

    def user(self, container: Any, key: str, path: str) -> str:
        ref = container.get(key)
        if ref is None:
            return self.state.default_user["id"]
        ref = str(ref)
        if ref in self.state.users:
            return ref
        if ref in self.user_names:
            return self.user_names[ref]
        _fail(container, key, f"unknown user {ref!r} (declare it under users:)", path=path)

    def project(self, name_or_id: str, *, system_tags: list[str] | None = None) -> str:
        """Project id for a name or id, creating the project (and its parents) when missing."""
        if name_or_id in self.state.projects:
            return name_or_id
        if name_or_id in self.project_names:
            return self.project_names[name_or_id]
        parts = name_or_id.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in self.project_names:
                self.add_project({"name": parent}, "")
        return self.add_project({"name": name_or_id, "system_tags": system_tags or []}, "")

    def add_project(self, spec: dict[str, Any], path: str) -> str:
        name = str(spec["name"])
        pid = str(spec.get("id") or derived_id("project", name))
        created = self.when(spec, "created", f"{path}.created") or ms_precision(self.now)
        self.state.projects[pid] = {
            "id": pid,
            "name": name,
            "basename": name.rsplit("/", 1)[-1],
            "description": str(spec.get("description") or ""),
            "user": self.user(spec, "user", f"{path}.user") if path else self.state.default_user["id"],
            "company": self.state.company["id"],
            "created": created,
            "tags": list(spec.get("tags") or []),
            "system_tags": list(spec.get("system_tags") or []),
            "last_update": created,
        }
        if spec.get("default_output_destination"):
            self.state.projects[pid]["default_output_destination"] = self.subst(spec["default_output_destination"])
        self.project_names[name] = pid
        return pid

    def queue_ref(self, container: Any, key: Any, path: str) -> str:
        ref = container[key]
        if not isinstance(ref, str):
            _fail(container, key, f"expected a queue name or id, got {ref!r}", path=path)
        if ref in self.state.queues:
            return ref
        if ref in self.queue_names:
            return self.queue_names[ref]
        names = list(self.queue_names)
        hint = difflib.get_close_matches(ref, names, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else " (declare it under queues:)"
        _fail(container, key, f"unknown queue {ref!r}{extra}", path=path)

    def task_ref(self, container: Any, key: Any, path: str) -> str:
        ref = container[key]
        if not isinstance(ref, str):
            _fail(container, key, f"expected a task name or id, got {ref!r}", path=path)
        if ref in self.state.tasks:
            return ref
        if ref in self.task_names:
            return self.task_names[ref]
        hint = difflib.get_close_matches(ref, list(self.task_names), n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else " (no task has this id or name)"
        _fail(container, key, f"unknown task {ref!r}{extra}", path=path)

    # ---------------------------------------------------------------- sections
    def build(self) -> None:
        data = self.data
        _check_keys(data, TOP_KEYS, "")
        state = self.state
        state.name = str(data.get("name") or "")
        state.description = str(data.get("description") or "")
        self.server()
        self.users()
        self.credentials()
        for i, spec in enumerate(_list(data, "projects", "projects")):
            path = f"projects[{i}]"
            _check_keys(spec, PROJECT_KEYS, path)
            if not spec.get("name"):
                _fail(spec, "name", "a project needs a name", path=f"{path}.name")
            self.add_project(spec, path)
        self.queues()
        tasks = _list(data, "tasks", "tasks")
        self.tasks(tasks)
        self.datasets()
        self.resolve_task_refs(tasks)
        self.queue_entries()
        self.workers()
        self.models()
        self.queue_metrics()
        self.files()
        self.faults()

    def server(self) -> None:
        server = self.data.get("server") or {}
        _check_keys(server, SERVER_KEYS, "server")
        for key in ("version", "api_version", "build", "commit", "uid"):
            if server.get(key) is not None:
                self.state.server[key] = str(server[key])
        watchdog = server.get("watchdog")
        if watchdog is not None:
            _check_keys(watchdog, WATCHDOG_KEYS, "server.watchdog")
            self.state.configure_watchdog(Watchdog(
                enabled=bool(watchdog.get("enabled", True)),
                threshold_s=float(self.integer(watchdog, "threshold_sec", "server.watchdog.threshold_sec",
                                               WATCHDOG_THRESHOLD_S) or WATCHDOG_THRESHOLD_S),
                interval_s=float(self.integer(watchdog, "watch_interval_sec", "server.watchdog.watch_interval_sec",
                                              WATCHDOG_INTERVAL_S) or WATCHDOG_INTERVAL_S),
            ))
        company = server.get("company")
        if company is not None:
            _check_keys(company, ("id", "name"), "server.company")
            name = str(company.get("name") or "sim")
            self.state.company = {"id": str(company.get("id") or derived_id("company", name)), "name": name}

    def users(self) -> None:
        users = _list(self.data, "users", "users") or [{"name": "Sim User", "role": "admin"}]
        for i, spec in enumerate(users):
            path = f"users[{i}]"
            _check_keys(spec, USER_KEYS, path)
            if not spec.get("name") and not spec.get("id"):
                _fail(users, i, "a user needs a name or an id", path=path)
            name = str(spec.get("name") or spec["id"])
            uid = str(spec.get("id") or derived_id("user", name))
            self.state.users[uid] = {
                "id": uid, "name": name, "role": str(spec.get("role") or "admin"),
                **{k: spec[k] for k in ("email", "given_name", "family_name") if spec.get(k)},
            }
            self.user_names[name] = uid

    def credentials(self) -> None:
        server = self.data.get("server") or {}
        keys = _list(server, "keys", "server.keys") if isinstance(server, dict) else []
        default_user = self.state.default_user["id"]
        if self.keys_override:
            for key, secret in self.keys_override:
                self.state.credentials[key] = Credential(key, secret, default_user)
            return
        if not keys:
            for key, secret in DEFAULT_KEYS:
                self.state.credentials[key] = Credential(key, secret, default_user)
            return
        for i, spec in enumerate(keys):
            path = f"server.keys[{i}]"
            _check_keys(spec, ("key", "secret", "user"), path)
            for field in ("key", "secret"):
                if not isinstance(spec.get(field), str) or not spec[field]:
                    _fail(spec, field, "needs a non-empty string", path=f"{path}.{field}")
            self.state.credentials[spec["key"]] = Credential(spec["key"], spec["secret"],
                                                             self.user(spec, "user", f"{path}.user"))

    def queues(self) -> None:
        for i, spec in enumerate(_list(self.data, "queues", "queues")):
            path = f"queues[{i}]"
            _check_keys(spec, QUEUE_KEYS, path)
            if not spec.get("name"):
                _fail(self.data["queues"], i, "a queue needs a name", path=f"{path}.name")
            name = str(spec["name"])
            if name in self.queue_names:
                _fail(spec, "name", f"duplicate queue name {name!r}", path=f"{path}.name")
            qid = str(spec.get("id") or derived_id("queue", name))
            created = self.when(spec, "created", f"{path}.created") or ms_precision(self.now)
            queue: dict[str, Any] = {
                "id": qid, "name": name, "user": self.user(spec, "user", f"{path}.user"),
                "company": self.state.company["id"], "created": created,
                "tags": _str_list(spec, "tags", f"{path}.tags"),
                "system_tags": _str_list(spec, "system_tags", f"{path}.system_tags"),
                "entries": [], "metadata": dict(spec.get("metadata") or {}), "last_update": created,
            }
            if spec.get("display_name"):
                queue["display_name"] = str(spec["display_name"])
            self.state.queues[qid] = queue
            self.queue_names[name] = qid

    def tasks(self, tasks: list[Any]) -> None:
        """Task documents; one pass over each spec's keys, since fleets have 200,000 of them."""
        state = self.state
        statuses, types = frozenset(TASK_STATUSES), frozenset(TASK_TYPES)
        kinds = _TASK_KEY_KINDS
        for i, spec in enumerate(tasks):
            if not isinstance(spec, dict):
                _fail(tasks, i, f"expected a mapping, got {type(spec).__name__}", path=f"tasks[{i}]")
            name = spec.get("name")
            if not isinstance(name, str) or not name:
                _fail(spec if "name" in spec else tasks, "name" if "name" in spec else i,
                      "a task needs a name", path=f"tasks[{i}].name")
            doc: dict[str, Any] = {"id": None, "name": name, "type": "training", "status": "created"}
            times: dict[str, datetime] = {}
            for key, value in spec.items():
                kind = kinds.get(key)
                if kind is None:
                    _check_keys(spec, TASK_KEYS, f"tasks[{i}]")
                if value is None or kind == "skip":
                    continue
                if kind == "time":
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        times[key] = self.offset(value)
                    else:
                        when = self.when(spec, key, f"tasks[{i}].{key}")
                        if when is not None:
                            times[key] = when
                elif kind == "str":
                    doc[key] = value if isinstance(value, str) else str(value)
                elif kind == "list":
                    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                        _str_list(spec, key, f"tasks[{i}].{key}")
                        _fail(spec, key, "expected a list of strings", path=f"tasks[{i}].{key}")
                    doc[key] = value
                elif kind == "dict":
                    if not isinstance(value, dict):
                        _fail(spec, key, f"expected a mapping, got {type(value).__name__}",
                              path=f"tasks[{i}].{key}")
                    doc[key] = value
                elif kind == "int":
                    doc[key] = self.integer(spec, key, f"tasks[{i}].{key}")
            status = spec.get("status", "created")
            if status not in statuses:
                status = self.choice(spec, "status", TASK_STATUSES, f"tasks[{i}].status", "created")
            doc["status"] = status
            ttype = spec.get("type", "training")
            if ttype not in types:
                ttype = self.choice(spec, "type", TASK_TYPES, f"tasks[{i}].type", "training")
            doc["type"] = ttype
            tid = spec.get("id")
            if tid is None:
                tid = derived_id("task", name)
                n = 2
                while tid in state.tasks:  # duplicate names without ids: keep them distinct
                    tid = derived_id("task", f"{name}#{n}")
                    n += 1
            elif not isinstance(tid, str) or not tid:
                _fail(spec, "id", f"expected an id string, got {tid!r}", path=f"tasks[{i}].id")
            elif tid in state.tasks:
                _fail(spec, "id", f"duplicate task id {tid!r}", path=f"tasks[{i}].id")
            doc["id"] = tid
            self.fill_times(doc, times, status)
            user = spec.get("user")
            doc["user"] = user if user in state.users else self.user(spec, "user", f"tasks[{i}].user")
            project = spec.get("project")
            if project is not None:
                if not isinstance(project, str):
                    _fail(spec, "project", f"expected a project name or id, got {project!r}",
                          path=f"tasks[{i}].project")
                doc["project"] = project if project in state.projects else self.project(project)
            if "active_duration" not in doc and "started" in doc:
                end = self.now if status == "in_progress" else doc.get("completed")
                if end is not None:
                    doc["active_duration"] = max(0, int((end - doc["started"]).total_seconds()))
            if spec.get("execution") is not None:
                doc["execution"] = self.execution(spec, f"tasks[{i}]")
            output = spec.get("output")
            if output is not None:
                if not isinstance(output, dict):
                    _fail(spec, "output", "expected a mapping", path=f"tasks[{i}].output")
                if any(isinstance(v, str) and "{files_url}" in v for v in output.values()):
                    output = {k: self.subst(v) for k, v in output.items()}
                doc["output"] = output
            state.add_task(doc)
            self.task_ids.append(tid)
            if "status" in spec:
                self.explicit_status.add(tid)
            self.task_names.setdefault(name, tid)
            if spec.get("log"):
                self.task_log(spec, f"tasks[{i}]", doc)

    def fill_times(self, doc: dict[str, Any], times: dict[str, datetime], status: str) -> None:
        now = ms_precision(self.now)
        created = times.get("created") or (min(times.values()) if times else now)
        doc["created"] = created
        started = times.get("started")
        if started is None and status in ("in_progress",):
            started = times.get("status_changed") or created
        if started is not None:
            doc["started"] = started
        if times.get("completed"):
            doc["completed"] = times["completed"]
        if times.get("published"):
            doc["published"] = times["published"]
        doc["status_changed"] = times.get("status_changed") or times.get("completed") or started or created
        if times.get("last_worker_report"):
            doc["last_worker_report"] = times["last_worker_report"]
        doc["last_update"] = times.get("last_update") or max(times.values(), default=created)
        doc["last_change"] = times.get("last_change") or doc["last_update"]

    def execution(self, spec: dict[str, Any], path: str) -> dict[str, Any]:
        execution = spec["execution"]
        if not isinstance(execution, dict):
            _fail(spec, "execution", "expected a mapping", path=f"{path}.execution")
        queue = execution.get("queue")
        if len(execution) == 1 and isinstance(queue, str) and queue in self.state.queues:
            # The fleet's common case: {queue: <id>}; share the empty blocks.
            return {"queue": queue, "parameters": _NO_PARAMS, "artifacts": _NO_ARTIFACTS}
        out = {k: v for k, v in execution.items() if k not in ("queue", "artifacts")}
        out.setdefault("parameters", {})
        if queue is not None:
            out["queue"] = self.queue_ref(execution, "queue", f"{path}.execution.queue")
        artifacts = execution.get("artifacts") or []
        if isinstance(artifacts, dict):  # keyed by name, as Mongo stores them
            artifacts = [{"key": k, **(v or {})} for k, v in artifacts.items()]
        if not isinstance(artifacts, list):
            _fail(execution, "artifacts", "expected a list of artifacts", path=f"{path}.execution.artifacts")
        rendered = []
        for j, art in enumerate(artifacts):
            apath = f"{path}.execution.artifacts[{j}]"
            _check_keys(art, ARTIFACT_KEYS, apath)
            if not art.get("key"):
                _fail(artifacts, j, "an artifact needs a key", path=f"{apath}.key")
            item = {k: self.subst(v) for k, v in art.items()}
            item.setdefault("mode", "output")
            item.setdefault("type", "custom")
            if art.get("timestamp") is not None and not isinstance(art["timestamp"], int):
                stamp = self.when(art, "timestamp", f"{apath}.timestamp")
                item["timestamp"] = int(stamp.timestamp()) if stamp else None
            rendered.append(item)
        out["artifacts"] = sorted(rendered, key=lambda a: str(a["key"]))
        return out

    def task_log(self, spec: dict[str, Any], path: str, doc: dict[str, Any]) -> None:
        lines = spec["log"]
        if not isinstance(lines, list):
            _fail(spec, "log", "expected a list of lines", path=f"{path}.log")
        previous: datetime = doc.get("started") or doc["created"]
        previous -= timedelta(seconds=1)
        now = self.now
        events = []
        for j, line in enumerate(lines):
            lpath = f"{path}.log[{j}]"
            if isinstance(line, str):
                entry: dict[str, Any] = {"msg": line}
            elif isinstance(line, dict):
                _check_keys(line, LOG_KEYS, lpath)
                entry = dict(line)
                if "msg" not in entry:
                    _fail(lines, j, "a log entry needs msg", path=f"{lpath}.msg")
            else:
                _fail(lines, j, f"expected a string or a mapping, got {line!r}", path=lpath)
            at = self.when(line, "at", f"{lpath}.at") if isinstance(line, dict) else None
            if at is None:
                at = min(previous + timedelta(seconds=1), now)
            previous = at
            events.append(log_event(doc["id"], int(at.timestamp() * 1000), str(entry["msg"]),
                                    str(entry.get("level") or "info"),
                                    str(entry.get("worker") or doc.get("last_worker") or ""),
                                    int(entry.get("iter") or 0)))
        events.sort(key=lambda e: e["timestamp"])
        self.state.events[doc["id"]] = events

    def resolve_task_refs(self, tasks: list[Any]) -> None:
        """Second pass: references between tasks (parent, models) once every task has its id."""
        for i, spec in enumerate(tasks):
            if spec.get("parent"):
                tid = self.task_ids[i]
                self.state.tasks[tid]["parent"] = self.task_ref(spec, "parent", f"tasks[{i}].parent")

    def queue_entries(self) -> None:
        explicit: set[str] = set()
        placed: set[str] = set()
        for i, spec in enumerate(_list(self.data, "queues", "queues")):
            if "entries" not in spec:
                continue
            qid = self.queue_names[str(spec["name"])]
            explicit.add(qid)
            entries = _list(spec, "entries", f"queues[{i}].entries")
            queue = self.state.queues[qid]
            for j, entry in enumerate(entries):
                epath = f"queues[{i}].entries[{j}]"
                if isinstance(entry, str):
                    task_id = self.task_ref(entries, j, epath)
                    added = None
                else:
                    _check_keys(entry, ("task", "added"), epath)
                    if "task" not in entry:
                        _fail(entries, j, "an entry needs a task", path=f"{epath}.task")
                    task_id = self.task_ref(entry, "task", f"{epath}.task")
                    added = self.when(entry, "added", f"{epath}.added")
                doc = self.state.tasks[task_id]
                if added is None:
                    added = doc.get("status_changed") or ms_precision(self.now)
                queue["entries"].append({"task": task_id, "added": added})
                placed.add(task_id)
                if "execution" not in doc or "queue" not in doc["execution"]:
                    self.state.update_task(task_id, {"execution.queue": qid})
                if doc.get("status") == "created" and task_id not in self.explicit_status:
                    self.state.update_task(task_id, {"status": "queued", "enqueue_status": "created"})
        for task_id in list(self.state.task_ids_for("status", ["queued"])):
            doc = self.state.tasks[task_id]
            qid = (doc.get("execution") or {}).get("queue")
            if task_id in placed or not qid or qid in explicit or qid not in self.state.queues:
                continue
            self.state.queues[qid]["entries"].append(
                {"task": task_id, "added": doc.get("status_changed") or ms_precision(self.now)})
        for queue in self.state.queues.values():
            if queue["entries"]:
                queue["last_update"] = max(e["added"] for e in queue["entries"])

    def workers(self) -> None:
        state = self.state
        for i, spec in enumerate(_list(self.data, "workers", "workers")):
            path = f"workers[{i}]"
            _check_keys(spec, WORKER_KEYS, path)
            if not spec.get("id"):
                _fail(self.data["workers"], i, "a worker needs an id (e.g. gpu-box-1:gpu0)", path=f"{path}.id")
            wid = str(spec["id"])
            user = self.user(spec, "user", f"{path}.user")
            last_report = self.when(spec, "last_report", f"{path}.last_report")
            last_activity = self.when(spec, "last_activity", f"{path}.last_activity") or last_report or self.now
            register_time = self.when(spec, "register_time", f"{path}.register_time") or last_activity
            queues = []
            for j, _ref in enumerate(_list(spec, "queues", f"{path}.queues")):
                queues.append(self.queue_ref(spec["queues"], j, f"{path}.queues[{j}]"))
            worker: dict[str, Any] = {
                "id": wid, "key": state.worker_key(user, wid), "user": user,
                "ip": str(spec.get("ip") or "127.0.0.1"), "register_time": register_time,
                "register_timeout": self.integer(spec, "register_timeout", f"{path}.register_timeout",
                                                 DEFAULT_WORKER_TIMEOUT_S),
                "last_activity_time": last_activity, "last_report_time": last_report, "queues": queues,
                "tags": _str_list(spec, "tags", f"{path}.tags"),
                "system_tags": _str_list(spec, "system_tags", f"{path}.system_tags"),
                "task": None, "queue": None,
            }
            if spec.get("task"):
                task_id = self.task_ref(spec, "task", f"{path}.task")
                worker["task"] = task_id
                doc = state.tasks[task_id]
                updates: dict[str, Any] = {}
                if not doc.get("last_worker"):
                    updates["last_worker"] = wid
                if not doc.get("last_worker_report") and last_report:
                    updates["last_worker_report"] = ms_precision(last_report)
                if updates:
                    state.update_task(task_id, updates)
                worker["queue"] = (doc.get("execution") or {}).get("queue")
            if spec.get("queue"):
                worker["queue"] = self.queue_ref(spec, "queue", f"{path}.queue")
            if (user, wid) in state.workers:
                _fail(spec, "id", f"duplicate worker id {wid!r}", path=f"{path}.id")
            state.workers[(user, wid)] = worker

    def models(self) -> None:
        for i, spec in enumerate(_list(self.data, "models", "models")):
            path = f"models[{i}]"
            _check_keys(spec, MODEL_KEYS, path)
            if not spec.get("name"):
                _fail(self.data["models"], i, "a model needs a name", path=f"{path}.name")
            mid = str(spec.get("id") or derived_id("model", str(spec["name"])))
            created = self.when(spec, "created", f"{path}.created") or ms_precision(self.now)
            model: dict[str, Any] = {
                "id": mid, "name": str(spec["name"]), "user": self.user(spec, "user", f"{path}.user"),
                "company": self.state.company["id"], "created": created,
                "last_update": self.when(spec, "last_update", f"{path}.last_update") or created,
                "uri": self.subst(spec.get("uri") or ""), "ready": bool(spec.get("ready", True)),
                "framework": spec.get("framework") or "", "comment": spec.get("comment") or "",
                "tags": _str_list(spec, "tags", f"{path}.tags"),
                "system_tags": _str_list(spec, "system_tags", f"{path}.system_tags"),
            }
            if spec.get("task"):
                model["task"] = self.task_ref(spec, "task", f"{path}.task")
            if spec.get("project"):
                model["project"] = self.project(str(spec["project"]))
            for key in ("design", "labels"):
                if spec.get(key) is not None:
                    model[key] = spec[key]
            self.state.models[mid] = model

    def queue_metrics(self) -> None:
        metrics = self.data.get("queue_metrics") or {}
        if not isinstance(metrics, dict):
            _fail(self.data, "queue_metrics", "expected a mapping of queue name -> series")
        for name in metrics:
            path = f"queue_metrics.{name}"
            qid = self._queue_key(metrics, name, path)
            series = metrics[name]
            _check_keys(series, ("interval", "avg_waiting_times", "queue_lengths"), path)
            waits = _list(series, "avg_waiting_times", f"{path}.avg_waiting_times")
            lengths = _list(series, "queue_lengths", f"{path}.queue_lengths")
            if len(waits) != len(lengths) or not waits:
                _fail(series, "queue_lengths", "avg_waiting_times and queue_lengths need the same, non-zero "
                      "number of points", path=f"{path}.queue_lengths")
            for key, values in (("avg_waiting_times", waits), ("queue_lengths", lengths)):
                for j, value in enumerate(values):
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        _fail(values, j, f"expected a number, got {value!r}", path=f"{path}.{key}[{j}]")
            interval = self.integer(series, "interval", f"{path}.interval", 300) or 300
            self.state.queue_metrics[qid] = {
                "interval": interval, "avg_waiting_times": list(waits), "queue_lengths": list(lengths),
                "anchor": self.now.timestamp(),
            }

    def _queue_key(self, metrics: dict[str, Any], name: str, path: str) -> str:
        if name in self.state.queues:
            return name
        if name in self.queue_names:
            return self.queue_names[name]
        hint = difflib.get_close_matches(str(name), list(self.queue_names), n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else " (declare it under queues:)"
        _fail(metrics, name, f"unknown queue {name!r}{extra}", path=path)

    def files(self) -> None:
        files = self.data.get("files") or {}
        if not isinstance(files, dict):
            _fail(self.data, "files", "expected a mapping of path -> content")
        for path_key, content in files.items():
            path = str(path_key).lstrip("/")
            if isinstance(content, dict) and "file" in content:
                _check_keys(content, ("file",), f"files.{path_key}")
                disk = Path(str(content["file"])).expanduser()
                if not disk.is_absolute() or not disk.is_file():
                    _fail(content, "file", f"{content['file']!r} is not an existing file (give an absolute path)",
                          path=f"files.{path_key}.file")
                self.state.files[path] = DiskFile(str(disk))
                continue
            self.state.files[path] = self.content(files, path_key, content, f"files.{path_key}")

    def content(self, container: Any, key: Any, value: Any, path: str) -> bytes:
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, dict):
            _check_keys(value, ("content", "size", "seed"), path)
            if value.get("content") is not None:
                return str(value["content"]).encode()
            size = self.integer(value, "size", f"{path}.size")
            if size is None or size < 0:
                _fail(value, "size", "give content or a size (bytes) and a seed", path=f"{path}.size")
            return random.Random(self.integer(value, "seed", f"{path}.seed", 0)).randbytes(size)
        _fail(container, key, f"expected text or {{size, seed}}, got {type(value).__name__}", path=path)

    def faults(self) -> None:
        faults = self.data.get("faults") or {}
        _check_keys(faults, FAULT_KEYS, "faults")
        target = self.state.faults
        if faults.get("reject_logins") is not None:
            target.reject_logins = bool(faults["reject_logins"])
        if faults.get("latency_ms") is not None:
            target.latency_ms = float(self.integer(faults, "latency_ms", "faults.latency_ms") or 0)
        if faults.get("token_ttl_s") is not None:
            target.token_ttl_s = self.integer(faults, "token_ttl_s", "faults.token_ttl_s") or 2592000
        endpoints = faults.get("endpoints") or {}
        if not isinstance(endpoints, dict):
            _fail(faults, "endpoints", "expected a mapping of endpoint name -> fault", path="faults.endpoints")
        for name, spec in endpoints.items():
            path = f"faults.endpoints.{name}"
            if not re.fullmatch(r"[\w*?\[\]]+\.[\w*?\[\]]+|\*", str(name)):
                _fail(endpoints, name, f"{name!r} is not an endpoint name like tasks.get_all", path=path)
            spec = spec or {}
            _check_keys(spec, ENDPOINT_FAULT_KEYS, path)
            html = bool(spec.get("html"))
            target.endpoints[str(name)] = EndpointFault(
                status=self.integer(spec, "status", f"{path}.status", 502 if html else 500) or 500,
                subcode=self.integer(spec, "subcode", f"{path}.subcode", 0) or 0,
                message=str(spec["message"]) if spec.get("message") is not None else None,
                traceback=bool(spec.get("traceback")), html=html,
                times=self.integer(spec, "times", f"{path}.times", None),
            )
        events = faults.get("events") or {}
        _check_keys(events, EVENTS_FAULT_KEYS, "faults.events")
        target.events_read_only = bool(events.get("read_only", False))
        target.events_drop_writes = bool(events.get("drop_writes", False))
        fileserver = faults.get("fileserver") or {}
        _check_keys(fileserver, FILESERVER_KEYS, "faults.fileserver")
        target.fileserver_enabled = bool(fileserver.get("enabled", True))
        target.fail_uploads = bool(fileserver.get("fail_uploads", False))
        target.fail_deletes = bool(fileserver.get("fail_deletes", False))

    # ---------------------------------------------------------------- datasets
    def datasets(self) -> None:
        specs = _list(self.data, "datasets", "datasets")
        if not specs:
            return
        planned: list[tuple[int, dict[str, Any], str]] = []
        by_ref: dict[str, str] = {}
        for i, spec in enumerate(specs):
            path = f"datasets[{i}]"
            _check_keys(spec, DATASET_KEYS, path)
            for key in ("name", "project"):
                if not isinstance(spec.get(key), str) or not spec[key]:
                    _fail(spec if key in spec else specs, key if key in spec else i, f"a dataset needs a {key}",
                          path=f"{path}.{key}")
            version = str(spec.get("version") or "1.0.0")
            did = str(spec.get("id") or derived_id("dataset", f"{spec['project']}/{spec['name']}@{version}"))
            if did in self.state.tasks:
                _fail(spec, "id", f"duplicate dataset/task id {did!r}", path=f"{path}.id")
            planned.append((i, spec, did))
            by_ref[did] = did
            by_ref[f"{spec['name']}@{version}"] = did
            by_ref[str(spec["name"])] = did  # the last one declared wins
        parents_of: dict[str, list[str]] = {}
        for i, spec, did in planned:
            refs = _str_list(spec, "parents", f"datasets[{i}].parents")
            resolved = []
            for j, ref in enumerate(refs):
                if ref not in by_ref:
                    _fail(spec["parents"], j, f"unknown dataset {ref!r} (use an id, name@version or name)",
                          path=f"datasets[{i}].parents[{j}]")
                if by_ref[ref] == did:
                    _fail(spec["parents"], j, "a dataset cannot be its own parent", path=f"datasets[{i}].parents[{j}]")
                resolved.append(by_ref[ref])
            parents_of[did] = resolved
        done: dict[str, dict[str, Any]] = {}
        order: list[tuple[int, dict[str, Any], str]] = []
        visiting: set[str] = set()
        by_id = {did: (i, spec, did) for i, spec, did in planned}

        def visit(did: str) -> None:
            if did in done or any(did == o[2] for o in order):
                return
            if did in visiting:
                i, spec, _ = by_id[did]
                _fail(spec, "parents", "parents form a cycle", path=f"datasets[{i}].parents")
            visiting.add(did)
            for parent in parents_of[did]:
                visit(parent)
            visiting.discard(did)
            order.append(by_id[did])

        for _, _, did in planned:
            visit(did)
        for i, spec, did in order:
            done[did] = self.dataset(i, spec, did, parents_of, done)

    def dataset(self, index: int, spec: dict[str, Any], did: str, parents_of: dict[str, list[str]],
                done: dict[str, dict[str, Any]]) -> dict[str, Any]:
        path = f"datasets[{index}]"
        name, base_project = str(spec["name"]), str(spec["project"])
        version = str(spec.get("version") or "1.0.0")
        status = self.choice(spec, "status", ("in_progress", "completed", "published", "stopped", "failed",
                                               "created", "closed"), f"{path}.status", "completed")
        faults = spec.get("faults") or {}
        _check_keys(faults, DATASET_FAULTS, f"{path}.faults")
        chunk_size = self.integer(spec, "chunk_size", f"{path}.chunk_size", DEFAULT_CHUNK_SIZE) or DEFAULT_CHUNK_SIZE
        self.project(base_project)
        self.project(f"{base_project}/.datasets", system_tags=["hidden"])
        project_name = f"{base_project}/.datasets/{name}"
        project_id = self.project(project_name, system_tags=["hidden", "dataset"])
        self.state.projects[project_id]["system_tags"] = ["hidden", "dataset"]
        self.state.projects[self.project_names[f"{base_project}/.datasets"]]["system_tags"] = ["hidden"]

        own: dict[str, bytes] = {}
        files = _list(spec, "files", f"{path}.files")
        for j, entry in enumerate(files):
            fpath = f"{path}.files[{j}]"
            _check_keys(entry, ("path", "content", "size", "seed"), fpath)
            if not isinstance(entry.get("path"), str) or not entry["path"]:
                _fail(files, j, "a file needs a path", path=f"{fpath}.path")
            own[entry["path"].lstrip("/")] = self.content(files, j, {k: v for k, v in entry.items() if k != "path"},
                                                          fpath)
        unuploaded = faults.get("unuploaded_file")
        if unuploaded and unuploaded not in own:
            own[str(unuploaded)] = random.Random(0).randbytes(1024)
        corrupt = faults.get("corrupt_file")
        if corrupt and corrupt not in own:
            _fail(faults, "corrupt_file", f"{corrupt!r} is not one of this dataset's files",
                  path=f"{path}.faults.corrupt_file")

        inherited: dict[str, dict[str, Any]] = {}
        graph: dict[str, list[str]] = {did: list(parents_of[did])}
        compressed_parents = 0
        for parent in parents_of[did]:
            info = done[parent]
            inherited.update(info["entries"])
            graph.update(info["graph"])
            compressed_parents += info["compressed"]
        chunk_counts = {d: done[d]["chunks"] for d in graph if d in done}

        task_url = (f"{self.files_url}/{urllib.parse.quote(project_name)}/"
                    f"{urllib.parse.quote(name)}.{did}/artifacts")
        store_prefix = f"{project_name}/{name}.{did}/artifacts"
        last_update = self.when(spec, "last_update", f"{path}.last_update") or ms_precision(self.now)
        created = self.when(spec, "created", f"{path}.created") or ms_precision(last_update - timedelta(minutes=10))
        stamp = int(last_update.timestamp())

        # Zip the dataset's own (uploaded) files into chunks of about chunk_size bytes.
        chunks: list[list[str]] = []
        current: list[str] = []
        current_size = 0
        for rel in sorted(own):
            if rel == unuploaded:
                continue
            if current and current_size + len(own[rel]) > chunk_size:
                chunks.append(current)
                current, current_size = [], 0
            current.append(rel)
            current_size += len(own[rel])
        if current:
            chunks.append(current)
        entries: dict[str, dict[str, Any]] = dict(inherited)
        artifacts: list[dict[str, Any]] = []
        compressed = 0
        for n, members in enumerate(chunks):
            artifact = "data" if n == 0 else f"data_{n:03d}"
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for rel in members:
                    content = own[rel]
                    if rel == corrupt:  # same size, different bytes: only a hash check notices
                        content = bytes(b ^ 0xFF for b in content) if content else b"\x00"
                    info = zipfile.ZipInfo(rel, date_time=(2024, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, content)
            blob = buffer.getvalue()
            compressed += len(blob)
            zip_name = f"dataset.{did}.{derived_id('zip', f'{did}/{artifact}')[:8]}.zip"
            if faults.get("missing_chunk_file") != artifact:
                self.state.files[f"{store_prefix}/{artifact}/{zip_name}"] = blob
            if faults.get("missing_chunk") != artifact:
                artifacts.append({
                    "key": artifact, "type": "custom", "mode": "output",
                    "uri": f"{task_url}/{artifact}/{zip_name}", "hash": hashlib.sha256(blob).hexdigest(),
                    "content_size": len(blob), "timestamp": stamp,
                    "type_data": {"preview": "\n".join(members) + "\n", "content_type": "application/zip"},
                    "display_data": [],
                })
            for rel in members:
                entries[rel] = {"relative_path": rel, "hash": hashlib.sha256(own[rel]).hexdigest(),
                                "parent_dataset_id": did, "size": len(own[rel]), "artifact_name": artifact}
        if unuploaded:
            entries[str(unuploaded)] = {
                "relative_path": str(unuploaded), "hash": hashlib.sha256(own[str(unuploaded)]).hexdigest(),
                "parent_dataset_id": did, "size": len(own[str(unuploaded)]), "artifact_name": None,
                "local_path": f"/tmp/dataset_upload/{name}/{unuploaded}",
            }
        chunk_counts[did] = len(chunks)
        added = sum(1 for rel in own if rel not in inherited)
        modified = sum(1 for rel in own if rel in inherited)
        total_size = sum(e["size"] for e in entries.values())
        state_doc: dict[str, Any] = {
            "file_count": len(entries),
            "total_size": total_size,
            "dataset_file_entries": [entries[k] for k in sorted(entries)],
            "dataset_link_entries": [],
            "dependency_graph": graph,
            "id": did,
            "dirty": bool(faults.get("dirty")),
        }
        if status in ("completed", "published", "closed"):
            state_doc["dependency_chunk_lookup"] = chunk_counts
        if not faults.get("no_state"):
            blob = json.dumps(state_doc, indent=4, sort_keys=True).encode()
            self.state.files[f"{store_prefix}/state/state.json"] = blob
            artifacts.append({
                "key": "state", "type": "dict", "mode": "output", "uri": f"{task_url}/state/state.json",
                "hash": hashlib.sha256(blob).hexdigest(), "content_size": len(blob), "timestamp": stamp,
                "type_data": {
                    "preview": (f"Dataset state\nFiles added/modified: {added + modified} - total size "
                                f"{total_size} B\nCurrent dependency graph: {json.dumps(graph, indent=2)}\n"),
                    "content_type": "application/json",
                },
                "display_data": [["files added", str(added)], ["files modified", str(modified)],
                                 ["files removed", "0"]],
            })
        own_size = sum(len(v) for v in own.values())
        doc: dict[str, Any] = {
            "id": did, "name": name, "type": "data_processing", "status": status,
            "user": self.user(spec, "user", f"{path}.user"), "project": project_id,
            "created": created, "started": created, "status_changed": last_update, "last_update": last_update,
            "last_change": last_update, "system_tags": ["dataset"],
            "tags": _str_list(spec, "tags", f"{path}.tags"),
            "execution": {"parameters": {}, "artifacts": sorted(artifacts, key=lambda a: a["key"])},
            "output": {"destination": self.files_url},
            "runtime": {
                "version": version, "ds_file_count": len(entries), "ds_link_count": 0,
                "ds_total_size": total_size, "ds_total_size_compressed": compressed + compressed_parents,
                "ds_change_add": added, "ds_change_remove": 0, "ds_change_modify": modified,
                "ds_change_size": own_size,
            },
            "configuration": {"Dataset Struct": _dataset_struct(self.state, did, name, version, status,
                                                                last_update, total_size, graph)},
        }
        if status not in ("in_progress", "created"):
            doc["completed"] = last_update
        if status == "published":
            doc["published"] = last_update
        if parents_of[did]:
            doc["parent"] = parents_of[did][-1]
        self.state.add_task(doc)
        self.task_names.setdefault(name, did)
        return {"entries": {k: v for k, v in entries.items() if v.get("artifact_name")}, "graph": graph,
                "compressed": compressed + compressed_parents, "chunks": len(chunks)}


def _dataset_struct(state: SimState, did: str, name: str, version: str, status: str, last_update: datetime,
                    total_size: int, graph: dict[str, list[str]]) -> dict[str, Any]:
    """The "Dataset Struct" configuration object the SDK writes on every version (Dataset._report_dataset_struct)
    and reads back to repair a dependency graph: one node per version in the lineage, parents by node index."""
    ids = list(reversed(list(graph)))  # the SDK pops its graph dict from the end
    index = {vid: str(i) for i, vid in enumerate(ids)}
    nodes: dict[str, Any] = {}
    for vid in ids:
        doc = state.tasks.get(vid) or {}
        runtime = doc.get("runtime") or {}
        updated = doc.get("last_update") if vid != did else last_update
        nodes[index[vid]] = {
            "job_id": vid, "status": doc.get("status", status) if vid != did else status,
            "last_update": int(updated.timestamp()) if isinstance(updated, datetime) else None,
            "parents": [index[p] for p in graph.get(vid, []) if p in index],
            "job_size": runtime.get("ds_total_size") if vid != did else total_size,
            "name": doc.get("name", name) if vid != did else name,
            "version": runtime.get("version") if vid != did else version,
        }
    return {"name": "Dataset Struct", "value": json.dumps(nodes, indent=2), "type": "json",
            "description": "Structure of the dataset"}


def build_state(
    scenario: str | Path | dict[str, Any],
    clock: SimClock,
    *,
    files_url: str = "http://127.0.0.1:8081",
    keys: list[tuple[str, str]] | None = None,
) -> SimState:
    """Load (if needed), validate and materialize a scenario into a fresh SimState."""
    data = load_scenario_data(scenario)
    state = SimState(clock)
    # Hundreds of thousands of new dicts would trigger many useless cyclic-GC passes.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _Builder(data, state, files_url, keys).build()
    finally:
        if was_enabled:
            gc.enable()
    return state
