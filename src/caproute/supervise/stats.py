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

from caproute.supervise.moments import (
    combine_moments,
    grouped_moments,
    sample_std,
    stats_from_rewrite_columns,
)
from caproute.supervise.normalize import min_max

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


MAX_SQL_REWRITES = 64


def capability_stats_sql(con, relation: str, cost_range: dict[str, tuple[float, float]], *,
                         decode_risk: bool = False, where: str | None = None) -> pd.DataFrame:
    """The same statistics for a DuckDB relation (a table name or ``read_parquet('...')``).

    DuckDB streams the rows (out of core) in ONE group-by over pairs, with per-rewrite count,
    sum and sum of squares as filtered aggregates (one column each per prompt_variant_id);
    :func:`caproute.supervise.moments.stats_from_rewrite_columns` turns them into the statistics.
    Normalised cost is linear in raw cost, so mu_c is normalised after averaging.
    ``cost_range``: {dataset: (min, max)} from a :class:`CostNormalizer` fitted on training rows.
    ``decode_risk``: also compute sigma_decode (needs per-rewrite sums of squares, one more
    aggregate per rewrite); otherwise that column is NaN. Everything else is always computed.
    ``where``: an optional SQL filter (e.g. the train split, or one hash partition of queries).
    """
    from caproute.errors import DataError

    cond = f" WHERE {where}" if where else ""
    found = con.execute(f"SELECT DISTINCT dataset, prompt_variant_id FROM {relation}{cond}").fetchall()
    if not found:
        return pd.DataFrame(columns=list(STAT_COLUMNS))
    datasets = sorted({str(d) for d, _ in found})
    variants = sorted({int(v) for _, v in found})
    if len(variants) > MAX_SQL_REWRITES:
        raise DataError(f"{len(variants)} distinct prompt_variant_id values; the SQL path handles at "
                        f"most {MAX_SQL_REWRITES} (use capability_stats on a frame)", source=relation)
    unknown = set(datasets) - set(cost_range)
    if unknown:
        raise DataError(f"no fitted cost range for datasets {sorted(unknown)}", source=relation)
    aggs = []
    for i, v in enumerate(variants):
        f = f"FILTER (WHERE prompt_variant_id = {v})"
        aggs.append(f"count(*) {f}::DOUBLE AS n_{i}, coalesce(sum(score) {f}, 0) AS s_{i}")
        if decode_risk:
            aggs.append(f"coalesce(sum(score * score) {f}, 0) AS q_{i}")
    # One dataset (the common case): group by (query_id, model) only, which is cheaper.
    keys = "query_id, model" if len(datasets) == 1 else "dataset, query_id, model"
    arrays = con.execute(f"""
        SELECT {keys}, sum(cost) AS s_c, sum(score * score) AS s_q, {", ".join(aggs)}
        FROM {relation}{cond} GROUP BY {keys}
    """).fetchnumpy()
    n_rows = len(arrays["query_id"])
    if len(datasets) == 1:
        dataset_col = np.full(n_rows, datasets[0], dtype=object)
        lo, hi = cost_range[datasets[0]]
    else:
        dataset_col = np.asarray(arrays["dataset"], dtype=object)
        ds = pd.Series(dataset_col)
        lo = ds.map({d: r[0] for d, r in cost_range.items()}).to_numpy(float)
        hi = ds.map({d: r[1] for d, r in cost_range.items()}).to_numpy(float)
    sums = pd.DataFrame({"dataset": dataset_col, "query_id": np.asarray(arrays["query_id"], dtype=object),
                         "model": np.asarray(arrays["model"], dtype=object)})
    k = range(len(variants))
    n_k = np.column_stack([np.asarray(arrays[f"n_{i}"], float) for i in k])
    s_k = np.column_stack([np.asarray(arrays[f"s_{i}"], float) for i in k])
    q_k = np.column_stack([np.asarray(arrays[f"q_{i}"], float) for i in k]) if decode_risk else None
    q = stats_from_rewrite_columns(n_k, s_k, np.asarray(arrays["s_q"], float), q_k)
    mu_c = min_max(np.asarray(arrays["s_c"], float) / q["n"], lo, hi)
    return _finish(sums, q, {"mean": mu_c})
