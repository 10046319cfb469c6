"""Outcome models learned from partial feedback: one logged (query, chosen model, reward) per row.

A request log holds the outcome of the chosen model only. These estimators learn E[r | x, a] for
every model a from such rows. They are the doubly robust estimator's outcome model (cross-fitted,
:func:`caproute.evaluate.offpolicy.crossfit_outcome`) and, routed by their argmax, the routers
"retrained from the log alone" of ``caproute replay simulate`` (next to caproute's own ``knn``
family trained on the log's partial grid, which takes no sample weights).

Models: :class:`PerModelKNN` (``knn``), :class:`SharedRidge` (``ridge``), :class:`MixedRidge`
(``mixed``: ridge plus query and (query, model) effects, the DR default) and :class:`LocalKNN`
(``local-knn``: one shared neighbourhood with importance weights, the retrained ``knn``).

Contract (scikit-learn style): ``__init__`` stores hyper-parameters; ``fit(X, chosen, reward,
n_models)`` returns self (a model with ``accepts_weight = True`` also takes ``weight=``, per-row
sample weights such as 1 / propensity); ``predict(X)`` returns (n, m); learned state ends in
``_``. ``X`` is dense (n, d) or scipy sparse (TF-IDF rows).

Rule for models with no logged row (stated, not hidden): their prediction is the mean of all
logged rewards (the log says nothing about them; a DR estimate stays unbiased whatever is predicted).

Routing a retrained model (:func:`route_by_outcome`) is pessimistic by default: the model with the
highest lower bound qhat - kappa * se, where ``predict_se`` is the standard error of the prediction
(reward variance over the effective number of logged rows behind it; infinite for a model with
none). Without it, the argmax chases noise: a rarely explored model that happened to succeed on
the one logged request near x wins (the winner's curse of learning from one sample per request).
"""

from __future__ import annotations

import numpy as np

from caproute.routers.knn import knn_weights


def _check(X, chosen, reward, n_models: int):
    chosen = np.asarray(chosen, dtype=np.intp)
    reward = np.asarray(reward, dtype=np.float64)
    if X.shape[0] != chosen.size or reward.shape != chosen.shape:
        raise ValueError(f"X has {X.shape[0]} rows, chosen {chosen.size}, reward {reward.size}")
    if chosen.size == 0:
        raise ValueError("cannot fit an outcome model on zero logged rows")
    if chosen.min() < 0 or chosen.max() >= n_models:
        raise ValueError("chosen holds a model index outside 0..n_models-1")
    if not np.isfinite(reward).all():
        raise ValueError("reward has non-finite values")
    return chosen, reward


def _take(X, rows):
    return X[rows] if hasattr(X, "tocsr") else np.asarray(X)[rows]


class PerModelKNN:
    """kNN on per-model neighbour sets: E[r | x, a] = the weighted mean reward of the k logged rows
    nearest to x among those that served model a (Euclidean; the DARS kNN weights 1 / (d + eps),
    exact matches share all the weight; see :func:`caproute.routers.knn.knn_weights`)."""

    name = "knn"

    def __init__(self, k: int = 16, eps: float = 1e-8):
        self.k = k
        self.eps = eps

    def fit(self, X, chosen, reward, n_models: int) -> PerModelKNN:
        chosen, reward = _check(X, chosen, reward, n_models)
        self.n_models_ = int(n_models)
        self.prior_ = float(reward.mean())
        self.var_ = _reward_var(chosen, reward, n_models)
        self.sets_ = []
        for a in range(n_models):
            rows = np.flatnonzero(chosen == a)
            self.sets_.append((_take(X, rows), reward[rows]) if rows.size else None)
        return self

    def _neighbours(self, X):
        from sklearn.metrics.pairwise import euclidean_distances

        for a, s in enumerate(self.sets_):
            if s is None or X.shape[0] == 0:
                yield a, None, None
                continue
            T, r = s
            d = np.sqrt(np.maximum(euclidean_distances(X, T, squared=True), 0.0))
            k = min(int(self.k), d.shape[1])
            idx = np.argsort(d, axis=1, kind="stable")[:, :k]
            yield a, knn_weights(np.take_along_axis(d, idx, axis=1), self.eps), r[idx]

    def predict(self, X) -> np.ndarray:
        out = np.full((X.shape[0], self.n_models_), self.prior_, dtype=np.float64)
        for a, w, r in self._neighbours(X):
            if w is not None:
                out[:, a] = np.sum(w * r, axis=1)
        return out

    def predict_se(self, X) -> np.ndarray:
        """(n, m) standard errors: sqrt(var_a * sum_j w_j^2) (the weighted mean's variance for
        independent rewards of variance var_a); infinite for a model with no logged row."""
        out = np.full((X.shape[0], self.n_models_), np.inf, dtype=np.float64)
        for a, w, _ in self._neighbours(X):
            if w is not None:
                out[:, a] = np.sqrt(self.var_[a] * np.sum(w * w, axis=1))
        return out


