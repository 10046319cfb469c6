"""R/DR-learners recover a known bias; the Meta-Router beats pooling and gold-only (synthetic).

Data-generating process (fixed seeds): X ~ U(-1, 1)^D, gold gain psi(x) = 0.5 tanh(x0 + x2)
(or 0.6 tanh(x0 + x2 + x3 - x4)), preference bias Delta(x) = 0.2 + 0.8 x1, so the preference label
is y = psi - Delta + noise and the gold label r = psi + noise (both N(0, 0.3^2)). Gold and
preference are on one scale by construction, so these tests use ``align='none'``.

Stated errors (RMSE of Delta-hat on 500 fresh points; sd(Delta) is about 0.46):
- 25% gold (300 gold, 900 preference): R and DR < 0.15 with a linear effect model, < 0.25 with
  a random-forest effect model;
- 3.8% gold (60 gold, 1500 preference): R < 0.2 (linear effect), < 0.4 (forest effect). The DR
  learner is not held to a bound there: its 1/e(1 - e) weights (e ~ 0.04) make it noisy, which is
  the overlap problem of §C.3.
Smaller forests than the code's defaults keep the tests fast (the learners take any estimator).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression

from caproute.causal.align import variance_scale
from caproute.causal.gain import GainData, MetaRouterGain, fit_gain
from caproute.causal.learners import DRLearner, RLearner, paper_code_settings
from caproute.causal.metrics import efficiency_gain
from caproute.errors import DataError


def rf(n: int = 30) -> RandomForestRegressor:
    return RandomForestRegressor(n, max_depth=8, min_samples_leaf=5, max_features=0.5, random_state=0)


def rfc() -> RandomForestClassifier:
    return RandomForestClassifier(30, max_depth=8, min_samples_leaf=5, random_state=0)


def make(n, rng, d=6, hard=False):
    X = rng.uniform(-1, 1, (n, d))
    psi = 0.6 * np.tanh(X[:, 0] + X[:, 2] + X[:, 3] - X[:, 4]) if hard else 0.5 * np.tanh(X[:, 0] + X[:, 2])
    return X, psi, 0.2 + 0.8 * X[:, 1]


def pooled_sample(seed, n_gold, n_pref, d=6, hard=False):
    rng = np.random.default_rng(seed)
    Xg, pg, _ = make(n_gold, rng, d, hard)
    Xp, pp, dp = make(n_pref, rng, d, hard)
    Xt, pt, dt = make(500, rng, d, hard)
    r = pg + rng.normal(0, 0.3, n_gold)
    y = pp - dp + rng.normal(0, 0.3, n_pref)
    return {"Xg": Xg, "r": r, "Xp": Xp, "y": y, "psi_pref": pp, "Xt": Xt, "psi_test": pt, "delta_test": dt}


def _pooled(s):
    X = np.vstack([s["Xg"], s["Xp"]])
    T = np.r_[np.ones(len(s["r"]), int), np.zeros(len(s["y"]), int)]
    return X, np.r_[s["r"], s["y"]], T


def rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.mark.parametrize("learner", [RLearner, DRLearner])
@pytest.mark.parametrize("effect,bound", [("linear", 0.15), ("forest", 0.25)])
def test_bias_recovered_with_good_overlap(learner, effect, bound):
    s = pooled_sample(0, 300, 900)
    est = learner(rf(), rfc(), LinearRegression() if effect == "linear" else rf(60), effect_clip=None)
    est.fit(*_pooled(s))
    assert rmse(est.effect(s["Xt"]), s["delta_test"]) < bound
    assert est.overlap_.n_masked == 0 and est.overlap_.n_gold == 300


@pytest.mark.parametrize("effect,bound", [("linear", 0.2), ("forest", 0.4)])
def test_r_learner_recovers_bias_at_4_percent_gold(effect, bound):
    s = pooled_sample(0, 60, 1500)
    est = RLearner(rf(), rfc(), LinearRegression() if effect == "linear" else rf(60), effect_clip=None)
    est.fit(*_pooled(s))
    err = rmse(est.effect(s["Xt"]), s["delta_test"])
    assert err < bound
    # and it beats the best constant (the true mean bias): the learner found the x1 dependence
    assert err < rmse(np.full(500, s["delta_test"].mean()), s["delta_test"])


def test_overlap_is_reported_not_silent():
    s = pooled_sample(1, 60, 1500)
    X, Y, T = _pooled(s)
    ours = DRLearner(rf(), rfc(), LinearRegression()).fit(X, Y, T)
    rep = ours.overlap_
    assert rep.n_masked == 0 and rep.clip_low == 0.01
    assert rep.n_clipped_low == int((_raw_propensity(ours, X, T) < 0.01).sum())
    assert rep.propensity_median < 0.1
    # the released code's DR rule (regressor propensity, clip [0.05, 0.95], mask e(1-e) <= 0.05)
    paper = DRLearner(rf(), effect_model=LinearRegression(), **{k: v for k, v in paper_code_settings("dr").items()
                                                                if k != "propensity_model"},
                      propensity_model=rf()).fit(X, Y, T)
    e = paper.e_hat_
    assert paper.overlap_.n_masked == int((e * (1 - e) <= 0.05).sum())
    assert paper.overlap_.n_masked > 0.6 * len(Y)     # at ~4% gold the mask drops most rows (76% here)
    assert paper_code_settings("r")["propensity_clip"] == (0.1, 0.9)


def _raw_propensity(est, X, T):
    from caproute.causal.learners import _folds, crossfit_propensity

    return crossfit_propensity(rfc(), X, T, _folds(T, est.n_folds, est.random_state))


def _curves(seed):
    s = pooled_sample(seed, 60, 1500, d=12, hard=True)
    data = GainData(s["Xg"], s["r"], s["Xp"], s["y"], s["psi_pref"])
    out = {}
    for method in ("meta-r", "meta-dr", "pooled", "gold-only", "all-gold"):
        kw = dict(outcome_model=rf(), propensity_model=rfc(), effect_model=LinearRegression(),
                  effect_clip=None) if method.startswith("meta") else {}
        fitted = fit_gain(method, data, final_model=rf(), align="none", **kw)
        out[method] = float(efficiency_gain(fitted.predict(s["Xt"]), s["psi_test"]).max())
    return out


def test_meta_router_beats_pooling_and_gold_only():
    runs = [_curves(seed) for seed in (0, 1)]
    mean = {m: np.mean([r[m] for r in runs]) for m in runs[0]}
    # measured: meta-r 72.7, meta-dr 64.0, gold-only 61.4, pooled 39.9, all-gold 87.1 (peak gains)
    assert mean["meta-r"] > mean["gold-only"] + 5
    assert mean["meta-r"] > mean["pooled"] + 15
    assert mean["meta-dr"] > mean["pooled"] + 10
    assert mean["all-gold"] > mean["meta-r"]            # the upper bound stays above
    for r in runs:
        assert r["meta-r"] > max(r["gold-only"], r["pooled"])


def test_meta_router_gain_pipeline_details():
    s = pooled_sample(2, 40, 400)
    est = MetaRouterGain("r", outcome_model=rf(10), propensity_model=rfc(), effect_model=rf(10),
                         final_model=rf(10)).fit(s["Xg"], 3 * s["r"], s["Xp"], s["y"])
    # variance alignment: c = sd(y) / sd(3 r); predictions come back on the gold (3 r) scale
    assert est.scale_ == pytest.approx(variance_scale(3 * s["r"], s["y"]))
    np.testing.assert_allclose(est.predict(s["Xt"]), est.final_model_.predict(s["Xt"]) / est.scale_)
    assert np.all(np.abs(est.delta_pref_) <= 1.2)                 # the code's effect clip
    info = est.info()
    assert info["overlap"]["n_rows"] == 440 and info["overlap"]["n_gold"] == 40
    weighted = MetaRouterGain("r", gamma=5.0, outcome_model=rf(10), propensity_model=rfc(), effect_model=rf(10),
                              final_model=rf(10)).fit(s["Xg"], s["r"], s["Xp"], s["y"])
    unweighted = MetaRouterGain("r", outcome_model=rf(10), propensity_model=rfc(), effect_model=rf(10),
                                final_model=rf(10)).fit(s["Xg"], s["r"], s["Xp"], s["y"])
    assert not np.allclose(weighted.predict(s["Xt"]), unweighted.predict(s["Xt"]))
    with pytest.raises(ValueError, match="gamma"):
        MetaRouterGain(gamma=0).fit(s["Xg"], s["r"], s["Xp"], s["y"])


def test_mean_shift_and_all_gold_by_hand():
    s = pooled_sample(3, 30, 200)
    data = GainData(s["Xg"], s["r"], s["Xp"], s["y"], np.where(np.arange(200) < 50, np.nan, s["psi_pref"]))
    ms = fit_gain("mean-shift", data, final_model=rf(5), align="variance")
    c = variance_scale(s["r"], s["y"])
    assert ms.scale == pytest.approx(c)
    assert ms.info["shift"] == pytest.approx(np.mean(c * s["r"]) - np.mean(s["y"]))
    ag = fit_gain("all-gold", data, final_model=rf(5))
    assert ag.info["pref_rows_without_gold"] == 50            # counted, not silently dropped
    with pytest.raises(ValueError, match="unknown method"):
        fit_gain("t-learner", data)


def test_learner_input_errors():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(50, 3)), rng.normal(size=50)
    with pytest.raises(DataError, match="at least 5 gold"):
        RLearner().fit(X, Y, np.r_[np.ones(3, int), np.zeros(47, int)])
    with pytest.raises(DataError, match="T must be 0"):
        RLearner().fit(X, Y, np.full(50, 2))
    with pytest.raises(DataError, match="finite"):
        DRLearner().fit(X, np.r_[np.nan, Y[1:]], np.r_[np.ones(10, int), np.zeros(40, int)])
    with pytest.raises(RuntimeError, match="not fitted"):
        RLearner().effect(X)


def test_overlap_weighted_leaves_fix_the_r_learner_at_4_percent_gold():
    """The code's effect forest (min leaf 2) vs ours (leaves carry >= 5% of the (T - e)^2 weight)."""
    from caproute.causal.learners import default_effect_model, default_r_effect_model

    s = pooled_sample(0, 60, 1500, d=12, hard=True)
    X, Y, T = _pooled(s)
    errs = {}
    for name, eff in (("code", default_effect_model(0)), ("ours", default_r_effect_model(0))):
        est = RLearner(rf(), rfc(), eff.set_params(n_estimators=40), effect_clip=None).fit(X, Y, T)
        errs[name] = rmse(est.effect(s["Xt"]), s["delta_test"])
    assert errs["ours"] < 0.35 < errs["code"]


