"""Exploration of routed traffic (``caproute serve --explore EPS``): logged propensities for replay.

Off-policy replay (``caproute replay``, docs/replay.md) can only evaluate a candidate router on the
models the serving policy could have chosen, weighted by the inverse of the probability it chose
them. A deterministic router chooses one model per query with probability 1, so its log evaluates
only candidates that agree with it everywhere. With ``--explore EPS`` the proxy samples the model
of each routed request from a known distribution and logs it:

- ``epsilon`` (default): p(a) = (1 - ε)·[a = the router's choice] + ε / m over the m candidates;
- ``softmax`` (``--explore-mode softmax --temperature T``): p(a) = (1 - ε)·[a = the router's
  choice] + ε·softmax(U(x, a) / T) over the router's predicted utilities U, so the explored share
  ε goes mostly to models whose predicted utility is close to the best (a small T: the runner-up;
  a large T: uniform).

Cost (what exploration costs the served traffic, in the router's own predicted utility): the
expected loss per request is ε·(U(x, a*) - Σ_a q(a)·U(x, a)) for the exploring distribution q
(uniform or the softmax), at most ε times the gap between the best and the worst model; and at
most a share ε of the requests is served by another model than the router's choice. The loss is
returned per request by :func:`expected_loss` (the ``caproute`` object of an answer carries it as
``explore_loss``).

Everything here is a pure function of the router's decision and a random number; the proxy's
:class:`~caproute.serve.routed_chat.RoutedChat` and the LiteLLM plugin
(:mod:`caproute.integrations.litellm`, ``explore=EPS``) apply it (sticky conversations keep their
model: propensity 1) and log the distribution with :func:`routing_record`
(:mod:`caproute.serve.log_store`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

MODES = ("epsilon", "softmax")
DEFAULT_TEMPERATURE = 0.1  # PROPOSED: utilities live in about [-0.2, 1]; 0.1 separates a 0.1 gap by e


@dataclass(frozen=True)
class Exploration:
    """``eps`` in [0, 1]: the share of requests that explore; ``mode``: epsilon | softmax;
    ``temperature`` > 0: of the softmax over predicted utility."""

    eps: float = 0.0
    mode: Literal["epsilon", "softmax"] = "epsilon"
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self):
        if not (0.0 <= self.eps <= 1.0) or not math.isfinite(self.eps):
            raise ValueError(f"explore: epsilon must be in [0, 1], got {self.eps}")
        if self.mode not in MODES:
            raise ValueError(f"explore mode must be one of {MODES}, got '{self.mode}'")
        if not (self.temperature > 0) or not math.isfinite(self.temperature):
            raise ValueError(f"explore temperature must be > 0, got {self.temperature}")

    @property
    def on(self) -> bool:
        return self.eps > 0

    def to_dict(self) -> dict:
        return {"eps": self.eps, "mode": self.mode, "temperature": self.temperature if self.mode == "softmax" else None}


def selection_probabilities(
    utility: Mapping[str, float], chosen: str, candidates: Sequence[str], exploration: Exploration
) -> dict[str, float]:
    """{model: probability} of serving each candidate: the router's ``chosen`` model with
    probability 1 - ε plus its share of the exploring distribution (see the module docstring).
    ``utility``: the router's predicted U per candidate (used by the softmax only)."""
    m = len(candidates)
    eps = exploration.eps
    if exploration.mode == "softmax":
        u = [float(utility[a]) for a in candidates]
        top = max(u)
        w = [math.exp((x - top) / exploration.temperature) for x in u]
        z = sum(w)
        q = [x / z for x in w]
    else:
        q = [1.0 / m] * m
    return {a: (1.0 - eps) * (a == chosen) + eps * qa for a, qa in zip(candidates, q, strict=True)}


def sample(probabilities: Mapping[str, float], u: float) -> str:
    """The model that ``u`` ~ U[0, 1) selects by inverse CDF over ``probabilities`` (in order)."""
    acc = 0.0
    last = None
    for a, p in probabilities.items():
        acc += p
        last = a
        if u < acc:
            return a
    return last  # rounding: u within 1e-16 of 1


def expected_loss(utility: Mapping[str, float], chosen: str, probabilities: Mapping[str, float]) -> float:
    """The predicted utility the exploring policy gives up per request against always serving
    ``chosen``: U(x, chosen) - Σ_a p(a)·U(x, a) (>= 0 when ``chosen`` is the argmax)."""
    return float(utility[chosen]) - sum(p * float(utility[a]) for a, p in probabilities.items())


@dataclass(frozen=True)
class Pick:
    """What the serving policy did for one request: the ``chosen`` model, its ``propensity`` and the
    full distribution over ``candidates`` (the router's own choice is ``router_choice``)."""

    chosen: str
    propensity: float
    propensities: dict[str, float]
    router_choice: str
    loss: float

    @property
    def explored(self) -> bool:
        return self.chosen != self.router_choice


def pick(
    utility: Mapping[str, float],
    router_choice: str,
    candidates: Sequence[str],
    exploration: Exploration,
    rng: random.Random,
) -> Pick:
    """Sample the model to serve. Without exploration: the router's choice with propensity 1."""
    if not exploration.on:
        probs = {a: float(a == router_choice) for a in candidates}
    else:
        probs = selection_probabilities(utility, router_choice, candidates, exploration)
    chosen = sample(probs, rng.random()) if exploration.on else router_choice
    return Pick(chosen, probs[chosen], probs, router_choice, expected_loss(utility, router_choice, probs))


def fixed(model: str, candidates: Sequence[str]) -> Pick:
    """A request whose model was fixed before routing (a sticky conversation): propensity 1."""
    probs = {a: float(a == model) for a in candidates}
    return Pick(model, 1.0, probs, model, 0.0)


def routing_record(routing_text: str | None, drawn: Pick, *, router_version: str | None,
                   policy_version: str | None, lam: float | None, beta: float | None, lam_t: float | None,
                   exploration: Exploration) -> dict:
    """The request log's routing columns (:data:`caproute.serve.log_store.ROUTING_FIELDS`) of one
    routed request: what off-policy replay needs. The candidates are those of ``drawn``'s
    distribution, ``chosen`` the drawn model (the request log's ``model`` is the one that answered:
    another after a fallback, which export skips). One builder for the proxy and the LiteLLM plugin."""
    return {"routing_text": routing_text, "candidates": list(drawn.propensities), "chosen": drawn.chosen,
            "propensity": drawn.propensity, "propensities": drawn.propensities,
            "router_version": router_version, "policy_version": policy_version, "lam": lam, "beta": beta,
            "explore": exploration.to_dict() if exploration.on else None, "lam_t": lam_t}