class SharedRidge:
    """Ridge regression with a part shared by every model and a part per model:
    r ~ b_a + theta . x + theta_a . x. The shared part learns what makes a query easy from every
    logged row (most rows serve the logging router's favourite); the per-model part (features
    scaled by ``model_scale``, i.e. a stronger penalty) learns where a model differs. Predictions
    are clipped to the range of the logged rewards."""

    name = "ridge"

    def __init__(self, alpha: float = 1.0, model_scale: float = 0.5):
        self.alpha = alpha
        self.model_scale = model_scale

    def _design(self, X, a: np.ndarray):
        import scipy.sparse as sp

        Xs = sp.csr_matrix(X, dtype=np.float64)
        n, m = Xs.shape[0], self.n_models_
        onehot = sp.csr_matrix((np.ones(n), (np.arange(n), a)), shape=(n, m))
        blocks = [Xs] + [Xs.multiply((a == j)[:, None]).tocsr() * self.model_scale for j in range(m)]
        return sp.hstack(blocks + [onehot], format="csr")

    def fit(self, X, chosen, reward, n_models: int) -> SharedRidge:
        from sklearn.linear_model import Ridge

        chosen, reward = _check(X, chosen, reward, n_models)
        self.n_models_ = int(n_models)
        self.lo_, self.hi_ = float(reward.min()), float(reward.max())
        self.prior_ = float(reward.mean())
        self.count_ = np.bincount(chosen, minlength=n_models)
        self.seen_ = self.count_ > 0
        self.var_ = _reward_var(chosen, reward, n_models)
        self.model_ = Ridge(alpha=self.alpha, solver="lsqr", fit_intercept=True).fit(self._design(X, chosen), reward)
        return self

    def predict(self, X) -> np.ndarray:
        n = X.shape[0]
        out = np.full((n, self.n_models_), self.prior_, dtype=np.float64)
        for a in np.flatnonzero(self.seen_):
            out[:, a] = self.model_.predict(self._design(X, np.full(n, a, dtype=np.intp)))
        return np.clip(out, self.lo_, self.hi_)

    def predict_se(self, X) -> np.ndarray:
        """(n, m) standard errors, per model: sqrt(var_a / n_a) for its n_a logged rows (the
        per-model part is learned from those rows only); infinite for a model with none."""
        with np.errstate(divide="ignore"):
            se = np.where(self.seen_, np.sqrt(self.var_ / np.maximum(self.count_, 1)), np.inf)
        return np.broadcast_to(se, (X.shape[0], self.n_models_)).copy()


def row_keys(X) -> list[bytes]:
    """One key per row of ``X`` (dense or scipy sparse): equal rows (the same query text under one
    encoder) get equal keys, so that repeated requests of a query can be recognised from features."""
    if hasattr(X, "tocsr"):
        X = X.tocsr()
        X.sort_indices()
        return [X.indices[X.indptr[i]:X.indptr[i + 1]].tobytes() + X.data[X.indptr[i]:X.indptr[i + 1]].tobytes()
                for i in range(X.shape[0])]
    X = np.ascontiguousarray(X)
    return [X[i].tobytes() for i in range(X.shape[0])]


