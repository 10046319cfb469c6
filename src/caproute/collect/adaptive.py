"""Live adaptive collection (``caproute collect --adaptive``).

The training split is collected query by query instead of as a full K x R grid per model: each
step asks the allocation rule (:func:`caproute.supervise.adaptive.decide`) which model to sample
next for the query, puts that sample on the model's least-covered rewrite
(:func:`~caproute.supervise.adaptive.next_rewrite`) at its next decode index, and stops the query
when its label is settled or its grid is full. The test split is always collected in full (the
evaluation views need every model).

Resumable after kill -9 like the grid collection: a query's state is rebuilt from the observations
already in the store, every decision is a deterministic function of that state (the Monte Carlo
draws are seeded by the query and its sample count), and a sample always goes to a key that is
not yet stored, so a rerun continues where the killed run stopped, without duplicates.

The cost term of U needs normalised costs; during collection the min-max range is the range of
raw costs seen so far in this dataset (linear, so a mean of normalised costs is the normalised
mean). This is our choice: the final supervision renormalises on the finished training rows.

Empirical-Bayes prior (``AdaptiveConfig.prior_fit == "eb"``): fitted from the training
observations of *every* query recorded so far (the store's, after a resume, plus this run's), so a
decision is a deterministic function of what is stored (the fit depends only on the multiset of
per-pair counts). Each model's Beta is fitted on its own, and refitted only when what its fit
reads has changed since its last fit: the cache key is the multiset of that model's (successes,
observations) over the queries it has observations of, plus the base ``prior``. The same key gives
the same prior, so the decisions are those of a refit at every step, and a step that recorded one
observation refits one model instead of all of them. With ``concurrency`` > 1 the interleaving of
queries, and so what another query has recorded when a decision is taken, depends on timing, as
the running cost range already does. Bernoulli update (``beta_update == "bernoulli"``): each
observation's Bernoulli draw is a hash of the seed, dataset and its key (query, model, rewrite,
decode), so a resumed run draws the same r for every stored observation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from caproute.collect.queries import stable_int
from caproute.supervise.adaptive import AdaptiveConfig, bernoulli_scores, decide, fit_prior, next_rewrite


@dataclass
class PairSums:
    """Running sums of one query's training observations, per model and rewrite slot."""

    n: np.ndarray
    s: np.ndarray
    ss: np.ndarray
    raw_cost: np.ndarray
    slots: np.ndarray          # (M, K) decode indices used per rewrite (stored or attempted)
    sb: np.ndarray             # successes the Beta update counts (Bernoulli draws or the scores)

    @classmethod
    def empty(cls, m: int, k: int) -> PairSums:
        z = np.zeros(m)
        return cls(z.copy(), z.copy(), z.copy(), z.copy(), np.zeros((m, k), np.int64), z.copy())

    def add(self, model: int, score: float, cost: float, success: float | None = None) -> None:
        self.n[model] += 1
        self.s[model] += score
        self.ss[model] += score * score
        self.raw_cost[model] += cost
        self.sb[model] += score if success is None else success


@dataclass
class AdaptiveProgress:
    """What the adaptive part of a collection did (for the run summary and report)."""

    full_grid: int
    generations: int = 0
    settled: int = 0
    exhausted: int = 0
    stopped_budget: int = 0
    per_query: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        saved = self.full_grid - sum(self.per_query.values())
        return {"full_grid_generations": self.full_grid, "generations": int(sum(self.per_query.values())),
                "generations_this_run": self.generations, "saved_generations": int(saved),
                "saved_fraction": saved / self.full_grid if self.full_grid else 0.0,
                "queries_settled": self.settled, "queries_grid_full": self.exhausted,
                "queries_stopped_by_budget": self.stopped_budget}


