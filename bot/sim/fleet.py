"""Large, realistic fleets for benchmarks: `generate_fleet(workers, queues, tasks, seed)` returns a scenario
dict (the same structure as a scenario file) that SimServer loads in seconds.

The mix: mostly finished history (completed, failed, stopped, published, some archived), a few drafts, a
backlog of queued tasks concentrated on a minority of queues, in-progress tasks on live workers, a few
stale workers (listed, but silent for minutes), dead workers whose registration has expired, and orphaned
in-progress tasks whose worker is gone. Times are numeric offsets in seconds (negative = past), which the
loader parses much faster than "-15m" strings. Nested blocks (script, container, hyperparams) are shared
between the tasks of a project, so 200,000 tasks fit in a few hundred MB.
"""

from __future__ import annotations

import random
from typing import Any

DAY = 86400.0


def _hex_id(kind: int, seed: int, n: int) -> str:
    return f"{kind:02x}{seed & 0xFFFFFF:06x}{n:024x}"


def parse_fleet_spec(text: str) -> dict[str, int]:
    """`workers=2000,queues=300,tasks=200000` -> keyword arguments for generate_fleet."""
    out: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("workers", "queues", "tasks", "seed"):
            raise ValueError(f"bad fleet item {part!r}: use workers=N,queues=N,tasks=N[,seed=N]")
        try:
            out[key] = int(value.strip())
        except ValueError:
            raise ValueError(f"bad fleet item {part!r}: {value.strip()!r} is not an integer") from None
        if out[key] < 0:
            raise ValueError(f"bad fleet item {part!r}: must not be negative")
    return out


