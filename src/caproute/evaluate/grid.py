"""Grid cells: one cell = one router trained on one supervision set and scored on the test views.

A :class:`Cell` carries everything that varies (router, supervision variant, run, seed, beta,
K x R protocol); :class:`GridData` carries what every cell shares (features computed once, the
training rows, the test view matrices). :func:`run_cell` is a pure function of the two, so a grid
gives the same numbers for any ``--jobs`` and either engine: BLAS and torch run single-threaded
inside a cell (parallelism comes from running cells side by side), and seeds travel in the cell.

Cells that would train the very same router (:func:`plan_groups`: same router, parameters, router
seed and supervision arrays, and the same beta where training reads it) form a :class:`FitGroup`:
one fit, one prediction, then each cell is routed with its own beta (:func:`run_group`). Routers
are built by the one factory ``caproute train`` uses (:func:`caproute.routers.pipeline.make_router`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from caproute.evaluate import metrics as M
from caproute.supervise.normalize import CostNormalizer

STUDIES = ("main", "ablation", "kxr", "beta")
TRAIN_COLUMNS = ["dataset", "split", "query_id", "model", "prompt_variant_id", "decode_id",
                 "observation_type", "score", "cost"]


@dataclass(frozen=True)
class Cell:
    """One training + evaluation.

    ``study``: main (single-shot runs and DARS), ablation (§A.8 variants), kxr (K x R subsample
    of the training grid, then DARS) or beta (DARS with risk weight ``beta``).
    ``seed`` seeds the single-shot draw / the K x R subsample and the router (if it takes a seed).
    ``params``: router hyper-parameters as sorted (name, value) pairs.
    """

    study: str
    router: str
    supervision: str
    run: int
    seed: int
    beta: float
    k: int = 0
    r: int = 0
    params: tuple = ()

    def key(self) -> dict[str, Any]:
        return {"study": self.study, "router": self.router, "supervision": self.supervision,
                "run": self.run, "seed": self.seed, "beta": self.beta, "k": self.k, "r": self.r}


@dataclass
class ViewArrays:
    rows: np.ndarray
    q: np.ndarray
    c: np.ndarray
    s: np.ndarray | None = None   # sample std of quality over the view's observations per (query, model)


@dataclass
class GridData:
    """Inputs shared by every cell (sent once per worker)."""

    X_train: Any
    X_test: Any
    train_obs: pd.DataFrame
    train_query_ids: np.ndarray
    normalizer: CostNormalizer
    models: tuple[str, ...]
    views: dict[str, ViewArrays]
    lam: float
    lambdas: tuple[float, ...] = ()
    pair: tuple[int, int] | None = None
    n_thresholds: int = 10
    extra: dict = field(default_factory=dict)
    #: router name -> extra keyword arguments of ``fit`` (GraphRouter's ``model_features``)
    fit_kw: dict = field(default_factory=dict)
    #: precomputed supervisions by content hash (see :func:`plan_groups`)
    supervisions: dict = field(default_factory=dict)
    #: main-study cells of run 0 return per-query predictions (chosen model, mu_q, mu_c, sigma_q)
    keep_predictions: bool = False


def grid_data(exp, X_train, X_test, *, lam: float, lambdas=(), pair=None, n_thresholds: int = 10,
              fit_kw: dict | None = None, keep_predictions: bool = False) -> GridData:
    """Build the shared inputs from an :class:`~caproute.evaluate.protocol.Experiment`."""
    views = {name: ViewArrays(v.rows, v.q, v.c, getattr(v, "s", None)) for name, v in exp.views.items()}
    return GridData(X_train=X_train, X_test=X_test, train_obs=exp.train_obs[TRAIN_COLUMNS].copy(),
                    train_query_ids=exp.train_query_ids, normalizer=exp.normalizer, models=exp.models,
                    views=views, lam=float(lam), lambdas=tuple(float(x) for x in lambdas), pair=pair,
                    n_thresholds=n_thresholds, fit_kw=dict(fit_kw or {}), keep_predictions=keep_predictions)


# --------------------------------------------------------------------------------------------


def supervision_for(cell: Cell, data: GridData):
    """The cell's training supervision (rows in ``data.train_query_ids`` order where present)."""
    from caproute.supervise.ablations import build_supervision
    from caproute.supervise.sampling import subsample_grid

    obs = data.train_obs
    variant = cell.supervision
    if cell.study == "kxr":
        obs = subsample_grid(obs, cell.k, cell.r, cell.seed)
    elif variant == "single":
        fast = single_shot_supervision(data, cell.seed)
        if fast is not None:
            return fast
    return build_supervision(obs, variant=variant, beta=cell.beta, normalizer=data.normalizer,
                             seed=cell.seed, models=data.models)


