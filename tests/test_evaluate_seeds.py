"""Issue 14/15 bench features: DARS over several seeds with a significance statement, results
independent of the file's row order, fit groups (cells that would train the same router share one
fit, with the numbers of separate trainings), per-query predictions and --param ROUTER.NAME=VALUE."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from _evaluate_toy import toy_observations  # noqa: E402
from caproute.data.order import canonical_rows  # noqa: E402
from caproute.errors import ConfigError  # noqa: E402
from caproute.evaluate.bench import BenchConfig, build_cells, compare_runs, featurize, run_bench, run_grid  # noqa: E402
from caproute.evaluate.grid import grid_data, plan_groups, run_cell  # noqa: E402
from caproute.evaluate.protocol import prepare_experiment  # noqa: E402


def test_compare_runs_welch_and_one_sample():
    single, dars = [0.60, 0.62, 0.61, 0.63], [0.66, 0.65, 0.67]
    r = compare_runs(single, dars)
    # Welch by hand: t = (mean_d - mean_s) / sqrt(s_d^2 / n_d + s_s^2 / n_s)
    sd, ss = np.var(dars, ddof=1), np.var(single, ddof=1)
    t = (np.mean(dars) - np.mean(single)) / np.sqrt(sd / 3 + ss / 4)
    assert r["test"] == "Welch t" and r["statistic"] == pytest.approx(t)
    assert r["p_value"] == pytest.approx(stats.ttest_ind(dars, single, equal_var=False).pvalue)
    assert r["verdict"].startswith("DARS higher") and r["diff"] == pytest.approx(0.66 - 0.615)
    one = compare_runs(single, [0.615])                     # deterministic router: one DARS run
    assert one["test"] == "one-sample t" and one["p_value"] == pytest.approx(1.0)
    assert one["verdict"].startswith("no significant")
    assert compare_runs([0.5], [0.6])["verdict"] == "not tested"
    assert compare_runs([0.5, 0.5], [0.6, 0.6])["p_value"] == 0.0     # constant, different
    # the 95 % interval of DARS - single at the Welch df sits next to the verdict (issue 24.3)
    from caproute.evaluate.inference import welch_test

    w = welch_test(dars, single)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(w.ci_low), pytest.approx(w.ci_high))
    assert r["ci_low"] > 0 and "95% CI [" in r["verdict"]
    same = compare_runs([0.50, 0.52, 0.48], [0.6, 0.6])
    assert "seed-invariant" in same["verdict"]


def test_dars_rows_and_significance_table():
    exp = prepare_experiment(toy_observations())
    res = run_bench(exp, BenchConfig(routers=("embedllm", "knn"), single_shot_runs=3, dars_runs=3,
                                     studies=("main",), router_params={"embedllm": {"epochs": 2}}), progress=False)
    rows = res.rows.set_index(["router", "supervision", "view"])
    assert rows.loc[("embedllm", "dars", "decode"), "n_runs"] == 3      # seeded: 3 DARS trainings
    assert rows.loc[("knn", "dars", "decode"), "n_runs"] == 1           # no seed: deterministic
    sig = res.significance.set_index(["router", "view"])
    runs = res.runs[(res.runs["router"] == "embedllm") & (res.runs["view"] == "decode")]
    want = compare_runs(runs.loc[runs["supervision"] == "single", "utility"],
                        runs.loc[runs["supervision"] == "dars", "utility"])
    assert sig.loc[("embedllm", "decode"), "p_value"] == pytest.approx(want["p_value"], nan_ok=True)
    assert sig.loc[("knn", "decode"), "n_dars"] == 1
    # the cells are tested together: Holm-adjusted p decides the verdict
    from caproute.evaluate.inference import holm

    np.testing.assert_allclose(res.significance["p_holm"], holm(res.significance["p_value"]), equal_nan=True)
    assert (res.significance["p_holm"].fillna(1) >= res.significance["p_value"].fillna(1)).all()
    assert rows.loc[("knn", "dars", "decode"), "chosen_decoding_instability_mean"] >= 0
    assert np.isnan(rows.loc[("knn", "dars", "rewrite"), "chosen_decoding_instability_mean"])
    p = res.predictions
    assert set(p["supervision"]) == {"single", "dars"} and (p["run"] == 0).all()
    assert len(p) == 2 * 2 * len(exp.test_query_ids) * len(exp.models)
    assert (p.groupby(["router", "supervision", "query_id"])["chosen"].sum() == 1).all()


def test_results_do_not_depend_on_row_order():
    obs = toy_observations()
    shuffled = obs.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a, b = prepare_experiment(obs), prepare_experiment(shuffled)
    pd.testing.assert_frame_equal(a.train_obs, b.train_obs)
    assert canonical_rows(shuffled).equals(canonical_rows(obs))
    cfg = {"routers": ("avengerspro", "knn"), "single_shot_runs": 3, "dars_runs": 2, "studies": ("main",),
           "router_params": {"avengerspro": {"n_clusters": 2}}}
    ra = run_bench(a, BenchConfig(**cfg), progress=False).rows
    rb = run_bench(b, BenchConfig(**cfg), progress=False).rows
    pd.testing.assert_frame_equal(ra, rb)


def test_fit_groups_give_the_numbers_of_separate_trainings():
    exp = prepare_experiment(toy_observations())
    X_train, X_test, _ = featurize(exp, "tfidf")
    config = BenchConfig(routers=("knn", "embedllm"), single_shot_runs=2, dars_runs=2, kxr_subsamples=2,
                         kxr_protocols=((1, 1), (2, 2)), betas=(0.0, 0.2, 0.5),
                         studies=("main", "ablation", "kxr", "beta"), router_params={"embedllm": {"epochs": 2}})
    cells = build_cells(config, exp.grid_shape())
    data = grid_data(exp, X_train, X_test, lam=0.05)
    groups = plan_groups(cells, data)
    assert len(groups) < len(cells)          # e.g. kNN's beta and w/o-Risk cells reuse its DARS fit
    knn_dars = [g for g in groups if g.cells[0].router == "knn" and g.cells[0].supervision == "dars"
                and g.cells[0].study == "main"]
    assert {c.study for c in knn_dars[0].cells} >= {"main", "beta", "kxr"}   # full 2x2 grid = DARS
    grouped = run_grid(data, cells, jobs=1, progress=None)
    alone = [run_cell(c, grid_data(exp, X_train, X_test, lam=0.05)) for c in cells]
    for g, s in zip(grouped, alone, strict=True):
        assert (g["study"], g["router"], g["supervision"], g["run"], g["beta"]) == \
            (s["study"], s["router"], s["supervision"], s["run"], s["beta"])
        assert g["views"] == s["views"] and g["shares"] == s["shares"]


def _cli(*args, cwd):
    exe = Path(sys.executable).parent / "caproute"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_param_and_dars_runs(tmp_path):
    r = _cli("bench", "--data", "builtin", "--routers", "knn,embedllm", "--single-shot-runs", "2", "--dars-runs",
             "2", "--studies", "main", "--param", "knn.k=3", "--param", "embedllm.epochs=2", "--json", "rows.json",
             "--report", "rep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Welch t" in r.stdout or "one-sample t" in r.stdout
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {x["n_runs"] for x in rows if x["router"] == "embedllm" and x["supervision"] == "dars"} == {2}
    cfg = json.loads((tmp_path / "rep" / "bench.json").read_text())["config"]
    assert cfg["router_params"] == {"knn": {"k": 3}, "embedllm": {"epochs": 2}}
    assert (tmp_path / "rep" / "predictions.csv").exists() and (tmp_path / "rep" / "significance.csv").exists()
    bad = _cli("bench", "--data", "builtin", "--routers", "knn", "--param", "k=3", cwd=tmp_path)
    assert bad.returncode == 2 and "ROUTER.NAME=VALUE" in bad.stderr and "Traceback" not in bad.stderr
    bad = _cli("bench", "--data", "builtin", "--routers", "knn", "--param", "mlp.max_iter=3", cwd=tmp_path)
    assert bad.returncode == 2 and "not in the bench" in bad.stderr
    bad = _cli("bench", "--data", "builtin", "--routers", "knn", "--param", "knn.nope=3", cwd=tmp_path)
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr


def test_config_errors():
    with pytest.raises(ConfigError, match="--dars-runs"):
        BenchConfig(dars_runs=0).validate()
