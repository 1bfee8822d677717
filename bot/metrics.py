"""Prometheus metrics for `/metrics`: one registry for the process, recorded by one-line hooks in the modules
that do the work (runner, ClearML client, Slack writes, outbox, actions).

Every metric is prefixed `clearml_chatops_`; docs/operations.md has the table (name, type, labels, meaning):
runs, run and check durations, findings by severity, ClearML calls / errors / retries, Slack calls / rate limits /
retries, outbox depth and failed messages, actions by outcome.

Metrics are off until `enable()` (which `serve` calls through `metrics_route()`): the hooks are then a dict
lookup, and one-shot commands (`run`, `validate`, `act`) neither import prometheus_client nor count anything
nobody will scrape. Hooks never raise into the caller: a metrics bug must not break a run or a Slack write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from starlette.routing import Route

log = logging.getLogger(__name__)

PREFIX = "clearml_chatops_"
METRICS_PATH = "/metrics"

_enable_lock = threading.Lock()
_M: dict[str, Any] | None = None  # metric name -> prometheus metric, once enabled
REGISTRY: Any = None  # the CollectorRegistry, once enabled

# Readers of the durable outbox's state, evaluated at scrape time (a gauge set on every change would need a
# hook in every outbox transition; a scrape every 15 s costs one indexed COUNT).
_outbox_lock = threading.Lock()
_outbox_depth: list[Callable[[], int]] = []
_outbox_failed: list[Callable[[], int]] = []


def enable() -> Any:
    """Create the registry and every metric (idempotent); returns the registry."""
    global _M, REGISTRY
    with _enable_lock:
        if REGISTRY is not None:
            return REGISTRY
        from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created series double the output and nobody here reads them
        registry = CollectorRegistry(auto_describe=True)
        m: dict[str, Any] = {
            "runs": Counter(f"{PREFIX}runs_total", "Playbook runs", ["trigger", "result"], registry=registry),
            "run_duration": Histogram(
                f"{PREFIX}run_duration_seconds", "Wall time of a playbook run", ["trigger"],
                buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=registry,
            ),
            "check_duration": Histogram(
                f"{PREFIX}check_duration_seconds", "Duration of one check in a run", ["check", "status"],
                buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=registry,
            ),
            "findings": Counter(f"{PREFIX}findings_total", "Findings reported by runs", ["severity"],
                                registry=registry),
            "clearml_calls": Counter(f"{PREFIX}clearml_calls_total", "HTTP requests to a ClearML API server",
                                     ["server", "endpoint"], registry=registry),
            "clearml_errors": Counter(f"{PREFIX}clearml_errors_total", "Failed ClearML API requests",
                                      ["server", "reason"], registry=registry),
            "clearml_retries": Counter(f"{PREFIX}clearml_retries_total", "ClearML read requests retried",
                                       ["server"], registry=registry),
            "slack_calls": Counter(f"{PREFIX}slack_calls_total", "Slack Web API calls", ["method", "result"],
                                   registry=registry),
            "slack_rate_limited": Counter(f"{PREFIX}slack_rate_limited_total", "Slack answers 429 (rate limited)",
                                          ["method"], registry=registry),
            "slack_retries": Counter(f"{PREFIX}slack_retries_total", "Slack calls retried", ["method", "reason"],
                                     registry=registry),
            "actions": Counter(f"{PREFIX}actions_total", "Remediation action attempts", ["action", "outcome"],
                               registry=registry),
        }
        registry.register(_outbox_collector())
        _M, REGISTRY = m, registry
        from bot.clearml.client import install_counter

        install_counter(ClearMLCounter())  # the REST client is handed its counter; it never imports metrics
        return registry


def enabled() -> bool:
    return _M is not None


def _outbox_collector() -> Any:
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    class OutboxCollector(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            with _outbox_lock:
                depth_fns, failed_fns = list(_outbox_depth), list(_outbox_failed)
            depth = GaugeMetricFamily(f"{PREFIX}outbox_depth", "Slack messages queued and not yet sent")
            depth.add_metric([], float(_sum(depth_fns)))
            yield depth
            failed = GaugeMetricFamily(f"{PREFIX}outbox_failed", "Slack messages that failed for good")
            failed.add_metric([], float(_sum(failed_fns)))
            yield failed

        def describe(self) -> Iterable[Any]:
            return []  # collected lazily: registration must not touch the store

    return OutboxCollector()


def _sum(fns: list[Callable[[], int]]) -> int:
    total = 0
    for fn in fns:
        try:
            total += int(fn())
        except Exception as exc:  # a locked or closed store must not make the whole scrape fail
            log.debug("outbox gauge unavailable: %s", exc)
    return total


def watch_outbox(outbox: Any) -> Callable[[], None]:
    """Report `outbox.depth()` (and its failed messages, for the durable outbox) as gauges; returns a function
    that stops watching (call it before the outbox's store closes)."""
    depth_fn: Callable[[], int] = outbox.depth

    def failed_fn() -> int:
        return int(outbox.failed_count())  # the outbox owns its table: metrics never writes SQL

    with _outbox_lock:
        _outbox_depth.append(depth_fn)
        if getattr(outbox, "store", None) is not None:
            _outbox_failed.append(failed_fn)

    def unwatch() -> None:
        with _outbox_lock:
            if depth_fn in _outbox_depth:
                _outbox_depth.remove(depth_fn)
            if failed_fn in _outbox_failed:
                _outbox_failed.remove(failed_fn)

    return unwatch


# -- hooks (one line at each call site; no-ops until enable()) ------------------------------------------------


def _inc(name: str, *labels: str) -> None:
    if _M is None:
        return
    try:
        _M[name].labels(*labels).inc()
    except Exception:  # never let accounting break the caller
        log.debug("metrics: %s failed", name, exc_info=True)


class _CheckTiming(Protocol):
    id: str
    status: str
    duration_s: float


class _SeverityOf(Protocol):
    severity: str


class RunSummary(Protocol):
    """What `record_run` reads of a run (engine.runner.RunResult has it): metrics import nothing of the engine."""

    trigger: str
    duration_s: float

    @property
    def problems(self) -> Any: ...

    @property
    def checks(self) -> Sequence[_CheckTiming]: ...

    @property
    def findings(self) -> Sequence[_SeverityOf]: ...


def record_run(result: RunSummary) -> None:
    """A finished playbook run: its result, duration, each check's duration and the findings by severity."""
    if _M is None:
        return
    try:
        trigger = _trigger_label(result.trigger)
        _M["runs"].labels(trigger, "problems" if result.problems else "ok").inc()
        _M["run_duration"].labels(trigger).observe(result.duration_s)
        for check in result.checks:
            _M["check_duration"].labels(check.id, check.status).observe(check.duration_s)
        for finding in result.findings:
            _M["findings"].labels(finding.severity).inc()
    except Exception:
        log.debug("metrics: record_run failed", exc_info=True)


def _trigger_label(trigger: str) -> str:
    # "schedule (catch-up: 3 missed)" -> "schedule": label values stay few
    word = (trigger or "unknown").split(" ", 1)[0].split(":", 1)[0]
    return word if word in ("cli", "slack", "schedule", "doctor", "action") else "other"


def clearml_call(server: str, endpoint: str) -> None:
    _inc("clearml_calls", server, endpoint)


def clearml_error(server: str, reason: str) -> None:
    """A failed ClearML request: the transport reason (refused, timeout, http_5xx, not_json, tls, dns, network) or
    `api_<code>` for an error envelope."""
    _inc("clearml_errors", server, reason)


def clearml_retry(server: str) -> None:
    _inc("clearml_retries", server)


class ClearMLCounter:
    """The REST client's `CallCounter` (bot/clearml/client.py), counting into this registry."""

    def clearml_call(self, server: str, endpoint: str) -> None:
        clearml_call(server, endpoint)

    def clearml_error(self, server: str, reason: str) -> None:
        clearml_error(server, reason)

    def clearml_retry(self, server: str) -> None:
        clearml_retry(server)


def slack_call(method: str, result: str = "ok") -> None:
    """One Slack Web API call as its caller saw it (after slack_sdk's own retries): `result` is "ok" or the Slack
    error code; a final `ratelimited` also counts as a rate limit."""
    label = _error_label(result)
    _inc("slack_calls", method, label)
    if label == "ratelimited":
        _inc("slack_rate_limited", method)


def slack_retry(method: str, reason: str) -> None:
    """A Slack call retried: rate_limited (429, also counted as a rate limit), server_error, connection_error."""
    _inc("slack_retries", method, reason)
    if reason == "rate_limited":
        _inc("slack_rate_limited", method)


def _error_label(result: str) -> str:
    # Slack error codes are short snake_case words; anything else (exception text) becomes "connection_error".
    text = (result or "error").strip()
    if len(text) <= 40 and text.replace("_", "").isalnum():
        return text
    return "connection_error"


def action(action_id: str, outcome: str) -> None:
    _inc("actions", action_id, outcome)


def slack_method_of(url: str) -> str:
    """`https://slack.com/api/chat.postMessage` -> `chat.postMessage`; a response_url -> `response_url`."""
    tail = url.split("?", 1)[0].rstrip("/").rsplit("/api/", 1)
    return tail[1] if len(tail) == 2 and tail[1] else "response_url"


def counting(handlers: list[Any]) -> list[Any]:
    """slack_sdk RetryHandlers wrapped so that each retry they decide on is counted (rate_limited for a 429,
    server_error for 5xx, else connection_error): use `counting(retry_handlers())` in a WebClient, so rate limits
    show on /metrics even when slack_sdk sleeps through Retry-After inside one call."""
    from slack_sdk.http_retry.handler import RetryHandler

    class Counted(RetryHandler):
        def __init__(self, inner: RetryHandler) -> None:
            super().__init__(max_retry_count=inner.max_retry_count, interval_calculator=inner.interval_calculator)
            self.inner = inner

        def can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
            return bool(self.inner.can_retry(state=state, request=request, response=response, error=error))

        def prepare_for_next_attempt(
            self, *, state: Any, request: Any, response: Any = None, error: Any = None
        ) -> None:
            status = getattr(response, "status_code", None)
            reason = "rate_limited" if status == 429 else "server_error" if status else "connection_error"
            slack_retry(slack_method_of(getattr(request, "url", "") or ""), reason)
            self.inner.prepare_for_next_attempt(state=state, request=request, response=response, error=error)

    return [Counted(h) for h in handlers]


# -- exposition ----------------------------------------------------------------------------------------------


def render() -> tuple[bytes, str]:
    """The text exposition of every metric, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(enable()), CONTENT_TYPE_LATEST


def metrics_route() -> Route:
    """A Starlette route for GET /metrics; enables the metrics. The outbox gauges read SQLite, so the exposition
    is built off the event loop."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    enable()

    async def metrics(request: Request) -> Response:
        body, content_type = await run_in_threadpool(render)
        return Response(body, media_type=content_type)

    return Route(METRICS_PATH, metrics, methods=["GET"])


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of one sample (0 when absent or disabled): for tests and `doctor`."""
    if REGISTRY is None:
        return 0.0
    value = REGISTRY.get_sample_value(name, labels or {})
    return float(value) if value is not None else 0.0