def single_shot_supervision(data: GridData, seed: int):
    """``build_supervision(train_obs, variant="single", seed=seed)`` without the per-cell pandas
    work: the row -> (pair, query, model) codes are computed once per process and each cell only
    draws one row per pair (the same draw, :func:`caproute.supervise.sampling.single_shot_indices`
    on the same pair codes, so the result is identical). Returns None when some pair is missing,
    leaving the error to the general path."""
    from caproute.supervise.sampling import _group_index, single_shot_indices
    from caproute.supervise.supervision import Supervision

    idx = data.extra.get("_single")
    if idx is None:
        obs = data.train_obs
        pair = _group_index(obs, ["dataset", "query_id", "model"])
        qrow = pd.Index(data.train_query_ids).get_indexer(obs["query_id"].astype(str))
        mcol = pd.Index(data.models).get_indexer(obs["model"].astype(str))
        complete = (qrow >= 0).all() and (mcol >= 0).all() and \
            np.unique(qrow * len(data.models) + mcol).size == len(data.train_query_ids) * len(data.models)
        idx = {"pair": pair, "qrow": qrow, "mcol": mcol, "complete": bool(complete),
               "score": obs["score"].to_numpy(np.float64), "cost": data.normalizer.transform(obs)}
        data.extra["_single"] = idx
    if not idx["complete"]:
        return None
    pick = single_shot_indices(idx["pair"], seed)
    shape = (len(data.train_query_ids), len(data.models))
    mu_q, mu_c = np.full(shape, np.nan), np.full(shape, np.nan)
    mu_q[idx["qrow"][pick], idx["mcol"][pick]] = idx["score"][pick]
    mu_c[idx["qrow"][pick], idx["mcol"][pick]] = idx["cost"][pick]
    sup = Supervision(np.asarray(data.train_query_ids), data.models, mu_q, mu_c, np.zeros(shape),
                      np.ones(shape, np.int64), "single", 0.0, {"seed": seed})
    return sup


def cell_router(cell: Cell, lam: float):
    """The cell's router, from the one router factory (:func:`caproute.routers.pipeline.make_router`):
    seed, MF's ``lam`` and RM-Softmax's ``lambda_max`` follow the bench's lambda unless the cell's
    params set them."""
    from caproute.routers.pipeline import make_router

    return make_router(cell.router, lam=lam, seed=cell.seed, params=dict(cell.params))


# --------------------------------------------------------------------------------------------
# fit groups: cells that would train the very same router share one fit


@dataclass(frozen=True)
class FitGroup:
    """Cells whose trainings are identical (same router, parameters, router seed and supervision
    arrays, and the same beta where the router's training reads beta): one fit serves them all,
    each cell is then routed with its own beta. ``sup_key``: key of the precomputed supervision in
    ``GridData.supervisions`` (None: the cells' own, e.g. a single-shot draw made in the worker)."""

    cells: tuple[Cell, ...]
    sup_key: Any = None
    index: tuple[int, ...] = ()   # positions of the cells in the planned list


def router_seed(cell: Cell) -> int | None:
    """The seed the cell's router is built with (None: the router takes no seed), as the router
    factory sets it."""
    seed = cell_router(cell, 0.0).get_params().get("seed")
    return None if seed is None else int(seed)


def _supervision_spec(cell: Cell) -> tuple:
    """What determines the cell's supervision arrays (not beta: beta only sets ``sup.beta``)."""
    if cell.study == "kxr":
        return ("kxr", cell.k, cell.r, cell.seed)
    variant = "dars" if cell.supervision == "no_risk" else cell.supervision
    return (variant,)