# ---------------------------------------------------------------------------------------------
# low-variance effect models, their cross-fitted selection, shared nuisances (issue 14.4)
def test_group_mean_effect_by_hand():
    from caproute.causal.learners import GroupMeanEffect

    # column 0 is discrete (a pair indicator), column 1 continuous; one k-means cluster -> groups = pairs
    X = np.array([[1, 0.1], [1, 0.2], [-1, 0.3], [-1, 0.4]], dtype=float)
    y = np.array([1.0, 3.0, 0.0, 0.0])
    w = np.array([1.0, 1.0, 1.0, 3.0])
    g = GroupMeanEffect(n_clusters=1, prior_weight=2.0).fit(X, y, sample_weight=w)
    overall = 4.0 / 6.0
    assert g.predict(X[:1])[0] == pytest.approx((4.0 + 2 * overall) / (2 + 2))
    assert g.predict(X[2:3])[0] == pytest.approx((0.0 + 2 * overall) / (4 + 2))
    assert g.predict(np.array([[0.0, 0.1]]))[0] == pytest.approx(overall)     # unseen group -> overall mean
    const = GroupMeanEffect(n_clusters=1, use_discrete=False, prior_weight=2.0).fit(X, y, sample_weight=w)
    assert np.allclose(const.predict(X), overall)


