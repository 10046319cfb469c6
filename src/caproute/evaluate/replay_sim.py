"""``caproute replay simulate``: off-policy replay checked against the truth (issue 22.4).

The full observation grid of a DARS-format dataset is the environment:

- Queries are split in two (the data's own train/test split, or a seeded ``test_fraction`` of
  each dataset's queries). Candidate routers and the logging router are trained on the *train*
  queries' full grid (:func:`caproute.routers.pipeline.train_pipeline`); the *test* queries are
  the production traffic, drawn uniformly with replacement.
- Each request is routed by the logging router with epsilon-greedy exploration (propensities
  (1 - eps) + eps/m for its choice, eps/m for the others) and sees ONE observation of the chosen
  model, drawn uniformly from that pair's observations: reward u = q - lambda * c_norm
  (:func:`caproute.supervise.utility.observation_utility`, lambda = DEFAULT_LAMBDA).
- A candidate's true value is its expected reward per request on the grid:
  V(pi) = mean over traffic queries of sum_a pi(a | x) * mean_o u(x, a, o).
- Each seed's log gives IPS / SNIPS / DR estimates (:mod:`caproute.evaluate.offpolicy`) with
  bootstrap intervals; over seeds they give coverage, bias and mean absolute error.
- Routers retrained from the log alone (partial feedback: one reward of one model per request;
  :data:`RETRAIN_LEARNER`: ``knn`` = :class:`~caproute.evaluate.outcome_models.LocalKNN` with
  importance weights 1 / propensity, ``knn-imputed`` = caproute's ``knn`` family trained by
  ``train_pipeline`` on the grid LocalKNN imputes for the logged queries, ``knn-partial`` = the
  same family on the log's partial grid (unweighted), ``ridge`` = ``SharedRidge``) are scored on the
  traffic queries by query cross-fitting (the router that scores a query never saw a request for
  it; its TF-IDF encoder is fitted on its own log rows only), next to the same family trained on
  the train queries' full grid.
- DR intervals are influence-function normal intervals (:func:`caproute.evaluate.offpolicy.dr_estimate`);
  IPS / SNIPS intervals are percentile bootstrap intervals.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from caproute.errors import ConfigError, DataError
from caproute.evaluate import offpolicy as ope
from caproute.evaluate.outcome_models import make_outcome_model, route_by_outcome
from caproute.supervise.utility import DEFAULT_LAMBDA, observation_utility

DEFAULT_CANDIDATES = ("knn", "embedllm", "mirt", "best_fixed")
RETRAIN_FAMILIES = ("knn", "knn-imputed", "knn-partial", "ridge")
#: retrained family -> the router family it is compared with on the full grid ("ridge" has no
#: router family: its full-grid version is the same SharedRidge fitted on the grid means)
FULL_GRID_FAMILY = {"knn": "knn", "knn-imputed": "knn", "knn-partial": "knn", "ridge": "ridge"}
#: how each family is retrained from the log: an outcome model of :mod:`caproute.evaluate.outcome_models`
#: (routed pessimistically; for ``knn-imputed`` its pessimistic values on the logged queries are the
#: grid that caproute's ``knn`` family is trained on), or ``None``: caproute's router family itself,
#: trained by :func:`caproute.routers.pipeline.train_pipeline` on the log's partial grid
RETRAIN_LEARNER = {"knn": "local-knn", "knn-imputed": "local-knn", "knn-partial": None, "ridge": "ridge"}


# --------------------------------------------------------------------------------------------
# environment

@dataclass
class GridEnvironment:
    """Traffic queries with every observation of every model, plus the training grid.

    ``u_mean`` (n_q, m): mean observation utility per (traffic query, model), the truth;
    ``u_values`` holds every observation's utility, pair (i, a) at ``u_start[i, a]`` +
    0..``u_count[i, a]`` - 1.
    """

    name: str
    models: tuple[str, ...]
    lam: float
    train_obs: pd.DataFrame
    query_ids: np.ndarray
    texts: list[str]
    u_mean: np.ndarray
    u_values: np.ndarray
    u_start: np.ndarray
    u_count: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    def sample(self, query, model, rng: np.random.Generator) -> np.ndarray:
        """One observation's utility per request (query index, model index), uniform within its pair."""
        query, model = np.asarray(query, np.intp), np.asarray(model, np.intp)
        count = self.u_count[query, model]
        return self.u_values[self.u_start[query, model] + np.floor(rng.random(query.size) * count).astype(np.intp)]

    def value(self, pi) -> float:
        """True value of a policy pi (n_q, m) on the traffic queries."""
        return float(np.mean(np.sum(np.asarray(pi, np.float64) * self.u_mean, axis=1)))