class AdaptivePlanner:
    """Decides the next training sample of each query during a live collection."""

    def __init__(self, models: tuple[str, ...], rewrites: int, decodes: int, config: AdaptiveConfig,
                 prices: np.ndarray, *, seed: int, dataset: str, budget_generations: int | None = None):
        self.models, self.k, self.r = tuple(models), max(rewrites, 1), decodes
        self.config, self.prices = config, np.asarray(prices, float)
        self.seed, self.dataset = seed, dataset
        self.budget = budget_generations
        self.state: dict[str, PairSums] = {}
        self.lo, self.hi = np.inf, -np.inf
        self.spent = 0
        self._fits: dict[int, tuple[tuple, np.ndarray]] = {}   # model -> (key of its fit's inputs, its Beta)

    def load(self, train_obs: pd.DataFrame) -> None:
        """Rebuild state from stored training observations (resume)."""
        midx = {m: i for i, m in enumerate(self.models)}
        for row in train_obs.itertuples(index=False):
            mi = midx.get(str(row.model))
            if mi is None:
                continue
            st = self.state.setdefault(str(row.query_id), PairSums.empty(len(self.models), self.k))
            v = max(int(row.prompt_variant_id), 0)
            st.add(mi, float(row.score), float(row.cost),
                   self._success(str(row.query_id), mi, v, int(row.decode_id), float(row.score)))
            if v < self.k:
                st.slots[mi, v] = max(st.slots[mi, v], int(row.decode_id) + 1)
            self._see_cost(float(row.cost))
            self.spent += 1

    def _success(self, query_id: str, model: int, rewrite: int, decode: int, score: float) -> float:
        """What the Beta update counts for one observation: the score, or with the Bernoulli update
        a draw r ~ Bernoulli(score) seeded by the observation's key (the same after a resume)."""
        if self.config.beta_update != "bernoulli":
            return score
        u = stable_int("adaptive-bernoulli", self.seed, self.dataset, query_id, self.models[model], rewrite,
                       decode, bits=53) / float(1 << 53)
        return float(bernoulli_scores(np.array([score]), np.array([u]))[0])

    def prior(self) -> np.ndarray | None:
        """The (M, 2) Beta prior of ``pob`` from every query recorded so far (None: the rule has none)."""
        if self.config.rule != "pob":
            return None
        if self.config.prior_fit != "eb" or not self.state:
            return fit_prior(np.zeros((1, len(self.models))), np.zeros((1, len(self.models))), self.config)
        n = np.stack([st.n for st in self.state.values()])
        sb = np.stack([st.sb for st in self.state.values()])
        out = np.empty((len(self.models), 2))
        for j in range(len(self.models)):
            key = (self.config.prior_fit, self.config.prior, *_fit_inputs(n[:, j], sb[:, j]))
            cached = self._fits.get(j)
            if cached is None or cached[0] != key:
                # the fit of column j reads only that column and the base prior (fit_beta_prior)
                cached = self._fits[j] = (key, fit_prior(n[:, [j]], sb[:, [j]], self.config)[0])
            out[j] = cached[1]
        return out

    def _see_cost(self, cost: float) -> None:
        self.lo, self.hi = min(self.lo, cost), max(self.hi, cost)

    def _norm_cost_sums(self, st: PairSums) -> np.ndarray:
        if not np.isfinite(self.lo) or self.hi <= self.lo:
            return np.zeros_like(st.raw_cost)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(st.n > 0, st.raw_cost / np.maximum(st.n, 1), self.lo)
        return st.n * (mean - self.lo) / (self.hi - self.lo)

    def next(self, query_id: str) -> tuple[int, int, int] | None:
        """(model index, rewrite slot, decode index) of the next sample, or None when done."""
        st = self.state.setdefault(query_id, PairSums.empty(len(self.models), self.k))
        capacity = (self.r * self.k - st.slots.sum(axis=1)).astype(float)
        rng = np.random.default_rng(stable_int("adaptive", self.seed, self.dataset, query_id,
                                               int(st.slots.sum()), bits=31))
        d = decide(st.n[None], st.s[None], st.ss[None], self._norm_cost_sums(st)[None], self.prices,
                   self.config, rng, capacity=capacity[None], prior=self.prior(), s_beta=st.sb[None])
        m = int(d.model[0])
        if m < 0:
            return None
        open_slots = np.where(st.slots[m] < self.r, st.slots[m], np.iinfo(np.int64).max)
        k = next_rewrite(open_slots)
        return m, k, int(st.slots[m, k])

    def record(self, query_id: str, model: int, rewrite: int, results: list[tuple[float, float]]) -> None:
        """A sample was attempted at ``rewrite``'s next decode; ``results`` its (score, cost) if stored."""
        st = self.state[query_id]
        decode = int(st.slots[model, rewrite])
        st.slots[model, rewrite] += 1
        for score, cost in results:
            st.add(model, score, cost, self._success(query_id, model, rewrite, decode, score))
            self._see_cost(cost)

    def settled(self, query_id: str) -> bool:
        st = self.state.get(query_id)
        if st is None:
            return False
        return bool((st.slots.sum(axis=1) < self.r * self.k).any())


def _fit_inputs(n: np.ndarray, s: np.ndarray) -> tuple[bytes, bytes]:
    """Everything the empirical-Bayes fit of one model reads from its (Q,) observations ``n`` and
    successes ``s``: the multiset of (s, n) over the queries with n > 0 (rows in sorted order with
    their multiplicities, as bytes), independent of the order of the queries."""
    seen = n > 0
    rows, counts = np.unique(np.stack([s[seen], n[seen]], axis=1), axis=0, return_counts=True)
    return rows.tobytes(), counts.tobytes()


SampleFn = Callable[[str, str, int, int], Awaitable[list[tuple[float, float]] | None]]


async def run_adaptive(planner: AdaptivePlanner, query_ids: list[str], sample: SampleFn, *,
                       concurrency: int, stop: asyncio.Event, progress: AdaptiveProgress) -> None:
    """Collect the training split adaptively: ``concurrency`` queries in flight, one sample at a
    time per query. ``sample(query_id, model, rewrite, decode)`` generates, scores and stores one
    observation and returns its (score, cost) (empty when it was not stored, None to stop)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for q in query_ids:
        queue.put_nowait(q)

    async def worker() -> None:
        while not stop.is_set():
            try:
                qid = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            while not stop.is_set():
                if planner.budget is not None and planner.spent >= planner.budget:
                    # the training budget is spent: this query and the rest stop here (the test
                    # split, collected by the grid workers, goes on)
                    progress.stopped_budget += 1 + queue.qsize()
                    while not queue.empty():
                        queue.get_nowait()
                    break
                step = planner.next(qid)
                if step is None:
                    if planner.settled(qid):
                        progress.settled += 1
                    else:
                        progress.exhausted += 1
                    break
                m, k, r = step
                planner.spent += 1
                res = await sample(qid, planner.models[m], k, r)
                if res is None:
                    return
                planner.record(qid, m, k, res)
                progress.generations += len(res)
            st = planner.state.get(qid)
            progress.per_query[qid] = int(st.n.sum()) if st is not None else 0

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
