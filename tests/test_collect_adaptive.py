"""``caproute collect --adaptive``: the live allocation loop, kill -9 + resume, budgets, and one run on
the real local llama.cpp pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from caproute.collect.adaptive import AdaptivePlanner
from caproute.collect.config import dump_pool_config
from caproute.collect.ledger import exit_reason
from caproute.collect.plan import CollectSpec
from caproute.collect.queries import load_queries
from caproute.collect.runner import collect
from caproute.errors import ConfigError
from caproute.supervise.adaptive import AdaptiveConfig, fit_prior
from test_collect_runner import Server, pool_cfg, queries_file, stored

SPEC = dict(dataset="d", task="t", models=("a", "b"), rewrites=2, decodes=3, test_rewrites=2,
            test_decodes=2, similarity_check=False)


def _train_keys(df):
    t = df[df["split"] == "train"]
    return list(zip(t["query_id"], t["model"], t["prompt_variant_id"], t["decode_id"], strict=True))


def test_planner_covers_rewrites_first_and_stops_at_the_grid():
    p = AdaptivePlanner(("a", "b"), rewrites=2, decodes=2, config=AdaptiveConfig(rule="uniform"),
                        prices=np.ones(2), seed=0, dataset="d")
    seen = []
    while (step := p.next("q")) is not None:
        m, k, r = step
        seen.append((m, k, r))
        p.record("q", m, k, [(1.0, 0.1)])
    assert len(seen) == len(set(seen)) == 8            # the whole 2 x 2 grid of both models, once
    first_two_of_a = [s for s in seen if s[0] == 0][:2]
    assert {k for _, k, _ in first_two_of_a} == {0, 1}  # both rewrites before a second decode


def test_planner_rebuilt_from_the_store_decides_as_the_run_that_recorded_it():
    """Empirical-Bayes prior (refitted from every query) and Bernoulli update (seeded per
    observation key): a planner that loads the stored rows has the same state, prior and next step
    as the one that recorded them, so a resumed run goes on as the killed one would have."""
    cfg = AdaptiveConfig(prior_fit="eb", beta_update="bernoulli", delta=0.01)   # strict: queries go on
    models = ("a", "b")
    live = AdaptivePlanner(models, rewrites=2, decodes=4, config=cfg, prices=np.ones(2), seed=5, dataset="d")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        qid = f"q{i}"
        for _ in range(6):
            step = live.next(qid)
            if step is None:
                break
            m, k, r = step
            score = float(rng.choice([0.0, 0.4, 1.0]))
            live.record(qid, m, k, [(score, 0.01 * (m + 1))])
            rows.append({"query_id": qid, "model": models[m], "prompt_variant_id": k, "decode_id": r,
                         "score": score, "cost": 0.01 * (m + 1)})
    import pandas as pd

    resumed = AdaptivePlanner(models, rewrites=2, decodes=4, config=cfg, prices=np.ones(2), seed=5, dataset="d")
    resumed.load(pd.DataFrame(rows).sample(frac=1.0, random_state=1))     # any row order
    for qid, st in live.state.items():
        np.testing.assert_array_equal(resumed.state[qid].sb, st.sb)
        np.testing.assert_array_equal(resumed.state[qid].slots, st.slots)
    # the Bernoulli draws are 0/1 and count every score 0.4 as one or the other
    sb = np.concatenate([st.sb for st in live.state.values()])
    assert set(np.unique(sb)) <= set(range(6))
    np.testing.assert_array_equal(resumed.prior(), live.prior())   # fresh fit == the live run's cached one
    assert not np.allclose(live.prior(), 1.0)          # enough queries: the prior is fitted
    assert [resumed.next(q) for q in live.state] == [live.next(q) for q in live.state]


class _RefitEveryStep(AdaptivePlanner):
    """The planner as it was before the prior cache: one fit of every model from all the counts at
    every step."""

    def prior(self):
        n = np.stack([st.n for st in self.state.values()])
        sb = np.stack([st.sb for st in self.state.values()])
        return fit_prior(n, sb, self.config)


def _synthetic_run(planners, *, queries=24, in_flight=4, seed=3):
    """Drive ``planners`` in lockstep through a synthetic collection with known truth: query i's
    accuracy on model m is p[i, m] (U-shaped across queries, the case the fitted prior is for), an
    observation's score is 1 with probability p (drawn from its key, so every planner that takes
    the same step sees the same score; the last model scores p itself), and every ninth sample fails (nothing stored). ``in_flight``
    queries take turns, as with concurrency > 1. Asserts that every planner takes the same steps
    and uses the same prior at every step; returns (steps, the prior after each step)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(0.3, 0.3, size=(queries, len(planners[0].models)))
    pending = [f"q{i}" for i in range(queries)]
    active, steps, priors = [], 0, []
    while pending or active:
        while pending and len(active) < in_flight:
            active.append(pending.pop(0))
        for qid in list(active):
            moves = [pl.next(qid) for pl in planners]
            assert all(mv == moves[0] for mv in moves), (qid, moves)
            if moves[0] is None:
                active.remove(qid)
                continue
            m, k, r = moves[0]
            steps += 1
            u = np.random.default_rng([seed, int(qid[1:]), m, k, r]).random()
            truth = p[int(qid[1:]), m]
            score = round(truth, 2) if m == 2 else float(u < truth)   # model c: fractional scores
            res = [] if steps % 9 == 0 else [(score, 0.01 * (m + 1))]
            for pl in planners:
                pl.record(qid, m, k, res)
            now = [pl.prior() for pl in planners]
            for other in now[1:]:
                np.testing.assert_array_equal(other, now[0])    # identical, not merely close
            priors.append(now[0])
    return steps, priors


