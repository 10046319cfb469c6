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
- ``pob`` -- Bayesian probability of best. mu_q of each model has a Beta posterior
  ``Beta(a0 + s, b0 + n - s)``. For 0/1 scores this is the Beta-Bernoulli conjugate posterior.
  For scores strictly inside (0, 1) it is a *fractional-count* Beta update (each score counted as
  that fraction of a success): a heuristic, not Agrawal and Goyal's method, which draws
  ``r ~ Bernoulli(score)`` and updates the Beta with the binary ``r``; caproute does not implement
  that trick. sigma_q of each drawn p, when every score so far is 0 or 1, is the spread the DARS
  target computes from the pair's full grid of N observations with ddof = 1:
  ``sqrt(p (1 - p) N / (N - 1))``, N = ``n + capacity`` (no correction when the capacity is
  unlimited, N -> infinity); with other scores it is the ddof = 1 sample spread (a plug-in). The
  leader L is the label DARS would give now (plug-in U, caproute's tie rule);
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
The defaults of :class:`AdaptiveConfig` (rule, delta, epsilon, min_per_model, prior; 256 draws)
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


@dataclass(frozen=True)
class AdaptiveConfig:
    """Parameters of an allocation rule (see the module docstring).

    ``lambdas``: the cost weights the label must be settled for (one, or a range when the
    supervision will be reused at several lambdas).
    """

    rule: str = "pob"
    lambdas: tuple[float, ...] = (DEFAULT_LAMBDA,)
    beta: float = DEFAULT_BETA
    delta: float = 0.4
    epsilon: float = 0.0
    min_per_model: int = 1
    n_draws: int = 256
    prior: tuple[float, float] = (1.0, 1.0)
    cost_aware: bool = True

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"unknown allocation rule '{self.rule}' (choose from {', '.join(RULES)})")
        lams = tuple(float(x) for x in np.atleast_1d(self.lambdas))
        object.__setattr__(self, "lambdas", lams)
        checks = {"lambdas": len(lams) > 0 and all(np.isfinite(x) and x >= 0 for x in lams),
                  "beta": np.isfinite(self.beta) and self.beta >= 0,
                  "delta": 0 < self.delta < 1, "epsilon": np.isfinite(self.epsilon) and self.epsilon >= 0,
                  "min_per_model": self.min_per_model >= 1, "n_draws": self.n_draws >= 16,
                  "prior": len(self.prior) == 2 and min(self.prior) > 0}
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
           capacity=None) -> Decision:
    """The next model to sample for each of Q queries, from (Q, M) running sums.

    ``gen_cost``: (M,) or (Q, M) price of one generation. ``capacity``: (Q, M) how many more
    observations each pair can still get (None = unlimited); a model without capacity is never
    chosen, and a query whose candidates are all exhausted stops unsettled.
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

    rule = _pob if config.rule == "pob" else _lucb
    grid = n + cap  # the pair's full grid size N (inf when the capacity is unlimited)
    conf, leader, challenger, spread = rule(n, s, ss, mu, sigma, mu_c, config, rng, grid)
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


def _utility_draws(n, s, ss, mu_c, sigma, config: AdaptiveConfig, rng, lam: float, grid):
    a0, b0 = config.prior
    a = a0 + s
    b = b0 + np.maximum(n - s, 0.0)
    p = rng.beta(a[..., None], b[..., None], size=(*n.shape, config.n_draws))
    binary = np.isclose(ss, s)  # every score 0 or 1 (sum of squares == sum)
    bern = np.sqrt(p * (1.0 - p) * ddof1_factor(grid)[..., None])
    sig = np.where(binary[..., None], bern, sigma[..., None])
    return p - lam * mu_c[..., None] - config.beta * sig


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


def _pob(n, s, ss, mu, sigma, mu_c, config: AdaptiveConfig, rng, grid):
    """Probability that each lambda's plug-in leader is within epsilon of the best (Monte Carlo)."""
    q, m = n.shape
    rows = np.arange(q)
    results = []
    spread = np.zeros((q, m))
    for lam in config.lambdas:
        lead_idx = hard_labels(mu - lam * mu_c - config.beta * sigma, mu_c)
        u = _utility_draws(n, s, ss, mu_c, sigma, config, rng, lam, grid)    # (Q, M, D)
        lead = u[rows, lead_idx]                                              # (Q, D)
        is_lead = np.arange(m)[None, :, None] == lead_idx[:, None, None]
        best_other = np.where(is_lead, -np.inf, u).max(axis=1)
        conf = np.mean(lead + config.epsilon >= best_other - TIE_TOL, axis=1)
        p_beat = np.mean(u > lead[:, None, :] + config.epsilon, axis=2)     # (Q, M)
        p_beat[rows, lead_idx] = -1.0
        results.append((conf, lead_idx, p_beat.argmax(axis=1)))
        spread = np.maximum(spread, u.var(axis=2))
    return (*_worst_lambda(results, q), spread)


def _lucb(n, s, ss, mu, sigma, mu_c, config: AdaptiveConfig, rng, grid):
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
               capacity=None) -> int | None:
    """One query: the index of the model to sample next, or None when the label is settled (or
    nothing is left to sample). Arrays are (M,) running sums as in :func:`decide`."""
    config = config or AdaptiveConfig()
    d = decide(n, s, ss, c, gen_cost, config, np.random.default_rng(seed),
               None if capacity is None else np.atleast_2d(capacity))
    return None if d.model[0] < 0 else int(d.model[0])


def next_rewrite(counts) -> int:
    """Which rewrite slot of a (query, model) pair gets the next decode: the one with the fewest
    observations so far (the first such slot), so repeats cover rewrites before decodes.
    ``counts``: (K,) observations per rewrite slot, in the query's rewrite order."""
    counts = np.asarray(counts)
    if counts.size == 0:
        raise ValueError("a pair needs at least one rewrite slot")
    return int(np.argmin(counts))
