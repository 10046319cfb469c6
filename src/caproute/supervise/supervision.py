"""Routing supervision in matrix form: what every router's ``fit`` consumes.

A :class:`Supervision` holds, for n queries and m models, the matrices mu_q, mu_c, sigma_q
(n, m) plus the query ids and model names that index them. DARS supervision comes from all
observations of a pair; single-shot supervision from one observation (sigma_q = 0, routed with
beta = 0); the ablations of §A.8 swap the observation subset or the risk term.

Partial grids (real traffic: one model answered each request) are first-class. ``observed`` is
the (n, m) mask of pairs that have observations (None: every pair). The rule for a pair never
observed: it is excluded from every training loss, neighbour set and mean (each family reads
:attr:`Supervision.observed`), and its entries in mu_q, mu_c, sigma_q hold the per-model prior,
the model's mean over the queries where it was observed, for anything that needs a full matrix
(:func:`model_prior`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from caproute.errors import DataError
from caproute.supervise.utility import utility


@dataclass
class Supervision:
    """Per-(query, model) targets. ``beta`` is the risk weight this supervision is meant for
    (0 for single-shot and the no-risk ablation), ``kind`` a label for reports."""

    query_ids: np.ndarray
    models: tuple[str, ...]
    mu_q: np.ndarray
    mu_c: np.ndarray
    sigma_q: np.ndarray
    n: np.ndarray | None = None
    kind: str = "dars"
    beta: float | None = None
    meta: dict = field(default_factory=dict)
    #: (n, m) bool, True where the pair has observations; None when every pair has (a full grid;
    #: an all-True mask is stored as None, so a full grid takes every family's unmasked path)
    observed: np.ndarray | None = None
    #: (n, m) mean latency per pair in seconds (the PROPOSED latency term), NaN where a pair has no
    #: observation or no recorded ``latency_s``; None when the observations carry no latencies
    mu_latency: np.ndarray | None = None

    def __post_init__(self):
        self.query_ids = np.asarray(self.query_ids)
        self.models = tuple(self.models)
        shape = (len(self.query_ids), len(self.models))
        for name in ("mu_q", "mu_c", "sigma_q"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
            setattr(self, name, arr)
        if self.observed is not None:
            mask = np.asarray(self.observed, dtype=bool)
            if mask.shape != shape:
                raise ValueError(f"observed has shape {mask.shape}, expected {shape}")
            self.observed = None if mask.all() else mask
        if self.mu_latency is not None:
            lat = np.asarray(self.mu_latency, dtype=np.float64)
            if lat.shape != shape:
                raise ValueError(f"mu_latency has shape {lat.shape}, expected {shape}")
            self.mu_latency = None if np.isnan(lat).all() else lat

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def mask(self) -> np.ndarray:
        """The (n, m) observed-pair mask (all True for a full grid)."""
        if self.observed is None:
            return np.ones(self.mu_q.shape, dtype=bool)
        return self.observed

    @property
    def partial(self) -> bool:
        return self.observed is not None

    def coverage(self):
        """Observed pairs per model and per query (:class:`caproute.supervise.coverage.Coverage`)."""
        from caproute.supervise.coverage import coverage_from_mask

        return coverage_from_mask(self.mask, self.models)

    def utility(self, lam: float, beta: float | None = None) -> np.ndarray:
        """U (n, m); ``beta`` defaults to this supervision's own risk weight."""
        b = self.beta if beta is None else beta
        return utility(self.mu_q, self.mu_c, self.sigma_q, lam, 0.2 if b is None else b)

    def subset(self, rows: np.ndarray) -> Supervision:
        return Supervision(self.query_ids[rows], self.models, self.mu_q[rows], self.mu_c[rows],
                           self.sigma_q[rows], None if self.n is None else self.n[rows], self.kind,
                           self.beta, dict(self.meta), None if self.observed is None else self.observed[rows],
                           None if self.mu_latency is None else self.mu_latency[rows])

    def to_frame(self, lam: float, beta: float | None = None) -> pd.DataFrame:
        """Long frame with columns query_id, model, n, mu_q, mu_c, sigma_q, utility, observed
        (unobserved pairs carry the per-model prior and n = 0)."""
        u = self.utility(lam, beta)
        nq, nm = self.mu_q.shape
        return pd.DataFrame({
            "query_id": np.repeat(self.query_ids, nm),
            "model": np.tile(np.array(self.models, dtype=object), nq),
            "n": (self.n if self.n is not None else np.ones((nq, nm), int)).reshape(-1),
            "mu_q": self.mu_q.reshape(-1), "mu_c": self.mu_c.reshape(-1),
            "sigma_q": self.sigma_q.reshape(-1), "utility": u.reshape(-1),
            "observed": self.mask.reshape(-1),
        })


