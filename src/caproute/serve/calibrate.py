"""Calibrate a router's lambda (or lambda_t) to a target on a traffic sample, and the policy file.

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
- ``latency`` (PROPOSED, with the latency term of U; not the paper's): mean latency per query
  (seconds) <= value; lambda stays fixed (the router's, or ``--lambda``) and the weight swept is
  lambda_t, where U = mu_q - lambda mu_c - lambda_t mu_latency - beta sigma_q. The smallest
  feasible lambda_t, for the same reason as the cost target. Latency is the observed mean
  ``latency_s`` of each (query, model) pair when the sample has it, else the router's predicted
  mu_latency; breakpoints are lambda_t = dU / d(mu_latency), by the same rule as lambda's.

Why the smallest lambda and not the feasible lambda with the highest *observed* quality: as lambda
grows, every query's choice moves to a model with lower predicted cost and lower predicted
(risk-adjusted) quality, so the smallest feasible lambda is the routing the router itself rates best
within the budget. Picking the lambda whose observed quality on the sample happens to be highest
selects on the sample's noise (on the builtin set it picked lambda = 4.16 for a cost target that
lambda = 0 met) and is not what a budget asks for.

With two models a lambda *is* RouteLLM's threshold: the strong model is called when its
predicted gain per unit of cost, (dq - beta ds) / dc, exceeds lambda.

The policy file is one self-checksummed JSON document written atomically by
:func:`caproute.core.artifact.write_document` (format 2: ``lambda_t``, latency expectations and a
SHA-256 of the content). Format 1 files, written before, still load (lambda_t = 0, no checksum).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from caproute.core import artifact
from caproute.errors import CaprouteError, ConfigError
from caproute.supervise.labels import hard_labels
from caproute.supervise.utility import utility

POLICY_FORMAT = "caproute-policy"
POLICY_FORMAT_VERSION = 2
LEGACY_POLICY_VERSIONS = (1,)   # before lambda_t and the checksum: loaded as they are
TARGET_KINDS = ("cost", "share", "quality", "latency")
# Drift tolerances are our choice (no paper gives one): total-variation distance 0.1 between live and
# calibrated model shares, and 20 % relative (cost, quality) or 0.1 absolute (share) on the target.
DEFAULT_SHARE_TOLERANCE = 0.1
DEFAULT_TARGET_TOLERANCE = 0.2
DEFAULT_DRIFT_WINDOW = 200


class CalibrationError(CaprouteError):
    """The target cannot be met on the sample (the message says what is achievable)."""


@dataclass(frozen=True)
class CalibrationTarget:
    kind: Literal["cost", "share", "quality", "latency"]
    value: float
    model: str | None = None  # the strong model of a 'share' target

    def __post_init__(self):
        if self.kind not in TARGET_KINDS:
            raise ConfigError(f"target kind must be one of {TARGET_KINDS}, got '{self.kind}'")
        if not np.isfinite(self.value) or self.value < 0:
            raise ConfigError(f"target value must be a finite number >= 0, got {self.value}")
        if self.kind == "share" and (self.model is None or self.value > 1):
            raise ConfigError("a share target needs a model and a value in [0, 1]")


@dataclass(frozen=True)
class Weights:
    """The weights of U = mu_q - lam mu_c - lam_t mu_latency - beta sigma_q that a policy fixes."""

    lam: float
    beta: float
    lam_t: float = 0.0   # PROPOSED latency weight (quality per second); 0: the paper's U


@dataclass
class Sweep:
    """Metrics of the routing at each weight pair (``lambdas[i]``, ``lambda_ts[i]``), (L,) each;
    latency metrics are NaN where the sample has no (observed or predicted) latency."""

    lambdas: np.ndarray  # (L,)
    mean_cost: np.ndarray  # (L,) USD per query
    mean_quality: np.ndarray  # (L,)
    share: np.ndarray  # (L, m) share of queries routed to each model
    pred_quality: np.ndarray  # (L,) mean predicted mu_q of the chosen models
    lambda_ts: np.ndarray  # (L,)
    mean_latency: np.ndarray  # (L,) seconds per query
    pred_latency: np.ndarray  # (L,) mean predicted mu_latency of the chosen models


@dataclass
class Calibration:
    """The calibrated weights and what the sample's routing at them gives (row ``index`` of ``sweep``)."""

    weights: Weights
    target: CalibrationTarget
    models: tuple[str, ...]
    sweep: Sweep = field(repr=False)
    index: int = 0

    lam = property(lambda self: self.weights.lam)
    beta = property(lambda self: self.weights.beta)
    lam_t = property(lambda self: self.weights.lam_t)
    mean_cost = property(lambda self: float(self.sweep.mean_cost[self.index]))
    mean_quality = property(lambda self: float(self.sweep.mean_quality[self.index]))
    pred_quality = property(lambda self: float(self.sweep.pred_quality[self.index]))
    mean_latency = property(lambda self: float(self.sweep.mean_latency[self.index]))
    pred_latency = property(lambda self: float(self.sweep.pred_latency[self.index]))

    @property
    def share(self) -> dict[str, float]:
        return {m: float(self.sweep.share[self.index, j]) for j, m in enumerate(self.models)}

    def target_value(self) -> float:
        """The calibrated value of the target's metric (what drift is measured against): the mean
        cost, the strong model's share, or the mean *predicted* quality / latency of the choices
        (what the server sees live)."""
        if self.target.kind == "cost":
            return self.mean_cost
        if self.target.kind == "share":
            return self.share[self.target.model]
        return self.pred_latency if self.target.kind == "latency" else self.pred_quality


