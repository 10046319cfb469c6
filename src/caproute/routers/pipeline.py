"""A routing pipeline a user trains, saves and serves: encoder + router + metadata.

``train_pipeline(obs, router="knn")`` builds the supervision of one dataset's training split
(cost normaliser fitted on training rows), fits the encoder on the training query texts and the
router on their features, and, when the observations carry ``latency_s``, the latency model of
:mod:`caproute.routers.latency` on the same features. ``RoutingPipeline.decide(texts, lam, beta,
lam_t)`` returns one :class:`Decision` per text. ``save(dir)`` writes ``encoder/``, ``router/``,
``latency/`` (when there is one) and ``pipeline.json`` (no pickle; every part checksummed);
``RoutingPipeline.load(dir)`` reads it back.

Pipeline format versions: 1 (no latency model; still loaded, with latency unavailable, so that
lambda_t > 0 is an error naming the router directory) and 2 (``"latency": true|false``).
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from caproute.core import artifact
from caproute.errors import ConfigError, DataError
from caproute.features import Encoder, encode, get_encoder, load_encoder
from caproute.features.tfidf import SparseRows
from caproute.routers.base import Router, StatsPrediction, check_params, get_router_class
from caproute.routers.latency import LatencyModel
from caproute.supervise.labels import hard_labels
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA, DEFAULT_LAMBDA_T

PIPELINE_FILE = "pipeline.json"
PIPELINE_FORMAT_VERSION = 2
READABLE_PIPELINE_VERSIONS = (1, 2)   # 1: written before the latency model (loads without one)
ENCODER_DIR = "encoder"
ROUTER_DIR = "router"
LATENCY_DIR = "latency"
SUPERVISIONS = ("dars", "single", "input_only", "output_only", "no_risk", "rewrite_risk", "decode_risk")


@dataclass
class Decision:
    """The routing decision for one query: the chosen model and every model's predictions.

    ``mu_q``, ``mu_c``, ``sigma_q``, ``utility``: {model: value}; ``utility`` is
    mu_q - lam * mu_c - lam_t * mu_latency - beta * sigma_q at the ``lam`` / ``beta`` / ``lam_t``
    used. ``mu_latency`` (seconds) is there when ``lam_t`` > 0 (the PROPOSED latency term), else
    None. For a policy router (RM-Softmax, ``kind == "policy"``) ``mu_q`` holds the policy
    probabilities.
    """

    model: str
    index: int
    lam: float
    beta: float
    mu_q: dict[str, float]
    mu_c: dict[str, float]
    sigma_q: dict[str, float]
    utility: dict[str, float]
    kind: str = "stats"
    lam_t: float = DEFAULT_LAMBDA_T
    mu_latency: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "index": self.index, "lambda": self.lam, "beta": self.beta,
               "lambda_t": self.lam_t, "kind": self.kind, "mu_q": dict(self.mu_q), "mu_c": dict(self.mu_c),
               "sigma_q": dict(self.sigma_q), "utility": dict(self.utility)}
        if self.mu_latency is not None:
            out["mu_latency"] = dict(self.mu_latency)
        return out


def decisions(pred: StatsPrediction, choice: np.ndarray, lam: float, beta: float,
              lam_t: float = DEFAULT_LAMBDA_T) -> list[Decision]:
    """Package predictions (n, m) and chosen indices (n,) as Decisions."""
    models = list(pred.models)
    lam, beta, lam_t = float(lam), float(beta), float(lam_t)

    def rows(a: np.ndarray) -> list[dict[str, float]]:
        return [dict(zip(models, r, strict=True)) for r in np.asarray(a).tolist()]

    mu_q, mu_c, sigma_q = rows(pred.mu_q), rows(pred.mu_c), rows(pred.sigma_q)
    u = rows(pred.utility(lam, beta, lam_t))
    lat = rows(pred.mu_latency) if lam_t > 0 and pred.mu_latency is not None else [None] * len(u)
    return [Decision(model=models[c], index=c, lam=lam, beta=beta, mu_q=mu_q[i], mu_c=mu_c[i], sigma_q=sigma_q[i],
                     utility=u[i], kind=pred.kind, lam_t=lam_t, mu_latency=lat[i])
            for i, c in enumerate(np.asarray(choice).tolist())]


@dataclass
class RoutingPipeline:
    encoder: Encoder
    router: Router
    meta: dict[str, Any] = field(default_factory=dict)
    #: predicted latency per (query, model) (:mod:`caproute.routers.latency`); None when the
    #: training observations had no ``latency_s`` or the pipeline predates it (format 1)
    latency: LatencyModel | None = None
    #: the directory this pipeline was loaded from (named in errors)
    source: str | None = None

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.router.models_)

    @property
    def lam(self) -> float:
        return float(self.meta.get("lam", DEFAULT_LAMBDA))

    @property
    def beta(self) -> float:
        return float(self.meta.get("beta", DEFAULT_BETA))

    def features(self, texts: Sequence[str]):
        """Router input for ``texts``: dense (n, d), or scipy CSR when both the encoder (TF-IDF)
        and the router (kNN) handle sparse rows."""
        X = self._router_input(texts)
        return X.tocsr() if isinstance(X, SparseRows) else X

    def _router_input(self, texts: Sequence[str]):
        """:meth:`features`, with sparse rows as :class:`SparseRows` (the CSR arrays; what
        :meth:`decide` hands the router: for a few texts scipy's constructor costs more than the
        arithmetic)."""
        if self.router.accepts_sparse and hasattr(self.encoder, "transform_rows"):
            return self.encoder.transform_rows(_texts(texts))
        return self.encoder.transform(_texts(texts))

    @property
    def has_latency(self) -> bool:
        return self.latency is not None

    def predict_stats(self, texts: Sequence[str] | str, lam: float | None = None) -> StatsPrediction:
        """The router's predictions, with ``mu_latency`` from the latency model when there is one."""
        lam = self.lam if lam is None else float(lam)
        X = self._router_input(texts)
        return self._with_latency(self.router.predict_stats(X, lam=lam), X)

    def _with_latency(self, pred: StatsPrediction, X) -> StatsPrediction:
        if pred.mu_latency is None and self.latency is not None:
            pred.mu_latency = self.latency.predict(X.tocsr() if isinstance(X, SparseRows) else X)
        return pred

    def check_lam_t(self, lam_t: float) -> None:
        """A :class:`ConfigError` when this pipeline cannot route at latency weight ``lam_t``."""
        if lam_t < 0 or not math.isfinite(lam_t):
            raise ConfigError(f"lambda_t must be a finite number >= 0, got {lam_t}")
        if lam_t == 0:
            return
        if self.latency is None:
            where = f" ({self.source})" if self.source else ""
            raise ConfigError(f"lambda_t = {lam_t:g} needs predicted latencies, but this router{where} has "
                              "none (trained without latency_s, or saved before caproute predicted "
                              "latency): retrain it with `caproute train` on observations with latency_s")

    def decide(self, texts: Sequence[str] | str, lam: float | None = None,
               beta: float | None = None, lam_t: float = DEFAULT_LAMBDA_T) -> list[Decision]:
        """One :class:`Decision` per text; ``lam`` / ``beta`` default to the training values,
        ``lam_t`` (the PROPOSED latency weight, quality per second) to 0: the paper's U."""
        lam = self.lam if lam is None else float(lam)
        beta = self.beta if beta is None else float(beta)
        lam_t = float(lam_t)
        if lam < 0 or beta < 0:
            raise ConfigError(f"lambda and beta must be >= 0 (got {lam}, {beta})")
        self.check_lam_t(lam_t)
        pred, choice, lam_t = self.choose_features(self._router_input(texts), lam, beta, lam_t)
        return decisions(pred, choice, lam, beta, lam_t)

    def choose_features(self, X, lam: float, beta: float,
                        lam_t: float = DEFAULT_LAMBDA_T) -> tuple[StatsPrediction, np.ndarray, float]:
        """(prediction, chosen model indices, the lambda_t applied) for router input ``X`` (:meth:`features`,
        or the :class:`SparseRows` of TF-IDF) at ``lam`` / ``beta`` / ``lam_t``; fixed routes ignore every weight (lambda_t applied: 0). A
        :class:`ConfigError` when this pipeline cannot weigh latency and ``lam_t`` > 0."""
        self.check_lam_t(lam_t)
        pred = self.router.predict_stats(X, lam=lam)
        if lam_t == 0 or self.router.fixed_route:   # fixed routes (random, cheapest) ignore every weight
            return pred, np.asarray(self.router.choose(X, pred, lam, beta)), 0.0
        if pred.kind == "policy":
            raise ConfigError(f"lambda_t = {lam_t:g}: router '{self.router.name}' predicts a routing "
                              "policy, not per-model statistics, so it cannot weigh latency")
        pred = self._with_latency(pred, X)
        return pred, hard_labels(pred.utility(lam, beta, lam_t), pred.mu_c), float(lam_t)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the pipeline to ``path`` atomically (a temporary sibling renamed into place).

        An existing pipeline directory is replaced; any other non-empty directory is refused.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or (any(path.iterdir()) and
                                                    not (path / PIPELINE_FILE).exists())):
            raise ConfigError(f"{path}: exists and is not a caproute router directory; "
                              "choose another --out")
        from caproute.core.atomic import staged_dir

        with staged_dir(path) as tmp:
            self.encoder.save(tmp / ENCODER_DIR)
            self.router.save(tmp / ROUTER_DIR)
            if self.latency is not None:
                self.latency.save(tmp / LATENCY_DIR)
            config = {"models": list(self.models), "encoder": self.encoder.name, "router": self.router.name,
                      **self.meta, "latency": self.latency is not None}
            artifact.write_artifact(tmp, PIPELINE_FILE, config, version=PIPELINE_FORMAT_VERSION)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RoutingPipeline:
        path = Path(path)
        cfg_file = path / PIPELINE_FILE
        if not path.is_dir():
            raise ConfigError(f"{path}: no such router directory (train one with `caproute train`)")
        if not cfg_file.exists():
            raise ConfigError(f"{path}: not a caproute router directory (no {PIPELINE_FILE})")
        meta = artifact.parse_config(cfg_file)
        if meta.get(artifact.FORMAT_KEY) not in READABLE_PIPELINE_VERSIONS:
            artifact.check_version(meta, cfg_file, PIPELINE_FORMAT_VERSION)   # the named error
        encoder = load_encoder(path / ENCODER_DIR)
        router = Router.load(path / ROUTER_DIR)
        if list(router.models_) != list(meta.get("models", [])):
            raise ConfigError(f"{cfg_file}: models {meta.get('models')} differ from the router's "
                              f"{list(router.models_)}")
        latency = None
        if meta.get("latency"):
            latency = LatencyModel.load(path / LATENCY_DIR)
            if list(latency.models_) != list(router.models_):
                raise ConfigError(f"{path / LATENCY_DIR}: models {list(latency.models_)} differ from the "
                                  f"router's {list(router.models_)}")
        for k in (artifact.FORMAT_KEY, "models", "encoder", "router", "latency"):
            meta.pop(k, None)
        return cls(encoder, router, meta, latency, str(path))