def model_prior(values: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per-model prior (m,): the mean of ``values`` (n, m) over the rows where the model is observed.

    The value a never-observed pair gets in a full matrix (see the module docstring). A model with
    no observed row has no prior: :func:`from_stats` refuses such a model list.
    """
    observed = np.asarray(observed, bool)
    counts = observed.sum(axis=0)
    sums = np.where(observed, values, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def from_stats(stats: pd.DataFrame, *, models: tuple[str, ...] | None = None, kind: str = "dars",
               beta: float | None = None, sigma_column: str = "sigma_q",
               drop_incomplete: bool = False, missing: str | None = None) -> Supervision:
    """Pivot per-pair statistics (one dataset) into matrices.

    ``missing`` says what happens to (query, model) pairs without observations:
    ``"error"`` (default) a :class:`DataError` lists them; ``"drop"`` (or ``drop_incomplete``)
    queries with a missing pair are dropped (their number is recorded in ``meta``); ``"mask"``
    keeps every query with the observed-pair mask and the per-model prior in the unobserved
    entries (see the module docstring). Every model must be observed on at least one query.
    """
    missing = missing or ("drop" if drop_incomplete else "error")
    if missing not in ("error", "drop", "mask"):
        raise ValueError(f"missing must be 'error', 'drop' or 'mask', not {missing!r}")
    if stats["dataset"].nunique() > 1:
        raise DataError(f"supervision is per dataset; got {sorted(stats['dataset'].unique())}",
                        source="statistics")
    models = tuple(sorted(stats["model"].unique())) if models is None else tuple(models)
    q_codes, queries = pd.factorize(stats["query_id"], sort=True)
    m_index = {m: i for i, m in enumerate(models)}
    m_codes = stats["model"].map(m_index)
    if m_codes.isna().any():
        extra = sorted(set(stats["model"][m_codes.isna()]))
        raise DataError(f"models {extra} are not in the model list {list(models)}", source="statistics")
    m_codes = m_codes.to_numpy(np.intp)
    shape = (len(queries), len(models))

    def mat(col: str) -> np.ndarray:
        out = np.full(shape, np.nan)
        out[q_codes, m_codes] = stats[col].to_numpy(float)
        return out

    mu_q, mu_c, sigma = mat("mu_q"), mat("mu_c"), mat(sigma_column)
    # latency (PROPOSED term): NaN where unknown, never filled with a prior (the latency model of
    # routers.latency fits the known pairs only)
    lat = mat("mu_latency") if "mu_latency" in stats.columns else None
    n = np.zeros(shape, np.int64)
    n[q_codes, m_codes] = stats["n"].to_numpy(np.int64)
    absent = np.isnan(mu_q)
    meta: dict = {}
    if absent.any() and missing == "mask":
        never = [models[j] for j in np.flatnonzero(absent.all(axis=0))]
        if never:
            raise DataError(f"models {never} have no observations in this dataset; drop them from the "
                            "model list or collect some", source="statistics")
        observed = ~absent
        for arr in (mu_q, mu_c, sigma):
            arr[absent] = np.broadcast_to(model_prior(arr, observed), shape)[absent]
        return Supervision(np.asarray(queries), models, mu_q, mu_c, sigma, n, kind, beta, meta, observed, lat)
    if absent.any():
        rows = np.flatnonzero(absent.any(axis=1))
        if missing == "error":
            qi, mi = np.nonzero(absent)
            shown = ", ".join(f"({queries[a]}, {models[b]})" for a, b in list(zip(qi, mi, strict=True))[:5])
            raise DataError(f"{int(absent.sum())} (query, model) pairs have no observations, e.g. {shown} "
                            "(build the supervision with missing='mask' to train on the observed pairs)",
                            source="statistics")
        keep = np.setdiff1d(np.arange(shape[0]), rows)
        meta["dropped_incomplete_queries"] = int(rows.size)
        queries, mu_q, mu_c, sigma, n = queries[keep], mu_q[keep], mu_c[keep], sigma[keep], n[keep]
        lat = None if lat is None else lat[keep]
    return Supervision(np.asarray(queries), models, mu_q, mu_c, sigma, n, kind, beta, meta, mu_latency=lat)
