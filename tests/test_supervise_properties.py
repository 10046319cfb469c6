"""Property tests (hypothesis) for the supervision invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from caproute.supervise.ablations import build_supervision
from caproute.supervise.moments import combine_moments, grouped_moments
from caproute.supervise.sampling import single_shot, subsample_grid
from caproute.supervise.stats import capability_stats

scores = st.floats(0, 1, allow_nan=False)


def grid_frame(values: np.ndarray, costs: np.ndarray | None = None) -> pd.DataFrame:
    """values: (n_models, K, R) scores of one query."""
    m, k, r = values.shape
    mi, ki, ri = np.meshgrid(np.arange(m), np.arange(k), np.arange(r), indexing="ij")
    return pd.DataFrame({
        "dataset": "d", "split": "train", "query_id": "q", "model": [f"m{i}" for i in mi.ravel()],
        "prompt_variant_id": ki.ravel(), "decode_id": ri.ravel(),
        "observation_type": "prompt_variation", "score": values.ravel(),
        "cost": np.zeros(values.size) if costs is None else costs.ravel()})


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), scores)
def test_identical_observations_have_zero_sigma_and_single_equals_dars(m, k, r, value):
    values = np.full((m, k, r), value)
    df = grid_frame(values, np.full((m, k, r), 0.5))
    stats = capability_stats(df, np.zeros(len(df)))
    assert np.all(stats["sigma_q"] == 0) and np.allclose(stats["var_total"], 0)
    dars = build_supervision(df, variant="dars")
    single = build_supervision(df, variant="single", seed=1)
    np.testing.assert_allclose(dars.mu_q, single.mu_q)
    np.testing.assert_allclose(dars.mu_c, single.mu_c)
    np.testing.assert_allclose(dars.utility(0.05, 0.2), single.utility(0.05, 0.0))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.data())
def test_variance_decomposition_adds_up(k, r, data):
    values = np.array(data.draw(st.lists(scores, min_size=k * r, max_size=k * r))).reshape(1, k, r)
    stats = capability_stats(grid_frame(values), np.zeros(k * r)).iloc[0]
    total = values.ravel().var()  # population form
    assert abs(stats["var_input"] + stats["var_output"] - total) < 1e-12
    # balanced grid: Var_k(mean_r) + mean_k Var_r
    assert abs(stats["var_input"] - values[0].mean(axis=1).var()) < 1e-12
    assert abs(stats["var_output"] - values[0].var(axis=1).mean()) < 1e-12


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=12), st.data())
def test_unbalanced_decomposition_adds_up(sizes, data):
    vals = np.array(data.draw(st.lists(scores, min_size=sum(sizes), max_size=sum(sizes))))
    sub = np.repeat(np.arange(len(sizes)), sizes)
    count, mean, m2 = grouped_moments(sub, vals, len(sizes))
    out = combine_moments(np.zeros(len(sizes), int), count, mean, m2, 1)
    assert abs(out["var_input"][0] + out["var_output"][0] - vals.var()) < 1e-12
    assert abs(out["mean"][0] - vals.mean()) < 1e-12


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6),
       st.integers(0, 10_000))
def test_subsampling_counts(m, k, r, k_keep, r_keep, seed):
    values = np.random.default_rng(seed).random((m, k, r))
    df = grid_frame(values)
    sub = subsample_grid(df, k_keep, r_keep, seed)
    per_pair = sub.groupby("model").size()
    assert (per_pair == min(k, k_keep) * min(r, r_keep)).all() and len(per_pair) == m
    # the same rewrites are kept for every model of a query
    kept = sub.groupby("model")["prompt_variant_id"].apply(lambda s: tuple(sorted(set(s))))
    assert kept.nunique() == 1
    one = single_shot(df, seed)
    assert len(one) == m and one.groupby("model").size().eq(1).all()
