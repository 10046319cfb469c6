"""``caproute replay``: off-policy evaluation of saved routers on a request log (issue 22.3).

:func:`replay_log` takes a validated :class:`~caproute.evaluate.replay_log.RequestLog` and saved
routing pipelines (``caproute train`` folders, loaded with
:meth:`caproute.routers.pipeline.RoutingPipeline.load`) and returns, per candidate, IPS, SNIPS
and doubly robust estimates (:mod:`caproute.evaluate.offpolicy`) with percentile bootstrap
intervals (DR: influence-function normal intervals) and the effective sample size. Each request is
decided at the log's lambda / beta where the log carries them, and at its lambda_t (the PROPOSED
latency weight; 0 where absent). The DR outcome model is the candidate's: fitted on the
candidate's own features of the logged queries, cross-fitted over requests. A candidate that
chooses a model the logging policy could not have served, or that cannot weigh latency (no latency
model, or a policy router) on a log routed at lambda_t > 0, is refused (named in ``refused``).
:func:`plot_replay` draws the estimates against the logging policy's observed mean.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from caproute.errors import ConfigError, DataError
from caproute.evaluate import offpolicy as ope
from caproute.evaluate.outcome_models import make_outcome_model
from caproute.evaluate.replay_log import RequestLog

ROW_KEYS = ("candidate", "estimator", "value", "ci_low", "ci_high", "ess", "n")


@dataclass
class ReplayResult:
    """``rows``: one per (candidate, estimator) with :data:`ROW_KEYS`; ``observed``: the logging
    policy's mean reward; ``refused``: candidate -> reason."""

    rows: pd.DataFrame
    observed: ope.Estimate
    refused: dict[str, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def records(self) -> list[dict]:
        return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
                for r in self.rows.to_dict("records")]


