"""The calibration rule for budget targets: the smallest lambda that meets the target (issue 16:
a cost target that lambda = 0 met still gave lambda = 4.16, because the rule chose the feasible
lambda with the highest observed quality)."""

from __future__ import annotations

import numpy as np
import pytest

from caproute.serve.calibrate import CalibrationError, CalibrationTarget, fit_lambda

MODELS = ("strong", "weak")
# 4 queries; the router predicts 'strong' better and dearer everywhere (one breakpoint, lambda = 0.4/0.9)
MU_Q = np.tile([0.9, 0.5], (4, 1))
MU_C = np.tile([1.0, 0.1], (4, 1))
SIGMA = np.zeros((4, 2))
# observed outcomes disagree with the predictions: 'weak' scored better on this sample
COST = np.tile([1e-6, 2e-6], (4, 1))
QUALITY = np.tile([0.0, 1.0], (4, 1))


def fit(target):
    return fit_lambda(target, MODELS, MU_Q, MU_C, SIGMA, 0.0, COST, QUALITY)


def test_cost_target_met_at_zero_gives_zero():
    cal = fit(CalibrationTarget("cost", 3e-6))
    assert cal.lam == 0.0 and cal.share["strong"] == 1.0 and cal.mean_cost == pytest.approx(1e-6)


def test_cost_target_binding_gives_the_smallest_feasible_lambda():
    cost = np.tile([2e-6, 1e-6], (4, 1))  # now strong is dearer in observed USD too
    cal = fit_lambda(CalibrationTarget("cost", 1.5e-6), MODELS, MU_Q, MU_C, SIGMA, 0.0, cost, QUALITY)
    assert cal.share["weak"] == 1.0 and cal.lam > 0.4 / 0.9
    feasible = cal.sweep.lambdas[cal.sweep.mean_cost <= 1.5e-6]
    assert cal.lam == feasible.min()
    with pytest.raises(CalibrationError, match="below the cheapest routing"):
        fit_lambda(CalibrationTarget("cost", 0.5e-6), MODELS, MU_Q, MU_C, SIGMA, 0.0, cost, QUALITY)


def test_share_target_gives_the_smallest_feasible_lambda():
    assert fit(CalibrationTarget("share", 1.0, "strong")).lam == 0.0
    cal = fit(CalibrationTarget("share", 0.5, "strong"))
    assert cal.share["strong"] == 0.0 and cal.lam == cal.sweep.lambdas[cal.sweep.share[:, 0] <= 0.5].min()
