"""The cheaper routed path of issue 27 (item 5): each shortcut gives what the long way gave.

- ``DirectSender.request`` builds the request ``httpx.Request(content=...)`` builds (headers in
  order), for every method and body;
- ``header_values`` reads headers as ``httpx.Headers.get`` does;
- ``CoalescingTransport`` puts the same bytes on the wire in the same order, as one write per
  loop iteration, and flushes before it closes;
- ``jsonwire`` writes and reads the values the standard library does, and falls back to it where
  orjson declines;
- the feedback store's ``json_text`` is ``json.dumps(clean_json(x))``; registrations are grouped
  while feedback never waits for the group.
"""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import numpy as np
import pytest

from caproute.core.http import DirectSender, header_values, not_identity
from caproute.data.text import clean_json
from caproute.serve import jsonwire
from caproute.serve.feedback import Feedback, FeedbackStore, json_text
from caproute.serve.slow_clients import CoalescingTransport


@pytest.mark.parametrize("method", ["POST", "GET", "PUT"])
@pytest.mark.parametrize("content", [b"", b'{"a":1}'])
def test_request_is_httpxs_request(method, content):
    d = DirectSender({})
    h = d.headers({"content-type": "application/json"})
    url = httpx.URL("http://127.0.0.1:8080/v1/chat/completions")
    got = d.request(method, url, content=content, headers=h, extensions={"x": 1})
    want = httpx.Request(method, url, content=content, headers=h, extensions={"timeout": d._timeout, "x": 1})
    assert got.headers.raw == want.headers.raw
    assert (got.method, got.url, got.content, got.extensions) == (want.method, want.url, want.content,
                                                                   want.extensions)


def test_request_with_its_own_length_header_is_left_to_httpx():
    d = DirectSender({})
    h = d.headers({"content-length": "3"})
    url = httpx.URL("http://b/x")
    got = d.request("POST", url, content=b"abc", headers=h)
    assert got.headers.raw == httpx.Request("POST", url, content=b"abc", headers=h).headers.raw


def test_header_values_are_httpx_get():
    h = httpx.Headers([(b"Content-Length", b"12"), (b"X-A", b"1"), (b"x-a", b"2"), (b"content-encoding", b" GZIP ")])
    assert header_values(h, b"content-length", b"x-a", b"absent") == [b"12", b"1, 2", None]
    assert header_values(h, b"x-a")[0].decode() == h.get("x-a")
    assert not_identity(header_values(h, b"content-encoding")[0])
    assert not any(not_identity(v) for v in (None, b"", b" identity", b"IDENTITY"))


class _Wire:
    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False
        self.extra = {"peername": ("127.0.0.1", 1)}

    def write(self, data):
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return self.extra.get(name, default)


def test_coalescing_transport_joins_one_iteration_and_flushes_on_close():
    async def go():
        wire = _Wire()
        t = CoalescingTransport(wire, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"")
        t.write(b"body")
        assert wire.writes == [] and t.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nbody")
        await asyncio.sleep(0)
        assert wire.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        t.write(b"a")
        await asyncio.sleep(0)
        t.write(b"b")
        t.writelines([b"c", b"d"])
        t.close()  # what is held goes out before the close
        await asyncio.sleep(0)  # the flush scheduled for b"b" finds nothing more to write
        return wire, t

    wire, t = asyncio.run(go())
    assert wire.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"a", b"bcd"] and wire.closed
    assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the wrapped transport's


@pytest.fixture(params=["orjson", "stdlib"])
def wire(request, monkeypatch):
    """jsonwire as installed (orjson), and as where orjson is not installed (the standard library)."""
    if request.param == "stdlib":
        monkeypatch.setattr(jsonwire, "orjson", None)
    return request.param


