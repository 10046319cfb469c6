"""Prometheus metrics, one registry per app (two apps in one process never share counters).

The share routed to each model is ``caproute_routed_total{router,model}`` divided by its sum over
models (PromQL: ``sum by (model) (rate(caproute_routed_total[5m])) / ignoring(model) group_left
sum(rate(caproute_routed_total[5m]))``); the gauge ``caproute_routed_share`` holds the share since start.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Sub-millisecond buckets for the routing overhead, which the goal puts at p50 <= 5 ms.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "caproute_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "caproute_request_latency_seconds",
            "end-to-end request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "caproute_routing_overhead_seconds",
            "time spent deciding (featurise + predict + utility) per request",
            ["router"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.backend_latency = Histogram(
            "caproute_backend_latency_seconds",
            "backend time to the full answer (non-stream) or first byte (stream)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.routed = Counter(
            "caproute_routed", "requests routed to each model", ["router", "model"], registry=r
        )
        self.share = Gauge(
            "caproute_routed_share",
            "share of a router's requests sent to each model since start",
            ["router", "model"],
            registry=r,
        )
        self.backend_errors = Counter(
            "caproute_backend_errors", "failed backend attempts", ["model", "reason"], registry=r
        )
        self.fallbacks = Counter(
            "caproute_fallbacks", "requests answered by a fallback model", ["router"], registry=r
        )
        # per (router, model): what was decided, each backend attempt's outcome, and the latency
        # of routed answers (router "" for requests sent directly to a pool model)
        self.decisions = Counter(
            "caproute_decisions",
            "routing decisions by router and chosen model (before any fallback)",
            ["router", "model"],
            registry=r,
        )
        self.attempts = Counter(
            "caproute_backend_attempts",
            "backend attempts of routed chats by router, model and outcome (ok or the failure reason)",
            ["router", "model", "outcome"],
            registry=r,
        )
        self.routed_latency = Histogram(
            "caproute_routed_latency_seconds",
            "time from receiving a chat to the end of its answer (the last byte of a stream), "
            "by router, answering model and API (openai or anthropic)",
            ["router", "model", "api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.spend = Counter(
            "caproute_spend_usd",
            "USD spent on backends (estimated where usage is missing)",
            ["model"],
            registry=r,
        )
        self.tokens = Counter(
            "caproute_tokens", "tokens by model and kind (prompt/completion)", ["model", "kind"], registry=r
        )
        self.feedback = Counter("caproute_feedback", "feedback stored by kind", ["kind"], registry=r)
        self.inflight = Gauge("caproute_inflight_requests", "requests in progress", registry=r)
        self.drift = Gauge(
            "caproute_policy_drift", "live traffic vs the calibrated policy", ["router", "metric"], registry=r
        )
        self.drifting = Gauge(
            "caproute_policy_out_of_tolerance",
            "1 while live traffic is outside the policy's drift tolerance",
            ["router"],
            registry=r,
        )
        self.backend_waiting = Gauge(
            "caproute_backend_queue_depth",
            "requests waiting for a free slot of a pool model (max_concurrency)",
            ["model"],
            registry=r,
        )
        self.backend_active = Gauge(
            "caproute_backend_active", "requests running on a pool model", ["model"], registry=r
        )
        self.feedback_pending = Gauge(
            "caproute_feedback_queue_depth",
            "served responses whose registration is queued or being retried, not yet stored",
            registry=r,
        )
        self.feedback_retries = Gauge(
            "caproute_feedback_commit_retries",
            "failed feedback-store commits whose registrations were retried (since start)",
            registry=r,
        )
        self.overloaded = Counter(
            "caproute_overload_rejections",
            "requests refused with 503 because the registration queue was full",
            registry=r,
        )
        self.writer_alive = Gauge(
            "caproute_writer_alive", "1 while a background writer thread runs", ["writer"], registry=r
        )
        self.dead_letters = Gauge(
            "caproute_dead_letters",
            "records a background writer could not store, kept in its dead-letter file (since start)",
            ["writer"],
            registry=r,
        )
        self.log_dropped = Gauge(
            "caproute_request_log_dropped",
            "request-log records dropped because the writer's queue was full (since start)",
            registry=r,
        )
        self.clients_closed = Gauge(
            "caproute_client_connections_closed",
            "client connections closed by the slow-client limits in this process, by reason",
            ["reason"],
            registry=r,
        )
        self._counts: dict[str, dict[str, int]] = {}
        self._share_bound: dict[str, bool] = {}
        self._lock = threading.Lock()
        for metric in vars(self).values():
            if isinstance(metric, Counter | Gauge | Histogram) and metric._labelnames:
                memoise_labels(metric)

    def bind(self, backends, store, request_log=None) -> None:
        """Export the backends' queues, the feedback store's backlog and the background writers'
        health (read at scrape time)."""
        from caproute.serve.slow_clients import CLOSED

        for name in backends.names:
            self.backend_waiting.labels(name).set_function(lambda n=name: backends.waiting[n])
            self.backend_active.labels(name).set_function(lambda n=name: backends.active[n])
        self.feedback_pending.set_function(lambda: store.pending)
        self.feedback_retries.set_function(lambda: store.commit_retries)
        for name, writer in (("feedback_store", store), ("request_log", request_log)):
            if writer is not None:
                self.writer_alive.labels(name).set_function(lambda w=writer: float(w.alive))
                self.dead_letters.labels(name).set_function(lambda w=writer: w.dead.count)
        if request_log is not None:
            self.log_dropped.set_function(lambda: request_log.dropped)
        for reason in ("header_timeout", "body_timeout", "max_connections"):
            self.clients_closed.labels(reason).set_function(lambda r=reason: CLOSED[r])

    def routed_to(self, router: str, model: str, models: tuple[str, ...]) -> None:
        self.routed.labels(router, model).inc()
        with self._lock:
            c = self._counts.setdefault(router, dict.fromkeys(models, 0))
            c[model] = c.get(model, 0) + 1
            if not self._share_bound.get(router):
                # the share gauges are computed when scraped, not on every request
                self._share_bound[router] = True
                for m in models:
                    self.share.labels(router, m).set_function(lambda r=router, m=m: self._share(r, m))

    def _share(self, router: str, model: str) -> float:
        with self._lock:
            c = self._counts.get(router, {})
            total = sum(c.values())
            return c.get(model, 0) / total if total else 0.0


def memoise_labels(metric) -> None:
    """``metric.labels(*values)`` answered from a dict after the first call with those values.

    prometheus_client checks the values and takes the metric's lock on every ``labels`` call (about
    three times the cost of the ``inc`` that follows); a request labels about a dozen series, so the
    lookup was a few percent of the proxy's CPU per routed request (issue 27). Children are never
    removed from these metrics, so a memoised child is always the registered one. Keyword labels
    take prometheus_client's path.
    """
    plain = metric.labels
    children: dict[tuple, object] = {}

    def labels(*values, **by_name):
        if by_name:
            return plain(*values, **by_name)
        child = children.get(values)
        if child is None:
            child = children[values] = plain(*values)
        return child

    metric.labels = labels
