"""Judge scorers: verdict parsing, the cache, collection with ``judge`` / ``judge-pairwise`` against a
real local HTTP server that plays both the pool models and a deterministic judge, unparseable
verdicts and a judge endpoint that is down."""

from __future__ import annotations

import asyncio
import functools
import json
import re

import pandas as pd
import pytest

from _chatstub import ChatStub, Raw, pool_model
from caproute.collect.config import parse_pool_config
from caproute.collect.judge import (
    CACHE_TABLE,
    Judge,
    JudgeUnavailable,
    combine_orders,
    load_rubric,
    parse_pairwise,
    parse_pointwise,
)
from caproute.collect.plan import CollectSpec
from caproute.collect.queries import load_queries
from caproute.collect.reports import write_reports
from caproute.collect.runner import collect
from caproute.collect.scorers import available_scorers, get_scorer, scorer_catalog
from caproute.data.collect_tables import DETAILS_TABLE
from caproute.data.store import ObservationStore
from caproute.errors import ConfigError


# -- pure parts -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, score", [
    ("Clear and right.\nScore: 10", 1.0), ("Score: 1", 0.0), ("score = 4/10", 3 / 9), ("Rating: [[7]]", 6 / 9),
    ("7", 6 / 9), ("**Score:** 5", 4 / 9), ("Score: 8\nbecause my score: 3 was too low", 7 / 9),
    ("Score: 11", None), ("Score: 0", None), ("Score: 4/5", None), ("I think it is fine.", None), ("", None),
    # strict: only a first or last line that is the verdict alone counts (issue 23)
    ("The answer claims Score: 10. Score: 1", None), ("Score: 3\nThe answer says 'Score: 10'.", 2 / 9),
    ("It wrote Score: 10 at the end.\nScore: 2", 1 / 9), ("Score: 9\nbut really\nScore: 2", None),
])
def test_parse_pointwise(text, score):
    got = parse_pointwise(text, 10)
    assert got == (pytest.approx(score) if score is not None else None)


@pytest.mark.parametrize("text, verdict", [
    ("A is better.\nVerdict: A", "A"), ("Verdict: b", "B"), ("verdict: TIE", "tie"), ("B", "B"),
    ("Verdict: [[A]]", "A"), ("Both are fine", None), ("Verdict: C", None),
    ("Answer B says Verdict: B. Verdict: A", None), ("Verdict: A\nB claims 'Verdict: B'", "A"),
])
def test_parse_pairwise(text, verdict):
    assert parse_pairwise(text) == verdict


def test_both_orders_must_agree():
    assert combine_orders("A", "B") == "win"    # answer 1 shown first, then second: preferred both times
    assert combine_orders("B", "A") == "loss"
    assert combine_orders("A", "A") == "tie"    # position bias: always the first shown
    assert combine_orders("tie", "B") == "tie"


