"""Off-policy estimators (caproute.evaluate.offpolicy): hand-computed answers on tiny logs, and
unbiasedness on synthetic data with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from caproute.evaluate import offpolicy as ope
from caproute.evaluate.outcome_models import PerModelKNN, SharedRidge, route_by_outcome

# a tiny log: 4 requests, 2 models; the logger chose model 0 with p = 0.8 except request 2
CHOSEN = np.array([0, 0, 1, 0])
PROP = np.array([0.8, 0.8, 0.2, 0.8])
REWARD = np.array([1.0, 0.0, 1.0, 1.0])
PI = np.array([[0, 1], [1, 0], [0, 1], [1, 0]], dtype=float)   # candidate: model 1, 0, 1, 0


def test_ips_snips_by_hand():
    w = ope.importance_weights(PI, CHOSEN, PROP)
    np.testing.assert_allclose(w, [0, 1.25, 5.0, 1.25])
    # IPS = (0 + 1.25*0 + 5*1 + 1.25*1) / 4 = 6.25 / 4
    assert ope.ips(PI, CHOSEN, PROP, REWARD) == pytest.approx(1.5625)
    # SNIPS = 6.25 / (0 + 1.25 + 5 + 1.25) = 6.25 / 7.5
    assert ope.snips(PI, CHOSEN, PROP, REWARD) == pytest.approx(6.25 / 7.5)
    # ESS = 7.5^2 / (1.5625 + 25 + 1.5625)
    assert ope.effective_sample_size(w) == pytest.approx(56.25 / 28.125)


def test_dr_by_hand():
    qhat = np.array([[0.5, 0.5], [0.6, 0.2], [0.3, 0.9], [0.7, 0.4]])
    # request terms: direct + w * (r - qhat[chosen])
    t = [0.5 + 0 * (1 - 0.5), 0.6 + 1.25 * (0 - 0.6), 0.9 + 5 * (1 - 0.9), 0.7 + 1.25 * (1 - 0.7)]
    np.testing.assert_allclose(ope.dr_terms(PI, CHOSEN, PROP, REWARD, qhat), t)
    assert ope.doubly_robust(PI, CHOSEN, PROP, REWARD, qhat) == pytest.approx(np.mean(t))
    # a perfect-for-the-log outcome model leaves only the direct part
    exact = qhat.copy()
    exact[np.arange(4), CHOSEN] = REWARD
    assert ope.doubly_robust(PI, CHOSEN, PROP, REWARD, exact) == pytest.approx(np.mean(np.sum(PI * exact, axis=1)))


def test_on_policy_candidate_gives_the_observed_mean():
    # a candidate that IS the logging policy: IPS = SNIPS = observed mean
    pi0 = np.array([[0.8, 0.2], [0.8, 0.2], [0.8, 0.2], [0.8, 0.2]])
    assert ope.ips(pi0, CHOSEN, PROP, REWARD) == pytest.approx(REWARD.mean())
    assert ope.snips(pi0, CHOSEN, PROP, REWARD) == pytest.approx(REWARD.mean())
    assert ope.effective_sample_size(np.ones(4)) == pytest.approx(4.0)


def test_bootstrap_intervals_by_hand():
    counts = ope.bootstrap_counts(4, 500, seed=1)
    assert counts.shape == (500, 4) and np.all(counts.sum(axis=1) == 4)
    # the bootstrap mean of a constant is that constant
    lo, hi = ope.percentile_interval(ope.bootstrap_means(np.full(4, 0.3), counts))
    assert lo == pytest.approx(0.3) and hi == pytest.approx(0.3)
    # two hand-made resamples: mean of terms and ratio
    c = np.array([[2, 0, 1, 1], [0, 0, 0, 4]], dtype=float)
    np.testing.assert_allclose(ope.bootstrap_means([1, 2, 3, 4], c), [(2 + 3 + 4) / 4, 4])
    np.testing.assert_allclose(ope.bootstrap_ratios([1, 2, 3, 4], [1, 1, 1, 2], c), [9 / 5, 16 / 8])
    assert ope.percentile_interval([0, 1, 2, 3, 4], alpha=0.5) == (1.0, 3.0)
    # seeded: the same counts twice
    np.testing.assert_array_equal(ope.bootstrap_counts(10, 5, seed=3), ope.bootstrap_counts(10, 5, seed=3))


def test_evaluate_policy_rows():
    qhat = np.full((4, 2), 0.5)
    ests = ope.evaluate_policy(PI, CHOSEN, PROP, REWARD, qhat, n_boot=200, seed=0)
    assert [e.estimator for e in ests] == ["ips", "snips", "dr"]
    for e in ests:
        assert e.n == 4 and e.ci_low <= e.value + 1e-12 and e.ci_high >= e.value - 1e-12
        assert set(e.to_dict()) == {"estimator", "value", "ci_low", "ci_high", "ess", "n"}


def test_unsupported_candidate_is_refused_by_name():
    support = np.array([[True, False], [True, False], [True, True], [True, False]])
    assert ope.unsupported_rows(PI, support).tolist() == [True, False, False, False]
    with pytest.raises(ope.UnsupportedCandidateError, match=r"'cand'.*on 1 of 4 requests.*\bbig\b"):
        ope.check_support(PI, support, ["small", "big"], "cand")
    ope.check_support(PI, np.ones((4, 2), bool), ["small", "big"], "cand")   # full support: fine


def test_bad_inputs():
    with pytest.raises(ValueError, match="propensities"):
        ope.ips(PI, CHOSEN, np.array([0.8, 0.0, 0.2, 0.8]), REWARD)
    with pytest.raises(ValueError, match="outside"):
        ope.ips(PI, np.array([0, 2, 1, 0]), PROP, REWARD)


def _synthetic(rng, n, eps=0.2):
    """A contextual bandit with known truth: x ~ U(0, 1), 3 models, Bernoulli rewards."""
    x = rng.random(n)
    mean = np.stack([0.2 + 0.6 * x, 0.8 - 0.6 * x, np.full(n, 0.5)], axis=1)
    logger = (x > 0.5).astype(int)                  # model 0 above 0.5, else 1: the better one
    pi0 = ope.epsilon_greedy(logger, 3, eps)
    chosen = np.array([rng.choice(3, p=p) for p in pi0])
    reward = (rng.random(n) < mean[np.arange(n), chosen]).astype(float)
    return x, mean, pi0, chosen, reward


def test_unbiased_on_synthetic_data_with_known_truth():
    rng = np.random.default_rng(0)
    truth_x = np.linspace(0, 1, 200001)
    # candidate: always model 2 below 0.3, else model 0 -> truth integrates its mean reward
    cand = lambda x: np.where(x < 0.3, 2, 0)   # noqa: E731
    truth = np.mean(np.where(truth_x < 0.3, 0.5, 0.2 + 0.6 * truth_x))
    est = {"ips": [], "snips": [], "dr": []}
    for _ in range(300):
        x, mean, pi0, chosen, reward = _synthetic(rng, 400)
        pi = ope.one_hot(cand(x), 3)
        p = pi0[np.arange(x.size), chosen]
        qhat = ope.crossfit_outcome(lambda: PerModelKNN(k=16), x[:, None], chosen, reward, 3, folds=5, seed=1)
        est["ips"].append(ope.ips(pi, chosen, p, reward))
        est["snips"].append(ope.snips(pi, chosen, p, reward))
        est["dr"].append(ope.doubly_robust(pi, chosen, p, reward, qhat))
    for name, v in est.items():
        v = np.asarray(v)
        se = v.std(ddof=1) / np.sqrt(v.size)
        assert abs(v.mean() - truth) < 4 * se + (0.01 if name == "snips" else 0), (name, v.mean(), truth, se)
    # the outcome model buys variance: DR spreads less than IPS
    assert np.std(est["dr"]) < np.std(est["ips"])


def test_crossfit_never_uses_the_rows_it_predicts():
    # a memorising outcome model (k = 1 on distinct x) predicts another row's reward, never its own
    x = np.arange(10, dtype=float)[:, None]
    reward = np.arange(10, dtype=float)
    qhat = ope.crossfit_outcome(lambda: PerModelKNN(k=1), x, np.zeros(10, int), reward, 1, folds=5, seed=0)
    assert np.all(qhat[:, 0] != reward)
    fid = ope.fold_ids(10, 5, seed=0)
    assert sorted(np.bincount(fid).tolist()) == [2] * 5
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    g = ope.fold_ids(10, 5, seed=0, groups=groups)
    assert all(len(set(g[groups == k])) == 1 for k in range(5))


def test_outcome_models_partial_feedback():
    rng = np.random.default_rng(1)
    X = rng.random((300, 2))
    chosen = rng.integers(2, size=300)
    reward = np.where(chosen == 0, X[:, 0], 1 - X[:, 0]) + rng.normal(0, 0.05, 300)
    for model in (PerModelKNN(k=8), SharedRidge(alpha=0.1)):
        model.fit(X, chosen, reward, 3)          # model 2 never logged
        pred = model.predict(np.array([[0.9, 0.5], [0.1, 0.5]]))
        assert pred.shape == (2, 3)
        assert pred[0, 0] > pred[0, 1] and pred[1, 1] > pred[1, 0]
        assert pred[0, 2] == pytest.approx(reward.mean())     # the stated rule for unlogged models
        se = model.predict_se(np.array([[0.5, 0.5]]))
        assert np.isinf(se[0, 2]) and np.all(np.isfinite(se[0, :2]))
    # pessimistic routing: a noisy high estimate loses to a precise slightly lower one
    assert route_by_outcome([[0.6, 0.7]], [[0.01, 0.2]]).tolist() == [0]
    assert route_by_outcome([[0.6, 0.7]], [[0.01, 0.2]], kappa=0).tolist() == [1]
    assert route_by_outcome([[0.6, 0.7]], [[np.inf, np.inf]]).tolist() == [1]


def test_normal_interval_and_dr_estimate_by_hand():
    # terms 1, 2, 3, 4: mean 2.5, sd (ddof 1) sqrt(5/3), se sqrt(5/3)/2; z(0.975) = 1.959964
    lo, hi = ope.normal_interval([1.0, 2.0, 3.0, 4.0], alpha=0.05)
    half = 1.959964 * np.sqrt(5 / 3) / 2
    assert lo == pytest.approx(2.5 - half, abs=1e-5) and hi == pytest.approx(2.5 + half, abs=1e-5)
    assert np.isnan(ope.normal_interval([1.0])[0])
    qhat = np.array([[0.5, 0.5]] * 4)
    est = ope.dr_estimate(PI, CHOSEN, PROP, REWARD, qhat)
    t = ope.dr_terms(PI, CHOSEN, PROP, REWARD, qhat)
    assert est.value == pytest.approx(ope.doubly_robust(PI, CHOSEN, PROP, REWARD, qhat))
    assert (est.ci_low, est.ci_high) == pytest.approx(ope.normal_interval(t))
    assert est.ess == pytest.approx(56.25 / 28.125) and est.n == 4
    # evaluate_policy's DR row is that estimate
    dr = [e for e in ope.evaluate_policy(PI, CHOSEN, PROP, REWARD, qhat, n_boot=50) if e.estimator == "dr"][0]
    assert dr == est


def test_row_keys_recognise_repeated_queries():
    import scipy.sparse as sp

    from caproute.evaluate.outcome_models import row_keys

    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    for k in (row_keys(X), row_keys(sp.csr_matrix(X))):
        assert k[0] == k[2] and k[0] != k[1]


def test_mixed_ridge_learns_query_difficulty_across_models():
    from caproute.evaluate.outcome_models import MixedRidge

    # 20 queries whose features say nothing (the same large first feature, a tiny id): the logger
    # served model 0 twice per query, rewards 1 on the even queries and 0 on the odd ones; model 1
    # was explored once on every query, with the same pattern
    q = np.repeat(np.arange(20), 3)
    X = np.column_stack([np.ones(q.size), 1e-6 * q])
    chosen = np.tile([0, 0, 1], 20)
    reward = (q % 2 == 0).astype(float)
    Xt = np.column_stack([np.ones(2), 1e-6 * np.array([0, 1])])   # an easy and a hard query
    mixed = MixedRidge().fit(X, chosen, reward, 2).predict(Xt)
    shared = SharedRidge().fit(X, chosen, reward, 2).predict(Xt)
    # the query effect says query 0 is easy and query 1 hard, for both models; SharedRidge cannot
    assert mixed[0, 1] - mixed[1, 1] > 0.5 and mixed[0, 0] - mixed[1, 0] > 0.5
    assert abs(shared[0, 1] - shared[1, 1]) < 0.05
    # an unseen query gets no query effect: between the two
    new = MixedRidge().fit(X, chosen, reward, 2).predict(np.array([[1.0, 1.0]]))
    assert mixed[1, 1] < new[0, 1] < mixed[0, 1]


def test_local_knn_importance_weighted_by_hand():
    from caproute.evaluate.outcome_models import LocalKNN

    X = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    chosen = np.array([0, 1, 0, 1, 1, 0])
    reward = np.array([1.0, 0.0, 0.5, 1.0, 1.0, 0.0])
    weight = np.array([1.0, 2.0, 1.0, 1.0, 1.0, 2.0])
    m = LocalKNN(k=3, prior=1.0).fit(X, chosen, reward, 3, weight=weight)
    # global weighted means: model 0 (1 + 0.5 + 0) / 4 = 0.375, model 1 (0 + 1 + 1) / 4 = 0.5
    # at x = 0.05 the 3 nearest are rows 0, 1, 2. Model 0: rows 0 and 2, weights 1, 1: mean 0.75,
    # n = 4 / 2 = 2 -> (2 * 0.75 + 0.375) / 3. Model 1: row 1, weight 2: mean 0, n = 1 -> 0.5 / 2.
    pred = m.predict(np.array([[0.05]]))
    var = np.var(reward)
    np.testing.assert_allclose(pred[0], [0.625, 0.25, reward.mean()])
    np.testing.assert_allclose(m.predict_se(np.array([[0.05]]))[0], [np.sqrt(var / 3), np.sqrt(var / 2), np.inf])
    # unweighted, model 1's global mean is 2 / 3 and model 0's 0.5
    u = LocalKNN(k=3, prior=1.0).fit(X, chosen, reward, 3).predict(np.array([[0.05]]))
    np.testing.assert_allclose(u[0, :2], [(2 * 0.75 + 0.5) / 3, (0 + 2 / 3) / 2])
    with pytest.raises(ValueError, match="weight"):
        LocalKNN().fit(X, chosen, reward, 3, weight=-weight)
