"""The paper's experiment on one dataset (spec §A.6-A.9): the library behind ``caproute bench``.

``run_bench(exp, config)`` featurises the original query texts once, builds the grid of cells
(routers x supervision sets x studies), runs it through :func:`caproute.core.runtime.map_cells`
and aggregates the cells into a :class:`BenchResult` of DataFrames:

- ``rows``: the JSON rows {router, supervision, view, utility_mean, utility_std, quality_mean,
  n_runs, ...}: single-shot (mean / sample std over ``single_shot_runs`` training sets, seeds
  seed + run) and DARS (mean / sample std over ``dars_runs`` trainings, router seeds seed + run;
  one for a router without a seed) per router and view, plus the reference rows ``best_fixed``
  (per view: the best model's mean test utility) and ``oracle`` (per view: mean of the per-query
  best utility); ``chosen_decoding_instability_mean`` as the reference scripts report it.
- ``significance``: single-shot vs DARS per router and view (Welch t, see :func:`compare_runs`);
  ``predictions``: per-query predictions of run 0 (chosen model, mu_q, mu_c, sigma_q per model).
- ``ablation`` (§A.8), ``kxr`` (§A.9 / Figure 4(a)), ``beta`` (Figure 4(c)), ``pareto``
  (Figure 4(b): operating points over lambda with every fixed model and the oracle as reference),
  ``pair`` (RouteLLM's APGR / CPT / AUC on a two-model pool), ``variance`` (Figure 2(c)).

The registered ``best_fixed`` router (it picks the model with the best TRAINING utility) is
reported as ``best_fixed_train`` so that it does not clash with the test-set reference row.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from caproute.errors import ConfigError
from caproute.evaluate import metrics as M
from caproute.evaluate.grid import Cell, GridData, grid_data
from caproute.evaluate.protocol import Experiment
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA

# PROPOSED grids of spec §A.9 (the paper does not give them)
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
DEFAULT_BETAS: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
DEFAULT_KXR: tuple[tuple[int, int], ...] = ((1, 1), (1, 3), (3, 1), (2, 2), (3, 3), (5, 5))
ABLATION_VARIANTS: tuple[str, ...] = ("input_only", "output_only", "no_risk", "rewrite_risk", "decode_risk")
ABLATION_ORDER: tuple[str, ...] = ("single", *ABLATION_VARIANTS, "dars")
ABLATION_LABELS = {"single": "single-shot", "input_only": "Input-only", "output_only": "Output-only",
                   "no_risk": "w/o Risk", "rewrite_risk": "w/ Rew. Risk", "decode_risk": "w/ Dec. Risk",
                   "dars": "Full DARS"}
#: the studies ``--studies`` picks from: main (always), the ablation (§A.8), K x R (Figure 4(a)), beta
#: (Figure 4(c)), the Pareto sweep over lambda (Figure 4(b)) and the two-model metrics (APGR / CPT)
STUDIES: tuple[str, ...] = ("main", "ablation", "kxr", "beta", "pareto", "pair")
#: DARS trainings per router (seeds seed + run; one for a router that takes no seed: its training
#: is deterministic). The paper trains once (seed 42); one seed cannot carry a single-shot-vs-DARS
#: comparison for routers whose training moves with the seed (our choice, issue 14).
DEFAULT_DARS_RUNS = 5
#: significance level of the single-shot vs DARS statement per router (our choice)
ALPHA = 0.05
REFERENCE_NAMES = ("best_fixed", "oracle")
REPORT_NAMES = {"best_fixed": "best_fixed_train"}
#: registered routers that ignore the query; K x R and beta studies skip them by default
BASELINES = ("best_fixed", "random", "cheapest")


def report_name(router: str) -> str:
    return REPORT_NAMES.get(router, router)


#: the seven families of the paper's Table 1 (spec §A.10)
PAPER_FAMILIES = ("mlp", "knn", "embedllm", "avengerspro", "graphrouter", "mirt", "rmsoftmax")
#: registered routers that ``all`` leaves out: the Meta-Router learns from gold plus preference
#: gains (issue 4); trained on DARS supervision alone it is a slow random-forest gain model
NOT_IN_ALL = ("metarouter",)


def available_routers() -> list[str]:
    """Every registered router (families and baselines), in registry order."""
    from caproute.routers.base import REGISTRY, get_router_class

    get_router_class("knn")  # imports caproute.routers.families
    return list(REGISTRY)


def resolve_routers(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``all`` (every registered router but :data:`NOT_IN_ALL`), ``families`` (the paper's seven)
    or a comma-separated list of registered names (checked)."""
    from caproute.routers.base import get_router_class

    if spec == "all":   # paper order, then the other learned routers, then the baselines
        reg = [n for n in available_routers() if n not in NOT_IN_ALL]
        first = [n for n in PAPER_FAMILIES if n in reg]
        last = [n for n in BASELINES if n in reg]
        names = first + sorted(set(reg) - set(first) - set(last)) + last
    elif spec == "families":
        names = [n for n in PAPER_FAMILIES if n in available_routers()]
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    if not names:
        raise ConfigError("no routers given (--routers all, families or a comma-separated list)")
    for n in names:
        if n == "oracle":
            raise ConfigError("'oracle' is a reference row of every bench, not a router")
        get_router_class(n)
    if len(set(names)) != len(names):
        raise ConfigError(f"router listed twice in {names}")
    return tuple(names)


