"""Duel experiments: every policy on the same query streams and seeds (issue 6 item 5).

Protocol (PROPOSED where the paper gives nothing, see docs/bandits.md):

1. The environment's queries are (optionally) subsampled to ``max_queries``, stratified by category.
2. An offline slice (``offline_fraction`` of each category, at least ``min_offline`` queries)
   gives the CCFT training queries, the category embeddings, the Perf/Cost tables and the DARS
   kNN reference's training set; the rest is the online pool.
3. For seed s the stream is T queries drawn i.i.d. from the online pool plus one uniform per round
   for the feedback (common random numbers); every policy of the grid plays that same stream.
4. A grid cell = (policy, embeddings, seed), run through :func:`caproute.core.runtime.map_cells`,
   returns the per-round average and weak regret (§B.1).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from caproute.bandits.defaults import DEFAULT_DUEL_LAMBDA, method_label
from caproute.bandits.defaults import DEFAULTS as FGTS_DEFAULTS
from caproute.bandits.embeddings import CCFTConfig, EmbeddingSet, build_embeddings, parse_embeddings
from caproute.bandits.environment import DuelEnvironment
from caproute.bandits.regret import average_regret, weak_regret
from caproute.errors import ConfigError

POLICY_NAMES = ("fgts-cdb", "uniform", "best-fixed", "eps-greedy", "maxinp", "dars-knn")
#: policies that ignore the embeddings: run once, reported with embeddings "none"
EMBEDDING_FREE = ("uniform", "best-fixed")
#: online learners with a point estimate (predict_scores): also scored as single-model routers
LEARNERS = ("fgts-cdb", "eps-greedy", "maxinp")
LATE_FRACTION = 0.2   # "late" per-round regret: mean over the last 20 % of rounds
BASE_SEED = 42   # seeds are 42 + run (algorithms.md §D)


@dataclass
class DuelSpec:
    rounds: int = 2000
    seeds: int = 5
    #: the seeds run are first_seed, ..., first_seed + seeds - 1 (stream and policy seeds; a study
    #: that tunes on some seeds and reports others keeps the two ranges apart)
    first_seed: int = 0
    policies: tuple[str, ...] = ("fgts-cdb", "uniform", "best-fixed", "eps-greedy", "maxinp", "dars-knn")
    embeddings: tuple[str, ...] = ("ccft-excel-perf-cost", "minilm")
    # the paper's FGTS.CDB: the one default set of caproute.bandits.defaults.DEFAULTS (issue 24.1), shared
    # with the FGTSCDB class and `duel init`; laplace (20-100x faster), other eta, mu = 0 are options
    sampler: str = FGTS_DEFAULTS.sampler
    feel_good: str = FGTS_DEFAULTS.feel_good
    eta: float = FGTS_DEFAULTS.eta
    mu: float | None = FGTS_DEFAULTS.mu
    offline_fraction: float = 0.2
    min_offline: int = 5
    max_queries: int | None = 1500
    split_seed: int = 0
    #: seed of the ``max_queries`` subsample; None = ``split_seed``. A study that varies the offline
    #: split (and the CCFT fit, seeded by split_seed) over a fixed query pool sets it, so the untuned
    #: encoder's embeddings of that pool are computed once
    subsample_seed: int | None = None
    #: True: seed s runs on its own offline split and CCFT fit (split_seed = s, ``split_seed`` is
    #: ignored), the protocol of docs/results-dueling.md; False: every seed shares ``split_seed``
    split_per_seed: bool = False
    knn_k: int = 16
    dars_lam: float | None = None        # None: the environment's lambda (same objective as r*)
    dars_beta: float = 0.2
    ccft: CCFTConfig = field(default_factory=CCFTConfig)
    #: compute the full-information logistic reference per embedding set (off for tuning sweeps)
    references: bool = True
    #: FGTS.CDB Laplace sampler: re-fit the MAP by batch Newton each time the history doubles
    laplace_refit: bool = False
    #: FGTS.CDB: start from the offline warm-start prior (caproute.bandits.prior.offline_prior) fitted
    #: on the offline split's scores instead of N(0, sigma0^2 I); PROPOSED option, off = the paper
    offline_prior: bool = False
    #: duels one offline query counts as, shared by its K(K-1)/2 soft comparisons (PROPOSED 1)
    prior_weight: float = 1.0

    def method(self) -> str:
        """What the fgts-cdb policy of this spec runs, named for it (:func:`caproute.bandits.defaults.method_label`)."""
        return method_label(eta=self.eta, mu=self.mu, horizon=self.rounds, sampler=self.sampler,
                            feel_good=self.feel_good, arm_residual=self.ccft.residual,
                            offline_prior=self.offline_prior, laplace_refit=self.laplace_refit)

    def settings(self) -> dict:
        """The settings every table prints: method, eta, mu (rule and value), sampler, gamma, prior."""
        mu = float(1.0 / np.sqrt(max(self.rounds, 1))) if self.mu is None else float(self.mu)
        return {"method": self.method(), "eta": float(self.eta), "mu": mu,
                "mu_rule": "1/sqrt(T)" if self.mu is None else "fixed", "sampler": self.sampler,
                "feel_good": self.feel_good, "arm_residual": float(self.ccft.residual),
                "offline_prior": bool(self.offline_prior), "laplace_refit": bool(self.laplace_refit)}

    def settings_line(self) -> str:
        """One line for the CLI and table.md: the fgts-cdb method, sampler, eta, mu and gamma."""
        st = self.settings()
        mu = (f"1/√T = {st['mu']:.4g}" if st["mu_rule"] == "1/sqrt(T)" else f"{st['mu']:.4g}")
        return (f"fgts-cdb = {st['method']}: sampler {st['sampler']}"
                + (f" ({st['feel_good']} feel-good)" if st["sampler"] == "laplace" and st["mu"] > 0 else "")
                + f", η {st['eta']:g}, μ {mu}, arm component γ {st['arm_residual']:g}"
                + (" (paper's CCFT arms)" if not st["arm_residual"] else "")
                + f", offline prior {'on' if st['offline_prior'] else 'off'}")

    def validate(self) -> None:
        unknown = [p for p in self.policies if p not in POLICY_NAMES]
        if unknown:
            raise ConfigError(f"unknown policies {unknown} (choose from {', '.join(POLICY_NAMES)})")
        if not self.policies:
            raise ConfigError("no policy given")
        for e in self.embeddings:
            parse_embeddings(e)
        if not self.embeddings:
            raise ConfigError("no embeddings given")
        from caproute.bandits.fgts import FEEL_GOOD_MODES, SAMPLERS

        if self.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}")
        if self.feel_good not in FEEL_GOOD_MODES:
            raise ConfigError(f"--feel-good must be one of {', '.join(FEEL_GOOD_MODES)}")
        if self.rounds < 1 or self.seeds < 1:
            raise ConfigError("--rounds and --seeds must be >= 1")
        for name in ("first_seed", "split_seed", "subsample_seed"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if not 0.0 < self.offline_fraction < 1.0:
            raise ConfigError("offline fraction must be in (0, 1)")
        if not (np.isfinite(self.prior_weight) and self.prior_weight > 0):
            raise ConfigError(f"--prior-weight must be a finite number > 0, got {self.prior_weight}")


# ----------------------------------------------------------------------------------------------
# splits and streams (pure)
def stratified_subsample(n: int, categories: np.ndarray | None, max_queries: int | None, seed: int) -> np.ndarray:
    """Row indices, at most ``max_queries``, keeping each category's share; sorted."""
    if max_queries is None or n <= max_queries:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if categories is None:
        return np.sort(rng.choice(n, size=max_queries, replace=False))
    cats = np.asarray(categories)
    out = []
    for c in sorted(set(cats.tolist()), key=str):
        rows = np.flatnonzero(cats == c)
        k = max(1, int(round(max_queries * len(rows) / n)))
        out.append(rng.choice(rows, size=min(k, len(rows)), replace=False))
    return np.sort(np.concatenate(out))


