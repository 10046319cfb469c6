"""Three ``caproute serve`` replicas share one PostgreSQL state (issue 26, item 3).

A real PostgreSQL server started here (initdb/pg_ctl in a temporary directory), three real serve
processes on different ports with ``--state postgresql://...``, echo backends, the MiniLM encoder:

- feedback spread over the replicas reaches every replica's duel policy, and after the same duels
  each replica's policy equals one process fed that sequence (in the log's order: the Laplace
  update is sequential, so the order matters, and every replica applies the one global order);
- sticky conversations hold across replicas;
- kill -9 of a replica in the middle of a stream loses no acknowledged feedback;
- a database restart during traffic: chat keeps answering (registrations are queued and retried),
  feedback gets 503s, no acknowledged registration or feedback is lost, and the replicas recover
  without a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from caproute.serve.stores import pg
from caproute.serve.stores.tempdb import TempPostgres, pg_bin

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (apt-get install postgresql)")]
N = 3


def slow_stream_app():
    """A backend whose stream sends one chunk, then nothing for a minute (a replica dies meanwhile)."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        chunk = {"id": "s", "object": "chat.completion.chunk", "created": 0, "model": "slow",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "first"}, "finish_reason": None}]}
        await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                    "more_body": True})
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:  # the test's teardown
            return

    return app


def _metric(url: str, name: str) -> float | None:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    from caproute.bandits.fgts import FGTSCDB
    from caproute.features.minilm import minilm_path
    from caproute.serve.echo import echo_app
    from caproute.serve.testing import TEST_MODELS, UvicornThread, free_port, train_router, write_pool_yaml

    d = tmp_path_factory.mktemp("replicas")
    db = TempPostgres().init()
    backends = {n: UvicornThread(echo_app(n)).start() for n in TEST_MODELS}
    backends["slow"] = UvicornThread(slow_stream_app()).start()
    procs: list[subprocess.Popen | None] = []
    try:
        pool = write_pool_yaml(d / "pool.yaml", [{"name": n, "base_url": b.base_url + "/v1", "model": n,
                                                  "timeout_s": 120} for n, b in backends.items()])
        router = train_router(d / "router")
        rng = np.random.default_rng(0)
        arms = rng.normal(size=(3, 384))
        arms /= np.linalg.norm(arms, axis=1, keepdims=True)
        FGTSCDB(arms, list(TEST_MODELS), sampler="laplace", feel_good="tilt", seed=0,
                encoder=str(minilm_path())).save(d / "policy")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        urls = []

        def start(k: int, port: int) -> subprocess.Popen:
            cmd = [sys.executable, "-m", "caproute", "serve", "--router", f"r={router}", "--pool", str(pool),
                   "--insecure-local", "--port", str(port), "--state", db.url, "--state-refresh", "0.5",
                   "--feedback-db", str(d / f"dead-{k}.sqlite3"), "--duel-policy", str(d / "policy"),
                   "--duel-state-out", str(d / f"online-{k}")]
            return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)

        for k in range(N):
            port = free_port()
            urls.append(f"http://127.0.0.1:{port}")
            procs.append(start(k, port))
        deadline = time.monotonic() + 240
        for url, p in zip(urls, procs, strict=True):
            while True:
                assert p.poll() is None, p.stderr.read()
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "replicas did not come up"
                time.sleep(0.3)
        yield {"db": db, "urls": urls, "procs": procs, "dir": d}
    finally:
        for p in procs:
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            if p is not None:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        for b in backends.values():
            b.stop(5)
        db.__exit__(None, None, None)