@dataclass
class BenchConfig:
    """Everything a bench run depends on (the JSON report records it)."""

    routers: tuple[str, ...] = ("knn",)
    single_shot_runs: int = 100
    runs_by_router: dict[str, int] = field(default_factory=dict)   # per-router override of the above
    dars_runs: int = DEFAULT_DARS_RUNS
    lam: float = DEFAULT_LAMBDA
    beta: float = DEFAULT_BETA
    seed: int = 42
    features: str = "tfidf"
    studies: tuple[str, ...] = STUDIES
    study_routers: tuple[str, ...] | None = None   # routers of ablation/kxr/beta (default: non-baselines)
    kxr_protocols: tuple[tuple[int, int], ...] = DEFAULT_KXR
    kxr_subsamples: int = 10
    betas: tuple[float, ...] = DEFAULT_BETAS
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    pair: tuple[str, str] | None = None
    n_thresholds: int = 10
    router_params: dict[str, dict] = field(default_factory=dict)
    predictions: bool = True     # per-query predictions of run 0 (single-shot and DARS) in the result
    jobs: int = 1
    engine: str = "local"
    ray_address: str | None = None

    def validate(self) -> None:
        if self.single_shot_runs < 1 or any(int(n) < 1 for n in self.runs_by_router.values()):
            raise ConfigError("--single-shot-runs must be >= 1")
        if self.dars_runs < 1:
            raise ConfigError("--dars-runs must be >= 1")
        if self.lam < 0 or self.beta < 0 or any(b < 0 for b in self.betas) or any(x < 0 for x in self.lambdas):
            raise ConfigError("lambda and beta values must be >= 0")
        unknown = set(self.studies) - set(STUDIES)
        if unknown or "main" not in self.studies:
            raise ConfigError(f"studies must include 'main' and be among {STUDIES} (got {self.studies})")
        if self.jobs < 1:
            raise ConfigError("--jobs must be >= 1")
        if self.kxr_subsamples < 1:
            raise ConfigError("K x R subsamples must be >= 1")
        for k, r in self.kxr_protocols:
            if k < 1 or r < 1:
                raise ConfigError(f"K x R protocol ({k}, {r}): K and R must be >= 1")
        if self.features not in ("tfidf", "minilm", "model2vec"):
            raise ConfigError(f"unknown features '{self.features}' (tfidf, minilm or model2vec)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kxr_protocols"] = [list(p) for p in self.kxr_protocols]
        return d


@dataclass
class BenchResult:
    dataset: str
    models: tuple[str, ...]
    views: list[str]
    config: BenchConfig
    rows: pd.DataFrame
    runs: pd.DataFrame
    reference: pd.DataFrame
    ablation: pd.DataFrame
    kxr: pd.DataFrame
    beta: pd.DataFrame
    pareto: pd.DataFrame
    pair: pd.DataFrame
    pair_curves: pd.DataFrame
    variance: pd.DataFrame
    timing: pd.DataFrame
    meta: dict = field(default_factory=dict)
    significance: pd.DataFrame = field(default_factory=pd.DataFrame)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)

    def json_rows(self) -> list[dict]:
        """The ``--json`` output: one dict per row, NaN as null."""
        return _records(self.rows)


# --------------------------------------------------------------------------------------------
# features


