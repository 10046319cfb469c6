"""Parity with the authors' released DARS code (AIGNLAI/DARS @ 9b6da7a, methods/knn_router.py,
avengers_pro.py, mlp.py, DARS = "distribution" mode, their CLI defaults: TF-IDF 20k 1-2 grams,
lambda 0.05, beta 0.2, seed 42). Their numbers were produced outside this repository on the fixture
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


def test_mlp_agrees_within_seed_variance():
    """MLP cannot match run for run: theirs is scikit-learn's MLPRegressor (float64, its random
    stream), ours a torch re-implementation (float32, torch's stream; routers/mlp.py). Tolerances
    come from their own seed-to-seed spread (seeds 42-46): our mean test quality over seeds 42-46
    lies within 3 standard errors of the difference of theirs, and our seed-42 decisions agree
    with each of their seeds at least as often as their seeds agree with one another (worst pair).
    The twin models count as one (neither code ties two separately trained outputs)."""
    chosen, _, rows = bench("mlp", dars_runs=5)
    runs = REF["mlp"]["runs"]
    for view, key in (("rewrite", "rewrite_score"), ("decode", "decoding_score")):
        theirs = np.array([r["summary"][key] for r in runs.values()])
        ours_mean, ours_sd, n = (float(rows.loc[view, c]) for c in ("quality_mean", "quality_std", "n_runs"))
        assert n == 5
        se = np.sqrt(theirs.var(ddof=1) / theirs.size + ours_sd ** 2 / n)
        assert abs(ours_mean - theirs.mean()) <= 3 * se, (view, ours_mean, theirs.mean(), se)
    ours = _merge_twin(chosen)
    between = [np.mean([a == b for a, b in zip(_merge_twin(x["chosen"]), _merge_twin(y["chosen"]), strict=True)])
               for x, y in itertools.combinations(runs.values(), 2)]
    with_ours = [np.mean([a == b for a, b in zip(ours, _merge_twin(r["chosen"]), strict=True)]) for r in runs.values()]
    assert np.mean(with_ours) >= min(between), (with_ours, between)