def train_pipeline(obs: pd.DataFrame, *, router: str, supervision: str = "dars", features: str = "tfidf",
                   lam: float = DEFAULT_LAMBDA, beta: float = DEFAULT_BETA, seed: int = 42, params: dict | None = None,
                   dataset: str | None = None, encoder_params: dict | None = None,
                   cache=None, normalizer=None) -> RoutingPipeline:
    """Train encoder + router on the training split of one dataset of ``obs``.

    ``supervision``: ``dars`` (all observations, risk weight ``beta``), ``single`` (one random
    observation per pair drawn with ``seed``; routed with beta = 0 by default, as in the paper)
    or an ablation variant of :func:`caproute.supervise.ablations.build_supervision`.
    ``params``: router hyper-parameters; a router that takes ``seed`` gets ``seed`` unless given.
    ``cache``: feature cache for frozen encoders (see :func:`caproute.features.encode`).
    ``normalizer``: the cost map (default: min-max fitted on the training rows; pooled datasets
    pass the identity map of :func:`caproute.evaluate.protocol.pool_datasets`).
    A partial grid (queries missing some models, e.g. routed traffic with feedback) trains on the
    observed pairs; ``meta["coverage"]`` records them (:mod:`caproute.supervise.coverage`).
    """
    from caproute import __version__
    from caproute.data.order import canonical_rows
    from caproute.data.store import resolve_dataset
    from caproute.features.text import query_texts
    from caproute.supervise.ablations import build_supervision
    from caproute.supervise.api import training_rows
    from caproute.supervise.normalize import CostNormalizer

    if supervision not in SUPERVISIONS:
        raise ConfigError(f"unknown supervision '{supervision}' (choose from {', '.join(SUPERVISIONS)})")
    if lam < 0 or beta < 0:
        raise ConfigError(f"lambda and beta must be >= 0 (got {lam}, {beta})")
    model = make_router(router, lam=lam, seed=seed, params=params)
    if len(obs) == 0:
        raise DataError("no observations to train on", source="observations")
    name = resolve_dataset(sorted(obs["dataset"].astype(str).unique()), dataset, source="observations")
    obs = obs[obs["dataset"].astype(str) == name]
    train = canonical_rows(training_rows(obs))    # results do not depend on the file's row order
    normalizer = normalizer or CostNormalizer().fit(train)
    sup = build_supervision(train, variant=supervision, beta=beta, normalizer=normalizer, seed=seed)
    query_ids, texts = query_texts(train, sup.query_ids)
    encoder = get_encoder(features, **(encoder_params or {})).fit(texts)
    X = encode(encoder, texts, cache)
    model.fit(X, sup, **model.encoder_inputs(encoder, sup.models))
    # the latency model needs a known latency of every model (else the router routes without one)
    known = sup.mu_latency is not None and bool(np.isfinite(sup.mu_latency).any(axis=0).all())
    latency = LatencyModel().fit(X, sup.mu_latency, sup.models) if known else None
    meta = {
        "dataset": name, "supervision": supervision, "features": features,
        "lam": float(lam), "beta": float(sup.beta if sup.beta is not None else beta),
        "train_beta": float(beta), "seed": int(seed), "router_params": model.get_params(),
        "cost_normalizer": normalizer.to_dict(), "n_train_queries": int(sup.n_queries),
        "coverage": sup.coverage().to_dict(),
        "n_train_observations": int(len(train)), "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "caproute_version": __version__,
    }
    return RoutingPipeline(encoder, model, meta, latency)