def featurize(exp: Experiment, features: str = "tfidf", cache=None):
    """Encoder fitted on the training queries' original texts; returns (X_train, X_test, encoder_id).

    TF-IDF stays sparse here (a compact payload for worker processes); routers densify it.
    """
    X_train, X_test, enc = _featurize(exp, features, cache)
    return X_train, X_test, enc.encoder_id


def _featurize(exp: Experiment, features: str, cache=None):
    from caproute.features import encode, get_encoder

    enc = get_encoder(features).fit(exp.train_texts)
    if hasattr(enc, "transform_sparse"):
        return enc.transform_sparse(exp.train_texts), enc.transform_sparse(exp.test_texts), enc
    return encode(enc, exp.train_texts, cache), encode(enc, exp.test_texts, cache), enc


def fit_inputs(config: BenchConfig, encoder, models) -> dict[str, dict]:
    """Per router, the extra ``fit`` inputs that ``caproute train`` gives it, computed with the
    bench's encoder (``router.encoder_inputs``: GraphRouter's model-description features)."""
    from caproute.routers.pipeline import make_router

    out = {}
    for name in dict.fromkeys((*config.routers, *(config.study_routers or ()))):
        router = make_router(name, lam=config.lam, seed=config.seed, params=config.router_params.get(name))
        kw = router.encoder_inputs(encoder, tuple(models)) if encoder is not None else {}
        if kw:
            out[name] = kw
    return out


def default_pair(exp: Experiment) -> tuple[int, int]:
    """(strong, weak) model indices for the two-model metrics: strong = highest mean training
    quality; weak = the cheapest of the others by mean normalised training cost, ties broken by
    higher mean training quality, then model order (our choice; RouteLLM fixes GPT-4 / Mixtral)."""
    tr = exp.train_obs.assign(_c=exp.normalizer.transform(exp.train_obs))
    by = tr.groupby("model").agg(q=("score", "mean"), c=("_c", "mean")).reindex(list(exp.models))
    q, c = by["q"].to_numpy(), by["c"].to_numpy()
    strong = int(np.argmax(q))
    others = [i for i in range(len(exp.models)) if i != strong]
    if not others:
        raise ConfigError("the two-model metrics need at least two models")
    weak = min(others, key=lambda i: (round(float(c[i]), 12), -float(q[i]), i))
    return strong, weak


def kxr_protocols(requested, grid_shape: tuple[int, int]) -> list[tuple[int, int]]:
    """The requested (K, R) protocols clamped to the data's training grid (K_max, R_max), duplicates
    removed, plus the full grid; sorted by K * R then K."""
    kmax, rmax = grid_shape
    out = {(min(k, kmax), min(r, rmax)) for k, r in requested}
    out.add((kmax, rmax))
    return sorted(out, key=lambda p: (p[0] * p[1], p[0], p[1]))


# --------------------------------------------------------------------------------------------
# the grid


def study_routers_of(config: BenchConfig) -> tuple[str, ...]:
    """Routers of the ablation, K x R and beta studies: ``study_routers``, else every non-baseline
    router (all routers if there are only baselines)."""
    if config.study_routers is not None:
        return tuple(config.study_routers)
    learned = tuple(r for r in config.routers if r not in BASELINES)
    return learned or tuple(config.routers)


def dars_runs_of(config: BenchConfig, router: str) -> int:
    """DARS trainings of ``router``: ``config.dars_runs``, or 1 when the router takes no seed."""
    from caproute.evaluate.grid import router_seed

    p = tuple(sorted(config.router_params.get(router, {}).items()))
    seeded = router_seed(Cell("main", router, "dars", 0, 0, 0.0, params=p)) is not None
    return int(config.dars_runs) if seeded and "seed" not in dict(p) else 1


