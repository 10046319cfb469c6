"""Capability statistics per (query, model) pair (DARS §A.3) and the variance split (§A.7).

Output columns: dataset, query_id, model, n, n_rewrites, mu_q, mu_c, sigma_q (ddof = 1, 0 when
n = 1), var_total / var_input / var_output (population form, var_input + var_output = var_total),
sigma_rewrite (sample std over rewrites of per-rewrite mean quality) and sigma_decode (mean over
rewrites of the within-rewrite sample std), used by the ablations of §A.8. When the observations
have ``latency_s``, also mu_latency = the pair's mean latency in seconds (the PROPOSED latency term
of :func:`caproute.supervise.utility.utility`; not normalised).

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
    stats_from_rewrite_sums,
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


def _finish(keys: pd.DataFrame, q: dict, c: dict, latency: np.ndarray | None = None) -> pd.DataFrame:
    n = q["n"]
    cols = {name: keys[name].array for name in ("dataset", "query_id", "model")}
    cols.update({
        "n": n.astype(np.int64), "n_rewrites": q["n_sub"].astype(np.int64), "mu_q": q["mean"],
        "mu_c": c["mean"], "sigma_q": sample_std(q["m2"], n), "var_total": q["m2"] / n,
        "var_input": q["var_input"], "var_output": q["var_output"], "sigma_rewrite": q["sd_between"],
        "sigma_decode": q["sd_within"],
    })
    if latency is not None:
        cols["mu_latency"] = latency
    # one constructor, no copies: every array here is freshly computed and owned by the frame
    return pd.DataFrame(cols, copy=False)


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
    latency = None
    if "latency_s" in obs.columns:
        latency = np.bincount(pair, obs["latency_s"].to_numpy(float), n_pairs) / np.bincount(pair, None, n_pairs)
    return _finish(keys, q, c, latency)


MAX_SQL_REWRITES = 64


def _constant_strings(value: str, n: int):
    """An Arrow string array holding ``value`` n times, built from its buffers (no Python objects)."""
    import pyarrow as pa

    b = value.encode("utf-8")
    if n * len(b) >= 2**31:
        return pa.array([value] * n, type=pa.large_string())
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(len(b))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(b * n))


def _arrow(con, query: str):
    """The result of ``query`` as a pyarrow Table (DuckDB's relation API: no extra copy)."""
    rel = con.sql(query)
    table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    return table.read_all() if hasattr(table, "read_all") else table


def capability_stats_sql(con, relation: str, cost_range: dict[str, tuple[float, float]], *,
                         decode_risk: bool = False, where: str | None = None) -> pd.DataFrame:
    """The same statistics for a DuckDB relation (a table name or ``read_parquet('...')``).

    DuckDB streams the rows (out of core) in ONE group-by over pairs, with per-rewrite count,
    sum and sum of squares as filtered aggregates (one column each per prompt_variant_id), and
    returns them as Arrow columns; :func:`caproute.supervise.moments.stats_from_rewrite_sums`
    turns them into the statistics.
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
        aggs.append(f"count(*) {f}::DOUBLE AS n_{i}, coalesce(sum(score) {f}, 0)::DOUBLE AS s_{i}")
        if decode_risk:
            aggs.append(f"coalesce(sum(score * score) {f}, 0)::DOUBLE AS q_{i}")
    # One dataset (the common case): group by (query_id, model) only, which is cheaper.
    keys = "query_id, model" if len(datasets) == 1 else "dataset, query_id, model"
    has_latency = "latency_s" in {d[0] for d in con.execute(f"SELECT * FROM {relation} LIMIT 0").description}
    if has_latency:
        aggs.append("sum(latency_s)::DOUBLE AS s_t")
    table = _arrow(con, f"""
        SELECT {keys}, sum(cost)::DOUBLE AS s_c, sum(score * score)::DOUBLE AS s_q, {", ".join(aggs)}
        FROM {relation}{cond} GROUP BY {keys}
    """)
    if len(datasets) == 1:
        table = table.append_column("dataset", _constant_strings(datasets[0], table.num_rows))
    # Arrow, not fetchnumpy/df: the key strings go into pandas' string columns without one Python
    # object per value (fetching them was most of this function's time at 10M rows).
    sums = table.select(["dataset", "query_id", "model"]).to_pandas()
    if len(datasets) == 1:
        lo, hi = cost_range[datasets[0]]
    else:
        lo = sums["dataset"].map({d: r[0] for d, r in cost_range.items()}).to_numpy(float)
        hi = sums["dataset"].map({d: r[1] for d, r in cost_range.items()}).to_numpy(float)

    def col(name: str) -> np.ndarray:   # sums are cast to DOUBLE in SQL (a DECIMAL score sums exactly)
        return np.asarray(table.column(name).combine_chunks().to_numpy(zero_copy_only=False), np.float64)

    k = range(len(variants))
    q = stats_from_rewrite_sums([col(f"n_{i}") for i in k], [col(f"s_{i}") for i in k], col("s_q"),
                                [col(f"q_{i}") for i in k] if decode_risk else None)
    mu_c = min_max(col("s_c") / q["n"], lo, hi)
    return _finish(sums, q, {"mean": mu_c}, col("s_t") / q["n"] if has_latency else None)
