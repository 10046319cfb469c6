"""Adaptive repeated sampling: the allocation rules (pure functions) and the offline replay."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from caproute.evaluate.adaptive_study import bought_rows, replay, replay_data
from caproute.supervise.ablations import build_supervision
from caproute.supervise.adaptive import AdaptiveConfig, next_model, next_rewrite, plugin_stats
from caproute.supervise.labels import hard_labels
from caproute.supervise.normalize import CostNormalizer
from caproute.supervise.stats import capability_stats


def sums(scores_per_model, costs=None):
    """Running sums (n, s, ss, c) of one query from per-model score lists."""
    n = np.array([len(x) for x in scores_per_model], float)
    s = np.array([np.sum(x) for x in scores_per_model], float)
    ss = np.array([np.sum(np.square(x)) for x in scores_per_model], float)
    c = n * (np.zeros(len(n)) if costs is None else np.asarray(costs, float))
    return n, s, ss, c


def test_plugin_stats_match_capability_stats():
    rng = np.random.default_rng(0)
    rows = [{"dataset": "d", "query_id": "q", "model": m, "prompt_variant_id": 0, "decode_id": i,
             "score": float(rng.random() < 0.6), "cost": 0.0}
            for m in ("a", "b") for i in range(7)]
    obs = pd.DataFrame(rows)
    st = capability_stats(obs, np.zeros(len(obs)))
    per = [obs[obs.model == m].score.to_numpy() for m in ("a", "b")]
    n, s, ss, c = sums(per)
    mu, sigma, mu_c = plugin_stats(n, s, ss, c)
    np.testing.assert_allclose(mu, st.mu_q.to_numpy())
    np.testing.assert_allclose(sigma, st.sigma_q.to_numpy())
    # hand-computed: scores 1, 1, 0 -> mean 2/3, sample std sqrt(1/3)
    mu, sigma, _ = plugin_stats(np.array([3.0]), np.array([2.0]), np.array([2.0]), np.zeros(1))
    assert mu[0] == pytest.approx(2 / 3) and sigma[0] == pytest.approx(np.sqrt(1 / 3))


@pytest.mark.parametrize("rule", ["pob", "lucb"])
def test_clear_winner_settles(rule):
    n, s, ss, c = sums([[1.0] * 12, [0.0] * 12, [0.0] * 12], costs=[0.5, 0.1, 0.2])
    cfg = AdaptiveConfig(rule=rule)
    assert next_model(n, s, ss, c, [1, 1, 1], cfg) is None


@pytest.mark.parametrize("rule", ["pob", "lucb"])
def test_close_pair_keeps_sampling_the_two_contenders(rule):
    n, s, ss, c = sums([[1, 0, 1, 0], [0, 1, 0, 1], [0.0] * 10])
    cfg = AdaptiveConfig(rule=rule)
    nxt = next_model(n, s, ss, c, [1, 1, 1], cfg)
    assert nxt in (0, 1)


def test_warm_up_samples_unseen_models_first():
    n, s, ss, c = sums([[1.0] * 5, [], [0.0]])
    assert next_model(n, s, ss, c, [1, 1, 1], AdaptiveConfig()) == 1
    # below the minimum (2) the query never settles, however clear the rest is
    n, s, ss, c = sums([[1.0] * 20, [0.0] * 20, [0.0]])
    assert next_model(n, s, ss, c, [1, 1, 1], AdaptiveConfig(min_per_model=2)) == 2


def test_capacity_is_respected_and_exhaustion_stops():
    n, s, ss, c = sums([[1, 0, 1, 0], [0, 1, 0, 1], [0, 0]])
    cfg = AdaptiveConfig()
    assert next_model(n, s, ss, c, [1, 1, 1], cfg, capacity=[0, 3, 0]) == 1
    assert next_model(n, s, ss, c, [1, 1, 1], cfg, capacity=[0, 0, 0]) is None


def test_cost_aware_choice_prefers_the_cheaper_of_two_equally_uncertain_models():
    n, s, ss, c = sums([[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1], [0.0] * 30])
    d_cheap0 = next_model(n, s, ss, c, [1.0, 100.0, 1.0], AdaptiveConfig(), seed=1)
    d_cheap1 = next_model(n, s, ss, c, [100.0, 1.0, 1.0], AdaptiveConfig(), seed=1)
    assert (d_cheap0, d_cheap1) == (0, 1)


def test_uniform_never_settles_and_balances():
    n, s, ss, c = sums([[1.0] * 9, [0.0] * 8, [0.0] * 9])
    assert next_model(n, s, ss, c, [1, 1, 1], AdaptiveConfig(rule="uniform")) == 1


def test_a_range_of_lambdas_keeps_a_cost_sensitive_label_open():
    # model 0: quality 1.0 at normalised cost 1; model 1: 0.5 at cost 0 (40 samples each).
    # At lambda 0.05 model 0 wins clearly (U 0.95 vs 0.5); at lambda 0.5 the two tie (0.5 vs 0.5).
    s0, s1 = [1.0] * 40, [1.0] * 20 + [0.0] * 20
    n, s, ss, c = sums([s0, s1], costs=[1.0, 0.0])
    one = AdaptiveConfig(lambdas=(0.05,), beta=0.0)
    both = AdaptiveConfig(lambdas=(0.05, 0.5), beta=0.0)
    assert next_model(n, s, ss, c, [1, 1], one) is None
    assert next_model(n, s, ss, c, [1, 1], both) is not None


def test_next_rewrite_covers_rewrites_before_decodes():
    assert next_rewrite([1, 1, 0, 1]) == 2
    assert next_rewrite([2, 1, 1]) == 1
    with pytest.raises(ValueError):
        next_rewrite([])


def test_config_rejects_bad_values():
    for bad in ({"rule": "greedy"}, {"delta": 0.0}, {"epsilon": float("nan")}, {"lambdas": ()},
                {"min_per_model": 0}, {"prior": (0.0, 1.0)}):
        with pytest.raises(ValueError):
            AdaptiveConfig(**bad)


# ----------------------------------------------------------------------------- replay


def synthetic_obs(n_queries=60, k=3, r=4, seed=0) -> pd.DataFrame:
    """Known truth: three models; per query one model is clearly best (p = 0.95 vs 0.1), except a
    fifth of 'close' queries (0.6 vs 0.5) where the label needs many samples."""
    rng = np.random.default_rng(seed)
    rows = []
    for qi in range(n_queries):
        win = qi % 3
        close = qi % 5 == 0
        for mi, model in enumerate(("m0", "m1", "m2")):
            p = (0.6 if mi == win else 0.5 if mi == (win + 1) % 3 else 0.1) if close else \
                (0.95 if mi == win else 0.1)
            for v in range(k):
                for d in range(r):
                    rows.append({"dataset": "syn", "split": "train", "query_id": f"q{qi:03d}", "model": model,
                                 "prompt_variant_id": v, "decode_id": d, "observation_type": "prompt_variation",
                                 "score": float(rng.random() < p), "cost": 0.001 * (mi + 1)})
    return pd.DataFrame(rows)


def _setup(obs):
    norm = CostNormalizer().fit(obs)
    models = ("m0", "m1", "m2")
    return replay_data(obs, models, norm.transform(obs), seed=3), norm, models


def test_coverage_order_visits_every_rewrite_before_a_second_decode():
    obs = synthetic_obs(n_queries=2)
    data, _, _ = _setup(obs)
    first = data.order[data.start[0, 0]: data.start[0, 0] + 3]
    assert sorted(obs.iloc[first]["prompt_variant_id"]) == [0, 1, 2]
    # rewrites come in the same (per-query) order for every model
    v = [obs.iloc[data.order[data.start[0, m]: data.start[0, m] + 3]]["prompt_variant_id"].tolist()
         for m in range(3)]
    assert v[0] == v[1] == v[2]


def test_full_budget_uniform_buys_the_whole_grid_once():
    obs = synthetic_obs(n_queries=12)
    data, norm, models = _setup(obs)
    res = replay(data, AdaptiveConfig(rule="uniform"), 1.0)
    assert res.generations == len(obs) and np.array_equal(res.rows, np.arange(len(obs)))
    full = build_supervision(obs, normalizer=norm, models=models)
    got = build_supervision(obs.iloc[res.rows], normalizer=norm, models=models)
    np.testing.assert_allclose(got.mu_q, full.mu_q)


@pytest.mark.parametrize("rule", ["uniform", "pob", "lucb"])
def test_budget_is_respected_and_rows_are_distinct(rule):
    obs = synthetic_obs(n_queries=20)
    data, _, _ = _setup(obs)
    res = replay(data, AdaptiveConfig(rule=rule), 0.3, seed=1)
    assert res.generations <= int(0.3 * len(obs)) + 1
    assert np.unique(res.rows).size == res.rows.size == res.generations
    assert (res.n >= 1).all()        # every pair seen at least once
    np.testing.assert_array_equal(bought_rows(data, res.n), res.rows)
    again = replay(data, AdaptiveConfig(rule=rule), 0.3, seed=1)
    np.testing.assert_array_equal(again.rows, res.rows)  # seeded: same replay twice


def test_cost_budget_counts_raw_cost():
    obs = synthetic_obs(n_queries=20)
    data, _, _ = _setup(obs)
    res = replay(data, AdaptiveConfig(rule="pob"), 0.25, unit="cost", seed=0)
    assert res.cost <= 0.25 * obs["cost"].sum() + 1e-12


def test_adaptive_beats_uniform_on_known_truth():
    obs = synthetic_obs(n_queries=90, k=4, r=5, seed=1)
    data, norm, models = _setup(obs)
    full = build_supervision(obs, normalizer=norm, models=models)
    want = hard_labels(full.utility(0.05, 0.2), full.mu_c)
    agree = {}
    for rule in ("uniform", "pob"):
        vals = []
        for seed in range(3):
            data, _, _ = replay_data(obs, models, norm.transform(obs), seed=seed), None, None
            res = replay(data, AdaptiveConfig(rule=rule), 0.3, seed=seed)
            sup = build_supervision(obs.iloc[res.rows], normalizer=norm, models=models)
            vals.append(np.mean(hard_labels(sup.utility(0.05, 0.2), sup.mu_c) == want))
        agree[rule] = float(np.mean(vals))
    assert agree["pob"] > agree["uniform"]
    assert agree["pob"] >= 0.9


# ----------------------------------------------------------------------------- the command


def test_adaptive_study_command_writes_rows_report_and_plot(tmp_path):
    import json

    from typer.testing import CliRunner

    from caproute.cli import app

    out = tmp_path / "a.json"
    res = CliRunner().invoke(app, ["adaptive-study", "--data", "builtin", "--budgets", "0.4,1.0",
                                   "--policies", "uniform", "--policies", "pob", "--seeds", "1",
                                   "--json", str(out), "--report", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    keys = {"policy", "budget_fraction", "generations", "cost", "label_agreement", "router",
            "utility_rewrite", "utility_decode"}
    assert payload["rows"] and all(keys <= set(r) for r in payload["rows"])
    assert {r["policy"] for r in payload["rows"]} == {"uniform", "pob"}
    assert {r["policy"] for r in payload["references"]} == {"full_dars", "single_shot"}
    full = next(r for r in payload["rows"] if r["policy"] == "uniform" and r["budget_fraction"] == 1.0)
    assert full["label_agreement"] == 1.0 and full["generations"] == payload["config"]["full_grid_generations"]
    for name in ("adaptive.md", "adaptive.csv", "adaptive.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0


@pytest.mark.parametrize("args, named", [
    (["--budgets", "0"], "--budgets"), (["--budgets", "1.5"], "--budgets"), (["--delta", "nan"], "--delta"),
    (["--policies", "greedy"], "--policies"), (["--budget-unit", "usd"], "--budget-unit"),
    (["--routers", "nope"], "nope"),
])
def test_adaptive_study_bad_arguments_are_named_errors(args, named):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "caproute", "adaptive-study", "--data", "builtin", *args],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr and named in r.stdout + r.stderr