def build_cells(config: BenchConfig, grid_shape: tuple[int, int]) -> list[Cell]:
    cells: list[Cell] = []
    s = config.seed

    def params(router):
        return tuple(sorted(config.router_params.get(router, {}).items()))

    for router in config.routers:
        p = params(router)
        for run in range(int(config.runs_by_router.get(router, config.single_shot_runs))):
            cells.append(Cell("main", router, "single", run, s + run, config.beta, params=p))
        for run in range(dars_runs_of(config, router)):
            cells.append(Cell("main", router, "dars", run, s + run, config.beta, params=p))
    for router in study_routers_of(config):
        p = params(router)
        if "ablation" in config.studies:
            for variant in ABLATION_VARIANTS:
                cells.append(Cell("ablation", router, variant, 0, s, config.beta, params=p))
        if "kxr" in config.studies:
            for k, r in kxr_protocols(config.kxr_protocols, grid_shape):
                for run in range(config.kxr_subsamples):
                    cells.append(Cell("kxr", router, "dars", run, s + run, config.beta, k=k, r=r, params=p))
        if "beta" in config.studies:
            for b in config.betas:
                if b != config.beta:   # the main DARS cell already has beta = config.beta
                    cells.append(Cell("beta", router, "dars", 0, s, float(b), params=p))
    return cells


def run_grid(data: GridData, cells: list[Cell], *, jobs: int = 1, engine: str = "local",
             ray_address: str | None = None, progress: str | None = "bench grid") -> list[dict]:
    """Run the cells through :func:`~caproute.core.runtime.map_cells` (results in cell order).

    Cells that would train the very same router (:func:`~caproute.evaluate.grid.plan_groups`)
    share one fit; the numbers are those of training each cell on its own."""
    from caproute.core.runtime import map_cells
    from caproute.evaluate.grid import plan_groups, run_group

    groups = plan_groups(cells, data)
    if progress is not None:
        progress = progress.replace(f"{len(cells)} trainings", f"{len(groups)} trainings ({len(cells)} cells)")
    got = map_cells(run_group, groups, shared=data, jobs=jobs, engine=engine, ray_address=ray_address,
                    progress=progress)
    results: list = [None] * len(cells)
    for g, res in zip(groups, got, strict=True):
        for i, r in zip(g.index, res, strict=True):
            results[i] = r
    return results


def run_bench(exp: Experiment, config: BenchConfig, *, X_train=None, X_test=None,
              progress: bool = True, cache=None) -> BenchResult:
    """Run the whole experiment on one prepared dataset.

    ``X_train`` / ``X_test``: precomputed features (rows in ``exp.train_query_ids`` /
    ``exp.test_query_ids`` order); by default computed with ``config.features``.
    """
    config.validate()
    config.routers = resolve_routers(config.routers)
    if config.study_routers is not None:
        config.study_routers = resolve_routers(config.study_routers)
    unknown = sorted(set(config.runs_by_router) - set(config.routers))
    if unknown:
        raise ConfigError(f"run counts given for routers not in the bench: {unknown}")
    stray = sorted(set(config.router_params) - set(config.routers) - set(config.study_routers or ()))
    if stray:
        raise ConfigError(f"--param given for routers not in the bench: {stray}")
    t0 = time.perf_counter()
    encoder_id, encoder = "precomputed", None
    if X_train is None or X_test is None:
        X_train, X_test, encoder = _featurize(exp, config.features, cache)
        encoder_id = encoder.encoder_id
    fit_kw = fit_inputs(config, encoder, exp.models)
    t_feat = time.perf_counter() - t0
    if config.pair is not None:
        missing = [m for m in config.pair if m not in exp.models]
        if missing or config.pair[0] == config.pair[1]:
            raise ConfigError(f"--pair needs two different models of {list(exp.models)} (got {list(config.pair)})")
        pair = (exp.models.index(config.pair[0]), exp.models.index(config.pair[1]))
    else:
        pair = default_pair(exp)
    data = grid_data(exp, X_train, X_test, lam=config.lam,
                     lambdas=config.lambdas if "pareto" in config.studies else (),
                     pair=pair if "pair" in config.studies else None, n_thresholds=config.n_thresholds,
                     fit_kw=fit_kw, keep_predictions=config.predictions)
    shape = exp.grid_shape()
    cells = build_cells(config, shape)
    t1 = time.perf_counter()
    results = run_grid(data, cells, jobs=config.jobs, engine=config.engine, ray_address=config.ray_address,
                       progress=f"bench {exp.dataset}: {len(cells)} trainings" if progress else None)
    t_grid = time.perf_counter() - t1
    n_fits = sum(1 for r in results if not r["time_s"].get("reused"))
    meta = {**exp.meta, "encoder": encoder_id, "grid_shape": list(shape),
            "pair": [exp.models[pair[0]], exp.models[pair[1]]], "n_cells": len(cells), "n_trainings": n_fits,
            "fit_inputs": {k: sorted(v) for k, v in fit_kw.items()},
            "seconds": {"features": t_feat, "grid": t_grid, "total": time.perf_counter() - t0}}
    return aggregate(exp, config, cells, results, meta)


