"""Adaptive repeated sampling: spend repeats where the DARS routing label is still uncertain.

DARS supervises a query with K rewrites x R decodes of every model. Most of those repeats do not
change the label ``argmax_m U(x, m)``, ``U = mu_q - lambda * mu_c - beta * sigma_q``: after two or
three samples one model wins in every posterior draw. The rules here decide, from the
observations of one query so far, which model to sample next, or that the label is settled.

State of a query (arrays over models, or (queries, models) for a batch):
``n`` observations, ``s`` sum of scores, ``ss`` sum of squared scores, ``c`` sum of *normalised*
costs (the cost term of U) and ``gen_cost`` the price of one more generation of each model (any
unit; only its ratios matter, used by the cost-aware choice).

Rules (``AdaptiveConfig.rule``):

- ``uniform`` -- the baseline: the least-sampled model next (model order breaks ties); never
  settles, so it stops only when the budget or the grid runs out. With a global budget this is a
  smaller fixed K x R grid spread evenly over pairs (the paper's Figure 4(a) protocol).
- ``pob`` -- Bayesian probability of best. The success rate p of each model has a Beta posterior
  ``Beta(a + s, b + n - s)``: (a, b) the prior, ``AdaptiveConfig.prior`` or, with
  ``prior_fit="eb"``, an empirical-Bayes Beta per model fitted across the queries of the
  collection (:func:`fit_beta_prior`). For 0/1 scores this is the Beta-Bernoulli conjugate
  posterior. For scores strictly inside (0, 1) the update is ``beta_update="fractional"`` (each
  score counted as that fraction of a success, a heuristic) or ``"bernoulli"`` (Agrawal and
  Goyal's trick: draw r ~ Bernoulli(score) and count r; :func:`bernoulli_scores`). What a draw
  stands for (``predictive``): with ``"grid"`` (0/1 scores, finite capacity) the pair's *full
  grid* of N = ``n + capacity`` observations, whose DARS statistics are the target: the N - n
  unbought observations hold X ~ Binomial(N - n, p) successes (beta-binomial: the exact
  predictive), mu_q = (s + X) / N and sigma_q the ddof = 1 spread of s + X successes in N
  (:func:`grid_predictive_stats`), so a fully bought pair is known exactly; otherwise (``"rate"``,
  unlimited capacity, or non-binary scores) p itself, with sigma_q = ``sqrt(p (1 - p) N / (N - 1))``
  for 0/1 scores (no correction when N is infinite) and the ddof = 1 sample spread (a plug-in)
  for other scores. The leader L is the label DARS would give now (plug-in U, caproute's tie rule);
  the query is settled when ``P(U_L + epsilon >= max_m U_m) >= 1 - delta`` for every lambda in
  ``lambdas``. Otherwise the challenger C is the model most likely to beat L by more than
  epsilon and the next sample goes to L or C, whichever has the larger posterior variance of U
  per unit of generation cost (top-two sampling, cost-aware: an expensive model is only sampled
  when it is one of the two that can change the label).
- ``lucb`` -- frequentist confidence bounds (LUCB, Kalyanakrishnan et al. 2012) with the
  Agresti-Coull half-width ``z * sqrt(p~ (1 - p~) / (n + 2))``, ``p~ = (s + 1) / (n + 2)``
  (an upper bound on the spread of [0, 1] scores), z Bonferroni-corrected over models. Settled
  when ``LCB_L + epsilon >= max_{m != L} UCB_m`` for every lambda; otherwise the next sample goes
  to L or to the challenger with the highest UCB, whichever has the wider interval per unit cost.
  The uncertainty of the risk term is not part of the bound (documented simplification).

Every model gets ``min_per_model`` observations before a query may settle (successive samples of
a pair land on different rewrites, see :func:`next_rewrite`, so input-side variation is seen
before decode-side repeats). With several ``lambdas`` each lambda has its own leader and the
query settles only when every one is settled; the next sample serves the least settled lambda.
The defaults of :class:`AdaptiveConfig` (rule, delta, epsilon, min_per_model, prior, predictive,
prior_fit; 256 draws)
are PROPOSED values -- the paper has no adaptive allocation -- chosen by held-out tuning:
``scripts/results_adaptive.py`` ranks a grid of configurations on RouterDC gsm8k and mbpp only and
the best one is the default; the goal is reported on sets never used for tuning (docs/adaptive.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caproute.supervise.labels import TIE_TOL, hard_labels
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA

RULES = ("pob", "lucb", "uniform")
#: what a posterior draw of ``pob`` stands for: ``grid`` the full-grid statistics (beta-binomial
#: predictive of the unbought observations), ``rate`` the success rate p (the pre-round-3 rule)
PREDICTIVES = ("grid", "rate")
#: the Beta prior of ``pob``: ``fixed`` = ``AdaptiveConfig.prior`` for every model; ``eb`` = an
#: empirical-Bayes Beta(a_m, b_m) per model fitted across the queries of the collection
PRIOR_FITS = ("fixed", "eb")
#: how a score enters the Beta update: ``fractional`` counts it as that fraction of a success;
#: ``bernoulli`` draws r ~ Bernoulli(score) and counts r (Agrawal and Goyal 2012)
BETA_UPDATES = ("fractional", "bernoulli")
#: PROPOSED (empirical-Bayes prior): below this many queries with >= 2 observations of a model the
#: fit is not attempted and the model keeps ``AdaptiveConfig.prior``
EB_MIN_QUERIES = 10
#: PROPOSED: the fitted prior is shrunk toward ``AdaptiveConfig.prior`` with weight
#: q / (q + EB_SHRINK), q = queries with >= 2 observations (in logit mean and log a + b)
EB_SHRINK = 10.0
#: PROPOSED: bounds on each fitted Beta parameter (a, b > 0 and sane)
EB_BOUNDS = (0.05, 100.0)


@dataclass(frozen=True)
class AdaptiveConfig:
    """Parameters of an allocation rule (see the module docstring).

    ``lambdas``: the cost weights the label must be settled for (one, or a range when the
    supervision will be reused at several lambdas).
    """

    rule: str = "pob"
    lambdas: tuple[float, ...] = (DEFAULT_LAMBDA,)
    beta: float = DEFAULT_BETA
    delta: float = 0.05
    epsilon: float = 0.0
    min_per_model: int = 1
    n_draws: int = 256
    prior: tuple[float, float] = (1.0, 1.0)
    cost_aware: bool = True
    predictive: str = "grid"
    prior_fit: str = "eb"
    beta_update: str = "fractional"

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"unknown allocation rule '{self.rule}' (choose from {', '.join(RULES)})")
        for name, allowed in (("predictive", PREDICTIVES), ("prior_fit", PRIOR_FITS),
                              ("beta_update", BETA_UPDATES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown adaptive {name} '{getattr(self, name)}' (choose from {', '.join(allowed)})")
        try:
            object.__setattr__(self, "prior", tuple(float(x) for x in self.prior))
        except (TypeError, ValueError):
            raise ValueError(f"adaptive prior must be two numbers (a, b), got {self.prior!r}") from None
        lams = tuple(float(x) for x in np.atleast_1d(self.lambdas))
        object.__setattr__(self, "lambdas", lams)
        checks = {"lambdas": len(lams) > 0 and all(np.isfinite(x) and x >= 0 for x in lams),
                  "beta": np.isfinite(self.beta) and self.beta >= 0,
                  "delta": 0 < self.delta < 1, "epsilon": np.isfinite(self.epsilon) and self.epsilon >= 0,
                  "min_per_model": self.min_per_model >= 1, "n_draws": self.n_draws >= 16,
                  "prior": len(self.prior) == 2 and min(self.prior) > 0 and all(np.isfinite(self.prior))}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid adaptive setting(s): {', '.join(bad)}")


@dataclass
class Decision:
    """What to do next for each query of a batch.

    ``model``: index of the model to sample next, -1 where the query stops (settled or nothing
    left to sample). ``settled``: the label is settled (not just exhausted). ``confidence``: the
    rule's certainty in the current label (probability of best for ``pob``; 1 or 0 for the
    others), used to serve the least certain queries first when the budget is short.
    ``label``: the current DARS label (plug-in utility at ``lambdas[0]``). ``proposal``: the model
    the rule would sample if the query went on (its top-two choice also where it is settled; -1
    where nothing has capacity), used to refine settled queries when a budget is left over.
    """

    model: np.ndarray
    settled: np.ndarray
    confidence: np.ndarray
    label: np.ndarray
    proposal: np.ndarray


def plugin_stats(n, s, ss, c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mu_q, sigma_q (ddof = 1, 0 when n < 2) and mu_c from running sums (any shape; n > 0)."""
    n = np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(n > 0, s / n, 0.0)
        m2 = np.maximum(ss - n * mu * mu, 0.0)
        sigma = np.where(n > 1, np.sqrt(m2 / np.maximum(n - 1, 1)), 0.0)
        mu_c = np.where(n > 0, c / n, 0.0)
    return mu, sigma, mu_c


