"""Parity with the authors' released DARS code (AIGNLAI/DARS @ 9b6da7a: methods/knn_router.py,
avengers_pro.py, mlp.py, embed_llm.py, graph_router.py, mirt.py, rm_softmax.py; DARS =
"distribution" mode; their CLI defaults: TF-IDF 20k 1-2 grams, lambda 0.05, beta 0.2, seed 42, and
seeds 42-46 for the stochastic families). Their numbers were produced outside this repository on the fixture
tests/fixtures/dars_parity/math-500 and stored in reference_outputs.json (numbers only; how: see
tests/fixtures/dars_parity/README.md). ``caproute bench`` runs the same family at the same
hyper-parameters (caproute's defaults are theirs) and must agree within the tolerances below;
every known difference is named here and in docs/routers.md (section "Parity with the authors' code").
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from caproute.evaluate.bench import BenchConfig, run_bench
from caproute.evaluate.protocol import load_experiment

FIXTURE = Path(__file__).parent / "fixtures" / "dars_parity"
REF = json.loads((FIXTURE / "reference_outputs.json").read_text())
STATS = ("mu_q", "mu_c", "sigma_q")
FLOAT32 = 2e-6     # their routers compute in float32, ours in float64
# kNN queries whose statistics legitimately differ (docs/routers.md): x018 shares no word with any
# training query, so all 60 neighbours sit at distance 1 and the k = 16 picked are a tie-break
# (their torch.topk's internal order, ours training order); x020's 16th neighbour ties between two
# training queries with the same text (t010, t059); x023 repeats t017's text, and their float32
# matrix-product cdist returns 3.5e-4 instead of 0, so their exact-match rule misses it and t017
# gets 99.6 % of the weight instead of 100 %.
KNN_DIFFER = {"x018", "x020", "x023"}


def bench(router: str, dars_runs: int = 1):
    exp = load_experiment(data=FIXTURE)
    config = BenchConfig(routers=(router,), single_shot_runs=1, dars_runs=dars_runs, studies=("main",))
    result = run_bench(exp, config, progress=False)
    assert tuple(result.models) == tuple(REF["models"])     # both order models alphabetically here
    p = result.predictions
    p = p[(p["supervision"] == "dars") & (p["run"] == 0)]
    chosen = p[p["chosen"]].set_index("query_id").loc[REF["test_query_ids"], "model"].tolist()
    stats = {s: p.pivot(index="query_id", columns="model", values=s).loc[REF["test_query_ids"], REF["models"]]
             .to_numpy() for s in STATS}
    rows = result.rows[(result.rows["router"] == router) & (result.rows["supervision"] == "dars")]
    return chosen, stats, rows.set_index("view")


@pytest.fixture(scope="module")
def knn():
    return bench("knn")


@pytest.fixture(scope="module")
def avengerspro():
    return bench("avengerspro")


def test_knn_decisions_match_on_every_query(knn):
    chosen, _, _ = knn
    assert chosen == REF["knn"]["chosen"]


def test_knn_statistics_match_except_the_documented_ties(knn):
    _, stats, _ = knn
    worst = np.max([np.abs(stats[s] - np.asarray(REF["knn"][s])).max(axis=1) for s in STATS], axis=0)
    differ = {q for q, w in zip(REF["test_query_ids"], worst, strict=True) if w > FLOAT32}
    assert differ == KNN_DIFFER
    x023 = REF["test_query_ids"].index("x023")
    assert worst[x023] < 2e-3      # 99.6 % vs 100 % of the weight on the exact match


def test_knn_metrics_match(knn):
    _, _, rows = knn
    s = REF["knn"]["summary"]      # the documented ties do not change any decision on this fixture
    assert rows.loc["rewrite", "quality_mean"] == pytest.approx(s["rewrite_score"], abs=1e-12)
    assert rows.loc["decode", "quality_mean"] == pytest.approx(s["decoding_score"], abs=1e-12)
    assert rows.loc["decode", "chosen_decoding_instability_mean"] == pytest.approx(s["decoding_score_std"], abs=1e-12)


def test_avengerspro_matches_exactly(avengerspro):
    chosen, stats, rows = avengerspro
    ref = REF["avengerspro"]
    assert chosen == ref["chosen"]
    for s in STATS:
        np.testing.assert_allclose(stats[s], np.asarray(ref[s]), atol=FLOAT32, rtol=0)
    assert rows.loc["rewrite", "quality_mean"] == pytest.approx(ref["summary"]["rewrite_score"], abs=1e-12)
    assert rows.loc["decode", "quality_mean"] == pytest.approx(ref["summary"]["decoding_score"], abs=1e-12)
    assert rows.loc["decode", "chosen_decoding_instability_mean"] == pytest.approx(
        ref["summary"]["decoding_score_std"], abs=1e-12)


def _merge_twin(names):
    return [n.removesuffix("-twin") for n in names]


def _agreement(a, b) -> float:
    return float(np.mean([x == y for x, y in zip(_merge_twin(a), _merge_twin(b), strict=True)]))


@pytest.mark.parametrize("router", ["mlp", "embedllm", "graphrouter", "mirt", "rmsoftmax"])
def test_stochastic_family_agrees_within_seed_variance(router):
    """These families cannot match run for run: theirs and ours draw different random numbers from
    the same seed (MLP: scikit-learn's MLPRegressor in float64 against our torch re-implementation;
    the torch families: a different order of parameter creation and of random calls; GraphRouter
    also encodes different model descriptions, docs/routers.md). So both are trained at seeds 42-46
    and compared at the level of that seed spread:
    - our mean test quality per view lies within max(3 standard errors of the difference of the
      two means, 1/24: one of the 24 test queries changing its routed model) of theirs;
    - our seed-42 decisions agree with their seeds on average at least as often as their two
      least-agreeing seeds agree with each other.
    The twin models count as one: two separately trained outputs never tie exactly, in either code."""
    chosen, _, rows = bench(router, dars_runs=5)
    runs = REF[router]["runs"]
    assert sorted(runs) == ["42", "43", "44", "45", "46"]
    for view, key in (("rewrite", "rewrite_score"), ("decode", "decoding_score")):
        theirs = np.array([r["summary"][key] for r in runs.values()])
        ours_mean, ours_sd, n = (float(rows.loc[view, c]) for c in ("quality_mean", "quality_std", "n_runs"))
        assert n == 5
        se = np.sqrt(theirs.var(ddof=1) / theirs.size + ours_sd ** 2 / n)
        assert abs(ours_mean - theirs.mean()) <= max(3 * se, 1 / 24), (view, ours_mean, theirs.mean(), se)
    between = [_agreement(x["chosen"], y["chosen"]) for x, y in itertools.combinations(runs.values(), 2)]
    with_ours = [_agreement(chosen, r["chosen"]) for r in runs.values()]
    assert np.mean(with_ours) >= min(between), (with_ours, between)


# caproute parameter name -> the authors' config field (reference_outputs.json), per family
NAMES = {
    "knn": {"k": "k", "eps": "eps"},
    "avengerspro": {"n_clusters": "n_clusters", "top_k": "multi_cluster", "n_init": "n_init", "max_iter": "max_iter",
                    "seed": "seed"},
    "mlp": {"hidden": "hidden_layers", "max_iter": "max_iter", "alpha": "alpha", "lr": "learning_rate_init"},
    "embedllm": {"embed_dim": "embed_dim", "epochs": "epochs", "batch_size": "batch_size", "lr": "learning_rate",
                 "weight_decay": "weight_decay", "noise": "alpha", "cost_loss_weight": "cost_loss_weight"},
    "graphrouter": {"node_dim": "model_feature_dim", "hidden": "hidden_layers", "epochs": "epochs",
                    "batch_size": "batch_size", "lr": "learning_rate", "weight_decay": "weight_decay"},
    "mirt": {"latent_dim": "latent_dim", "hidden": "hidden_layers", "epochs": "epochs", "batch_size": "batch_size",
             "lr": "learning_rate", "weight_decay": "weight_decay", "cost_loss_weight": "cost_loss_weight",
             "std_loss_weight": "std_loss_weight"},
    "rmsoftmax": {"hidden": "hidden_layers", "epochs": "epochs", "batch_size": "batch_size", "lr": "learning_rate",
                  "temperature": "temperature", "lambda_max": "lambda_max", "num_lambdas": "num_lambdas",
                  "loss": "loss_name"},
}


@pytest.mark.parametrize("router", sorted(NAMES))
def test_caproute_defaults_are_the_authors(router):
    """The compared runs use caproute's defaults: they must be the settings the authors' run used."""
    import caproute.routers.families  # noqa: F401  (registers the families)
    from caproute.routers.base import get_router_class

    ours = get_router_class(router)().get_params()
    theirs = REF[router]["config"]
    for mine, field in NAMES[router].items():
        want = theirs[field]
        got = ours[mine]
        if isinstance(want, list):      # MIRT's one hidden layer is an int here, a 1-tuple there
            got = list(got) if isinstance(got, tuple) else [got]
        assert got == want, (router, mine, got, want)
    config = BenchConfig()
    assert (config.lam, config.beta, config.seed) == (REF["source"]["cost_weight"], REF["source"]["risk_beta"], 42)