# --------------------------------------------------------------------------------------------
# aggregation


def reference_rows(exp: Experiment, lam: float) -> pd.DataFrame:
    """best_fixed and oracle per view (utility and the quality of the same choice)."""
    from caproute.evaluate.grid import chosen_instability

    rows = []
    for name, v in exp.views.items():
        u = v.utility(lam)
        i, value = M.best_fixed(u)
        fixed = np.full(len(v.rows), i, dtype=np.intp)
        rows.append({"router": "best_fixed", "supervision": None, "view": name, "utility_mean": value,
                     "utility_std": 0.0, "quality_mean": float(v.q[:, i].mean()), "quality_std": 0.0,
                     "cost_mean": float(v.c[:, i].mean()), "instability_mean": chosen_instability(v.s, fixed),
                     "n_runs": 1, "model": exp.models[i]})
        choice = M.oracle_choice(u, v.c)
        rows.append({"router": "oracle", "supervision": None, "view": name, "utility_mean": M.oracle_value(u),
                     "utility_std": 0.0, "quality_mean": M.view_quality(v.q, choice), "quality_std": 0.0,
                     "cost_mean": M.routed_mean(v.c, choice), "instability_mean": chosen_instability(v.s, choice),
                     "n_runs": 1, "model": None})
    return pd.DataFrame(rows)


def _flat_runs(results: list[dict]) -> pd.DataFrame:
    rows = []
    for res in results:
        base = {k: res[k] for k in ("study", "router", "supervision", "run", "seed", "beta", "k", "r")}
        base["router"] = report_name(base["router"])
        for view, vals in res["views"].items():
            rows.append({**base, "view": view, **vals})
    return pd.DataFrame(rows)


def _summary(df: pd.DataFrame, keys: list[str], value: str = "utility") -> pd.DataFrame:
    """Mean / sample std / count of ``value`` (and the mean quality and cost) per group."""
    out = []
    for k, g in df.groupby(keys, sort=False):
        mean, std, n = M.mean_std(g[value])
        row = dict(zip(keys, k if isinstance(k, tuple) else (k,), strict=True))
        row.update({f"{value}_mean": mean, f"{value}_std": std, "quality_mean": float(g["quality"].mean()),
                    "quality_std": M.mean_std(g["quality"])[1], "cost_mean": float(g["cost"].mean()),
                    "n_runs": n})
        if "instability" in g.columns:
            row["instability_mean"] = float(g["instability"].mean())
        out.append(row)
    return pd.DataFrame(out)


def aggregate(exp: Experiment, config: BenchConfig, cells: list[Cell], results: list[dict],
              meta: dict) -> BenchResult:
    runs = _flat_runs(results)
    views = list(exp.views)
    main = runs[runs["study"] == "main"]
    rows = _summary(main, ["router", "supervision", "view"])
    reference = reference_rows(exp, config.lam)
    rows = pd.concat([rows, reference], ignore_index=True)
    if "instability_mean" not in rows.columns:
        rows["instability_mean"] = np.nan
    # the reference scripts' name for the decode view's value (mean over queries of the std of the
    # chosen model's decode observations)
    rows["chosen_decoding_instability_mean"] = rows["instability_mean"].where(rows["view"] == "decode")
    rows = rows[["router", "supervision", "view", "utility_mean", "utility_std", "quality_mean", "quality_std",
                 "cost_mean", "n_runs", "model", "instability_mean", "chosen_decoding_instability_mean"]]

    # ablation: single and dars come from the main study
    study = {report_name(r) for r in study_routers_of(config)}
    abl = runs[((runs["study"] == "ablation") | (runs["study"] == "main")) & runs["router"].isin(study)]
    ablation = _summary(abl, ["router", "supervision", "view"]) if "ablation" in config.studies else pd.DataFrame()
    if not ablation.empty:
        ablation["variant"] = ablation["supervision"]
        ablation["label"] = ablation["variant"].map(ABLATION_LABELS)
        ablation["_o"] = ablation["variant"].map({v: i for i, v in enumerate(ABLATION_ORDER)})
        ablation = ablation.sort_values(["router", "_o", "view"], kind="stable").drop(columns=["_o", "supervision"])

    kxr = pd.DataFrame()
    if "kxr" in config.studies:
        kx = runs[runs["study"] == "kxr"]
        kxr = _summary(kx, ["router", "k", "r", "view"])
        kxr["observations_per_pair"] = kxr["k"] * kxr["r"]
        kxr = kxr.rename(columns={"n_runs": "n_subsamples"})

    beta = pd.DataFrame()
    if "beta" in config.studies:
        b = runs[((runs["study"] == "beta") | ((runs["study"] == "main") & (runs["supervision"] == "dars")
                                                & (runs["run"] == 0)))   # the other beta cells use seed + 0
                 & runs["router"].isin(study)]
        beta = b[["router", "beta", "view", "utility", "quality", "cost"]].sort_values(
            ["router", "view", "beta"], kind="stable").reset_index(drop=True)

    pareto = _pareto_table(exp, results, config)
    pair, curves = _pair_tables(exp, results, meta["pair"])
    variance = _variance_table(main)
    timing = _timing(results)
    significance = significance_table(main)
    predictions = _predictions_table(exp, results)
    return BenchResult(dataset=exp.dataset, models=exp.models, views=views, config=config, rows=rows,
                       runs=runs, reference=reference, ablation=ablation, kxr=kxr, beta=beta, pareto=pareto,
                       pair=pair, pair_curves=curves, variance=variance, timing=timing, meta=meta,
                       significance=significance, predictions=predictions)