def plan_groups(cells: list[Cell], data: GridData) -> list[FitGroup]:
    """Group the cells by identical training. Supervisions other than single-shot draws are
    built here once (in the calling process) and stored in ``data.supervisions`` under a hash of
    their arrays, so that e.g. the w/o-Risk ablation, the beta study and the full K x R protocol
    reuse the main DARS fit, and every router reuses the same K x R subsamples."""
    import hashlib

    built: dict[tuple, str] = {}
    groups: dict[tuple, list[int]] = {}
    keys: dict[tuple, str | None] = {}
    for i, cell in enumerate(cells):
        router = cell_router(cell, 0.0)
        if cell.study != "kxr" and cell.supervision == "single":
            skey, content = None, ("single", cell.seed)
        else:
            spec = _supervision_spec(cell)
            if spec not in built:
                sup = supervision_for(cell, data)
                h = hashlib.sha256()
                for a in (sup.query_ids.astype(str), sup.mu_q, sup.mu_c, sup.sigma_q):
                    h.update(np.ascontiguousarray(a).tobytes())
                h.update(repr(tuple(sup.models)).encode())
                digest = h.hexdigest()
                data.supervisions.setdefault(digest, sup)
                built[spec] = digest
            skey = content = built[spec]
        beta_key = _train_beta(cell) if router.beta_in_training else None
        seed = router.get_params().get("seed")
        gk = (cell.router, repr(cell.params), content, None if seed is None else int(seed), beta_key)
        groups.setdefault(gk, []).append(i)
        keys[gk] = skey
    return [FitGroup(tuple(cells[i] for i in v), keys[k], tuple(v)) for k, v in groups.items()]


def _train_beta(cell: Cell) -> float:
    """The beta the cell's supervision carries (``Supervision.beta``)."""
    return 0.0 if cell.supervision in ("single", "no_risk") else float(cell.beta)


def _supervision_of(group: FitGroup, cell: Cell, data: GridData):
    import copy

    if group.sup_key is None:
        return supervision_for(cell, data)
    sup = copy.copy(data.supervisions[group.sup_key])
    sup.beta = _train_beta(cell)
    sup.kind = "dars" if cell.study == "kxr" else cell.supervision
    return sup


def run_cell(cell: Cell, data: GridData) -> dict[str, Any]:
    """Train the cell's router and score it; returns plain numbers (see module docstring)."""
    return run_group(FitGroup((cell,)), data)[0]


def run_group(group: FitGroup, data: GridData) -> list[dict[str, Any]]:
    """Fit the group's router once and score every cell of the group (results in group order)."""
    with _single_threaded():
        return _run_group(group, data)


def train_router(cell: Cell, data: GridData, sup=None):
    """(fitted router, supervision, supervision seconds, fit seconds) of one cell: the router from
    the shared factory, fitted on the cell's supervision with the feature rows aligned to it and
    the router's extra fit inputs (GraphRouter's model-description features) from ``data.fit_kw``."""
    t0 = time.perf_counter()
    sup = supervision_for(cell, data) if sup is None else sup
    t_sup = time.perf_counter() - t0
    idx = pd.Index(data.train_query_ids).get_indexer(sup.query_ids.astype(str))
    if (idx < 0).any():
        raise RuntimeError("supervision has queries without features")
    X_train = data.X_train if np.array_equal(idx, np.arange(len(data.train_query_ids))) else data.X_train[idx]
    router = cell_router(cell, data.lam)
    router.fit(X_train, sup, **data.fit_kw.get(cell.router, {}))
    return router, sup, t_sup, time.perf_counter() - t0 - t_sup


def _run_group(group: FitGroup, data: GridData) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    first = group.cells[0]
    t_s = time.perf_counter()
    sup = _supervision_of(group, first, data)
    t_sup = time.perf_counter() - t_s
    router, sup, _, t_fit = train_router(first, data, sup)
    lam = data.lam
    pred = router.predict_stats(data.X_test, lam=lam)
    outs = []
    for i, cell in enumerate(group.cells):
        t1 = time.perf_counter()
        route_beta = _train_beta(cell) if group.sup_key is not None else float(sup.beta or 0.0)
        out = _score(cell, router, pred, data, route_beta)
        spent = time.perf_counter() - t1
        if i == 0:
            out["time_s"] = {"supervision": t_sup, "fit": t_fit, "total": time.perf_counter() - t0, "reused": False}
        else:
            out["time_s"] = {"supervision": 0.0, "fit": 0.0, "total": spent, "reused": True}
        outs.append(out)
    return outs