def test_auto_effect_picks_low_variance_model_for_a_constant_bias_and_forest_for_a_step():
    from caproute.causal.learners import EFFECT_MODELS

    rng = np.random.default_rng(5)
    n_gold, n_pref, d = 40, 800, 6
    X = rng.uniform(-1, 1, (n_gold + n_pref, d))
    psi = 0.5 * np.tanh(X[:, 0] + X[:, 2])
    T = np.r_[np.ones(n_gold, int), np.zeros(n_pref, int)]
    noise = rng.normal(0, 0.8, T.size)
    # constant bias, much smaller than the noise: a low-variance model must win the selection
    Y = np.where(T == 1, psi, psi - 0.1) + noise
    est = RLearner(rf(), rfc(), "auto", effect_clip=None, effect_forest=rf(30)).fit(X, Y, T)
    sel = est.effect_selection_
    assert set(sel["cv_loss"]) == set(EFFECT_MODELS)
    assert sel["chosen"] in ("constant", "group", "ridge")
    assert sel["cv_loss"][sel["chosen"]] <= sel["cv_loss"]["forest"]
    # large step bias in x1 with little noise: the constant model must lose the selection
    Y2 = np.where(T == 1, psi, psi - 1.0 * (X[:, 1] > 0)) + rng.normal(0, 0.05, T.size)
    est2 = RLearner(rf(), rfc(), "auto", effect_clip=None, effect_forest=rf(30)).fit(X, Y2, T)
    assert est2.effect_selection_["chosen"] != "constant"
    assert est2.effect_selection_["cv_loss"]["constant"] > min(est2.effect_selection_["cv_loss"].values())