def compare_runs(single, dars, alpha: float = ALPHA) -> dict:
    """Is the DARS mean different from the single-shot mean? Two-sided Welch t-test (unequal
    variances) when both have >= 2 runs; a one-sample t-test of the runs against the other side's
    single value when one side has one run (a router without a seed trains deterministically);
    no test with one run each. Two constant samples: p = 0 if their values differ, else 1."""
    import warnings

    from scipy import stats

    single, dars = np.asarray(single, float), np.asarray(dars, float)
    ns, nd = single.size, dars.size
    diff = float(dars.mean() - single.mean())
    sd_s = float(single.std(ddof=1)) if ns > 1 else 0.0
    sd_d = float(dars.std(ddof=1)) if nd > 1 else 0.0
    tiny = 1e-12 * max(1.0, float(np.abs(np.r_[single, dars]).max()))
    sd_s, sd_d = (0.0 if sd_s <= tiny else sd_s), (0.0 if sd_d <= tiny else sd_d)
    if abs(diff) <= tiny:
        diff = 0.0
    if ns >= 2 and nd >= 2:
        test = "Welch t"
        if sd_s == 0 and sd_d == 0:
            t, p = (np.inf * np.sign(diff) if diff else 0.0), (0.0 if diff else 1.0)
        else:
            with warnings.catch_warnings():   # "precision loss" on nearly identical runs
                warnings.simplefilter("ignore", RuntimeWarning)
                r = stats.ttest_ind(dars, single, equal_var=False)
            t, p = float(r.statistic), float(r.pvalue)
    elif ns >= 2 or nd >= 2:
        test = "one-sample t"
        sample, value, sign = (single, float(dars[0]), -1.0) if ns >= 2 else (dars, float(single[0]), 1.0)
        if (sd_s if ns >= 2 else sd_d) == 0:
            t, p = (np.inf * np.sign(diff) if diff else 0.0), (0.0 if diff else 1.0)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                r = stats.ttest_1samp(sample, value)
            t, p = sign * float(r.statistic), float(r.pvalue)
    else:
        test, t, p = "none (one run each)", float("nan"), float("nan")
    from caproute.evaluate.inference import mean_test, welch_test

    # the (1 - alpha) interval of DARS - single at the test's own degrees of freedom
    if ns >= 2 and nd >= 2:
        ci = welch_test(dars, single, alpha)
    elif ns >= 2:
        ci = mean_test(float(dars[0]) - single, alpha)
    elif nd >= 2:
        ci = mean_test(dars - float(single[0]), alpha)
    else:
        ci = None
    lo, hi = (ci.ci_low, ci.ci_high) if ci is not None else (float("nan"), float("nan"))
    verdict = _verdict(diff, p, alpha, lo, hi)
    if nd >= 2 and sd_d == 0:
        verdict += "; every DARS run scored the same (seed-invariant routing)"
    return {"single_mean": float(single.mean()), "single_std": sd_s, "n_single": ns, "dars_mean": float(dars.mean()),
            "dars_std": sd_d, "n_dars": nd, "diff": diff, "test": test, "statistic": t, "p_value": p,
            "ci_low": lo, "ci_high": hi, "verdict": verdict}


