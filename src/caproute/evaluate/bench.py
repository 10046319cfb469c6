"""The paper's experiment on one dataset (spec §A.6-A.9): the library behind ``caproute bench``.

``run_bench(exp, config)`` featurises the original query texts once, builds the grid of cells
(routers x supervision sets x studies), runs it through :func:`caproute.evaluate.engine.map_cells`
and aggregates the cells into a :class:`BenchResult` of DataFrames:

- ``rows``: the JSON rows {router, supervision, view, utility_mean, utility_std, quality_mean,
  n_runs, ...}: single-shot (mean / sample std over ``single_shot_runs`` training sets, seeds
  seed + run) and DARS (one training) per router and view, plus the reference rows ``best_fixed``
  (per view: the best model's mean test utility) and ``oracle`` (per view: mean of the per-query
  best utility).
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
from caproute.evaluate.grid import Cell, GridData, grid_data, run_cell
from caproute.evaluate.protocol import Experiment

# PROPOSED grids of spec §A.9 (the paper does not give them)
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
DEFAULT_BETAS: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
DEFAULT_KXR: tuple[tuple[int, int], ...] = ((1, 1), (1, 3), (3, 1), (2, 2), (3, 3), (5, 5))
ABLATION_VARIANTS: tuple[str, ...] = ("input_only", "output_only", "no_risk", "rewrite_risk", "decode_risk")
ABLATION_ORDER: tuple[str, ...] = ("single", *ABLATION_VARIANTS, "dars")
ABLATION_LABELS = {"single": "single-shot", "input_only": "Input-only", "output_only": "Output-only",
                   "no_risk": "w/o Risk", "rewrite_risk": "w/ Rew. Risk", "decode_risk": "w/ Dec. Risk",
                   "dars": "Full DARS"}
STUDIES: tuple[str, ...] = ("main", "ablation", "kxr", "beta")
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
    lam: float = 0.05
    beta: float = 0.2
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
    jobs: int = 1
    engine: str = "local"
    ray_address: str | None = None

    def validate(self) -> None:
        if self.single_shot_runs < 1 or any(int(n) < 1 for n in self.runs_by_router.values()):
            raise ConfigError("--single-shot-runs must be >= 1")
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

    def json_rows(self) -> list[dict]:
        """The ``--json`` output: one dict per row, NaN as null."""
        return _records(self.rows)


# --------------------------------------------------------------------------------------------
# features


def featurize(exp: Experiment, features: str = "tfidf", cache=None):
    """Encoder fitted on the training queries' original texts; returns (X_train, X_test, encoder_id).

    TF-IDF stays sparse here (a compact payload for worker processes); routers densify it.
    """
    from caproute.features import encode, get_encoder

    enc = get_encoder(features).fit(exp.train_texts)
    if hasattr(enc, "transform_sparse"):
        return enc.transform_sparse(exp.train_texts), enc.transform_sparse(exp.test_texts), enc.encoder_id
    return encode(enc, exp.train_texts, cache), encode(enc, exp.test_texts, cache), enc.encoder_id


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


def build_cells(config: BenchConfig, grid_shape: tuple[int, int]) -> list[Cell]:
    cells: list[Cell] = []
    s = config.seed

    def params(router):
        return tuple(sorted(config.router_params.get(router, {}).items()))

    for router in config.routers:
        p = params(router)
        for run in range(int(config.runs_by_router.get(router, config.single_shot_runs))):
            cells.append(Cell("main", router, "single", run, s + run, config.beta, params=p))
        cells.append(Cell("main", router, "dars", 0, s, config.beta, params=p))
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
    """Run the cells through :func:`~caproute.evaluate.engine.map_cells` (results in cell order)."""
    from caproute.evaluate.engine import map_cells

    return map_cells(run_cell, cells, shared=data, jobs=jobs, engine=engine, ray_address=ray_address,
                     progress=progress)


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
    t0 = time.perf_counter()
    encoder_id = "precomputed"
    if X_train is None or X_test is None:
        X_train, X_test, encoder_id = featurize(exp, config.features, cache)
    t_feat = time.perf_counter() - t0
    if config.pair is not None:
        missing = [m for m in config.pair if m not in exp.models]
        if missing or config.pair[0] == config.pair[1]:
            raise ConfigError(f"--pair needs two different models of {list(exp.models)} (got {list(config.pair)})")
        pair = (exp.models.index(config.pair[0]), exp.models.index(config.pair[1]))
    else:
        pair = default_pair(exp)
    data = grid_data(exp, X_train, X_test, lam=config.lam, lambdas=config.lambdas, pair=pair,
                     n_thresholds=config.n_thresholds)
    shape = exp.grid_shape()
    cells = build_cells(config, shape)
    t1 = time.perf_counter()
    results = run_grid(data, cells, jobs=config.jobs, engine=config.engine, ray_address=config.ray_address,
                       progress=f"bench {exp.dataset}: {len(cells)} trainings" if progress else None)
    t_grid = time.perf_counter() - t1
    meta = {**exp.meta, "encoder": encoder_id, "grid_shape": list(shape),
            "pair": [exp.models[pair[0]], exp.models[pair[1]]], "n_cells": len(cells),
            "seconds": {"features": t_feat, "grid": t_grid, "total": time.perf_counter() - t0}}
    return aggregate(exp, config, cells, results, meta)


# --------------------------------------------------------------------------------------------
# aggregation


def reference_rows(exp: Experiment, lam: float) -> pd.DataFrame:
    """best_fixed and oracle per view (utility and the quality of the same choice)."""
    rows = []
    for name, v in exp.views.items():
        u = v.utility(lam)
        i, value = M.best_fixed(u)
        rows.append({"router": "best_fixed", "supervision": None, "view": name, "utility_mean": value,
                     "utility_std": 0.0, "quality_mean": float(v.q[:, i].mean()), "quality_std": 0.0,
                     "cost_mean": float(v.c[:, i].mean()), "n_runs": 1, "model": exp.models[i]})
        choice = M.oracle_choice(u, v.c)
        rows.append({"router": "oracle", "supervision": None, "view": name, "utility_mean": M.oracle_value(u),
                     "utility_std": 0.0, "quality_mean": M.view_quality(v.q, choice), "quality_std": 0.0,
                     "cost_mean": M.routed_mean(v.c, choice), "n_runs": 1, "model": None})
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
    rows = rows[["router", "supervision", "view", "utility_mean", "utility_std", "quality_mean", "quality_std",
                 "cost_mean", "n_runs", "model"]]

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
        b = runs[((runs["study"] == "beta") | ((runs["study"] == "main") & (runs["supervision"] == "dars")))
                 & runs["router"].isin(study)]
        beta = b[["router", "beta", "view", "utility", "quality", "cost"]].sort_values(
            ["router", "view", "beta"], kind="stable").reset_index(drop=True)

    pareto = _pareto_table(exp, results, config)
    pair, curves = _pair_tables(exp, results, meta["pair"])
    variance = _variance_table(main)
    timing = _timing(results)
    return BenchResult(dataset=exp.dataset, models=exp.models, views=views, config=config, rows=rows,
                       runs=runs, reference=reference, ablation=ablation, kxr=kxr, beta=beta, pareto=pareto,
                       pair=pair, pair_curves=curves, variance=variance, timing=timing, meta=meta)


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
    for (router, view), g in main.groupby(["router", "view"], sort=False):
        single = g.loc[g["supervision"] == "single", "utility"].to_numpy(float)
        dars = g.loc[g["supervision"] == "dars", "utility"].to_numpy(float)
        if single.size == 0 or dars.size == 0:
            continue
        mean, std, n = M.mean_std(single)
        out.append({"router": router, "view": view, "single_mean": mean, "single_std": std,
                    "single_min": float(single.min()), "single_max": float(single.max()),
                    "single_range": float(single.max() - single.min()), "dars": float(dars[0]),
                    "share_single_below_dars": float(np.mean(single < dars[0])), "n_runs": n})
    return pd.DataFrame(out)


def _timing(results: list[dict]) -> pd.DataFrame:
    rows = [{"router": report_name(r["router"]), "study": r["study"], "supervision_s": r["time_s"].get("supervision", 0.0),
             "fit_s": r["time_s"]["fit"], "total_s": r["time_s"]["total"]} for r in results]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return (df.groupby(["router", "study"], sort=False)
            .agg(trainings=("fit_s", "size"), supervision_s=("supervision_s", "sum"), fit_s=("fit_s", "sum"),
                 cell_s=("total_s", "sum"),
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
