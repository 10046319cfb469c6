"""Diagnostics of supervision noise (DARS §3.3, App. C.5; spec §A.7).

- outcome instability  OI = mean_{x,m} 1[max_o q - min_o q > eps]            (eps = 1e-6, our choice)
- winner flip rate     WFR = mean_x 1[|{argmax_m u_{x,m,o} : o}| > 1]       (o aligned across models)
- single-vs-DA disagreement  mean_{x,o} 1[argmax_m u_{x,m,o} != argmax_m (mu_q - lam mu_c)]
  (the DA label has no risk term here: the paper's text mentions only expected quality and cost)
- input / output variance: mean over pairs of the law-of-total-variance split (population form).

Observation o is the pair (prompt_variant_id, decode_id); a query enters the winner statistics
with the observations that every model has. Ties use the hard-label tie rule
(:func:`caproute.supervise.labels.hard_labels`). ``coverage``: the observed (query, model) pairs,
per model and per query (:class:`caproute.supervise.coverage.Coverage`); on a partial grid the
winner statistics use the queries whose observations every model has.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from caproute.supervise.coverage import coverage_from_pairs
from caproute.supervise.labels import hard_labels
from caproute.supervise.stats import capability_stats
from caproute.supervise.utility import DEFAULT_LAMBDA

EPS = 1e-6


@dataclass
class Diagnostics:
    dataset: str
    n_queries: int
    n_models: int
    n_observations: int
    outcome_instability: float
    winner_flip_rate: float
    single_vs_da_disagreement: float
    input_variance: float
    output_variance: float
    input_variance_share: float
    winners_per_query: dict[int, float]
    lam: float
    coverage: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["winners_per_query"] = {str(k): v for k, v in self.winners_per_query.items()}
        return d


def outcome_instability(q_min: np.ndarray, q_max: np.ndarray, eps: float = EPS) -> float:
    """Fraction of pairs whose quality range over observations exceeds eps."""
    return float(np.mean((np.asarray(q_max) - np.asarray(q_min)) > eps))


def observation_labels(u: np.ndarray, c: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Single-shot winners per (query, observation). ``u``, ``c``: (n_q, n_o, n_m); ``valid``: (n_q, n_o).

    Returns (n_q, n_o) ints, -1 where the observation is missing for some model.
    """
    nq, no, nm = u.shape
    lab = hard_labels(u.reshape(-1, nm), c.reshape(-1, nm)).reshape(nq, no)
    return np.where(valid, lab, -1)


def winner_flip_rate(labels: np.ndarray) -> tuple[float, np.ndarray]:
    """WFR and the number of distinct winners per query. ``labels``: (n_q, n_o), -1 = missing."""
    nq, _ = labels.shape
    m = int(labels.max()) + 1 if labels.size else 0
    counts = np.zeros((nq, max(m, 1)), dtype=np.int64)
    qi, oi = np.nonzero(labels >= 0)
    np.add.at(counts, (qi, labels[qi, oi]), 1)
    distinct = (counts > 0).sum(axis=1)
    has = distinct > 0
    return (float(np.mean(distinct[has] > 1)) if has.any() else float("nan")), distinct


def disagreement(labels: np.ndarray, da_labels: np.ndarray) -> float:
    """mean over valid (x, o) of 1[single-shot label != DA label]."""
    valid = labels >= 0
    return float(np.mean((labels != da_labels[:, None])[valid])) if valid.any() else float("nan")