def test_effect_variants_share_nuisances_exactly():
    s = pooled_sample(3, 40, 400)
    data = GainData(s["Xg"], s["r"], s["Xp"], s["y"], s["psi_pref"])
    cache: dict = {}
    kw = dict(outcome_model=rf(), propensity_model=rfc(), effect_clip=None, effect_forest=rf(20))
    a = fit_gain("meta-r:ridge", data, final_model=rf(), align="none", nuisance_cache=cache, **kw)
    assert len(cache) == 1
    b = fit_gain("meta-r:constant", data, final_model=rf(), align="none", nuisance_cache=cache, **kw)
    assert len(cache) == 1                                   # reused, not recomputed
    fresh = fit_gain("meta-r:constant", data, final_model=rf(), align="none", **kw)
    np.testing.assert_allclose(b.predict(s["Xt"]), fresh.predict(s["Xt"]))
    assert not np.allclose(a.predict(s["Xt"]), b.predict(s["Xt"]))
    assert "effect" not in b.info                            # a fixed effect model: no selection record
    auto = fit_gain("meta-r:auto", data, final_model=rf(), align="none", nuisance_cache=cache, **kw)
    assert sum(v for k, v in auto.info["effect"].items() if k.startswith("chose_")) == 1.0
    # the default effect model is the paper's forest: no selection, same fit as meta-r:forest
    plain = fit_gain("meta-r", data, final_model=rf(), align="none", nuisance_cache=cache, **kw)
    assert "effect" not in plain.info
    forest = fit_gain("meta-r:forest", data, final_model=rf(), align="none", nuisance_cache=cache, **kw)
    np.testing.assert_allclose(plain.predict(s["Xt"]), forest.predict(s["Xt"]))
    with pytest.raises(ValueError, match="unknown method"):
        fit_gain("meta-r:lasso", data)


def test_query_bias_judge_is_a_seeded_step_in_the_topic_axis():
    from caproute.causal.pandalm import query_bias_verdicts

    rng = np.random.default_rng(0)
    emb = np.r_[rng.normal(0, 0.1, (10, 4)) + [3, 0, 0, 0], rng.normal(0, 0.1, (10, 4)) - [3, 0, 0, 0]]
    codes = np.repeat(np.arange(20), 10)
    pref = rng.choice([-1.0, 0.0, 1.0], size=codes.size)
    pref[5] = np.nan
    out = query_bias_verdicts(pref, codes, emb, rate=0.5, seed=1)
    np.testing.assert_array_equal(out, query_bias_verdicts(pref, codes, emb, rate=0.5, seed=1))
    assert np.isnan(out[5])
    changed = out != pref
    side = np.sign(out[changed & np.isfinite(out)])
    grp = codes[changed & np.isfinite(out)] < 10
    assert len(set(side[grp])) == 1 and len(set(side[~grp])) == 1 and side[grp][0] == -side[~grp][0]
    assert 0.2 < np.mean(out == query_bias_verdicts(pref, codes, emb, rate=0.0, seed=1)) < 0.95


