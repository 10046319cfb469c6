"""Capability statistics per (query, model) pair (DARS §A.3) and the variance split (§A.7).

Output columns: dataset, query_id, model, n, n_rewrites, mu_q, mu_c, sigma_q (ddof = 1, 0 when
n = 1), var_total / var_input / var_output (population form, var_input + var_output = var_total),
sigma_rewrite (sample std over rewrites of per-rewrite mean quality) and sigma_decode (mean over
rewrites of the within-rewrite sample std), used by the ablations of §A.8.

Two paths with the same formulas (:mod:`caproute.supervise.moments`): :func:`capability_stats`
for frames in memory, and :func:`capability_stats_sql` for DuckDB relations of any size (the
per-rewrite moments are aggregated in DuckDB, the combination runs in numpy).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from caproute.supervise.moments import combine_moments, grouped_moments, sample_std

STAT_COLUMNS = ("dataset", "query_id", "model", "n", "n_rewrites", "mu_q", "mu_c", "sigma_q",
                "var_total", "var_input", "var_output", "sigma_rewrite", "sigma_decode")


def _pair_codes(obs: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    codes, uniques = pd.MultiIndex.from_frame(
        obs[["dataset", "query_id", "model"]].astype(str)).factorize(sort=True)
    keys = uniques.to_frame(index=False)
    keys.columns = ["dataset", "query_id", "model"]
    return codes.astype(np.intp), keys


def _finish(keys: pd.DataFrame, q: dict, c: dict) -> pd.DataFrame:
    n = q["n"]
    out = keys.reset_index(drop=True).copy()
    out["n"] = n.astype(np.int64)
    out["n_rewrites"] = q["n_sub"].astype(np.int64)
    out["mu_q"] = q["mean"]
    out["mu_c"] = c["mean"]
    out["sigma_q"] = sample_std(q["m2"], n)
    out["var_total"] = q["m2"] / n
    out["var_input"] = q["var_input"]
    out["var_output"] = q["var_output"]
    out["sigma_rewrite"] = q["sd_between"]
    out["sigma_decode"] = q["sd_within"]
    return out


def capability_stats(obs: pd.DataFrame, cost_norm: np.ndarray | str = "cost_norm") -> pd.DataFrame:
    """Per-pair statistics from canonical observations.

    ``cost_norm``: normalised cost per row (array) or the name of a column holding it
    (see :class:`caproute.supervise.normalize.CostNormalizer`).
    """
    if len(obs) == 0:
        return pd.DataFrame(columns=list(STAT_COLUMNS))
    cost = obs[cost_norm].to_numpy(float) if isinstance(cost_norm, str) else np.asarray(cost_norm, float)
    pair, keys = _pair_codes(obs)
    n_pairs = len(keys)
    variant = obs["prompt_variant_id"].to_numpy(np.int64)
    vmin = int(variant.min())
    width = int(variant.max()) - vmin + 1
    sub = pair * width + (variant - vmin)          # dense (pair, rewrite) index, no sort needed
    n_sub = n_pairs * width
    owner = np.repeat(np.arange(n_pairs), width)
    q = combine_moments(owner, *grouped_moments(sub, obs["score"].to_numpy(float), n_sub), n_pairs)
    c = combine_moments(owner, *grouped_moments(sub, cost, n_sub), n_pairs)
    return _finish(keys, q, c)


def capability_stats_sql(con, relation: str, cost_range: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """The same statistics for a DuckDB relation (a table name or ``read_parquet('...')``).

    DuckDB aggregates per-(pair, rewrite) moments out of core; numpy combines them per pair.
    ``cost_range``: {dataset: (min, max)} from a :class:`CostNormalizer` fitted on training rows.
    """
    ranges = pd.DataFrame([(d, lo, hi) for d, (lo, hi) in cost_range.items()],
                          columns=["dataset", "lo", "hi"])
    con.register("_cost_ranges", ranges)
    try:
        sub = con.execute(f"""
            SELECT o.dataset, o.query_id, o.model,
                   count(*)::DOUBLE AS cnt,
                   avg(o.score) AS mq, var_pop(o.score) * count(*) AS m2q,
                   avg(CASE WHEN r.hi > r.lo THEN (o.cost - r.lo) / (r.hi - r.lo) ELSE 0 END) AS mc,
                   var_pop(CASE WHEN r.hi > r.lo THEN (o.cost - r.lo) / (r.hi - r.lo) ELSE 0 END)
                       * count(*) AS m2c
            FROM {relation} o JOIN _cost_ranges r USING (dataset)
            GROUP BY o.dataset, o.query_id, o.model, o.prompt_variant_id
            ORDER BY o.dataset, o.query_id, o.model
        """).df()
    finally:
        con.unregister("_cost_ranges")
    if sub.empty:
        return pd.DataFrame(columns=list(STAT_COLUMNS))
    keys = sub[["dataset", "query_id", "model"]]
    change = np.ones(len(sub), dtype=bool)
    change[1:] = (keys.iloc[1:].to_numpy() != keys.iloc[:-1].to_numpy()).any(axis=1)
    owner = np.cumsum(change) - 1
    n_pairs = int(owner[-1]) + 1
    count = sub["cnt"].to_numpy(float)
    q = combine_moments(owner, count, sub["mq"].to_numpy(float), sub["m2q"].to_numpy(float), n_pairs)
    c = combine_moments(owner, count, sub["mc"].to_numpy(float), sub["m2c"].to_numpy(float), n_pairs)
    return _finish(keys[change], q, c)
