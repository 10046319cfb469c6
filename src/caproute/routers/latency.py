"""Predicted latency per (query, model) for the PROPOSED latency term of U (issue 27, not the paper's).

U = mu_q - lambda mu_c - lambda_t mu_latency - beta sigma_q needs mu_latency at decision time. Every
router family predicts mu_q, mu_c, sigma_q its own way; latency is predicted by one model shared by
all families, fitted on the same query features and saved in the pipeline next to the router
(``latency/``), so that any trained router can weigh latency.

The model (PROPOSED, our choice; no paper gives one): per model j, a ridge regression of the pair's
mean latency in seconds on the query features,

    mu_latency(x, j) = b_j + x . w_j,   b_j = mean of y_j,
    w_j = argmin_w |X_j w - (y_j - b_j)|^2 + alpha |w|^2,

over the training queries X_j where model j has a known latency (partial grids: the observed pairs
only; a model with no latency at all has no prediction and the whole model is unavailable).
Predictions are clipped to the range of the model's training latencies [min y_j, max y_j], so a
far-away query never gets a negative or runaway latency. ``alpha`` = 1.0 (PROPOSED). The ridge is
solved by LSQR with damping sqrt(alpha) on sparse rows (TF-IDF features stay cheap at 20,000
dimensions); it converges to the closed form, which the tests check by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from caproute.core import artifact
from caproute.errors import ConfigError

DEFAULT_ALPHA = 1.0          # PROPOSED ridge penalty
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
STATE_FILE = "state.safetensors"
_LSQR_TOL = 1e-10
_LSQR_ITER = 1000


def fit_ridge(X, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """(w, b) of the ridge above for rows ``X`` (n, d; dense or scipy sparse) and targets ``y`` (n,):
    b = mean(y), w minimises |X w - (y - b)|^2 + alpha |w|^2."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import lsqr

    y = np.asarray(y, np.float64)
    b = float(y.mean())
    A = X.astype(np.float64) if hasattr(X, "tocsr") else csr_matrix(X, dtype=np.float64)
    w = lsqr(A, y - b, damp=float(np.sqrt(alpha)), atol=_LSQR_TOL, btol=_LSQR_TOL, iter_lim=_LSQR_ITER)[0]
    return w, b


def predict_linear(X, W: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(n, m) clip(b + X W, lo, hi) for rows ``X`` (dense or scipy sparse), weights W (d, m)."""
    pred = np.asarray(X @ W, dtype=np.float64) + b[None, :]
    return np.clip(pred, lo[None, :], hi[None, :])


class LatencyModel:
    """Per-model ridge regression of latency (seconds) on query features (see the module docstring)."""

    def __init__(self, alpha: float = DEFAULT_ALPHA):
        if not np.isfinite(alpha) or alpha <= 0:
            raise ConfigError(f"latency ridge alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def fit(self, X, mu_latency: np.ndarray, models) -> LatencyModel:
        """``mu_latency`` (n, m): NaN where a pair's latency is unknown (those pairs are left out)."""
        lat = np.asarray(mu_latency, np.float64)
        self.models_ = tuple(models)
        if lat.shape != (X.shape[0], len(self.models_)):
            raise ValueError(f"mu_latency has shape {lat.shape}, expected {(X.shape[0], len(self.models_))}")
        known = np.isfinite(lat)
        missing = [m for m, k in zip(self.models_, known.any(axis=0), strict=True) if not k]
        if missing:
            raise ValueError(f"models {missing} have no observation with a latency")
        if (lat[known] < 0).any():
            raise ValueError("latencies must be >= 0 seconds")
        from scipy.sparse import csr_matrix

        X = csr_matrix(X)   # once: TF-IDF rows are sparse even when the encoder hands them over dense
        m = len(self.models_)
        self.W_ = np.zeros((X.shape[1], m), np.float64)
        self.b_, self.lo_, self.hi_ = np.zeros(m), np.zeros(m), np.zeros(m)
        for j in range(m):
            rows = np.flatnonzero(known[:, j])
            y = lat[rows, j]
            self.W_[:, j], self.b_[j] = fit_ridge(X[rows], y, self.alpha)
            self.lo_[j], self.hi_[j] = y.min(), y.max()
        self.n_features_in_ = int(X.shape[1])
        return self

    def predict(self, X) -> np.ndarray:
        """(n, m) predicted mean latency in seconds."""
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the latency model was fitted on {self.n_features_in_}")
        return predict_linear(X, self.W_, self.b_, self.lo_, self.hi_)

    # -- persistence (the artifact mechanism: versioned, checksummed, no pickle) ----------------------
    def save(self, path: str | Path) -> Path:
        arrays = {"W": self.W_.astype(np.float32), "b": self.b_, "lo": self.lo_, "hi": self.hi_}
        config: dict[str, Any] = {"model": "ridge", "alpha": self.alpha, "models": list(self.models_),
                                  "n_features_in": self.n_features_in_}
        return artifact.write_artifact(path, CONFIG_FILE, config, version=FORMAT_VERSION,
                                       state_file=STATE_FILE, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path) -> LatencyModel:
        from safetensors.numpy import load as load_bytes

        config, blob = artifact.read_artifact(path, CONFIG_FILE, version=FORMAT_VERSION,
                                              what="latency model", state_file=STATE_FILE)
        cfg_file = Path(path) / CONFIG_FILE
        try:
            out = cls(float(config["alpha"]))
            out.models_ = tuple(config["models"])
            out.n_features_in_ = int(config["n_features_in"])
            arrays = load_bytes(blob)
            out.W_ = arrays["W"].astype(np.float64)
            out.b_, out.lo_, out.hi_ = (arrays[k].astype(np.float64) for k in ("b", "lo", "hi"))
        except KeyError as e:
            raise ConfigError(f"{cfg_file}: field or array {e} is missing") from None
        if out.W_.shape != (out.n_features_in_, len(out.models_)):
            raise ConfigError(f"{cfg_file}: weights of shape {out.W_.shape} do not match "
                              f"{out.n_features_in_} features x {len(out.models_)} models")
        return out