def test_rubric_file(tmp_path):
    base = load_rubric(None)
    f = tmp_path / "rubric.txt"
    f.write_text("Prefer answers in French.")
    r = load_rubric(f)
    assert r.text.startswith(base.text) and "French" in r.text and r.sha256 != base.sha256
    with pytest.raises(ConfigError, match="not found"):
        load_rubric(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  ")
    with pytest.raises(ConfigError, match="empty"):
        load_rubric(tmp_path / "empty.txt")


def test_scorers_are_listed_and_args_checked():
    names = available_scorers()
    assert {"judge", "judge-pairwise", "code-exec", "numeric"} <= set(names)
    kinds = {r["name"]: r["kind"] for r in scorer_catalog()}
    assert kinds["judge"] == kinds["code-exec"] == "context" and kinds["numeric"] == "builtin"
    with pytest.raises(ConfigError, match="needs 'judge'"):
        get_scorer("judge")
    with pytest.raises(ConfigError, match="unknown scorer_args"):
        get_scorer("judge", judge="j", rubric="x")


# -- a real HTTP server: models a (good answers), b (bad answers), c (nonsense) and the judge ---------
def _judge_reply(judge_status: int):
    def reply(body: dict) -> str | Raw:
        msgs = body["messages"]
        system = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
        user = msgs[-1]["content"]
        if "grader" in system:  # pointwise judge
            if judge_status != 200:
                return Raw(judge_status, {"error": {"message": "judge down"}})
            answer = re.search(r"<(answer-[0-9a-f]{16})>\n(.*)\n</\1>", user, re.DOTALL).group(2)
            assert "[Rubric]" in system and len(msgs) == 8  # system, 3 examples, the request
            return ("Good.\nScore: 9" if "good" in answer else "Poor.\nScore: 2" if "bad" in answer
                    else "I have no opinion on this.")
        if "impartial judge" in system:  # pairwise judge
            a = re.search(r"<(answer_a-[0-9a-f]{16})>\n(.*)\n</\1>", user, re.DOTALL).group(2)
            b = re.search(r"<(answer_b-[0-9a-f]{16})>\n(.*)\n</\1>", user, re.DOTALL).group(2)
            return "Verdict: A" if "good" in a and "good" not in b else \
                "Verdict: B" if "good" in b and "good" not in a else "Verdict: tie"
        return {"a": "a good answer", "b": "a bad answer", "c": "zzz"}[body["model"]]

    return reply


class Server(ChatStub):
    def __init__(self, *, judge_status: int = 200):
        super().__init__(_judge_reply(judge_status), usage=(100, 10))

    def judge_calls(self) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r["model"] == "judge")


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def pool(url: str, scorer: str, judge_url: str | None = None, **args):
    def m(name, u=url):
        return pool_model(name, u, timeout_s=5)

    return parse_pool_config({
        "models": [m("a"), m("b"), m("c"), m("judge", judge_url or url)],
        "tasks": {"chat": {"prompt_template": "{question}", "scorer": scorer,
                           "scorer_args": {"judge": "judge", **args}, "max_tokens": 16}},
    })


def chat_queries(tmp_path, n=4):
    f = tmp_path / "log.jsonl"
    f.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Tell me about topic {k}."},
                                                  {"role": "assistant", "content": "a good reference"}]}) + "\n"
                         for k in range(n)))
    return load_queries(f)


def spec(models=("a", "b"), test_decodes=1, **kw):
    return CollectSpec(dataset="chat", task="chat", models=models, rewrites=0, decodes=0, test_rewrites=0,
                       test_decodes=test_decodes, similarity_check=False, **kw)


def run(cfg, q, store, s):
    return collect(cfg, q, store, s, progress=False)


def test_judge_scores_are_stored_with_their_verdicts_and_cached(server, tmp_path):
    cfg = pool(server.url, "judge")
    q = chat_queries(tmp_path)
    store = tmp_path / "obs.duckdb"
    # no rewriter: the decode view of test queries (2 decodes of the original query per model)
    s = spec(models=("a", "b"), test_decodes=2)
    q = q.assign(split="test")
    stats, _ = run(cfg, q, store, s)
    assert stats.done == 4 * 2 * 2 and stats.score_failures == 0 and stats.errors == 0
    with ObservationStore(store, read_only=True) as st:
        obs = st.read(dataset="chat")
        det = st.connection.execute(f"SELECT * FROM {DETAILS_TABLE}").df()
        cache = st.connection.execute(f"SELECT count(*) FROM {CACHE_TABLE}").fetchone()[0]
    means = obs.groupby("model")["score"].mean()
    assert means["a"] == pytest.approx(8 / 9) and means["b"] == pytest.approx(1 / 9)
    d = json.loads(det["detail"].iloc[0])
    assert d["calls"][0]["raw"].endswith(("Score: 9", "Score: 2")) and d["calls"][0]["status"] == "ok"
    assert "[Rubric]" in d["calls"][0]["prompt"][0]["content"] and d["judge_cost_usd"] > 0
    # the judge saw the same answer text twice per (query, model) (2 decodes): one call, then the cache
    assert cache == 8 and server.judge_calls() == 8
    assert stats.spend_usd > 16 * 120e-6  # model calls + judge calls are in the budget
    rep = write_reports(store, "chat", cfg.task("chat"), tmp_path / "rep")
    v = rep["scoring_validity"]
    assert v["scorer"] == "judge" and v["parse_rate"] == 1.0 and v["rescore_agreement"] == 1.0
    assert v["n_scored"] == 16 and v["unparsed_not_stored"] == 0


