"""Coverage of a (query, model) grid: which pairs have observations.

Real traffic is not a grid: a routed request gets one model's answer. Supervision, diagnostics
and the bench report how much of the n x m grid was observed, per model (queries observed) and
per query (models observed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Coverage:
    """Observed pairs of an n queries x m models grid.

    ``per_model``: {model: queries with an observation}; ``per_query``: {k: queries with exactly
    k observed models}, k = 1..m.
    """

    n_queries: int
    models: tuple[str, ...]
    observed_pairs: int
    per_model: dict[str, int]
    per_query: dict[int, int]

    @property
    def total_pairs(self) -> int:
        return self.n_queries * len(self.models)

    @property
    def fraction(self) -> float:
        return self.observed_pairs / self.total_pairs if self.total_pairs else float("nan")

    @property
    def complete(self) -> bool:
        return self.observed_pairs == self.total_pairs

    def to_dict(self) -> dict:
        return {"n_queries": self.n_queries, "n_models": len(self.models), "observed_pairs": self.observed_pairs,
                "total_pairs": self.total_pairs, "fraction": self.fraction, "per_model": dict(self.per_model),
                "queries_by_models_observed": {str(k): v for k, v in self.per_query.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> Coverage:
        """The inverse of :meth:`to_dict`."""
        return cls(int(d["n_queries"]), tuple(d["per_model"]), int(d["observed_pairs"]), dict(d["per_model"]),
                   {int(k): int(v) for k, v in d["queries_by_models_observed"].items()})

    def summary(self) -> str:
        """One line: 'coverage 12/15 pairs (80.0%); queries per model: a 5, b 4; models per query: 1: 2, 2: 3'."""
        per_model = ", ".join(f"{m} {c}" for m, c in self.per_model.items())
        per_query = ", ".join(f"{k}: {v}" for k, v in self.per_query.items() if v)
        return (f"coverage {self.observed_pairs}/{self.total_pairs} pairs ({self.fraction:.1%}); "
                f"queries per model: {per_model}; queries by models observed: {per_query}")


def coverage_from_mask(observed: np.ndarray, models) -> Coverage:
    """Coverage of a boolean mask (n, m) of observed pairs (columns in ``models`` order)."""
    observed = np.asarray(observed, bool)
    models = tuple(models)
    n, m = observed.shape
    if m != len(models):
        raise ValueError(f"mask has {m} columns for {len(models)} models")
    per_model = {name: int(c) for name, c in zip(models, observed.sum(axis=0), strict=True)}
    counts = np.bincount(observed.sum(axis=1), minlength=m + 1)
    return Coverage(n, models, int(observed.sum()), per_model, {k: int(counts[k]) for k in range(1, m + 1)})


def coverage_from_pairs(query_ids, models_of_pairs, models=None) -> Coverage:
    """Coverage from the pairs that exist (one entry per observed (query, model) pair, e.g. the rows
    of a statistics table); ``models``: the model list (default: the sorted distinct models)."""
    import pandas as pd

    q_codes, queries = pd.factorize(pd.Series(query_ids).astype(str), sort=True)
    names = tuple(sorted(pd.unique(pd.Series(models_of_pairs).astype(str)))) if models is None else tuple(models)
    m_codes = pd.Index(names).get_indexer(pd.Series(models_of_pairs).astype(str))
    if (m_codes < 0).any():
        raise ValueError("a pair names a model outside the model list")
    mask = np.zeros((len(queries), len(names)), bool)
    mask[q_codes, m_codes] = True
    return coverage_from_mask(mask, names)
