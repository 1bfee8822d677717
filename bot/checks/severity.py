"""The severity policy, written down: for every check, what it reports at `info`, `warning` and `critical`, and why.

The rule behind all of them:
- `critical`: work is being lost or cannot start now, for many people or for good (the server is gone, an agent
  died with a run on it, a queue nobody serves has waited past what an autoscaler needs, a dataset cannot be
  loaded). Someone should act within the hour.
- `warning`: something is wrong and will cost work if left alone, but nothing is lost yet (an agent is late, a
  queue is slow, a run cannot be rebuilt). Someone should act today.
- `info`: worth knowing, nothing to do unless it persists (an agent missed one report, a run may not re-run the
  same, the bot is still learning the fleet). Never opens an incident.
- `error` is not a severity of the fleet: the check itself could not run (see the finding's detail).

`clearml-chatops checks` prints each check's entry; a test keeps every registered check covered.
"""

from __future__ import annotations

SEVERITY_POLICY: dict[str, dict[str, str]] = {
    "server.reachable": {
        "info": "never",
        "warning": "the ping is slower than `slow_after` (every agent and SDK call is slowed), or the server answers "
        "ping but not server.info (something in front of it breaks endpoints)",
        "critical": "the API server cannot be reached (refused, DNS, TLS, timeout, not the API): nothing works, and "
        "every other check is listed inside this one as not run",
    },
    "server.credentials": {
        "info": "never",
        "warning": "the keys log in, but their role may not read the current user (a role problem, not the keys)",
        "critical": "the keys are missing or rejected: the bot sees nothing; the checks that could not run are listed "
        "inside this finding",
    },
    "server.version": {
        "info": "never",
        "warning": "the server or API is older than the installed clearml SDK / clearml-agent, or than the minimum "
        "the playbook asks for: some calls fail or are ignored, but most work goes on",
        "critical": "never (an old server is a planned upgrade, not an outage)",
    },
    "server.tls": {
        "info": "a host is plain http (`report_plain_http`), or verification is turned off in the bot's config",
        "warning": "a certificate expires within `warn_days`, or an https host could not be reached for the TLS "
        "check (refused, DNS, timeout: server.reachable says more)",
        "critical": "a certificate expires within `critical_days`, is expired or invalid, or an https host does not "
        "speak TLS: agents and the SDK refuse to connect",
    },
    "server.compatibility": {
        "info": "the server's version needs a required intermediate step before a later upgrade (no upgrade "
        "planned): worth knowing before the next upgrade",
        "warning": "a known-bad combination the table rates warning (e.g. clearml 2.0 with clearml-agent 1.9.3 in one "
        "environment), or a `planned_upgrade` that skips the required step: some calls fail, work mostly goes on",
        "critical": "a known-bad combination the table rates critical is on the fleet now (e.g. the k8s glue's "
        "re-queue answered HTTP 400 by server 2.0+): tasks fail or never start until one side is changed",
    },
    "server.events_canary": {
        "info": "never",
        "warning": "never (a write path that fails loses data from the first minute)",
        "critical": "a log line or scalar could not be written or read back (Elasticsearch read-only on a full disk, "
        "events accepted but not readable), or task or queue writes fail (MongoDB, Redis): every running task's "
        "logs and metrics are being lost now",
    },
    "agents.stale": {
        "info": "an agent missed two reports (`notice_after`): often a busy host; a killed agent looks the same for "
        "its first minute. Many agents silent since the same minute become one fleet-wide finding",
        "warning": "silent longer than `stale_after` (four missed reports): the agent is probably gone",
        "critical": "silent longer than `dead_after`: presumed dead, its running task is lost",
    },
    "agents.missing": {
        "info": "with `expected: auto`, on the first run: the bot is still learning which pools are normally there",
        "warning": "a pool has fewer agents than an explicit `min`, or under half its usual number (`auto`); an "
        "autoscaled pool is at zero while its queues hold work (at zero with empty queues it is normal)",
        "critical": "a pool that is normally there (`auto`), or an explicit pattern, has no agent at all: its queues "
        "get no work done",
    },
    "agents.orphaned_tasks": {
        "info": "never",
        "warning": "an in-progress task has not reported for `max_silence` although its agent is alive: hung, not "
        "lost",
        "critical": "the task's agent is gone, dead or running something else: the run is lost until requeued",
    },
    "agents.unserved_queues": {
        "info": "never",
        "warning": "a queue has waiting tasks and no live agent: nothing runs from it",
        "critical": "the oldest entry has waited longer than `critical_wait` (longer than an autoscaler needs to "
        "start an instance)",
    },
    "agents.watchdog_risk": {
        "info": "never",
        "warning": "a running task has not updated for `share` of the server's non-responsive limit (default 75 % "
        "of 2 h): the server will stop it unless it reports",
        "critical": "the server's next watchdog cycle (`interval`) may stop the task as 'Forced stop "
        "(non-responsive)': its work is about to be lost",
    },
    "agents.cloud_drift": {
        "info": "never",
        "warning": "an autoscaler-tagged instance runs past `boot_grace` with no agent (it bills for nothing), or a "
        "dynamic_worker agent's instance is gone or stopped (a zombie the queues still count)",
        "critical": "an instance has billed without an agent for longer than `critical_after` (when set)",
    },
    "queues.backlog": {
        "info": "never",
        "warning": "more than `max_length` tasks waiting, or the oldest waited longer than `max_wait`",
        "critical": "`critical_factor` times either threshold",
    },
    "queues.wait_time": {
        "info": "never",
        "warning": "the latest average wait is `factor` times the window's median and above `floor`",
        "critical": "never (a slower queue is a capacity question; unserved or stuck queues have their own checks)",
    },
    "queues.capacity": {
        "info": "never",
        "warning": "every live agent of a queue is busy while its backlog grows or its oldest entry waited `min_wait`",
        "critical": "never (scaling out is a decision, not an emergency)",
    },
    "queues.stuck_queued": {
        "info": "never",
        "warning": "a task waited longer than `threshold` at the head of a served queue, or sits in no visible queue",
        "critical": "the same, longer than `critical_after`. Tasks waiting in a queue nobody serves are evidence of "
        "that queue's finding, not findings of their own",
    },
    "queues.canary": {
        "info": "never (a canary waiting, running, skipped behind a backlog or completed is `ok`, with its times)",
        "warning": "a picked-up canary has not finished after `run_timeout`: the agent is slow or hung",
        "critical": "no agent picked up the canary within `pickup_timeout`, or the canary failed on the agent: "
        "work sent to this queue does not run",
    },
    "storage.fileserver": {
        "info": "never",
        "warning": "the file server works but a step is slower than `slow_ms`, or deleting the probe is refused",
        "critical": "the file server is unreachable, refuses the API token, or loses or corrupts the probe: every "
        "artifact upload fails; dataset and storage findings that only restate it are folded into it",
    },
    "storage.probe": {
        "info": "nothing configured to probe, or the bot lacks the library for a storage type",
        "warning": "a step is slower than `slow_ms`, deletes are refused, or tasks write to a bucket the bot has no "
        "credentials for",
        "critical": "a configured bucket refuses writes or reads, does not exist, or cannot be reached",
    },
    "storage.destinations": {
        "info": "never",
        "warning": "outputs go where other machines cannot read them (localhost, a container-internal name, a local "
        "path), or (with `storage:` configured) to a host nobody configured: the next run that needs them fails",
        "critical": "never (the outputs exist; they are only in the wrong place)",
    },
    "storage.upload_failures": {
        "info": "never",
        "warning": "a recently failed task's log shows an upload or storage error",
        "critical": "never (repro.failure_causes raises the count of one cause to critical)",
    },
    "repro.environment": {
        "info": "the run can be rebuilt but may differ: unpinned packages, uncommitted changes, a standalone script, "
        "no Python version",
        "warning": "the run cannot be rebuilt, or would be rebuilt wrong: no requirements, no code, no commit, "
        "packages installed from local paths",
        "critical": "never (unless `severities` raises a gap)",
    },
    "repro.failure_causes": {
        "info": "failures in user code or of unknown cause: the code's owner reads the log",
        "warning": "failures from the environment (install, git diff, missing module, CUDA OOM, storage, killed "
        "agent): fixable once for everyone",
        "critical": "`critical_count` failures of one cause in the window: a fleet problem, one finding listing them",
    },
    "repro.compare": {
        "info": "a comparison asked for by hand, or a failed clone that differs from its original only outside its "
        "environment (hyperparameters, data): worth reading, not a fleet problem",
        "warning": "a failed clone differs from the run it was cloned from in its environment (code, requirements, "
        "Python, container): the difference is the first suspect",
        "critical": "never",
    },
    "datasets.incomplete": {
        "info": "never",
        "warning": "an upload went silent or was interrupted, or the state is marked dirty: the version is unusable "
        "or incomplete until finished or removed",
        "critical": "a finalized version cannot be loaded: no or unreadable state, dirty state, files never uploaded, "
        "missing chunks",
    },
    "datasets.integrity": {
        "info": "with `on_agent`: a verification task was dispatched to the queue, waits there or runs on an agent "
        "(the result comes on a later run)",
        "warning": "with `on_agent`: the verification task failed on the agent, completed without a readable result, "
        "waited past `pickup_timeout` or ran past `run_timeout` (one finding on the queue, with the task's log tail): "
        "the versions are unverified, not damaged",
        "critical": "files are missing or differ from their recorded hash, or the version cannot be verified at all",
    },
    "datasets.lineage": {
        "info": "never",
        "warning": "a parent version is not finalized",
        "critical": "a parent version was deleted: the child cannot be loaded",
    },
}
