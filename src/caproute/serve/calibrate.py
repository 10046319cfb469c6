"""Calibrate a router's lambda to a target on a traffic sample, and the versioned policy file.

The math is pure numpy on (n queries, m models) arrays:

- ``mu_q, mu_c, sigma_q``: the router's *predicted* statistics on the sample; routing picks
  argmax_m U = mu_q - lambda mu_c - beta sigma_q (ties: lower mu_c, then model order).
- ``cost``: USD per query of each model (observed mean raw cost when the sample has observations,
  else predicted), ``quality``: quality per query of each model (observed mean score, else mu_q).

Which model wins a query changes only at the lambdas where two models' utilities cross,
lambda = (dq - beta ds) / dc (breakpoints). :func:`lambda_grid` evaluates one lambda inside every
interval between consecutive breakpoints (subsampled by quantiles above ``max_points``), so the
sweep sees every distinct routing of the sample. Targets (``kind``):

- ``cost``: mean USD per query <= value; the smallest feasible lambda (the least cost penalty
  that meets the budget, so a target that lambda = 0 already meets gives lambda = 0).
- ``share``: share of calls to ``model`` <= value; the smallest feasible lambda.
- ``quality``: mean quality >= value; among feasible lambdas the lowest mean cost.

Why the smallest lambda and not the feasible lambda with the highest *observed* quality: as lambda
grows, every query's choice moves to a model with lower predicted cost and lower predicted
(risk-adjusted) quality, so the smallest feasible lambda is the routing the router itself rates best
within the budget. Picking the lambda whose observed quality on the sample happens to be highest
selects on the sample's noise (on the builtin set it picked lambda = 4.16 for a cost target that
lambda = 0 met) and is not what a budget asks for.

With two models a lambda *is* RouteLLM's threshold: the strong model is called when its
predicted gain per unit of cost, (dq - beta ds) / dc, exceeds lambda.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from caproute.errors import CaprouteError, ConfigError
from caproute.supervise.labels import hard_labels
from caproute.supervise.utility import utility

POLICY_FORMAT = "caproute-policy"
POLICY_FORMAT_VERSION = 1
TARGET_KINDS = ("cost", "share", "quality")
# Drift tolerances are our choice (no paper gives one): total-variation distance 0.1 between live and
# calibrated model shares, and 20 % relative (cost, quality) or 0.1 absolute (share) on the target.
DEFAULT_SHARE_TOLERANCE = 0.1
DEFAULT_TARGET_TOLERANCE = 0.2
DEFAULT_DRIFT_WINDOW = 200


class CalibrationError(CaprouteError):
    """The target cannot be met on the sample (the message says what is achievable)."""


@dataclass(frozen=True)
class CalibrationTarget:
    kind: Literal["cost", "share", "quality"]
    value: float
    model: str | None = None  # the strong model of a 'share' target

    def __post_init__(self):
        if self.kind not in TARGET_KINDS:
            raise ConfigError(f"target kind must be one of {TARGET_KINDS}, got '{self.kind}'")
        if not np.isfinite(self.value) or self.value < 0:
            raise ConfigError(f"target value must be a finite number >= 0, got {self.value}")
        if self.kind == "share" and (self.model is None or self.value > 1):
            raise ConfigError("a share target needs a model and a value in [0, 1]")


@dataclass
class Sweep:
    """Metrics of the routing at each lambda of ``lambdas`` (L,)."""

    lambdas: np.ndarray  # (L,)
    mean_cost: np.ndarray  # (L,) USD per query
    mean_quality: np.ndarray  # (L,)
    share: np.ndarray  # (L, m) share of queries routed to each model
    pred_quality: np.ndarray  # (L,) mean predicted mu_q of the chosen models


@dataclass
class Calibration:
    lam: float
    beta: float
    target: CalibrationTarget
    models: tuple[str, ...]
    mean_cost: float
    mean_quality: float
    pred_quality: float
    share: dict[str, float]
    sweep: Sweep = field(repr=False)

    def target_value(self) -> float:
        """The calibrated value of the target's metric (what drift is measured against)."""
        if self.target.kind == "cost":
            return self.mean_cost
        if self.target.kind == "share":
            return self.share[self.target.model]
        return self.pred_quality


