"""``caproute serve`` (a real subprocess) in front of the real local llama.cpp pool, driven by the
official ``openai`` client: routing, streaming, auth failures, malformed bodies, 200 concurrent
requests with no error and no lost feedback, graceful shutdown that drains a stream, and fallback
when a backend process is killed. Answers are kept to a few tokens (2 CPU cores)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from caproute.serve.auth import append_key
from caproute.serve.testing import free_port

pytestmark = [pytest.mark.pool, pytest.mark.slow]
pytest.importorskip("llama_cpp")

# Two pool members keep the test light; the router is trained on the builtin set (collected on this
# pool) restricted to those two models.
POOL_MODELS = ("smollm2-135m", "smollm2-135m-q2k")
USER = [{"role": "user", "content": "What is 2 + 2? Answer with a number."}]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from caproute.collect.pool import start_pool

    d = tmp_path_factory.mktemp("pool")
    handle = start_pool(
        list(POOL_MODELS),
        port_base=0,
        workdir=d / "work",
        config_out=d / "pool.yaml",
        n_threads=1,
        n_ctx=512,
        ready_timeout_s=180,
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    from caproute.data.source import load_observations
    from caproute.routers.pipeline import train_pipeline

    obs, _ = load_observations(data="builtin")
    obs = obs[obs["model"].astype(str).isin(POOL_MODELS)]
    if obs["model"].nunique() != len(POOL_MODELS):
        pytest.skip(f"the builtin observations do not cover the pool models {POOL_MODELS}")
    return train_pipeline(obs, router="knn", features="tfidf").save(tmp_path_factory.mktemp("r") / "dars-knn")


def _write(path, text: str):
    path.write_text(text)
    return path


class ServeProcess:
    """``python -m caproute serve ...`` on a free loopback port."""

    def __init__(self, tmp, pool, router, key_file):
        self.port = free_port()
        self.db = tmp / f"feedback-{self.port}.sqlite3"
        self.log = open(tmp / f"serve-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "caproute",
                "serve",
                "--router",
                f"dars-knn={router}",
                "--pool",
                str(pool.config_path),
                "--port",
                str(self.port),
                "--keys-file",
                str(key_file),
                "--feedback-db",
                str(self.db),
                "--log-level",
                "warning",
                # a load test: 200 ratings from one key at once are above the default per-key rate
                "--config",
                str(_write(tmp / "serve.yaml", "feedback_rate_per_s: 1000\nfeedback_burst: 1000\n")),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.flush()
                raise RuntimeError(
                    "caproute serve did not start:\n" + Path(self.log.name).read_text()[-3000:]
                )
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.log.close()


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    f = tmp_path_factory.mktemp("keys") / "keys.txt"
    return f, append_key(f, "pool-test")


@pytest.fixture(scope="module")
def server(tmp_path_factory, pool, router, key):
    s = ServeProcess(tmp_path_factory.mktemp("serve"), pool, router, key[0])
    yield s
    s.stop()


def client(server, key, **kw):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120, **kw)


def test_routing_and_streaming(server, key):
    c = client(server, key[1])
    assert [m.id for m in c.models.list().data] == ["caproute/dars-knn", *POOL_MODELS]
    raw = c.chat.completions.with_raw_response.create(
        model="caproute/dars-knn", messages=USER, max_tokens=8, temperature=0, seed=1
    )
    comp = raw.parse()
    assert raw.headers["x-caproute-model"] == comp.model in POOL_MODELS
    assert comp.choices[0].message.content.strip() and comp.usage.completion_tokens >= 1
    assert comp.model_extra["caproute"]["decision"]["model"] == comp.model
    cheap = c.chat.completions.create(model="caproute/dars-knn:lambda=1000", messages=USER, max_tokens=4)
    d = cheap.model_extra["caproute"]["decision"]
    assert d["lambda"] == 1000 and cheap.model == d["model"] == max(d["utility"], key=d["utility"].get)
    with c.chat.completions.with_streaming_response.create(
        model="caproute/dars-knn", messages=USER, max_tokens=8, stream=True
    ) as resp:
        chunks = list(resp.parse())
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip() and resp.headers["x-caproute-model"] in POOL_MODELS
    assert chunks[0].model_extra["caproute"]["model"] == resp.headers["x-caproute-model"]


def test_auth_failures(server, key):
    with pytest.raises(openai.AuthenticationError):
        client(server, "cr-not-a-key").chat.completions.create(model="caproute", messages=USER, max_tokens=1)
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "caproute", "messages": USER})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_malformed_bodies(server, key):
    h = {"authorization": f"Bearer {key[1]}", "content-type": "application/json"}
    for body, fragment in (
        (b'{"model": "caproute", "messages": [', "not valid JSON"),
        (b'{"model": "caproute", "messages": "hi"}', "messages"),
        (b'{"model": "caproute", "messages": [{"role": "user", "content": "x"}], "top_p": 7}', "top_p"),
    ):
        r = httpx.post(server.url + "/v1/chat/completions", content=body, headers=h)
        assert r.status_code == 400 and fragment in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client(server, key[1]).chat.completions.create(model="caproute", messages=USER, temperature=9)


def test_200_concurrent_requests_no_errors_no_lost_feedback(server, key):
    """200 concurrent requests: 20 chat completions (2 tokens) and 180 route decisions, each followed
    by its feedback; every request succeeds and every acknowledged feedback is in the store."""

    async def main():
        c = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key[1], max_retries=0, timeout=300)
        h = {"authorization": f"Bearer {key[1]}"}
        async with httpx.AsyncClient(
            base_url=server.url, headers=h, timeout=300, limits=httpx.Limits(max_connections=200)
        ) as http:

            async def chat(i):
                comp = await c.chat.completions.create(
                    model="caproute/dars-knn",
                    max_tokens=2,
                    messages=[{"role": "user", "content": f"Say {i}."}],
                )
                r = await http.post("/v1/feedback", json={"response_id": comp.id, "score": (i % 5) / 4})
                return comp.id, r.status_code

            async def route(i):
                r = await http.post("/v1/route", json={"input": f"[arithmetic] question {i}"})
                assert r.status_code == 200, r.text
                rid = r.json()["decisions"][0]["id"]
                fb = await http.post("/v1/feedback", json={"response_id": rid, "score": 1.0})
                return rid, fb.status_code

            results = await asyncio.gather(*[chat(i) for i in range(20)], *[route(i) for i in range(180)])
        await c.close()
        return results

    results = asyncio.run(main())
    assert len(results) == 200 and all(code == 200 for _, code in results)
    ids = {rid for rid, _ in results}
    con = sqlite3.connect(server.db)
    stored = {r[0] for r in con.execute("SELECT response_id FROM feedback")}
    con.close()
    assert ids <= stored and len(ids) == 200


def test_graceful_shutdown_drains_a_stream(tmp_path, pool, router, key):
    s = ServeProcess(tmp_path, pool, router, key[0])
    c = client(s, key[1])
    stream = c.chat.completions.create(
        model="caproute/dars-knn",
        messages=[{"role": "user", "content": "Count from one to twenty in words."}],
        max_tokens=40,
        stream=True,
        temperature=0,
    )
    first = next(stream)
    s.proc.send_signal(signal.SIGTERM)  # shut down while the answer is still being generated
    time.sleep(0.5)
    with pytest.raises(httpx.HTTPError):  # no new connections once shutting down
        httpx.get(s.url + "/healthz", timeout=2)
    rest = list(stream)  # the open stream still runs to its end ([DONE]) without an error event
    assert first.choices[0].delta is not None and len(rest) >= 5
    assert rest[-1].choices == [] or rest[-1].choices[0].finish_reason in ("length", "stop")
    # uvicorn finishes its shutdown, then re-raises SIGTERM so the exit status says how it ended
    assert s.proc.wait(60) in (0, -signal.SIGTERM)
    s.stop()
    assert "Traceback" not in Path(s.log.name).read_text()
    con = sqlite3.connect(s.db)  # the drained answer was registered before the store closed
    assert con.execute("SELECT count(*) FROM responses WHERE kind = 'chat'").fetchone()[0] == 1
    con.close()


def test_fallback_when_a_backend_process_is_killed(server, key, pool):
    c = client(server, key[1])
    first = c.chat.completions.create(model="caproute/dars-knn:lambda=0,beta=0", messages=USER, max_tokens=2)
    victim = first.model_extra["caproute"]["decision"]["model"]
    member = next(m for m in pool.members if m.name == victim)
    os.kill(member.pid, signal.SIGKILL)
    time.sleep(0.5)
    comp = c.chat.completions.create(model="caproute/dars-knn:lambda=0,beta=0", messages=USER, max_tokens=4)
    meta = comp.model_extra["caproute"]
    assert meta["decision"]["model"] == victim and comp.model != victim and comp.model in POOL_MODELS
    assert meta["fallback"] and meta["attempts"][0]["model"] == victim
    assert meta["attempts"][0]["reason"] == "connection" and comp.choices[0].message.content.strip()
    with c.chat.completions.with_streaming_response.create(
        model="caproute/dars-knn:lambda=0,beta=0", messages=USER, max_tokens=4, stream=True
    ) as resp:
        assert resp.headers["x-caproute-model"] != victim
        assert "".join(ch.choices[0].delta.content or "" for ch in resp.parse() if ch.choices).strip()
    with pytest.raises(openai.APIStatusError) as e:  # the killed model asked for directly: a clear error
        c.chat.completions.create(model=victim, messages=USER, max_tokens=2)
    assert e.value.status_code == 502 and "connection" in e.value.message
    metrics = httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {key[1]}"}).text
    assert f'caproute_backend_errors_total{{model="{victim}",reason="connection"}}' in metrics


def test_concurrent_streams_are_queued_not_interrupted(server, key):
    """Issue 11, item 7: 12 concurrent streams through the proxy against llama.cpp servers that run
    one request at a time. The proxy queues them per model (max_concurrency 1 in the pool YAML) and
    the servers run with interrupt_requests off: every stream ends with a finish_reason, none with
    an error event or a 502."""

    async def main():
        c = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key[1], max_retries=0, timeout=300)

        async def one(i):
            stream = await c.chat.completions.create(
                model="caproute/dars-knn",
                messages=[{"role": "user", "content": f"Count from {i} to {i + 5}."}],
                max_tokens=8,
                stream=True,
            )
            finish, text = None, ""
            async for ch in stream:
                for choice in ch.choices:
                    text += choice.delta.content or ""
                    finish = choice.finish_reason or finish
            return finish, text

        try:
            return await asyncio.gather(*[one(i) for i in range(12)])
        finally:
            await c.close()

    results = asyncio.run(main())
    assert all(finish in ("stop", "length") for finish, _ in results), results
    assert all(text for _, text in results)