def split_queries(obs: pd.DataFrame, test_fraction: float, seed: int) -> pd.DataFrame:
    """A seeded query split: per dataset, ``round(test_fraction * n)`` queries become ``test``, the
    rest ``train``; every observation of a query follows it (an existing split is replaced)."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must be in (0, 1), got {test_fraction}", source="arguments",
                        field="test_fraction")
    rng = np.random.default_rng(seed)
    q = obs[["dataset", "query_id"]].drop_duplicates().sort_values(["dataset", "query_id"]).reset_index(drop=True)
    test = np.zeros(len(q), dtype=bool)
    for _, idx in q.groupby("dataset", sort=True).indices.items():
        test[idx[rng.permutation(idx.size)[:int(round(test_fraction * idx.size))]]] = True
    keys = pd.MultiIndex.from_frame(q[test][["dataset", "query_id"]].astype(str))
    row_keys = pd.MultiIndex.from_frame(obs[["dataset", "query_id"]].astype(str))
    return obs.assign(split=np.where(row_keys.isin(keys), "test", "train"))


def _complete(obs: pd.DataFrame, models: tuple[str, ...]) -> pd.DataFrame:
    n = obs.groupby("query_id")["model"].nunique()
    return obs[obs["query_id"].isin(n.index[n == len(models)])]


def build_environment(obs: pd.DataFrame, datasets: list[str], *, test_fraction: float | None = None,
                      seed: int = 42, lam: float = DEFAULT_LAMBDA) -> GridEnvironment:
    """The environment of :mod:`this module <caproute.evaluate.replay_sim>` from observations of
    ``datasets`` (several are pooled with :func:`caproute.evaluate.protocol.pool_datasets`).
    ``test_fraction``: re-split queries (seeded); None uses the data's own split."""
    from caproute.evaluate.protocol import pool_datasets
    from caproute.features.text import query_texts
    from caproute.supervise.normalize import CostNormalizer

    obs = obs[obs["dataset"].astype(str).isin(datasets)].assign(query_id=lambda d: d["query_id"].astype(str))
    if test_fraction is not None:
        obs = split_queries(obs, test_fraction, seed)
    if len(datasets) > 1:
        obs, normalizer = pool_datasets(obs, datasets)
    else:
        train_rows = obs[obs["split"] == "train"]
        if train_rows.empty:
            raise DataError(f"dataset '{datasets[0]}' has no training rows; pass --test-fraction F",
                            source="observations", field="split")
        normalizer = CostNormalizer().fit(train_rows)
    name = str(obs["dataset"].iloc[0])
    models = tuple(sorted(obs["model"].astype(str).unique()))
    train = _complete(obs[obs["split"] == "train"], models).reset_index(drop=True)
    test = _complete(obs[obs["split"] == "test"], models).reset_index(drop=True)
    if train.empty or test.empty:
        raise DataError(f"'{name}' needs train and test queries with observations of every model "
                        f"{list(models)}; pass --test-fraction F to re-split", source="observations", field="split")
    u = observation_utility(test["score"].to_numpy(float), normalizer.transform(test), lam)
    qid = np.asarray(sorted(test["query_id"].unique()))
    qi = pd.Index(qid).get_indexer(test["query_id"])
    mi = pd.Index(models).get_indexer(test["model"].astype(str))
    order = np.lexsort((mi, qi))
    pair = (qi * len(models) + mi)[order]
    count = np.bincount(pair, minlength=qid.size * len(models)).reshape(qid.size, len(models))
    start = (np.cumsum(count.ravel()) - count.ravel()).reshape(count.shape)
    values = u[order]
    mean = np.bincount(pair, weights=values, minlength=count.size).reshape(count.shape) / count
    _, texts = query_texts(test, qid)
    meta = {"datasets": list(datasets), "split": "data" if test_fraction is None else
            {"test_fraction": float(test_fraction), "seed": int(seed)},
            "n_train_queries": int(train["query_id"].nunique()), "n_traffic_queries": int(qid.size),
            "observations_per_pair": float(count.mean()), "lambda": float(lam)}
    return GridEnvironment(name=name, models=models, lam=float(lam), train_obs=train, query_ids=qid,
                           texts=list(texts), u_mean=mean, u_values=values, u_start=start, u_count=count,
                           meta=meta)


