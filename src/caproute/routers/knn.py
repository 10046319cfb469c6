"""kNN router (DARS §A.10 kNNRouter, after Li 2025 §E.7).

Euclidean distances to the training queries; the k = 16 nearest vote with weights
w_j = 1 / (d_j + 1e-8), normalised; if any of them is an exact match (d <= 1e-12) the exact
matches share all the weight. Predictions are the weighted means of the training targets
mu_q, mu_c, sigma_q (clipped to [0, 1]). All values FOUND (reference ``methods/knn_router.py``).

Partial grids (ours): each model has its own neighbour set, the k nearest training queries on
which that model was observed, so a prediction for model m averages only m's observed
statistics. On a full grid every model's set is the same and the predictions are unchanged.
"""

from __future__ import annotations

import numpy as np

from caproute.routers.base import Router, StatsPrediction, clip01, clipped_targets, register

SMALL_PRODUCT = 50_000_000
#: up to this many sparse query rows, products are taken row by row (:func:`sparse_rows_product`)
SPARSE_ROWS_LOOP = 8
#: up to this many distances (queries x training rows) :func:`nearest` sorts each row instead of
#: partitioning it (the same neighbours): for a query or two, a sort of a few hundred values costs
#: less than partition + tie check + ordering the k; for more, the sort's n log n loses
SORT_ALL = 1024
_CONTROLLER = None


def blas_threads_for(flops: int):
    """One BLAS thread for small products (a single query): waking OpenBLAS's worker threads costs
    more than the product, and on a busy machine it can stall for tens of milliseconds."""
    global _CONTROLLER
    from contextlib import nullcontext

    if flops > SMALL_PRODUCT:
        return nullcontext()
    try:
        if _CONTROLLER is None:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()
        return _CONTROLLER.limit(limits=1, user_api="blas")
    except ImportError:
        return nullcontext()


def knn_weights(dist: np.ndarray, eps: float = 1e-8, exact_tol: float = 1e-12) -> np.ndarray:
    """Neighbour weights per row from distances (n, k): inverse distance, or uniform over exact matches."""
    dist = np.asarray(dist, np.float64)
    exact = dist <= exact_tol
    w = 1.0 / (dist + eps)
    if exact.any():   # rows with an exact match: 1 on the matches, 0 elsewhere
        w = np.where(exact.any(axis=1, keepdims=True), exact, w)
    return w / (w.sum(axis=1, keepdims=True) + 1e-12)


