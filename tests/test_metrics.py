"""Hand-computed checks of every evaluation metric (caproute.evaluate.metrics)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from caproute.evaluate import metrics as M


def test_routed_mean_and_view_utility_by_hand():
    values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert M.routed_mean(values, np.array([1, 0, 1])) == pytest.approx(11 / 3)
    q = np.array([[1.0, 0.0], [0.5, 1.0]])
    c = np.array([[0.0, 1.0], [0.2, 0.6]])
    # u = q - 0.5 c = [[1, -0.5], [0.4, 0.7]]; choose (0, 1) -> (1 + 0.7) / 2
    assert M.view_utility(q, c, np.array([0, 1]), lam=0.5) == pytest.approx(0.85)
    assert M.view_utility(q, c, np.array([1, 0]), lam=0.5) == pytest.approx((-0.5 + 0.4) / 2)
    assert M.view_quality(q, np.array([1, 0])) == pytest.approx(0.25)


def test_routed_mean_rejects_bad_shapes():
    with pytest.raises(ValueError):
        M.routed_mean(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError):
        M.routed_mean(np.zeros((0, 2)), np.array([], dtype=int))


def test_best_fixed_and_oracle_by_hand():
    u = np.array([[0.2, 0.5], [0.6, 0.1], [0.4, 0.4]])
    idx, value = M.best_fixed(u)
    assert idx == 0 and value == pytest.approx(0.4)           # means (0.4, 0.3333)
    assert M.oracle_value(u) == pytest.approx((0.5 + 0.6 + 0.4) / 3)
    # tie in row 3: lower cost wins
    assert M.oracle_choice(u, np.array([[0, 0], [0, 0], [0.9, 0.1]])).tolist() == [1, 0, 1]


def test_mean_std_uses_sample_std():
    mean, std, n = M.mean_std([1, 2, 3, 4])
    assert (mean, n) == (2.5, 4)
    assert std == pytest.approx(np.sqrt(5 / 3))
    assert M.mean_std([0.7]) == (0.7, 0.0, 1)
    with pytest.raises(ValueError):
        M.mean_std([])


def test_choice_shares():
    assert M.choice_shares(np.array([0, 2, 2, 2]), 3).tolist() == [0.25, 0.0, 0.75]


def test_pareto_mask_by_hand():
    cost = np.array([0.0, 1.0, 1.0, 2.0, 0.5])
    quality = np.array([0.2, 0.6, 0.5, 0.6, 0.2])
    # p2 is beaten by p1 (same cost, better), p3 by p1 (cheaper, same), p4 by p0 (cheaper, same)
    assert M.pareto_mask(cost, quality).tolist() == [True, True, False, False, False]
    assert M.pareto_mask(np.array([1.0, 1.0]), np.array([0.5, 0.5])).tolist() == [True, True]


def test_operating_point():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    c = np.array([[0.1, 0.9], [0.3, 0.5]])
    assert M.operating_point(q, c, np.array([0, 1])) == pytest.approx((0.3, 1.0))


# -- RouteLLM metrics -------------------------------------------------------------------------
# Four queries; the strong model helps on queries 0 and 3.
PS = np.array([1.0, 1.0, 0.0, 1.0])
PW = np.array([0.0, 1.0, 0.0, 0.0])


def test_strong_call_curve_by_hand():
    score = np.array([0.9, 0.2, 0.1, 0.8])
    calls, perf = M.strong_call_curve(score, PS, PW, n_thresholds=4)
    # thresholds = quartiles of the scores: 0.1, 0.175, 0.5, 0.825, 0.9 (last one strict)
    assert calls.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert perf == pytest.approx([0.25, 0.5, 0.75, 0.75, 0.75])
    # the thresholds are RouteLLM's pd.qcut bin edges
    _, bins = pd.qcut(score, 4, retbins=True)
    assert np.quantile(score, np.linspace(0, 1, 5)) == pytest.approx(bins)


def test_auc_apgr_cpt_by_hand():
    calls = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    perf = np.array([0.25, 0.5, 0.75, 0.75, 0.75])
    # trapezoid: 0.25 * (0.375 + 0.625 + 0.75 + 0.75)
    assert M.auc(calls, perf) == pytest.approx(0.625)
    # (0.625 - 0.25) / (0.75 - 0.25)
    assert M.apgr(calls, perf, weak=0.25, strong=0.75) == pytest.approx(0.75)
    # targets 0.35, 0.5, 0.65 -> 10 %, 25 %, 40 % of calls
    assert M.cpt(calls, perf, 0.25, 0.75, 0.2) == pytest.approx(10.0)
    assert M.cpt(calls, perf, 0.25, 0.75, 0.5) == pytest.approx(25.0)
    assert M.cpt(calls, perf, 0.25, 0.75, 0.8) == pytest.approx(40.0)
    # on a monotone curve this is RouteLLM's np.interp
    for x in (0.2, 0.5, 0.8):
        assert M.cpt(calls, perf, 0.25, 0.75, x) == pytest.approx(100 * np.interp(0.25 + x * 0.5, perf, calls))
    # order of the points does not matter
    rev = slice(None, None, -1)
    assert M.auc(calls[rev], perf[rev]) == pytest.approx(0.625)
    assert M.cpt(calls[rev], perf[rev], 0.25, 0.75, 0.8) == pytest.approx(40.0)


def test_apgr_of_random_like_router_is_half_and_pgr():
    # straight line from weak to strong: APGR 0.5, CPT(x) = x
    calls = np.array([0.0, 0.5, 1.0])
    perf = np.array([0.25, 0.5, 0.75])
    assert M.apgr(calls, perf, 0.25, 0.75) == pytest.approx(0.5)
    assert M.cpt(calls, perf, 0.25, 0.75, 0.8) == pytest.approx(80.0)
    assert M.pgr(0.5, 0.25, 0.75) == pytest.approx(0.5)
    assert np.isnan(M.pgr(0.5, 0.5, 0.5))
    assert np.isnan(M.apgr(calls, perf, 0.5, 0.5))


def test_cpt_non_monotone_curve_uses_first_crossing():
    calls = np.array([0.0, 0.5, 1.0])
    perf = np.array([0.2, 0.9, 0.6])
    # target 0.4 is crossed between (0, 0.2) and (0.5, 0.9): 0.2 / 0.7 * 0.5
    assert M.cpt(calls, perf, 0.2, 0.6, 0.5) == pytest.approx(100 * 0.2 / 0.7 * 0.5)
    assert np.isnan(M.cpt(np.array([0.0, 1.0]), np.array([0.2, 0.3]), 0.2, 0.6, 0.8))


def test_two_model_metrics_combines_the_pieces():
    out = M.two_model_metrics(np.array([0.9, 0.2, 0.1, 0.8]), PS, PW, n_thresholds=4)
    assert out["weak"] == pytest.approx(0.25) and out["strong"] == pytest.approx(0.75)
    assert out["apgr"] == pytest.approx(0.75)
    assert out["auc"] == pytest.approx(0.625)
    assert (out["cpt20"], out["cpt50"], out["cpt80"]) == pytest.approx((10.0, 25.0, 40.0))


def test_perfect_and_reversed_router():
    # a router that ranks the helpful queries first recovers the gap fastest
    good = M.two_model_metrics(np.array([1.0, 0.0, 0.0, 1.0]), PS, PW, n_thresholds=4)
    bad = M.two_model_metrics(np.array([0.0, 1.0, 1.0, 0.0]), PS, PW, n_thresholds=4)
    assert good["apgr"] > 0.5 > bad["apgr"]