def load_environment(*, store: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                     dataset: str | None = None, test_fraction: float | None = None, seed: int = 42,
                     lam: float = DEFAULT_LAMBDA) -> GridEnvironment:
    """Read observations (``--store`` or ``--data``) and build the environment; ``dataset``: a
    name, a comma-separated list or ``all``."""
    from caproute.data.source import read_source
    from caproute.data.store import ObservationStore
    from caproute.evaluate.protocol import _wanted

    if (store is None) == (data is None):
        raise DataError("pass exactly one of --store or --data", source="arguments")
    if store is not None:
        with ObservationStore(store, read_only=True) as s:
            wanted = _wanted(s.datasets(), dataset, str(store))
            obs = pd.concat([s.read(dataset=d) for d in wanted], ignore_index=True)
    else:
        obs = read_source(data)
        wanted = _wanted(sorted(obs["dataset"].astype(str).unique()), dataset, str(data))
    env = build_environment(obs, wanted, test_fraction=test_fraction, seed=seed, lam=lam)
    env.meta["source"] = str(store if store is not None else data)
    return env


# --------------------------------------------------------------------------------------------
# simulation

@dataclass
class SimulationConfig:
    """What ``caproute replay simulate`` runs (see the module docstring)."""

    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    logger: str = "avengerspro"
    explore: float = 0.1
    requests: int = 3000
    seeds: int = 20
    seed: int = 42
    outcome: tuple[str, ...] = ("mixed", "ridge")
    retrain: tuple[str, ...] = RETRAIN_FAMILIES
    folds: int = ope.DEFAULT_FOLDS
    n_boot: int = ope.DEFAULT_BOOTSTRAP
    alpha: float = ope.ALPHA
    features: str = "tfidf"
    kappa: float = 1.0

    def validate(self) -> None:
        if not 0.0 <= self.explore <= 1.0:
            raise ConfigError(f"--explore must lie in [0, 1], got {self.explore}")
        if self.requests < 10 or self.seeds < 1 or self.folds < 2 or self.n_boot < 10:
            raise ConfigError("need --requests >= 10, --seeds >= 1, --folds >= 2, --bootstrap >= 10")
        if not self.candidates:
            raise ConfigError("name at least one candidate router family")
        bad = [r for r in self.retrain if r not in RETRAIN_FAMILIES]
        if bad:
            raise ConfigError(f"cannot retrain {bad} from a log (choose from {', '.join(RETRAIN_FAMILIES)})")
        from caproute.evaluate.outcome_models import OUTCOME_MODELS

        bad = [o for o in self.outcome if o not in OUTCOME_MODELS]
        if bad:
            raise ConfigError(f"unknown outcome model {bad} (choose from {', '.join(OUTCOME_MODELS)})")

    def dr_label(self, outcome: str) -> str:
        return "dr" if outcome == self.outcome[0] else f"dr-{outcome}"


@dataclass
class SimulationResult:
    """Per-seed rows, their summary over seeds, and the retrained routers."""

    rows: pd.DataFrame
    summary: pd.DataFrame
    retrained: pd.DataFrame
    retrained_summary: pd.DataFrame
    meta: dict

    def to_dict(self) -> dict:
        def recs(df):
            return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
                    for r in df.to_dict("records")]

        return {"meta": self.meta, "summary": recs(self.summary), "retrained_summary": recs(self.retrained_summary),
                "rows": recs(self.rows), "retrained": recs(self.retrained)}


def _traffic_features(encoder, texts):
    return encoder.transform_sparse(texts) if hasattr(encoder, "transform_sparse") else encoder.transform(texts)


def _choices(pipe, texts, models) -> np.ndarray:
    names = [d.model for d in pipe.decide(texts)]
    return pd.Index(models).get_indexer(names).astype(np.intp)