def _duel(url: str, text: str) -> dict:
    r = httpx.post(url + "/v1/chat/completions", json={"model": "caproute/duel", "max_tokens": 4,
                                                       "messages": [{"role": "user", "content": text}]}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["caproute"]["duel"]


def _vote(url: str, winner: str, loser: str) -> httpx.Response:
    return httpx.post(url + "/v1/feedback", json={"winner_id": winner, "loser_id": loser}, timeout=60)


def _wait_applied(urls, seq: int, timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if all((_metric(u, "caproute_duel_applied_seq") or 0) >= seq for u in urls):
            return
        time.sleep(0.2)
    raise AssertionError(f"not every replica applied increment {seq}: "
                         f"{[_metric(u, 'caproute_duel_applied_seq') for u in urls]}")


def test_1_feedback_on_any_replica_reaches_every_policy_as_one_process(replicas):
    from caproute.bandits.policy import DuelingPolicy

    urls, d = replicas["urls"], replicas["dir"]
    texts = {}
    for k in range(6):  # duel on replica k, feedback (b beats a) on replica k+1
        text = f"how many legs does animal number {k} have?"
        duel = _duel(urls[k % N], text)
        a, b = duel["response_ids"]
        r = _vote(urls[(k + 1) % N], b, a)
        assert r.status_code == 200 and r.json()["policy_updated"] is True, r.text
        texts[duel["duel_id"]] = (text, duel["models"][1], duel["models"][0])
        assert _vote(urls[(k + 2) % N], a, b).json()["policy_updated"] is False  # a duel is learned once
    con = pg.connect(replicas["db"].url)
    rows = con.execute("SELECT seq, duel_id, x FROM duel_updates ORDER BY seq").fetchall()
    con.close()
    assert [r["duel_id"] for r in rows] and sorted(r["duel_id"] for r in rows) == sorted(texts)
    _wait_applied(urls, rows[-1]["seq"])
    assert all(_metric(u, "caproute_state_refresh_interval_seconds") == 0.5 for u in urls)
    assert all(_metric(u, "caproute_state_staleness_seconds") < 5 for u in urls)
    # one process fed the same duels in the log's order
    ref = DuelingPolicy.load(d / "policy")
    for r in rows:
        text, winner, loser = texts[r["duel_id"]]
        x = ref.embed(text)
        np.testing.assert_allclose(np.frombuffer(r["x"], "<f8"), x, atol=1e-6)  # the serving replica's embedding
        ref.update(np.frombuffer(r["x"], "<f8"), ref.model_index(winner), ref.model_index(loser), 1)
    for k in range(N):
        p = DuelingPolicy.load(d / f"online-{k}")
        assert p.t_ == ref.t_ == 6 and p.checkpoint_["duel_seq"] == rows[-1]["seq"]
        np.testing.assert_array_equal(p.history_.first, ref.history_.first)
        np.testing.assert_array_equal(p.history_.x, ref.history_.x)
        np.testing.assert_allclose(p.theta_map_, ref.theta_map_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(p.cov_, ref.cov_, rtol=0, atol=1e-12)


def test_2_sticky_conversations_hold_across_replicas(replicas):
    urls = replicas["urls"]
    head = {"x-caproute-conversation-id": "conv-42"}
    first = httpx.post(urls[0] + "/v1/chat/completions", headers=head, timeout=60,
                       json={"model": "caproute/r", "messages": [{"role": "user", "content": "question 3: hello"}]})
    model = first.json()["caproute"]["model"]
    for k, text in ((1, "question 17: topic5word3 something else"), (2, "question 9: topic1word2")):
        r = httpx.post(urls[k] + "/v1/chat/completions", headers=head, timeout=60,
                       json={"model": "caproute/r", "messages": [{"role": "user", "content": text}]})
        meta = r.json()["caproute"]
        assert meta["sticky"] is True and meta["model"] == model


def test_3_kill9_mid_stream_loses_no_acknowledged_feedback(replicas):
    urls, procs = replicas["urls"], replicas["procs"]
    acked = []
    for k in range(3):  # acknowledged just before the kill, on the replica that dies
        duel = _duel(urls[2], f"what colour is fruit {k}?")
        a, b = duel["response_ids"]
        r = _vote(urls[2], a, b)
        assert r.status_code == 200 and r.json()["policy_updated"]
        acked.append(r.json()["id"])
    with httpx.stream("POST", urls[2] + "/v1/chat/completions", timeout=60,
                      json={"model": "slow", "stream": True, "messages": [{"role": "user", "content": "go"}]}) as s:
        assert s.status_code == 200
        next(s.iter_lines())  # the first chunk arrived: the replica is mid-stream
        os.killpg(procs[2].pid, signal.SIGKILL)
        procs[2].wait(30)
    con = pg.connect(replicas["db"].url)
    ids = {r["feedback_id"] for r in con.execute("SELECT feedback_id FROM feedback")}
    seq = con.execute("SELECT max(seq) AS s FROM duel_updates").fetchone()["s"]
    con.close()
    assert set(acked) <= ids
    _wait_applied(urls[:2], seq)  # the survivors learned what the dead replica acknowledged


def test_4_database_restart_during_traffic(replicas):
    urls, db = replicas["urls"][:2], replicas["db"]
    answered: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def traffic(url):
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                r = c.post(url + "/v1/chat/completions",
                           json={"model": "caproute/r", "messages": [{"role": "user", "content": "question 5: hi"}]})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    answered.append(r.json()["caproute"]["response_id"])
                time.sleep(0.02)

    threads = [threading.Thread(target=traffic, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    time.sleep(1.0)
    rid = answered[-1]
    db.stop()
    time.sleep(0.5)
    down = _vote_scalar(urls[0], rid)
    assert down.status_code == 503 and down.json()["error"]["code"] == "feedback_store_unavailable"
    n_down = len(answered)
    time.sleep(1.5)
    assert len(answered) > n_down  # chat kept answering while the database was down
    db.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert set(statuses) <= {200, 503}
    # the replicas recovered without a restart: feedback is stored again, duels learn again
    end = time.monotonic() + 30
    while (r := _vote_scalar(urls[0], answered[-1])).status_code != 200:
        assert time.monotonic() < end, r.text
        time.sleep(0.5)
    duel = _duel(urls[1], "after the restart")
    assert _vote(urls[0], *duel["response_ids"]).json()["policy_updated"] is True
    # no registration lost: every answered id is stored once the backlogs drain
    end = time.monotonic() + 30
    while True:
        con = pg.connect(db.url)
        stored = {r["response_id"] for r in con.execute("SELECT response_id FROM responses WHERE kind = 'chat'")}
        con.close()
        if set(answered) <= stored or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert set(answered) <= stored, f"{len(set(answered) - stored)} registrations lost"
    assert all((_metric(u, "caproute_state_staleness_seconds") or 0) < 5 for u in urls)


def _vote_scalar(url: str, rid: str) -> httpx.Response:
    return httpx.post(url + "/v1/feedback", json={"response_id": rid, "score": 1.0}, timeout=60)


def test_5_a_wrong_or_unreachable_database_is_named_before_the_banner(replicas, tmp_path):
    d = replicas["dir"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for url, words in (("postgresql://u:secret@127.0.0.1:1/x", "cannot connect"),
                       (replicas["db"].url.replace("/caproute?", "/nosuchdb?"), "nosuchdb")):
        res = subprocess.run([sys.executable, "-m", "caproute", "serve", "--router", f"r={d / 'router'}", "--pool",
                              str(d / "pool.yaml"), "--insecure-local", "--port", "0", "--state", url],
                             capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 2 and words in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and "secret" not in res.stderr and "caproute serve:" not in res.stdout