def lambda_breakpoints(mu_q, mu_c, sigma_q, beta: float) -> np.ndarray:
    """Sorted unique lambdas > 0 where two models' utilities are equal on some query."""
    mu_q, mu_c, sigma_q = (np.asarray(a, float) for a in (mu_q, mu_c, sigma_q))
    a, b = np.triu_indices(mu_q.shape[1], k=1)
    dq = (mu_q[:, a] - beta * sigma_q[:, a]) - (mu_q[:, b] - beta * sigma_q[:, b])
    dc = mu_c[:, a] - mu_c[:, b]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = dq / dc
    lam = lam[np.isfinite(lam) & (lam > 0) & (dc != 0)]
    return np.unique(lam)


def lambda_grid(mu_q, mu_c, sigma_q, beta: float, max_points: int = 2000) -> np.ndarray:
    """0, one lambda inside each interval between breakpoints, and one beyond the last."""
    bp = lambda_breakpoints(mu_q, mu_c, sigma_q, beta)
    if bp.size == 0:
        return np.array([0.0])
    if bp.size > max_points:
        bp = np.unique(np.quantile(bp, np.linspace(0.0, 1.0, max_points)))
    inner = (bp[:-1] + bp[1:]) / 2 if bp.size > 1 else np.empty(0)
    return np.concatenate([[0.0, bp[0] / 2], inner, [bp[-1] * 2]])


def sweep(lambdas, mu_q, mu_c, sigma_q, beta: float, cost, quality) -> Sweep:
    """Route the sample at every lambda; mean cost/quality and per-model share of the choices."""
    mu_q, mu_c, sigma_q, cost, quality = (np.asarray(a, float) for a in (mu_q, mu_c, sigma_q, cost, quality))
    lambdas = np.asarray(lambdas, float)
    n, m = mu_q.shape
    mc, mq, pq = np.empty(lambdas.size), np.empty(lambdas.size), np.empty(lambdas.size)
    sh = np.empty((lambdas.size, m))
    rows = np.arange(n)
    for li, lam in enumerate(lambdas):
        choice = hard_labels(utility(mu_q, mu_c, sigma_q, lam, beta), mu_c)
        mc[li] = cost[rows, choice].mean()
        mq[li] = quality[rows, choice].mean()
        pq[li] = mu_q[rows, choice].mean()
        sh[li] = np.bincount(choice, minlength=m) / n
    return Sweep(lambdas, mc, mq, sh, pq)


def fit_lambda(
    target: CalibrationTarget, models, mu_q, mu_c, sigma_q, beta: float, cost, quality, max_points: int = 2000
) -> Calibration:
    """The lambda meeting ``target`` on the sample (see the module docstring for the rule)."""
    models = tuple(models)
    if np.asarray(mu_q).ndim != 2 or np.asarray(mu_q).shape[0] == 0:
        raise CalibrationError("the traffic sample is empty")
    sw = sweep(lambda_grid(mu_q, mu_c, sigma_q, beta, max_points), mu_q, mu_c, sigma_q, beta, cost, quality)
    eps = 1e-12
    if target.kind == "cost":
        feasible = sw.mean_cost <= target.value + eps
        order = np.argsort(sw.lambdas, kind="stable")
        fail = (
            f"mean cost per query {target.value:.6g} USD is below the cheapest routing on this sample "
            f"({sw.mean_cost.min():.6g} USD at lambda={sw.lambdas[np.argmin(sw.mean_cost)]:.6g})"
        )
    elif target.kind == "share":
        if target.model not in models:
            raise CalibrationError(
                f"share target: model '{target.model}' is not one of the router's {list(models)}"
            )
        s = sw.share[:, models.index(target.model)]
        feasible = s <= target.value + eps
        order = np.argsort(sw.lambdas, kind="stable")
        fail = (
            f"share {target.value:.3g} of '{target.model}' is below the smallest reachable on this sample "
            f"({s.min():.3g})"
        )
    else:
        feasible = sw.mean_quality >= target.value - eps
        order = np.lexsort((sw.lambdas, -sw.mean_quality, sw.mean_cost))
        fail = (
            f"quality floor {target.value:.4g} is above the best mean quality on this sample "
            f"({sw.mean_quality.max():.4g} at lambda={sw.lambdas[np.argmax(sw.mean_quality)]:.6g})"
        )
    ranked = [i for i in order if feasible[i]]
    if not ranked:
        raise CalibrationError(fail)
    i = ranked[0]
    return Calibration(
        float(sw.lambdas[i]),
        float(beta),
        target,
        models,
        float(sw.mean_cost[i]),
        float(sw.mean_quality[i]),
        float(sw.pred_quality[i]),
        {mname: float(sw.share[i, j]) for j, mname in enumerate(models)},
        sw,
    )