def decision_groups(log: RequestLog, lam: float, beta: float) -> dict[tuple[float, float, float], np.ndarray]:
    """{(lambda, beta, lambda_t): row indices}: the log's own lambda / beta / lambda_t per row (the
    reward was computed, and the serving router decided, at them), the candidate's saved ``lam`` /
    ``beta`` where a row has none, and lambda_t 0 (the paper's utility) where a row has none."""
    lams = log.lams or [None] * log.n
    betas = log.betas or [None] * log.n
    lam_ts = log.lam_ts or [None] * log.n
    keys = [(lam if a is None else float(a), beta if b is None else float(b), 0.0 if t is None else float(t))
            for a, b, t in zip(lams, betas, lam_ts, strict=True)]
    out: dict[tuple[float, float, float], list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return {k: np.asarray(v, dtype=np.intp) for k, v in out.items()}


def candidate_policy(pipe, log: RequestLog) -> tuple[np.ndarray, object, list[str]]:
    """(pi, X, unknown): the candidate's one-hot policy (n, m + 1) over the log's models plus a
    last column for models that no logged request offered (always unsupported), its features of
    the logged queries, and the names of those never-offered models it chooses. Each request is
    decided at the log's lambda / beta / lambda_t (:func:`decision_groups`), not the candidate's saved
    ones; a :class:`ConfigError` when the candidate cannot weigh latency at a row's lambda_t > 0."""
    if log.texts is not None:
        X = pipe.features(log.texts)
    else:
        X = log.features
        d = getattr(pipe.router, "n_features_in_", None)
        if d is not None and X.shape[1] != d:
            raise DataError(f"logged features have {X.shape[1]} dimensions, the router expects {d}",
                            source=log.source, field="features")
    choice = np.empty(log.n, dtype=np.intp)
    for (lam, beta, lam_t), rows in decision_groups(log, pipe.lam, pipe.beta).items():
        Xg = X[rows] if len(rows) < log.n else X
        choice[rows] = np.asarray(pipe.choose_features(Xg, lam, beta, lam_t)[1], dtype=np.intp)
    names = np.asarray(pipe.models, dtype=object)[choice]
    idx = pd.Index(log.models).get_indexer(names)
    pi = np.zeros((log.n, len(log.models) + 1))      # last column: models the log never offered
    pi[np.arange(log.n), np.where(idx >= 0, idx, len(log.models))] = 1.0
    return pi, X, sorted(set(names[idx < 0].tolist()))


def replay_log(log: RequestLog, candidates: dict[str, object], *, outcome: str = "ridge",
               folds: int = ope.DEFAULT_FOLDS, n_boot: int = ope.DEFAULT_BOOTSTRAP, alpha: float = ope.ALPHA,
               seed: int = 42) -> ReplayResult:
    """Evaluate each candidate pipeline (name -> RoutingPipeline) on ``log``."""
    counts = ope.bootstrap_counts(log.n, n_boot, seed)
    observed = ope.observed_mean(log.reward, counts=counts, alpha=alpha)
    rows, refused, decided = [], {}, {}
    m = len(log.models)
    for name, pipe in candidates.items():
        decided[name] = [{"lambda": k[0], "beta": k[1], "lambda_t": k[2], "requests": int(v.size)}
                         for k, v in decision_groups(log, pipe.lam, pipe.beta).items()]
        try:
            pi_ext, X, unknown = candidate_policy(pipe, log)
        except ConfigError as e:  # e.g. no latency model, asked for the log's lambda_t > 0
            refused[name] = f"candidate '{name}' cannot be evaluated on this log: {e}"
            continue
        support = np.hstack([log.support, np.zeros((log.n, 1), dtype=bool)])
        try:
            ope.check_support(pi_ext, support, [*log.models, "(never offered)"], name)
        except ope.UnsupportedCandidateError as e:
            if unknown:
                e.models = [m_ for m_ in e.models if m_ != "(never offered)"] + unknown
            refused[name] = str(ope.UnsupportedCandidateError(name, e.models, e.n_rows, e.n))
            continue
        pi = pi_ext[:, :m]
        qhat = ope.crossfit_outcome(lambda: make_outcome_model(outcome), X, log.chosen, log.reward, m,
                                    folds=folds, seed=seed)
        for est in ope.evaluate_policy(pi, log.chosen, log.propensity, log.reward, qhat, counts=counts,
                                       alpha=alpha):
            rows.append({"candidate": name, **{k: getattr(est, k) for k in ROW_KEYS[1:]}})
    meta = {"log": log.source, "n": log.n, "models": list(log.models), "outcome": outcome, "folds": folds,
            "bootstrap": n_boot, "alpha": alpha, "seed": seed, "decided_at": decided,
            "policy_versions": sorted({v for v in (log.policy_versions or []) if v is not None})}
    return ReplayResult(pd.DataFrame(rows, columns=list(ROW_KEYS)), observed, refused, meta)


def load_candidates(paths: list[str | os.PathLike]) -> dict[str, object]:
    """Saved router folders -> {name: RoutingPipeline}; names are the folder names (made unique)."""
    from caproute.routers.pipeline import RoutingPipeline

    out: dict[str, object] = {}
    for p in paths:
        name = Path(p).name or str(p)
        base, k = name, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out[name] = RoutingPipeline.load(p)
    return out


def plot_replay(rows: pd.DataFrame, observed: ope.Estimate | None, out: str | os.PathLike, *,
                truth: dict[str, float] | None = None, title: str = "replay: candidates vs the logging policy") -> Path:
    """One figure: each candidate's estimates (one marker per estimator) with their intervals,
    against the logging policy's observed mean (line and band); ``truth`` (candidate -> value)
    adds the true values of a simulation as crosses."""
    from caproute.core.figures import pyplot, save_figure

    plt = pyplot()
    cands = list(dict.fromkeys(rows["candidate"]))
    ests = list(dict.fromkeys(rows["estimator"]))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(cands) + 2), 3.6))
    if observed is not None:
        ax.axhline(observed.value, color="0.3", lw=1, label="logging policy (observed mean)")
        ax.axhspan(observed.ci_low, observed.ci_high, color="0.85", zorder=0)
    width = 0.7 / max(1, len(ests))
    markers = "osD^v<>"
    for j, est in enumerate(ests):
        part = rows[rows["estimator"] == est].set_index("candidate").reindex(cands)
        x = np.arange(len(cands)) - 0.35 + width * (j + 0.5)
        v = part["value"].to_numpy(float)
        err = np.vstack([v - part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float) - v])
        ax.errorbar(x, v, yerr=np.where(np.isfinite(err), err, 0), fmt=markers[j % len(markers)], capsize=3,
                    label=est)
    if truth:
        ax.scatter(np.arange(len(cands)), [truth.get(c, np.nan) for c in cands], marker="x", color="k",
                   zorder=5, label="true value")
    ax.set_xticks(np.arange(len(cands)))
    ax.set_xticklabels(cands, rotation=20, ha="right")
    ax.set_ylabel("estimated value (mean reward)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, out, dpi=120)
