"""Production feedback back into supervision: the proxy's opt-in request log (real uvicorn servers,
the openai client, streaming included) and ``caproute feedback export`` to observations, preference
rows and a judge file that supervise/train, duel and meta read."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import httpx
import openai
import pandas as pd
import pytest

from caproute.serve.app import create_app
from caproute.serve.config import ServeConfig
from caproute.serve.echo import ANSWER, echo_app
from caproute.serve.feedback_export import export_feedback
from caproute.serve.testing import TEST_MODELS, UvicornThread, train_router, write_pool_yaml

Q1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
Q2 = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("fbexport")
    backends = {n: UvicornThread(echo_app(n)).start() for n in TEST_MODELS}
    pool = write_pool_yaml(d / "pool.yaml", [{"name": n, "base_url": b.base_url + "/v1", "model": n}
                                             for n, b in backends.items()])
    cfg = ServeConfig(routers={"r": train_router(d / "router")}, pool=pool, insecure_local=True,
                      feedback_db=d / "fb.sqlite3", log_store=d / "requests.sqlite3")
    with UvicornThread(create_app(cfg)) as srv:
        c = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0, timeout=60)

        def fb(body):
            r = httpx.post(srv.base_url + "/v1/feedback", json=body, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()

        ids = {}
        for q, name in ((Q1, "q1"), (Q2, "q2")):
            for m, score in ((TEST_MODELS[0], 0.9), (TEST_MODELS[1], 0.2)):
                r = c.chat.completions.create(model=m, messages=q, max_tokens=4)
                ids[(name, m)] = r.model_extra["caproute"]["response_id"]
                fb({"response_id": ids[(name, m)], "score": score})
        # the same answer rated again by the same client: the latest rating replaces the first
        again = fb({"response_id": ids[("q1", TEST_MODELS[0])], "score": 0.7})
        assert again["replaced"] is True
        fb({"winner_id": ids[("q1", TEST_MODELS[0])], "loser_id": ids[("q1", TEST_MODELS[1])]})
        fb({"winner_id": ids[("q2", TEST_MODELS[1])], "loser_id": ids[("q2", TEST_MODELS[0])], "tie": True})
        # a routed, streamed answer is logged too (text assembled from the chunks)
        stream = c.chat.completions.create(model="caproute/r", messages=Q2, max_tokens=4, stream=True)
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert text == ANSWER
        # an unlogged response: feedback from before the log existed is simulated by a route decision
        route = httpx.post(srv.base_url + "/v1/route", json={"input": "hello"}).json()["decisions"][0]["id"]
        fb({"response_id": route, "score": 0.5})
    for b in backends.values():
        b.stop()
    return d


def test_the_request_log_holds_messages_and_answers(served):
    con = sqlite3.connect(served / "requests.sqlite3")
    rows = con.execute("SELECT kind, model, messages, answer, cost_usd FROM requests ORDER BY created").fetchall()
    assert len(rows) == 5
    assert [r[0] for r in rows] == ["direct"] * 4 + ["chat"]
    assert all(r[3] == ANSWER and r[4] > 0 for r in rows)
    assert json.loads(rows[0][2]) == Q1


def test_export_to_observations_pairs_and_judge_file(served, tmp_path):
    from caproute.bandits.environment import environment_from_pairs
    from caproute.causal.from_observations import read_judge_labels
    from caproute.collect.queries import chat_query
    from caproute.data.store import ObservationStore
    from caproute.supervise.ablations import build_supervision

    a, b = TEST_MODELS[0], TEST_MODELS[1]
    rep = export_feedback(served / "fb.sqlite3", log_store=served / "requests.sqlite3", store=tmp_path / "o.duckdb",
                          pairs=tmp_path / "pairs.parquet", judge_file=tmp_path / "j.csv", primary=a, alternative=b,
                          sources=("user",))  # duel verdicts as observations: tests/test_feedback_sources.py
    assert rep.scalar_feedback == 5 and rep.pairwise_feedback == 2
    assert rep.observations == 4 and rep.skipped_not_logged == 1  # the /v1/route decision has no text
    with ObservationStore(tmp_path / "o.duckdb", read_only=True) as s:
        obs = s.read(dataset="feedback")
    assert len(obs) == 4 and set(obs["split"]) == {"train"}
    q1 = chat_query(Q1)["query_id"]
    rated_twice = obs[(obs["query_id"] == q1) & (obs["model"] == a)].sort_values("decode_id")
    assert list(rated_twice["score"]) == [0.7] and list(rated_twice["decode_id"]) == [0]  # the latest wins
    assert obs["context"].dropna().tolist() == ["system: Be brief.", "system: Be brief."]
    assert (obs["response_text"] == ANSWER).all() and (obs["cost"] > 0).all()
    sup = build_supervision(obs)  # supervise/train read it
    assert sup.mu_q.shape == (2, 2)

    pairs = pd.read_parquet(tmp_path / "pairs.parquet")
    assert list(pairs["human_majority"]) == [1, 0] and pairs["model_1"].iloc[0] == a
    env = environment_from_pairs(pairs)  # what caproute duel --data pairs.parquet builds
    assert env.models == tuple(sorted((a, b)))
    jl = read_judge_labels(tmp_path / "j.csv")
    assert dict(zip(jl["query_id"], jl["gain"], strict=True)) == {q1: 1.0, chat_query(Q2)["query_id"]: 0.0}

    # a re-export changes nothing (upsert on the same keys)
    again = export_feedback(served / "fb.sqlite3", log_store=served / "requests.sqlite3", store=tmp_path / "o.duckdb",
                            sources=("user",))
    with ObservationStore(tmp_path / "o.duckdb", read_only=True) as s:
        assert len(s.read(dataset="feedback")) == 4
    assert again.observations == 4


def test_export_errors_are_named(served, tmp_path):
    from caproute.errors import DataError

    with pytest.raises(DataError, match="nothing to export"):
        export_feedback(served / "fb.sqlite3")
    with pytest.raises(DataError, match="feedback store not found"):
        export_feedback(tmp_path / "missing.sqlite3", store=tmp_path / "o.duckdb")
    with pytest.raises(DataError, match="needs --primary"):
        export_feedback(served / "fb.sqlite3", judge_file=tmp_path / "j.csv")
    r = subprocess.run([sys.executable, "-m", "caproute", "feedback", "export", "--feedback-db",
                        str(served / "requests.sqlite3"), "--store", str(tmp_path / "o.duckdb")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not a caproute feedback store" in r.stderr and "Traceback" not in r.stderr
    assert "SELECT" not in r.stderr                                     # the message, not the query
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    with pytest.raises(DataError, match="not an SQLite database"):
        export_feedback(notes, store=tmp_path / "o.duckdb")
    with pytest.raises(DataError, match="request log"):
        export_feedback(served / "fb.sqlite3", log_store=notes, store=tmp_path / "o.duckdb")


def test_old_request_logs_read_lambda_t_zero(tmp_path):
    """A request log written before it stored lambda_t (routing columns, no ``lam_t``) still exports:
    its routed rows were decided at lambda_t = 0, both before the log is reopened (column absent) and
    after (the column is added on open, NULL for the old row); a new row keeps its lambda_t."""
    from caproute.evaluate.replay_log import read_request_log
    from caproute.serve.feedback_export import replay_log_rows
    from caproute.serve.log_store import BASE_FIELDS, ROUTING_COLUMNS, RequestLog, read_requests

    old_cols = [c for c in ROUTING_COLUMNS if c[0] != "lam_t"]
    p = tmp_path / "old.sqlite3"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE requests (response_id TEXT PRIMARY KEY, created REAL NOT NULL, kind TEXT NOT NULL, "
                "router TEXT, model TEXT, messages TEXT NOT NULL, answer TEXT, finish_reason TEXT, "
                "prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, cost_estimated INTEGER, "
                + ", ".join(f"{n} {t}" for n, t in old_cols) + ")")
    fields = [*BASE_FIELDS, *(n for n, _ in old_cols)]
    con.execute(f"INSERT INTO requests ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
                ("old", 1.0, "chat", "r", "big", "[]", "x", "stop", 1, 1, 0.1, 0, "hi", '["big", "small"]', "big",
                 0.75, '{"big": 0.75, "small": 0.25}', "fp", "v1", 0.2, 0.0, None))
    con.commit()
    con.close()
    fb = pd.DataFrame({"kind": ["scalar", "scalar"], "response_id": ["old", "new"], "source": ["user", "user"],
                       "score": [1.0, 0.0], "a_model": ["big", "small"], "b_model": [None, None],
                       "tie": [0, 0], "other_response_id": [None, None]})

    rows, _ = replay_log_rows(fb, read_requests(p))  # not migrated yet: no lam_t column at all
    assert [(r["request_id"], r["lambda"], r["lambda_t"]) for r in rows] == [("old", 0.2, 0.0)]

    log = RequestLog(p).start()  # opening migrates: lam_t added, NULL for the old row
    log.record(response_id="new", kind="chat", model="small", messages=[{"role": "user", "content": "yo"}],
               answer="y", router="r", routing={"routing_text": "yo", "candidates": ["big", "small"],
                                                "chosen": "small", "propensity": 0.25, "lam": 0.2, "beta": 0.0,
                                                "propensities": {"big": 0.75, "small": 0.25}, "lam_t": 0.5,
                                                "router_version": "fp", "policy_version": "v2"})
    log.close()
    con = sqlite3.connect(p)
    assert con.execute("SELECT response_id, lam_t FROM requests ORDER BY created").fetchall() == [
        ("old", None), ("new", 0.5)]
    con.close()
    rows, _ = replay_log_rows(fb, read_requests(p))
    assert [(r["request_id"], r["lambda_t"]) for r in rows] == [("old", 0.0), ("new", 0.5)]
    out = tmp_path / "replay.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_request_log(out).lam_ts == [0.0, 0.5]


def test_null_versions_export_as_null_and_replay_reads_them(tmp_path):
    """A request whose router/policy version the log holds as NULL exports them as JSON null (not NaN,
    which the replay reader rightly refuses), beside a row that has them."""
    from caproute.evaluate.replay_log import read_request_log
    from caproute.serve.feedback_export import replay_log_rows
    from caproute.serve.log_store import RequestLog, read_requests

    p = tmp_path / "log.sqlite3"
    log = RequestLog(p).start()
    for rid, version in (("a", None), ("b", "v2")):
        log.record(response_id=rid, kind="chat", model="big", messages=[{"role": "user", "content": rid}],
                   answer="y", router="r", routing={"routing_text": rid, "candidates": ["big", "small"],
                                                    "chosen": "big", "propensity": 0.75, "lam": 0.05,
                                                    "beta": 0.2, "propensities": {"big": 0.75, "small": 0.25},
                                                    "router_version": version, "policy_version": version})
    log.close()
    fb = pd.DataFrame({"kind": ["scalar", "scalar"], "response_id": ["a", "b"], "source": ["user", "user"],
                       "score": [1.0, 0.0], "a_model": ["big", "big"], "b_model": [None, None],
                       "tie": [0, 0], "other_response_id": [None, None]})
    rows, _ = replay_log_rows(fb, read_requests(p))
    assert [(r["request_id"], r["policy_version"], r["router_version"]) for r in rows] == [
        ("a", None, None), ("b", "v2", "v2")]
    out = tmp_path / "replay.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_request_log(out).policy_versions == [None, "v2"]