def make_router(name: str, *, lam: float = DEFAULT_LAMBDA, seed: int = 42, params: dict | None = None) -> Router:
    """A new router of family ``name`` set up for routing at cost weight ``lam``.

    Fills in what the family needs unless ``params`` sets it: ``seed``; RM-Softmax's
    ``lambda_max = max(0.10, lam)`` (the reference's lambda' grid); MF's ``lam`` (it bakes lambda
    into its pairwise preferences). Values are checked against the family's declared ranges
    (:func:`caproute.routers.base.check_params`). This is the one construction path: ``caproute
    train``, every ``caproute bench`` cell, the adaptive study, the duel's kNN reference and the
    CLI's ``--param`` checks build routers with it, then fit with
    ``router.fit(X, sup, **router.encoder_inputs(encoder, sup.models))``.
    """
    klass = get_router_class(name)
    params = dict(params or {})
    accepted = inspect.signature(klass.__init__).parameters
    if "seed" in accepted:
        params.setdefault("seed", seed)
    if "lambda_max" in accepted:
        params.setdefault("lambda_max", max(0.10, float(lam)))
    if "lam" in accepted:
        params.setdefault("lam", float(lam))
    check_params(klass, params)
    try:
        return klass(**params)
    except TypeError as e:
        raise ConfigError(f"router '{name}': {e}") from None


def _texts(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"query text must be a string (item {bad[0]} is {type(texts[bad[0]]).__name__})",
                        source="decide")
    return texts
