"""The whole loop on the real local pool, with no gold answer anywhere (issue 12, item 6).

chat-format queries -> judge-scored repeated observations (the judge is a pool model) -> a DARS
router -> ``caproute serve`` (with the request log and a dueling policy from ``caproute duel init``)
-> scalar and pairwise feedback through the official openai client -> the dueling policy learns
-> the server is killed with SIGKILL and restarted -> the policy state is kept -> the feedback is
exported and a router is retrained on it.

Small on purpose (3 conversations, one of them with a system prompt and one multi-turn, plus a
duplicate; 2 pool models, greedy answers of at most 16 tokens, 1 rewrite x 2 decodes: 12 answers,
about 6 judge calls, the other grades from the judge cache): the judge calls are most of the time
(each reads a prompt of about 700 tokens), so they are few (see the measured time in docs/collect.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pandas as pd
import pytest
import yaml

from caproute.bandits.policy import DuelingPolicy
from caproute.data.store import ObservationStore
from caproute.serve.testing import free_port

pytestmark = [pytest.mark.pool, pytest.mark.slow]
pytest.importorskip("llama_cpp")

MODELS = ("smollm2-135m", "smollm2-135m-q2k")
JUDGE = "smollm2-135m"
CONVERSATIONS = [
    [{"role": "user", "content": "Give me one tip for sleeping better."}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "I want to learn Python."}, {"role": "assistant", "content": "Great choice!"},
     {"role": "user", "content": "Where should I start?"}],
    [{"role": "user", "content": "Give me one tip for sleeping better."}],  # a duplicate: one query
]
N_QUERIES = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def caproute(*args, timeout=900):
    r = subprocess.run([sys.executable, "-m", "caproute", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=ENV)
    assert r.returncode == 0, f"caproute {' '.join(map(str, args))}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from caproute.collect.pool import start_pool

    d = tmp_path_factory.mktemp("pool")
    handle = start_pool(list(MODELS), port_base=0, workdir=d / "work", config_out=d / "pool.yaml", n_threads=1,
                        n_ctx=1024, ready_timeout_s=180, rewriter=MODELS[0], rewriter_server=False)
    yield handle
    handle.stop()


class Server:
    def __init__(self, args, tmp):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / f"serve-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "caproute", "serve", *map(str, args), "--port",
                                      str(self.port)], stdout=self.log, stderr=subprocess.STDOUT, env=ENV)
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, f"serve exited {self.proc.returncode}: {self.read_log()}"
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.read_log()
            time.sleep(0.3)

    def read_log(self) -> str:
        self.log.flush()
        return open(self.log.name).read()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.log.close()


def test_open_ended_traffic_to_a_served_router_that_learns_and_survives_restarts(pool, tmp_path):
    # 1) chat-format queries (no gold) and a judge task on the pool's own model
    log = tmp_path / "chat.jsonl"
    log.write_text("".join(json.dumps({"messages": m}) + "\n" for m in CONVERSATIONS))
    cfg = yaml.safe_load(pool.config_path.read_text())
    # the rewriter on the other model spreads the work over both llama.cpp servers
    cfg["rewriter"] = {"model": MODELS[1], "max_attempts": 1, "max_tokens": 32}
    # greedy answers: a (query, model)'s two decodes mostly agree, so the judge's cache in the store
    # grades the second one (each judge call reads a prompt of about 700 tokens: most of the time)
    cfg["tasks"] = {"chat": {"prompt_template": "{question}", "scorer": "judge", "max_tokens": 16,
                             "temperature": 0.0, "scorer_args": {"judge": JUDGE, "max_tokens": 12, "max_attempts": 2}}}
    pool_yaml = tmp_path / "pool.yaml"
    pool_yaml.write_text(yaml.safe_dump(cfg))

    # 2) judge-scored repeated observations: 1 rewrite x 2 decodes per (query, model)
    store = tmp_path / "obs.duckdb"
    out = caproute("collect", "--config", pool_yaml, "--queries", log, "--store", store, "--task", "chat",
                   "--rewrites", "1", "--decodes", "2", "--no-similarity-check", "--progress-every", "5")
    assert "scoring validity" in out
    validity = json.loads((tmp_path / "obs.duckdb.reports" / "chat" / "scoring_validity.json").read_text())
    with ObservationStore(store, read_only=True) as s:
        obs = s.read(dataset="chat")
        judge_calls = s.connection.execute("SELECT count(*) FROM judge_cache").fetchone()[0]
    assert obs["query_id"].nunique() <= N_QUERIES and obs["query_id"].str.startswith("chat-").all()
    assert validity["n_scored"] == N_QUERIES * 2 * 2 and validity["n_observations"] == len(obs)
    assert validity["n_scored"] - validity["n_observations"] == validity["unparsed_not_stored"]
    assert judge_calls >= validity["n_scored"] // 2 and obs["score"].between(0, 1).all()
    per_query = obs.groupby("query_id")["model"].nunique()
    assert (per_query == 2).sum() >= N_QUERIES - 1, f"too few queries judged for both models: {validity}"

    # 3) a DARS router, 4) a dueling policy from the same observations
    caproute("train", "--store", store, "--dataset", "chat", "--router", "knn", "--out", tmp_path / "router")
    caproute("duel", "init", "--store", store, "--dataset", "chat", "--embeddings", "minilm",
             "--out", tmp_path / "policy")

    # 5) caproute serve with the request log and the duel mode
    args = ["--router", f"chat-knn={tmp_path / 'router'}", "--pool", pool_yaml, "--insecure-local",
            "--feedback-db", tmp_path / "fb.sqlite3", "--log-store", tmp_path / "requests.sqlite3",
            "--duel-policy", tmp_path / "policy", "--duel-state-out", tmp_path / "policy-online"]
    srv = Server(args, tmp_path)
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=120)

        def feedback(body: dict) -> dict:  # POST /v1/feedback through the openai client
            return client.post("/feedback", body=body, cast_to=httpx.Response).json()

        questions = ["What is the capital of France?", "Write a haiku about rain.", "Name three colours of the rainbow."]
        for q in questions:
            for m in MODELS:  # each model answers, the user rates both: complete data to retrain on
                r = client.chat.completions.create(model=m, messages=[{"role": "user", "content": q}], max_tokens=16)
                rid = r.model_extra["caproute"]["response_id"]
                assert feedback({"response_id": rid, "score": 1.0 if m == MODELS[0] else 0.25})["stored"]
        routed = client.chat.completions.with_raw_response.create(
            model="caproute/chat-knn", messages=[{"role": "user", "content": "Write a haiku about rain."}], max_tokens=8)
        assert routed.headers["x-caproute-model"] in MODELS

        def duel(text: str) -> dict:
            d = client.chat.completions.create(model="caproute/duel", messages=[{"role": "user", "content": text}],
                                               max_tokens=8).model_extra["caproute"]["duel"]
            a, b = d["response_ids"]
            fb = feedback({"winner_id": a, "loser_id": b})
            assert fb["stored"] and fb["policy_updated"] is True
            return d

        duel("What is the capital of France?")
        duel("Name three colours of the rainbow.")
        assert DuelingPolicy.load(tmp_path / "policy-online").t_ == 2

        # 6) SIGKILL and restart: the policy continues from its checkpoint
        srv.kill9()
        srv = Server(args, tmp_path)
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=120)
        restored = DuelingPolicy.load(tmp_path / "policy-online")
        assert restored.t_ == 2 and restored.checkpoint_["feedback_seq"] >= 2
        duel("Write a haiku about rain.")
        assert DuelingPolicy.load(tmp_path / "policy-online").t_ == 3
    finally:
        srv.stop()

    # 7) feedback -> observations and preference rows -> a retrained router
    fb_store = tmp_path / "feedback.duckdb"
    out = caproute("feedback", "export", "--feedback-db", tmp_path / "fb.sqlite3", "--log-store",
                   tmp_path / "requests.sqlite3", "--store", fb_store, "--pairs", tmp_path / "pairs.parquet")
    assert "6 scalar, 3 pairwise" in out
    with ObservationStore(fb_store, read_only=True) as s:
        every = s.read(dataset="feedback")
    # by default the duels become observations too (winner 1, loser 0), marked by their source
    assert every["score_source"].value_counts().to_dict() == {"user": 6, "duel": 6}
    fb_store = tmp_path / "feedback-users.duckdb"  # the users' ratings alone
    caproute("feedback", "export", "--feedback-db", tmp_path / "fb.sqlite3", "--log-store",
             tmp_path / "requests.sqlite3", "--store", fb_store, "--sources", "user")
    with ObservationStore(fb_store, read_only=True) as s:
        fobs = s.read(dataset="feedback")
    assert len(fobs) == 6 and fobs.groupby("query_id")["model"].nunique().eq(2).all()
    assert fobs["response_text"].str.len().gt(0).all() and fobs["question"].isin(questions).all()
    pairs = pd.read_parquet(tmp_path / "pairs.parquet")
    assert len(pairs) <= 3 and set(pairs["human_majority"]) <= {1}
    caproute("train", "--store", fb_store, "--dataset", "feedback", "--router", "knn", "--out", tmp_path / "router2")
    route = caproute("route", "--router", tmp_path / "router2", "--format", "json", "What is the capital of France?")
    assert json.loads(route)[0]["model"] == MODELS[0]  # the model users rated higher
