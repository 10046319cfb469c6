"""Dueling-bandit policies: rounds per second of select + update at d = 384 with K = 11 arms
(issue 6 item 8; goal >= 200 rounds/s on 2 cores with the fast path: FGTS.CDB sampler="laplace",
feel_good="tilt"; the importance-reweighted Laplace variant and SGLD are reported beside it).

Each figure is the median over repeats of: a policy with a warm history of ``warm`` rounds
(not timed; the feel-good and SGLD minibatches then sample a realistic history) plays ``timed``
more rounds of select + update on random unit-norm queries and random feedback. BLAS is limited
to one thread (as the duel grid runs it; on a shared machine a multi-threaded BLAS is far slower
on these 384 x 384 problems). The 1-minute load average at the start is in the notes: the
2-core machine is shared, so figures taken under load understate an idle machine.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np

D, K = 384, 11
GOAL = 200.0


def _policy(name: str, arms: np.ndarray, seed: int):
    from caproute.bandits.baselines import MaxInPPolicy, UniformPolicy
    from caproute.bandits.fgts import FGTSCDB

    if name == "fgts-cdb-laplace-tilt":
        return FGTSCDB(arms, sampler="laplace", feel_good="tilt", feature_scale=20.0, horizon=5000, seed=seed)
    if name == "fgts-cdb-laplace-importance":
        return FGTSCDB(arms, sampler="laplace", feel_good="importance", feature_scale=20.0, horizon=5000,
                       seed=seed)
    if name == "fgts-cdb-sgld":
        return FGTSCDB(arms, sampler="sgld", feature_scale=20.0, horizon=5000, seed=seed)
    if name == "maxinp":
        return MaxInPPolicy(arms, feature_scale=20.0, seed=seed)
    return UniformPolicy(arms, seed=seed)


def rounds_per_second(name: str, warm: int, timed: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    arms = rng.normal(size=(K, D))
    arms /= np.linalg.norm(arms, axis=1, keepdims=True)
    X = rng.normal(size=(warm + timed, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = rng.choice([-1, 1], size=warm + timed)
    policy = _policy(name, arms, seed)
    for t in range(warm):
        i, j = policy.select(X[t])
        policy.update(X[t], i, j, int(y[t]))
    t0 = time.perf_counter()
    for t in range(warm, warm + timed):
        i, j = policy.select(X[t])
        policy.update(X[t], i, j, int(y[t]))
    return timed / (time.perf_counter() - t0)


def run(quick: bool = False) -> list[dict]:
    from threadpoolctl import threadpool_limits

    load = os.getloadavg()[0]
    repeats = 3 if quick else 5
    plan = [("fgts-cdb-laplace-tilt", 500, 300 if quick else 1000),
            ("fgts-cdb-laplace-importance", 500, 300 if quick else 1000), ("fgts-cdb-sgld", 200, 50 if quick else 200),
            ("maxinp", 500, 300 if quick else 1000), ("uniform", 0, 2000)]
    rows = []
    with threadpool_limits(1):
        for name, warm, timed in plan:
            vals = [rounds_per_second(name, warm, timed, seed) for seed in range(repeats)]
            med = statistics.median(vals)
            fast = name == "fgts-cdb-laplace-tilt"
            rows.append({
                "benchmark": "bandits", "figure": f"{name} select+update (d={D}, K={K})",
                "value": round(med, 1), "unit": "rounds/s", "goal": f">= {GOAL:.0f}" if fast else None,
                "baseline": GOAL if fast else None, "ratio": round(med / GOAL, 2) if fast else None,
                "notes": f"median of {repeats}; {timed} timed rounds after {warm} warm; "
                         f"1 BLAS thread; load avg {load:.1f} at start"})
    return rows


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in os.sys.argv), indent=2))