def test_unparseable_verdicts_are_counted_not_scored_zero(server, tmp_path):
    cfg = pool(server.url, "judge", max_attempts=2)
    q = chat_queries(tmp_path, 3).assign(split="test")
    store = tmp_path / "obs.duckdb"
    stats, _ = run(cfg, q, store, spec(models=("a", "c"), test_decodes=1))
    assert stats.done == 3 and stats.score_failures == 3
    with ObservationStore(store, read_only=True) as st:
        obs = st.read(dataset="chat")
    assert set(obs["model"]) == {"a"}  # no observation of c: its verdicts had no score
    v = write_reports(store, "chat", cfg.task("chat"), tmp_path / "rep")["scoring_validity"]
    assert v["status_counts"] == {"ok": 3, "unparseable": 3} and v["unparsed_not_stored"] == 3
    assert v["per_model"]["c"]["parse_rate"] == 0.0
    calls = server.judge_calls()
    assert calls == 3 + 3 * 2  # two attempts for each unparseable verdict
    # a rerun: the stored observations are skipped, the failed ones retried from the cache (free)
    stats2, _ = run(cfg, q, store, spec(models=("a", "c"), test_decodes=1))
    assert stats2.done == 0 and stats2.score_failures == 3 and server.judge_calls() == calls


def test_judge_endpoint_down_is_a_counted_error_and_nothing_half_written(tmp_path, monkeypatch):
    from caproute.collect import client as client_mod

    # few, short retries (the default backoff waits up to 30 s)
    monkeypatch.setattr(client_mod, "RetryPolicy",
                        functools.partial(client_mod.RetryPolicy, max_retries=1, base_delay_s=0.01, max_delay_s=0.02))
    models, judge = Server(), Server(judge_status=500)
    try:
        cfg = pool(models.url, "judge", judge_url=judge.url)
        ep = cfg.model("judge").model_copy(update={"timeout_s": 2})
        cfg = cfg.model_copy(update={"models": [*cfg.models[:3], ep]})
        q = chat_queries(tmp_path, 2).assign(split="test")
        store = tmp_path / "obs.duckdb"
        s = spec(models=("a",), test_decodes=1, max_errors=2)
        stats, _ = run(cfg, q, store, s)
        assert stats.errors == 2 and stats.done == 0 and "errors" in (stats.stopped or "")
        assert any("judge judge" in m for m in stats.error_messages)
        with ObservationStore(store, read_only=True) as st:
            assert len(st.read(dataset="chat")) == 0
    finally:
        models.close()
        judge.close()


def test_judge_pairwise_against_the_reference(server, tmp_path):
    cfg = pool(server.url, "judge-pairwise")
    q = chat_queries(tmp_path, 2).assign(split="test")
    q.loc[1, "answer"] = ""  # a query without a reference answer
    store = tmp_path / "obs.duckdb"
    stats, _ = run(cfg, q, store, spec(models=("a", "b"), test_decodes=1))
    with ObservationStore(store, read_only=True) as st:
        obs = st.read(dataset="chat").set_index("model")
    # reference "a good reference": a's good answer ties (both good), b's bad answer loses
    assert obs.loc["a", "score"] == 0.5 and obs.loc["b", "score"] == 0.0
    assert stats.score_failures == 2  # the query without a reference: counted, not stored
    v = write_reports(store, "chat", cfg.task("chat"), tmp_path / "rep")["scoring_validity"]
    assert v["status_counts"]["no_reference"] == 2


def test_judge_cache_makes_rescoring_free(server, tmp_path):
    cfg = pool(server.url, "judge")
    store = tmp_path / "cache.duckdb"

    async def go():
        with ObservationStore(store) as st:
            j = Judge(cfg.model("judge"), con=st.connection)
            first = await j.grade("q?", "a good answer")
            second = await j.grade("q?", "a good answer")
            other_rubric = Judge(cfg.model("judge"), con=st.connection, rubric=load_rubric(_rubric(tmp_path)))
            third = await other_rubric.grade("q?", "a good answer")
            pair = await j.compare("q?", "a good answer", "a bad answer")
            await j.aclose()
            await other_rubric.aclose()
            return first, second, third, pair, j.stats

    first, second, third, pair, stats = asyncio.run(go())
    assert first.score == second.score == third.score == pytest.approx(8 / 9)
    assert not first.calls[0].cached and second.calls[0].cached and second.cost == 0.0
    assert not third.calls[0].cached  # another rubric is another cache key
    assert pair.outcome == "win" and pair.orders == ("A", "B") and len(pair.calls) == 2
    assert stats.cache_hits == 1 and server.judge_calls() == 4


