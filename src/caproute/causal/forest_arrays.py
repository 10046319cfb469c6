"""Tree ensembles as plain arrays, so a fitted gain model can be saved without pickle.

:func:`forest_to_arrays` flattens a fitted scikit-learn regression tree ensemble (random forest,
extra trees, or one decision tree; single output) into int64/float64 arrays that safetensors can
store; :class:`ArrayForest` predicts from those arrays in numpy, reproducing scikit-learn's
prediction (X is compared in float32 like sklearn does, leaves averaged over trees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEYS = ("left", "right", "feature", "threshold", "value", "offsets")


def forest_to_arrays(model) -> dict[str, np.ndarray]:
    """Arrays of a fitted single-output regression tree ensemble (or one tree)."""
    trees = getattr(model, "estimators_", None)
    if trees is None:
        trees = [model]
    if not hasattr(trees[0], "tree_"):
        raise TypeError(f"{type(model).__name__} is not a fitted tree ensemble")
    parts = {k: [] for k in KEYS[:-1]}
    offsets = [0]
    for est in trees:
        t = est.tree_
        if t.n_outputs != 1 or t.value.shape[2] != 1:
            raise TypeError("only single-output regression trees can be stored")
        parts["left"].append(t.children_left.astype(np.int64))
        parts["right"].append(t.children_right.astype(np.int64))
        parts["feature"].append(t.feature.astype(np.int64))
        parts["threshold"].append(t.threshold.astype(np.float64))
        parts["value"].append(t.value[:, 0, 0].astype(np.float64))
        offsets.append(offsets[-1] + t.node_count)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["offsets"] = np.asarray(offsets, dtype=np.int64)
    return out


@dataclass
class ArrayForest:
    """Prediction from :func:`forest_to_arrays` output; ``n_features`` is checked on predict."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    offsets: np.ndarray
    n_features: int

    @classmethod
    def from_model(cls, model) -> ArrayForest:
        return cls(**forest_to_arrays(model), n_features=int(model.n_features_in_))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_features: int, prefix: str = "") -> ArrayForest:
        missing = [k for k in KEYS if prefix + k not in arrays]
        if missing:
            raise KeyError(f"missing forest arrays {[prefix + k for k in missing]}")
        return cls(**{k: np.asarray(arrays[prefix + k]) for k in KEYS}, n_features=int(n_features))

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {prefix + k: getattr(self, k) for k in KEYS}

    def predict(self, X) -> np.ndarray:
        """Mean over trees of the leaf values reached by each row of X (n, n_features)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}, the forest expects (n, {self.n_features})")
        if not np.isfinite(X).all():
            raise ValueError("X must be finite")
        # scikit-learn compares float32 features with float64 thresholds
        Xf = X.astype(np.float32).astype(np.float64)
        rows = np.arange(X.shape[0])
        total = np.zeros(X.shape[0])
        n_trees = self.offsets.size - 1
        for t in range(n_trees):
            off = self.offsets[t]
            node = np.full(X.shape[0], off, dtype=np.int64)
            while True:
                left = self.left[node]
                inner = left != -1
                if not inner.any():
                    break
                go_left = Xf[rows, np.maximum(self.feature[node], 0)] <= self.threshold[node]
                nxt = np.where(go_left, left, self.right[node]) + off
                node = np.where(inner, nxt, node)
            total += self.value[node]
        return total / n_trees
