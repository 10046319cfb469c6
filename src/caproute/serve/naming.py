"""The ``model`` field grammar of the proxy (pure parsing, no I/O).

- ``caproute/<router>``: route with that router (``caproute`` alone: the default router).
- ``caproute/<router>@<budget>``: with a named budget from the config (its lambda/beta).
- ``caproute/<router>:lambda=0.1,beta=0``: explicit lambda/beta (``lam`` is accepted for lambda);
  ``lambda_t=0.05`` sets the PROPOSED latency weight (quality per second) the same way.
  Both may combine: ``caproute/dars-knn@cheap:beta=0.3``.
- ``caproute/duel``: the online dueling mode (two answers, pairwise feedback), when configured.
- any other value: a pool model name, called directly (no routing).

Precedence of lambda/beta, most specific first: the request body's ``caproute`` object, the
suffix, the named budget, the calibrated policy, the server defaults.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from caproute.serve.errors import ApiError

PREFIX = "caproute"
DUEL = "duel"
PARAM_ALIASES = {"lambda": "lam", "lam": "lam", "beta": "beta", "lambda_t": "lam_t", "lam_t": "lam_t"}


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` field asks for."""

    kind: Literal["router", "direct", "duel"]
    name: str
    budget: str | None = None
    lam: float | None = None
    beta: float | None = None
    lam_t: float | None = None


def router_model_id(router: str) -> str:
    return f"{PREFIX}/{router}"


def parse_model(
    value: str,
    *,
    routers: Collection[str],
    pool: Collection[str],
    default_router: str | None,
    duel: bool = False,
) -> Target:
    """Parse the ``model`` field; unknown names raise a 404 ``model_not_found`` listing what exists."""
    if value in pool:
        return Target("direct", value)
    if value != PREFIX and not value.startswith(PREFIX + "/"):
        raise _unknown(value, routers, pool, duel)
    rest = value[len(PREFIX) + 1 :] if value != PREFIX else ""
    rest, _, params = rest.partition(":")
    name, _, budget = rest.partition("@")
    if name == DUEL and duel and not budget and not params:
        return Target("duel", DUEL)
    if not name:
        if default_router is None:
            raise ApiError(
                404,
                f"model '{value}': name a router, one of {[router_model_id(r) for r in sorted(routers)]}",
                param="model",
                code="model_not_found",
            )
        name = default_router
    if name not in routers:
        raise _unknown(value, routers, pool, duel)
    lam, beta, lam_t = _params(value, params)
    return Target("router", name, budget or None, lam, beta, lam_t)


def _params(value: str, params: str) -> tuple[float | None, float | None, float | None]:
    out: dict[str, float] = {}
    for item in filter(None, params.split(",")):
        key, eq, raw = item.partition("=")
        key = PARAM_ALIASES.get(key.strip().lower())
        if key is None or not eq:
            raise ApiError(
                400,
                f"model '{value}': suffix item '{item}' must be lambda=<x>, beta=<x> or lambda_t=<x>",
                param="model",
                code="invalid_model_suffix",
            )
        try:
            x = float(raw)
        except ValueError:
            x = math.nan
        if not math.isfinite(x) or x < 0:
            raise ApiError(
                400,
                f"model '{value}': {item.partition('=')[0]} must be a number >= 0, got '{raw}'",
                param="model",
                code="invalid_model_suffix",
            )
        out[key] = x
    return out.get("lam"), out.get("beta"), out.get("lam_t")


def _unknown(value: str, routers: Collection[str], pool: Collection[str], duel: bool) -> ApiError:
    names = [router_model_id(r) for r in sorted(routers)] + ([router_model_id(DUEL)] if duel else [])
    names += sorted(pool)
    return ApiError(
        404, f"model '{value}' does not exist; available: {names}", param="model", code="model_not_found"
    )
