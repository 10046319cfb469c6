"""What a running proxy holds: :class:`ServeState` loads and checks the routers, pool, policies,
budgets and keys from a :class:`~caproute.serve.config.ServeConfig` (a bad config fails before
anything listens), opens the backend client, feedback store and request log in :meth:`start` and
closes them in :meth:`stop`; :meth:`ServeState.params` resolves one request's lambda/beta/lambda_t."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from caproute.errors import CaprouteError, ConfigError
from caproute.serve.auth import KeyRing
from caproute.serve.backends import Backends
from caproute.serve.calibrate import Policy, load_policy
from caproute.serve.config import BudgetSpec, ServeConfig
from caproute.serve.errors import ApiError
from caproute.serve.explore import Exploration
from caproute.serve.metrics import ServeMetrics
from caproute.serve.naming import Target, parse_model
from caproute.serve.ratelimit import RateLimiter
from caproute.serve.routing import RouterHandle
from caproute.serve.schemas import CaprouteOptions
from caproute.serve.shadow_judge import ShadowJudge
from caproute.serve.stores import open_state


@dataclass
class Params:
    """lambda/beta/lambda_t for one request and where they came from. ``lam_t``: the PROPOSED
    latency weight (quality per second; 0 = the paper's U)."""

    lam: float
    beta: float
    source: str  # default | policy | budget:<name> | model-suffix | request
    policy: Policy | None = None
    lam_t: float = 0.0

    @property
    def version(self) -> str:
        if self.policy is not None:
            return self.policy.version
        return f"{self.source}:lambda={self.lam:g},beta={self.beta:g}" + (
            f",lambda_t={self.lam_t:g}" if self.lam_t > 0 else "")


@dataclass
class Duel:
    """The online dueling mode: a bandit policy over pool models (issue 6, item 6)."""

    policy: Any
    pool_names: dict[str, str]  # policy model -> pool model
    state_out: Any
    embeddings: dict[str, Any] = field(default_factory=dict)  # duel id -> query embedding (LRU)
    save_lock: asyncio.Lock | None = None
    updates: int = 0


class ServeState:
    """Everything a running app holds. Loading happens in ``__init__`` (fails fast on bad config)."""

    def __init__(self, config: ServeConfig):
        from caproute.collect.config import load_pool_config

        self.config = config
        self.pool = load_pool_config(config.pool)
        self.pool_names = tuple(m.name for m in self.pool.models)
        self.routers: dict[str, RouterHandle] = {
            name: RouterHandle.load(name, path, self.pool_names, config.model_map, str(config.pool))
            for name, path in config.routers.items()
        }
        for p in config.policies:
            pol = load_policy(p)
            matches = [h for h in self.routers.values() if h.fingerprint == pol.router_fingerprint]
            if not matches:
                raise ConfigError(
                    f"{p}: calibrated for router directory fingerprint "
                    f"{pol.router_fingerprint[:12]}..., which none of the served routers "
                    f"{sorted(self.routers)} has; re-run `caproute calibrate`"
                )
            for h in matches:
                if h.policy is not None:
                    raise ConfigError(f"{p}: router '{h.name}' already has policy {h.policy.path}")
                h.attach_policy(pol)
        self.budgets: dict[str, tuple[BudgetSpec, Policy | None]] = {}
        for name, spec in config.budgets.items():
            pol = load_policy(spec.policy) if spec.policy is not None else None
            if pol is not None and not any(
                h.fingerprint == pol.router_fingerprint for h in self.routers.values()
            ):
                raise ConfigError(f"budget '{name}': policy {spec.policy} fits none of the served routers")
            self.budgets[name] = (spec, pol)
        for h in self.routers.values():  # a default or calibrated lambda_t needs predicted latencies
            for lam_t in (config.lam_t or 0.0, h.policy.lam_t if h.policy is not None else 0.0):
                h.pipeline.check_lam_t(lam_t)
        self.keyring = (
            KeyRing.load(config.keys_file) if not config.insecure_local or config.keys_file else KeyRing(())
        )
        if not config.insecure_local and len(self.keyring) == 0:
            raise ConfigError(
                "no API keys: create one with `caproute serve-key --keys-file KEYS` and pass "
                "--keys-file KEYS (or set CAPROUTE_API_KEY_HASHES), or use --insecure-local "
                "on a loopback address"
            )
        self.metrics = ServeMetrics()
        self.backends = Backends(
            self.pool, lean_transport=config.lean_transport, concurrency_divisor=config.workers,
            max_response_bytes=config.max_response_bytes,
        )
        self.feedback_limiter = RateLimiter(config.feedback_rate_per_s, config.feedback_burst)
        # registrations, feedback, request log, sticky map, duel learning: SQLite files or PostgreSQL
        self.state_store = open_state(config)
        self.store, self.request_log = self.state_store.store, self.state_store.request_log
        self.sticky = self.state_store.sticky
        self.duel = self._load_duel() if config.duel_policy is not None else None
        # --explore: routed requests sample their model from a logged distribution (serve/explore.py)
        self.exploration = Exploration(config.explore, config.explore_mode, config.explore_temperature)
        self.explore_rng = random.Random(config.explore_seed)
        self.shadow_judge = ShadowJudge.from_config(config, self.pool) if config.judge_sample > 0 else None
        self.draining = False
        self.started = time.time()

    def _load_duel(self) -> Duel:
        import sys

        from caproute.bandits.lifecycle import resume_policy

        # a restart continues from the online checkpoint when there is one, and says at which step
        resumed = resume_policy(self.config.duel_policy, self.config.duel_state_out)
        policy, src = resumed.policy, resumed.source
        print(resumed.message, file=sys.stderr, flush=True)
        names = {m: self.config.model_map.get(m, m) for m in policy.models_}
        missing = sorted(p for p in names.values() if p not in self.pool_names)
        if missing:
            raise ConfigError(
                f"duel policy {self.config.duel_policy}: models {missing} are not in the pool "
                f"{sorted(self.pool_names)} (map them with model_map)"
            )
        # load the sentence encoder now (seconds on a CPU), not in the first duel request, and before
        # the banner: a missing or broken encoder is a named error, not a startup traceback
        try:
            policy.embed("warm-up")
        except CaprouteError as e:
            raise ConfigError(f"duel policy {src}: {e}") from None
        except Exception as e:
            raise ConfigError(f"duel policy {src}: cannot load its encoder {policy.encoder}: {e}") from None
        return Duel(policy, names, self.config.duel_state_out or self.config.duel_policy)

    async def start(self) -> None:
        await self.backends.start()
        await self.state_store.start(self.metrics)
        self.metrics.bind(self.backends, self.store, self.request_log)
        if self.shadow_judge is not None:
            self.shadow_judge.start(self.store)
        if self.duel is not None:
            self.duel.save_lock = asyncio.Lock()
            await self.state_store.attach_duel(self.duel)  # learns what was acknowledged after the checkpoint

    async def stop(self) -> None:
        if self.shadow_judge is not None:
            await self.shadow_judge.stop()  # judgements in flight finish (or are cancelled) first
        await self.backends.aclose()
        await self.state_store.stop(self.duel)  # saves the duel policy where the state keeps it

    # -- parameters -------------------------------------------------------------------------------
    def params(self, handle: RouterHandle, target: Target, opts: CaprouteOptions | None) -> Params:
        pipe = handle.pipeline
        lam = self.config.lam if self.config.lam is not None else pipe.lam
        beta = self.config.beta if self.config.beta is not None else pipe.beta
        out = Params(lam, beta, "default", lam_t=self.config.lam_t or 0.0)
        if handle.policy is not None:
            out = Params(handle.policy.lam, handle.policy.beta, "policy", handle.policy, handle.policy.lam_t)
        budget = (opts.budget if opts is not None and opts.budget else None) or target.budget
        if budget is not None:
            if budget not in self.budgets:
                raise ApiError(
                    404,
                    f"unknown budget '{budget}' (configured: {sorted(self.budgets)})",
                    param="budget",
                    code="budget_not_found",
                )
            spec, pol = self.budgets[budget]
            if pol is not None:
                if pol.router_fingerprint != handle.fingerprint:
                    raise ApiError(
                        400,
                        f"budget '{budget}' is calibrated for another router than '{handle.name}'",
                        param="budget",
                        code="budget_router_mismatch",
                    )
                out = Params(pol.lam, pol.beta, f"budget:{budget}", pol, pol.lam_t)
            else:
                out = _override(out, spec, f"budget:{budget}")
        out = _override(out, target, "model-suffix")
        if opts is not None:
            out = _override(out, opts, "request")
        if out.lam_t > 0:
            try:
                handle.pipeline.check_lam_t(out.lam_t)
            except ConfigError as e:
                raise ApiError(409, f"router '{handle.name}': {e}", param="lambda_t",
                               code="latency_unavailable") from None
        return out

    def parse_target(self, model: str) -> Target:
        return parse_model(
            model,
            routers=self.routers,
            pool=self.pool_names,
            default_router=self.config.default_router,
            duel=self.duel is not None,
        )

    def admit(self) -> None:
        """503 while the feedback store's registration backlog is full (never answer unregistered)."""
        if self.store.full:
            self.metrics.overloaded.inc()
            raise ApiError(
                503,
                f"overloaded: {self.store.pending} served responses are waiting to be stored; retry shortly",
                type="server_error",
                code="overloaded",
                headers={"retry-after": "1"},
            )


def _override(out: Params, given, source: str) -> Params:
    """``out`` with the lambda/beta/lambda_t that ``given`` (a budget, a model suffix or the request
    body) sets; unchanged when it sets none."""
    lam, beta, lam_t = given.lam, given.beta, given.lam_t
    if lam is None and beta is None and lam_t is None:
        return out
    return Params(out.lam if lam is None else lam, out.beta if beta is None else beta, source,
                  lam_t=out.lam_t if lam_t is None else lam_t)
