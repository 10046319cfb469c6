"""RouterDC adapter, the SQL aggregation path, and the issue-2 CLI contract."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from _cli import run_cli
from caproute.data.adapters.routerdc import expand_k_of_n
from caproute.supervise.normalize import CostNormalizer
from caproute.supervise.stats import capability_stats, capability_stats_sql


def test_expand_k_of_n_counts_and_seeded_positions():
    pair, score = expand_k_of_n(np.array([3, 0, 10]), np.array([10, 10, 10]), seed=1)
    assert pair.size == 30
    np.testing.assert_array_equal(np.bincount(pair, weights=score), [3, 0, 10])
    _, again = expand_k_of_n(np.array([3, 0, 10]), np.array([10, 10, 10]), seed=1)
    np.testing.assert_array_equal(score, again)
    with pytest.raises(ValueError):
        expand_k_of_n(np.array([11]), np.array([10]))


def test_sql_path_matches_numpy_path():
    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame({
        "dataset": rng.choice(["a", "b"], n), "split": "train",
        "query_id": rng.integers(0, 30, n).astype(str), "model": rng.choice(list("XYZ"), n),
        "prompt_variant_id": rng.integers(-1, 3, n), "decode_id": np.arange(n),
        "score": rng.random(n), "cost": rng.random(n) * 3})
    norm = CostNormalizer().fit(df)
    mem = capability_stats(df, norm.transform(df)).sort_values(["dataset", "query_id", "model"])
    con = duckdb.connect()
    con.register("obs", df)
    sql = capability_stats_sql(con, "obs", norm.ranges_, decode_risk=True).sort_values(["dataset", "query_id", "model"])
    assert len(sql) == len(mem)
    for col in ("n", "mu_q", "mu_c", "sigma_q", "var_input", "var_output", "sigma_rewrite", "sigma_decode"):
        np.testing.assert_allclose(sql[col].to_numpy(float), mem[col].to_numpy(float), atol=1e-9, err_msg=col)
    lean = capability_stats_sql(con, "obs", norm.ranges_)
    assert lean["sigma_decode"].isna().all()
    np.testing.assert_allclose(lean.sort_values(["dataset", "query_id", "model"])["var_output"], sql["var_output"])


def test_cli_import_supervise_diagnose_export(tmp_path):
    store = tmp_path / "obs.duckdb"
    out = run_cli("import", "builtin", "--store", store)
    assert "imported" in out.stdout
    again = run_cli("import", "builtin", "--store", store)   # idempotent
    n1 = int(out.stdout.split("store holds")[1].split()[0])
    assert int(again.stdout.split("store holds")[1].split()[0]) == n1
    run_cli("supervise", "--store", store, "--out", tmp_path / "s.parquet", "--lambda", "0.1")
    stats = pd.read_parquet(tmp_path / "s.parquet")
    assert list(stats.columns[:7]) == ["query_id", "model", "n", "mu_q", "mu_c", "sigma_q", "utility"]
    np.testing.assert_allclose(stats["utility"], stats["mu_q"] - 0.1 * stats["mu_c"] - 0.2 * stats["sigma_q"])
    run_cli("diagnose", "--store", store, "--json", tmp_path / "d.json")
    d = json.loads((tmp_path / "d.json").read_text())
    for key in ("outcome_instability", "winner_flip_rate", "single_vs_da_disagreement",
                "input_variance", "output_variance"):
        assert 0 <= d[key] <= 1
    assert (tmp_path / "d.png").stat().st_size > 1000
    run_cli("export", "--store", store, "--format", "dars", tmp_path / "dars")
    back = run_cli("import", tmp_path / "dars", "--store", tmp_path / "other.duckdb")
    assert f"store holds {n1}" in back.stdout


def test_cli_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"dataset":"d","split":"train","query_id":"q","model":"m","score":2,"cost":0}\n')
    res = run_cli("import", bad, "--store", tmp_path / "s.duckdb", check=False)
    assert res.returncode == 2 and "line 1" in res.stderr and "score" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "s.duckdb").exists() or "holds 0" not in res.stdout
    res = run_cli("diagnose", "--data", "builtin", "--dataset", "nope", check=False)
    assert res.returncode == 2 and "no dataset 'nope'" in res.stderr


@pytest.mark.shared
def test_routerdc_diagnose_prints_all(routerdc_dir, tmp_path):
    res = run_cli("diagnose", "--data", routerdc_dir, "--dataset", "humaneval", "--json", tmp_path / "h.json")
    for key in ("outcome_instability", "winner_flip_rate", "single_vs_da_disagreement",
                "input_variance", "output_variance"):
        assert key in res.stdout
    d = json.loads((tmp_path / "h.json").read_text())
    assert d["n_models"] == 7 and d["n_queries"] == 115
    # decode-only data: no rewrites, so all variance is output-side
    assert d["input_variance"] == 0 and d["output_variance"] > 0
    assert 0 < d["winner_flip_rate"] <= 1


@pytest.mark.shared
def test_routerdc_adapter_preserves_pass_rates(routerdc_dir):
    from caproute.data.adapters import read_routerdc

    obs = read_routerdc(routerdc_dir)
    assert set(obs["dataset"]) == {"gsm8k", "humaneval", "javascript", "mbpp"}
    raw = pd.read_parquet(routerdc_dir / "scores_long.parquet")
    raw = raw[raw["score_type"] == "pass_rate_n10"]
    rate = obs.groupby(["query_id", "model"])["score"].mean()
    ref = raw.set_index(["qid", "model"])["score"]
    np.testing.assert_allclose(rate.loc[ref.index].to_numpy(), ref.to_numpy(), atol=1e-9)
    assert obs.groupby(["query_id", "model"]).size().eq(10).all()


@pytest.mark.shared
def test_routerbench_adapter_drops_unscored_rows_loudly(routerdc_dir):
    from caproute.data.adapters import read_routerbench

    with pytest.warns(UserWarning, match="dropped .* rows with no score"):
        obs = read_routerbench(routerdc_dir / "routerbench0shot_subset_long.parquet")
    assert obs["score"].notna().all() and obs["model"].nunique() == 11
    assert obs["cost_known"].all() and (obs["cost"] > 0).any()
