"""Issue 23, items 4-9: the proxy against broken text, malformed backend HTTP, feedback floods and
replays, slow clients, and a supervisor killed with -9 (real uvicorn servers on loopback).

Each class is tested at its mechanism:
- text: one rule (:mod:`caproute.data.text`) at every boundary, and background writers that keep
  a record they cannot store in a dead-letter file instead of dying;
- transport: every malformed backend answer (tests/faultserver.py ``RawBackend``) is a counted
  backend error and a fallback, and no answer beyond ``max_response_bytes`` is read;
- feedback: one rating per (response, key), the latest winning; a duel's result learned once;
  a rate per key; scores strictly typed;
- slow clients: header, body and keep-alive deadlines and a connection cap close them;
  workers end with their parent.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from caproute.data.text import SurrogateCarry, clean_json, clean_text, decode_text
from caproute.serve.app import create_app
from caproute.serve.auth import append_key
from caproute.serve.config import ServeConfig
from caproute.serve.feedback import Feedback, FeedbackStore
from caproute.serve.log_store import RequestLog
from caproute.serve.slow_clients import ClientLimits
from caproute.serve.testing import TEST_MODELS, UvicornThread, free_port, train_router, write_pool_yaml

sys.path.insert(0, str(Path(__file__).parent))
from _procgroups import group_gone, stop_group  # noqa: E402
from faultserver import RAW_FAULTS, RAW_HUGE_UNTIL_CLOSE, SPLIT_EMOJI, FaultServer, RawBackend  # noqa: E402

ROUTER = "caproute/r"
USER = [{"role": "user", "content": "what is 2 + 2?"}]
EMOJI = "\U0001F600"
CAP = 64 * 1024  # max_response_bytes of the proxies here


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("hardening")
    fault = FaultServer()
    backend = UvicornThread(fault).start()
    raw = RawBackend()
    url = backend.base_url + "/v1"
    env = {
        "dir": d, "fault": fault, "raw": raw, "router": train_router(d / "router"),
        "pool": write_pool_yaml(d / "pool.yaml", [{"name": n, "base_url": url, "model": n, "timeout_s": 10}
                                                  for n in TEST_MODELS]),
        # big and mid answer malformed HTTP (RawBackend), small is fine: every routed request falls back
        "raw_pool": write_pool_yaml(d / "raw.yaml", [
            {"name": n, "base_url": (raw.base_url + "/v1") if n != "small" else url, "model": n, "timeout_s": 10}
            for n in TEST_MODELS]),
    }
    yield env
    raw.stop()
    backend.stop()


def proxy(env, name, pool="pool", **kw):
    cfg = ServeConfig(**{"routers": {"r": env["router"]}, "pool": env[pool], "insecure_local": True,
                         "feedback_db": env["dir"] / f"{name}.sqlite3", "max_response_bytes": CAP, **kw})
    return UvicornThread(create_app(cfg))


def metric(srv, name: str, **labels) -> float:
    text = httpx.get(srv.base_url + "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    key = f"{name}{{{want}}}" if labels else name
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(key + " "))


# ---- item 3: text is text everywhere -----------------------------------------------------------------

def test_the_text_rule():
    assert clean_text("a\ud83d\ude00b") == f"a{EMOJI}b"          # a pair as two code points is joined
    assert clean_text("x\ud800y\udfff") == "x\ufffdy\ufffd"          # lone halves are replaced
    assert clean_text("plain ascii") == "plain ascii" and clean_text("déjà") == "déjà"
    assert decode_text(b"ok \xff \xed\xa0\x80") == "ok \ufffd \ufffd\ufffd\ufffd"  # invalid UTF-8, CESU surrogate
    same = {"a": ["b", {"c": 1}]}
    assert clean_json(same) is same                                    # nothing to repair: no copy
    assert clean_json({"k\udc00": ["\ud800", 2]}) == {"k\ufffd": ["\ufffd", 2]}
    carry = SurrogateCarry()
    assert [carry.push(SPLIT_EMOJI[0]), carry.push(SPLIT_EMOJI[1]), carry.push("z\ud83d"), carry.flush()] == \
        ["Hi ", f"{EMOJI}!", "z", "\ufffd"]


def test_stream_chunks_join_a_split_pair_and_flush_a_lone_half():
    from caproute.serve.backends import sse_chunks

    def line(text, index=0):
        return "data: " + json.dumps({"choices": [{"index": index, "delta": {"content": text}}]})

    async def collect(lines):
        async def gen():
            for ln in lines:
                yield ln
        return [c async for c in sse_chunks(gen())]

    out = asyncio.run(collect([line(SPLIT_EMOJI[0]), line(SPLIT_EMOJI[1]), line("end \ud83d"), "data: [DONE]"]))
    texts = [c["choices"][0]["delta"]["content"] for c in out if c is not None]
    assert "".join(texts) == f"Hi {EMOJI}!end \ufffd" and out[-1] is None
    assert all(t.encode("utf-8") for t in texts)


def test_request_log_writer_survives_a_bad_record(tmp_path):
    log = RequestLog(tmp_path / "log.sqlite3").start()
    try:
        # an int SQLite cannot bind (OverflowError, not sqlite3.Error): once the writer thread died of it
        log.record(response_id="poison", kind="chat", model="m", messages=[], answer="a",
                   usage={"prompt_tokens": 10**30})
        log.record(response_id="after", kind="chat", model="m", messages=[{"role": "user", "content": "\ud800"}],
                   answer="lone \ud83d and pair \ud83d\ude00")
        deadline = time.monotonic() + 10
        while log.written < 1 or log.dead.count < 1:
            assert time.monotonic() < deadline, (log.written, log.dead.count)
            time.sleep(0.02)
        assert log.alive
    finally:
        log.close()
    rows = sqlite3.connect(tmp_path / "log.sqlite3").execute("SELECT response_id, messages, answer FROM requests")
    rows = rows.fetchall()
    assert [r[0] for r in rows] == ["after"]
    assert json.loads(rows[0][1])[0]["content"] == "\ufffd" and rows[0][2] == f"lone \ufffd and pair {EMOJI}"
    dead = [json.loads(ln) for ln in (tmp_path / "log.sqlite3.dead-letter.jsonl").read_text().splitlines()]
    assert len(dead) == 1 and dead[0]["record"]["response_id"] == "poison" and "OverflowError" in dead[0]["error"]


def test_request_log_queue_is_bounded(tmp_path, monkeypatch):
    gate = threading.Event()
    real = RequestLog._commit

    def slow_commit(self, con, sql, rows):
        gate.wait(10)
        real(self, con, sql, rows)

    monkeypatch.setattr(RequestLog, "_commit", slow_commit)
    log = RequestLog(tmp_path / "log.sqlite3", max_batch=1, max_queue=3).start()
    for i in range(20):
        log.record(response_id=f"r{i}", kind="chat", model="m", messages=[], answer="a")
    assert log.dropped >= 20 - 3 - 1  # the queue holds 3, the stalled writer one
    gate.set()
    log.close()
    assert log.written == 20 - log.dropped


def test_feedback_writer_survives_a_bad_registration(tmp_path):
    with FeedbackStore(tmp_path / "fb.sqlite3") as store:
        store.register({"response_id": "poison", "kind": "chat", "lam": 10**30})
        store.register({"response_id": "good", "kind": "chat", "routing_text": "half \ud83d"})
        stored = store.add(Feedback("scalar", "good", score=1.0)).result(10)
        assert stored.responses[0]["routing_text"] == "half \ufffd"
        with pytest.raises(LookupError):
            store.add(Feedback("scalar", "poison", score=1.0)).result(10)
        assert store.alive and store.pending == 0 and store.dead.count == 1
    dead = (tmp_path / "fb.sqlite3.dead-letter.jsonl").read_text()
    assert '"poison"' in dead and "OverflowError" in dead


def test_text_end_to_end(env, tmp_path):
    """A split emoji from a backend reaches the client and the log joined; a client's lone surrogate is
    answered, rated, logged and exported (U+FFFD); the writers stay alive."""
    from caproute.serve.feedback_export import export_feedback

    env["fault"].modes.update(dict.fromkeys(TEST_MODELS, "split_emoji"))
    try:
        with proxy(env, "text", log_store=tmp_path / "requests.sqlite3") as srv:
            url = srv.base_url + "/v1/chat/completions"
            r = httpx.post(url, json={"model": ROUTER, "messages": USER, "stream": True}, timeout=30)
            events = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
            text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
            assert r.status_code == 200 and text == f"Hi {EMOJI}!"
            r = httpx.post(url, json={"model": ROUTER, "messages": USER}, timeout=30)
            assert r.json()["choices"][0]["message"]["content"] == f"Hi {EMOJI}! \ufffd"
            # the client's message holds a lone surrogate (valid JSON escape): answered, not a 500
            body = json.dumps({"model": ROUTER, "messages": [{"role": "user", "content": "bad \ud800 text"}]})
            r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
            assert r.status_code == 200, r.text
            rid = r.headers["x-caproute-response-id"]
            fb = json.dumps({"response_id": rid, "score": 1, "comment": "\udead"})
            r = httpx.post(srv.base_url + "/v1/feedback", content=fb, headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text
            # a body that is not UTF-8 is not JSON: a named 400
            r = httpx.post(url, content=b'{"model": "caproute/r", "messages": [{"role": "user", "content": "\xff"}]}',
                           headers={"content-type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", r.text
            time.sleep(0.3)
            assert metric(srv, "caproute_writer_alive", writer="request_log") == 1
            assert metric(srv, "caproute_writer_alive", writer="feedback_store") == 1
            assert metric(srv, "caproute_dead_letters", writer="request_log") == 0
    finally:
        env["fault"].modes.clear()
    answers = [r[0] for r in sqlite3.connect(tmp_path / "requests.sqlite3").execute("SELECT answer FROM requests")]
    assert f"Hi {EMOJI}!" in answers and f"Hi {EMOJI}! \ufffd" in answers
    rep = export_feedback(env["dir"] / "text.sqlite3", log_store=tmp_path / "requests.sqlite3",
                          observations=tmp_path / "obs.parquet")
    assert rep.observations == 1
    import pandas as pd

    assert pd.read_parquet(tmp_path / "obs.parquet")["question"].tolist() == ["bad \ufffd text"]


def test_collect_queries_reads_a_chat_log_with_lone_surrogates(tmp_path):
    from caproute.collect.queries import load_queries

    p = tmp_path / "chat.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "hi \ud800 there"}]}) + "\n"
                 + json.dumps({"messages": [{"role": "user", "content": "pair \ud83d\ude00"}]}) + "\n")
    q = load_queries(p)
    assert sorted(q["question"]) == ["hi \ufffd there", f"pair {EMOJI}"]


# ---- item 4: malformed backend HTTP is a backend error ----------------------------------------------

RAW_REASON = {**dict.fromkeys(RAW_FAULTS, "bad_http"), "huge_declared": "too_large", "huge_chunk": "too_large",
              RAW_HUGE_UNTIL_CLOSE: "too_large"}


@pytest.fixture(scope="module")
def raw_srv(env):
    with proxy(env, "raw", pool="raw_pool") as s:
        yield s


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("fault", sorted(RAW_REASON))
def test_malformed_backend_http_falls_back(env, raw_srv, fault, stream):
    env["raw"].fault = fault
    try:
        before = {m: metric(raw_srv, "caproute_backend_errors_total", model=m, reason=RAW_REASON[fault])
                  for m in ("big", "mid")}
        t0 = time.monotonic()
        r = httpx.post(raw_srv.base_url + "/v1/chat/completions",
                       json={"model": ROUTER, "messages": USER, "stream": stream}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["x-caproute-model"] == "small"
        assert time.monotonic() - t0 < 10
        meta = r.json()["caproute"] if not stream else json.loads(r.text.split("data: ", 2)[1])["caproute"]
        assert {a["model"]: a["reason"] for a in meta["attempts"]} == dict.fromkeys(("big", "mid"), RAW_REASON[fault])
        for m in ("big", "mid"):
            assert metric(raw_srv, "caproute_backend_errors_total", model=m, reason=RAW_REASON[fault]) == before[m] + 1
    finally:
        env["raw"].fault = None


def test_a_huge_answer_is_not_read(env, raw_srv):
    env["raw"].fault, env["raw"].sent = RAW_HUGE_UNTIL_CLOSE, 0
    try:
        r = httpx.post(raw_srv.base_url + "/v1/chat/completions", json={"model": "big", "messages": USER}, timeout=30)
        assert r.status_code == 502 and "too_large" in r.json()["error"]["message"]
        time.sleep(0.5)
        assert env["raw"].sent < 16 << 20  # the proxy hung up near the 64 KiB cap, not after 100 MB
    finally:
        env["raw"].fault = None


# ---- item 5: feedback idempotent and bounded ---------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(env):
    keys = env["dir"] / "keys.txt"
    a, b = append_key(keys, "a"), append_key(keys, "b")
    cfg = ServeConfig(routers={"r": env["router"]}, pool=env["pool"], keys_file=keys,
                      feedback_db=env["dir"] / "keyed.sqlite3", feedback_burst=5, feedback_rate_per_s=0.2)
    with UvicornThread(create_app(cfg)) as srv:
        yield srv, a, b


def _post(srv, key, body, raw: bytes | None = None):
    return httpx.post(srv.base_url + "/v1/feedback", headers={"authorization": f"Bearer {key}",
                                                             "content-type": "application/json"},
                      content=raw if raw is not None else json.dumps(body), timeout=30)


@pytest.mark.parametrize("bad", ['"1"', "true", "false", '"0.5"', "[1]"])
def test_scores_are_strictly_typed(keyed, bad):
    srv, a, _ = keyed
    r = _post(srv, a, None, raw=b'{"response_id": "x", "score": ' + bad.encode() + b"}")
    assert r.status_code == 400 and r.json()["error"]["param"] == "score", r.text


@pytest.mark.parametrize("bad", ['"yes"', "1", '"true"'])
def test_tie_is_strictly_typed(keyed, bad):
    srv, a, _ = keyed
    r = _post(srv, a, None, raw=b'{"winner_id": "x", "loser_id": "y", "tie": ' + bad.encode() + b"}")
    assert r.status_code == 400 and r.json()["error"]["param"] == "tie", r.text


def test_one_rating_per_response_and_key_and_a_rate_per_key(env, keyed):
    srv, a, b = keyed
    h = {"authorization": f"Bearer {a}"}
    rid = httpx.post(srv.base_url + "/v1/route", json={"input": "hello"}, headers=h).json()["decisions"][0]["id"]
    ids = set()
    for score in (0.1, 0.2, 0.3, 0.4, 0.5):  # the burst: every one answered, each replacing the last
        r = _post(srv, a, {"response_id": rid, "score": score})
        assert r.status_code == 200, r.text
        ids.add(r.json()["id"])
    assert len(ids) == 1
    flood = [_post(srv, a, {"response_id": rid, "score": 1.0}) for _ in range(20)]
    assert {r.status_code for r in flood} == {429}
    err = flood[0].json()["error"]
    assert err["code"] == "rate_limited" and int(flood[0].headers["retry-after"]) >= 1
    assert _post(srv, b, {"response_id": rid, "score": 0.9}).status_code == 200  # another key: its own bucket
    rows = sqlite3.connect(env["dir"] / "keyed.sqlite3").execute(
        "SELECT key_id, score FROM feedback WHERE response_id = ? ORDER BY rowid", (rid,)).fetchall()
    assert [s for _, s in rows] == [0.5, 0.9] and len({k for k, _ in rows}) == 2
    assert all(k and a not in k and b not in k for k, _ in rows)  # an id of the key, never the key


class _Policy:
    def __init__(self):
        self.checkpoint_, self.updates, self.saves = {}, 0, 0

    def embed(self, text):
        return text

    def update(self, x, i, j, y):
        self.updates += 1

    def save(self, path):
        self.saves += 1


def test_a_duel_result_is_learned_once(tmp_path):
    from caproute.serve.app import Duel
    from caproute.serve.duel_state import attach, catch_up

    async def run():
        with FeedbackStore(tmp_path / "fb.sqlite3") as store:
            duel = Duel(_Policy(), {}, tmp_path / "out")
            duel.save_lock = asyncio.Lock()
            await attach(duel, store)
            for arm in (0, 1):
                store.register({"response_id": f"d1-{arm}", "kind": "duel", "duel_id": "d1", "duel_arm": arm,
                                "routing_text": "q"})

            async def verdict(w, lo, key="k1", tie=False):
                await asyncio.wrap_future(store.add(Feedback("pairwise", w, lo, tie=tie, key_id=key)))
                return await catch_up(duel, store)

            assert await verdict("d1-0", "d1-1") == 1
            for _ in range(150):  # the same {winner_id, loser_id} replayed
                assert await verdict("d1-0", "d1-1") == 0
            assert await verdict("d1-0", "d1-1", key="k2") == 0   # another key on the same duel
            assert await verdict("d1-1", "d1-0") == 0             # a changed mind: stored, not learned
            assert duel.policy.updates == 1 and duel.policy.saves == 1
            rows = await asyncio.wrap_future(store.query("SELECT count(*) AS n FROM feedback"))
            assert rows[0]["n"] == 2  # one comparison per (pair, key)

    asyncio.run(run())


# ---- item 6: slow clients and orphaned workers -------------------------------------------------------

async def _slow_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    if scope["path"] == "/slow":
        await asyncio.sleep(1.5)  # longer than every client deadline: an answer is never cut
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


LIMITS = ClientLimits(header_timeout_s=0.5, body_timeout_s=0.5, keep_alive_timeout_s=0.5, max_connections=40)


def _closed_within(socks, seconds: float, trickle: dict[int, list[bytes]]) -> set[int]:
    """Indices of ``socks`` the server closed within ``seconds``; ``trickle[i]`` is sent one piece per 0.1 s."""
    closed: set[int] = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(closed) < len(socks):
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                if trickle.get(i):
                    s.send(trickle[i].pop(0) if len(trickle[i]) > 1 else trickle[i][0])
                if select.select([s], [], [], 0)[0] and s.recv(4096) == b"":
                    closed.add(i)
            except OSError:
                closed.add(i)
        time.sleep(0.1)
    return closed


def test_slow_clients_are_closed_and_capped():
    with UvicornThread(_slow_app, client_limits=LIMITS) as srv:
        slow = {}

        def slow_request():
            slow["r"] = httpx.get(srv.base_url + "/slow", timeout=10)

        t = threading.Thread(target=slow_request)
        t.start()
        time.sleep(0.3)  # connected first: inside the cap
        socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(50)]
        try:
            # half trickle header lines forever, half send nothing; 11 are over the cap of 40
            trickle = {i: [b"GET / HTTP/1.1\r\n", b"X-a: b\r\n"] for i in range(0, 50, 2)}
            closed = _closed_within(socks, 0.5 + 4.0, trickle)
            t.join(10)
            assert closed == set(range(50)), f"{50 - len(closed)} slow connections still open"
            assert slow["r"].status_code == 200  # a request in time is answered, however long it takes
        finally:
            for s in socks:
                s.close()
        # a body that trickles is closed too; an idle kept-alive connection as well
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        assert _closed_within([s], 4.0, {0: [b"x"]}) == {0}
        s.close()
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _closed_within([s], 4.0, {}) == {0}
        s.close()
        assert httpx.get(srv.base_url + "/").text == "ok"  # and the server still serves
    from caproute.serve.slow_clients import CLOSED

    assert CLOSED["header_timeout"] >= 39 and CLOSED["max_connections"] >= 10 and CLOSED["body_timeout"] >= 1


@pytest.mark.slow
def test_workers_end_when_their_parent_is_killed(env):
    port = free_port()
    log = open(env["dir"] / "orphans.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "caproute", "serve", "--router", f"r={env['router']}", "--pool", str(env["pool"]),
         "--insecure-local", "--log-level", "warning", "--port", str(port), "--workers", "2",
         "--feedback-db", str(env["dir"] / "orphans.sqlite3")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (env["dir"] / "orphans.log").read_text()
            time.sleep(0.2)
        kids = [int(k) for k in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        workers = [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        from caproute.core.procs import proc_stat

        def alive(pid):
            st = proc_stat(pid)
            return st is not None and st[0] != "Z"

        while any(alive(w) for w in workers):
            assert time.monotonic() - t0 < 10, "workers outlived their parent"
            time.sleep(0.1)
        from caproute.serve.server import bind_socket

        bind_socket("127.0.0.1", port).close()  # a restart can bind the port
    finally:
        if not group_gone(proc.pid):
            stop_group(proc.pid)
        log.close()
