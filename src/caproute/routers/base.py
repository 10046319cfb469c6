"""The router contract (scikit-learn style) shared by every family.

- ``__init__`` only stores hyper-parameters (keyword arguments with defaults).
- ``fit(X, supervision)`` learns from query features X (n, d) and a
  :class:`~caproute.supervise.supervision.Supervision`; returns ``self``; learned state ends in ``_``.
- ``predict_stats(X)`` returns per-model predicted mu_q, mu_c, sigma_q as :class:`StatsPrediction`.
- ``route(X, lam, beta)`` returns the chosen model index per query; one fitted router serves any
  lambda and beta.
- ``save(dir)`` / ``Router.load(dir)``: no pickle. Arrays go to ``state.safetensors``, the rest to
  ``config.json`` with a format version and the SHA-256 of the array file, checked on load.

Adding a router = one module with a subclass decorated by :func:`register`; the conformance
suite in tests/test_router_conformance.py then runs against it.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from caproute.core import artifact
from caproute.core.params import HyperParams, add_named, get_named
from caproute.errors import ConfigError
from caproute.features.tfidf import SparseRows
from caproute.supervise.labels import hard_labels
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA, utility

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
STATE_FILE = "state.safetensors"

REGISTRY: dict[str, type[Router]] = {}


def register(cls: type[Router]) -> type[Router]:
    """Class decorator: make a router available by its ``name``."""
    return add_named(REGISTRY, cls)


def get_router_class(name: str) -> type[Router]:
    import caproute.routers.families  # noqa: F401  (registers every family)

    return get_named(REGISTRY, name, "router")


_RULES = {">= 1": lambda x: x >= 1, ">= 0": lambda x: x >= 0, "> 0": lambda x: x > 0}


def check_params(klass: type[Router], params: dict[str, Any]) -> None:
    """A :class:`ConfigError` naming the router and the parameter when a value in ``params`` is
    outside the range the family declares in ``param_spec`` (e.g. ``knn`` ``k >= 1``)."""
    for name, rule in klass.param_spec.items():
        if name not in params or params[name] is None:
            continue
        value = params[name]
        values = value if isinstance(value, (tuple, list)) else (value,)
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and _RULES[rule](v) for v in values)
        if not ok or (isinstance(value, (tuple, list)) and not value):
            raise ConfigError(f"router '{klass.name}': {name} must be {rule}"
                              f"{' (each)' if isinstance(value, (tuple, list)) else ''}, got {value!r}")


@dataclass
class StatsPrediction:
    """Predicted per-model statistics for n queries and the router's m models, each (n, m)."""

    models: tuple[str, ...]
    mu_q: np.ndarray
    mu_c: np.ndarray
    sigma_q: np.ndarray
    #: "stats" (predicted capability statistics) or "policy" (RM-Softmax: ``mu_q`` holds the policy
    #: probabilities pi(m | x, lambda), ``mu_c`` and ``sigma_q`` are zero, so utility ranks by pi).
    kind: str = "stats"
    #: (n, m) predicted mean latency in seconds, for the PROPOSED latency term (``lam_t``); None
    #: when the router predicts none (then ``lam_t`` must stay 0)
    mu_latency: np.ndarray | None = None

    def utility(self, lam: float, beta: float, lam_t: float = 0.0) -> np.ndarray:
        return utility(self.mu_q, self.mu_c, self.sigma_q, lam, beta, mu_latency=self.mu_latency, lam_t=lam_t)