def _verdict(diff: float, p: float, alpha: float, lo: float, hi: float, p_holm: float | None = None) -> str:
    """'DARS higher (p = 0.003, Holm p = 0.02; 95% CI [+0.010, +0.050])' and the like."""
    from caproute.evaluate.inference import verdict_text

    return verdict_text(diff, p, alpha, lo, hi, p_holm, higher="DARS higher", lower="DARS lower")


def _single_vs_dars(main: pd.DataFrame):
    """Per (router, view) of the main study, in order: the test utilities of the single-shot runs
    and of the DARS runs, as ``(router, view, single, dars)``; cells lacking either are skipped."""
    for (router, view), g in main.groupby(["router", "view"], sort=False):
        single = g.loc[g["supervision"] == "single", "utility"].to_numpy(float)
        dars = g.loc[g["supervision"] == "dars", "utility"].to_numpy(float)
        if single.size and dars.size:
            yield router, view, single, dars


def significance_table(main: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Per router and view: single-shot vs DARS test utility over their runs (:func:`compare_runs`).
    The (router, view) cells are tested together, so the verdict is decided by Holm's adjusted p
    (``p_holm``, family-wise error rate ``alpha`` over all cells; :func:`caproute.evaluate.inference.holm`)."""
    out = []
    for router, view, single, dars in _single_vs_dars(main):
        out.append({"router": router, "view": view, **compare_runs(single, dars, alpha)})
    df = pd.DataFrame(out)
    if df.empty:
        return df
    from caproute.evaluate.inference import holm

    df["p_holm"] = holm(df["p_value"].to_numpy(float))
    seed_invariant = df["verdict"].str.contains("seed-invariant", regex=False)
    df["verdict"] = [_verdict(r.diff, r.p_value, alpha, r.ci_low, r.ci_high, r.p_holm) for r in df.itertuples()]
    df.loc[seed_invariant, "verdict"] += "; every DARS run scored the same (seed-invariant routing)"
    return df


def _predictions_table(exp: Experiment, results: list[dict]) -> pd.DataFrame:
    """Per-query predictions of run 0 of each main-study supervision: one row per (router,
    supervision, test query, model) with mu_q, mu_c, sigma_q (for a policy router mu_q holds the
    policy probability) and whether the model was chosen."""
    parts = []
    models = np.asarray(exp.models, dtype=object)
    qids = np.asarray(exp.test_query_ids, dtype=object)
    for res in results:
        p = res.get("predictions")
        if p is None:
            continue
        n, m = p["mu_q"].shape
        chosen = np.zeros((n, m), dtype=bool)
        chosen[np.arange(n), p["choice"]] = True
        parts.append(pd.DataFrame({
            "router": report_name(res["router"]), "supervision": res["supervision"], "run": res["run"],
            "query_id": np.repeat(qids, m), "model": np.tile(models, n), "chosen": chosen.ravel(),
            "mu_q": p["mu_q"].ravel(), "mu_c": p["mu_c"].ravel(), "sigma_q": p["sigma_q"].ravel(),
            "kind": p["kind"]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _pareto_table(exp: Experiment, results: list[dict], config: BenchConfig) -> pd.DataFrame:
    rows = []
    for res in results:
        if res["study"] != "main":
            continue
        for p in res.get("pareto", []):
            rows.append({"router": report_name(res["router"]), "supervision": res["supervision"],
                         "run": res["run"], **p})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = (df.groupby(["router", "supervision", "lam", "view"], sort=False)
          .agg(cost=("cost", "mean"), quality=("quality", "mean"), utility=("utility", "mean"),
               n_runs=("run", "size")).reset_index())
    ref = []
    for lam in config.lambdas:
        for name, v in exp.views.items():
            u = v.utility(lam)
            best, _ = M.best_fixed(u)
            for i, m in enumerate(exp.models):
                ref.append({"router": f"fixed:{m}", "supervision": None, "lam": lam, "view": name,
                            "cost": float(v.c[:, i].mean()), "quality": float(v.q[:, i].mean()),
                            "utility": float(u[:, i].mean()), "n_runs": 1, "best_fixed": i == best})
            choice = M.oracle_choice(u, v.c)
            cost, quality = M.operating_point(v.q, v.c, choice)
            ref.append({"router": "oracle", "supervision": None, "lam": lam, "view": name, "cost": cost,
                        "quality": quality, "utility": quality - lam * cost, "n_runs": 1, "best_fixed": False})
    df["best_fixed"] = False
    df = pd.concat([df, pd.DataFrame(ref)], ignore_index=True)
    # frontier flag per view among the routers' and fixed models' points (oracle excluded)
    df["on_frontier"] = False
    for view in df["view"].unique():
        sel = (df["view"] == view) & (df["router"] != "oracle")
        df.loc[sel, "on_frontier"] = M.pareto_mask(df.loc[sel, "cost"].to_numpy(), df.loc[sel, "quality"].to_numpy())
    return df


def _pair_tables(exp: Experiment, results: list[dict], pair_names) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, curves = [], []
    for res in results:
        if res["study"] != "main" or "pair" not in res:
            continue
        for view, m in res["pair"].items():
            rows.append({"router": report_name(res["router"]), "supervision": res["supervision"],
                         "run": res["run"], "view": view,
                         **{k: m[k] for k in ("apgr", "auc", "cpt20", "cpt50", "cpt80", "weak", "strong")}})
            if res["run"] == 0:
                for c, p in zip(m["calls"], m["perf"], strict=True):
                    curves.append({"router": report_name(res["router"]), "supervision": res["supervision"],
                                   "view": view, "calls": c, "perf": p})
    df = pd.DataFrame(rows)
    if df.empty:
        return df, pd.DataFrame(curves)
    out = []
    for (router, sup, view), g in df.groupby(["router", "supervision", "view"], sort=False):
        row = {"router": router, "supervision": sup, "view": view, "strong_model": pair_names[0],
               "weak_model": pair_names[1], "strong": float(g["strong"].iloc[0]), "weak": float(g["weak"].iloc[0])}
        for k in ("apgr", "auc", "cpt20", "cpt50", "cpt80"):
            vals = g[k].to_numpy(float)
            ok = vals[np.isfinite(vals)]
            row[f"{k}_mean"] = float(ok.mean()) if ok.size else float("nan")
            row[f"{k}_std"] = float(ok.std(ddof=1)) if ok.size > 1 else 0.0
        row["n_runs"] = len(g)
        out.append(row)
    return pd.DataFrame(out), pd.DataFrame(curves)


def _variance_table(main: pd.DataFrame) -> pd.DataFrame:
    """Figure 2(c): spread of the test utility over single-shot trainings, against DARS."""
    out = []
    for router, view, single, dars in _single_vs_dars(main):
        mean, std, n = M.mean_std(single)
        d_mean, d_std, d_n = M.mean_std(dars)
        out.append({"router": router, "view": view, "single_mean": mean, "single_std": std,
                    "single_min": float(single.min()), "single_max": float(single.max()),
                    "single_range": float(single.max() - single.min()), "dars": d_mean, "dars_std": d_std,
                    "n_dars": d_n, "share_single_below_dars": float(np.mean(single < d_mean)), "n_runs": n})
    return pd.DataFrame(out)


def _timing(results: list[dict]) -> pd.DataFrame:
    rows = [{"router": report_name(r["router"]), "study": r["study"], "supervision_s": r["time_s"].get("supervision", 0.0),
             "fit_s": r["time_s"]["fit"], "total_s": r["time_s"]["total"],
             "fitted": not r["time_s"].get("reused", False)} for r in results]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return (df.groupby(["router", "study"], sort=False)
            .agg(cells=("fit_s", "size"), trainings=("fitted", "sum"), supervision_s=("supervision_s", "sum"),
                 fit_s=("fit_s", "sum"), cell_s=("total_s", "sum"),
                 median_cell_s=("total_s", "median")).reset_index())


def _records(df: pd.DataFrame) -> list[dict]:
    out = []
    for rec in df.to_dict(orient="records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, float) and not np.isfinite(v):
                v = None
            elif isinstance(v, np.generic):
                v = v.item()
            elif v is pd.NA:
                v = None
            clean[k] = v
        out.append(clean)
    return out
