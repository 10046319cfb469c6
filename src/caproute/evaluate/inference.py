"""Inference for every printed verdict (issue 24.3): t tests at the actual degrees of freedom,
the Nadeau-Bengio corrected resampled t test, Welch's test, Holm's multiplicity correction and
confidence intervals. Pure numpy/scipy functions on arrays; reports call these instead of
comparing |t| with 2.

- :func:`t_critical` — two-sided critical value t_{1-alpha/2, df} (``scipy.stats.t.ppf``); with
  4 degrees of freedom (5 seeds) it is 2.776, not 2.
- :func:`mean_test` — one-sample (or paired, on differences) t test of mean(d) = 0, df = n - 1.
- :func:`corrected_resampled_test` — Nadeau & Bengio (2003, Machine Learning 52:239): J resampled
  train/test splits of the same data are not independent, so the variance of the mean difference
  is (1/J + n_test/n_train) · s² instead of s²/J; t = mean / that se, df = J - 1.
- :func:`welch_test` — two independent samples, unequal variances, Welch-Satterthwaite df.
- :func:`holm` — Holm's step-down adjusted p-values (family-wise error rate at alpha over the
  cells tested together).

Every test returns a :class:`TestResult` with the interval mean ± t_crit · se next to the
verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ALPHA = 0.05


def t_critical(df: float, alpha: float = ALPHA) -> float:
    """Two-sided critical value of Student's t with ``df`` degrees of freedom (inf = normal)."""
    from scipy import stats

    if not (df > 0):
        return float("nan")
    return float(stats.t.ppf(1.0 - alpha / 2.0, df))


def _two_sided_p(t: float, df: float) -> float:
    from scipy import stats

    if not np.isfinite(df) or df <= 0 or np.isnan(t):
        return float("nan")
    if np.isinf(t):
        return 0.0
    return float(2.0 * stats.t.sf(abs(t), df))


@dataclass(frozen=True)
class TestResult:
    """A test of mean = 0 (a difference): estimate, se, df, t, two-sided p, (1 - alpha) CI."""

    test: str
    n: int
    mean: float
    se: float
    df: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    alpha: float = ALPHA

    @property
    def significant(self) -> bool:
        return bool(np.isfinite(self.p) and self.p < self.alpha)

    def ci_text(self, nd: int = 3) -> str:
        """'[-0.012, +0.034]' (the (1 - alpha) interval of the mean difference)."""
        if not (np.isfinite(self.ci_low) and np.isfinite(self.ci_high)):
            return "[n/a]"
        return f"[{self.ci_low:+.{nd}f}, {self.ci_high:+.{nd}f}]"

    def to_dict(self) -> dict:
        return asdict(self)


def _result(test: str, n: int, mean: float, se: float, df: float, alpha: float) -> TestResult:
    if se > 0 and np.isfinite(se) and df > 0:
        t = mean / se
        half = t_critical(df, alpha) * se
        return TestResult(test, n, mean, se, df, float(t), _two_sided_p(t, df), mean - half, mean + half, alpha)
    if se == 0 and df > 0:      # constant differences: decided exactly, the interval is the point
        t = float(np.sign(mean) * np.inf) if mean else 0.0
        return TestResult(test, n, mean, 0.0, df, t, 0.0 if mean else 1.0, mean, mean, alpha)
    nan = float("nan")
    return TestResult(test, n, mean, nan, df, nan, nan, nan, nan, alpha)


def _sd(d: np.ndarray) -> float:
    """Sample std (ddof = 1), with rounding noise (below 1e-12 of the values' scale) read as 0."""
    sd = float(d.std(ddof=1))
    return 0.0 if sd <= 1e-12 * max(1.0, float(np.abs(d).max())) else sd


