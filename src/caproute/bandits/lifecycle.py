"""Build a dueling policy ready to serve (``caproute duel init``), from offline observations.

The arms come from the data: CCFT model embeddings (algorithms.md §B.3) computed on ALL the
offline queries of the store or data set (every query is offline here: there is no simulated
online stream), the query encoder is the CCFT fine-tuned MiniLM (or the untuned MiniLM for
``minilm-*`` embeddings), and the feature scale s_phi is the PROPOSED auto scale of
:func:`caproute.bandits.features.auto_feature_scale` on those queries. The policy is FGTS.CDB
with its one default set (:data:`caproute.bandits.defaults.DEFAULTS`: SGLD, eta 0.25, mu 1/sqrt(T)) on
the paper's CCFT arms; ``arm_residual`` > 0 adds the PROPOSED per-model component (docs/bandits.md). Its directory holds
``config.json``, ``state.safetensors``, ``encoder/`` (copied, so the directory is self-contained
and can be moved) and ``init.json`` (where the arms came from). With ``offline_prior`` the FGTS.CDB
policy starts from the PROPOSED warm-start prior fitted on the same scored queries
(:func:`caproute.bandits.prior.offline_prior`) instead of N(0, sigma0^2 I).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from caproute.bandits.defaults import DEFAULTS as FGTS_DEFAULTS
from caproute.errors import ConfigError, DataError


@dataclass(frozen=True)
class InitReport:
    out: str
    policy: str
    models: list[str]
    embeddings: str
    encoder: str
    feature_scale: float
    n_queries: int
    categories: list[str]
    source: str
    offline_prior: bool = False
    prior_weight: float | None = None
    #: fgts-cdb: what runs, named for it (caproute.bandits.defaults.method_label), and its settings
    method: str = ""
    settings: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def restrict_models(env, models: list[str] | None):
    """The environment with only ``models`` (in that order); errors list the available ones."""
    if not models:
        return env
    unknown = [m for m in models if m not in env.models]
    if unknown:
        raise DataError(f"models {unknown} are not in the data (models: {', '.join(env.models)})",
                        source=env.meta.get("source_path", env.name), field="models")
    idx = [env.models.index(m) for m in models]
    from caproute.bandits.environment import DuelEnvironment

    return DuelEnvironment(env.name, env.query_ids, env.texts, tuple(models), env.utilities[:, idx],
                           env.perf[:, idx], env.cost[:, idx], env.sigma_q[:, idx], env.categories, env.scale,
                           None if env.labels is None else env.labels[:, idx][:, :, idx], dict(env.meta))


def init_policy(out: str | os.PathLike, *, store: str | os.PathLike | None = None,
                data: str | os.PathLike | None = None, dataset: str | None = None,
                models: list[str] | None = None, embeddings: str = "ccft-excel-perf-cost",
                policy: str = "fgts-cdb", sampler: str = FGTS_DEFAULTS.sampler,
                feel_good: str = FGTS_DEFAULTS.feel_good, eta: float = FGTS_DEFAULTS.eta,
                mu: float | None = FGTS_DEFAULTS.mu, horizon: int = FGTS_DEFAULTS.horizon,
                arm_residual: float = FGTS_DEFAULTS.arm_residual, seed: int = 0, label: str = "human",
                offline_prior: bool = False, prior_weight: float = 1.0, cache_dir: str | os.PathLike | None = None, copy_encoder: bool = True,
                progress: bool = False, allow_same: bool = False) -> InitReport:
    """Create a servable dueling policy in ``out`` from ``store`` or ``data`` observations.

    Defaults are FGTS.CDB's one default set (:data:`caproute.bandits.defaults.DEFAULTS`) with the
    paper's CCFT arms (``arm_residual`` = gamma = 0); the per-model arm component, the Laplace
    sampler, other eta/mu and the offline prior are options. ``allow_same``: a duel may pair a model
    with itself (as in the paper); by default the servable policy pairs two different models."""
    from caproute.bandits.embeddings import CCFTConfig, build_embeddings, parse_embeddings
    from caproute.bandits.environment import load_environment
    from caproute.bandits.policy import get_policy_class
    from caproute.core.atomic import write_json

    parse_embeddings(embeddings)
    klass = get_policy_class(policy)
    if offline_prior and policy != "fgts-cdb":
        raise ConfigError(f"--offline-prior applies to fgts-cdb, not '{policy}'")
    if not (np.isfinite(arm_residual) and arm_residual >= 0):
        raise ConfigError(f"--arm-residual must be a finite number >= 0, got {arm_residual}")
    if offline_prior and not (np.isfinite(prior_weight) and prior_weight > 0):
        raise ConfigError(f"--prior-weight must be a finite number > 0, got {prior_weight}")
    env = restrict_models(load_environment(store=store, data=data, dataset=dataset, label=label), models)
    if env.n_models < 2:
        raise DataError(f"a duel needs at least 2 models, the data has {list(env.models)}",
                        source=str(store or data), field="models")
    if env.n_queries < 2:
        raise DataError(f"{env.n_queries} queries with every model observed; the model embeddings need at least 2",
                        source=str(store or data))
    offline = np.arange(env.n_queries)
    try:
        emb = build_embeddings(env, offline, [embeddings], cfg=CCFTConfig(seed=seed, residual=arm_residual), cache_dir=cache_dir,
                               progress=progress)[embeddings]
    except ValueError as e:  # e.g. CCFT needs two categories of at least two queries
        if isinstance(e, DataError | ConfigError):
            raise
        raise DataError(f"cannot build '{embeddings}' model embeddings from {env.n_queries} queries: {e} "
                        "(use --embeddings minilm-... for very small data)", source=str(store or data)) from None
    params = {"seed": seed, "encoder": emb.encoder}
    if policy == "fgts-cdb":
        params.update(sampler=sampler, feel_good=feel_good, eta=eta, mu=mu, horizon=horizon,
                      feature_scale=emb.feature_scale)
        if offline_prior:
            # PROPOSED warm start: the Laplace posterior after every scored query of the data
            from caproute.bandits.prior import offline_prior as fit_prior

            params["prior_mean"], params["prior_cov"] = fit_prior(
                emb.X, emb.arms, emb.feature_scale, env.utilities, env.scale, eta=eta, weight=prior_weight)
    elif "feature_scale" in klass._param_names():
        params["feature_scale"] = emb.feature_scale
    try:
        pol = klass(emb.arms, list(env.models), **params)
    except TypeError as e:
        raise ConfigError(f"policy '{policy}' cannot be built for serving: {e}") from None
    out = Path(out)
    if (out / "config.json").exists():
        raise ConfigError(f"{out}: a policy exists there already; choose another --out or remove it")
    pol.allow_same_ = bool(allow_same)
    pol.save(out, copy_encoder=copy_encoder)
    encoder = str(out / "encoder") if copy_encoder else emb.encoder
    report = InitReport(str(out), policy, list(env.models), embeddings, encoder, float(emb.feature_scale),
                        int(env.n_queries), [str(c) for c in emb.categories], str(store or data),
                        bool(offline_prior), float(prior_weight) if offline_prior else None)
    if policy == "fgts-cdb":
        from caproute.bandits.defaults import method_label

        report = replace(report, method=method_label(
            eta=eta, mu=mu, horizon=horizon, sampler=sampler, feel_good=feel_good, arm_residual=arm_residual,
            offline_prior=offline_prior), settings={
            "eta": float(eta), "mu": None if mu is None else float(mu), "mu_value": float(pol.mu_),
            "horizon": int(horizon), "sampler": sampler, "feel_good": feel_good,
            "arm_residual": float(arm_residual), "offline_prior": bool(offline_prior)})
    write_json(report.to_dict(), out / "init.json")
    return report


@dataclass(frozen=True)
class Resumed:
    """A servable policy loaded for serving: from the online checkpoint when there is one."""

    policy: object
    source: str
    step: int
    resumed: bool

    @property
    def message(self) -> str:
        """'duel policy: resumed from policy-online at step t = 3 (...)' or 'started from policy ...'."""
        ck = getattr(self.policy, "checkpoint_", {}) or {}
        seq = f", feedback seq {ck['feedback_seq']}" if "feedback_seq" in ck else ""
        if self.resumed:
            return f"duel policy: resumed from {self.source} at step t = {self.step}{seq}"
        return f"duel policy: started from {self.source} at step t = {self.step}"


def resume_policy(initial: str | os.PathLike, online: str | os.PathLike | None = None) -> Resumed:
    """The policy to serve: the online checkpoint folder ``online`` when it holds one (a restart
    continues there), else the initial policy ``initial``; :attr:`Resumed.message` names the step.

    An online folder is self-contained (its ``encoder/`` is copied there on the first checkpoint,
    :meth:`caproute.bandits.policy.DuelingPolicy.save`): moving or deleting ``initial`` later does
    not break it."""
    from caproute.bandits.policy import DuelingPolicy

    use_online = online is not None and (Path(online) / "config.json").exists()
    src = Path(online) if use_online else Path(initial)
    policy = DuelingPolicy.load(src)
    return Resumed(policy, str(src), int(policy.t_), use_online)
