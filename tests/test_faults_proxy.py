"""The proxy against a misbehaving backend (tests/faultserver.py), over real HTTP.

For every fault mode, streaming and not: the proxy answers within the configured deadline plus a
small slack, with a fallback answer or a clear 502/504; no backend connection is left open; every
answered request is registered (feedback on its id is stored); malformed answers are counted in
/metrics. Slack: the deadlines here are 1 s per attempt and 2.5 s per request; SLACK covers a busy
2-core machine (this is a bound on a hang, not a timing measurement).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from caproute.serve.app import create_app
from caproute.serve.config import ServeConfig
from caproute.serve.testing import TEST_MODELS, UvicornThread, train_router, write_pool_yaml

sys.path.insert(0, str(Path(__file__).parent))
from faultserver import ANSWER, FaultServer  # noqa: E402

ATTEMPT_S, REQUEST_S, SLACK = 1.0, 2.5, 1.5
USER = [{"role": "user", "content": "what is 2 + 2?"}]
ROUTER = "caproute/r"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    fault = FaultServer(trickle_s=0.3, slow_s=3.0, delay_s=0.2)
    backend = UvicornThread(fault).start()
    url = backend.base_url + "/v1"

    def pool(name, **kw):
        return write_pool_yaml(
            d / name, [{"name": n, "base_url": url, "model": n, **kw} for n in TEST_MODELS]
        )

    env = {
        "dir": d,
        "fault": fault,
        "router": train_router(d / "router"),
        "pool": pool("pool.yaml", timeout_s=ATTEMPT_S),
        "slow_pool": pool("slow.yaml", timeout_s=30.0),
        "narrow_pool": pool("narrow.yaml", timeout_s=5.0, max_concurrency=1),
    }
    yield env
    backend.stop()


def proxy(env, name, pool="pool", **kw):
    cfg = ServeConfig(
        routers={"r": env["router"]},
        pool=env[pool],
        insecure_local=True,
        feedback_db=env["dir"] / f"{name}.sqlite3",
        request_timeout_s=REQUEST_S,
        **kw,
    )
    return UvicornThread(create_app(cfg))


@pytest.fixture(scope="module")
def srv(env):
    with proxy(env, "main") as s:
        yield s


@pytest.fixture(autouse=True)
def _reset(env):
    env["fault"].modes.clear()
    yield
    env["fault"].modes.clear()


def first_choice(srv) -> str:
    r = httpx.post(srv.base_url + "/v1/route", json={"model": ROUTER, "messages": USER})
    return r.json()["decisions"][0]["model"]


def chat(srv, stream: bool, model: str = ROUTER, timeout: float = 30.0):
    """(status, elapsed s, response id, answer text, parsed body or SSE events)."""
    body = {"model": model, "messages": USER, "max_tokens": 4, "stream": stream}
    t = time.monotonic()
    with httpx.Client(timeout=timeout) as c:
        r = c.post(srv.base_url + "/v1/chat/completions", json=body)
    elapsed = time.monotonic() - t
    if not stream or r.status_code != 200:
        data = r.json()
        text = data["choices"][0]["message"]["content"] if r.status_code == 200 else None
        return r.status_code, elapsed, r.headers.get("x-caproute-response-id"), text, data
    events = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
    assert r.text.rstrip().endswith("data: [DONE]") or "error" in events[-1]
    text = "".join(
        (c.get("delta") or {}).get("content") or "" for e in events for c in e.get("choices") or []
    )
    return r.status_code, elapsed, r.headers["x-caproute-response-id"], text, events


def registered(srv, rid: str) -> bool:
    r = httpx.post(srv.base_url + "/v1/feedback", json={"response_id": rid, "score": 1.0})
    return r.status_code == 200 and r.json()["stored"] is True


def bad_responses(srv, model: str) -> float:
    text = httpx.get(srv.base_url + "/metrics").text
    key = f'caproute_backend_errors_total{{model="{model}",reason="bad_response"}}'
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(key))


# modes that fail before any content: the proxy falls back to the next model
BEFORE_CONTENT = {
    "trickle": "timeout",
    "ping": "timeout",
    "hang": "timeout",
    "slow_first": "timeout",
    "500": "http_500",
    "garbage": "bad_response",
    "error200": "bad_response",
}
# malformed 200 answers: a fallback when not streaming; in a stream the content came first
MALFORMED = ("usage_string", "usage_negative", "usage_huge", "usage_details", "content_int")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("mode", [*BEFORE_CONTENT, *MALFORMED])
def test_fault_on_first_choice_falls_back(env, srv, mode, stream):
    fault = env["fault"]
    first = first_choice(srv)
    fault.modes[first] = mode
    before = bad_responses(srv, first)
    status, elapsed, rid, text, data = chat(srv, stream)
    assert status == 200, data
    assert elapsed <= ATTEMPT_S + SLACK + 0.5, f"{mode}: {elapsed:.2f} s"
    meta = data["caproute"] if not stream else data[0]["caproute"]
    if stream and mode in MALFORMED:
        # the answer streamed from the first choice; what is malformed was after the content
        assert meta["model"] == first and text.startswith(ANSWER)
        if mode == "content_int":
            assert data[-1]["error"]["code"] == "backend_stream_failed"
        else:  # bad usage: not forwarded, tokens estimated
            assert all("usage" not in e for e in data)
        assert bad_responses(srv, first) == before + 1
    else:
        assert meta["model"] != first and meta["fallback"] is True and text == ANSWER
        reason = BEFORE_CONTENT.get(mode, "bad_response")
        if stream and mode in ("garbage", "error200"):
            reason = "empty"  # not an event stream: no content before the end
        assert meta["attempts"][0]["model"] == first and meta["attempts"][0]["reason"] == reason
        if reason == "bad_response":
            assert bad_responses(srv, first) == before + 1
    assert fault.wait_idle(2.0), f"{mode}: a backend connection was left open"
    assert registered(srv, rid)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("mode,status", [("hang", 504), ("ping", 504), ("trickle", 504), ("500", 502)])
def test_every_model_failing_is_a_clear_error_within_the_deadline(env, srv, mode, status, stream):
    for n in TEST_MODELS:
        env["fault"].modes[n] = mode
    code, elapsed, _, _, data = chat(srv, stream)
    assert code == status and data["error"]["code"] == "backends_unavailable"
    assert elapsed <= REQUEST_S + SLACK
    assert env["fault"].wait_idle(2.0)


def test_truncated_stream_ends_with_an_error_event_and_is_registered(env, srv):
    first = first_choice(srv)
    env["fault"].modes[first] = "truncated"
    status, _, rid, text, events = chat(srv, True)
    assert status == 200 and text == "Fo"
    assert events[-1]["error"]["code"] == "backend_stream_failed"
    assert registered(srv, rid) and env["fault"].wait_idle(2.0)


def test_stalled_stream_hits_the_total_deadline(env, srv):
    first = first_choice(srv)
    env["fault"].modes[first] = "stall"
    status, elapsed, rid, text, events = chat(srv, True)
    assert status == 200 and text == "Fo" and events[-1]["error"]["code"] == "backend_stream_failed"
    assert elapsed <= ATTEMPT_S + SLACK
    assert registered(srv, rid) and env["fault"].wait_idle(2.0)


def test_backend_connection_closed_when_the_client_leaves(env):
    fault = env["fault"]
    with proxy(env, "leave", pool="slow_pool") as s:  # 30 s deadlines: only the client's leaving ends it
        first = first_choice(s)
        fault.modes[first] = "stall"
        body = {"model": ROUTER, "messages": USER, "stream": True}
        with (
            httpx.Client(timeout=10) as c,
            c.stream("POST", s.base_url + "/v1/chat/completions", json=body) as r,
        ):
            rid = r.headers["x-caproute-response-id"]
            next(r.iter_lines())
            assert fault.active == 1, (first, fault.requests[-3:], fault.modes, fault.active_by_model)
        t = time.monotonic()
        assert fault.wait_idle(3.0), "the backend stream stayed open after the client left"
        assert time.monotonic() - t < 3.0
        assert registered(s, rid)


def test_requests_queue_per_model_up_to_max_concurrency(env):
    fault = env["fault"]
    fault.modes["small"] = "delay"
    fault.max_active_by_model.clear()
    with proxy(env, "narrow", pool="narrow_pool") as s:
        out = []

        def one(stream):
            out.append(chat(s, stream, model="small"))

        threads = [threading.Thread(target=one, args=(i % 2 == 1,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [o[0] for o in out] == [200] * 6 and all(o[3] == ANSWER for o in out)
        assert fault.max_active_by_model["small"] == 1  # max_concurrency: 1, the rest waited
        assert all(registered(s, o[2]) for o in out)


def test_registrations_survive_a_write_locked_store(env):
    """The feedback database is write-locked by another process for 3 s: answers go out, their
    registrations wait (visible in /metrics) and are all stored once the lock is gone."""
    db = env["dir"] / "locked.sqlite3"
    with proxy(env, "locked") as s:
        lock = sqlite3.connect(db, timeout=0)
        lock.execute("BEGIN EXCLUSIVE")
        ids = []
        try:
            for _ in range(4):
                status, _, rid, _, _ = chat(s, False)
                assert status == 200
                ids.append(rid)
            metrics = httpx.get(s.base_url + "/metrics").text
            depth = [ln for ln in metrics.splitlines() if ln.startswith("caproute_feedback_queue_depth")]
            assert float(depth[0].split()[-1]) >= 1
            time.sleep(3.0)
        finally:
            lock.rollback()
            lock.close()
        deadline = time.monotonic() + 10
        while not all(registered(s, rid) for rid in ids):
            assert time.monotonic() < deadline, "registrations lost after the lock was released"
            time.sleep(0.2)
        metrics = httpx.get(s.base_url + "/metrics").text
        assert any(
            ln.startswith("caproute_feedback_commit_retries") and float(ln.split()[-1]) >= 1
            for ln in metrics.splitlines()
        )


def test_full_registration_queue_refuses_new_requests(env):
    db = env["dir"] / "full.sqlite3"
    with proxy(env, "full", max_pending_registrations=2) as s:
        lock = sqlite3.connect(db, timeout=0)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            codes = [chat(s, False)[0] for _ in range(2)]
            status, _, _, _, data = chat(s, False)
        finally:
            lock.rollback()
            lock.close()
        assert codes[:2] == [200, 200] and status == 503 and data["error"]["code"] == "overloaded"


def test_backend_request_cancelled_when_a_non_streaming_client_leaves(env):
    fault = env["fault"]
    with proxy(env, "leave-json", pool="slow_pool") as s:
        first = first_choice(s)
        fault.modes[first] = "hang"
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                s.base_url + "/v1/chat/completions",
                json={"model": ROUTER, "messages": USER},
                timeout=httpx.Timeout(0.5),
            )
        assert fault.wait_idle(3.0), "the backend request stayed open after the client left"