def test_cached_prior_decides_exactly_as_a_refit_at_every_step(monkeypatch):
    """The empirical-Bayes prior is refitted only when a model's counts changed: on a synthetic
    run the cached planner takes the same steps with a bit-identical prior as one that refits
    every model at every step, and fits far fewer times."""
    import caproute.collect.adaptive as mod

    cfg = AdaptiveConfig(prior_fit="eb", delta=0.01)    # strict: queries go on
    args = dict(rewrites=2, decodes=3, config=cfg, prices=np.array([1.0, 2.0, 4.0]), seed=7, dataset="d")
    cached, every = AdaptivePlanner(("a", "b", "c"), **args), _RefitEveryStep(("a", "b", "c"), **args)
    fits = []
    monkeypatch.setattr(mod, "fit_prior", lambda n, s, c: fits.append(n.shape) or fit_prior(n, s, c))
    steps, priors = _synthetic_run([cached, every])
    print(f"{len(fits)} single-model fits for {steps} steps")
    assert steps >= 100
    assert all(shape[1] == 1 for shape in fits)          # one model per fit
    assert len(fits) < steps                             # a refit at every step would be 3 x steps
    assert not np.allclose(priors[-1], 1.0)              # enough queries: the prior really is fitted
    assert len({p.tobytes() for p in priors}) > 10       # and it moved during the run


def test_prior_is_not_refitted_while_the_counts_it_reads_are_unchanged(monkeypatch):
    import dataclasses

    import caproute.collect.adaptive as mod

    fits = []

    def counted(n, s, c):
        fits.append(np.asarray(n).copy())
        return fit_prior(n, s, c)

    monkeypatch.setattr(mod, "fit_prior", counted)
    cfg = AdaptiveConfig(prior_fit="eb")
    pl = AdaptivePlanner(("a", "b"), rewrites=2, decodes=3, config=cfg, prices=np.ones(2), seed=0, dataset="d")
    rng = np.random.default_rng(1)
    for i in range(12):                                  # 12 queries, 2 - 3 observations per pair
        pl.state[f"q{i}"] = mod.PairSums.empty(2, 2)
        for m in (0, 1):
            for k in range(int(rng.integers(2, 4))):
                pl.record(f"q{i}", m, k % 2, [(float(rng.random() < 0.5), 0.1)])
    first = pl.prior()
    assert len(fits) == 2                                # one fit per model
    np.testing.assert_array_equal(pl.prior(), first)
    assert len(fits) == 2                                # nothing changed: no refit
    pl.next("new")                                       # a query with no observations yet
    pl.record("q0", 1, 0, [])                            # a failed sample: a slot used, no count
    np.testing.assert_array_equal(pl.prior(), first)
    assert len(fits) == 2
    pl.record("q3", 1, 1, [(1.0, 0.1)])                  # model b's counts change, a's do not
    second = pl.prior()
    assert len(fits) == 3 and fits[-1].shape == (13, 1)
    np.testing.assert_array_equal(fits[-1][:, 0], [st.n[1] for st in pl.state.values()])
    np.testing.assert_array_equal(second[0], first[0])
    np.testing.assert_array_equal(second, _RefitEveryStep.prior(pl))
    pl.config = dataclasses.replace(cfg, prior=(0.5, 2.0))   # the base prior is part of the key
    third = pl.prior()
    assert len(fits) == 5
    np.testing.assert_array_equal(third, _RefitEveryStep.prior(pl))


