"""Self-written reference (NOT parity with the authors' code; that is
tests/test_dars_reference_parity.py): ``caproute bench`` on a small DARS-format fixture (tests/data/algorithms_md_reference/toyset,
written by make_fixture.py) reproduces numbers computed once from the reference algorithm as
documented in ../shared/docs/algorithms.md by tests/data/algorithms_md_reference/reference.py, an independent
numpy / pandas / scikit-learn implementation that never imports caproute (cost min-max per dataset,
DARS statistics with ddof = 1, TF-IDF (20k, 1-2 grams), kNN with inverse-distance weights,
AvengersPro KMeans(n_init = 10, random_state = 42), argmax of mu_q - 0.05 mu_c - 0.2 sigma_q, the
test metrics of §A.6 and the reference's chosen_decoding_instability_mean). The fixture's cost
range is the same in train and test, so the reference's min-max over all rows equals ours over the
training rows. kNN and AvengersPro are deterministic given the seed, so the numbers must agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from caproute.evaluate.bench import BenchConfig, run_bench
from caproute.evaluate.protocol import load_experiment

FIXTURE = Path(__file__).parent / "data" / "algorithms_md_reference"

# printed by `.venv/bin/python tests/data/algorithms_md_reference/reference.py` (do not edit by hand)
EXPECTED = {
    "best_fixed/rewrite": 0.7883333333333332, "oracle/rewrite": 0.9858333333333333,
    "best_fixed/decode": 0.5620833333333333, "oracle/decode": 0.8182083333333332,
    "knn/rewrite/utility": 0.9783333333333334, "knn/rewrite/quality": 1.0,
    "knn/decode/utility": 0.8103333333333332, "knn/decode/quality": 0.8333333333333334,
    "knn/chosen_decoding_instability_mean": 0.23570226039551587,
    "knn/choice": ["beta-13b", "gamma-70b", "alpha-7b", "beta-13b", "gamma-70b", "alpha-7b"],
    "avengerspro/rewrite/utility": 0.8866666666666667, "avengerspro/rewrite/quality": 0.9166666666666666,
    "avengerspro/decode/utility": 0.7182499999999998, "avengerspro/decode/quality": 0.75,
    "avengerspro/chosen_decoding_instability_mean": 0.3535533905932738,
    "avengerspro/choice": ["gamma-70b", "gamma-70b", "alpha-7b", "gamma-70b", "gamma-70b", "alpha-7b"],
}


@pytest.fixture(scope="module")
def result():
    exp = load_experiment(data=FIXTURE)
    config = BenchConfig(routers=("knn", "avengerspro"), single_shot_runs=1, dars_runs=1, studies=("main",),
                         router_params={"knn": {"k": 3}, "avengerspro": {"n_clusters": 4, "top_k": 2}})
    return run_bench(exp, config, progress=False)


def test_reference_rows(result):
    rows = result.rows.set_index(["router", "supervision", "view"])
    for view in ("rewrite", "decode"):
        for ref in ("best_fixed", "oracle"):
            got = result.rows[(result.rows["router"] == ref) & (result.rows["view"] == view)]["utility_mean"]
            assert float(got.iloc[0]) == pytest.approx(EXPECTED[f"{ref}/{view}"], abs=1e-12)
        for router in ("knn", "avengerspro"):
            r = rows.loc[(router, "dars", view)]
            assert r["utility_mean"] == pytest.approx(EXPECTED[f"{router}/{view}/utility"], abs=1e-12)
            assert r["quality_mean"] == pytest.approx(EXPECTED[f"{router}/{view}/quality"], abs=1e-12)
    for router in ("knn", "avengerspro"):
        assert rows.loc[(router, "dars", "decode"), "chosen_decoding_instability_mean"] == pytest.approx(
            EXPECTED[f"{router}/chosen_decoding_instability_mean"], abs=1e-12)


def test_per_query_choices(result):
    p = result.predictions
    for router in ("knn", "avengerspro"):
        chosen = p[(p["router"] == router) & (p["supervision"] == "dars") & p["chosen"]].sort_values("query_id")
        assert chosen["model"].tolist() == EXPECTED[f"{router}/choice"]
        one = p[(p["router"] == router) & (p["supervision"] == "dars")]
        assert len(one) == 6 * 3 and set(one.columns) >= {"query_id", "model", "mu_q", "mu_c", "sigma_q", "chosen"}