def _full_grid_ridge(env: GridEnvironment, features: str) -> np.ndarray:
    """Traffic choices of the SharedRidge outcome model fitted on the train grid's means."""
    from caproute.features import get_encoder
    from caproute.features.text import query_texts
    from caproute.supervise.normalize import CostNormalizer

    tr = env.train_obs
    qid, texts = query_texts(tr, np.asarray(sorted(tr["query_id"].unique())))
    u = observation_utility(tr["score"].to_numpy(float), CostNormalizer().fit(tr).transform(tr), env.lam)
    g = tr.assign(_u=u).groupby(["query_id", "model"])["_u"].mean().unstack("model")
    g = g.reindex(index=qid, columns=list(env.models))
    enc = get_encoder(features).fit(texts)
    X = _traffic_features(enc, texts)
    n, m = g.shape
    rows = np.repeat(np.arange(n), m)
    model = make_outcome_model("ridge").fit(X[rows], np.tile(np.arange(m), n), g.to_numpy(float).ravel(), m)
    return route_by_outcome(model.predict(_traffic_features(enc, env.texts)))


def prepare(env: GridEnvironment, config: SimulationConfig, *, progress: str | None = None) -> dict:
    """Train the logging router and the candidates on the train grid once; their choices and
    features on the traffic queries (what every seed shares)."""
    from caproute.core.runtime import Progress
    from caproute.routers.pipeline import train_pipeline

    families = list(dict.fromkeys([config.logger, *config.candidates,
                                   *[FULL_GRID_FAMILY[r] for r in config.retrain if FULL_GRID_FAMILY[r] != "ridge"]]))
    choice, feats, space = {}, {}, {}
    with Progress(progress, len(families)) as advance:
        for fam in families:
            pipe = train_pipeline(env.train_obs, router=fam, features=config.features, lam=env.lam, seed=config.seed)
            choice[fam] = _choices(pipe, env.texts, env.models)
            key = pipe.encoder.encoder_id
            if key not in feats:
                feats[key] = _traffic_features(pipe.encoder, env.texts)
            space[fam] = key
            advance()
    if "ridge" in config.retrain:
        choice["ridge (full grid)"] = _full_grid_ridge(env, config.features)
    return {"choice": choice, "features": feats, "space": space}


def _seed_cell(cell: tuple[int, SimulationConfig], shared: dict) -> dict:
    s, config = cell
    env: GridEnvironment = shared["env"]
    prep = shared["prep"]
    m, nq = len(env.models), env.n_queries
    rng = np.random.default_rng([config.seed, s])
    q = rng.integers(nq, size=config.requests)
    logger = prep["choice"][config.logger]
    explore = rng.random(q.size) < config.explore
    chosen = np.where(explore, rng.integers(m, size=q.size), logger[q])
    pi0 = ope.epsilon_greedy(logger, m, config.explore)
    propensity = pi0[q, chosen]
    reward = env.sample(q, chosen, rng)
    counts = ope.bootstrap_counts(q.size, config.n_boot, seed=int(rng.integers(2**31)))
    support = pi0[q] > 0
    qhat = {}
    rows = []
    obs = ope.observed_mean(reward, counts=counts, alpha=config.alpha)
    rows.append({"seed": s, "candidate": f"logger ({config.logger})", "estimator": "observed",
                 **_est(obs), "truth": env.value(pi0), "agreement": 1.0})
    for cand in config.candidates:
        choice = prep["choice"][cand]
        pi = ope.one_hot(choice[q], m)
        truth = env.value(ope.one_hot(choice, m))
        agree = float(np.mean(choice == logger))
        if ope.unsupported_rows(pi, support).any():
            rows.append({"seed": s, "candidate": cand, "estimator": "refused", "value": float("nan"),
                         "ci_low": float("nan"), "ci_high": float("nan"), "ess": 0.0, "n": int(q.size),
                         "truth": truth, "agreement": agree})
            continue
        X = prep["features"][prep["space"][cand]][q]
        ests = ope.evaluate_policy(pi, chosen, propensity, reward, counts=counts, alpha=config.alpha)
        for o in config.outcome:
            key = (prep["space"][cand], o)
            if key not in qhat:
                qhat[key] = ope.crossfit_outcome(lambda o=o: make_outcome_model(o), X, chosen, reward, m,
                                                 folds=config.folds, seed=config.seed + s)
            ests.append(ope.dr_estimate(pi, chosen, propensity, reward, qhat[key], alpha=config.alpha,
                                        ess=ests[0].ess, label=config.dr_label(o)))
        rows += [{"seed": s, "candidate": cand, **_est(e), "truth": truth, "agreement": agree} for e in ests]
    retrained = [{"seed": s, "family": fam,
                  "utility": _retrained_utility(env, fam, q, chosen, reward, propensity, config, s)}
                 for fam in config.retrain]
    return {"rows": rows, "retrained": retrained,
            "log": {"seed": s, "mean_propensity": float(propensity.mean()), "explored": float(explore.mean()),
                    "distinct_queries": int(np.unique(q).size)}}


