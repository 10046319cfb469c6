"""Routers as the server holds them: the loaded pipeline, its pool mapping, policy and batcher.

- :func:`fallback_order` (pure): models by predicted utility, best first; the order in which a
  failing request falls back.
- :class:`DecisionBatcher`: concurrent requests are decided together, so under load one
  featurise + predict call serves many requests (the pipeline is vectorised).
- :class:`RouterHandle`: one router of the server; checks that every model it was trained on maps
  to a pool model (``model_map`` renames where names differ).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from caproute.errors import ConfigError
from caproute.serve.calibrate import Policy, directory_fingerprint
from caproute.serve.drift import DriftMonitor


def fallback_order(
    utility: Mapping[str, float], mu_c: Mapping[str, float], chosen: str, models: Sequence[str]
) -> list[str]:
    """``chosen`` first, then the other models by utility (desc), cost (asc), model order."""
    rank = {m: k for k, m in enumerate(models)}
    rest = sorted((m for m in models if m != chosen), key=lambda m: (-utility[m], mu_c[m], rank[m]))
    return [chosen, *rest]


class DecisionBatcher:
    """Decide concurrent requests of one router together, on the event loop.

    The first request of a loop iteration schedules a drain with ``call_soon``; every request that
    arrives before it runs joins the batch, and one vectorised ``decide`` call serves them all.
    Deciding on the loop (about a millisecond for TF-IDF kNN) is cheaper than a worker thread,
    whose GIL hand-offs cost up to the interpreter's switch interval (5 ms) per request. Lists
    longer than ``thread_above`` (``/v1/route`` batches) are decided in a worker thread instead,
    so a large batch does not stall other requests.
    """

    def __init__(self, pipeline, max_batch: int = 256, thread_above: int = 64):
        self.pipeline, self.max_batch, self.thread_above = pipeline, max_batch, thread_above
        self._pending: list[tuple[str, float, float, float, asyncio.Future]] = []
        self._scheduled = False
        self.batches = 0
        self.decided = 0

    async def decide(self, text: str, lam: float, beta: float, lam_t: float = 0.0):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((text, lam, beta, lam_t, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._drain)
        return await fut

    async def decide_many(self, texts: Sequence[str], lam: float, beta: float, lam_t: float = 0.0) -> list:
        texts = list(texts)
        if len(texts) > self.thread_above:
            return await asyncio.to_thread(self.pipeline.decide, texts, lam, beta, lam_t)
        return self.pipeline.decide(texts, lam, beta, lam_t)

    def _drain(self) -> None:
        self._scheduled = False
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            groups: dict[tuple[float, float, float], list] = {}
            for item in batch:
                groups.setdefault(item[1:4], []).append(item)
            for (lam, beta, lam_t), items in groups.items():
                try:
                    decisions = self.pipeline.decide([t for t, *_ in items], lam, beta, lam_t)
                except Exception as e:  # the pipeline failed: every waiter of this group gets the error
                    for *_, fut in items:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for (*_, fut), decision in zip(items, decisions, strict=True):
                    if not fut.done():
                        fut.set_result(decision)
            self.batches += 1
            self.decided += len(batch)


@dataclass
class RouterHandle:
    name: str
    path: Path
    pipeline: object
    pool_names: dict[str, str]  # router model -> pool model
    fingerprint: str
    policy: Policy | None = None
    drift: DriftMonitor | None = None
    batcher: DecisionBatcher = field(init=False)

    def __post_init__(self):
        self.batcher = DecisionBatcher(self.pipeline)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.pipeline.models)

    @classmethod
    def load(
        cls, name: str, path: Path, pool_models: Sequence[str], model_map: Mapping[str, str], pool_source: str
    ) -> RouterHandle:
        from caproute.routers.pipeline import RoutingPipeline

        pipeline = RoutingPipeline.load(path)
        mapping = {m: model_map.get(m, m) for m in pipeline.models}
        missing = sorted(m for m, p in mapping.items() if p not in pool_models)
        if missing:
            raise ConfigError(
                f"router '{name}' ({path}) was trained on models {list(pipeline.models)}, but the pool "
                f"({pool_source}) has no model named {[mapping[m] for m in missing]}. Add them to the pool, "
                f"or map each to a pool model with model_map (e.g. model_map: {{{missing[0]}: "
                f"{sorted(pool_models)[0]}}}). Pool models: {sorted(pool_models)}"
            )
        pool_targets = list(mapping.values())
        dup = sorted({p for p in pool_targets if pool_targets.count(p) > 1})
        if dup:
            raise ConfigError(f"router '{name}': model_map sends several router models to {dup}")
        return cls(name, Path(path), pipeline, mapping, directory_fingerprint(path))

    def attach_policy(self, policy: Policy) -> None:
        check_policy(policy, self)
        self.policy = policy
        d = policy.drift
        self.drift = DriftMonitor(
            self.models,
            policy.expected["model_share"],
            policy.target.kind,
            policy.target_value(),
            policy.target.model,
            window=int(d["window"]),
            share_tolerance=d["share_tolerance"],
            target_tolerance=d["target_tolerance"],
        )


def check_policy(policy: Policy, handle: RouterHandle) -> None:
    """A policy belongs to exactly one router directory (same files, same models)."""
    if policy.router_fingerprint != handle.fingerprint:
        raise ConfigError(
            f"{policy.path}: calibrated for a different router directory than '{handle.name}' "
            f"({handle.path}): fingerprints differ. Re-run `caproute calibrate --router "
            f"{handle.path}`"
        )
    if tuple(policy.models) != handle.models:
        raise ConfigError(
            f"{policy.path}: models {list(policy.models)} differ from router '{handle.name}' "
            f"{list(handle.models)}"
        )