def weight_breakpoints(gain, penalty) -> np.ndarray:
    """Sorted unique weights w > 0 where two models' ``gain - w * penalty`` (n, m) are equal on
    some query: w = d(gain) / d(penalty) over model pairs."""
    gain, penalty = np.asarray(gain, float), np.asarray(penalty, float)
    a, b = np.triu_indices(gain.shape[1], k=1)
    dq = gain[:, a] - gain[:, b]
    dc = penalty[:, a] - penalty[:, b]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = dq / dc
    w = w[np.isfinite(w) & (w > 0) & (dc != 0)]
    return np.unique(w)


def lambda_breakpoints(mu_q, mu_c, sigma_q, beta: float) -> np.ndarray:
    """Sorted unique lambdas > 0 where two models' utilities are equal on some query."""
    mu_q, sigma_q = np.asarray(mu_q, float), np.asarray(sigma_q, float)
    return weight_breakpoints(mu_q - beta * sigma_q, mu_c)


def lambda_grid(mu_q, mu_c, sigma_q, beta: float, max_points: int = 2000) -> np.ndarray:
    """0, one lambda inside each interval between breakpoints, and one beyond the last."""
    return weight_grid(lambda_breakpoints(mu_q, mu_c, sigma_q, beta), max_points)


def weight_grid(bp: np.ndarray, max_points: int = 2000) -> np.ndarray:
    """0, one weight inside each interval between the sorted breakpoints ``bp``, one beyond the last."""
    if bp.size == 0:
        return np.array([0.0])
    if bp.size > max_points:
        bp = np.unique(np.quantile(bp, np.linspace(0.0, 1.0, max_points)))
    inner = (bp[:-1] + bp[1:]) / 2 if bp.size > 1 else np.empty(0)
    return np.concatenate([[0.0, bp[0] / 2], inner, [bp[-1] * 2]])


def sweep(lambdas, mu_q, mu_c, sigma_q, beta: float, cost, quality, *, lambda_ts=None, mu_latency=None,
          latency=None) -> Sweep:
    """Route the sample at every (lambda, lambda_t) pair (``lambda_ts`` default 0: the paper's U);
    mean cost/quality/latency and per-model share of the choices. ``mu_latency``: predicted latency
    (n, m), needed for lambda_t > 0; ``latency``: the latency to average (observed, else predicted)."""
    mu_q, mu_c, sigma_q, cost, quality = (np.asarray(a, float) for a in (mu_q, mu_c, sigma_q, cost, quality))
    lambdas = np.asarray(lambdas, float)
    lambda_ts = np.zeros(lambdas.size) if lambda_ts is None else np.broadcast_to(np.asarray(lambda_ts, float),
                                                                                  lambdas.shape)
    n, m = mu_q.shape
    out = {k: np.full(lambdas.size, np.nan) for k in ("mc", "mq", "pq", "ml", "pl")}
    sh = np.empty((lambdas.size, m))
    rows = np.arange(n)
    for li, (lam, lam_t) in enumerate(zip(lambdas.tolist(), lambda_ts.tolist(), strict=True)):
        choice = hard_labels(utility(mu_q, mu_c, sigma_q, lam, beta, mu_latency=mu_latency, lam_t=lam_t), mu_c)
        for key, values in (("mc", cost), ("mq", quality), ("pq", mu_q), ("ml", latency), ("pl", mu_latency)):
            if values is not None:
                out[key][li] = np.asarray(values, float)[rows, choice].mean()
        sh[li] = np.bincount(choice, minlength=m) / n
    return Sweep(lambdas, out["mc"], out["mq"], sh, out["pq"], lambda_ts.copy(), out["ml"], out["pl"])