class MixedRidge(SharedRidge):
    """:class:`SharedRidge` plus random effects of the query and of the (query, model) pair:
    r ~ b_a + theta . x + theta_a . x + u_query + v_(query, a), all in one ridge regression (the
    effects are indicator columns scaled by ``query_scale`` and ``pair_scale``: a ridge penalty of
    alpha / scale^2 on each, i.e. shrinkage towards 0 of a query's mean residual by its number of
    logged rows). A request log repeats queries (3,000 requests of 1,574 queries in the RouterDC
    study): the other logged requests of a query say how hard it is, for every model (u) and for
    the one served (v). Cross-fitted over requests, the prediction for request i uses the query's
    *other* requests only, whose rewards are independent of r_i given the query, so DR stays
    unbiased. A query is recognised by its feature row (:func:`row_keys`); an unseen query gets
    u = v = 0. ``query_scale`` = 1, ``pair_scale`` = 0.5 are PROPOSED: on the RouterDC study's logs
    (docs/replay.md) the settings (1, 0.5), (2, 1), (2, 0), (4, 2) gave cross-fitted residual mean
    squares within 3% of each other (0.106-0.109; :class:`SharedRidge` 0.119)."""

    name = "mixed"

    def __init__(self, alpha: float = 1.0, model_scale: float = 0.5, query_scale: float = 1.0,
                 pair_scale: float = 0.5):
        super().__init__(alpha, model_scale)
        self.query_scale = query_scale
        self.pair_scale = pair_scale

    def _design(self, X, a: np.ndarray):
        import scipy.sparse as sp

        base = super()._design(X, a)
        qi = np.array([self.query_index_.get(k, -1) for k in self._keys], dtype=np.intp)
        n, nq, m = base.shape[0], len(self.query_index_), self.n_models_
        rows = np.flatnonzero(qi >= 0)
        q = qi[rows]
        Q = sp.csr_matrix((np.full(rows.size, self.query_scale), (rows, q)), shape=(n, nq))
        P = sp.csr_matrix((np.full(rows.size, self.pair_scale), (rows, q * m + a[rows])), shape=(n, nq * m))
        return sp.hstack([base, Q, P], format="csr")

    def fit(self, X, chosen, reward, n_models: int) -> MixedRidge:
        self._keys = row_keys(X)
        self.query_index_ = {}
        for k in self._keys:
            self.query_index_.setdefault(k, len(self.query_index_))
        return super().fit(X, chosen, reward, n_models)

    def predict(self, X) -> np.ndarray:
        self._keys = row_keys(X)
        return super().predict(X)


