"""Hand-computed checks of the scale alignments (§C.3 Remark 1) and the efficiency metric (§C.4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caproute.causal.align import magnitude_scale, scale_factor, variance_scale, wasserstein_scale
from caproute.causal.metrics import (
    USAGE_GRID,
    efficiency_curve,
    efficiency_gain,
    random_efficiency,
    summarize_curves,
)
from caproute.errors import DataError

# -- scale alignment ------------------------------------------------------------------------------


def test_magnitude_scale_by_hand():
    # mean|y| = (2 + 2 + 0 + 4) / 4 = 2; mean|r| = (1 + 1 + 2) / 3 = 4/3 -> c = 1.5
    assert magnitude_scale([1, -1, 2], [2, -2, 0, 4]) == pytest.approx(1.5)


def test_variance_scale_by_hand():
    # sd([1, 3]) = 1, sd([0, 4]) = 2 (population sd) -> c = 2
    assert variance_scale([1, 3], [0, 4]) == pytest.approx(2.0)
    # sd([0, 0, 3]) = sqrt(2); sd([-1, 1]) = 1 -> c = 1/sqrt(2)
    assert variance_scale([0, 0, 3], [-1, 1]) == pytest.approx(1 / np.sqrt(2))


def test_wasserstein_equal_sizes_is_sorted_pair_formula():
    # sorted y = [2, 3, 5]; c = (1*2 + 2*3 + 3*5) / (1 + 4 + 9) = 23/14
    assert wasserstein_scale([3, 1, 2], [2, 5, 3]) == pytest.approx(23 / 14)


def test_wasserstein_unequal_sizes_by_hand():
    # n=2, m=4: Q_r = 1 on (0, .5], 2 on (.5, 1]; Q_y = 1, 2, 3, 4 on the quarters.
    # int Q_r Q_y = .25 * (1 + 2 + 6 + 8) = 4.25; int Q_r^2 = .5 * 1 + .5 * 4 = 2.5 -> 1.7
    assert wasserstein_scale([2, 1], [4, 1, 3, 2]) == pytest.approx(1.7)
    # n=3, m=2: steps at 1/3, 1/2, 2/3: num = 1/6*12 + 1/3*18 = 8, den = 1/3 + 4/6 + 4/6 + 3 = 14/3
    assert wasserstein_scale([1, 2, 3], [0, 6]) == pytest.approx(12 / 7)


def test_wasserstein_minimises_w2_against_brute_force():
    rng = np.random.default_rng(3)
    r, y = rng.normal(size=6), 2.5 * rng.normal(size=4) + 0.3
    c = wasserstein_scale(r, y)
    # replicate both samples to 12 points: equal-size quantile matching is then exact
    rr, yy = np.sort(np.repeat(r, 2)), np.sort(np.repeat(y, 3))

    def w2(k):
        return np.mean((k * rr - yy) ** 2)

    grid = np.linspace(0.01, 5, 2000)
    assert w2(c) <= min(w2(k) for k in grid) + 1e-12
    assert c == pytest.approx(np.sum(rr * yy) / np.sum(rr * rr))


def test_alignment_errors_and_none():
    with pytest.raises(DataError, match="zero spread"):
        variance_scale([1, 1, 1], [0, 1])
    with pytest.raises(DataError, match="all gold gains are 0"):
        magnitude_scale([0, 0], [1, -1])
    with pytest.raises(DataError, match="<= 0"):
        wasserstein_scale([1, 2], [-5, -1])
    with pytest.raises(DataError, match="NaN"):
        scale_factor([1, np.nan], [1, 0])
    with pytest.raises(DataError, match="unknown alignment"):
        scale_factor([1, 2], [1, 0], "median")
    assert scale_factor([1, 2], [5, 0], "none") == 1.0


# -- efficiency metric ----------------------------------------------------------------------------

def test_usage_grid_is_the_papers():
    assert USAGE_GRID.size == 61
    assert USAGE_GRID[0] == pytest.approx(0.2) and USAGE_GRID[-1] == pytest.approx(0.8)
    assert USAGE_GRID[30] == pytest.approx(0.5)


def test_efficiency_curve_with_interpolation_by_hand():
    pred = [0.9, 0.1, 0.5, 0.3]
    gold = [1.0, -1.0, 0.0, 1.0]
    # order by pred: gold 1, 0, 1, -1 -> cumulative 0, 1, 1, 2, 1 at usage 0, .25, .5, .75, 1
    grid = [0.25, 0.5, 0.6, 0.75, 0.9]
    # 0.6 lies 0.4 of the way from .5 (1) to .75 (2) -> 1.4; 0.9 is 0.6 from .75 (2) to 1 (1) -> 1.4
    np.testing.assert_allclose(efficiency_curve(pred, gold, grid), [1, 1, 1.4, 2, 1.4])
    # random routing: p * sum(gold) = p * 1
    np.testing.assert_allclose(random_efficiency(gold, grid), grid)
    np.testing.assert_allclose(efficiency_gain(pred, gold, grid), [0.75, 0.5, 0.8, 1.25, 0.5])


def test_tied_predictions_count_in_expectation():
    # two tied queries with gold 1 and 0: taking one of them gives 0.5 in expectation
    assert efficiency_curve([1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1 / 3])[0] == pytest.approx(0.5)
    # the answer does not depend on the input order of the tied queries
    assert efficiency_curve([1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1 / 3])[0] == pytest.approx(0.5)
    # a constant predictor is random routing exactly
    gold = np.array([0.3, -1.0, 1.0, 0.5])
    np.testing.assert_allclose(efficiency_gain(np.zeros(4), gold), 0.0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 1), st.sampled_from([-1.0, 0.0, 1.0])), min_size=2, max_size=40))
def test_oracle_dominates_any_ranking(pairs):
    pred = np.array([p for p, _ in pairs])
    gold = np.array([g for _, g in pairs])
    assert np.all(efficiency_gain(gold, gold) >= efficiency_gain(pred, gold) - 1e-9)


def test_summarize_curves_by_hand():
    s = summarize_curves([[0.0, 1.0, 0.0], [0.0, 3.0, 0.0]], [0.1, 0.2, 0.3])
    assert s["peak"] == 2.0 and s["peak_usage"] == 0.2
    assert s["peak_std"] == pytest.approx(np.sqrt(2))  # std of (1, 3), ddof = 1
    assert s["se"][1] == pytest.approx(1.0)
    assert s["runs"] == 2
    one = summarize_curves([[1.0, 2.0]], [0.2, 0.3])
    assert one["peak_std"] == 0.0 and one["peak"] == 2.0
    # resplits of the same data (test fraction 0.2 -> n_test/n_train = 1/4): Nadeau-Bengio se
    # sqrt(2) * sqrt(1/2 + 1/4) = sqrt(1.5)
    c = summarize_curves([[0.0, 1.0, 0.0], [0.0, 3.0, 0.0]], [0.1, 0.2, 0.3], test_fraction=0.2)
    assert c["se"][1] == pytest.approx(np.sqrt(1.5)) and c["peak_se"] == pytest.approx(np.sqrt(1.5))


def test_resampled_se_by_hand():
    from caproute.causal.metrics import resampled_se

    assert resampled_se(2.0, 4) == pytest.approx(1.0)                         # independent runs: 2 / sqrt(4)
    assert resampled_se(2.0, 4, 0.5) == pytest.approx(2.0 * np.sqrt(0.25 + 1.0))
    # the correction has a floor: 10^6 runs at test fraction 0.3 -> 2 * sqrt(3/7)
    assert resampled_se(2.0, 10**6, 0.3) == pytest.approx(2.0 * np.sqrt(3 / 7), rel=1e-5)
    with pytest.raises(ValueError, match="test_fraction"):
        resampled_se(1.0, 3, 1.0)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="equal length"):
        efficiency_curve([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        efficiency_curve([np.nan, 1.0], [1.0, 0.0])
