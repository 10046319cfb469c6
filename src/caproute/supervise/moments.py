"""Pure, vectorised moment kernels (numpy only; no Python loop over groups).

The DARS statistics are built from per-(pair, rewrite) sufficient statistics (count, mean,
sum of squared deviations M2), combined into per-pair statistics. The same combination is used
for in-memory arrays and for moments that DuckDB computed out of core, so both paths agree.
"""

from __future__ import annotations

import numpy as np


def grouped_moments(group: np.ndarray, values: np.ndarray, n_groups: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group (count, mean, M2), computed on data shifted by each group's first value.

    The shift keeps the sum of squares accurate and makes a group of identical values give
    exactly mean = value and M2 = 0. ``group``: int array (n,) in [0, n_groups); ``values``:
    float array (n,). Empty groups get count 0, mean NaN, M2 0.
    """
    group = np.asarray(group, dtype=np.intp)
    values = np.asarray(values, dtype=np.float64)
    count = np.bincount(group, minlength=n_groups).astype(np.float64)
    first = np.zeros(n_groups, dtype=np.intp)
    rev = np.arange(group.size - 1, -1, -1)
    first[group[rev]] = rev            # repeated indices: the last write (= first row) wins
    shift = values[first] if values.size else np.zeros(n_groups)
    x = values - shift[group]
    s1 = np.bincount(group, weights=x, minlength=n_groups)
    s2 = np.bincount(group, weights=x * x, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = s1 / count
        mean = shift + d
        m2 = np.maximum(s2 - s1 * d, 0.0)
    m2 = np.where(count > 0, m2, 0.0)
    return count, mean, m2


def combine_moments(owner: np.ndarray, count: np.ndarray, mean: np.ndarray, m2: np.ndarray,
                    n_owners: int) -> dict[str, np.ndarray]:
    """Combine sub-group moments (one row per rewrite) into owner (pair) statistics.

    Returns arrays of length ``n_owners``:
    ``n``, ``mean``, ``m2`` (total M2), ``var_input`` = sum_k (n_k/n) (mean_k - mean)^2,
    ``var_output`` = sum_k (n_k/n) var_k (population variance within rewrite k), ``n_sub``
    (non-empty sub-groups), ``sd_between`` = sample std (ddof=1) of the sub-group means and
    ``sd_within`` = mean over sub-groups of the sample std (ddof=1) within each sub-group.

    ``var_input + var_output`` equals the population variance of all observations of the owner
    (law of total variance, count-weighted so it holds for unbalanced grids too; in a balanced
    K x R grid the weights are 1/K and this is Var_k(mean_r q) + mean_k Var_r(q)).
    """
    owner = np.asarray(owner, dtype=np.intp)
    keep = count > 0
    owner, count, mean, m2 = owner[keep], count[keep], mean[keep], m2[keep]
    n = np.bincount(owner, weights=count, minlength=n_owners)
    n_sub = np.bincount(owner, minlength=n_owners).astype(np.float64)
    # shift by each owner's first sub-group mean: identical means give exactly zero spread
    first = np.zeros(n_owners, dtype=np.intp)
    rev = np.arange(owner.size - 1, -1, -1)
    first[owner[rev]] = rev
    shift = mean[first] if mean.size else np.zeros(n_owners)
    x = mean - shift[owner]
    with np.errstate(invalid="ignore", divide="ignore"):
        s1 = np.bincount(owner, weights=count * x, minlength=n_owners)
        d = s1 / n
        mu = shift + d
        between = np.maximum(np.bincount(owner, weights=count * x * x, minlength=n_owners) - s1 * d, 0.0)
        within = np.bincount(owner, weights=m2, minlength=n_owners)
        # unweighted spread of rewrite means (the "rewrite risk" of the ablation, ddof = 1)
        u1 = np.bincount(owner, weights=x, minlength=n_owners)
        ss_sub = np.maximum(np.bincount(owner, weights=x * x, minlength=n_owners) - u1 * u1 / n_sub, 0.0)
        sd_between = np.where(n_sub > 1, np.sqrt(ss_sub / np.maximum(n_sub - 1, 1)), 0.0)
        sd_k = np.where(count > 1, np.sqrt(m2 / np.maximum(count - 1, 1)), 0.0)
        sd_within = np.bincount(owner, weights=sd_k, minlength=n_owners) / n_sub
        var_input = between / n
        var_output = within / n
    return {
        "n": n, "mean": mu, "m2": between + within, "var_input": var_input,
        "var_output": var_output, "n_sub": n_sub, "sd_between": sd_between, "sd_within": sd_within,
    }


def stats_from_rewrite_columns(n_k: np.ndarray, s_k: np.ndarray, total_sq: np.ndarray,
                               q_k: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-pair statistics from per-rewrite raw sums laid out as (n_pairs, K) matrices.

    ``n_k`` counts and ``s_k`` sums of scores per rewrite k (0 where a pair lacks rewrite k),
    ``total_sq`` the pair's sum of squared scores (n_pairs,), ``q_k`` optional per-rewrite sums
    of squares (only needed for ``sd_within``, else NaN). Same outputs as
    :func:`combine_moments`, in raw-moment form (what one SQL group-by returns); variances are
    clamped at 0.
    """
    n_k, s_k = np.asarray(n_k, dtype=np.float64), np.asarray(s_k, dtype=np.float64)
    has = n_k > 0
    safe_n = np.where(has, n_k, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n_k.sum(axis=1)
        mu = s_k.sum(axis=1) / n
        m_k = np.where(has, s_k / safe_n, 0.0)
        between_ss = (n_k * m_k * m_k).sum(axis=1)          # sum_k n_k m_k^2
        var_input = np.maximum(between_ss / n - mu * mu, 0.0)
        var_output = np.maximum(np.asarray(total_sq, dtype=np.float64) - between_ss, 0.0) / n
        n_sub = has.sum(axis=1).astype(np.float64)
        u1, u2 = m_k.sum(axis=1), (m_k * m_k).sum(axis=1)
        ss_sub = np.maximum(u2 - u1 * u1 / n_sub, 0.0)
        sd_between = np.where(n_sub > 1, np.sqrt(ss_sub / np.maximum(n_sub - 1, 1)), 0.0)
        if q_k is None:
            sd_within = np.full(n.shape, np.nan)
        else:
            v_k = np.where(has, np.maximum(np.asarray(q_k, float) / safe_n - m_k * m_k, 0.0), 0.0)
            sd_k = np.where(n_k > 1, np.sqrt(v_k * n_k / np.maximum(n_k - 1, 1)), 0.0)
            sd_within = sd_k.sum(axis=1) / n_sub
    return {"n": n, "mean": mu, "m2": (var_input + var_output) * n, "var_input": var_input,
            "var_output": var_output, "n_sub": n_sub, "sd_between": sd_between, "sd_within": sd_within}


#: Up to this many columns, numpy's row sum of an (n, K) matrix adds the columns left to right;
#: from 8 on it switches to pairwise summation with 8 accumulators (numpy's ``pairwise_sum``).
_SEQUENTIAL_ROWSUM = 8


def _rowsum(cols: list[np.ndarray]) -> np.ndarray:
    """``np.column_stack(cols).sum(axis=1)`` with the same rounding, without the matrix for K < 8."""
    if len(cols) >= _SEQUENTIAL_ROWSUM:
        return np.column_stack(cols).sum(axis=1)
    out = cols[0] + 0.0          # numpy starts each row's sum at 0.0 (turns -0.0 into 0.0, like it)
    for c in cols[1:]:
        out += c
    return out


#: Rows per block in :func:`stats_from_rewrite_sums`: the temporaries of one block stay in cache
#: and are reused, instead of page-faulting ~35 fresh full-length arrays (that was most of the time).
BLOCK_ROWS = 8192


def stats_from_rewrite_sums(n_k: list[np.ndarray], s_k: list[np.ndarray], total_sq: np.ndarray,
                            q_k: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """:func:`stats_from_rewrite_columns` for the rewrite sums given as K separate columns
    (what a column-oriented result, e.g. Arrow from DuckDB, holds), computed column by column in
    blocks of :data:`BLOCK_ROWS` rows.

    Same formulas, same operation order and so the same floating-point results as the matrix
    form (tests/test_supervise_sums.py checks bit-for-bit agreement): every output row depends on
    its own input row only, so blocking changes nothing but memory traffic.
    """
    n_k = [np.asarray(a, dtype=np.float64) for a in n_k]
    s_k = [np.asarray(a, dtype=np.float64) for a in s_k]
    if len(n_k) != len(s_k) or not n_k or (q_k is not None and len(q_k) != len(n_k)):
        raise ValueError("n_k, s_k (and q_k) need the same, non-zero number of columns")
    total_sq = np.asarray(total_sq, dtype=np.float64)
    q_k = None if q_k is None else [np.asarray(a, dtype=np.float64) for a in q_k]
    n_rows = total_sq.shape[0]
    if n_rows <= BLOCK_ROWS:
        return _rewrite_sums_block(n_k, s_k, total_sq, q_k)
    out: dict[str, np.ndarray] = {}
    for lo in range(0, n_rows, BLOCK_ROWS):
        sl = slice(lo, lo + BLOCK_ROWS)
        part = _rewrite_sums_block([a[sl] for a in n_k], [a[sl] for a in s_k], total_sq[sl],
                                   None if q_k is None else [a[sl] for a in q_k])
        if not out:
            out = {key: np.empty(n_rows, dtype=v.dtype) for key, v in part.items()}
        for key, v in part.items():
            out[key][sl] = v
    return out


def _rewrite_sums_block(n_k: list[np.ndarray], s_k: list[np.ndarray], total_sq: np.ndarray,
                        q_k: list[np.ndarray] | None) -> dict[str, np.ndarray]:
    if len(n_k) >= _SEQUENTIAL_ROWSUM:   # pairwise row sums: the matrix form is exact by definition
        q_mat = None if q_k is None else np.column_stack(q_k)
        return stats_from_rewrite_columns(np.column_stack(n_k), np.column_stack(s_k), total_sq, q_mat)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = _rowsum(n_k)
        mu = _rowsum(s_k) / n
        has = [a > 0 for a in n_k]
        safe_n = [np.where(h, a, 1.0) for h, a in zip(has, n_k, strict=True)]
        m_k = [np.where(h, s / sn, 0.0) for h, s, sn in zip(has, s_k, safe_n, strict=True)]
        sq_k = [m * m for m in m_k]
        between_ss = _rowsum([a * m * m for a, m in zip(n_k, m_k, strict=True)])
        var_input = np.maximum(between_ss / n - mu * mu, 0.0)
        var_output = np.maximum(total_sq - between_ss, 0.0) / n
        n_sub = _rowsum([h.astype(np.float64) for h in has])
        u1, u2 = _rowsum(m_k), _rowsum(sq_k)
        ss_sub = np.maximum(u2 - u1 * u1 / n_sub, 0.0)
        sd_between = np.where(n_sub > 1, np.sqrt(ss_sub / np.maximum(n_sub - 1, 1)), 0.0)
        if q_k is None:
            sd_within = np.full(n.shape, np.nan)
        else:
            sd = []
            for h, a, sn, q, sq in zip(has, n_k, safe_n, q_k, sq_k, strict=True):
                v = np.where(h, np.maximum(q / sn - sq, 0.0), 0.0)
                sd.append(np.where(a > 1, np.sqrt(v * a / np.maximum(a - 1, 1)), 0.0))
            sd_within = _rowsum(sd) / n_sub
    return {"n": n, "mean": mu, "m2": (var_input + var_output) * n, "var_input": var_input,
            "var_output": var_output, "n_sub": n_sub, "sd_between": sd_between, "sd_within": sd_within}


def sample_std(m2: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Sample standard deviation (ddof = 1) from M2 and counts; 0 where n <= 1 (pandas NaN -> 0)."""
    m2 = np.asarray(m2, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.maximum(m2, 0.0) / (n - 1))
    return np.where(n > 1, sd, 0.0)