def test_jsonwire_writes_and_reads_what_json_does(wire):
    obj = {"id": "chatcmpl-1", "x": [1, 2.5, 1e-05, -0.0, True, None, "é", "😀"], "n": {"a": 0.1 + 0.2},
           "big": 2**70, "np": np.float64(0.25)}
    assert json.loads(jsonwire.dumps(obj)) == json.loads(json.dumps(obj))
    assert jsonwire.dumps({"a": 1}) == b'{"a":1}'
    # where orjson declines, the standard library writes it, as before
    assert jsonwire.dumps({"s": "\ud800"}) == json.dumps({"s": "\ud800"}, separators=(",", ":")).encode()
    assert jsonwire.dumps({1: "a"}) == b'{"1":"a"}'
    for text in ('{"a": [1, 2.5, "\\u00e9", "\\ud83d\\ude00"]}', '{"s": "\\ud800"}', '[NaN, 1e400]',
                 '{"n": 123456789012345678901234567890}', '{"a": 1, "a": 2}'):
        got, want = jsonwire.loads(text), json.loads(text)
        assert repr(got) == repr(want) or (math.isnan(got[0]) and math.isnan(want[0]))
        assert repr(jsonwire.loads(text.encode())) == repr(got) or isinstance(got, list)
    for bad in ("", "{", "[1,]", b"\xff"):
        with pytest.raises(ValueError):
            jsonwire.loads(bad)
    # objects JSON has no type for: default's answer, else json.dumps's TypeError
    import dataclasses
    import datetime

    @dataclasses.dataclass
    class D:
        x: int

    for odd in (D(1), datetime.date(2026, 1, 2), object()):
        with pytest.raises(TypeError):
            jsonwire.dumps({"o": odd})
        assert json.loads(jsonwire.dumps({"o": odd}, default=str)) == {"o": str(odd)}


@pytest.mark.parametrize("value", [{"mu_q": {"a": 0.5, "b": 1e-05}, "model": "a"}, {"m": "é\ud800x"},
                                   {"m": "😀"}, ["\udc00"], {"k\ud800": [1, {"z": "\ud83d"}]}])
def test_json_text_is_dumps_of_clean_json(value, wire):
    assert json.loads(json_text(value)) == json.loads(json.dumps(clean_json(value), default=str))


def test_json_text_writes_what_json_writes_for_odd_values(wire):
    import dataclasses
    import datetime

    @dataclasses.dataclass
    class D:
        x: int

    value = {"d": D(1), "t": datetime.date(2026, 1, 2), "f": np.float64(0.25), "big": 2**70, 3: "k"}
    assert json.loads(json_text(value)) == json.loads(json.dumps(value, default=str))


def test_registrations_are_grouped_and_feedback_does_not_wait_for_the_group(tmp_path):
    # a group waits up to 60 s for more registrations: only the feedback can end it early
    with FeedbackStore(tmp_path / "fb.sqlite3", group_wait_s=60.0) as store:
        for i in range(20):
            store.register({"response_id": f"r{i}", "kind": "chat", "model": "m", "decision": {"model": "m"}})
        fut = store.add(Feedback(kind="scalar", response_id="r19", score=1.0))
        stored = fut.result(timeout=30)  # well before the 60 s group wait
        assert stored.responses[0]["response_id"] == "r19"
        assert store.commits <= 2 and store.pending == 0  # 20 registrations and a feedback: one or two commits


@pytest.mark.parametrize("raw", [b'{"a": "x"}', b'{"a": "\\u00e9"}', b'{"a": "\\ud800"}', '{"a": "é😀"}'.encode(),
                                 b'{"n": 12345678901234567890123}', b'{"a": NaN}'])
def test_loads_clean_says_clean_only_when_clean_json_changes_nothing(raw):
    obj, clean = jsonwire.loads_clean(raw)
    assert repr(obj) == repr(json.loads(raw))
    if clean:
        assert clean_json(obj) is obj
    assert clean == (raw in (b'{"a": "x"}', '{"a": "é😀"}'.encode()))


def test_a_clean_body_skips_the_repair_and_a_dirty_one_is_repaired():
    from caproute.serve.schemas import CLEAN_TEXT, ChatCompletionRequest

    raw = b'{"model": "m", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    obj, clean = jsonwire.loads_clean(raw)
    assert not clean
    assert ChatCompletionRequest.model_validate(obj).messages[0].content == "a\ufffdb"
    ok, clean = jsonwire.loads_clean(b'{"model": "m", "messages": [{"role": "user", "content": "ab"}]}')
    assert clean and ChatCompletionRequest.model_validate(ok, context=CLEAN_TEXT).messages[0].content == "ab"


