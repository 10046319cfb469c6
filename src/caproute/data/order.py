"""The canonical order of observation rows (the data layer's rule; training code in bench,
train and the adaptive study sorts with it first)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the canonical order of observation rows: results must not depend on the order of a file's rows
#: (the single-shot draw picks a row within its pair by position; score and cost break exact ties)
CANONICAL_ORDER = ["dataset", "query_id", "model", "observation_type", "prompt_variant_id", "decode_id",
                   "score", "cost"]


def canonical_rows(obs: pd.DataFrame) -> pd.DataFrame:
    """``obs`` sorted by :data:`CANONICAL_ORDER` (ids compared as strings), index reset. Training
    code (``caproute bench`` and ``caproute train``) sorts its rows with this before anything else,
    so the same observations in any file order give the same supervision draws and features."""
    cols = []
    for c in CANONICAL_ORDER:
        if c not in obs.columns:
            continue
        if c in ("dataset", "query_id", "model", "observation_type"):
            cols.append(pd.factorize(obs[c].astype(str), sort=True)[0])
        else:
            cols.append(pd.to_numeric(obs[c], errors="coerce").to_numpy(np.float64))
    order = np.lexsort(cols[::-1]) if cols else np.arange(len(obs))
    return obs.iloc[order].reset_index(drop=True)
