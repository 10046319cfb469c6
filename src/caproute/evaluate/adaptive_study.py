"""Offline replay of adaptive repeated sampling on observations already collected.

Every (query, model) pair of the training split holds a grid of observations (rewrites x
decodes). The replay pretends none has been paid for yet: it hands the allocation rule
(:mod:`caproute.supervise.adaptive`) the observations it asks for, one per query per round, in
each pair's *coverage order* (rewrites before decodes, the order a live collection would use,
shuffled per seed), until the budget is spent or every query is settled. The observations it
bought become DARS supervision; the study compares that supervision with the full grid's
(label agreement) and trains routers on it (test utility on the usual views).

A budget is a fraction of the full grid's generations (``unit="generations"``) or of its raw
cost (``unit="cost"``). When the budget runs short inside a round, the least certain queries
are served first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from caproute.errors import DataError
from caproute.supervise.adaptive import AdaptiveConfig, bernoulli_scores, decide, fit_prior
from caproute.supervise.labels import hard_labels
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA

UNITS = ("generations", "cost")


@dataclass
class ReplayData:
    """Training observations laid out for replay.

    ``order``: row positions of ``obs``, pair after pair, each pair in coverage order;
    ``start`` / ``size`` (Q, M): where each pair's rows begin in ``order`` and how many it has.
    """

    obs: pd.DataFrame
    query_ids: np.ndarray
    models: tuple[str, ...]
    order: np.ndarray
    start: np.ndarray
    size: np.ndarray
    score: np.ndarray
    cost_norm: np.ndarray
    cost_raw: np.ndarray
    model_price: np.ndarray

    @property
    def total_generations(self) -> int:
        return int(self.size.sum())

    @property
    def total_cost(self) -> float:
        return float(self.cost_raw.sum())


def replay_data(train_obs: pd.DataFrame, models: tuple[str, ...], cost_norm: np.ndarray,
                seed: int) -> ReplayData:
    """Lay out one dataset's training rows for :func:`replay`.

    Coverage order within a pair: decode round 0 of every rewrite (rewrites in a per-query
    random order shared by all models), then decode round 1, ... -- so the j-th sample of a pair
    lands on the rewrite with the fewest samples (:func:`caproute.supervise.adaptive.next_rewrite`).
    """
    obs = train_obs.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    qid = obs["query_id"].astype(str).to_numpy()
    query_ids, qcode = np.unique(qid, return_inverse=True)
    mcode = pd.Index(models).get_indexer(obs["model"].astype(str))
    if (mcode < 0).any():
        raise DataError("training rows hold a model outside the model list", source="observations",
                        field="model")
    nq, nm = len(query_ids), len(models)
    # rewrite rank: a random permutation of each query's rewrites (shared across models)
    variant = obs["prompt_variant_id"].to_numpy(np.int64)
    qv = pd.MultiIndex.from_arrays([qcode, variant]).factorize()[0]
    qv_key = rng.random(qv.max() + 1)
    rewrite_key = qv_key[qv]
    # decode rank: random within (pair, rewrite)
    pair = qcode * nm + mcode
    sub = pd.MultiIndex.from_arrays([pair, variant]).factorize()[0]
    dkey = rng.random(len(obs))
    by_sub = np.lexsort((dkey, sub))
    sizes = np.bincount(sub)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    decode_rank = np.empty(len(obs), np.int64)
    decode_rank[by_sub] = np.arange(len(obs)) - starts[sub[by_sub]]
    order = np.lexsort((rewrite_key, decode_rank, pair))
    size = np.bincount(pair, minlength=nq * nm).reshape(nq, nm)
    if (size == 0).any():
        qi, mi = np.argwhere(size == 0)[0]
        raise DataError(f"query '{query_ids[qi]}' has no observation of model '{models[mi]}'",
                        source="observations", field="model")
    start = np.concatenate([[0], np.cumsum(size.reshape(-1))[:-1]]).reshape(nq, nm)
    raw = obs["cost"].to_numpy(float)
    price = np.array([raw[mcode == j].mean() for j in range(nm)])
    return ReplayData(obs, query_ids, tuple(models), order, start, size,
                      obs["score"].to_numpy(float), np.asarray(cost_norm, float), raw, price)


@dataclass
class ReplayResult:
    """Counts bought per pair (Q, M) and what they cost."""

    n: np.ndarray
    generations: int
    cost: float
    settled: int
    rows: np.ndarray


def replay(data: ReplayData, config: AdaptiveConfig, budget_fraction: float, *,
           unit: str = "generations", seed: int = 0, refine: bool = True) -> ReplayResult:
    """Run one allocation rule on the recorded observations until the budget is spent.

    ``refine``: when every query has stopped (settled or out of grid) and budget is left, the
    settled queries with grid left go on -- one sample per round each, to the rule's top-two
    choice, least certain first when the round does not fit -- until the budget or the grid is
    spent; so a rule given budget B spends B, as uniform allocation does. Without it a rule stops
    where its stopping rule (every label settled at 1 - delta) says, and may leave budget unspent."""
    if unit not in UNITS:
        raise DataError(f"unknown budget unit '{unit}' (choose from {', '.join(UNITS)})",
                        source="arguments", field="budget_unit")
    if not 0.0 < budget_fraction <= 1.0:
        raise DataError(f"budget fraction must be in (0, 1], got {budget_fraction}", source="arguments",
                        field="budgets")
    rng = np.random.default_rng(seed)
    nq, nm = data.size.shape
    total = data.total_generations if unit == "generations" else data.total_cost
    budget = budget_fraction * total + 1e-9
    n = np.zeros((nq, nm))
    s, ss, c = np.zeros((nq, nm)), np.zeros((nq, nm)), np.zeros((nq, nm))
    # Agrawal-Goyal: one Bernoulli draw per recorded observation, fixed per replay seed (its own
    # stream, so the rule's draws are the same whatever the update)
    bern = config.rule == "pob" and config.beta_update == "bernoulli"
    r_beta = bernoulli_scores(data.score, np.random.default_rng([seed, 1]).random(data.score.size)) \
        if bern else data.score
    sb = np.zeros((nq, nm))
    spent = 0.0
    active = np.ones(nq, bool)
    settled = np.zeros(nq, bool)
    refining = last = False
    while spent < budget and not last:
        if not active.any():
            # every query stopped: go on with the settled ones that have grid left (refine)
            more = settled & (n < data.size).any(axis=1)
            if not refine or not more.any():
                break
            active, refining = more, True
        idx = np.flatnonzero(active)
        # the empirical-Bayes prior is refitted every round from every query bought so far
        prior = fit_prior(n, sb, config) if config.rule == "pob" else None
        d = decide(n[idx], s[idx], ss[idx], c[idx], data.model_price, config, rng,
                   capacity=data.size[idx] - n[idx], prior=prior, s_beta=sb[idx])
        if not refining:
            settled[idx] = d.settled
        choice = d.proposal if refining else d.model
        stop = choice < 0
        active[idx[stop]] = False
        go, model, conf = idx[~stop], choice[~stop], d.confidence[~stop]
        if go.size == 0:
            continue
        rows = data.order[data.start[go, model] + n[go, model].astype(np.int64)]
        price = np.ones(go.size) if unit == "generations" else data.cost_raw[rows]
        if spent + price.sum() > budget:
            # not enough for everyone this round: least certain first (random among equals)
            first = np.lexsort((rng.random(go.size), conf))
            fits = np.cumsum(price[first]) <= budget - spent
            keep = first[fits]
            go, model, rows, price = go[keep], model[keep], rows[keep], price[keep]
            last = True  # the budget is spent after this round
            if go.size == 0:
                break
        n[go, model] += 1
        sc = data.score[rows]
        s[go, model] += sc
        ss[go, model] += sc * sc
        sb[go, model] += r_beta[rows]
        c[go, model] += data.cost_norm[rows]
        spent += float(price.sum())
    taken = bought_rows(data, n)
    return ReplayResult(n.astype(np.int64), int(n.sum()), float(data.cost_raw[taken].sum()),
                        int(settled.sum()), taken)


def bought_rows(data: ReplayData, n: np.ndarray) -> np.ndarray:
    """Row positions (into ``data.obs``) of the first ``n[q, m]`` observations of every pair."""
    n = np.asarray(n, np.int64).reshape(-1)
    start = data.start.reshape(-1)
    offsets = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    return np.sort(data.order[np.repeat(start, n) + offsets])


# --------------------------------------------------------------------------------------------
# the study


@dataclass
class StudyConfig:
    budgets: tuple[float, ...] = (0.2, 0.3, 0.4, 0.6, 1.0)
    policies: tuple[str, ...] = ("uniform", "pob", "lucb")
    routers: tuple[str, ...] = ("knn",)
    seeds: int = 3
    seed: int = 42
    lam: float = DEFAULT_LAMBDA
    beta: float = DEFAULT_BETA
    unit: str = "generations"
    features: str = "tfidf"
    adaptive: AdaptiveConfig | None = None


def label_agreement(labels: np.ndarray, full_u: np.ndarray, full_labels: np.ndarray,
                    tol: float = 1e-9) -> tuple[float, float]:
    """(tie-aware, strict) share of queries whose label matches the full grid's.

    Tie-aware: the label is one of the models with the full grid's best utility (within ``tol``);
    when two models tie exactly on the full grid, the hard label's tie rule (cheapest, then model
    order) is a convention, and picking the other one loses nothing. Strict: the same index.
    """
    labels = np.asarray(labels)
    rows = np.arange(labels.size)
    tie_aware = float(np.mean(full_u[rows, labels] >= full_u.max(axis=1) - tol))
    return tie_aware, float(np.mean(labels == full_labels))


def _labels(sup, lam: float, beta: float) -> np.ndarray:
    return hard_labels(sup.utility(lam, beta), sup.mu_c)


def _router_utilities(exp, X_train, X_test, sup, router: str, lam: float, seed: int) -> dict[str, float]:
    from caproute.evaluate import metrics as M
    from caproute.routers.pipeline import make_router

    r = make_router(router, lam=lam, seed=seed)
    idx = pd.Index(exp.train_query_ids).get_indexer(sup.query_ids.astype(str))
    r.fit(X_train[idx], sup)
    beta = float(sup.beta or 0.0)
    choice = r.choose(X_test, r.predict_stats(X_test, lam=lam), lam, beta)
    out = {}
    for view in ("rewrite", "decode"):
        v = exp.views.get(view)
        out[f"utility_{view}"] = float("nan") if v is None else M.view_utility(v.q, v.c, choice[v.rows], lam)
    return out


def run_study(exp, config: StudyConfig, *, progress=None) -> dict:
    """Replay every policy at every budget for ``config.seeds`` seeds; returns the JSON payload
    ``{"rows": [...], "summary": [...], "references": [...], "config": {...}}``."""
    from caproute.evaluate.bench import featurize
    from caproute.evaluate.grid import _single_threaded
    from caproute.supervise.ablations import build_supervision

    base = config.adaptive or AdaptiveConfig(lambdas=(config.lam,))
    lam, beta = config.lam, config.beta
    X_train, X_test, _ = featurize(exp, config.features)
    train = exp.train_obs
    cost_norm = exp.normalizer.transform(train)
    full = build_supervision(train, variant="dars", beta=beta, normalizer=exp.normalizer, models=exp.models)
    full_labels = _labels(full, lam, beta)
    full_u = full.utility(lam, beta)
    rows: list[dict] = []
    refs: list[dict] = []
    steps = config.seeds * (len(config.policies) * len(config.budgets) + 2)
    done = 0
    with _single_threaded():
        for k in range(config.seeds):
            seed = config.seed + k
            data = replay_data(train, exp.models, cost_norm, seed)
            per_grid = data.total_generations / data.size.size
            for router in config.routers:
                refs.append({"policy": "full_dars", "seed": seed, "budget_fraction": 1.0,
                             "generations": data.total_generations, "cost": data.total_cost,
                             "label_agreement": 1.0, "router": router,
                             **_router_utilities(exp, X_train, X_test, full, router, lam, seed)})
            done += 1
            single = build_supervision(train, variant="single", seed=seed, normalizer=exp.normalizer,
                                       models=exp.models)
            single_dars_view = build_supervision(
                train.iloc[bought_rows(data, np.ones_like(data.size))], variant="dars", beta=beta,
                normalizer=exp.normalizer, models=exp.models)
            for router in config.routers:
                refs.append({"policy": "single_shot", "seed": seed, "budget_fraction": 1.0 / per_grid,
                             "generations": int(data.size.size), "cost": float("nan"),
                             "label_agreement": label_agreement(_labels(single_dars_view, lam, beta),
                                                                full_u, full_labels)[0],
                             "router": router,
                             **_router_utilities(exp, X_train, X_test, single, router, lam, seed)})
            done += 1
            if progress:
                progress(done, steps)
            for policy in config.policies:
                cfg = replace(base, rule=policy, beta=beta)
                for b in config.budgets:
                    res = replay(data, cfg, b, unit=config.unit, seed=seed)
                    sub = train.iloc[res.rows]
                    sup = build_supervision(sub, variant="dars", beta=beta, normalizer=exp.normalizer,
                                            models=exp.models)
                    agree, strict = label_agreement(_labels(sup, lam, beta), full_u, full_labels)
                    for router in config.routers:
                        rows.append({"policy": policy, "seed": seed, "budget_fraction": float(b),
                                     "generations": res.generations, "cost": res.cost,
                                     "label_agreement": agree, "label_agreement_strict": strict,
                                     "router": router,
                                     "settled_queries": res.settled,
                                     "generation_fraction": res.generations / data.total_generations,
                                     **_router_utilities(exp, X_train, X_test, sup, router, lam, seed)})
                    done += 1
                    if progress:
                        progress(done, steps)
    return {"rows": rows, "summary": summarize(rows), "references": summarize(refs),
            "config": {"budgets": list(config.budgets), "policies": list(config.policies),
                       "routers": list(config.routers), "seeds": config.seeds, "seed": config.seed,
                       "lambda": lam, "beta": beta, "unit": config.unit, "features": config.features,
                       "adaptive": {k: (list(v) if isinstance(v, tuple) else v)
                                    for k, v in base.__dict__.items() if k != "rule"},
                       "dataset": exp.dataset, "models": list(exp.models),
                       "n_train_queries": int(len(exp.train_query_ids)),
                       "full_grid_generations": int(len(train))}}


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds per (policy, budget, router)."""
    if not rows:
        return []
    df = pd.DataFrame(rows)
    keys = ["policy", "budget_fraction", "router"]
    values = [c for c in ("generations", "cost", "label_agreement", "label_agreement_strict", "utility_rewrite", "utility_decode",
                          "settled_queries", "generation_fraction") if c in df]
    out = []
    for key, g in df.groupby(keys, sort=True):
        row = dict(zip(keys, key, strict=True))
        for v in values:
            x = g[v].to_numpy(float)
            row[v] = float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
            row[f"{v}_std"] = float(np.nanstd(x, ddof=1)) if np.isfinite(x).sum() > 1 else 0.0
        row["n_seeds"] = int(len(g))
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------
# held-out tuning of the allocation rule