def decide(n, s, ss, c, gen_cost, config: AdaptiveConfig, rng: np.random.Generator,
           capacity=None, *, prior=None, s_beta=None) -> Decision:
    """The next model to sample for each of Q queries, from (Q, M) running sums.

    ``gen_cost``: (M,) or (Q, M) price of one generation. ``capacity``: (Q, M) how many more
    observations each pair can still get (None = unlimited); a model without capacity is never
    chosen, and a query whose candidates are all exhausted stops unsettled. ``prior``: (M, 2)
    Beta parameters per model (from :func:`fit_prior` over the whole collection); None = what
    ``config`` says, fitted on this batch alone when ``config.prior_fit == "eb"``. ``s_beta``:
    (Q, M) the successes the Beta update counts (sums of Bernoulli draws, see
    :func:`bernoulli_scores`) when ``config.beta_update == "bernoulli"``; None = ``s``, which is
    the same thing for 0/1 scores (a non-binary score without ``s_beta`` is an error there).
    """
    n = np.atleast_2d(np.asarray(n, float))
    s, ss, c = (np.atleast_2d(np.asarray(a, float)) for a in (s, ss, c))

    q, m = n.shape
    cap = np.full((q, m), np.inf) if capacity is None else np.atleast_2d(np.asarray(capacity, float))
    price = np.broadcast_to(np.asarray(gen_cost, float), (q, m))
    price = np.where(np.isfinite(price) & (price > 0), price, 1.0)
    can = cap > 0
    mu, sigma, mu_c = plugin_stats(n, s, ss, c)
    label = hard_labels(mu - config.lambdas[0] * mu_c - config.beta * sigma, mu_c)

    # minimum coverage first: the least-sampled model below the minimum, if any
    below = (n < config.min_per_model) & can
    warm = np.where(below, n, np.inf).argmin(axis=1)
    needs_warmup = below.any(axis=1)

    if config.rule == "uniform":
        score = np.where(can, n, np.inf)
        pick = score.argmin(axis=1)
        model = np.where(can.any(axis=1), pick, -1)
        return Decision(model, np.zeros(q, bool), np.zeros(q), label, model)

    sb = ab = None
    if config.rule == "pob":
        sb = _beta_successes(n, s, ss, config, s_beta)
        ab = np.asarray(fit_prior(n, sb, config) if prior is None else prior, float)
        if ab.shape != (m, 2) or not (np.isfinite(ab).all() and (ab > 0).all()):
            raise ValueError(f"prior must be ({m}, 2) positive Beta parameters per model, got {ab.tolist()}")
    rule = _pob if config.rule == "pob" else _lucb
    grid = n + cap  # the pair's full grid size N (inf when the capacity is unlimited)
    conf, leader, challenger, spread = rule(n, s, ss, mu, sigma, mu_c, config, rng, grid, ab, sb)
    settled = (conf >= 1.0 - config.delta) & ~needs_warmup
    rows = np.arange(q)
    # of the two that can change the label, the one whose estimate is least certain per unit cost
    value = spread / (price if config.cost_aware else 1.0)
    pair = np.stack([leader, challenger], axis=1)
    v = value[rows[:, None], pair]
    v = np.where(can[rows[:, None], pair], v, -np.inf)
    pick = pair[rows, v.argmax(axis=1)]
    exhausted = ~np.isfinite(v.max(axis=1))
    # neither leader nor challenger can be sampled: fall back to any other pair with capacity
    other = np.where(can, value, -np.inf).argmax(axis=1)
    pick = np.where(exhausted & can.any(axis=1), other, pick)
    pick = np.where(needs_warmup, warm, pick)
    stop = settled | ~can.any(axis=1)
    return Decision(np.where(stop, -1, pick), settled, conf, label, np.where(can.any(axis=1), pick, -1))