def _score(cell: Cell, router, pred, data: GridData, route_beta: float) -> dict[str, Any]:
    lam = data.lam
    choice = router.choose(data.X_test, pred, lam, route_beta)
    out: dict[str, Any] = {**cell.key(), "route_beta": route_beta, "views": {},
                           "shares": M.choice_shares(choice, len(data.models)).tolist()}
    for name, v in data.views.items():
        ch = choice[v.rows]
        out["views"][name] = {"utility": M.view_utility(v.q, v.c, ch, lam),
                              "quality": M.view_quality(v.q, ch),
                              "cost": M.routed_mean(v.c, ch),
                              "instability": chosen_instability(v.s, ch)}
    if cell.study == "main":
        if data.lambdas:
            out["pareto"] = _pareto(router, pred, data, route_beta, choice)
        if data.pair is not None:
            out["pair"] = _pair_metrics(pred, data, route_beta)
        if data.keep_predictions and cell.run == 0:
            out["predictions"] = {"choice": choice.astype(np.int32), "kind": pred.kind,
                                  "mu_q": pred.mu_q.astype(np.float32), "mu_c": pred.mu_c.astype(np.float32),
                                  "sigma_q": pred.sigma_q.astype(np.float32)}
    return out


def chosen_instability(s: np.ndarray | None, choice: np.ndarray) -> float:
    """Mean over the view's queries of the chosen model's sample std of quality over the view's
    observations (the reference's ``chosen_decoding_instability_mean`` for the decode view)."""
    if s is None or len(choice) == 0:
        return float("nan")
    return float(np.mean(s[np.arange(len(choice)), choice]))


def _pareto(router, pred, data: GridData, beta: float, fixed: np.ndarray | None = None) -> list[dict[str, float]]:
    """Operating point (cost, quality, utility) per lambda and view; one fitted router serves all
    lambdas (a lambda-aware router is asked again for each lambda; a router whose routing ignores
    lambda (``fixed_route``) reuses ``fixed``, its routing at the bench's lambda)."""
    rows = []
    for lam in data.lambdas:
        if router.fixed_route and fixed is not None:
            choice = fixed
        else:
            p = router.predict_stats(data.X_test, lam=lam) if router.lambda_aware else pred
            choice = router.choose(data.X_test, p, lam, beta)
        for name, v in data.views.items():
            ch = choice[v.rows]
            cost, quality = M.operating_point(v.q, v.c, ch)
            rows.append({"lam": lam, "view": name, "cost": cost, "quality": quality,
                         "utility": quality - lam * cost})
    return rows


def _pair_metrics(pred, data: GridData, beta: float) -> dict[str, dict]:
    """RouteLLM metrics on the two-model pool (strong, weak): the router's preference for the
    strong model is its predicted utility gap U(strong) - U(weak) (for a policy router, the gap
    of the policy probabilities); performance is each view's mean quality."""
    s, w = data.pair
    u = pred.utility(data.lam, beta)
    score = u[:, s] - u[:, w]
    out = {}
    for name, v in data.views.items():
        calls, perf = M.strong_call_curve(score[v.rows], v.q[:, s], v.q[:, w], data.n_thresholds)
        res = M.two_model_metrics(score[v.rows], v.q[:, s], v.q[:, w], data.n_thresholds)
        res["calls"], res["perf"] = calls.tolist(), perf.tolist()
        out[name] = res
    return out


class _single_threaded:
    """BLAS (threadpoolctl) and torch limited to one thread inside a cell, so a cell's numbers do
    not depend on how many cells run side by side."""

    def __enter__(self):
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=1)
        self._torch = None
        try:
            import torch
        except ImportError:
            return self
        self._torch = (torch, torch.get_num_threads())
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        self._limits.restore_original_limits()
        if self._torch is not None:
            torch, n = self._torch
            torch.set_num_threads(n)