def split_offline(n: int, categories: np.ndarray | None, fraction: float, min_offline: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(offline rows, online rows): ``fraction`` of each category (at least ``min_offline``, and at
    least one query left online) goes offline."""
    rng = np.random.default_rng(seed)
    cats = np.zeros(n, dtype=int) if categories is None else np.asarray(categories)
    off = []
    for c in sorted(set(cats.tolist()), key=str):
        rows = np.flatnonzero(cats == c)
        k = min(max(int(round(fraction * len(rows))), min_offline), len(rows) - 1)
        if k > 0:
            off.append(rng.choice(rows, size=k, replace=False))
    offline = np.sort(np.concatenate(off)) if off else np.zeros(0, dtype=np.int64)
    online = np.setdiff1d(np.arange(n), offline)
    return offline, online


def pool_and_split(n: int, categories: np.ndarray | None, spec: DuelSpec
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept rows of the n queries, offline rows, online rows; the last two index the kept rows):
    the ``max_queries`` subsample seeded by ``subsample_seed`` (None = ``split_seed``), then the
    offline split seeded by ``split_seed``."""
    sub = spec.split_seed if spec.subsample_seed is None else spec.subsample_seed
    keep = stratified_subsample(n, categories, spec.max_queries, sub)
    cats = None if categories is None else np.asarray(categories)[keep]
    offline, online = split_offline(len(keep), cats, spec.offline_fraction, spec.min_offline, spec.split_seed)
    return keep, offline, online


def embedding_digest(X: np.ndarray, arms: np.ndarray) -> str:
    """16 hex digits identifying an embedding set (query embeddings and arms, rounded to 1e-6):
    equal for a reproduced fit, different for another split or CCFT fit."""
    import hashlib

    h = hashlib.sha256()
    for a in (X, arms):
        h.update(np.round(np.asarray(a, dtype=np.float64), 6).tobytes())
    return h.hexdigest()[:16]


def make_stream(n_online: int, rounds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded i.i.d. query stream (rounds,) over the online pool and one uniform per round."""
    rng = np.random.default_rng([BASE_SEED + seed, 0xD0E1])
    return rng.integers(0, n_online, size=rounds), rng.random(rounds)


def simulate(policy, X: np.ndarray, env: DuelEnvironment, stream: np.ndarray, u01: np.ndarray,
             greedy: bool = False) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Play the stream: select, feedback, update. Returns the played arms (first, second), each (T,).

    ``greedy``: also return the arm the policy's current point estimate (``predict_scores``: the
    MAP / posterior mean) would route the query to, before the round's update, (T,) — the policy
    used as a single-model router while it learns.
    """
    first = np.empty(len(stream), dtype=np.int64)
    second = np.empty(len(stream), dtype=np.int64)
    pick = np.empty(len(stream), dtype=np.int64) if greedy else None
    for t, q in enumerate(stream):
        x = X[q]
        if pick is not None:
            pick[t] = int(np.argmax(policy.predict_scores(x)))
        i, j = policy.select(x)
        y = env.feedback(int(q), i, j, float(u01[t]))
        policy.update(x, i, j, y)
        first[t], second[t] = i, j
    return (first, second) if pick is None else (first, second, pick)


def full_information_logistic(X: np.ndarray, arms: np.ndarray, scale: float, utilities: np.ndarray,
                              bt_scale: float, sigma0: float = 1.0, max_iter: int = 500) -> np.ndarray:
    """MAP theta of the Bradley-Terry likelihood with FULL information, (d,).

    For every query i of ``X`` and every pair of arms k != l the expected duel outcome
    p = sigmoid((u_ik - u_il) / bt_scale) (the environment's own link) is a soft label of
    y <theta, phi(x_i, a_k) - phi(x_i, a_l)>; theta minimises the summed logistic cross-entropy
    plus ||theta||^2 / (2 sigma0^2) (the FGTS.CDB prior, eta = 1), by L-BFGS
    (:func:`caproute.bandits.prior.soft_pairwise_fit`). The same model class and likelihood as the
    dueling learners, but fitted on every comparison of every query (the learners see one noisy
    duel per round): a reference, not a bound.
    """
    from caproute.bandits.prior import soft_labels, soft_pairwise_fit

    return soft_pairwise_fit(X, arms, scale, soft_labels(utilities, bt_scale), sigma0=sigma0, max_iter=max_iter)


def greedy_regret(theta: np.ndarray, X: np.ndarray, arms: np.ndarray, scale: float, utilities: np.ndarray
                  ) -> float:
    """Per-round regret of routing each query of X to argmax_a <theta, phi(x, a)> (a single model)."""
    pick = (scale * ((X * theta) @ arms.T)).argmax(axis=1)
    return float((utilities.max(axis=1) - utilities[np.arange(len(utilities)), pick]).mean())


# ----------------------------------------------------------------------------------------------
# grid
@dataclass(frozen=True)
class Cell:
    policy: str
    embeddings: str
    seed: int


def make_policy(cell: Cell, spec: DuelSpec, emb: EmbeddingSet, best_arm: int, models,
                prior: tuple[np.ndarray, np.ndarray] | None = None):
    from caproute.bandits.baselines import EpsGreedyPolicy, FixedPolicy, MaxInPPolicy, UniformPolicy
    from caproute.bandits.fgts import FGTSCDB

    seed = BASE_SEED + cell.seed
    common = {"feature_scale": emb.feature_scale, "seed": seed}
    if cell.policy == "fgts-cdb":
        mean, cov = prior if prior is not None else (None, None)
        return FGTSCDB(emb.arms, models, eta=spec.eta, mu=spec.mu, horizon=spec.rounds,
                       sampler=spec.sampler, feel_good=spec.feel_good, laplace_refit=spec.laplace_refit,
                       prior_mean=mean, prior_cov=cov, **common)
    if cell.policy == "uniform":
        return UniformPolicy(emb.arms, models, seed=seed)
    if cell.policy == "best-fixed":
        return FixedPolicy(emb.arms, models, arm=best_arm, seed=seed)
    if cell.policy == "eps-greedy":
        return EpsGreedyPolicy(emb.arms, models, **common)
    if cell.policy == "maxinp":
        return MaxInPPolicy(emb.arms, models, **common)
    raise ConfigError(f"policy '{cell.policy}' is not an online policy")


def run_cell(cell: Cell, shared: dict) -> dict:
    """One (policy, embeddings, seed): per-round average and weak regret (float32, (T,)).

    BLAS runs single-threaded inside a cell: the per-round matrices are small (d = 384), and a
    multi-threaded BLAS on a busy machine is up to 50x slower on them; parallelism is across cells.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _run_cell(cell, shared)


def _run_cell(cell: Cell, shared: dict) -> dict:
    spec: DuelSpec = shared["spec"]
    env: DuelEnvironment = shared["env"]
    emb: EmbeddingSet = shared["embeddings"][cell.embeddings]
    stream, u01 = make_stream(env.n_queries, spec.rounds, cell.seed)
    u = env.utilities[stream]
    t0 = time.perf_counter()
    out: dict = {}
    if cell.policy == "dars-knn":
        choice = shared["knn_choices"][cell.embeddings][stream]
        first = second = choice
    else:
        best_arm = int(np.argmax(u.sum(axis=0)))     # best fixed model in hindsight on this stream
        policy = make_policy(cell, spec, emb, best_arm, env.models, shared.get("priors", {}).get(cell.embeddings))
        learns = cell.policy in LEARNERS
        played = simulate(policy, emb.X, env, stream, u01, greedy=learns)
        first, second = played[0], played[1]
        if learns:
            # the policy as a single-model router: while learning (round t's estimate) and at the end
            rows = np.arange(len(stream))
            out["greedy"] = (u.max(axis=1) - u[rows, played[2]]).astype(np.float32)
            scores = np.stack([policy.predict_scores(x) for x in emb.X])
            pool = env.utilities
            out["final_router_regret"] = float(
                (pool.max(axis=1) - pool[np.arange(len(pool)), scores.argmax(axis=1)]).mean())
    seconds = time.perf_counter() - t0
    return {"policy": cell.policy, "embeddings": cell.embeddings, "seed": cell.seed,
            "average": average_regret(u, first, second).astype(np.float32),
            "weak": weak_regret(u, first, second).astype(np.float32), "seconds": seconds,
            "pairs": np.stack([first, second]).astype(np.int16), **out}


def make_cells(spec: DuelSpec, knn_ok: bool) -> list[Cell]:
    cells = []
    for seed in range(spec.first_seed, spec.first_seed + spec.seeds):
        for p in spec.policies:
            if p in EMBEDDING_FREE:
                cells.append(Cell(p, spec.embeddings[0], seed))
            elif p == "dars-knn":
                if not knn_ok:
                    continue
                seen = set()
                for e in spec.embeddings:      # one kNN per encoder (it reads query embeddings only)
                    enc = parse_embeddings(e)[0]
                    if enc not in seen:
                        seen.add(enc)
                        cells.append(Cell(p, e, seed))
            else:
                cells.extend(Cell(p, e, seed) for e in spec.embeddings)
    return cells


def dars_knn_choices(env: DuelEnvironment, offline: np.ndarray, online: np.ndarray, emb: EmbeddingSet,
                     spec: DuelSpec) -> np.ndarray:
    """The DARS-supervised kNN router (caproute.routers 'knn', k = 16) trained on the offline
    queries' DARS statistics (mu_q, mu_c, sigma_q); its choice per online query, routed by
    U = mu_q - lambda mu_c - beta sigma_q with lambda = the environment's cost weight (so it targets
    the same cost trade-off as r*) and beta = 0.2 (a reference line: no online learning)."""
    from caproute.routers.pipeline import make_router
    from caproute.supervise.supervision import Supervision

    sup = Supervision(env.query_ids[offline], env.models, env.perf[offline], env.cost[offline],
                      env.sigma_q[offline], kind="dars", beta=spec.dars_beta)
    lam = env.meta.get("lambda", DEFAULT_DUEL_LAMBDA) if spec.dars_lam is None else spec.dars_lam
    router = make_router("knn", lam=lam, params={"k": spec.knn_k}).fit(emb.X[offline], sup)
    return np.asarray(router.route(emb.X[online], lam=lam, beta=spec.dars_beta), dtype=np.int64)


@dataclass
class DuelResult:
    """Per-cell regret curves and the summary rows."""

    dataset: str
    spec: DuelSpec
    cells: list[dict]
    meta: dict

    def curves(self, kind: str = "average") -> dict[tuple[str, str], np.ndarray]:
        """{(policy, embeddings label): cumulative regret (seeds, T)}."""
        out: dict[tuple[str, str], list] = {}
        for c in self.cells:
            out.setdefault((c["policy"], self.label(c)), []).append(np.cumsum(c[kind].astype(np.float64)))
        return {k: np.stack(v) for k, v in out.items()}

    def label(self, cell: dict) -> str:
        if cell["policy"] in EMBEDDING_FREE:
            return "none"
        if cell["policy"] == "dars-knn":
            return parse_embeddings(cell["embeddings"])[0]
        return cell["embeddings"]

    def rows(self) -> list[dict]:
        """Summary per (policy, embeddings): cumulative average and weak regret at T, the per-round
        regret over the last ``LATE_FRACTION`` of rounds, and for learners the per-round regret of
        their point estimate used as a single-model router (``greedy_late``: while learning, last
        20 % of rounds; ``final_router``: the end-of-run estimate on the whole online pool)."""
        avg, weak = self.curves("average"), self.curves("weak")
        by_key: dict = {}
        for c in self.cells:
            by_key.setdefault((c["policy"], self.label(c)), []).append(c)
        rows = []
        for key, cum in avg.items():
            cells = by_key[key]
            final, wfinal = cum[:, -1], weak[key][:, -1]
            T = int(cum.shape[1])
            late = max(1, int(round(LATE_FRACTION * T)))
            late_pr = np.array([float(np.mean(c["average"][-late:])) for c in cells])
            row = {"dataset": self.dataset, "policy": key[0],
                   "method": self.spec.method() if key[0] == "fgts-cdb" else key[0], "embeddings": key[1],
                   "rounds": T, "seeds": int(cum.shape[0]),
                   "regret_mean": float(final.mean()), "regret_std": float(final.std(ddof=0)),
                   "weak_regret_mean": float(wfinal.mean()), "weak_regret_std": float(wfinal.std(ddof=0)),
                   "late_per_round_mean": float(late_pr.mean()), "late_per_round_std": float(late_pr.std(ddof=0)),
                   "late_rounds": late,
                   "seconds_per_seed": float(np.mean([c["seconds"] for c in cells]))}
            if all("greedy" in c for c in cells):
                g = np.array([float(np.mean(c["greedy"][-late:])) for c in cells])
                f = np.array([c["final_router_regret"] for c in cells])
                row.update(greedy_late_mean=float(g.mean()), greedy_late_std=float(g.std(ddof=0)),
                           final_router_mean=float(f.mean()), final_router_std=float(f.std(ddof=0)))
            rows.append(row)
        return sorted(rows, key=lambda r: r["regret_mean"])

    def regret_at(self, policy: str, embeddings: str, t: int, kind: str = "average") -> np.ndarray:
        """Cumulative regret after round t (1-based) per seed, (seeds,)."""
        return self.curves(kind)[(policy, embeddings)][:, t - 1]

    def to_meta(self) -> dict:
        spec = asdict(self.spec)
        return {"dataset": self.dataset, "spec": spec, "settings": self.spec.settings(), **self.meta}


def run_duel(env: DuelEnvironment, spec: DuelSpec, *, jobs: int = 1, engine: str = "local",
             ray_address: str | None = None, cache_dir=None, progress: bool = True,
             prepared: dict[str, EmbeddingSet] | None = None) -> DuelResult:
    """Prepare embeddings, run the grid, return per-cell curves (see module docstring).

    ``prepared``: embedding sets already built for every query of ``env`` (after subsampling),
    keyed by the names in ``spec.embeddings``; skips the encoders (for tests and notebooks).
    """
    from caproute.core.runtime import map_cells

    spec.validate()
    if spec.split_per_seed:
        return _run_split_per_seed(env, spec, jobs=jobs, engine=engine, ray_address=ray_address,
                                   cache_dir=cache_dir, progress=progress, prepared=prepared)
    keep, offline, online = pool_and_split(env.n_queries, env.categories, spec)
    env = env.subset(keep)
    spec.ccft.seed = spec.split_seed
    if prepared is None:
        embs = build_embeddings(env, offline, list(spec.embeddings), cfg=spec.ccft, cache_dir=cache_dir,
                                progress=progress)
    else:
        missing = [e for e in spec.embeddings if e not in prepared]
        if missing:
            raise ConfigError(f"prepared embeddings lack {missing}")
        embs = prepared
    knn_ok = "dars-knn" in spec.policies and env.labels is None
    knn = {}
    if knn_ok:
        for e in spec.embeddings:
            knn[e] = dars_knn_choices(env, offline, online, embs[e], spec)
    online_env = env.subset(online)
    for v in embs.values():
        if not v.summary:
            from caproute.bandits.arms import arm_summary

            v.summary = arm_summary(v.arms, env.models)
    online_embs = {k: EmbeddingSet(v.name, v.X[online], v.arms, v.feature_scale, v.encoder, v.weights,
                                   v.categories, v.summary) for k, v in embs.items()}
    priors = {}
    if spec.offline_prior and "fgts-cdb" in spec.policies:
        from caproute.bandits.prior import offline_prior

        for k, v in embs.items():
            priors[k] = offline_prior(v.X[offline], v.arms, v.feature_scale, env.utilities[offline], env.scale,
                                      eta=spec.eta, weight=spec.prior_weight)
    shared = {"spec": spec, "env": online_env, "embeddings": online_embs, "knn_choices": knn, "priors": priors}
    cells = make_cells(spec, knn_ok)
    results = map_cells(run_cell, cells, shared=shared, jobs=jobs, engine=engine, ray_address=ray_address,
                        progress="duel" if progress else None)
    u = online_env.utilities
    reference = {"uniform": float((u.max(1) - u.mean(1)).mean()),
                 "best_fixed": float((u.max(1) - u[:, u.mean(0).argmax()]).mean())}
    if online_env.categories is not None:
        cats = online_env.categories
        reference["best_per_category"] = float(sum(
            (u[cats == c].max(1) - u[cats == c][:, u[cats == c].mean(0).argmax()]).sum()
            for c in set(cats.tolist())) / len(cats))
    # full-information logistic fit per embedding set, played greedily (a reference, not a bound)
    if spec.references:
        reference["full_info_logistic"] = {
            k: greedy_regret(full_information_logistic(v.X, v.arms, v.feature_scale, u, online_env.scale),
                             v.X, v.arms, v.feature_scale, u) for k, v in online_embs.items()}
    meta = {"per_round_regret_reference": reference, "n_queries": int(env.n_queries), "n_offline": int(len(offline)), "n_online": int(len(online)),
            "split_seed": int(spec.split_seed), "offline_queries": [str(q) for q in env.query_ids[offline]],
            "embedding_digest": {k: embedding_digest(v.X, v.arms) for k, v in embs.items()},
            "models": list(env.models), "categories": embs[spec.embeddings[0]].categories,
            "feature_scale": {k: v.feature_scale for k, v in embs.items()},
            "arms": {k: v.summary for k, v in embs.items()},
            "env_meta": env.meta, "dars_knn": "ran" if knn_ok else
            ("skipped: pairwise data has no scored observations" if "dars-knn" in spec.policies else "not asked")}
    return DuelResult(env.name, spec, results, meta)


#: meta keys that differ between splits: kept per seed under ``meta["splits"]`` of a per-seed run
PER_SPLIT_META = ("split_seed", "n_offline", "n_online", "offline_queries", "embedding_digest", "feature_scale", "arms",
                  "categories", "per_round_regret_reference")


def _run_split_per_seed(env: DuelEnvironment, spec: DuelSpec, **kw) -> DuelResult:
    """``spec.split_per_seed``: one :func:`run_duel` per seed s with split_seed = s (its own offline
    split and CCFT fit), cells concatenated. ``meta`` keeps the first seed's values at the top level
    and every seed's split-dependent values in ``meta["splits"]``."""
    cells, splits, meta = [], [], {}
    for s in range(spec.first_seed, spec.first_seed + spec.seeds):
        one = replace(spec, seeds=1, first_seed=s, split_seed=s, split_per_seed=False, ccft=replace(spec.ccft))
        res = run_duel(env, one, **kw)
        cells.extend(res.cells)
        splits.append({"seed": s, **{k: res.meta[k] for k in PER_SPLIT_META}})
        meta = meta or res.meta
    return DuelResult(env.name, spec, cells, {**meta, "splits": splits})
