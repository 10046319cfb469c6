"""Scale alignment of gold gains to the preference scale (Meta-Router Remark 1, §C.3 step 0).

Gold gains r and preference gains y live on different scales (a rubric score difference vs a
{-1, 0, +1} verdict). Before pooling, the gold labels are rescaled, r <- c * r, with c > 0 from
one of three rules. Each is a pure function of the two label samples (NaNs are not allowed; the
caller passes the rows it uses). Without alignment the Meta-Router loses its edge over gold-only
(paper, ablation iii).
"""

from __future__ import annotations

import numpy as np

from caproute.errors import DataError

ALIGNMENTS = ("variance", "magnitude", "wasserstein", "none")


def _check(r: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, y = np.asarray(r, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if r.size == 0 or y.size == 0:
        raise DataError("scale alignment needs at least one gold and one preference label", source="align")
    if not (np.isfinite(r).all() and np.isfinite(y).all()):
        raise DataError("scale alignment got NaN or infinite labels", source="align")
    return r, y


def magnitude_scale(r, y) -> float:
    """c = mean|y| / mean|r| (magnitude matching)."""
    r, y = _check(r, y)
    den = np.mean(np.abs(r))
    if den == 0:
        raise DataError("all gold gains are 0: magnitude alignment is undefined (use align='none')",
                        source="align")
    return float(np.mean(np.abs(y)) / den)


def variance_scale(r, y) -> float:
    """c = sd(y) / sd(r), empirical (population, ddof = 0) standard deviations.

    The official code's data file is named ``varstd``: this is the rule of the main experiment.
    """
    r, y = _check(r, y)
    den = np.std(r)
    if den == 0:
        raise DataError("gold gains have zero spread: variance alignment is undefined (use align='none' "
                        "or more gold labels)", source="align")
    return float(np.std(y) / den)


def wasserstein_scale(r, y) -> float:
    """c* = argmin_{c >= 0} W2(c * r, y) between the two empirical distributions.

    With quantile functions Q_r, Q_y on (0, 1], W2^2(c r, y) = integral (c Q_r(u) - Q_y(u))^2 du
    for c >= 0, minimised by c* = integral Q_r Q_y du / integral Q_r^2 du. Both quantile
    functions are step functions (steps at i/n and j/m), so the integrals are exact sums over the
    merged steps; for n = m this is sum r_(i) y_(i) / sum r_(i)^2. c is restricted to c >= 0
    (a negative scale would reverse the gains' meaning); c* = 0 is an error.
    """
    r, y = _check(r, y)
    rs, ys = np.sort(r), np.sort(y)
    n, m = rs.size, ys.size
    edges = np.union1d(np.arange(n + 1) / n, np.arange(m + 1) / m)
    width = np.diff(edges)
    mid = (edges[:-1] + edges[1:]) / 2
    qr = rs[np.minimum((mid * n).astype(int), n - 1)]
    qy = ys[np.minimum((mid * m).astype(int), m - 1)]
    den = np.sum(width * qr * qr)
    if den == 0:
        raise DataError("all gold gains are 0: Wasserstein alignment is undefined (use align='none')",
                        source="align")
    c = float(np.sum(width * qr * qy) / den)
    if c <= 0:
        raise DataError(f"Wasserstein scale c* = {c:.4g} <= 0: gold and preference gains are not "
                        "positively related; use another alignment", source="align")
    return c


def scale_factor(r, y, method: str = "variance") -> float:
    """The factor c of alignment ``method`` (one of :data:`ALIGNMENTS`; ``none`` gives 1)."""
    if method == "none":
        _check(r, y)
        return 1.0
    funcs = {"variance": variance_scale, "magnitude": magnitude_scale, "wasserstein": wasserstein_scale}
    if method not in funcs:
        raise DataError(f"unknown alignment '{method}' (choose from {ALIGNMENTS})", source="align")
    return funcs[method](r, y)