def test_a_server_process_freezes_the_heap_it_loaded(tmp_path):
    """prepare_server (caproute serve) moves what it loaded out of the collector's generations, so
    a full collection no longer walks the app (run in a child: freezing is for server processes)."""
    import subprocess
    import sys

    from caproute.serve.testing import TEST_MODELS, train_router, write_pool_yaml

    router = train_router(tmp_path / "router")
    pool = write_pool_yaml(tmp_path / "pool.yaml",
                           [{"name": n, "base_url": "http://127.0.0.1:9/v1", "model": n} for n in TEST_MODELS])
    code = (
        "import gc\n"
        "from caproute.serve.config import ServeConfig\n"
        "from caproute.serve.server import prepare_server\n"
        f"prepare_server(ServeConfig(routers={{'r': {str(router)!r}}}, pool={str(pool)!r}, insecure_local=True,"
        f" feedback_db={str(tmp_path / 'fb.sqlite3')!r}, log_level='warning'))\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()), gc.get_threshold()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    frozen, tracked, threshold0 = map(int, out.stdout.split()[-3:])
    assert frozen > 50_000 and tracked < frozen / 10, out.stdout
    assert threshold0 == 20_000


@pytest.mark.parametrize("path,stream", [("/v1/chat/completions", False), ("/v1/chat/completions", True),
                                         ("/v1/messages", False), ("/v1/route", False)])
def test_a_routed_request_leaves_no_reference_cycle(tmp_path, path, stream):
    """Everything a routed request builds is freed when it ends, without the cyclic collector (the
    proxy raises the collector's threshold on that ground): no caproute object of a request is
    cyclic garbage after it. Driven through the app's ASGI callable, backends over real HTTP."""
    import gc

    from caproute.serve.app import create_app
    from caproute.serve.config import ServeConfig
    from caproute.serve.echo import echo_app
    from caproute.serve.testing import TEST_MODELS, UvicornThread, train_router, write_pool_yaml

    backends = {n: UvicornThread(echo_app(n)).start() for n in TEST_MODELS}
    try:
        pool = write_pool_yaml(tmp_path / "pool.yaml",
                               [{"name": n, "base_url": b.base_url + "/v1", "model": n} for n, b in backends.items()])
        app = create_app(ServeConfig(routers={"r": train_router(tmp_path / "router")}, pool=pool,
                                     insecure_local=True, feedback_db=tmp_path / "fb.sqlite3"))
        messages = [{"role": "user", "content": "what is 2 + 2?"}]
        body = {"model": "caproute/r", "messages": messages, "max_tokens": 4} if path != "/v1/route" else \
            {"model": "caproute/r", "input": "what is 2 + 2?"}
        if stream:
            body["stream"] = True
        raw = json.dumps(body).encode()

        async def request():
            sent, given = [], False

            async def receive():
                nonlocal given
                if not given:
                    given = True
                    return {"type": "http.request", "body": raw, "more_body": False}
                await asyncio.sleep(3600)

            async def send(message):
                sent.append(message)

            scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                     "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
                     "root_path": "", "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
                     "headers": [(b"content-type", b"application/json")], "state": {}}
            await app(scope, receive, send)
            assert sent[0]["status"] == 200, sent

        async def main():
            inbox, outbox = asyncio.Queue(), asyncio.Queue()
            await inbox.put({"type": "lifespan.startup"})
            life = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                             inbox.get, outbox.put))
            assert (await outbox.get())["type"] == "lifespan.startup.complete"
            await request()  # first-use caches (labels, spans, the router's transposed matrix)
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for _ in range(10):
                    await request()
                gc.collect()
                ours = [o for o in gc.garbage if type(o).__module__.startswith("caproute")]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
            await inbox.put({"type": "lifespan.shutdown"})
            await outbox.get()
            await life
            return ours

        assert asyncio.run(main()) == []
    finally:
        for b in backends.values():
            b.stop()
