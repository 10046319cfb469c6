"""One attempt loop for every routed chat (serve/routed_chat.py, issue 25 item 3): a backend reply
that is malformed beyond what the parsers foresee (JSON that Python refuses: an integer over
4,300 digits, nesting deeper than the recursion limit) falls back to the next model with the same
attempt record and the same count whether the client streams or not; a rejection (4xx) is the
client's error and every model failing is one 502, identically on both paths."""

from __future__ import annotations

import json

import httpx
import pytest

from caproute.serve.app import create_app
from caproute.serve.config import ServeConfig
from caproute.serve.testing import TEST_MODELS, UvicornThread, train_router, write_pool_yaml

USER = [{"role": "user", "content": "what is 2 + 2?"}]
ROUTER = "caproute/r"
OK = json.dumps({"id": "b", "object": "chat.completion",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})
OK_STREAM = 'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\ndata: [DONE]\n\n'
# (JSON body, SSE body) a backend answers with status 200
MALFORMED = {
    "int_over_4300_digits": ('{"choices":[{"message":{"content":"x"}}],"n":' + "1" * 5000 + "}",
                             'data: {"n":' + "1" * 5000 + "}\n\n"),
    "nested_too_deep": ("[" * 100_000, "data: " + "[" * 100_000 + "\n\n"),
}


class Scripted:
    """An OpenAI-compatible backend whose answer per (model, stream) is set by the test."""

    def __init__(self):
        self.replies: dict[tuple[str, bool], tuple[int, str]] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        req = json.loads(body)
        stream = bool(req.get("stream"))
        status, text = self.replies.get((req["model"], stream), (200, OK_STREAM if stream else OK))
        ctype = b"text/event-stream" if stream and status == 200 else b"application/json"
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
        await send({"type": "http.response.body", "body": text.encode()})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("routed")
    backend = Scripted()
    b = UvicornThread(backend).start()
    pool = write_pool_yaml(d / "pool.yaml", [{"name": n, "base_url": b.base_url + "/v1", "model": n, "timeout_s": 10}
                                             for n in TEST_MODELS])
    cfg = ServeConfig(routers={"r": train_router(d / "router")}, pool=pool, insecure_local=True,
                      feedback_db=d / "fb.sqlite3")
    with UvicornThread(create_app(cfg)) as srv:
        first = httpx.post(srv.base_url + "/v1/route", json={"model": ROUTER, "messages": USER}).json()
        yield {"srv": srv, "backend": backend, "first": first["decisions"][0]["model"]}
    b.stop()


@pytest.fixture(autouse=True)
def _reset(env):
    env["backend"].replies.clear()
    yield
    env["backend"].replies.clear()


def errors(srv, model: str, reason: str) -> float:
    key = f'caproute_backend_errors_total{{model="{model}",reason="{reason}"}} '
    return sum(float(ln.split()[-1]) for ln in httpx.get(srv.base_url + "/metrics").text.splitlines()
               if ln.startswith(key))


def chat(srv, stream: bool) -> tuple[int, dict]:
    """(status, the caproute object of the answer or the error body)."""
    r = httpx.post(srv.base_url + "/v1/chat/completions", timeout=30,
                   json={"model": ROUTER, "messages": USER, "stream": stream})
    if r.status_code != 200:
        return r.status_code, r.json()
    if not stream:
        return 200, r.json()["caproute"]
    events = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
    assert r.text.rstrip().endswith("data: [DONE]")
    return 200, events[0]["caproute"]


def registered(srv, rid: str) -> bool:
    r = httpx.post(srv.base_url + "/v1/feedback", json={"response_id": rid, "score": 1.0})
    return r.status_code == 200 and r.json()["stored"] is True


@pytest.mark.parametrize("reply", sorted(MALFORMED))
def test_a_malformed_reply_falls_back_streaming_or_not(env, reply):
    srv, first = env["srv"], env["first"]
    seen = {}
    for stream in (False, True):
        env["backend"].replies[(first, stream)] = (200, MALFORMED[reply][stream])
        before = errors(srv, first, "bad_response")
        status, meta = chat(srv, stream)
        assert status == 200, meta
        assert meta["model"] != first and meta["fallback"] is True
        assert registered(srv, meta["response_id"])
        assert errors(srv, first, "bad_response") == before + 1
        seen[stream] = [(a["model"], a["reason"]) for a in meta["attempts"]]
    assert seen[False] == seen[True] == [(first, "bad_response")]


def test_rejection_and_no_answer_are_the_same_streaming_or_not(env):
    srv, first = env["srv"], env["first"]
    got = {}
    for stream in (False, True):
        env["backend"].replies[(first, stream)] = (400, '{"error":{"message":"prompt too long"}}')
        before = errors(srv, first, "http_400")
        status, body = chat(srv, stream)
        assert errors(srv, first, "http_400") == before + 1
        got[stream] = (status, body["error"]["code"], body["error"]["message"])
    assert got[False] == got[True] == (400, "backend_rejected", f"backend '{first}' rejected the request: prompt too long")
    got = {}
    for stream in (False, True):
        for n in TEST_MODELS:
            env["backend"].replies[(n, stream)] = (503, '{"error":{"message":"busy"}}')
        status, body = chat(srv, stream)
        got[stream] = (status, body["error"]["code"], body["error"]["message"])
    assert got[False] == got[True] and got[False][:2] == (502, "backends_unavailable"), got


def test_malformed_usage_in_the_first_stream_chunk_is_counted_not_forwarded(env):
    srv, first = env["srv"], env["first"]
    env["backend"].replies[(first, True)] = (
        200, 'data: {"choices":[{"index":0,"delta":{"content":"ok"}}],"usage":"bad"}\n\ndata: [DONE]\n\n')
    before = errors(srv, first, "bad_response")
    r = httpx.post(srv.base_url + "/v1/chat/completions", timeout=30,
                   json={"model": ROUTER, "messages": USER, "stream": True})
    assert r.status_code == 200 and r.headers["x-caproute-model"] == first
    events = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
    assert all("usage" not in e for e in events)
    assert errors(srv, first, "bad_response") == before + 1