class LocalKNN:
    """A router learned from a log with importance weights: the k nearest logged requests to x,
    whatever model served them (one shared neighbourhood, so every model is compared on the same
    queries), and per model a the importance-weighted mean reward of the neighbours that a served
    (weights w_j = 1 / propensity_j: self-normalised IPS within the neighbourhood, which undoes the
    logging policy's preference for some models on some queries), shrunk towards a's weighted mean
    over the whole log with ``prior`` pseudo-rows:

        qhat(x, a) = (n_a mu_a(x) + prior g_a) / (n_a + prior),  n_a = (sum w)^2 / sum w^2 (Kish),
        se(x, a)   = sqrt(var(r) / (n_a + prior)).

    Routed pessimistically (:func:`route_by_outcome`), a model is chosen away from the logged one
    only where the neighbourhood holds enough weighted evidence for it. Per-model neighbour sets
    (:class:`PerModelKNN`) compare models on different queries: a model the logger sends only to
    easy queries looks good everywhere. ``k`` = 64 and ``prior`` = 4 are PROPOSED (no paper gives
    them for partial feedback). Without ``weight`` every row weighs 1. A model with no logged row
    is predicted at the mean logged reward with an infinite standard error (the module's rule)."""

    name = "local-knn"
    accepts_weight = True

    def __init__(self, k: int = 64, prior: float = 4.0):
        self.k = k
        self.prior = prior

    def fit(self, X, chosen, reward, n_models: int, weight=None) -> LocalKNN:
        chosen, reward = _check(X, chosen, reward, n_models)
        w = np.ones_like(reward) if weight is None else np.asarray(weight, dtype=np.float64)
        if w.shape != reward.shape or not (np.isfinite(w).all() and (w > 0).all()):
            raise ValueError("weight must be positive and finite with shape (n,)")
        self.X_, self.a_, self.r_, self.w_ = X, chosen, reward, w
        self.n_models_ = int(n_models)
        sw = np.bincount(chosen, weights=w, minlength=n_models)
        swr = np.bincount(chosen, weights=w * reward, minlength=n_models)
        self.seen_ = sw > 0
        self.global_ = np.where(self.seen_, swr / np.where(self.seen_, sw, 1.0), float(reward.mean()))
        self.var_ = float(np.var(reward)) if reward.size > 1 else 0.25
        return self

    def _stats(self, X) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.metrics.pairwise import euclidean_distances

        d = euclidean_distances(X, self.X_, squared=True)
        k = min(int(self.k), d.shape[1])
        idx = np.argsort(d, axis=1, kind="stable")[:, :k]
        a, r, w = self.a_[idx], self.r_[idx], self.w_[idx]
        mean = np.empty((X.shape[0], self.n_models_))
        n_eff = np.empty_like(mean)
        for j in range(self.n_models_):
            wj = w * (a == j)
            sw, sw2 = wj.sum(axis=1), (wj * wj).sum(axis=1)
            n = np.where(sw2 > 0, sw * sw / np.where(sw2 > 0, sw2, 1.0), 0.0)
            local = np.where(sw > 0, (wj * r).sum(axis=1) / np.where(sw > 0, sw, 1.0), self.global_[j])
            mean[:, j] = (n * local + self.prior * self.global_[j]) / (n + self.prior)
            n_eff[:, j] = n + self.prior
        return mean, n_eff

    def predict(self, X) -> np.ndarray:
        return self._stats(X)[0]

    def predict_se(self, X) -> np.ndarray:
        """(n, m) standard errors sqrt(var(r) / (n_a + prior)); infinite for a model with no logged row."""
        return np.where(self.seen_, np.sqrt(self.var_ / self._stats(X)[1]), np.inf)


def _reward_var(chosen, reward, n_models: int) -> np.ndarray:
    """Per-model reward variance in the log (the pooled variance for a model with < 2 rows)."""
    pooled = float(np.var(reward)) if reward.size > 1 else 0.25
    out = np.full(n_models, pooled)
    for a in range(n_models):
        r = reward[chosen == a]
        if r.size > 1:
            out[a] = float(np.var(r, ddof=1))
    return out


OUTCOME_MODELS = {"knn": PerModelKNN, "ridge": SharedRidge, "mixed": MixedRidge, "local-knn": LocalKNN}


def make_outcome_model(name: str, **params):
    """A new outcome model by name (``knn``, ``ridge``, ``mixed`` or ``local-knn``)."""
    from caproute.errors import ConfigError

    if name not in OUTCOME_MODELS:
        raise ConfigError(f"unknown outcome model '{name}' (choose from {', '.join(OUTCOME_MODELS)})")
    return OUTCOME_MODELS[name](**params)


DEFAULT_KAPPA = 1.0


def route_by_outcome(qhat, se=None, kappa: float = DEFAULT_KAPPA) -> np.ndarray:
    """The model with the highest lower bound qhat - kappa * se per row (``se`` None or kappa 0:
    the highest prediction); ties go to the lower index. A model with infinite ``se`` is chosen
    only when every model's is infinite."""
    q = np.asarray(qhat, dtype=np.float64)
    if se is not None and kappa > 0:
        se = np.asarray(se, dtype=np.float64)
        lcb = q - kappa * np.where(np.isfinite(se), se, 0.0)
        q = np.where(np.isfinite(se), lcb, -np.inf)
        q = np.where(np.isfinite(q).any(axis=1, keepdims=True), q, np.asarray(qhat, dtype=np.float64))
    return np.argmax(q, axis=1)
