"""Hand-computed checks of every statistic behind a printed verdict (caproute.evaluate.inference)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caproute.evaluate.inference import (
    corrected_resampled_test,
    holm,
    mean_test,
    nadeau_bengio_se,
    paired_test,
    t_critical,
    verdict,
    welch_test,
)


def t3_cdf(t: float) -> float:
    """Student t CDF with 3 degrees of freedom in closed form (independent of scipy)."""
    u = t / math.sqrt(3)
    return 0.5 + (u / (1 + u * u) + math.atan(u)) / math.pi


def test_t_critical_matches_the_tables():
    # textbook two-sided 5 % points: df 1 12.706, 3 3.182, 4 2.776 (5 seeds, not 2), 19 2.093, inf 1.960
    assert t_critical(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_critical(3) == pytest.approx(3.18245, abs=1e-5)
    assert t_critical(4) == pytest.approx(2.77645, abs=1e-5)
    assert t_critical(19) == pytest.approx(2.09302, abs=1e-5)
    assert t_critical(float("inf")) == pytest.approx(1.95996, abs=1e-5)
    assert t_critical(4, alpha=0.01) == pytest.approx(4.60409, abs=1e-5)
    assert math.isnan(t_critical(0))


def test_mean_test_by_hand():
    # d = 1, 2, 3, 4: mean 2.5, s^2 = 5/3, se = sqrt(5/12), t = sqrt(15), df = 3
    r = mean_test([1.0, 2.0, 3.0, 4.0])
    assert (r.n, r.df) == (4, 3)
    assert r.mean == pytest.approx(2.5)
    assert r.se == pytest.approx(math.sqrt(5 / 12))
    assert r.t == pytest.approx(math.sqrt(15))
    assert r.p == pytest.approx(2 * (1 - t3_cdf(math.sqrt(15))), rel=1e-9)
    half = 3.182446305 * math.sqrt(5 / 12)
    assert (r.ci_low, r.ci_high) == (pytest.approx(2.5 - half, rel=1e-7), pytest.approx(2.5 + half, rel=1e-7))
    assert r.significant               # p = 0.030 < 0.05
    # paired = one-sample on the differences
    p = paired_test([3.0, 5.0, 7.0, 9.0], [2.0, 3.0, 4.0, 5.0])
    assert p.t == pytest.approx(r.t) and p.p == pytest.approx(r.p)


def test_five_seeds_at_t_2_5_are_not_significant():
    # the old rule |t| >= 2 called this significant; with df = 4 the 5 % point is 2.776
    d = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])       # s^2 = 2.5, se = sqrt(0.5)
    d = d - d.mean() + 2.5 * math.sqrt(2.5 / 5)     # mean 2.5 se: t = 2.5 exactly
    r = mean_test(d)
    assert r.t == pytest.approx(2.5)
    assert not r.significant and 0.05 < r.p < 0.10
    assert r.ci_low < 0 < r.ci_high


def test_nadeau_bengio_by_hand():
    # J = 4 resamples, d = 1..4, n_test / n_train = 1/2: var = (1/4 + 1/2) * 5/3 = 1.25
    d = [1.0, 2.0, 3.0, 4.0]
    assert nadeau_bengio_se(d, n_train=2, n_test=1) == pytest.approx(math.sqrt(1.25))
    r = corrected_resampled_test(d, n_train=200, n_test=100)
    assert r.test == "Nadeau-Bengio t" and r.df == 3
    assert r.se == pytest.approx(math.sqrt(1.25))
    assert r.t == pytest.approx(math.sqrt(5))          # 2.5 / sqrt(1.25)
    assert r.p == pytest.approx(2 * (1 - t3_cdf(math.sqrt(5))), rel=1e-9)
    assert not r.significant                            # the naive test (previous test) was
    # the correction grows with the test share and never falls below the naive se
    assert nadeau_bengio_se(d, 1, 1) > nadeau_bengio_se(d, 2, 1) > mean_test(d).se
    # 200 resplits at test/train 0.43: se inflated by sqrt(1 + 200 * 0.43) = 9.3 (issue 24 item 2)
    rng = np.random.default_rng(0)
    many = rng.normal(1.0, 1.0, size=200)
    ratio = nadeau_bengio_se(many, 100, 43) / mean_test(many).se
    assert ratio == pytest.approx(math.sqrt(1 + 200 * 0.43))


def test_welch_by_hand():
    # a = 1, 2, 3; b = 2, 4, 6, 8: diff -3, va = 1/3, vb = 5/3, se = sqrt(2), df = 216/53
    r = welch_test([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0])
    assert r.mean == pytest.approx(-3.0)
    assert r.se == pytest.approx(math.sqrt(2))
    assert r.df == pytest.approx(216 / 53)
    assert r.t == pytest.approx(-3 / math.sqrt(2))
    from scipy import stats

    ref = stats.ttest_ind([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0], equal_var=False)
    assert r.p == pytest.approx(ref.pvalue)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    adj = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    # NaN stays NaN and does not count in m; values cap at 1
    adj = holm([0.2, float("nan"), 0.6])
    assert math.isnan(adj[1])
    np.testing.assert_allclose(adj[[0, 2]], [0.4, 0.6])
    assert holm([0.9, 0.8]).max() == 1.0
    assert holm([]).size == 0


def test_constant_and_degenerate_samples():
    r = mean_test([0.2, 0.2, 0.2])
    assert r.p == 0.0 and r.ci_low == r.ci_high == pytest.approx(0.2)
    assert mean_test([0.0, 0.0]).p == 1.0
    one = mean_test([1.0])
    assert math.isnan(one.p) and verdict(one) == "not tested"


def test_verdict_states_the_interval_and_the_correction():
    r = mean_test([1.0, 2.0, 3.0, 4.0])
    v = verdict(r, higher="DARS higher")
    assert v.startswith("DARS higher (p = 0.03") and "95% CI [+0.446, +4.554]" in v
    assert verdict(r, p_adjusted=0.09).startswith("no significant difference (p = 0.03, Holm p = 0.09")