def _est(e: ope.Estimate) -> dict:
    d = e.to_dict()
    return {k: d[k] for k in ("estimator", "value", "ci_low", "ci_high", "ess", "n")}


def _retrained_utility(env: GridEnvironment, family: str, q, chosen, reward, propensity, config: SimulationConfig,
                       s: int) -> float:
    """True utility on the traffic queries of ``family`` retrained from the log alone, by query
    cross-fitting: fold f's queries are routed by a model fitted (encoder included) on the log rows
    of the other folds' queries. A learner that takes sample weights gets the importance weights
    1 / propensity (the logger chose some models mostly)."""
    from caproute.features import get_encoder

    m = len(env.models)
    fid = ope.fold_ids(env.n_queries, config.folds, seed=config.seed + 1000 + s)
    choice = np.empty(env.n_queries, dtype=np.intp)
    texts = np.asarray(env.texts, dtype=object)
    for f in range(config.folds):
        target = np.flatnonzero(fid == f)
        rows = fid[q] != f
        if RETRAIN_LEARNER[family] is None:
            choice[target] = _family_from_log(env, q[rows], chosen[rows], reward[rows], target, config)
            continue
        enc = get_encoder(config.features).fit(list(dict.fromkeys(texts[q[rows]].tolist())))
        model = make_outcome_model(RETRAIN_LEARNER[family])
        weight = {"weight": 1.0 / propensity[rows]} if getattr(model, "accepts_weight", False) else {}
        model.fit(_traffic_features(enc, list(texts[q[rows]])), chosen[rows], reward[rows], m, **weight)
        if family == "knn-imputed":
            choice[target] = _family_from_imputed(env, model, enc, q[rows], target, config)
            continue
        Xt = _traffic_features(enc, list(texts[target]))
        choice[target] = route_by_outcome(model.predict(Xt), model.predict_se(Xt), config.kappa)
    return env.value(ope.one_hot(choice, m))


def log_observations(env: GridEnvironment, q, chosen, reward) -> pd.DataFrame:
    """Logged requests as observations (one per request: the chosen model, its reward as the score,
    cost 0 since the reward is already the utility u = q - lambda c), the partial grid that
    caproute's router families train on (docs/supervision.md, "Partial grids")."""
    texts = np.asarray(env.texts, dtype=object)
    q = np.asarray(q, dtype=np.intp)
    return pd.DataFrame({
        "dataset": "log", "split": "train", "query_id": env.query_ids[q],
        "model": np.asarray(env.models, dtype=object)[chosen], "prompt_variant_id": -1,
        "decode_id": np.arange(len(q)), "observation_type": "decoding_variation",
        "score": np.asarray(reward, np.float64), "cost": 0.0, "question": texts[q]})


def _family_from_imputed(env: GridEnvironment, model, encoder, q, target, config: SimulationConfig) -> np.ndarray:
    """Choices on ``target`` of caproute's ``knn`` family trained by :func:`train_pipeline` on an
    imputed grid: for every logged query and model, the log-fitted ``model``'s pessimistic value
    q̂ - kappa * se (a model with no logged row, infinite se, stays unobserved: the partial-grid rule)."""
    from caproute.routers.pipeline import train_pipeline

    uq = np.unique(q)
    X = _traffic_features(encoder, [env.texts[i] for i in uq])
    se = model.predict_se(X)
    ok = np.isfinite(se)
    value = np.where(ok, model.predict(X) - config.kappa * np.where(ok, se, 0.0), 0.0)
    qi, a = np.nonzero(ok)
    obs = log_observations(env, uq[qi], a, value[qi, a])
    pipe = train_pipeline(obs, router="knn", features=config.features, lam=env.lam, seed=config.seed)
    return _choices(pipe, [env.texts[i] for i in target], env.models)


