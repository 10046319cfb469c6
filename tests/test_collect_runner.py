"""The collection runner against a small real OpenAI-compatible HTTP server (deterministic answers).

The server answers ``Final Answer: <seed mod 2>`` to task prompts and a rewrite (valid for even
seeds, invalid for odd ones) to rewriter prompts, so every key, score and retry is predictable.
The real llama.cpp pool is exercised in tests/test_pool.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from _chatstub import ChatStub, pool_model
from caproute.collect.config import parse_pool_config
from caproute.collect.plan import CollectSpec, iter_units
from caproute.collect.queries import assign_splits, load_queries
from caproute.collect.reports import scoring_validity_report
from caproute.collect.runner import collect
from caproute.collect.scorers import get_scorer
from caproute.data.collect_tables import ATTEMPTS_TABLE, REWRITES_TABLE
from caproute.data.store import ObservationStore
from caproute.errors import ConfigError, DataError


def _answer(body: dict) -> str:
    """``Final Answer: <seed mod 2>`` to task prompts; to rewriter prompts a rewrite for even seeds
    and an invalid one ("no") for odd seeds."""
    seed = int(body.get("seed", 0))
    msgs = body["messages"]
    last = msgs[-1]["content"]
    if msgs[0]["role"] == "system" and "rewrite" in msgs[0]["content"].lower():
        q = last.removeprefix("Rewrite: ")
        tag = chr(97 + seed % 26) + chr(97 + seed // 26 % 26)  # no digits: numbers must match
        return f"Tell me, variant {tag}: {q}" if seed % 2 == 0 else "no"
    return f"Final Answer: {seed % 2}"


class Server(ChatStub):
    def __init__(self, delay_s: float = 0.0):
        super().__init__(_answer, usage=(20, 5), delay_s=delay_s)

    def count(self, rewriter: bool | None = None) -> int:
        with self.lock:
            if rewriter is None:
                return len(self.requests)
            return sum((r["messages"][0]["role"] == "system") == rewriter for r in self.requests)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def pool_cfg(url: str, models=("a", "b"), max_tokens: int = 5):
    def m(name):
        return pool_model(name, url)

    return parse_pool_config(
        {
            "models": [m(n) for n in models],
            "rewriter": {"model": "rw", "endpoint": m("rw"), "max_attempts": 2},
            "tasks": {
                "t": {
                    "prompt_template": "Q: {question}",
                    "scorer": "numeric",
                    "max_tokens": max_tokens,
                    "kind": "math",
                }
            },
        },
        source="test",
    )


def queries_file(tmp_path, n_train=2, n_test=1):
    rows = [
        {
            "query_id": f"q{i}",
            "question": f"What is {i} + 1?",
            "answer": "1",
            "split": "train" if i < n_train else "test",
        }
        for i in range(n_train + n_test)
    ]
    p = tmp_path / "q.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


SPEC = dict(
    dataset="d",
    task="t",
    models=("a", "b"),
    rewrites=2,
    decodes=2,
    test_rewrites=2,
    test_decodes=2,
    similarity_check=False,
)


def expected_keys(queries: pd.DataFrame, models=("a", "b")) -> set[tuple]:
    out = set()
    for qid, split in zip(queries["query_id"], queries["split"], strict=True):
        for m in models:
            if split == "train":
                out |= {("train", qid, m, k, r, "prompt_variation") for k in range(2) for r in range(2)}
            else:
                out |= {("test", qid, m, k, 0, "prompt_variation") for k in range(2)}
                out |= {("test", qid, m, -1, r, "decoding_variation") for r in range(2)}
    return out


def stored(path) -> pd.DataFrame:
    with ObservationStore(path, read_only=True) as s:
        return s.read(dataset="d")


def keys_of(df: pd.DataFrame) -> list[tuple]:
    return list(
        zip(
            df["split"],
            df["query_id"],
            df["model"],
            df["prompt_variant_id"],
            df["decode_id"],
            df["observation_type"],
            strict=True,
        )
    )


def test_collect_writes_exactly_the_planned_observations(tmp_path, server):
    q = load_queries(queries_file(tmp_path))
    stats, est = collect(pool_cfg(server.url), q, tmp_path / "s.duckdb", CollectSpec(**SPEC), progress=False)
    df = stored(tmp_path / "s.duckdb")
    assert len(keys_of(df)) == len(set(keys_of(df))) == 2 * (2 * 4 + 4) == stats.done == est.generations
    assert set(keys_of(df)) == expected_keys(q)
    # score: the server answers (seed mod 2), gold is 1
    expect = df["response_text"].str.endswith("1").astype(float)
    assert (df["score"] == expect).all() and df["score"].nunique() == 2
    # cost from usage: 20 prompt + 5 completion tokens at 1 and 2 USD per 1M
    assert np.allclose(df["cost"], 30e-6) and df["cost_known"].all()
    # rewrite views carry the rewrite text; decode views the original only
    rv = df[df["prompt_variant_id"] >= 0]
    assert (
        rv["rewrite_text"].notna().all() and df.loc[df["prompt_variant_id"] < 0, "rewrite_text"].isna().all()
    )
    assert stats.spend_usd == pytest.approx(df["cost"].sum() + 30e-6 * server.count(rewriter=True))


def test_rerun_is_idempotent_and_resume_fills_exactly_what_is_missing(tmp_path, server):
    q = load_queries(queries_file(tmp_path))
    path = tmp_path / "s.duckdb"
    collect(pool_cfg(server.url), q, path, CollectSpec(**SPEC), progress=False)
    first = stored(path)
    n_req = server.count()
    stats, _ = collect(pool_cfg(server.url), q, path, CollectSpec(**SPEC), progress=False)
    assert stats.done == 0 and stats.total == 0 and server.count() == n_req
    # lose some rows, as a kill -9 would: the rerun regenerates exactly those, identically (seeded)
    with ObservationStore(path) as s:
        s.connection.execute("DELETE FROM observations WHERE model = 'b' AND query_id = 'q0'")
    stats, _ = collect(pool_cfg(server.url), q, path, CollectSpec(**SPEC), progress=False)
    assert stats.done == 4  # q0 is a training query: 2 rewrites x 2 decodes
    again = stored(path)
    assert server.count(rewriter=True) == sum(
        r["messages"][0]["role"] == "system" for r in server.requests[:n_req]
    )
    pd.testing.assert_frame_equal(first.drop(columns="latency_s"), again.drop(columns="latency_s"))


def test_rewrites_are_persisted_checked_and_fall_back_to_templates(tmp_path, server):
    q = load_queries(queries_file(tmp_path))
    path = tmp_path / "s.duckdb"
    stats, _ = collect(pool_cfg(server.url), q, path, CollectSpec(**SPEC), progress=False)
    with ObservationStore(path, read_only=True) as s:
        rw = s.connection.execute(f"SELECT * FROM {REWRITES_TABLE} ORDER BY query_id, variant_id").df()
        at = s.connection.execute(f"SELECT * FROM {ATTEMPTS_TABLE}").df()
    assert len(rw) == 3 * 2 and set(rw["source"]) <= {"model", "template"}
    rejected = at[~at["accepted"]]
    assert len(rejected) > 0 and rejected["text"].eq("no").all()  # odd seeds answer "no"
    assert rejected["flags"].str.contains("incomplete").all()
    assert stats.rewrites_model + stats.rewrites_template == 6
    df = stored(path)
    used = set(df.loc[df["prompt_variant_id"] >= 0, "rewrite_text"])
    assert used == set(rw["text"])


def test_budget_stops_cleanly(tmp_path, server):
    q = load_queries(queries_file(tmp_path, n_train=8, n_test=0))
    # about 50 of the ~96 requests at 30e-6 USD each; before each request the runner reserves its
    # upper-bound cost (max_tokens), so it stops before, never after, crossing the budget
    budget = 1.5e-3
    stats, est = collect(
        pool_cfg(server.url),
        q,
        tmp_path / "s.duckdb",
        CollectSpec(**(SPEC | {"budget_usd": budget})),
        progress=False,
    )
    assert stats.stopped and stats.stopped.startswith("budget")
    assert stats.spend_usd <= budget + 1e-12
    n = len(stored(tmp_path / "s.duckdb"))
    assert 0 < n == stats.done < est.generations


def test_budget_is_checked_against_actual_spend(tmp_path, server):
    """Answers of 5 tokens with max_tokens 500: the upper-bound estimate is far above what the
    answers cost. The run must spend most of the budget (issue 16: it stopped at 20% because every
    request reserved max_tokens), stop cleanly, and report estimate and actual spend apart."""
    q = load_queries(queries_file(tmp_path, n_train=8, n_test=0))
    cfg = pool_cfg(server.url, max_tokens=500)
    full, est = collect(cfg, q, tmp_path / "full.duckdb", CollectSpec(**SPEC), dry_run=True, progress=False)
    budget = 1.5e-3
    stats, est = collect(cfg, q, tmp_path / "s.duckdb", CollectSpec(**(SPEC | {"budget_usd": budget})),
                         progress=False)
    assert est.total_usd > 10 * budget and stats.estimate_usd == est.total_usd   # the bound: not spent
    assert stats.stopped and stats.stopped.startswith("budget") and "spent $" in stats.stopped
    assert 0.9 * budget <= stats.spend_usd <= budget + 1e-12          # actual spend close to the budget
    assert stats.reserved_usd == pytest.approx(0.0, abs=1e-15)
    n = len(stored(tmp_path / "s.duckdb"))
    assert 0 < n == stats.done < est.generations


def test_dry_run_prices_the_missing_work_without_requests(tmp_path, server):
    q = load_queries(queries_file(tmp_path))
    stats, est = collect(
        pool_cfg(server.url), q, tmp_path / "s.duckdb", CollectSpec(**SPEC), dry_run=True, progress=False
    )
    assert server.count() == 0 and stats.done == 0
    rows = {r["model"]: r for r in est.rows}
    assert rows["a"]["generations"] == 12 and est.generations == 24
    assert rows["a"]["output_tokens_max"] == 12 * 5
    # prompt "Q: What is i + 1?" (17 chars) / 4 + 4 tokens for the one message -> 8.25 -> 8
    assert rows["a"]["input_tokens_est"] == 12 * 8
    assert rows["a"]["usd_upper_bound"] == pytest.approx((96 * 1 + 60 * 2) / 1e6)
    assert rows["rw (rewriter, at most)"]["generations"] == 3 * 2 * 2  # queries x K x max_attempts


def test_unknown_model_or_task_is_a_config_error(tmp_path, server):
    q = load_queries(queries_file(tmp_path))
    with pytest.raises(ConfigError, match="no model 'zz'"):
        collect(pool_cfg(server.url), q, tmp_path / "s.duckdb", CollectSpec(**(SPEC | {"models": ("zz",)})))
    with pytest.raises(ConfigError, match="no task 'nope'"):
        collect(pool_cfg(server.url), q, tmp_path / "s.duckdb", CollectSpec(**(SPEC | {"task": "nope"})))


def test_iter_units_groups_consecutive_missing_decodes():
    q = pd.DataFrame({"query_id": ["x"], "split": ["train"]})
    spec = CollectSpec(dataset="d", task="t", models=("a",), rewrites=1, decodes=4)
    have = {("train", "x", "a", 0, 1, "prompt_variation")}
    units = list(iter_units(q, "a", spec, have))
    assert [u.decode_ids for u in units] == [(0,), (2, 3)]


def test_kill_9_mid_run_then_resume(tmp_path):
    """A collector process killed with SIGKILL, then resumed: exactly the planned keys, no duplicates."""
    slow = Server(delay_s=0.05)
    try:
        qpath = queries_file(tmp_path, n_train=4, n_test=2)
        cfg_path = tmp_path / "pool.yaml"
        from caproute.collect.config import dump_pool_config

        dump_pool_config(pool_cfg(slow.url), cfg_path)
        path = tmp_path / "s.duckdb"
        args = [
            sys.executable,
            "-m",
            "caproute",
            "collect",
            "--config",
            str(cfg_path),
            "--queries",
            str(qpath),
            "--store",
            str(path),
            "--task",
            "t",
            "--dataset",
            "d",
            "--rewrites",
            "2",
            "--decodes",
            "2",
            "--test-rewrites",
            "2",
            "--test-decodes",
            "2",
            "--models",
            "a,b",
            "--no-similarity-check",
        ]
        env = dict(os.environ)
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 60
        while slow.count(rewriter=False) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert slow.count(rewriter=False) < 2 * (4 * 4 + 2 * 4)  # really mid-run
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        df = stored(path)
        keys = keys_of(df)
        assert len(keys) == len(set(keys))
        assert set(keys) == expected_keys(load_queries(qpath))
    finally:
        slow.close()


# -- queries files ----------------------------------------------------------------------------------
def test_queries_errors_name_file_line_and_field(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text(
        '{"query_id": "a", "question": "x?", "answer": "1"}\n{"query_id": "a", "question": "y?", '
        '"answer": "2"}\n'
    )
    with pytest.raises(DataError, match=r"q.jsonl, line 2, field 'query_id': duplicate query_id 'a'"):
        load_queries(p)
    p.write_text('{"query_id": "a", "question": "x?"}\n')
    with pytest.raises(DataError, match="field 'answer': missing required column"):
        load_queries(p)
    p.write_text('{"query_id": "a", "question": "x?", "answer": "1"}\nnot json\n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        load_queries(p)
    # the data layer's readers: bad bytes, lone surrogates, NaN, wrong types -- named, never a traceback
    for content, where in ((b'{"query_id": "a", "question": "x\xff", "answer": "1"}\n', "line 1, field 'question'"),
                           (b'{"query_id": "a", "question": "\\ud800", "answer": "1"}\n', "line 1, field 'question'"),
                           (b'{"query_id": "a", "question": "x", "answer": NaN}\n', "line 1, field 'answer'"),
                           (b'{"query_id": "a", "question": ["x"], "answer": "1"}\n', "line 1, field 'question'")):
        p.write_bytes(content)
        with pytest.raises(DataError, match=where):
            load_queries(p)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_bytes(b"query_id,question,answer\na,x\xfe,1\n")
    with pytest.raises(DataError, match="bad.csv, line 2, field 'question': not valid UTF-8"):
        load_queries(bad_csv)
    p.write_text('{"query_id": "a", "question": "x?", "answer": "1", "split": "dev"}\n')
    with pytest.raises(DataError, match="line 1, field 'split'"):
        load_queries(p)
    c = tmp_path / "q.csv"
    c.write_text("query_id,question,answer\na,x?,1\nb,,2\n")
    with pytest.raises(DataError, match="q.csv, line 3, field 'question': empty value"):
        load_queries(c)


def test_split_test_is_exact_and_deterministic(tmp_path):
    ids = pd.Series([f"q{i}" for i in range(50)])
    s1, s2 = assign_splits(ids, 0.3, seed=1), assign_splits(ids, 0.3, seed=1)
    assert (s1 == s2).all() and (s1 == "test").sum() == 15
    assert not (assign_splits(ids, 0.3, seed=2) == s1).all()
    with pytest.raises(DataError, match="test-fraction"):
        assign_splits(ids, 1.5, seed=1)


def test_scoring_validity_report_hand_case():
    obs = pd.DataFrame(
        {
            "dataset": "d",
            "split": "train",
            "query_id": ["a", "a", "b", "b"],
            "model": ["m", "n", "m", "n"],
            "prompt_variant_id": 0,
            "decode_id": 0,
            "observation_type": "prompt_variation",
            "score": [1.0, 0.0, 1.0, 0.0],
            "cost": [0.1, 0.1, 0.1, 0.1],
            "cost_known": [True, True, True, False],
            "response_text": ["Final Answer: 3", "no answer", "Final Answer: 5", "Final Answer: 4"],
        }
    )
    gold = pd.DataFrame({"query_id": ["a", "b"], "answer": ["3", "4"]})
    r = scoring_validity_report(obs, gold, get_scorer("numeric"))
    assert r["parse_rate"] == 0.75
    assert r["rescore_agreement"] == 0.5  # row 3 stored 1 but rescoring gives 0; row 4 stored 0, rescored 1
    assert r["duplicate_keys"] == 0 and r["non_finite_scores"] == 0 and r["out_of_range_scores"] == 0
    assert r["cost_unknown"] == 1
    assert r["per_model"]["n"] == {"n": 2, "parse_rate": 0.5, "mean_score": 0.0}
