"""The column-wise rewrite-sum kernel and the Arrow-fetching SQL path agree with the reference
formulations (matrix kernel; in-memory numpy path) on random data, edge cases included."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from caproute.supervise import moments
from caproute.supervise.moments import stats_from_rewrite_columns, stats_from_rewrite_sums
from caproute.supervise.normalize import CostNormalizer
from caproute.supervise.stats import STAT_COLUMNS, capability_stats, capability_stats_sql

KEYS = ["dataset", "query_id", "model"]


def _random_sums(rng, n: int, k: int):
    """Per-rewrite counts, sums and sums of squares of random score samples, with edge cases:
    missing rewrites (n_k = 0), single observations, constant scores, 0/1 and continuous scores."""
    n_k = rng.integers(0, 6, size=(n, k)).astype(float)
    n_k[rng.random((n, k)) < 0.2] = 0.0                   # missing rewrites
    n_k[: n // 10] = 1.0                                   # one observation per rewrite
    n_k[n // 10: n // 5, 1:] = 0.0                         # only rewrite 0 observed
    n_k[n_k.sum(axis=1) == 0, 0] = 1.0                     # every pair has an observation
    s_k, q_k = np.zeros((n, k)), np.zeros((n, k))
    binary = rng.random(n) < 0.5
    for i in range(n):
        for j in range(k):
            m = int(n_k[i, j])
            if i % 7 == 0:
                x = np.full(m, 0.3)                        # constant scores: zero variances
            elif binary[i]:
                x = rng.integers(0, 2, m).astype(float)
            else:
                x = rng.random(m) * 10.0 ** rng.integers(-3, 3)
            s_k[i, j], q_k[i, j] = x.sum(), (x * x).sum()
    return n_k, s_k, q_k.sum(axis=1), q_k


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 8, 9, 16])
@pytest.mark.parametrize("block", [64, 8192])
def test_column_kernel_equals_matrix_kernel_bit_for_bit(k, block, monkeypatch):
    monkeypatch.setattr(moments, "BLOCK_ROWS", block)     # 64: blocks, including a partial last one
    rng = np.random.default_rng(100 + k)
    n_k, s_k, total_sq, q_k = _random_sums(rng, 400, k)
    ref = stats_from_rewrite_columns(n_k, s_k, total_sq, q_k)
    got = stats_from_rewrite_sums(list(n_k.T), list(s_k.T), total_sq, list(q_k.T))
    assert set(got) == set(ref)
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=f"K={k} {key}")
    lean = stats_from_rewrite_sums(list(n_k.T), list(s_k.T), total_sq)
    assert np.isnan(lean["sd_within"]).all()
    np.testing.assert_array_equal(lean["var_output"], ref["var_output"])


def test_column_kernel_rejects_mismatched_columns():
    with pytest.raises(ValueError):
        stats_from_rewrite_sums([np.ones(3)], [np.ones(3), np.ones(3)], np.ones(3))
    with pytest.raises(ValueError):
        stats_from_rewrite_sums([], [], np.ones(3))


def _observations(rng, n: int, datasets=("a",), decimal_like: bool = False) -> pd.DataFrame:
    df = pd.DataFrame({
        "dataset": rng.choice(list(datasets), n), "split": "train",
        "query_id": rng.integers(0, 40, n).astype(str), "model": rng.choice(list("XYZ"), n),
        "prompt_variant_id": rng.integers(-1, 4, n), "decode_id": np.arange(n),
        "score": rng.integers(0, 2, n).astype(float) if decimal_like else rng.random(n),
        "cost": rng.random(n) * 3})
    df.loc[df.index[:5], "query_id"] = "solo"              # one pair with few observations
    df.loc[df.index[:1], "model"] = "W"                    # ... and a pair with exactly one
    return df


def _reference_sql_free(df: pd.DataFrame, ranges) -> pd.DataFrame:
    """Per-rewrite sums with pandas, then the matrix kernel: the reference formulation."""
    variants = sorted(df["prompt_variant_id"].unique())
    g = df.assign(sq=df["score"] ** 2).groupby(KEYS + ["prompt_variant_id"])
    per = g.agg(n=("score", "size"), s=("score", "sum"), q=("sq", "sum")).unstack(fill_value=0)
    n_k = per["n"].reindex(columns=variants, fill_value=0).to_numpy(float)
    s_k = per["s"].reindex(columns=variants, fill_value=0).to_numpy(float)
    q_k = per["q"].reindex(columns=variants, fill_value=0).to_numpy(float)
    st = stats_from_rewrite_columns(n_k, s_k, q_k.sum(axis=1), q_k)
    keys = per.index.to_frame(index=False)
    cost = df.groupby(KEYS)["cost"].mean().reindex(per.index).to_numpy()
    lo = keys["dataset"].map({d: r[0] for d, r in ranges.items()}).to_numpy(float)
    hi = keys["dataset"].map({d: r[1] for d, r in ranges.items()}).to_numpy(float)
    keys["mu_q"], keys["mu_c"] = st["mean"], (cost - lo) / np.where(hi > lo, hi - lo, 1.0)
    keys["var_input"], keys["var_output"], keys["sigma_decode"] = st["var_input"], st["var_output"], st["sd_within"]
    keys["sigma_rewrite"], keys["n"] = st["sd_between"], st["n"]
    return keys


@pytest.mark.parametrize("datasets", [("a",), ("a", "b'quoted")])
@pytest.mark.parametrize("decimal", [False, True])
def test_sql_path_agrees_with_references(datasets, decimal):
    rng = np.random.default_rng(7 + len(datasets) + decimal)
    df = _observations(rng, 2500, datasets, decimal_like=decimal)
    norm = CostNormalizer().fit(df)
    con = duckdb.connect()
    con.register("obs_frame", df)
    # a DECIMAL score column (what a literal 1.0 / 0.0 in SQL gives) is summed exactly, then cast
    score = "score::DECIMAL(2, 1)" if decimal else "score"
    con.execute(f"CREATE TABLE obs AS SELECT * REPLACE ({score} AS score) FROM obs_frame")
    sql = capability_stats_sql(con, "obs", norm.ranges_, decode_risk=True)
    assert list(sql.columns) == list(STAT_COLUMNS)
    sql = sql.sort_values(KEYS).reset_index(drop=True)
    mem = capability_stats(df, norm.transform(df)).sort_values(KEYS).reset_index(drop=True)
    ref = _reference_sql_free(df, norm.ranges_).sort_values(KEYS).reset_index(drop=True)
    assert len(sql) == len(mem) == len(ref)
    for key in KEYS:
        assert sql[key].tolist() == mem[key].tolist() == ref[key].astype(str).tolist()
    assert sql["dataset"].dtype == mem["dataset"].dtype
    for col in ("n", "n_rewrites", "mu_q", "mu_c", "sigma_q", "var_total", "var_input", "var_output",
                "sigma_rewrite", "sigma_decode"):
        np.testing.assert_allclose(sql[col].to_numpy(float), mem[col].to_numpy(float), rtol=1e-12,
                                   atol=1e-12, err_msg=col)
    for col in ("n", "mu_q", "mu_c", "var_input", "var_output", "sigma_rewrite", "sigma_decode"):
        np.testing.assert_allclose(sql[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-12,
                                   atol=1e-12, err_msg=col)
    solo = sql[(sql["query_id"] == "solo") & (sql["model"] == "W")]
    assert (solo["n"] == 1).all() and (solo["sigma_q"] == 0).all() and (solo["var_total"] == 0).all()


def test_sql_path_filters_and_empty_result():
    rng = np.random.default_rng(3)
    df = _observations(rng, 600)
    con = duckdb.connect()
    con.register("obs", df)
    ranges = CostNormalizer().fit(df).ranges_
    empty = capability_stats_sql(con, "obs", ranges, where="query_id = 'none'")
    assert len(empty) == 0 and list(empty.columns) == list(STAT_COLUMNS)
    part = capability_stats_sql(con, "obs", ranges, where="model = 'X'")
    assert set(part["model"]) == {"X"} and part["sigma_decode"].isna().all()