def generate_fleet(workers: int = 2000, queues: int = 300, tasks: int = 200000, seed: int = 0) -> dict[str, Any]:
    """A scenario dict with the given numbers of workers, queues and tasks (deterministic for a seed)."""
    rng = random.Random(seed)
    queues = max(1, queues)
    users = [{"id": _hex_id(1, seed, i), "name": f"user{i:02d}", "role": "user"} for i in range(20)]
    users[0]["role"] = "admin"
    user_ids = [u["id"] for u in users]

    n_projects = max(3, min(200, tasks // 1000 or 3))
    projects = [{"id": _hex_id(2, seed, i), "name": f"team{i % 10}/project{i:03d}"} for i in range(n_projects)]
    templates = []
    for i, proj in enumerate(projects):
        templates.append({
            "script": {
                "repository": f"https://github.com/acme/{proj['name'].replace('/', '-')}.git",
                "branch": "main", "version_num": f"{rng.getrandbits(160):040x}", "entry_point": "train.py",
                "working_dir": ".", "binary": rng.choice(["python3.10", "python3.11"]),
                "requirements": {"pip": "torch==2.3.0\nnumpy==1.26.4\n"}, "diff": "",
            },
            "container": {"image": "nvidia/cuda:12.1-runtime", "arguments": "", "setup_shell_script": ""}
            if i % 3 == 0 else {},
            "hyperparams": {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.01", "type": "float"}}},
            "output": {"destination": f"s3://ml-artifacts/{proj['name']}"},
        })

    queue_specs: list[dict[str, Any]] = []
    for i in range(queues):
        if i == 0:
            name, system_tags = "default", ["default"]
        elif i == 1:
            name, system_tags = "services", []
        else:
            name, system_tags = f"{'gpu' if i % 3 else 'cpu'}-pool-{i:03d}", []
        queue_specs.append({"id": _hex_id(3, seed, i), "name": name, "system_tags": system_tags,
                            "created": -90 * DAY})
    queue_ids = [q["id"] for q in queue_specs]
    # A minority of queues carries most of the backlog.
    hot = queue_ids[: max(1, queues // 10)]

    worker_specs: list[dict[str, Any]] = []
    live_busy: list[int] = []
    dead: list[str] = []
    for i in range(workers):
        host = f"node{i // 4:04d}"
        wid = f"{host}:gpu{i % 4}"
        roll = rng.random()
        listening = sorted({queue_ids[i % queues], rng.choice(queue_ids)})
        spec: dict[str, Any] = {"id": wid, "ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                                "queues": listening, "user": user_ids[i % len(user_ids)],
                                "register_time": -rng.uniform(1, 30) * DAY}
        if roll < 0.03:  # dead: registration expired, the entry is gone
            spec["last_activity"] = spec["last_report"] = -rng.uniform(700, 7200)
            dead.append(wid)
        elif roll < 0.08:  # stale: still listed, silent for minutes
            spec["last_activity"] = spec["last_report"] = -rng.uniform(150, 540)
        else:
            spec["last_activity"] = spec["last_report"] = -rng.uniform(1, 30)
            if rng.random() < 0.45:
                live_busy.append(len(worker_specs))
        worker_specs.append(spec)

    n_running = min(len(live_busy), max(0, tasks // 20))
    n_orphans = min(max(1, len(dead)) if tasks else 0, max(0, tasks // 2000) or (1 if tasks else 0))
    n_queued = max(0, int(tasks * 0.03))
    fixed = n_running + n_orphans + n_queued
    rest = max(0, tasks - fixed)
    weights = [("completed", 0.62), ("failed", 0.14), ("stopped", 0.09), ("created", 0.06),
               ("published", 0.04), ("closed", 0.05)]
    statuses: list[str] = ["in_progress"] * n_running + ["orphan"] * n_orphans + ["queued"] * n_queued
    statuses += rng.choices([s for s, _ in weights], [w for _, w in weights], k=rest)
    statuses = statuses[:tasks]
    rng.shuffle(statuses)

    types = ["training"] * 8 + ["testing", "inference", "data_processing"]
    no_tags: list[str] = []
    archived = ["archived"]
    task_specs: list[dict[str, Any]] = []
    busy_iter = iter(live_busy)
    for n, status in enumerate(statuses):
        p = n % n_projects
        tpl = templates[p]
        age = rng.uniform(0.1, 60) * DAY
        doc: dict[str, Any] = {
            "id": _hex_id(4, seed, n), "name": f"exp-{p:03d}-{n:06d}", "project": projects[p]["id"],
            "type": types[n % len(types)], "user": user_ids[n % len(user_ids)], "created": -age,
            "script": tpl["script"], "hyperparams": tpl["hyperparams"], "output": tpl["output"],
            "tags": no_tags, "system_tags": no_tags,
        }
        if tpl["container"]:
            doc["container"] = tpl["container"]
        queue = hot[n % len(hot)] if status == "queued" else queue_ids[n % queues]
        if status == "queued":
            doc["status"] = "queued"
            waited = rng.uniform(30, 6 * 3600)
            doc["created"] = -waited - rng.uniform(60, 3600)
            doc["status_changed"] = doc["last_update"] = -waited
            doc["execution"] = {"queue": queue}
        elif status == "in_progress":
            widx = next(busy_iter)
            worker = worker_specs[widx]
            started = -rng.uniform(120, 8 * 3600)
            doc.update(status="in_progress", created=started - 300, started=started, status_changed=started,
                       last_update=-rng.uniform(1, 60), last_worker=worker["id"],
                       last_iteration=rng.randint(1, 50000))
            doc["execution"] = {"queue": worker["queues"][0]}
            worker["task"] = doc["id"]
        elif status == "orphan":  # running on a worker that died: last_update stopped moving
            started = -rng.uniform(3 * 3600, 10 * 3600)
            doc.update(status="in_progress", created=started - 300, started=started, status_changed=started,
                       last_update=-rng.uniform(900, 3 * 3600),
                       last_worker=dead[n % len(dead)] if dead else "gone-host:gpu0")
            doc["execution"] = {"queue": queue}
        elif status == "created":
            doc["status"] = "created"
        else:
            started = -age + rng.uniform(60, 1800)
            completed = min(-1.0, started + rng.uniform(60, 4 * 3600))
            doc.update(status=status, started=started, completed=completed, status_changed=completed,
                       last_update=completed, last_iteration=rng.randint(0, 100000),
                       last_worker=worker_specs[n % len(worker_specs)]["id"] if worker_specs else "")
            doc["execution"] = {"queue": queue}
            if status == "failed":
                doc["status_reason"] = "worker execution exit code 1"
            if rng.random() < 0.03:
                doc["system_tags"] = archived
        task_specs.append(doc)

    return {
        "name": f"fleet-{workers}w-{queues}q-{tasks}t",
        "description": f"generated fleet: {workers} workers, {queues} queues, {tasks} tasks (seed {seed})",
        "users": users,
        "projects": projects,
        "queues": queue_specs,
        "workers": worker_specs,
        "tasks": task_specs,
    }


WORKER_NAMING: tuple[str, ...] = ("host", "autoscaled", "k8s", "custom", "mixed")


def _worker_id(naming: str, i: int, rng: random.Random) -> str:
    """A worker id in one of the naming schemes real fleets use."""
    if naming == "mixed":
        naming = WORKER_NAMING[i % 4]
    if naming == "host":  # clearml-agent's default: "<hostname>:gpu<N>"
        return f"train-{i // 8:03d}.cluster.local:gpu{i % 8}"
    if naming == "autoscaled":  # the AWS autoscaler: dynamic_worker:<resource>:<instance type>:<instance id>
        resource = ("cpu-m6i", "gpu-l4", "gpu-h100")[i % 3]
        return f"dynamic_worker:{resource}:m6i.xlarge:i-{rng.getrandbits(64):016x}"
    if naming == "k8s":  # the Kubernetes glue names agents after its pods
        return f"clearml-id-{rng.getrandbits(48):012x}"
    return f"runner-{i:02d}"  # CLEARML_WORKER_ID set by hand


def generate_healthy_fleet(
    workers: int = 12, queues: int = 4, tasks: int = 60, naming: str = "host", seed: int = 0
) -> dict[str, Any]:
    """A scenario dict of a well-run fleet of any size and worker-naming scheme: every agent reporting, every
    queue served and short, running tasks on live agents, finished runs that captured their environment.
    Nothing in it deserves a warning; shipped playbooks must stay quiet against every shape of it."""
    if naming not in WORKER_NAMING:
        raise ValueError(f"naming must be one of {', '.join(WORKER_NAMING)}")
    rng = random.Random(seed)
    workers, queues = max(1, workers), max(1, min(queues, workers))
    users = [{"id": _hex_id(1, seed, i), "name": f"user{i:02d}", "role": "user"} for i in range(5)]
    projects = [{"id": _hex_id(2, seed, i), "name": f"team{i}/models"} for i in range(3)]
    queue_specs = [
        {"id": _hex_id(3, seed, i), "name": "default" if i == 0 else f"pool-{i:02d}",
         "system_tags": ["default"] if i == 0 else [], "created": -60 * DAY}
        for i in range(queues)
    ]
    worker_specs: list[dict[str, Any]] = []
    for i in range(workers):
        queue = queue_specs[i % queues]["id"]  # every queue has at least one agent
        worker_specs.append({
            "id": _worker_id(naming, i, rng), "ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
            "queues": [queue], "user": users[i % len(users)]["id"], "register_time": -rng.uniform(0.5, 20) * DAY,
            "last_activity": -rng.uniform(1, 25), "last_report": -rng.uniform(1, 25),
        })
    for spec in worker_specs:
        spec["last_report"] = spec["last_activity"]
    script = {
        "repository": "https://github.com/acme/models.git", "branch": "main",
        "version_num": f"{rng.getrandbits(160):040x}", "entry_point": "train.py", "working_dir": ".",
        "binary": "python3.11", "requirements": {"pip": "# Python 3.11.9\nclearml==1.16.2\ntorch==2.3.0\n"},
        "diff": "",
    }
    container = {"image": "nvcr.io/nvidia/pytorch:24.05-py3"}
    task_specs: list[dict[str, Any]] = []
    busy = 0
    for n in range(tasks):
        doc: dict[str, Any] = {
            "id": _hex_id(4, seed, n), "name": f"train-{n:05d}", "project": projects[n % 3]["id"],
            "type": "training", "user": users[n % len(users)]["id"], "script": script, "container": container,
        }
        worker = worker_specs[busy] if busy < workers and n % 3 == 0 else None
        if worker is not None and busy < workers // 2:  # half the agents are running something
            busy += 1
            started = -rng.uniform(300, 6 * 3600)
            doc.update(status="in_progress", created=started - 60, started=started, status_changed=started,
                       last_update=-rng.uniform(1, 30), last_worker=worker["id"],
                       execution={"queue": worker["queues"][0]})
            worker["task"] = doc["id"]
        else:
            age = rng.uniform(1, 6) * DAY
            done = -age + rng.uniform(600, 3 * 3600)
            doc.update(status="completed", created=-age, started=-age + 30, completed=done, status_changed=done,
                       last_update=done, last_worker=worker_specs[n % workers]["id"],
                       execution={"queue": queue_specs[n % queues]["id"]})
        task_specs.append(doc)
    return {
        "name": f"healthy-{naming}-{workers}w-{queues}q",
        "description": f"generated healthy fleet: {workers} {naming}-named agents, {queues} queues (seed {seed})",
        "users": users, "projects": projects, "queues": queue_specs, "workers": worker_specs, "tasks": task_specs,
    }


# -- faults on a generated fleet (the scored signal corpus in bench/signal and the correlation tests) ---------

FAULT_KINDS: tuple[str, ...] = (
    "dead_agent", "remove_pool", "unserved_queue", "mass_silence", "failure_burst", "stuck_at_head", "backlog",
    "local_destination", "no_requirements", "fileserver_down", "bad_credentials", "slow_server",
    "watchdog_risk", "agent_version", "events_read_only",
)


def apply_faults(fleet: dict[str, Any], faults: list[dict[str, Any]], seed: int = 0) -> list[dict[str, str]]:
    """Break a generated fleet (in place) the way real fleets break. Each fault is a one-key mapping, e.g.
    `{dead_agent: {worker: 2, silent: 540}}`; times are seconds. Returns the subjects the faults break
    ({kind, name}), so a scorer knows which subjects are expected to fail."""
    rng = random.Random(seed)
    broken: list[dict[str, str]] = []
    server_faults: dict[str, Any] = fleet.setdefault("faults", {})
    queues = fleet["queues"]
    workers = fleet["workers"]
    tasks = fleet["tasks"]
    task_by_id = {t["id"]: t for t in tasks}
    queue_name = {q["id"]: q["name"] for q in queues}
    for n, fault in enumerate(faults):
        if len(fault) != 1 or next(iter(fault)) not in FAULT_KINDS:
            raise ValueError(f"fault {fault!r}: expected one of {', '.join(FAULT_KINDS)}")
        kind, spec = next(iter(fault.items()))
        spec = dict(spec or {})
        if kind == "dead_agent":  # one agent stops reporting; its task is orphaned, its queue may be left unserved
            w = workers[int(spec.get("worker", 0))]
            silent = float(spec.get("silent", 540))
            w["last_activity"] = w["last_report"] = -silent
            broken.append({"kind": "worker", "name": w["id"]})
            if w.get("task") and w["task"] in task_by_id:
                task_by_id[w["task"]]["last_update"] = -silent - 5
            if spec.get("sole_agent"):  # the other agents of its queue leave it; work piles up there
                qid = w["queues"][0]
                for other in workers:
                    if other is not w and other["queues"] == [qid]:
                        other["queues"] = [q["id"] for q in queues if q["id"] != qid][:1] or other["queues"]
                _enqueue(fleet, qid, int(spec.get("waiting", 3)), float(spec.get("waited", 900)), rng, n)
        elif kind == "remove_pool":  # every agent whose id starts with `prefix` is gone from the server
            prefix = str(spec["prefix"])
            gone = [w for w in workers if w["id"].startswith(prefix)]
            for w in gone:
                workers.remove(w)
                if w.get("task") in task_by_id:  # their runs had finished before they went away
                    t = task_by_id[w["task"]]
                    t.update(status="completed", completed=t["last_update"], status_changed=t["last_update"])
            left = sorted({q for w in gone for q in w["queues"]} - {q for w in workers for q in w["queues"]})
            if left and int(spec.get("waiting", 0)):
                _enqueue(fleet, left[0], int(spec["waiting"]), float(spec.get("waited", 900)), rng, n)
            broken.append({"kind": "worker", "name": f"{prefix}*"})
        elif kind == "unserved_queue":  # a queue nobody listens to, N tasks waiting
            qid = _hex_id(3, seed + 7919, n)
            name = str(spec.get("name", f"orphan-queue-{n}"))
            queues.append({"id": qid, "name": name, "system_tags": [], "created": -30 * DAY})
            queue_name[qid] = name
            _enqueue(fleet, qid, int(spec.get("tasks", 5)), float(spec.get("waited", 8 * 3600)), rng, n)
            broken.append({"kind": "queue", "name": name})
        elif kind == "mass_silence":  # a share of the fleet silent since the same moment (+- 30 s)
            share = float(spec.get("share", 1.0))
            silent = float(spec.get("silent", 200))
            chosen = workers[: max(1, int(len(workers) * share))]
            for w in chosen:
                w["last_activity"] = w["last_report"] = -silent - rng.uniform(0, 30)
                if w.get("task") and w["task"] in task_by_id:
                    task_by_id[w["task"]]["last_update"] = w["last_activity"] - 5
            broken.append({"kind": "server", "name": "agent fleet"})
        elif kind == "failure_burst":  # many tasks failed within hours, all with the same error
            count = int(spec.get("tasks", 200))
            line = str(spec.get("line", "ModuleNotFoundError: No module named 'torchmetrics'"))
            template = tasks[0]
            for i in range(count):
                ended = -rng.uniform(600, 6 * 3600)
                tasks.append({
                    **{k: template[k] for k in ("project", "type", "user", "script", "container") if k in template},
                    "id": _hex_id(5, seed + n, i), "name": f"burst-{n}-{i:04d}", "status": "failed",
                    "created": ended - 900, "started": ended - 600, "completed": ended, "status_changed": ended,
                    "last_update": ended, "status_reason": "worker execution exit code 1",
                    "last_worker": workers[i % len(workers)]["id"], "execution": {"queue": queues[0]["id"]},
                    "log": ["Starting Task Execution:", "Traceback (most recent call last):", line],
                })
            broken.append({"kind": "task", "name": f"burst-{n}-*"})
        elif kind == "stuck_at_head":  # the head of a served queue waits for hours (no agent can run it)
            qid = queues[int(spec.get("queue", 0)) % len(queues)]["id"]
            name = _enqueue(fleet, qid, 1, float(spec.get("waited", 9 * 3600)), rng, n)[0]
            broken.append({"kind": "task", "name": name})
        elif kind == "backlog":  # a served queue with many waiting tasks
            q = queues[int(spec.get("queue", 0)) % len(queues)]
            _enqueue(fleet, q["id"], int(spec.get("tasks", 40)), float(spec.get("waited", 2 * 3600)), rng, n)
            broken.append({"kind": "queue", "name": q["name"]})
        elif kind == "local_destination":  # a run that finished an hour ago stored its outputs on its own machine
            t = next(t for t in tasks if t["status"] == "completed")
            _finished_recently(t)
            t["output"] = {"destination": "http://localhost:8081"}
            broken.append({"kind": "task", "name": t["name"]})
        elif kind == "no_requirements":  # a run that finished an hour ago recorded no packages
            t = next(t for t in reversed(tasks) if t["status"] == "completed" and not t.get("output"))
            _finished_recently(t)
            t["script"] = {**t["script"], "requirements": {}}
            broken.append({"kind": "task", "name": t["name"]})
        elif kind == "fileserver_down":
            server_faults["fileserver"] = {"enabled": False}
            broken.append({"kind": "storage", "name": "ClearML file server"})
        elif kind == "bad_credentials":
            server_faults["reject_logins"] = True
            broken.append({"kind": "server", "name": "credentials"})
        elif kind == "slow_server":
            server_faults["latency_ms"] = float(spec.get("latency_ms", 2500))
            broken.append({"kind": "server", "name": "latency"})
        elif kind == "watchdog_risk":  # a run outside any agent (SDK on a workstation) silent inside one call
            silent = float(spec.get("silent", 6600))
            template = tasks[0]
            name = str(spec.get("name", f"export-{n}"))
            tasks.append({
                **{k: template[k] for k in ("project", "user", "script", "container") if k in template},
                "id": _hex_id(7, seed + n, 0), "name": name, "type": "data_processing", "status": "in_progress",
                "created": -silent - 3000, "started": -silent - 2700, "status_changed": -silent - 2700,
                "last_update": -silent,
                "log": ["Uploading artifact 'raw.tar' (1.9 TB) to s3://bucket/exports/"],
            })
            broken.append({"kind": "task", "name": name})
        elif kind == "agent_version":  # agents print "clearml_agent vX.Y.Z" at the top of the logs of their runs
            version = str(spec.get("version", "2.0.0"))
            share = float(spec.get("share", 1.0))
            chosen = {w["id"] for w in workers[: max(1, int(len(workers) * share))]}
            for t in tasks:
                if t.get("last_worker") in chosen:
                    t["log"] = [f"clearml_agent v{version}", *(t.get("log") or [])]
            if spec.get("server"):
                fleet.setdefault("server", {})["version"] = str(spec["server"])
            broken.append({"kind": "server", "name": "versions"})
        elif kind == "events_read_only":  # Elasticsearch past its flood-stage watermark: indices read-only
            server_faults["events"] = {"read_only": True}
            broken.append({"kind": "server", "name": "events"})
    if not server_faults:
        fleet.pop("faults")
    return broken


def _finished_recently(task: dict[str, Any]) -> None:
    """Make a finished task one of the last day's runs (the window the repro and storage checks look at)."""
    task.update(created=-3 * 3600.0, started=-3 * 3600.0 + 30, completed=-3600.0, status_changed=-3600.0,
                last_update=-3600.0)


def _enqueue(fleet: dict[str, Any], queue_id: str, count: int, waited: float, rng: random.Random, n: int) -> list[str]:
    """Append `count` queued tasks to a queue, the oldest waiting `waited` seconds; returns their names."""
    entries = []
    names = []
    template = fleet["tasks"][0] if fleet["tasks"] else {}
    base = len(fleet["tasks"])
    for i in range(count):
        age = waited - i * min(60.0, waited / max(1, count))
        tid = _hex_id(6, n, base + i)
        name = f"waiting-{n}-{i:04d}"
        fleet["tasks"].append({
            **{k: template[k] for k in ("project", "type", "user", "script", "container") if k in template},
            "id": tid, "name": name, "status": "queued", "created": -age - 60, "status_changed": -age,
            "last_update": -age, "execution": {"queue": queue_id},
        })
        entries.append({"task": tid, "added": -age})
        names.append(name)
    for q in fleet["queues"]:
        if q["id"] == queue_id:
            q.setdefault("entries", []).extend(entries)
    return names