def ddof1_factor(grid) -> np.ndarray:
    """``N / (N - 1)``: the ddof = 1 variance of N Bernoulli(p) observations is ``p (1 - p)`` times
    this (1 for an unlimited grid, N = inf; N < 2 has no ddof = 1 spread and gets 1)."""
    grid = np.asarray(grid, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isfinite(grid) & (grid >= 2), grid / np.maximum(grid - 1.0, 1.0), 1.0)


def grid_predictive_stats(n, s, grid, p, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draws of the full-grid (mu_q, sigma_q) of 0/1 pairs: n observations bought with s
    successes, ``grid`` = N observations in the finished grid, ``p`` (..., D) draws of the
    success rate. The N - n unbought observations hold X ~ Binomial(N - n, p) successes (with p
    from the Beta posterior, X is beta-binomial: the exact posterior predictive), so the full
    grid has T = s + X successes, mean T / N and ddof = 1 spread sqrt(T (N - T) / (N (N - 1)))
    (0 when N < 2): the statistics the DARS target computes. A fully bought pair (n = N) gets
    its own statistics in every draw."""
    n, s, grid = (np.asarray(a, float) for a in (n, s, grid))
    left = np.maximum(grid - n, 0.0).astype(np.int64)
    x = rng.binomial(left[..., None], p)
    big_n = grid[..., None]
    t = s[..., None] + x
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = t / big_n
        sig = np.where(big_n >= 2, np.sqrt(np.maximum(t * (big_n - t), 0.0) / (big_n * np.maximum(big_n - 1, 1))),
                       0.0)
    return mu, sig


def _utility_draws(n, s, ss, mu_c, sigma, config: AdaptiveConfig, rng, lam: float, grid, prior=None, s_beta=None):
    ab = np.broadcast_to(np.asarray(config.prior if prior is None else prior, float), (n.shape[-1], 2))
    sb = s if s_beta is None else s_beta
    a = ab[:, 0] + sb
    b = ab[:, 1] + np.maximum(n - sb, 0.0)
    p = rng.beta(a[..., None], b[..., None], size=(*n.shape, config.n_draws))
    binary = np.isclose(ss, s)  # every score 0 or 1 (sum of squares == sum)
    bern = np.sqrt(p * (1.0 - p) * ddof1_factor(grid)[..., None])
    mu_q = p
    sig = np.where(binary[..., None], bern, sigma[..., None])
    if config.predictive == "grid":
        # 0/1 pairs with a finite grid: draw the unbought observations, not only the rate
        exact = binary & np.isfinite(grid)
        g_mu, g_sig = grid_predictive_stats(np.where(exact, n, 0.0), np.where(exact, s, 0.0),
                                            np.where(exact, grid, 0.0), p, rng)
        mu_q = np.where(exact[..., None], g_mu, p)
        sig = np.where(exact[..., None], g_sig, sig)
    return mu_q - lam * mu_c[..., None] - config.beta * sig


def fit_beta_prior(n, s, base=(1.0, 1.0), *, min_queries: int = EB_MIN_QUERIES, shrink: float = EB_SHRINK,
                   bounds: tuple[float, float] = EB_BOUNDS) -> np.ndarray:
    """Empirical-Bayes Beta(a_m, b_m) of each model's success rate across queries.

    ``n``, ``s``: (Q, M) observations and successes per (query, model) pair. Per model, (a, b)
    maximise the beta-binomial marginal likelihood ``sum_q log B(a + s_q, b + n_q - s_q) -
    log B(a, b)`` over the queries the model has observations of. The likelihood stays valid when
    the observations were bought adaptively (the choices depend only on observed data), which a
    moment fit on s / n does not. PROPOSED safeguards: a model with fewer than ``min_queries``
    queries of >= 2 observations keeps ``base`` (the rate's spread across queries is not
    identified from single observations); otherwise the fit is shrunk toward ``base`` with weight
    q / (q + shrink) in logit mean and log concentration, and a, b are kept in ``bounds``.
    Returns (M, 2)."""
    from scipy.optimize import minimize
    from scipy.special import betaln, digamma

    n = np.atleast_2d(np.asarray(n, float))
    s = np.atleast_2d(np.asarray(s, float))
    a0, b0 = (float(x) for x in base)
    lo, hi = (float(x) for x in bounds)
    out = np.tile([a0, b0], (n.shape[1], 1))
    for j in range(n.shape[1]):
        seen = n[:, j] > 0
        q2 = int((n[:, j] >= 2).sum())
        if q2 < min_queries:
            continue
        keys, w = np.unique(np.stack([s[seen, j], n[seen, j] - s[seen, j]], axis=1), axis=0, return_counts=True)
        ks, kf = keys[:, 0], keys[:, 1]

        def nll(theta, ks=ks, kf=kf, w=w):
            a, b = np.exp(theta)
            ll = np.sum(w * (betaln(a + ks, b + kf) - betaln(a, b)))
            d_ab = digamma(a + b) - digamma(a + b + ks + kf)
            ga = np.sum(w * (digamma(a + ks) - digamma(a) + d_ab)) * a
            gb = np.sum(w * (digamma(b + kf) - digamma(b) + d_ab)) * b
            return -ll, -np.array([ga, gb])

        box = [(np.log(lo), np.log(hi))] * 2
        res = minimize(nll, np.log([a0, b0]).clip(np.log(lo), np.log(hi)), jac=True, method="L-BFGS-B",
                       bounds=box)
        a, b = np.exp(res.x)
        wt = q2 / (q2 + shrink)
        logit = wt * np.log(a / b) + (1 - wt) * np.log(a0 / b0)
        conc = np.exp(wt * np.log(a + b) + (1 - wt) * np.log(a0 + b0))
        mean = 1.0 / (1.0 + np.exp(-logit))
        out[j] = np.clip([mean * conc, (1 - mean) * conc], lo, hi)
    return out


def fit_prior(n, s, config: AdaptiveConfig) -> np.ndarray:
    """The (M, 2) Beta prior ``config`` asks for: ``config.prior`` for every model, or the
    empirical-Bayes fit (:func:`fit_beta_prior`, shrunk toward ``config.prior``) from (Q, M)
    observations ``n`` and successes ``s`` across the queries of the collection."""
    n = np.atleast_2d(np.asarray(n, float))
    if config.prior_fit == "eb":
        return fit_beta_prior(n, s, config.prior)
    return np.tile(np.asarray(config.prior, float), (n.shape[1], 1))


def bernoulli_scores(scores, u) -> np.ndarray:
    """Agrawal and Goyal's trick for scores in [0, 1]: r = 1 where ``u < score`` (``u`` uniform
    draws in [0, 1), one per observation, supplied by the caller so that the draw is seeded and
    reproducible), so r ~ Bernoulli(score); 0/1 scores are returned unchanged."""
    scores, u = np.asarray(scores, float), np.asarray(u, float)
    if scores.shape != u.shape:
        raise ValueError(f"scores and uniform draws differ in shape: {scores.shape} vs {u.shape}")
    return (u < scores).astype(float)


def _beta_successes(n, s, ss, config: AdaptiveConfig, s_beta) -> np.ndarray:
    if s_beta is not None:
        sb = np.atleast_2d(np.asarray(s_beta, float))
        if sb.shape != n.shape or (sb < -1e-9).any() or (sb > n + 1e-9).any():
            raise ValueError("s_beta must be (Q, M) successes between 0 and n")
        return sb
    if config.beta_update == "bernoulli" and not np.isclose(ss, s).all():
        raise ValueError("beta_update='bernoulli' with scores inside (0, 1) needs s_beta, the sums of "
                         "Bernoulli draws of the scores (bernoulli_scores)")
    return s


def _worst_lambda(results, q):
    """Per query, the (confidence, leader, challenger) of the least settled lambda."""
    conf = np.full(q, np.inf)
    leader = np.zeros(q, np.intp)
    challenger = np.zeros(q, np.intp)
    for c, lead, ch in results:
        worse = c < conf
        conf = np.where(worse, c, conf)
        leader = np.where(worse, lead, leader)
        challenger = np.where(worse, ch, challenger)
    return conf, leader, challenger


def _pob(n, s, ss, mu, sigma, mu_c, config: AdaptiveConfig, rng, grid, prior, s_beta):
    """Probability that each lambda's plug-in leader is within epsilon of the best (Monte Carlo)."""
    q, m = n.shape
    rows = np.arange(q)
    results = []
    spread = np.zeros((q, m))
    for lam in config.lambdas:
        lead_idx = hard_labels(mu - lam * mu_c - config.beta * sigma, mu_c)
        u = _utility_draws(n, s, ss, mu_c, sigma, config, rng, lam, grid, prior, s_beta)  # (Q, M, D)
        lead = u[rows, lead_idx]                                              # (Q, D)
        is_lead = np.arange(m)[None, :, None] == lead_idx[:, None, None]
        best_other = np.where(is_lead, -np.inf, u).max(axis=1)
        conf = np.mean(lead + config.epsilon >= best_other - TIE_TOL, axis=1)
        p_beat = np.mean(u > lead[:, None, :] + config.epsilon, axis=2)     # (Q, M)
        p_beat[rows, lead_idx] = -1.0
        results.append((conf, lead_idx, p_beat.argmax(axis=1)))
        spread = np.maximum(spread, u.var(axis=2))
    return (*_worst_lambda(results, q), spread)