def diagnose(obs: pd.DataFrame, cost_norm: np.ndarray, lam: float = DEFAULT_LAMBDA, eps: float = EPS) -> Diagnostics:
    """All diagnostics for one dataset's observations (usually the training grid)."""
    if obs["dataset"].nunique() != 1:
        raise ValueError("diagnose one dataset at a time")
    obs = obs.assign(_c=np.asarray(cost_norm, float)).reset_index(drop=True)
    stats = capability_stats(obs, "_c")
    rng = obs.groupby(["dataset", "query_id", "model"], sort=True)["score"].agg(["min", "max"])
    oi = outcome_instability(rng["min"].to_numpy(), rng["max"].to_numpy(), eps)

    q_codes, queries = pd.factorize(obs["query_id"], sort=True)
    m_codes, models = pd.factorize(obs["model"], sort=True)
    o_codes, _ = pd.MultiIndex.from_frame(obs[["prompt_variant_id", "decode_id"]]).factorize(sort=True)
    nq, nm, no = len(queries), len(models), int(o_codes.max()) + 1
    u = np.full((nq, no, nm), -np.inf)
    c = np.full((nq, no, nm), np.inf)
    u[q_codes, o_codes, m_codes] = obs["score"].to_numpy(float) - lam * obs["_c"].to_numpy(float)
    c[q_codes, o_codes, m_codes] = obs["_c"].to_numpy(float)
    valid = np.isfinite(u).all(axis=2)
    labels = observation_labels(np.where(np.isfinite(u), u, 0.0), np.where(np.isfinite(c), c, 0.0), valid)
    wfr, distinct = winner_flip_rate(labels)

    st = stats.assign(q=pd.Categorical(stats["query_id"], categories=queries),
                      m=pd.Categorical(stats["model"], categories=models))
    mu_q = np.full((nq, nm), -np.inf)
    mu_c = np.full((nq, nm), np.inf)
    mu_q[st["q"].cat.codes, st["m"].cat.codes] = st["mu_q"].to_numpy()
    mu_c[st["q"].cat.codes, st["m"].cat.codes] = st["mu_c"].to_numpy()
    da = hard_labels(mu_q - lam * mu_c, mu_c)
    dis = disagreement(labels, da)

    vin, vout = float(stats["var_input"].mean()), float(stats["var_output"].mean())
    has = distinct > 0
    winners = {int(k): float(np.mean(distinct[has] == k)) for k in np.unique(distinct[has])}
    return Diagnostics(
        dataset=str(obs["dataset"].iloc[0]), n_queries=nq, n_models=nm, n_observations=len(obs),
        outcome_instability=oi, winner_flip_rate=wfr, single_vs_da_disagreement=dis,
        input_variance=vin, output_variance=vout,
        input_variance_share=vin / (vin + vout) if vin + vout > 0 else float("nan"),
        winners_per_query=winners, lam=lam,
        coverage=coverage_from_pairs(stats["query_id"], stats["model"], tuple(str(m) for m in models)).to_dict())


def plot_diagnostics(stats: pd.DataFrame, diag: Diagnostics, path) -> None:
    """Figure 2(a,b)-style PNG: (a) per-pair quality spread, (b) distinct single-shot winners per
    query, with the input/output variance split (input variance "n/a" when the data has no rewrites)."""
    from caproute.core.figures import save_figure

    save_figure(diagnostics_figure(stats, diag), path, dpi=120)


def diagnostics_figure(stats: pd.DataFrame, diag: Diagnostics):
    """The matplotlib figure of :func:`plot_diagnostics` (the caller saves and closes it)."""
    from caproute.core.figures import pyplot

    fig, axes = pyplot().subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    ax.hist(stats["sigma_q"], bins=20, color="#4C72B0", edgecolor="white")
    ax.set_xlabel(r"$\sigma_q(x, m)$ over observations")
    ax.set_ylabel("(query, model) pairs")
    ax.set_title(f"(a) outcome instability = {diag.outcome_instability:.3f}")
    ax = axes[1]
    ks = sorted(diag.winners_per_query)
    ax.bar([str(k) for k in ks], [diag.winners_per_query[k] for k in ks], color="#DD8452")
    ax.set_xlabel("distinct single-shot winners per query")
    ax.set_ylabel("fraction of queries")
    ax.set_title(f"(b) winner-flip rate = {diag.winner_flip_rate:.3f}")
    ax = axes[2]
    # without rewrites (one prompt per query) the input variance is not measured, not zero: say n/a
    no_rewrites = "n_rewrites" in stats.columns and len(stats) > 0 and int(stats["n_rewrites"].max()) <= 1
    vals = [float("nan") if no_rewrites else diag.input_variance, diag.output_variance]
    bars = ax.bar(["input (rewrites)", "output (decodes)"], np.nan_to_num(vals), color=["#55A868", "#C44E52"])
    top = max(np.nanmax(vals) if np.isfinite(vals).any() else 0.0, 1e-12)
    ax.set_ylim(0, top * 1.25)
    for b, v in zip(bars, vals, strict=True):
        label = "n/a: no rewrites in the data" if not np.isfinite(v) else f"{v:.4f}"
        ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("mean variance per pair")
    ax.set_title(f"variance split, disagreement = {diag.single_vs_da_disagreement:.3f}")
    fig.suptitle(f"{diag.dataset}: {diag.n_queries} queries x {diag.n_models} models, lambda = {diag.lam}")
    fig.tight_layout()
    return fig