def test_length_bias_judge_by_hand():
    """The hidden-covariate judge (issue 24.4): the bias side is the query's word count against the
    median over the distinct queries; replacements are the same seeded draw as the PC1 judge's."""
    from caproute.causal.pandalm import (
        length_bias_verdicts,
        length_side,
        pc1_side,
        query_bias_verdicts,
        side_bias_verdicts,
    )

    texts = ["a b c", "a", "a b c d e", "a b"]          # word counts 3, 1, 5, 2 -> median 2.5
    codes = np.array([0, 0, 1, 2, 3, 3])
    np.testing.assert_array_equal(length_side(codes, texts), [1, 1, -1, 1, -1, -1])
    pref = np.array([0.0, -1.0, 1.0, np.nan, 1.0, 0.0])
    np.testing.assert_array_equal(side_bias_verdicts(pref, np.ones(6), rate=1.0), [1, 1, 1, np.nan, 1, 1])
    np.testing.assert_array_equal(side_bias_verdicts(pref, np.ones(6), rate=0.0), pref)
    out = length_bias_verdicts(pref, codes, texts, rate=0.5, seed=3)
    replace = np.random.default_rng(3).random(6) < 0.5
    expected = np.where(replace & np.isfinite(pref), [1, 1, -1, 1, -1, -1], pref)
    np.testing.assert_array_equal(out, expected)
    assert replace.any() and not replace.all()
    # same draw as the PC1 judge: the same items are replaced, only the side differs
    emb = np.array([[1.0, 0], [-1.0, 0], [2.0, 0], [-2.0, 0]])
    pc1 = query_bias_verdicts(pref, codes, emb, rate=0.5, seed=3)
    side = pc1_side(codes, emb)
    assert side[0] == side[3] == -side[2] == -side[4]     # queries 0, 2 (x = 1, 2) vs 1, 3 (x = -1, -2)
    np.testing.assert_array_equal(pc1, np.where(replace & np.isfinite(pref), side, pref))
    with pytest.raises(ValueError, match="differ"):
        side_bias_verdicts(pref, np.ones(3))


def test_covariate_visibility_tells_a_visible_from_a_hidden_covariate():
    from caproute.causal.pandalm import covariate_visibility

    rng = np.random.default_rng(0)
    E = rng.normal(size=(120, 20))
    visible = np.where(E[:, 0] > 0, 1, -1)                 # on a high-variance direction of E
    E[:, 0] *= 5
    hidden = rng.choice([-1, 1], size=120)                 # independent of E
    v = covariate_visibility(E, visible, pca_dim=5)
    h = covariate_visibility(E, hidden, pca_dim=5)
    assert v["logistic_accuracy"] > 0.9 and v["pca_dim"] == 5
    assert h["logistic_accuracy"] < 0.7 and h["forest_accuracy"] < 0.7
    assert 0.5 <= h["majority_rate"] <= 1.0 and h["queries"] == 120


def test_pseudo_outcomes_by_hand():
    """The R- and DR-learner pseudo-outcomes as named functions (issue 25), hand-computed."""
    from caproute.causal.learners import dr_learner_target, r_learner_target

    Y, T = np.array([1.0, 0.0]), np.array([1.0, 0.0])
    z, w = r_learner_target(Y, T, m_hat=np.array([0.5, 0.5]), e_hat=np.array([0.75, 0.25]))
    assert np.allclose(z, [0.5 / 0.25, -0.5 / -0.25]) and np.allclose(w, [0.0625, 0.0625])
    z = dr_learner_target(Y, T, mu1=np.array([0.8, 0.6]), mu0=np.array([0.2, 0.4]), e_hat=np.array([0.5, 0.5]))
    # row 0: (1 - .5)/(.25) * (1 - .8) + .6 = 1.0; row 1: (0 - .5)/.25 * (0 - .4) + .2 = 1.0
    assert np.allclose(z, [1.0, 1.0])