def _lucb(n, s, ss, mu, sigma, mu_c, config: AdaptiveConfig, rng, grid, prior, s_beta):
    """1 where each lambda's leader's lower bound clears every other upper bound, else 0."""
    from scipy.stats import norm

    q, m = n.shape
    rows = np.arange(q)
    z = float(norm.ppf(1.0 - config.delta / (2.0 * max(m - 1, 1))))
    pt = (s + 1.0) / (n + 2.0)
    half = z * np.sqrt(pt * (1.0 - pt) / (n + 2.0))
    results = []
    for lam in config.lambdas:
        u = mu - lam * mu_c - config.beta * sigma
        lead_idx = hard_labels(u, mu_c)
        others = u + half
        others[rows, lead_idx] = -np.inf
        ok = (u - half)[rows, lead_idx] + config.epsilon >= others.max(axis=1)
        results.append((ok.astype(float), lead_idx, others.argmax(axis=1)))
    return (*_worst_lambda(results, q), half)


def next_model(n, s, ss, c, gen_cost, config: AdaptiveConfig | None = None, *, seed: int = 0,
               capacity=None, prior=None, s_beta=None) -> int | None:
    """One query: the index of the model to sample next, or None when the label is settled (or
    nothing is left to sample). Arrays are (M,) running sums as in :func:`decide` (``prior``: (M, 2),
    e.g. fitted across the collection with :func:`fit_prior`; ``s_beta``: (M,))."""
    config = config or AdaptiveConfig()
    d = decide(n, s, ss, c, gen_cost, config, np.random.default_rng(seed),
               None if capacity is None else np.atleast_2d(capacity), prior=prior,
               s_beta=None if s_beta is None else np.atleast_2d(s_beta))
    return None if d.model[0] < 0 else int(d.model[0])


def next_rewrite(counts) -> int:
    """Which rewrite slot of a (query, model) pair gets the next decode: the one with the fewest
    observations so far (the first such slot), so repeats cover rewrites before decodes.
    ``counts``: (K,) observations per rewrite slot, in the query's rewrite order."""
    counts = np.asarray(counts)
    if counts.size == 0:
        raise ValueError("a pair needs at least one rewrite slot")
    return int(np.argmin(counts))