def agreement_rows(exp, configs: list[AdaptiveConfig], budget: float, seeds: list[int], *,
                   unit: str = "generations", refine: bool = True, progress=None) -> list[dict]:
    """Label agreement (tie-aware and strict) with the full grid's DARS label for every
    configuration and replay seed at one budget (``refine`` as in :func:`replay`); no router is
    trained. One row per (config, seed): ``{**config_key(cfg), seed,
    budget_fraction, refine, label_agreement, label_agreement_strict, generation_fraction,
    settled_queries}``."""
    from caproute.supervise.ablations import build_supervision

    train = exp.train_obs
    cost_norm = exp.normalizer.transform(train)
    out: list[dict] = []
    for seed in seeds:
        data = replay_data(train, exp.models, cost_norm, seed)
        for i, cfg in enumerate(configs):
            lam, beta = cfg.lambdas[0], cfg.beta
            if i == 0 or (lam, beta) != (configs[i - 1].lambdas[0], configs[i - 1].beta):
                full = build_supervision(train, variant="dars", beta=beta, normalizer=exp.normalizer,
                                         models=exp.models)
                full_u, full_labels = full.utility(lam, beta), _labels(full, lam, beta)
            res = replay(data, cfg, budget, unit=unit, seed=seed, refine=refine)
            sup = build_supervision(train.iloc[res.rows], variant="dars", beta=beta,
                                    normalizer=exp.normalizer, models=exp.models)
            agree, strict = label_agreement(_labels(sup, lam, beta), full_u, full_labels)
            out.append({**config_key(cfg), "seed": int(seed), "budget_fraction": float(budget), "refine": refine,
                        "label_agreement": agree, "label_agreement_strict": strict,
                        "generation_fraction": res.generations / data.total_generations,
                        "settled_queries": res.settled})
            if progress:
                progress(len(out), len(seeds) * len(configs))
    return out


