"""What ``caproute serve`` runs with: routers, pool, defaults, budgets, policies and limits.

``caproute serve`` builds a :class:`ServeConfig` from its flags and an optional YAML file
(``--config``; flags win). Every field has a default except the routers and the pool. Example::

    routers: {dars-knn: runs/knn}          # name -> router directory (caproute train --out)
    pool: pool.yaml                        # the pool YAML of `caproute pool up` / collection
    default_router: dars-knn               # what model "caproute" alone routes with
    lambda: 0.05                           # default cost weight (null: the router's training value)
    beta: 0.2                              # default risk weight (null: the router's training value)
    lambda_t: 0.0                          # default latency weight, quality per second (PROPOSED; 0: the paper's U)
    policies: [policy.json]                # calibrated policies (`caproute calibrate`), one per router
    budgets:                               # named budgets: caproute/dars-knn@cheap
      cheap: {lambda: 1.0}
      strict: {policy: strict-policy.json}
    model_map: {}                          # router model name -> pool model name, where they differ
    conversation: last_user                # last_user | user_turns | history
    max_attempts: 3                        # models tried per request (first choice + fallbacks)
    max_body_bytes: 1048576
    feedback_db: caproute-feedback.sqlite3
    state: null                            # postgresql://user:pass@host/db: replicas share one state (docs/scaling.md)
    state_refresh_s: 2                     # PostgreSQL state: a replica reads what others learned this often
    keys_file: keys.txt                    # sha256 hashes of API keys (caproute serve-key)
    cors_origins: []                       # CORS is off unless origins are listed
    request_timeout_s: 30                  # one client request, all fallbacks included (null: per attempt only)
    max_pending_registrations: 100000      # registrations not yet stored before new requests get 503
    workers: 1                             # processes sharing the port (caproute serve --workers)
    max_response_bytes: 16777216           # a bigger backend answer is a backend error (fallback)
    feedback_rate_per_s: 5                 # per API key; bursts of feedback_burst (50)
    header_timeout_s: 10                   # slow clients: headers, body, idle keep-alive, connections
    body_timeout_s: 30
    keep_alive_timeout_s: 5
    max_connections: 1000                  # per worker
    explore: 0.1                           # share of routed requests that explore (docs/serve.md, replay)
    explore_mode: epsilon                  # epsilon | softmax (over predicted utility / explore_temperature)
    judge: smollm2-135m                    # shadow judging: a pool model scores a sample of routed answers
    judge_sample: 0.1                      # ... this share of them, asynchronously
    judge_budget_usd: 1.0                  # ... until the judge has spent this much (per process)
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from caproute.errors import ConfigError


class BudgetSpec(BaseModel):
    """A named budget: explicit lambda/beta/lambda_t, or a calibrated policy file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)
    lam: float | None = Field(default=None, alias="lambda", ge=0)
    beta: float | None = Field(default=None, ge=0)
    lam_t: float | None = Field(default=None, alias="lambda_t", ge=0)
    policy: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> BudgetSpec:
        given = (self.lam, self.beta, self.lam_t)
        if self.policy is not None and any(x is not None for x in given):
            raise ValueError("give either a policy file or lambda/beta/lambda_t, not both")
        if self.policy is None and all(x is None for x in given):
            raise ValueError("needs lambda, beta, lambda_t or policy")
        return self


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    routers: dict[str, Path] = Field(min_length=1, description="router name -> router directory")
    pool: Path = Field(description="pool YAML (models, endpoints, prices)")
    default_router: str | None = None
    lam: float | None = Field(default=None, alias="lambda", ge=0)
    beta: float | None = Field(default=None, ge=0)
    lam_t: float | None = Field(
        default=None, alias="lambda_t", ge=0,
        description="default latency weight lambda_t, quality per second (PROPOSED; null: 0 or the policy's)",
    )
    policies: list[Path] = Field(default_factory=list)
    budgets: dict[str, BudgetSpec] = Field(default_factory=dict)
    model_map: dict[str, str] = Field(default_factory=dict)
    conversation: Literal["last_user", "user_turns", "history"] = "last_user"
    max_routing_chars: int = Field(default=4000, ge=1)
    sticky_ttl_s: float = Field(default=3600.0, gt=0)
    sticky_max_entries: int = Field(default=100_000, ge=1)
    max_attempts: int = Field(default=3, ge=1, le=16)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    max_messages: int = Field(default=1024, ge=1)
    max_route_inputs: int = Field(default=1024, ge=1)
    feedback_db: Path = Path("caproute-feedback.sqlite3")
    state: str | None = Field(
        default=None,
        description="where replicas share their state: postgresql://user:pass@host:port/db "
        "(null: SQLite files on this host, feedback_db and log_store)",
    )
    state_refresh_s: float = Field(
        default=2.0, gt=0, le=3600, description="PostgreSQL state: how often a replica reads what others learned"
    )
    duel_checkpoint_every: int = Field(
        default=100, ge=1, description="PostgreSQL state: duel increments between shared policy checkpoints"
    )
    keys_file: Path | None = None
    insecure_local: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    cors_origins: list[str] = Field(default_factory=list)
    drain_timeout_s: float = Field(default=30.0, gt=0)
    duel_policy: Path | None = Field(default=None, description="saved dueling-bandit state (caproute duel)")
    duel_state_out: Path | None = Field(default=None, description="where the online policy is saved")
    log_store: Path | None = Field(
        default=None, description="opt-in SQLite log of routed requests and answers (feedback export)"
    )
    explore: float = Field(
        default=0.0, ge=0, le=1,
        description="share of routed requests that explore (logged propensities for caproute replay)",
    )
    explore_mode: Literal["epsilon", "softmax"] = Field(
        default="epsilon", description="epsilon: uniform over the candidates; softmax: over predicted utility / T"
    )
    explore_temperature: float = Field(default=0.1, gt=0, description="temperature of --explore-mode softmax")
    explore_seed: int | None = Field(default=None, description="seed of the exploration draws (null: random)")
    judge: str | None = Field(default=None, description="pool model that shadow-judges a sample of routed answers")
    judge_sample: float = Field(default=0.0, ge=0, le=1, description="share of routed answers judged")
    judge_budget_usd: float | None = Field(default=None, ge=0, description="judge spend cap (USD) of this process")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    blas_threads: int | None = Field(
        default=1,
        ge=1,
        description="BLAS threads of the server process (caproute serve only; null: leave as is)",
    )
    request_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="deadline of one client request across all its attempts (fallbacks included); "
        "null: each attempt is bounded by its model's timeout_s only",
    )
    max_pending_registrations: int = Field(
        default=100_000,
        ge=1,
        description="served responses waiting to be stored before new requests get 503",
    )
    workers: int = Field(default=1, ge=1, le=64, description="server processes sharing the port")
    lean_transport: bool = Field(
        default=True,
        description="http:// backends through caproute's lean httpx "
        "transport (False: httpx's default transport)",
    )
    max_response_bytes: int = Field(
        default=16 << 20,
        ge=1024,
        description="largest backend answer read (bytes); a bigger one is a backend error (fallback)",
    )
    feedback_rate_per_s: float = Field(default=5.0, gt=0, description="feedback requests per API key per second")
    feedback_burst: int = Field(default=50, ge=1, description="feedback requests per API key at once")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="a client's request line and headers must arrive within this"
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="a client's request body must arrive within this after its headers"
    )
    keep_alive_timeout_s: float = Field(
        default=5.0, gt=0, description="an idle keep-alive client connection is closed after this"
    )
    max_connections: int = Field(
        default=1000, ge=1, description="open client connections per worker; more are closed at once"
    )

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.default_router is None:
            self.default_router = next(iter(self.routers))
        elif self.default_router not in self.routers:
            raise ValueError(f"default_router '{self.default_router}' is not one of {sorted(self.routers)}")
        bad = [n for n in self.routers if not n or "/" in n or "@" in n or ":" in n]
        if bad:
            raise ValueError(f"router names must be non-empty and free of '/', '@', ':' (got {bad})")
        if self.state is not None and not self.state.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"state must be a postgresql:// URL (or unset for SQLite files), got '{self.state[:40]}'")
        if self.workers > 1 and self.duel_policy is not None:
            raise ValueError(
                "the duel mode learns online in one process: it cannot run with workers > 1"
            )
        if self.judge_sample > 0 and self.judge is None:
            raise ValueError("judge_sample needs judge: the pool model that scores the sampled answers (--judge)")
        if self.insecure_local and not is_loopback(self.host):
            raise ValueError(
                f"--insecure-local serves without API keys, so it only binds to loopback; "
                f"host '{self.host}' is not a loopback address"
            )
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