def _family_from_log(env: GridEnvironment, q, chosen, reward, target, config: SimulationConfig) -> np.ndarray:
    """Choices on the traffic queries ``target`` of caproute's router family (``knn``) trained by
    :func:`train_pipeline` on the log rows alone (partial grid: per-model neighbour sets; the
    supervision has no sample weights, so this path is unweighted)."""
    from caproute.routers.pipeline import train_pipeline

    pipe = train_pipeline(log_observations(env, q, chosen, reward), router="knn", features=config.features,
                          lam=env.lam, seed=config.seed)
    return _choices(pipe, [env.texts[i] for i in target], env.models)


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (candidate, estimator) over seeds: mean estimate, truth, bias (mean of estimate - truth),
    MAE, RMSE, coverage of the interval, mean interval width, mean ESS."""
    ok = rows[rows["estimator"] != "refused"].copy()
    ok["err"] = ok["value"] - ok["truth"]
    ok["covered"] = (ok["ci_low"] <= ok["truth"]) & (ok["truth"] <= ok["ci_high"])
    ok["width"] = ok["ci_high"] - ok["ci_low"]
    g = ok.groupby(["candidate", "estimator"], sort=False)
    out = g.agg(seeds=("seed", "size"), estimate=("value", "mean"), truth=("truth", "mean"),
                bias=("err", "mean"), mae=("err", lambda e: float(np.mean(np.abs(e)))),
                rmse=("err", lambda e: float(np.sqrt(np.mean(e ** 2)))), coverage=("covered", "mean"),
                width=("width", "mean"), ess=("ess", "mean"), agreement=("agreement", "mean")).reset_index()
    out["bias_se"] = g["err"].agg(lambda e: float(np.std(e, ddof=1) / np.sqrt(len(e))) if len(e) > 1
                                  else float("nan")).to_numpy()
    refused = rows[rows["estimator"] == "refused"].groupby("candidate").size()
    for cand, n in refused.items():
        out.loc[len(out)] = {"candidate": cand, "estimator": "refused", "seeds": int(n)}
    return out


def summarize_retrained(retrained: pd.DataFrame, full: dict[str, float]) -> pd.DataFrame:
    g = retrained.groupby("family", sort=False)["utility"]
    out = g.agg(["mean", "std", "size"]).reset_index().rename(columns={"mean": "retrained", "std": "retrained_std",
                                                                        "size": "seeds"})
    out["full_grid"] = out["family"].map(full)
    out["gap"] = out["retrained"] - out["full_grid"]
    return out


def run_simulation(env: GridEnvironment, config: SimulationConfig, *, jobs: int = 1,
                   progress: bool = False) -> SimulationResult:
    """Train once, then simulate ``config.seeds`` logs and evaluate every candidate on each."""
    from caproute.core.runtime import map_cells

    config.validate()
    prep = prepare(env, config, progress="training candidates" if progress else None)
    cells = [(s, config) for s in range(config.seeds)]
    out = map_cells(_seed_cell, cells, shared={"env": env, "prep": prep}, jobs=jobs,
                    progress="simulated logs" if progress else None)
    rows = pd.DataFrame([r for o in out for r in o["rows"]])
    retrained = pd.DataFrame([r for o in out for r in o["retrained"]])
    m = len(env.models)
    full = {fam: env.value(ope.one_hot(prep["choice"]["ridge (full grid)" if fam == "ridge" else FULL_GRID_FAMILY[fam]], m))
            for fam in config.retrain}
    truths = {fam: env.value(ope.one_hot(c, m)) for fam, c in prep["choice"].items()}
    meta = {"environment": {"name": env.name, "models": list(env.models), **env.meta},
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            "true_values": truths,
            "best_fixed_truth": float(env.u_mean.mean(axis=0).max()),
            "oracle_truth": float(env.u_mean.max(axis=1).mean()),
            "logs": [o["log"] for o in out]}
    return SimulationResult(rows=rows, summary=summarize(rows), retrained=retrained,
                            retrained_summary=summarize_retrained(retrained, full), meta=meta)
