"""Tracing and metrics of routed chats: an OpenTelemetry in-memory exporter sees the chat, decide,
attempt, fallback and registration spans with the routing decision as attributes for a routed
request whose first model fails; a Prometheus scrape of ``/metrics`` parses with
``prometheus_client``'s text parser and holds the per-(router, model) histogram and counters; the
facade is a no-op without OpenTelemetry and does nothing at import."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from caproute.core import tracing
from caproute.serve.app import create_app
from caproute.serve.config import ServeConfig
from caproute.serve.echo import echo_app
from caproute.serve.testing import TEST_MODELS, UvicornThread, train_router, write_pool_yaml

ROUTER = "caproute/r"
USER = [{"role": "user", "content": "what is 2 + 2?"}]


class Switch:
    """An echo backend that answers 503 while ``failing`` is set."""

    def __init__(self, name: str):
        self.ok, self.bad = echo_app(name), echo_app(name, fail_status=503)
        self.failing = False

    async def __call__(self, scope, receive, send):
        await (self.bad if self.failing and scope["type"] == "http" else self.ok)(scope, receive, send)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("telemetry")
    switches = {n: Switch(n) for n in TEST_MODELS}
    threads = {n: UvicornThread(s).start() for n, s in switches.items()}
    pool = write_pool_yaml(
        d / "pool.yaml", [{"name": n, "base_url": t.base_url + "/v1", "model": n, "timeout_s": 10} for n, t in threads.items()]
    )
    cfg = ServeConfig(routers={"r": train_router(d / "router")}, pool=pool, insecure_local=True, feedback_db=d / "fb.sqlite3")
    with UvicornThread(create_app(cfg)) as srv:
        first = httpx.post(srv.base_url + "/v1/route", json={"model": ROUTER, "messages": USER}).json()
        yield {"srv": srv, "switches": switches, "first": first["decisions"][0]["model"]}
    for t in threads.values():
        t.stop()


@pytest.fixture
def exporter():
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exp = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    tracing.use_provider(provider)
    yield exp
    tracing.use_provider(None)
    provider.shutdown()


@pytest.mark.parametrize("stream", [False, True])
def test_spans_of_a_routed_request_with_a_fallback(env, exporter, stream):
    first = env["first"]
    env["switches"][first].failing = True
    try:
        r = httpx.post(
            env["srv"].base_url + "/v1/chat/completions",
            json={"model": ROUTER, "messages": USER, "stream": stream, "max_tokens": 4},
            timeout=30,
        )
    finally:
        env["switches"][first].failing = False
    assert r.status_code == 200
    served = r.headers["x-caproute-model"]
    assert served != first
    rid = r.headers["x-caproute-response-id"]
    spans = exporter.get_finished_spans()
    by_name: dict[str, list] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    (chat,) = [s for s in by_name["caproute.chat"] if s.attributes["caproute.response_id"] == rid]
    trace_id = chat.context.trace_id
    mine = [s for s in spans if s.context.trace_id == trace_id]
    assert all(s.parent is not None and s.parent.span_id == chat.context.span_id for s in mine if s is not chat)
    names = sorted(s.name for s in mine)
    assert names == sorted(
        ["caproute.chat", "caproute.decide", "caproute.attempt", "caproute.attempt", "caproute.fallback", "caproute.register"]
    )
    get = {s.name: s for s in mine if s.name != "caproute.attempt"}
    d = get["caproute.decide"].attributes
    assert d["caproute.router"] == "r" and d["caproute.model"] == first
    for key in ("caproute.mu_q", "caproute.mu_c", "caproute.sigma_q", "caproute.utility", "caproute.lambda"):
        assert isinstance(d[key], float), key
    assert d["caproute.order"][0] == first and d["caproute.params_source"]
    a1, a2 = sorted((s for s in mine if s.name == "caproute.attempt"), key=lambda s: s.attributes["caproute.attempt"])
    assert a1.attributes["caproute.model"] == first and a1.attributes["caproute.attempt_reason"] == "decision"
    assert a1.attributes["caproute.outcome"] == "http_503" and not a1.status.is_ok
    assert a2.attributes["caproute.model"] == served and a2.attributes["caproute.attempt_reason"] == "fallback"
    assert a2.attributes["caproute.outcome"] == "ok"
    fb = get["caproute.fallback"].attributes
    assert (fb["caproute.from_model"], fb["caproute.to_model"], fb["caproute.reason"]) == (first, served, "http_503")
    reg = get["caproute.register"].attributes
    assert reg["caproute.response_id"] == rid and reg["caproute.model"] == served
    c = chat.attributes
    assert c["caproute.model"] == served and c["caproute.fallback"] is True and c["caproute.attempts"] == 2
    assert c["caproute.api"] == "openai" and c["caproute.stream"] is stream
    assert chat.start_time <= get["caproute.decide"].start_time <= a1.start_time <= a2.start_time


def test_failed_request_span_is_an_error(env, exporter):
    for s in env["switches"].values():
        s.failing = True
    try:
        r = httpx.post(env["srv"].base_url + "/v1/chat/completions", json={"model": ROUTER, "messages": USER}, timeout=30)
    finally:
        for s in env["switches"].values():
            s.failing = False
    assert r.status_code == 502
    (chat,) = [s for s in exporter.get_finished_spans() if s.name == "caproute.chat"]
    assert not chat.status.is_ok and "no backend answered" in chat.status.description


def test_prometheus_scrape_has_per_model_histograms(env):
    from prometheus_client.parser import text_string_to_metric_families

    url = env["srv"].base_url
    for _ in range(3):
        assert httpx.post(url + "/v1/chat/completions", json={"model": ROUTER, "messages": USER}).status_code == 200
    assert httpx.post(url + "/v1/messages", json={"model": "small", "max_tokens": 4, "messages": USER}).status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(url + "/metrics").text)}
    hist = families["caproute_routed_latency_seconds"]
    assert hist.type == "histogram"
    counts = {
        (s.labels["router"], s.labels["model"], s.labels["api"]): s.value
        for s in hist.samples
        if s.name.endswith("_count")
    }
    assert counts[("r", env["first"], "openai")] >= 3 and counts[("", "small", "anthropic")] >= 1
    buckets = [s for s in hist.samples if s.name.endswith("_bucket") and s.labels["model"] == env["first"]]
    assert buckets and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == counts[("r", env["first"], "openai")]
    decisions = {(s.labels["router"], s.labels["model"]): s.value for s in families["caproute_decisions"].samples
                 if s.name == "caproute_decisions_total"}
    assert decisions[("r", env["first"])] >= 3
    attempts = {(s.labels["model"], s.labels["outcome"]): s.value for s in families["caproute_backend_attempts"].samples
                if s.name == "caproute_backend_attempts_total"}
    assert attempts[(env["first"], "ok")] >= 3


def test_facade_is_a_noop_without_opentelemetry_and_lazy(monkeypatch):
    monkeypatch.setattr(tracing, "_tracer", None)  # what the facade holds when the import failed
    span = tracing.start_span("x", attributes={"a": 1})
    assert span is tracing.NOOP and not span.recording
    with tracing.start_span("y") as s:
        s.set({"b": 2})
        s.fail("nothing")
    # importing the facade imports no OpenTelemetry and resolves no tracer (FastAPI itself may import
    # opentelemetry, so the serve modules are not checked this way)
    code = (
        "import sys; from caproute.core import tracing; "
        "print(any(m.startswith('opentelemetry') for m in sys.modules), tracing._tracer is tracing._UNSET)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