# -- the policy file ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A calibrated routing policy the server loads (``--policy``)."""

    version: str
    router: str
    router_fingerprint: str
    models: tuple[str, ...]
    lam: float
    beta: float
    target: CalibrationTarget
    expected: dict[str, Any]
    sample: dict[str, Any]
    drift: dict[str, float]
    created: str
    path: str | None = None
    lam_t: float = 0.0   # latency weight (PROPOSED term), quality per second; 0: the paper's U

    def target_value(self) -> float:
        return float(self.expected["target_value"])


def directory_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over the relative paths and bytes of every file in a router directory."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def policy_dict(
    cal: Calibration,
    *,
    router: str,
    router_fingerprint: str,
    sample: dict[str, Any],
    share_tolerance: float = DEFAULT_SHARE_TOLERANCE,
    target_tolerance: float = DEFAULT_TARGET_TOLERANCE,
    window: int = DEFAULT_DRIFT_WINDOW,
    created: str | None = None,
) -> dict[str, Any]:
    """The JSON document of a policy; ``version`` is a hash of everything else (same input, same id)."""
    body = {
        "format": POLICY_FORMAT,
        "format_version": POLICY_FORMAT_VERSION,
        "router": router,
        "router_fingerprint": router_fingerprint,
        "models": list(cal.models),
        "lambda": cal.lam,
        "beta": cal.beta,
        "target": asdict(cal.target),
        "expected": {
            "mean_cost_usd": cal.mean_cost,
            "mean_quality": cal.mean_quality,
            "mean_predicted_quality": cal.pred_quality,
            "model_share": cal.share,
            "target_value": cal.target_value(),
        },
        "sample": sample,
        "drift": {
            "share_tolerance": float(share_tolerance),
            "target_tolerance": float(target_tolerance),
            "window": int(window),
        },
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    created = created or _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    return {**body, "version": f"{router}-{digest}", "created": created}


def write_policy(doc: dict[str, Any], out: str | os.PathLike) -> Path:
    from caproute.data.atomic import write_json

    write_json(doc, out)
    return Path(out)


def load_policy(path: str | os.PathLike) -> Policy:
    """Read and check a policy file (format, version, fields); errors name the file and field."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: policy file not found")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != POLICY_FORMAT:
        raise ConfigError(f"{p}: field 'format': not a caproute policy file")
    if doc.get("format_version") != POLICY_FORMAT_VERSION:
        raise ConfigError(
            f"{p}: field 'format_version': {doc.get('format_version')!r}, this caproute reads "
            f"{POLICY_FORMAT_VERSION}"
        )
    try:
        t = doc["target"]
        target = CalibrationTarget(t["kind"], float(t["value"]), t.get("model"))
        policy = Policy(
            version=str(doc["version"]),
            router=str(doc["router"]),
            router_fingerprint=str(doc["router_fingerprint"]),
            models=tuple(doc["models"]),
            lam=_nonneg(doc["lambda"], "lambda"),
            beta=_nonneg(doc["beta"], "beta"),
            target=target,
            expected=dict(doc["expected"]),
            sample=dict(doc.get("sample", {})),
            drift={k: float(v) for k, v in doc["drift"].items()},
            created=str(doc.get("created", "")),
            path=str(p),
            lam_t=_nonneg(doc.get("lambda_t", 0.0), "lambda_t"),
        )
        float(policy.expected["target_value"])
        {m: float(policy.expected["model_share"][m]) for m in policy.models}
    except KeyError as e:
        raise ConfigError(f"{p}: field {e.args[0]!r} is missing") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{p}: {e}") from None
    return policy


def _nonneg(v, name: str) -> float:
    x = float(v)
    if not np.isfinite(x) or x < 0:
        raise ValueError(f"field '{name}' must be a finite number >= 0, got {v!r}")
    return x


# -- orchestration (I/O at the edge) ---------------------------------------------------------------------


def predicted_usd(mu_c: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Map normalised predicted cost back to USD with the router's training cost range (§A.2)."""
    ranges = meta.get("cost_normalizer") or {}
    dataset = meta.get("dataset")
    if dataset not in ranges:
        raise ConfigError(
            "the router stores no cost range for its dataset, so predicted costs cannot be "
            "turned into USD; calibrate on observations (--store/--data) instead"
        )
    lo, hi = (float(v) for v in ranges[dataset])
    return lo + np.asarray(mu_c, float) * (hi - lo)


def calibrate_router(
    router_dir: str | os.PathLike,
    target: CalibrationTarget,
    sample,
    *,
    beta: float | None = None,
    name: str | None = None,
    share_tolerance: float = DEFAULT_SHARE_TOLERANCE,
    target_tolerance: float = DEFAULT_TARGET_TOLERANCE,
    window: int = DEFAULT_DRIFT_WINDOW,
    max_points: int = 2000,
) -> tuple[Calibration, dict]:
    """Load a router, predict on ``sample``, fit lambda. ``sample``: a
    :class:`~caproute.serve.traffic.TrafficSample` or ``(observations, source)``.

    Quality and cost are observed where the sample has outcomes, else predicted (cost in USD via
    the router's cost range). Returns the calibration and the policy document to write.
    """
    from caproute.routers.pipeline import RoutingPipeline
    from caproute.serve.traffic import sample_from_observations

    pipe = RoutingPipeline.load(router_dir)
    if isinstance(sample, tuple):  # (observations DataFrame, source name)
        sample = sample_from_observations(sample[0], pipe.models, source=sample[1])
    beta = pipe.beta if beta is None else float(beta)
    if beta < 0:
        raise ConfigError(f"beta must be >= 0, got {beta}")
    pred = pipe.predict_stats(sample.texts, lam=pipe.lam)
    observed = sample.quality is not None
    cost = sample.cost_usd if observed else predicted_usd(pred.mu_c, pipe.meta)
    quality = sample.quality if observed else pred.mu_q
    cal = fit_lambda(target, pipe.models, pred.mu_q, pred.mu_c, pred.sigma_q, beta, cost, quality, max_points)
    digest = hashlib.sha256("\n".join(sample.texts).encode()).hexdigest()
    doc = policy_dict(
        cal,
        router=name or Path(router_dir).name,
        router_fingerprint=directory_fingerprint(router_dir),
        sample={
            "source": sample.source,
            "n": len(sample.texts),
            "sha256": digest,
            "outcomes": "observed" if observed else "predicted",
        },
        share_tolerance=share_tolerance,
        target_tolerance=target_tolerance,
        window=window,
    )
    return cal, doc


def plot_sweep(cal: Calibration, out: str | os.PathLike) -> Path:
    """Mean cost and quality of the sample against lambda, the chosen lambda marked (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from caproute.data.atomic import atomic_file

    sw = cal.sweep
    order = np.argsort(sw.lambdas)
    lam = np.maximum(sw.lambdas[order], 1e-6)
    fig, ax1 = plt.subplots(figsize=(6.4, 4.0))
    ax1.step(lam, sw.mean_cost[order], where="mid", color="tab:red", label="mean cost (USD/query)")
    ax1.set_xscale("log")
    ax1.set_xlabel("lambda (0 drawn at 1e-6)")
    ax1.set_ylabel("mean cost per query (USD)", color="tab:red")
    ax2 = ax1.twinx()
    ax2.step(lam, sw.mean_quality[order], where="mid", color="tab:blue", label="mean quality")
    ax2.set_ylabel("mean quality", color="tab:blue")
    ax1.axvline(max(cal.lam, 1e-6), color="k", ls="--", lw=1)
    ax1.set_title(f"calibration: {cal.target.kind} target {cal.target.value:g} -> lambda = {cal.lam:.4g}")
    fig.tight_layout()
    out = Path(out)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return out