def fit_lambda(
    target: CalibrationTarget, models, mu_q, mu_c, sigma_q, beta: float, cost, quality, max_points: int = 2000,
    *, lam: float | None = None, mu_latency=None, latency=None,
) -> Calibration:
    """The lambda (a latency target: the lambda_t at fixed ``lam``) meeting ``target`` on the sample
    (see the module docstring for the rule). ``mu_latency``: predicted latency (n, m), needed by a
    latency target; ``latency``: observed latency (n, m), else the predicted one is averaged."""
    models = tuple(models)
    if np.asarray(mu_q).ndim != 2 or np.asarray(mu_q).shape[0] == 0:
        raise CalibrationError("the traffic sample is empty")
    latency = mu_latency if latency is None else latency
    eps = 1e-12
    if target.kind == "latency":
        return _fit_lambda_t(target, models, mu_q, mu_c, sigma_q, beta, cost, quality, max_points,
                             0.0 if lam is None else float(lam), mu_latency, latency)
    sw = sweep(lambda_grid(mu_q, mu_c, sigma_q, beta, max_points), mu_q, mu_c, sigma_q, beta, cost, quality,
               mu_latency=mu_latency, latency=latency)
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
    return _first_feasible(target, models, beta, sw, order, feasible, fail)


def _first_feasible(target, models, beta: float, sw: Sweep, order, feasible, fail: str) -> Calibration:
    ranked = [i for i in order if feasible[i]]
    if not ranked:
        raise CalibrationError(fail)
    i = int(ranked[0])
    return Calibration(Weights(float(sw.lambdas[i]), float(beta), float(sw.lambda_ts[i])), target, models, sw, i)


def _fit_lambda_t(target, models, mu_q, mu_c, sigma_q, beta, cost, quality, max_points, lam, mu_latency,
                  latency) -> Calibration:
    """A latency budget: the smallest lambda_t (at fixed ``lam``) whose routing's mean latency meets it."""
    if mu_latency is None:
        raise CalibrationError("a latency budget needs predicted latencies, and this router has none "
                               "(retrain it on observations with latency_s)")
    mu_q, mu_c, sigma_q = (np.asarray(a, float) for a in (mu_q, mu_c, sigma_q))
    base = utility(mu_q, mu_c, sigma_q, lam, beta)
    grid = weight_grid(weight_breakpoints(base, mu_latency), max_points)
    sw = sweep(np.full(grid.size, lam), mu_q, mu_c, sigma_q, beta, cost, quality, lambda_ts=grid,
               mu_latency=mu_latency, latency=latency)
    fail = (f"mean latency {target.value:.4g} s per query is below the fastest routing on this sample "
            f"({np.nanmin(sw.mean_latency):.4g} s at lambda_t={sw.lambda_ts[np.nanargmin(sw.mean_latency)]:.6g})")
    return _first_feasible(target, models, beta, sw, np.argsort(sw.lambda_ts, kind="stable"),
                           sw.mean_latency <= target.value + 1e-12, fail)