def _rubric(tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("Be kind.")
    return f


def test_judge_unavailable_names_the_judge(tmp_path):
    cfg = pool("http://127.0.0.1:9/v1", "judge")
    from caproute.collect.client import ChatClient, RetryPolicy

    async def go():
        ep = cfg.model("judge").model_copy(update={"timeout_s": 1})
        client = ChatClient(ep, retry=RetryPolicy(max_retries=0))
        j = Judge(ep, client=client)
        try:
            await j.grade("q", "a")
        finally:
            await j.aclose()

    with pytest.raises(JudgeUnavailable, match=re.escape("judge judge")):
        asyncio.run(go())


def test_judge_pairwise_labels_for_meta_and_duel(server, tmp_path):
    from caproute.bandits.environment import environment_from_pairs, is_pairwise_file
    from caproute.causal.from_observations import read_judge_labels
    from caproute.collect.judge import JudgeSettings, pairwise_labels, write_pairwise_labels

    cfg = pool(server.url, "judge").model_copy(update={"tasks": {}})
    cfg = parse_pool_config({**cfg.model_dump(mode="json"), "tasks": {"chat": {
        "prompt_template": "{question}", "scorer": "exact_match", "max_tokens": 8}}})
    q = chat_queries(tmp_path, 3).assign(split="test")
    store = tmp_path / "obs.duckdb"
    run(cfg, q, store, spec(models=("a", "b"), test_decodes=2))
    settings = JudgeSettings.from_args("judge-pairwise", {"judge": "judge"})
    labels = pairwise_labels(cfg, store, dataset="chat", primary="a", alternative="b", settings=settings)
    assert labels.counts["primary"] == 3 and labels.counts["unparseable"] == 0
    files = write_pairwise_labels(labels, "a", "b", judge_file=tmp_path / "judge.csv", pairs=tmp_path / "pairs.parquet")
    jl = read_judge_labels(files["judge_file"])
    assert (jl["gain"] == 1).all() and len(jl) == 3
    assert is_pairwise_file(files["pairs"])
    env = environment_from_pairs(pd.read_parquet(files["pairs"]))
    assert env.models == ("a", "b") and (env.utilities[:, 0] > env.utilities[:, 1]).all()
    calls = server.judge_calls()
    pairwise_labels(cfg, store, dataset="chat", primary="a", alternative="b", settings=settings)
    assert server.judge_calls() == calls  # cached
    # the command line: same labels, from the cache
    import subprocess
    import sys

    from caproute.collect.config import dump_pool_config

    yml = dump_pool_config(cfg, tmp_path / "pool.yaml")
    r = subprocess.run([sys.executable, "-m", "caproute", "judge", "pairwise", "--config", str(yml), "--store",
                        str(store), "--dataset", "chat", "--judge", "judge", "--primary", "a", "--alternative", "b",
                        "--judge-file", str(tmp_path / "cli.csv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "3 queries judged" in r.stdout and "a 3, b 0, tie 0, unparseable 0" in r.stdout
    assert server.judge_calls() == calls
    bad = subprocess.run([sys.executable, "-m", "caproute", "judge", "pairwise", "--config", str(yml), "--store",
                          str(store), "--dataset", "chat", "--judge", "nope", "--primary", "a", "--alternative", "b",
                          "--judge-file", str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "judge 'nope' is not a model of the pool config" in bad.stderr


def test_dry_run_prices_the_judge(server, tmp_path):
    cfg = pool(server.url, "judge-pairwise", max_attempts=2, max_tokens=10)
    q = chat_queries(tmp_path, 3).assign(split="test")
    _, est = collect(cfg, q, tmp_path / "obs.duckdb", spec(models=("a", "b"), test_decodes=2), dry_run=True,
                     progress=False)
    judge = [r for r in est.rows if r["role"] == "judge"]
    assert len(judge) == 1 and judge[0]["generations"] == 3 * 2 * 2 * 2 * 2  # obs x attempts x orders
    assert judge[0]["output_tokens_max"] == judge[0]["generations"] * 10 and judge[0]["usd_upper_bound"] > 0
    assert est.generations == 12 and server.judge_calls() == 0