class Router(HyperParams, ABC):
    name: ClassVar[str] = ""
    #: True when the router reads lambda at prediction time (RM-Softmax); route() then passes it.
    lambda_aware: ClassVar[bool] = False
    #: True when predict_stats / route accept a scipy sparse X as well (kNN): the pipeline then
    #: passes TF-IDF rows without densifying them.
    accepts_sparse: ClassVar[bool] = False
    #: False when ``fit`` never reads ``supervision.beta`` (beta then enters only at routing time):
    #: one fitted router then serves every beta, and the bench reuses it for its beta study and the
    #: w/o-Risk ablation instead of training again. True (the safe default) when beta shapes training.
    beta_in_training: ClassVar[bool] = True
    #: True when ``route`` ignores lambda and beta (random, cheapest): one routing serves a whole
    #: lambda sweep.
    fixed_route: ClassVar[bool] = False

    #: Declared ranges of the numeric hyper-parameters, checked by :func:`check_params` whenever a
    #: router is built (:func:`caproute.routers.pipeline.make_router`) and shown by ``caproute
    #: routers``: ``{name: ">= 1" | "> 0" | ">= 0"}``; a tuple value (MLP ``hidden``) is checked
    #: element by element.
    param_spec: ClassVar[dict[str, str]] = {}

    # -- hyper-parameters: get_params / set_params from core.params.HyperParams (sklearn contract)
    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- learning ---------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, X: np.ndarray, supervision) -> Router:
        """Learn from features X (n, d) and supervision (n queries x m models). Sets ``models_``."""

    @abstractmethod
    def predict_stats(self, X: np.ndarray, lam: float | None = None) -> StatsPrediction:
        """Per-model predicted mu_q, mu_c, sigma_q for X (n, d)."""

    def route(self, X: np.ndarray, lam: float = DEFAULT_LAMBDA, beta: float = DEFAULT_BETA) -> np.ndarray:
        """Index (into ``models_``) of the model with the highest predicted utility, per query.

        Ties go to the lower predicted cost, then model order (the hard-label tie rule).
        """
        pred = self.predict_stats(X, lam=lam)
        return hard_labels(pred.utility(lam, beta), pred.mu_c)

    def choose(self, X, pred: StatsPrediction, lam: float, beta: float) -> np.ndarray:
        """The one rule that turns a prediction into a decision: the chosen model index per query
        (n,) for ``pred`` = ``predict_stats(X, lam)`` already computed. A family that overrides
        :meth:`route` decides itself; the others take the highest utility of ``pred`` (hard-label
        tie rule), without predicting again."""
        if type(self).route is not Router.route:
            return np.asarray(self.route(X, lam, beta), dtype=np.intp)
        return hard_labels(pred.utility(lam, beta), pred.mu_c)

    def encoder_inputs(self, encoder, models) -> dict[str, Any]:
        """Extra keyword arguments for :meth:`fit` computed with the query encoder (default none).

        GraphRouter encodes its model-description texts here. Callers that own the encoder do
        ``router.fit(X, sup, **router.encoder_inputs(encoder, sup.models))``.
        """
        return {}

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def _validate_fit(self, X, supervision) -> np.ndarray:
        """X as a finite float32 (n, d) array matching the supervision's queries; sets
        ``models_`` and ``n_features_in_``."""
        X = _as_matrix(X, "X")
        if X.shape[0] != supervision.n_queries:
            raise ValueError(f"X has {X.shape[0]} rows but the supervision has {supervision.n_queries} queries")
        if X.shape[0] == 0:
            raise ValueError("cannot fit a router on zero queries")
        for name in ("mu_q", "mu_c", "sigma_q"):
            if not np.isfinite(getattr(supervision, name)).all():
                raise ValueError(f"supervision.{name} has non-finite values")
        observed = getattr(supervision, "observed", None)
        if observed is not None and not np.asarray(observed, bool).any(axis=0).all():
            never = [m for m, o in zip(supervision.models, np.asarray(observed, bool).any(axis=0), strict=True) if not o]
            raise ValueError(f"models {never} have no observed query in the supervision")
        self.models_ = tuple(supervision.models)
        self.n_features_in_ = int(X.shape[1])
        return X

    def _validate_sparse_X(self, X):
        """A sparse X (scipy, or TF-IDF's :class:`~caproute.features.tfidf.SparseRows`, kept as its
        arrays when float32) as float32 CSR rows with finite values and the training feature dimension."""
        self._check_fitted()
        if not (isinstance(X, SparseRows) and X.data.dtype == np.float32):
            X = X.tocsr().astype(np.float32, copy=False)   # no copy (and no re-check) when already float32
        d = getattr(self, "n_features_in_", None)
        if d is not None and X.shape[1] != d:
            raise ValueError(f"X has {X.shape[1]} features, the router was fitted on {d}")
        if not np.isfinite(X.data).all():
            raise ValueError("X has non-finite values")
        return X

    def _validate_X(self, X) -> np.ndarray:
        """X as a finite float32 (n, d) array with the training feature dimension."""
        self._check_fitted()
        X = _as_matrix(X, "X")
        d = getattr(self, "n_features_in_", None)
        if d is not None and X.shape[1] != d:
            raise ValueError(f"X has {X.shape[1]} features, the router was fitted on {d}")
        return X

    # -- persistence (no pickle) ------------------------------------------------------------------
    @abstractmethod
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Learned arrays (float/int ndarrays) and JSON-able learned metadata."""

    @abstractmethod
    def _load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore learned state written by :meth:`_state`."""

    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        arrays, meta = self._state()
        config = {"router": self.name, "params": self.get_params(), "models": list(self.models_),
                  "n_features_in": getattr(self, "n_features_in_", None), "meta": meta}
        return artifact.write_artifact(path, CONFIG_FILE, config, version=FORMAT_VERSION,
                                       state_file=STATE_FILE, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path) -> Router:
        from safetensors.numpy import load as load_bytes

        path = Path(path)
        cfg_file, state_file = path / CONFIG_FILE, path / STATE_FILE
        config, blob = artifact.read_artifact(path, CONFIG_FILE, version=FORMAT_VERSION, what="router",
                                              state_file=STATE_FILE)
        klass = get_router_class(config["router"]) if cls is Router else cls
        if klass.name != config["router"]:
            raise ConfigError(f"{cfg_file}: holds a '{config['router']}' router, not '{klass.name}'")
        params = dict(config.get("params", {}))
        defaults = {k: p.default for k, p in inspect.signature(klass.__init__).parameters.items()}
        for k, v in params.items():     # JSON has no tuples: restore tuple-valued hyper-parameters
            if isinstance(defaults.get(k), tuple) and isinstance(v, list):
                params[k] = tuple(v)
        try:
            router = klass(**params)
        except TypeError as e:
            raise ConfigError(f"{cfg_file}: bad params for router '{klass.name}' ({e})") from None
        router.models_ = tuple(config["models"])
        if config.get("n_features_in") is not None:
            router.n_features_in_ = int(config["n_features_in"])
        try:
            router._load_state(load_bytes(blob), config.get("meta", {}))
        except KeyError as e:
            raise ConfigError(f"{state_file}: missing array {e}") from None
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"{state_file}: state does not match the router ({e})") from None
        return router


def _as_matrix(X, name: str) -> np.ndarray:
    if hasattr(X, "toarray"):   # scipy sparse
        X = X.toarray()
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-d (n, d), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} has non-finite values")
    return X


def clipped_targets(supervision) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mu_q, mu_c, sigma_q of a supervision clipped to [0, 1] as float32 (the released routers clip
    their training targets and predictions to [0, 1], §A.10)."""
    return tuple(np.clip(np.asarray(getattr(supervision, k), np.float64), 0.0, 1.0).astype(np.float32)
                 for k in ("mu_q", "mu_c", "sigma_q"))


def clip01(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).clip(0.0, 1.0)   # np.clip's dispatch costs as much as the clip for a query