# -- the policy file ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A calibrated routing policy the server loads (``--policy``): which router (``router``, its
    directory's ``router_fingerprint``, ``models``), the weights it fixes, and the ``doc`` it was
    read from (target, expected metrics, sample, drift tolerances, version, creation time)."""

    router: str
    router_fingerprint: str
    models: tuple[str, ...]
    weights: Weights
    target: CalibrationTarget
    doc: dict[str, Any] = field(repr=False)
    path: str | None = None

    lam = property(lambda self: self.weights.lam)
    beta = property(lambda self: self.weights.beta)
    lam_t = property(lambda self: self.weights.lam_t)
    version = property(lambda self: str(self.doc["version"]))
    expected = property(lambda self: self.doc["expected"])
    sample = property(lambda self: self.doc.get("sample", {}))
    drift = property(lambda self: {k: float(v) for k, v in self.doc["drift"].items()})
    created = property(lambda self: str(self.doc.get("created", "")))

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
        "lambda_t": cal.lam_t,
        "target": asdict(cal.target),
        "expected": {
            "mean_cost_usd": cal.mean_cost,
            "mean_quality": cal.mean_quality,
            "mean_predicted_quality": cal.pred_quality,
            "mean_latency_s": _finite_or_none(cal.mean_latency),
            "mean_predicted_latency_s": _finite_or_none(cal.pred_latency),
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


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def write_policy(doc: dict[str, Any], out: str | os.PathLike) -> Path:
    """Write a policy document atomically, with its format version and checksum
    (:func:`caproute.core.artifact.write_document`)."""
    return artifact.write_document(out, doc, version=POLICY_FORMAT_VERSION)


def load_policy(path: str | os.PathLike) -> Policy:
    """Read and check a policy file (format, version, checksum, fields); errors name the file and
    field. Format 1 files (before lambda_t and the checksum) load with lambda_t = 0."""
    p = Path(path)
    doc = artifact.read_document(p, version=POLICY_FORMAT_VERSION, what="policy",
                                 unchecked_versions=LEGACY_POLICY_VERSIONS)
    if doc.get("format") != POLICY_FORMAT:
        raise ConfigError(f"{p}: field 'format': not a caproute policy file")
    try:
        t = doc["target"]
        target = CalibrationTarget(t["kind"], float(t["value"]), t.get("model"))
        weights = Weights(_nonneg(doc["lambda"], "lambda"), _nonneg(doc["beta"], "beta"),
                          _nonneg(doc.get("lambda_t", 0.0), "lambda_t"))
        policy = Policy(str(doc["router"]), str(doc["router_fingerprint"]), tuple(doc["models"]), weights,
                        target, doc, str(p))
        policy.version, policy.drift, dict(policy.expected), dict(policy.sample)  # noqa: B018 (fields checked)
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
    lam: float | None = None,
    name: str | None = None,
    share_tolerance: float = DEFAULT_SHARE_TOLERANCE,
    target_tolerance: float = DEFAULT_TARGET_TOLERANCE,
    window: int = DEFAULT_DRIFT_WINDOW,
    max_points: int = 2000,
) -> tuple[Calibration, dict]:
    """Load a router, predict on ``sample``, fit lambda (a latency target: lambda_t, at ``lam``,
    default the router's lambda). ``sample``: a :class:`~caproute.serve.traffic.TrafficSample` or
    ``(observations, source)``.

    Quality, cost and latency are observed where the sample has outcomes (latency: where every
    pair has ``latency_s``), else predicted (cost in USD via the router's cost range). Returns the
    calibration and the policy document to write.
    """
    from caproute.routers.pipeline import RoutingPipeline
    from caproute.serve.traffic import sample_from_observations

    pipe = RoutingPipeline.load(router_dir)
    if isinstance(sample, tuple):  # (observations DataFrame, source name)
        sample = sample_from_observations(sample[0], pipe.models, source=sample[1])
    beta = pipe.beta if beta is None else float(beta)
    if beta < 0 or (lam is not None and lam < 0):
        raise ConfigError(f"lambda and beta must be >= 0, got {lam}, {beta}")
    pred = pipe.predict_stats(sample.texts, lam=pipe.lam)
    observed = sample.quality is not None
    cost = sample.cost_usd if observed else predicted_usd(pred.mu_c, pipe.meta)
    quality = sample.quality if observed else pred.mu_q
    latency = sample.latency if observed and sample.latency is not None else pred.mu_latency
    cal = fit_lambda(target, pipe.models, pred.mu_q, pred.mu_c, pred.sigma_q, beta, cost, quality, max_points,
                     lam=pipe.lam if lam is None else float(lam), mu_latency=pred.mu_latency, latency=latency)
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
            "latency": "observed" if observed and sample.latency is not None else
                       ("predicted" if pred.mu_latency is not None else None),
        },
        share_tolerance=share_tolerance,
        target_tolerance=target_tolerance,
        window=window,
    )
    return cal, doc


def plot_sweep(cal: Calibration, out: str | os.PathLike) -> Path:
    """Mean cost (a latency target: mean latency) and quality of the sample against lambda (lambda_t),
    the chosen weight marked (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from caproute.core.atomic import atomic_file

    sw = cal.sweep
    latency = cal.target.kind == "latency"
    x, name, chosen = (sw.lambda_ts, "lambda_t", cal.lam_t) if latency else (sw.lambdas, "lambda", cal.lam)
    left, label = (sw.mean_latency, "mean latency (s/query)") if latency else (sw.mean_cost, "mean cost (USD/query)")
    order = np.argsort(x)
    xs = np.maximum(x[order], 1e-6)
    fig, ax1 = plt.subplots(figsize=(6.4, 4.0))
    ax1.step(xs, left[order], where="mid", color="tab:red", label=label)
    ax1.set_xscale("log")
    ax1.set_xlabel(f"{name} (0 drawn at 1e-6)")
    ax1.set_ylabel(label.replace("/query", " per query"), color="tab:red")
    ax2 = ax1.twinx()
    ax2.step(xs, sw.mean_quality[order], where="mid", color="tab:blue", label="mean quality")
    ax2.set_ylabel("mean quality", color="tab:blue")
    ax1.axvline(max(chosen, 1e-6), color="k", ls="--", lw=1)
    ax1.set_title(f"calibration: {cal.target.kind} target {cal.target.value:g} -> {name} = {chosen:.4g}")
    fig.tight_layout()
    out = Path(out)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return out
