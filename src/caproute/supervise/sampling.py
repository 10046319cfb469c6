"""Observation sub-sampling: the single-shot baseline (§A.3) and K x R protocols (§A.9).

All samplers are vectorised and seeded; run ``r`` of a series uses seed ``seed + r`` as in the
reference code, so run r is the same whatever the number of runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd


def _group_index(obs: pd.DataFrame, cols: list[str]) -> np.ndarray:
    return pd.MultiIndex.from_frame(obs[cols].astype(str)).factorize()[0].astype(np.intp)


def single_shot_indices(pair: np.ndarray, seed: int) -> np.ndarray:
    """One row index per pair, uniformly at random within the pair. ``pair``: (n,) group codes."""
    pair = np.asarray(pair, dtype=np.intp)
    order = np.argsort(pair, kind="stable")
    sorted_pair = pair[order]
    starts = np.flatnonzero(np.r_[True, sorted_pair[1:] != sorted_pair[:-1]])
    sizes = np.diff(np.r_[starts, sorted_pair.size])
    rng = np.random.default_rng(seed)
    pick = starts + np.floor(rng.random(starts.size) * sizes).astype(np.intp)
    return order[pick]


def single_shot(obs: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One observation per (dataset, query, model), drawn uniformly with ``seed``."""
    idx = single_shot_indices(_group_index(obs, ["dataset", "query_id", "model"]), seed)
    return obs.iloc[np.sort(idx)].reset_index(drop=True)


def single_shot_sets(obs: pd.DataFrame, n_sets: int, seed: int = 42) -> Iterator[pd.DataFrame]:
    """``n_sets`` independent single-shot training sets (seeds seed + run)."""
    pair = _group_index(obs, ["dataset", "query_id", "model"])
    for run in range(n_sets):
        yield obs.iloc[np.sort(single_shot_indices(pair, seed + run))].reset_index(drop=True)


def _rank_within(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    order = np.lexsort((key, group))
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, g.size])
    rank = np.empty(group.size, dtype=np.int64)
    rank[order] = np.arange(group.size) - np.repeat(starts, sizes)
    return rank


def subsample_grid(obs: pd.DataFrame, k: int, r: int, seed: int) -> pd.DataFrame:
    """Keep K rewrites per query (the same rewrites for every model) and R decodes per
    (pair, rewrite), chosen uniformly at random with ``seed``. Pairs with fewer keep all."""
    if k < 1 or r < 1:
        raise ValueError("K and R must be >= 1")
    rng = np.random.default_rng(seed)
    variants = obs[["dataset", "query_id", "prompt_variant_id"]].drop_duplicates()
    variants = variants.assign(_key=rng.random(len(variants)))
    vgroup = _group_index(variants, ["dataset", "query_id"])
    variants = variants.assign(_rank=_rank_within(vgroup, variants["_key"].to_numpy()))
    kept = variants[variants["_rank"] < k][["dataset", "query_id", "prompt_variant_id"]]
    sub = obs.merge(kept, on=["dataset", "query_id", "prompt_variant_id"], how="inner")
    dgroup = _group_index(sub, ["dataset", "query_id", "model", "prompt_variant_id"])
    rank = _rank_within(dgroup, rng.random(len(sub)))
    return sub[rank < r].reset_index(drop=True)
