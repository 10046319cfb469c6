"""Cost normalisation (DARS §A.2): min-max within each dataset, fitted on TRAINING rows only.

The reference code fits the min and max on train and test rows together, which leaks test costs
into training targets; caproute fits on train and reuses the same map for test. Test costs
outside the training range map outside [0, 1]: we do not clip, so the map stays linear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from caproute.errors import DataError


@dataclass
class CostNormalizer:
    """Per-dataset min-max cost map. ``ranges_``: {dataset: (min, max)} learned by :meth:`fit`."""

    ranges_: dict[str, tuple[float, float]] = field(default_factory=dict)

    def fit(self, obs: pd.DataFrame) -> CostNormalizer:
        """Fit on ``obs`` (pass the training rows). Needs columns dataset, cost."""
        if len(obs) == 0:
            raise DataError("cannot fit cost normalisation on zero rows", source="cost normaliser")
        agg = obs.groupby("dataset", sort=True)["cost"].agg(["min", "max"])
        self.ranges_ = {str(d): (float(r["min"]), float(r["max"])) for d, r in agg.iterrows()}
        return self

    def transform(self, obs: pd.DataFrame) -> np.ndarray:
        """Normalised costs c = (c_raw - min_D) / (max_D - min_D), 0 when max_D == min_D."""
        datasets = obs["dataset"].astype(str)
        unknown = set(datasets.unique()) - set(self.ranges_)
        if unknown:
            raise DataError(f"no fitted cost range for datasets {sorted(unknown)}", source="cost normaliser")
        lo = datasets.map({d: r[0] for d, r in self.ranges_.items()}).to_numpy(dtype=float)
        hi = datasets.map({d: r[1] for d, r in self.ranges_.items()}).to_numpy(dtype=float)
        return min_max(obs["cost"].to_numpy(dtype=float), lo, hi)

    def to_dict(self) -> dict:
        return {d: list(r) for d, r in self.ranges_.items()}

    @classmethod
    def from_dict(cls, d: dict) -> CostNormalizer:
        return cls({k: (float(v[0]), float(v[1])) for k, v in d.items()})


def min_max(cost: np.ndarray, lo, hi) -> np.ndarray:
    """Pure min-max map; 0 where the range is empty."""
    cost = np.asarray(cost, dtype=float)
    span = np.asarray(hi, dtype=float) - np.asarray(lo, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (cost - lo) / span
    return np.where(span > 0, out, 0.0)