def test_adaptive_collection_is_a_subset_of_the_grid_with_the_full_test_split(tmp_path):
    srv = Server()
    try:
        q = load_queries(queries_file(tmp_path, n_train=4, n_test=2))
        path = tmp_path / "s.duckdb"
        stats, _ = collect(pool_cfg(srv.url), q, path, CollectSpec(**SPEC, adaptive=AdaptiveConfig()),
                           progress=False)
        df = stored(path)
        keys = _train_keys(df)
        assert len(keys) == len(set(keys))
        grid = {(f"q{i}", m, k, r) for i in range(4) for m in "ab" for k in range(2) for r in range(3)}
        assert set(keys) <= grid
        test = df[df["split"] == "test"]
        assert len(test) == 2 * 2 * (2 + 2)            # the test views are always complete
        a = stats.adaptive
        assert a["full_grid_generations"] == len(grid)
        assert a["generations"] == len(keys)
        assert a["saved_generations"] == len(grid) - len(keys)
        assert a["queries_settled"] + a["queries_grid_full"] == 4
        # a rerun finds every query settled or full: nothing new
        again, _ = collect(pool_cfg(srv.url), q, path, CollectSpec(**SPEC, adaptive=AdaptiveConfig()),
                           progress=False)
        assert again.adaptive["generations_this_run"] == 0
        assert sorted(_train_keys(stored(path))) == sorted(keys)
    finally:
        srv.close()


def test_budget_fraction_caps_the_training_generations(tmp_path):
    srv = Server()
    try:
        q = load_queries(queries_file(tmp_path, n_train=4, n_test=1))
        path = tmp_path / "s.duckdb"
        spec = CollectSpec(**SPEC, adaptive=AdaptiveConfig(rule="uniform"), budget_fraction=0.25)
        stats, _ = collect(pool_cfg(srv.url), q, path, spec, progress=False)
        grid = 4 * 2 * 2 * 3
        assert len(_train_keys(stored(path))) <= int(0.25 * grid)
        assert stats.adaptive["queries_stopped_by_budget"] >= 1
        assert len(stored(path).query("split == 'test'")) == 2 * 4   # test split unaffected
        assert stats.stop_kind == "budget" and exit_reason(stats) is None  # the user's own budget: exit 0
        # the same through the CLI (it exited 1 with nothing on stderr)
        from typer.testing import CliRunner

        from caproute.cli import app
        from caproute.collect.config import dump_pool_config

        dump_pool_config(pool_cfg(srv.url), tmp_path / "pool.yaml")
        r = CliRunner().invoke(app, [
            "collect", "--config", str(tmp_path / "pool.yaml"), "--queries", str(queries_file(tmp_path, n_train=4, n_test=1)),
            "--store", str(tmp_path / "cli.duckdb"), "--task", SPEC["task"], "--models", ",".join(SPEC["models"]),
            "--rewrites", str(SPEC["rewrites"]), "--decodes", str(SPEC["decodes"]),
            "--test-rewrites", str(SPEC["test_rewrites"]), "--test-decodes", str(SPEC["test_decodes"]),
            "--dataset", SPEC["dataset"], "--no-similarity-check", "--adaptive", "--adaptive-rule", "uniform",
            "--budget-fraction", "0.25"])
        assert r.exit_code == 0, r.output
        assert "adaptive budget of 0.25 x the full grid reached" in " ".join(r.output.split())
    finally:
        srv.close()