def mean_test(d, alpha: float = ALPHA) -> TestResult:
    """One-sample t test of mean(d) = 0 (a paired test when d holds paired differences):
    se = s / sqrt(n) (s with ddof = 1), df = n - 1. d (n,); NaN entries are dropped."""
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n == 0:
        return _result("t", 0, float("nan"), float("nan"), 0, alpha)
    mean = float(d.mean())
    se = _sd(d) / np.sqrt(n) if n > 1 else float("nan")
    return _result("t", n, mean, se, n - 1, alpha)


def paired_test(a, b, alpha: float = ALPHA) -> TestResult:
    """Paired t test of mean(a - b) = 0 (a, b (n,) paired by seed, run or query)."""
    return mean_test(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), alpha)


def nadeau_bengio_se(d, n_train: float, n_test: float) -> float:
    """Corrected standard error of the mean of J resampled-split differences d (J,):
    sqrt((1/J + n_test/n_train) · s²), s² the sample variance (ddof = 1)."""
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2 or not (n_train > 0 and n_test > 0):
        return float("nan")
    return float(np.sqrt((1.0 / d.size + float(n_test) / float(n_train)) * d.var(ddof=1)))


def corrected_resampled_test(d, n_train: float, n_test: float, alpha: float = ALPHA) -> TestResult:
    """Nadeau-Bengio corrected resampled t test of mean(d) = 0 over J resampled train/test splits:
    se from :func:`nadeau_bengio_se`, df = J - 1. ``n_train``/``n_test``: sizes (or any two numbers
    in the same ratio) of one split's training and test parts."""
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = int(d.size)
    mean = float(d.mean()) if n else float("nan")
    if n > 1 and _sd(d) == 0.0:
        return _result("Nadeau-Bengio t", n, mean, 0.0, n - 1, alpha)
    return _result("Nadeau-Bengio t", n, mean, nadeau_bengio_se(d, n_train, n_test), n - 1, alpha)


def welch_test(a, b, alpha: float = ALPHA) -> TestResult:
    """Welch's two-sample t test of mean(a) - mean(b) = 0 with the Welch-Satterthwaite df."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    na, nb = int(a.size), int(b.size)
    if na < 2 or nb < 2:
        return _result("Welch t", na + nb, float("nan"), float("nan"), 0, alpha)
    mean = float(a.mean() - b.mean())
    va, vb = _sd(a) ** 2 / na, _sd(b) ** 2 / nb
    if va + vb == 0:
        return _result("Welch t", na + nb, mean, 0.0, na + nb - 2, alpha)
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return _result("Welch t", na + nb, mean, float(np.sqrt(va + vb)), float(df), alpha)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order: with p_(1) <= ... <= p_(m),
    p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)). NaN entries stay NaN and do not count in m.
    Reject the cells with p~ < alpha (family-wise error rate alpha)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adj)
    return out


def verdict(res: TestResult, p_adjusted: float | None = None, *, higher: str = "higher",
            lower: str = "lower") -> str:
    """'higher (p = 0.012, Holm p = 0.036; 95% CI [+0.01, +0.05])', 'no significant difference
    (...)' or 'not tested'. ``p_adjusted``: the multiplicity-corrected p that decides."""
    return verdict_text(res.mean, res.p, res.alpha, res.ci_low, res.ci_high, p_adjusted,
                        higher=higher, lower=lower)


def verdict_text(mean: float, p: float, alpha: float, ci_low: float, ci_high: float,
                 p_adjusted: float | None = None, *, higher: str = "higher", lower: str = "lower") -> str:
    """The verdict sentence of :func:`verdict` from its numbers (a CI that is not finite is left out)."""
    decide = p if p_adjusted is None else p_adjusted
    if not np.isfinite(decide):
        return "not tested"
    ps = f"p = {p:.2g}" + ("" if p_adjusted is None else f", Holm p = {p_adjusted:.2g}")
    ci = (f"; {1 - alpha:.0%} CI [{ci_low:+.3f}, {ci_high:+.3f}]"
          if np.isfinite(ci_low) and np.isfinite(ci_high) else "")
    what = (higher if mean > 0 else lower) if decide < alpha else "no significant difference"
    return f"{what} ({ps}{ci})"
