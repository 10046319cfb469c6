"""AvengersPro router (DARS §A.10 version of Zhang et al. §E.5). Values FOUND (reference
``methods/avengers_pro.py``).

KMeans(n_clusters = 32, n_init = 10, max_iter = 300, random_state = seed) on the training
features; per cluster, the mean mu_q, mu_c, sigma_q of each model over its member queries (the
global mean for an empty cluster). A test query gets the uniform average over its 3 nearest
centres (Euclidean). The original paper's alpha-score routing is not used. With fewer training
queries than clusters, the number of clusters is the number of queries (our choice).

Partial grids (ours): a model's cluster statistics average only its member queries on which it was
observed; a (cluster, model) with none gets the model's mean over all its observed queries (the
empty-cluster rule, per model). Clusters are fitted on every training query.
"""

from __future__ import annotations

import numpy as np

from caproute.routers.base import Router, StatsPrediction, clip01, clipped_targets, register
from caproute.routers.knn import nearest


def cluster_means(labels: np.ndarray, targets: np.ndarray, k: int, observed: np.ndarray | None = None) -> np.ndarray:
    """Per-cluster means of ``targets`` (t, n, m) -> (t, k, m); empty clusters get the global mean.

    ``observed`` (n, m): only observed pairs count, per model (an empty (cluster, model) gets the
    model's mean over its observed queries)."""
    if observed is not None:
        return _observed_cluster_means(labels, targets, k, np.asarray(observed, bool))
    t, n, m = targets.shape
    sums = np.zeros((t, k, m))
    np.add.at(sums, (slice(None), labels), targets.astype(np.float64))
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    glob = targets.astype(np.float64).mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[None, :, None]
    return np.where(counts[None, :, None] > 0, means, glob)


def _observed_cluster_means(labels: np.ndarray, targets: np.ndarray, k: int, observed: np.ndarray) -> np.ndarray:
    t, n, m = targets.shape
    w = observed.astype(np.float64)
    vals = targets.astype(np.float64) * w[None]
    sums = np.zeros((t, k, m))
    np.add.at(sums, (slice(None), labels), vals)
    counts = np.zeros((k, m))
    np.add.at(counts, labels, w)
    glob = vals.sum(axis=1, keepdims=True) / np.maximum(w.sum(axis=0), 1.0)[None, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[None]
    return np.where(counts[None] > 0, means, glob)


@register
class AvengersProRouter(Router):
    name = "avengerspro"
    param_spec = {"n_clusters": ">= 1", "n_init": ">= 1", "max_iter": ">= 1", "top_k": ">= 1"}
    beta_in_training = False

    def __init__(self, n_clusters: int = 32, n_init: int = 10, max_iter: int = 300, top_k: int = 3,
                 seed: int = 42):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.top_k = top_k
        self.seed = seed

    def fit(self, X, supervision) -> AvengersProRouter:
        import scipy.sparse as sp
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        from caproute.routers._torch import use_sparse

        X = self._validate_fit(X, supervision)
        k = min(int(self.n_clusters), X.shape[0])
        data = sp.csr_matrix(X) if use_sparse(X) else X
        with threadpool_limits(1):     # fixed thread count: identical clusters on any machine load
            km = KMeans(n_clusters=k, n_init=int(self.n_init), max_iter=int(self.max_iter),
                        random_state=int(self.seed)).fit(data)
        self.centers_ = np.asarray(km.cluster_centers_, np.float32)
        self.stats_ = cluster_means(km.labels_, np.stack(clipped_targets(supervision)), k,
                                    getattr(supervision, "observed", None))   # (3, k, m)
        return self

    def predict_stats(self, X, lam: float | None = None) -> StatsPrediction:
        X = self._validate_X(X)
        top = min(int(self.top_k), self.centers_.shape[0])
        sq = np.einsum("ij,ij->i", self.centers_, self.centers_, dtype=np.float64)
        idx, _ = nearest(X, self.centers_, sq, top)
        pred = self.stats_[:, idx, :].mean(axis=2)                 # (3, n, m)
        return StatsPrediction(self.models_, *(clip01(p) for p in pred))

    def _state(self):
        return {"centers": self.centers_, "stats": self.stats_}, {}

    def _load_state(self, arrays, meta) -> None:
        self.centers_ = arrays["centers"].astype(np.float32)
        self.stats_ = arrays["stats"].astype(np.float64)
