"""Issue 22 items 2 and 5: the proxy logs what off-policy replay needs (``serve --explore``), feedback
of every shape (scaled ratings, a shadow judge, duels) becomes supervision with its source, and
``caproute feedback export --replay-log`` feeds ``caproute replay`` with real serve traffic.

Real uvicorn servers (echo backends, one of them answering as a judge), the openai client."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import subprocess
import sys

import httpx
import numpy as np
import openai
import pytest

from caproute.data.ratings import RatingError, rating_to_unit
from caproute.serve import explore
from caproute.serve.app import create_app
from caproute.serve.config import ServeConfig
from caproute.serve.echo import echo_app
from caproute.serve.feedback_export import export_feedback
from caproute.serve.testing import TEST_MODELS, UvicornThread, train_router, write_pool_yaml

# -- the pure parts, hand-computed ----------------------------------------------------------------


def test_epsilon_greedy_probabilities_by_hand():
    u = {"a": 0.9, "b": 0.5, "c": 0.1}
    p = explore.selection_probabilities(u, "a", ["a", "b", "c"], explore.Exploration(0.3))
    assert p == pytest.approx({"a": 0.7 + 0.1, "b": 0.1, "c": 0.1})
    # expected loss: U(a) - sum p U = 0.9 - (0.8*0.9 + 0.1*0.5 + 0.1*0.1) = 0.9 - 0.78 = 0.12 = eps*(0.9 - 0.5)
    assert explore.expected_loss(u, "a", p) == pytest.approx(0.12)


def test_softmax_probabilities_by_hand():
    u = {"a": 0.9, "b": 0.8, "c": 0.1}
    ex = explore.Exploration(0.5, "softmax", temperature=0.1)
    p = explore.selection_probabilities(u, "a", ["a", "b", "c"], ex)
    w = np.exp(np.array([0.9, 0.8, 0.1]) / 0.1)
    q = w / w.sum()
    assert p["a"] == pytest.approx(0.5 + 0.5 * q[0]) and p["b"] == pytest.approx(0.5 * q[1])
    assert p["c"] == pytest.approx(0.5 * q[2]) and sum(p.values()) == pytest.approx(1.0)
    # a small temperature sends the explored share to the runner-up, not the worst model
    assert p["b"] > 50 * p["c"]


def test_pick_draws_by_inverse_cdf_and_matches_its_propensities():
    assert explore.sample({"a": 0.2, "b": 0.5, "c": 0.3}, 0.19) == "a"
    assert explore.sample({"a": 0.2, "b": 0.5, "c": 0.3}, 0.2) == "b"
    assert explore.sample({"a": 0.2, "b": 0.5, "c": 0.3}, 0.99) == "c"
    u = {"a": 0.9, "b": 0.5, "c": 0.1}
    rng = random.Random(0)
    picks = [explore.pick(u, "a", list(u), explore.Exploration(0.3), rng) for _ in range(20_000)]
    share = {m: sum(p.chosen == m for p in picks) / len(picks) for m in u}
    assert share == pytest.approx({"a": 0.8, "b": 0.1, "c": 0.1}, abs=0.01)
    assert all(p.propensity == p.propensities[p.chosen] for p in picks)
    off = explore.pick(u, "b", list(u), explore.Exploration(0.0), rng)
    assert off.chosen == "b" and off.propensity == 1.0 and off.propensities == {"a": 0.0, "b": 1.0, "c": 0.0}
    with pytest.raises(ValueError, match="epsilon"):
        explore.Exploration(1.5)


def test_ratings_map_to_unit_by_one_rule():
    assert rating_to_unit(0.3) == 0.3 and rating_to_unit(1, "thumbs") == 1.0
    assert rating_to_unit(-1, "thumbs") == 0.0 and rating_to_unit(0, "thumbs") == 0.0
    assert rating_to_unit(4, "1-5") == 0.75 and rating_to_unit(1, "1-5") == 0.0 and rating_to_unit(5, "1-5") == 1.0
    assert rating_to_unit(7, "0-10") == 0.7 and rating_to_unit(0, "-2-2") == 0.5
    for value, scale, msg in ((6, "1-5", "outside its scale"), (1.5, None, "outside \\[0, 1\\]"),
                              (2, "thumbs", "thumbs"), (3, "stars", "unknown rating scale"),
                              (3, "5-1", "below"), (math.nan, "1-5", "finite"), (True, "thumbs", "finite")):
        with pytest.raises(RatingError, match=msg):
            rating_to_unit(value, scale)


# -- real servers ----------------------------------------------------------------------------------

QUESTIONS = [f"Question number {k}: what is {k} plus {k}?" for k in range(24)]


def _serve(d, *, explore_eps: float, judge_sample: float = 0.0, name: str = "srv"):
    backends = {n: UvicornThread(echo_app(n)).start() for n in TEST_MODELS}
    backends["judge"] = UvicornThread(echo_app("judge", answer="Score: 8")).start()
    pool = write_pool_yaml(d / f"{name}-pool.yaml", [{"name": n, "base_url": b.base_url + "/v1", "model": n}
                                                     for n, b in backends.items()])
    router = d / "router"
    if not router.exists():
        train_router(router)
    cfg = ServeConfig(routers={"r": router}, pool=pool, insecure_local=True, feedback_db=d / f"{name}-fb.sqlite3",
                      log_store=d / f"{name}-requests.sqlite3", explore=explore_eps, explore_seed=7,
                      judge="judge" if judge_sample else None, judge_sample=judge_sample)
    return backends, cfg


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    """24 routed requests with --explore 0.5 and a shadow judge on every answer; user ratings on
    three scales for half of them; one duel-style comparison."""
    d = tmp_path_factory.mktemp("explore")
    backends, cfg = _serve(d, explore_eps=0.5, judge_sample=1.0)
    out = {"dir": d, "answers": []}
    with UvicornThread(create_app(cfg)) as srv:
        c = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0, timeout=60)
        for k, q in enumerate(QUESTIONS):
            raw = c.chat.completions.with_raw_response.create(
                model="caproute/r", messages=[{"role": "user", "content": q}], max_tokens=4, stream=False)
            meta = raw.parse().model_extra["caproute"]
            out["answers"].append(meta)
            if k % 2 == 0:  # feedback on routed answers only, through the openai client
                body = [{"score": 4, "scale": "1-5"}, {"score": 1, "scale": "thumbs"}, {"score": 0.25}][k // 2 % 3]
                r = c.post("/feedback", body={"response_id": meta["response_id"], **body}, cast_to=httpx.Response)
                assert r.status_code == 200, r.text
        bad = httpx.post(srv.base_url + "/v1/feedback", json={"response_id": out["answers"][0]["response_id"],
                                                             "score": 6, "scale": "1-5"})
        assert bad.status_code == 400 and "outside its scale" in bad.text
        # a comparison of two answers of different models (a duel verdict)
        unrated = out["answers"][1::2]
        a0 = unrated[0]
        a1 = next((a for a in unrated if a["model"] != a0["model"]), None)
        if a1 is not None:
            r = httpx.post(srv.base_url + "/v1/feedback", json={"winner_id": a0["response_id"],
                                                               "loser_id": a1["response_id"]})
            assert r.status_code == 200
        out["duel"] = a1 is not None
        # the shadow judge grades after the answers were sent; the server's shutdown waits for it
    for b in backends.values():
        b.stop()
    return out


def test_every_routed_request_logs_its_propensities(explored):
    answers = explored["answers"]
    assert all(0 < a["propensity"] <= 1 for a in answers)
    assert any(a["explored"] for a in answers) and not all(a["explored"] for a in answers)
    con = sqlite3.connect(explored["dir"] / "srv-requests.sqlite3")
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM requests ORDER BY created")]
    assert len(rows) == len(QUESTIONS)
    for row, a in zip(rows, answers, strict=True):
        probs = json.loads(row["propensities"])
        assert sorted(json.loads(row["candidates"])) == sorted(TEST_MODELS) and row["chosen"] == a["model"]
        assert row["propensity"] == pytest.approx(probs[row["chosen"]]) == pytest.approx(a["propensity"])
        assert sum(probs.values()) == pytest.approx(1.0)
        # eps = 0.5 over 3 models: the router's choice 0.5 + 0.5/3, each other 0.5/3
        assert sorted(probs.values()) == pytest.approx([0.5 / 3, 0.5 / 3, 0.5 + 0.5 / 3])
        assert json.loads(row["explore"]) == {"eps": 0.5, "mode": "epsilon", "temperature": None}
        assert row["routing_text"] in QUESTIONS and row["router_version"] and row["lam"] is not None
        assert row["policy_version"] == a["policy_version"]


def test_shadow_judge_scores_routed_answers_as_judge_feedback(explored):
    con = sqlite3.connect(explored["dir"] / "srv-fb.sqlite3")
    rows = con.execute("SELECT source, score, raw_score, scale, key_id FROM feedback WHERE source = 'judge'").fetchall()
    # every answer was sampled (judge_sample 1): one grade each, "Score: 8" on 1-10 -> 7/9
    assert len(rows) == len(QUESTIONS)
    assert {(round(r[1], 9), r[2], r[3], r[4]) for r in rows} == {(round(7 / 9, 9), 8.0, "1-10", "judge:judge")}
    user = con.execute("SELECT score, raw_score, scale FROM feedback WHERE source = 'user' AND kind = 'scalar' "
                       "ORDER BY rowid").fetchall()
    assert [tuple(r) for r in user[:3]] == [(0.75, 4.0, "1-5"), (1.0, 1.0, "thumbs"), (0.25, 0.25, "unit")]


def test_export_marks_sources_and_writes_a_replay_log(explored, tmp_path):
    from caproute.data.store import ObservationStore
    from caproute.evaluate.replay_log import read_request_log

    d = explored["dir"]
    rep = export_feedback(d / "srv-fb.sqlite3", log_store=d / "srv-requests.sqlite3", store=tmp_path / "o.duckdb",
                          replay_log=tmp_path / "replay.jsonl", reward_sources=("user", "judge"))
    n_user = len(QUESTIONS) // 2
    assert rep.by_source["user"] == n_user and rep.by_source["judge"] == len(QUESTIONS)
    assert rep.by_source.get("duel", 0) == (2 if explored["duel"] else 0)
    with ObservationStore(tmp_path / "o.duckdb", read_only=True) as s:
        obs = s.read(dataset="feedback")
    assert set(obs["score_source"]) >= {"user", "judge"}
    assert not obs.duplicated(["query_id", "model", "decode_id"]).any()  # sources never collide on a key
    judge_only = export_feedback(d / "srv-fb.sqlite3", log_store=d / "srv-requests.sqlite3",
                                 observations=tmp_path / "j.parquet", sources=("judge",))
    assert judge_only.by_source == {"judge": len(QUESTIONS)}

    assert rep.replay_rows == len(QUESTIONS) and rep.replay_explored  # user first, the judge for the rest
    rows = [json.loads(x) for x in (tmp_path / "replay.jsonl").read_text().splitlines()]
    assert sum(r["reward_source"] == "user" for r in rows) == n_user
    assert {round(r["reward"], 9) for r in rows if r["reward_source"] == "judge"} == {round(7 / 9, 9)}
    log = read_request_log(tmp_path / "replay.jsonl")  # the one reader of caproute replay
    assert log.n == len(QUESTIONS) and log.support.all()  # exploration: every model could have served

    # caproute replay on real serve traffic: the served router evaluates to about its logged mean
    r = subprocess.run([sys.executable, "-m", "caproute", "replay", "--log", str(tmp_path / "replay.jsonl"),
                        "--candidate", str(d / "router"), "--bootstrap", "50", "--json", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    rows_out = res["rows"] if isinstance(res, dict) else res
    assert {x["estimator"] for x in rows_out} >= {"ips", "snips", "dr"}


def test_without_exploration_replay_names_what_it_cannot_evaluate(tmp_path):
    backends, cfg = _serve(tmp_path, explore_eps=0.0, name="det")
    other = train_router(tmp_path / "other", router="cheapest")  # always the cheapest: disagrees
    with UvicornThread(create_app(cfg)) as srv:
        c = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0, timeout=60)
        for q in QUESTIONS[:8]:
            resp = c.chat.completions.create(model="caproute/r", messages=[{"role": "user", "content": q}],
                                             max_tokens=4)
            meta = resp.model_extra["caproute"]
            assert meta["propensity"] == 1.0 and "explored" not in meta
            c.post("/feedback", body={"response_id": meta["response_id"], "score": 1, "scale": "thumbs"},
                   cast_to=httpx.Response)
    for b in backends.values():
        b.stop()
    out = tmp_path / "det.jsonl"
    r = subprocess.run([sys.executable, "-m", "caproute", "feedback", "export", "--feedback-db",
                        str(tmp_path / "det-fb.sqlite3"), "--log-store", str(tmp_path / "det-requests.sqlite3"),
                        "--replay-log", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())
    assert "replay log: 8 routed requests" in said and "no request explored" in said
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(x["propensity"] == 1.0 for x in rows)

    from caproute.evaluate.replay import candidate_policy
    from caproute.evaluate.replay_log import read_request_log
    from caproute.routers.pipeline import RoutingPipeline

    log = read_request_log(out)
    assert (log.support.sum(axis=1) == 1).all()  # propensity 1: only the served model is supported
    pi, _, _ = candidate_policy(RoutingPipeline.load(other), log)
    disagrees = int((pi[:, : len(log.models)] * ~log.support).sum() + pi[:, -1].sum())
    r = subprocess.run([sys.executable, "-m", "caproute", "replay", "--log", str(out), "--candidate",
                        f"{tmp_path / 'router'},{other}", "--bootstrap", "50", "--json", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=300)
    said = " ".join(r.stdout.split())
    assert r.returncode == 0, r.stdout + r.stderr  # the served router agrees with its own log everywhere
    assert disagrees == 8 and "refused" in said and "'other'" in said and "on 8 of 8 requests" in said, said
    res = json.loads((tmp_path / "r.json").read_text())
    assert "router" in json.dumps(res) and "--explore" in said


def test_old_request_logs_migrate_and_replay_skips_their_rows(tmp_path):
    from caproute.serve.log_store import BASE_FIELDS, ROUTING_FIELDS, RequestLog

    p = tmp_path / "old.sqlite3"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE requests (response_id TEXT PRIMARY KEY, created REAL NOT NULL, kind TEXT NOT NULL, "
                "router TEXT, model TEXT, messages TEXT NOT NULL, answer TEXT, finish_reason TEXT, "
                "prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, cost_estimated INTEGER)")
    con.execute("INSERT INTO requests VALUES ('r0', 1.0, 'chat', 'r', 'big', '[]', 'x', 'stop', 1, 1, 0.1, 0)")
    con.commit()
    con.close()
    log = RequestLog(p).start()
    log.record(response_id="r1", kind="chat", model="big", messages=[{"role": "user", "content": "hi"}],
               answer="x", router="r", routing={"routing_text": "hi", "candidates": ["big"], "chosen": "big",
                                                "propensity": 1.0, "propensities": {"big": 1.0}})
    log.close()
    con = sqlite3.connect(p)
    cols = [r[1] for r in con.execute("PRAGMA table_info(requests)")]
    assert set(BASE_FIELDS + ROUTING_FIELDS) <= set(cols)
    assert con.execute("SELECT propensity FROM requests ORDER BY created").fetchall() == [(None,), (1.0,)]


@pytest.mark.skipif(__import__("caproute.serve.stores.tempdb", fromlist=["pg_bin"]).pg_bin() is None,
                    reason="PostgreSQL is not installed (apt-get install postgresql)")
def test_postgres_state_migrates_to_routing_and_provenance_columns(tmp_path):
    """A version-1 PostgreSQL state (before issue 22) is migrated to version 2 in place: the request
    log's routing columns and the feedback's source/raw_score/scale; both then hold what the SQLite
    files hold, and serve-migrate copies an old SQLite log (its missing columns as NULL)."""
    from caproute.serve.feedback import Feedback
    from caproute.serve.log_store import ROUTING_FIELDS
    from caproute.serve.stores import pg
    from caproute.serve.stores.migrate import migrate_sqlite
    from caproute.serve.stores.postgres import PgFeedbackStore, PgRequestLog
    from caproute.serve.stores.tempdb import TempPostgres

    with TempPostgres() as server:
        con = pg.connect(server.url)
        con.execute(f"CREATE SCHEMA {pg.SCHEMA}")
        con.execute(pg.MIGRATIONS[1])  # a caproute of schema version 1
        con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        con.execute("INSERT INTO requests (response_id, created, kind, messages) VALUES ('old', 1, 'chat', '[]')")
        con.close()
        pg.prepare(server.url)
        con = pg.connect(server.url)
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()["value"] == str(pg.SCHEMA_VERSION)
        cols = {r["column_name"] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'requests'",
            (pg.SCHEMA,))}
        assert set(ROUTING_FIELDS) <= cols
        rl = PgRequestLog(server.url, tmp_path / "dead").start()
        rl.record(response_id="new", kind="chat", model="big", messages=[{"role": "user", "content": "hi"}],
                  answer="x", routing={"routing_text": "hi", "candidates": ["big", "small"], "chosen": "big",
                                       "propensity": 0.75, "propensities": {"big": 0.75, "small": 0.25}})
        rl.close()
        row = con.execute("SELECT propensity, propensities, chosen FROM requests WHERE response_id = 'new'").fetchone()
        assert row["propensity"] == 0.75 and json.loads(row["propensities"]) == {"big": 0.75, "small": 0.25}
        s = PgFeedbackStore(server.url, tmp_path / "dead2").start()
        try:
            s.register({"response_id": "new", "kind": "chat", "model": "big"})
            s.add(Feedback("scalar", "new", score=0.75, raw_score=4, scale="1-5")).result(10)
            s.add(Feedback("scalar", "new", score=0.5, key_id="judge:j", source="judge")).result(10)
        finally:
            s.close()
        got = con.execute("SELECT source, raw_score, scale FROM feedback ORDER BY seq").fetchall()
        assert [tuple(r.values()) for r in got] == [("user", 4.0, "1-5"), ("judge", 0.5, "unit")]
        # serve-migrate from SQLite files of before the routing columns: NULL where they lack a column
        old = tmp_path / "old-log.sqlite3"
        lc = sqlite3.connect(old)
        lc.execute("CREATE TABLE requests (response_id TEXT PRIMARY KEY, created REAL NOT NULL, kind TEXT NOT NULL, "
                   "router TEXT, model TEXT, messages TEXT NOT NULL, answer TEXT, finish_reason TEXT, "
                   "prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, cost_estimated INTEGER)")
        lc.execute("INSERT INTO requests VALUES ('r0', 1.0, 'chat', 'r', 'big', '[]', 'x', 'stop', 1, 1, 0.1, 0)")
        lc.commit()
        lc.close()
        fb = tmp_path / "fb.sqlite3"
        from caproute.serve.feedback import FeedbackStore

        FeedbackStore(fb).start().close()
        rep = migrate_sqlite(server.url, fb, old)
        assert rep.copied["requests"] == 1
        assert con.execute("SELECT propensity FROM requests WHERE response_id = 'r0'").fetchone()["propensity"] is None
        con.close()


def test_feedback_api_scales_are_the_schema_s():
    import typing

    from caproute.serve.schemas import FEEDBACK_SCALES, FeedbackRequest

    assert typing.get_args(typing.get_args(FeedbackRequest.model_fields["scale"].annotation)[0]) == FEEDBACK_SCALES
    assert FeedbackRequest(response_id="a", score=7, scale="0-10").score == 7
    with pytest.raises(ValueError, match="outside its scale"):
        FeedbackRequest(response_id="a", score=0, scale="1-10")
    with pytest.raises(ValueError):
        FeedbackRequest(response_id="a", score=3, scale="1-7")  # the API names its scales