def config_key(cfg: AdaptiveConfig) -> dict:
    """The tuned fields of a configuration, JSON-ready."""
    return {"rule": cfg.rule, "delta": cfg.delta, "epsilon": cfg.epsilon,
            "min_per_model": cfg.min_per_model, "prior": [float(x) for x in cfg.prior],
            "predictive": cfg.predictive, "prior_fit": cfg.prior_fit, "beta_update": cfg.beta_update}


#: the fields of :func:`config_key`, in order
CONFIG_FIELDS = ("rule", "delta", "epsilon", "min_per_model", "prior", "predictive", "prior_fit", "beta_update")


def rank_configs(rows: list[dict], *, key: str = "label_agreement") -> list[dict]:
    """Mean ``key`` per configuration, first over seeds within a data set, then over data sets
    (each set weighs the same); best first (ties: the earlier configuration in ``rows``).
    ``rows`` need a ``data`` field naming their set. Returns ``{**config, key, per_set}``."""
    if not rows:
        return []
    df = pd.DataFrame(rows)
    df["_cfg"] = [repr(tuple(tuple(r[k]) if k == "prior" else r[k] for k in CONFIG_FIELDS)) for r in rows]
    first = {c: i for i, c in reversed(list(enumerate(df["_cfg"])))}
    per_set = df.groupby(["_cfg", "data"], sort=False)[key].mean()
    out = []
    for cfg, g in per_set.groupby(level=0, sort=False):
        row = df[df["_cfg"] == cfg].iloc[0]
        sets = {d: float(v) for (_, d), v in g.items()}
        out.append({"rule": row["rule"], "delta": float(row["delta"]), "epsilon": float(row["epsilon"]),
                    "min_per_model": int(row["min_per_model"]), "prior": list(row["prior"]),
                    **{k: row[k] for k in CONFIG_FIELDS[5:]},
                    key: float(np.mean(list(sets.values()))), "per_set": sets, "_order": first[cfg]})
    out.sort(key=lambda r: (-r[key], r["_order"]))
    for r in out:
        del r["_order"]
    return out