def sparse_rows_product(X, train_t: np.ndarray, cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Squared norms (n,) and products with the training rows (n, n_train) of sparse rows ``X``
    (scipy, or the CSR arrays of :class:`~caproute.features.tfidf.SparseRows`); ``cols``: only
    these training rows (columns of ``train_t``), in this order.

    For a few rows (a query at a time) each row's product is the weighted sum of the
    ``train_t`` rows at its nonzero columns, read straight from the CSR arrays: scipy's sparse
    product and elementwise multiply build intermediate matrices whose checks cost more than the
    arithmetic. Many rows go through scipy's product.
    """
    n = X.shape[0]
    if n > SPARSE_ROWS_LOOP:
        X = X.tocsr()
        prod = np.asarray(X @ train_t)
        # scipy's product sums each column on its own (y[c] += a * t[c] per nonzero a), so the
        # columns asked for equal the product with a copy of those training rows, without the copy
        return (np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel(),
                prod if cols is None else np.take(prod, cols, axis=1))
    data, indices, indptr = X.data, X.indices, X.indptr
    x_sq = np.empty(n, np.float64)
    prod = np.empty((n, train_t.shape[1] if cols is None else len(cols)),
                    dtype=np.promote_types(data.dtype, train_t.dtype))
    for i in range(n):
        s, e = indptr[i], indptr[i + 1]
        row = data[s:e]
        x_sq[i] = np.dot(row, row)
        t = train_t[indices[s:e]]
        prod[i] = row @ (t if cols is None else np.take(t, cols, axis=1))
    return x_sq, prod


def dense_rows(X, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of sparse ``X`` (scipy CSR, or the CSR arrays of
    :class:`~caproute.features.tfidf.SparseRows`) as a dense array."""
    starts, lengths = X.indptr[rows], X.indptr[rows + 1] - X.indptr[rows]
    ends = np.cumsum(lengths)
    pos = np.arange(ends[-1] if len(rows) else 0) + np.repeat(starts - (ends - lengths), lengths)
    out = np.zeros((len(rows), X.shape[1]), X.data.dtype)
    np.add.at(out, (np.repeat(np.arange(len(rows)), lengths), X.indices[pos]), X.data[pos])   # duplicates add up
    return out


def nearest(X, train: np.ndarray, train_sq: np.ndarray, k: int, train_t: np.ndarray | None = None,
            rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n, k) and Euclidean distances (n, k) of the k nearest training rows, nearest first
    (ties by training order). ``X``: dense (n, d), a scipy sparse matrix or
    :class:`~caproute.features.tfidf.SparseRows`; ``train_t``: optional C-contiguous copy of
    ``train.T`` (a sparse X times it avoids copying ``train`` on every call); ``rows``: search
    only these training rows (indices returned are then positions in ``rows``).

    Distances come from |x|^2 + |t|^2 - 2 x.t (one matrix product); pairs whose value is tiny
    relative to the norms, where that form loses all precision, are recomputed directly so that
    exact matches come out as 0.
    """
    sparse = hasattr(X, "tocsr")
    if rows is not None:
        train_sq = train_sq[rows]
    if sparse:   # CSR rows (TF-IDF): the product costs nnz x n_train instead of n x d x n_train
        x_sq, prod = sparse_rows_product(X, train_t if train_t is not None else np.ascontiguousarray(train.T), rows)
    else:
        x_sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        t = train if rows is None else train[rows]
        with blas_threads_for(X.shape[0] * X.shape[1] * t.shape[0]):
            prod = X @ t.T
    norms = x_sq[:, None] + train_sq[None, :]
    d2 = norms - 2.0 * prod.astype(np.float64)
    np.maximum(d2, 0.0, out=d2)
    close = d2 <= 1e-4 * (norms + 1e-30)
    if close.any():
        qi, ti = np.nonzero(close)
        q_rows = dense_rows(X, qi) if sparse else X[qi]
        diff = q_rows.astype(np.float64) - train[ti if rows is None else rows[ti]].astype(np.float64)
        d2[qi, ti] = np.einsum("ij,ij->i", diff, diff)
    n, n_train = d2.shape
    rows_ix = np.arange(n)[:, None]
    if k < n_train and d2.size > SORT_ALL:
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        sub = d2[rows_ix, part]
        # argpartition does not order ties by index: a row tied with its k-th value is sorted below
        if np.count_nonzero(d2 <= sub.max(axis=1, keepdims=True)) == n * k:
            order = np.lexsort((part, sub), axis=1)
            return part[rows_ix, order], np.sqrt(sub[rows_ix, order])
    part = np.argsort(d2, axis=1, kind="stable")[:, :k]       # nearest first, ties by training order
    return part, np.sqrt(d2[rows_ix, part])


@register
class KNNRouter(Router):
    name = "knn"
    param_spec = {"k": ">= 1", "eps": "> 0"}
    beta_in_training = False
    accepts_sparse = True

    def __init__(self, k: int = 16, eps: float = 1e-8):
        self.k = k
        self.eps = eps

    def fit(self, X, supervision) -> KNNRouter:
        X = self._validate_fit(X, supervision)
        if self.k < 1:
            raise ValueError("k must be >= 1")
        self.X_ = X
        self.XT_ = None     # built on the first sparse query
        self.sq_ = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        self.targets_ = np.stack(clipped_targets(supervision))     # (3, n, m)
        self.targets64_ = self.targets_.astype(np.float64)         # what predictions average
        observed = getattr(supervision, "observed", None)
        self.observed_ = None if observed is None else np.asarray(observed, bool)
        return self

    def predict_stats(self, X, lam: float | None = None) -> StatsPrediction:
        X = self._validate_sparse_X(X) if hasattr(X, "tocsr") else self._validate_X(X)
        k = min(int(self.k), self.X_.shape[0])
        if hasattr(X, "tocsr") and getattr(self, "XT_", None) is None:
            self.XT_ = np.ascontiguousarray(self.X_.T)
        if getattr(self, "observed_", None) is None:
            idx, dist = nearest(X, self.X_, self.sq_, k, getattr(self, "XT_", None))
            w = knn_weights(dist, self.eps)                             # (n, k)
            pred = np.einsum("nk,tnkm->tnm", w, self.targets64_[:, idx, :])
        else:
            pred = self._predict_per_model(X)
        mu_q, mu_c, sigma = clip01(pred)
        return StatsPrediction(self.models_, mu_q, mu_c, sigma)

    def _predict_per_model(self, X) -> np.ndarray:
        """(3, n, m) predictions from per-model neighbour sets (the k nearest training queries on
        which each model was observed)."""
        n, m = X.shape[0], len(self.models_)
        pred = np.empty((3, n, m))
        for j in range(m):
            rows = np.flatnonzero(self.observed_[:, j])
            k = min(int(self.k), rows.size)
            idx, dist = nearest(X, self.X_, self.sq_, k, getattr(self, "XT_", None), rows)
            w = knn_weights(dist, self.eps)
            pred[:, :, j] = np.einsum("nk,tnk->tn", w, self.targets64_[:, rows[idx], j])
        return pred

    def _state(self):
        arrays = {"X": self.X_, "targets": self.targets_}
        if getattr(self, "observed_", None) is not None:
            arrays["observed"] = self.observed_.astype(np.uint8)
        return arrays, {}

    def _load_state(self, arrays, meta) -> None:
        self.X_ = arrays["X"].astype(np.float32)
        self.observed_ = arrays["observed"].astype(bool) if "observed" in arrays else None
        self.XT_ = None
        self.targets_ = arrays["targets"].astype(np.float32)
        self.targets64_ = self.targets_.astype(np.float64)
        self.sq_ = np.einsum("ij,ij->i", self.X_, self.X_, dtype=np.float64)