def test_collect_adaptive_flags_run_and_bad_values_are_named(tmp_path):
    from typer.testing import CliRunner

    from caproute.cli import app

    srv = Server()
    try:
        dump_pool_config(pool_cfg(srv.url), tmp_path / "pool.yaml")
        qpath = queries_file(tmp_path, n_train=4, n_test=1)
        base = ["collect", "--config", str(tmp_path / "pool.yaml"), "--queries", str(qpath), "--task", SPEC["task"],
                "--models", ",".join(SPEC["models"]), "--rewrites", "2", "--decodes", "3", "--test-rewrites", "2",
                "--test-decodes", "2", "--dataset", SPEC["dataset"], "--no-similarity-check", "--adaptive"]
        r = CliRunner().invoke(app, [*base, "--store", str(tmp_path / "a.duckdb"), "--adaptive-predictive", "rate",
                                     "--adaptive-prior-fit", "eb", "--adaptive-beta-update", "bernoulli"])
        assert r.exit_code == 0, r.output
        keys = _train_keys(stored(tmp_path / "a.duckdb"))
        assert len(keys) == len(set(keys)) >= 4 * 2
        for flag in ("--adaptive-predictive", "--adaptive-prior-fit", "--adaptive-beta-update"):
            r = CliRunner().invoke(app, [*base, "--store", str(tmp_path / "b.duckdb"), flag, "nope"])
            assert r.exit_code == 2 and flag in " ".join(r.output.split()), r.output
    finally:
        srv.close()


def test_budget_fraction_needs_adaptive_and_a_valid_range():
    with pytest.raises(ConfigError):
        CollectSpec(**SPEC, budget_fraction=0.5)
    with pytest.raises(ConfigError):
        CollectSpec(**SPEC, adaptive=AdaptiveConfig(), budget_fraction=1.5)


def _cli_args(cfg_path, qpath, store, *extra):
    return [sys.executable, "-m", "caproute", "collect", "--config", str(cfg_path), "--queries", str(qpath),
            "--store", str(store), "--task", "t", "--dataset", "d", "--rewrites", "2", "--decodes", "3",
            "--test-rewrites", "2", "--test-decodes", "2", "--models", "a,b", "--no-similarity-check",
            "--adaptive", *extra]


def test_kill_9_then_resume_continues_without_duplicates(tmp_path):
    slow = Server(delay_s=0.05)
    try:
        qpath = queries_file(tmp_path, n_train=6, n_test=1)
        cfg_path = tmp_path / "pool.yaml"
        dump_pool_config(pool_cfg(slow.url), cfg_path)
        store = tmp_path / "s.duckdb"
        args = _cli_args(cfg_path, qpath, store, "--adaptive-rule", "uniform")
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while slow.count(rewriter=False) < 15 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 15 <= slow.count(rewriter=False) < 6 * 2 * 6 + 2 * 4    # really mid-run
        r = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "adaptive:" in r.stdout and "saved" in r.stdout
        keys = _train_keys(stored(store))
        assert len(keys) == len(set(keys))
        # the uniform rule never settles: after the resume every training pair holds its full grid
        assert len(keys) == 6 * 2 * 2 * 3
        report = json.loads((tmp_path / "s.duckdb.reports" / "d" / "adaptive.json").read_text())
        assert report["generations"] == len(keys) and report["saved_generations"] == 0
    finally:
        slow.close()


@pytest.mark.pool
@pytest.mark.slow
def test_adaptive_collection_on_the_real_local_pool(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make install builds it)")
    from caproute.collect.pool import start_pool

    h = start_pool(["smollm2-135m", "smollm2-135m-q2k"], port_base=0, workdir=tmp_path / "pool",
                   rewriter="smollm2-135m")
    try:
        rows = [{"query_id": f"q{i}", "question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1),
                 "split": "train" if i < 3 else "test"} for i in range(4)]
        qpath = tmp_path / "q.jsonl"
        qpath.write_text("".join(json.dumps(r) + "\n" for r in rows))
        store = tmp_path / "obs.duckdb"
        args = [sys.executable, "-m", "caproute", "collect", "--config", str(h.config_path), "--queries",
                str(qpath), "--store", str(store), "--task", "numeric", "--dataset", "adaptive-pool",
                "--rewrites", "2", "--decodes", "2", "--test-rewrites", "1", "--test-decodes", "1",
                "--adaptive", "--no-similarity-check"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=dict(os.environ))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "adaptive:" in r.stdout
        report = json.loads((tmp_path / "obs.duckdb.reports" / "adaptive-pool" / "adaptive.json").read_text())
        assert report["full_grid_generations"] == 3 * 2 * 2 * 2
        assert 3 * 2 <= report["generations"] <= report["full_grid_generations"]
        from caproute.data.store import ObservationStore

        with ObservationStore(store, read_only=True) as s:
            df = s.read(dataset="adaptive-pool")
        keys = _train_keys(df)
        assert len(keys) == len(set(keys)) == report["generations"]
        again = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        with ObservationStore(store, read_only=True) as s:
            assert len(s.read(dataset="adaptive-pool")) == len(df)   # resumed: nothing to add
    finally:
        h.stop()