FLAGS = {"routers": "--router DIR", "pool": "--pool POOL.yaml"}
PATH_FIELDS = ("pool", "feedback_db", "keys_file", "duel_policy", "duel_state_out", "log_store")


def parse_serve_config(data: dict[str, Any], *, source: str = "<serve config>") -> ServeConfig:
    """Validate a mapping; errors name the source and every bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "<root>"
            msg = (
                "unknown field"
                if err["type"] == "extra_forbidden"
                else err["msg"].removeprefix("Value error, ")
            )
            if err["type"] == "missing" and loc in FLAGS:
                msg = f"missing: give {FLAGS[loc]} (or '{loc}:' in --config)"
            msgs.append(f"field '{loc}': {msg}")
        raise ConfigError(f"{source}: invalid serve config:\n  " + "\n  ".join(msgs)) from None


def resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Paths in a config file are relative to the file's folder."""

    def r(v):
        return str(base / v) if isinstance(v, str | Path) and not Path(v).is_absolute() else v

    out = dict(data)
    for k in PATH_FIELDS:
        if out.get(k) is not None:
            out[k] = r(out[k])
    if isinstance(out.get("routers"), dict):
        out["routers"] = {k: r(v) for k, v in out["routers"].items()}
    if isinstance(out.get("policies"), list):
        out["policies"] = [r(v) for v in out["policies"]]
    if isinstance(out.get("budgets"), dict):
        out["budgets"] = {
            k: ({**b, "policy": r(b["policy"])} if isinstance(b, dict) and b.get("policy") else b)
            for k, b in out["budgets"].items()
        }
    return out


def load_serve_config(path: str | os.PathLike | None = None, **overrides: Any) -> ServeConfig:
    """YAML file (optional) + overrides (the CLI flags given; ``None`` values are ignored, flags win)."""
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        from caproute.core.configfile import load_yaml

        p = Path(path)
        data = load_yaml(p, "serve config") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        data, source = resolve_paths(data, p.parent), str(p)
    # flags by their alias, so that a flag wins over the same field in the file (``--lambda`` over ``lambda:``)
    aliases = {"lam": "lambda", "lam_t": "lambda_t"}
    merged = {**data, **{aliases.get(k, k): v for k, v in overrides.items() if v is not None}}
    return parse_serve_config(merged, source=source)
