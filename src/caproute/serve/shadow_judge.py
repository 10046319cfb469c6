"""Shadow judging (``caproute serve --judge MODEL --judge-sample F [--judge-budget-usd X]``).

A share F of routed answers is graded after the client has its answer by a judge model of the pool
(:class:`caproute.collect.judge.Judge`, the collector's pointwise judge: rubric, random answer tags,
strict verdict parsing, the 1-10 grade mapped to [0, 1]). The grade is stored in the feedback store
as scalar feedback of source ``judge`` (key ``judge:<model>``, so one grade per answer and judge;
``raw_score``/``scale`` keep the judge's own scale), beside user ratings (source ``user``), and
``caproute feedback export`` carries the source into the observations and the replay log.

Never in the client's way: the sampling draw and the scheduling run after the answer was sent (a
stream: after its last chunk); judgements run as background tasks on the server's loop, at most
``max_in_flight`` at a time, at most ``max_queued`` waiting (more are dropped and counted). The
budget: no judgement starts once the judge's spend reaches ``budget_usd`` (per process; the ones
already running finish, so the overshoot is at most ``max_in_flight`` judge calls). An unparseable
verdict stores nothing (as in collection); a judge that cannot be reached is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from caproute.errors import ConfigError

log = logging.getLogger("caproute.serve")


@dataclass
class ShadowStats:
    offered: int = 0
    sampled: int = 0
    judged: int = 0  # a grade was stored
    unparseable: int = 0
    failed: int = 0
    over_budget: int = 0
    dropped: int = 0  # sampled while max_queued judgements were waiting


class ShadowJudge:
    def __init__(self, endpoint, sample: float, *, budget_usd: float | None = None, seed: int | None = None,
                 max_in_flight: int = 2, max_queued: int = 1000, judge_factory=None):
        self.endpoint, self.sample, self.budget_usd = endpoint, float(sample), budget_usd
        self.rng = random.Random(seed)
        self.max_in_flight, self.max_queued = max_in_flight, max_queued
        self.judge_factory = judge_factory  # tests: a callable returning a Judge-like object
        self.stats = ShadowStats()
        self.store = None
        self._judge = None
        self._tasks: set[asyncio.Task] = set()
        self._slots: asyncio.Semaphore | None = None

    @classmethod
    def from_config(cls, config, pool) -> ShadowJudge:
        names = [m.name for m in pool.models]
        if config.judge not in names:
            raise ConfigError(f"--judge '{config.judge}' is not a model of the pool {config.pool} (models: {names})")
        return cls(pool.model(config.judge), config.judge_sample, budget_usd=config.judge_budget_usd,
                   seed=config.explore_seed)

    @property
    def key_id(self) -> str:
        return f"judge:{self.endpoint.name}"

    @property
    def spent_usd(self) -> float:
        return 0.0 if self._judge is None else float(self._judge.stats.spend_usd)

    def start(self, store) -> None:
        self.store = store

    def offer(self, response_id: str, model: str, raw: dict, answer: dict) -> None:
        """A routed answer was sent: judge it with probability ``sample`` (returns at once)."""
        self.stats.offered += 1
        if self.store is None or self.rng.random() >= self.sample:
            return
        self.stats.sampled += 1
        if self.budget_usd is not None and self.spent_usd >= self.budget_usd:
            self.stats.over_budget += 1
            return
        if len(self._tasks) >= self.max_queued:
            self.stats.dropped += 1
            return
        text = answer.get("text")
        if text is None and isinstance(answer.get("data"), dict):
            from caproute.serve.log_store import answer_text

            text = answer_text(answer["data"])[0]
        if not isinstance(text, str) or not text.strip():
            return  # nothing to grade
        try:
            task = asyncio.get_running_loop().create_task(self._grade(response_id, list(raw.get("messages") or []),
                                                                      text))
        except RuntimeError:  # no running loop (a caller outside the server): nothing to schedule on
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _grade(self, response_id: str, messages: list, text: str) -> None:
        from caproute.collect.judge import JudgeUnavailable
        from caproute.collect.queries import chat_query
        from caproute.serve.feedback import Feedback

        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        async with self._slots:
            if self.budget_usd is not None and self.spent_usd >= self.budget_usd:
                self.stats.over_budget += 1
                return
            try:
                q = chat_query(messages)
                judge = self._get_judge()
                j = await judge.grade(q["question"], text, q["context"])
            except JudgeUnavailable as e:
                self.stats.failed += 1
                log.warning("shadow judge: %s", e)
                return
            except Exception:
                self.stats.failed += 1
                log.exception("shadow judge: grading %s failed", response_id)
                return
            if j.score is None:
                self.stats.unparseable += 1
                return
            scale = getattr(judge, "scale", 10)
            fb = Feedback("scalar", response_id, score=float(j.score), key_id=self.key_id, source="judge",
                          raw_score=1 + float(j.score) * (scale - 1), scale=f"1-{scale}",
                          comment=f"shadow judge {j.judge_model}")
            try:
                await asyncio.wrap_future(self.store.add(fb))
                self.stats.judged += 1
            except Exception as e:
                self.stats.failed += 1
                log.warning("shadow judge: could not store the grade of %s: %s", response_id, e)

    def _get_judge(self):
        if self._judge is None:
            if self.judge_factory is not None:
                self._judge = self.judge_factory(self.endpoint)
            else:
                from caproute.collect.judge import Judge

                self._judge = Judge(self.endpoint)  # built on the running loop (its HTTP client)
        return self._judge

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for the judgements scheduled so far (tests; shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def stop(self, timeout_s: float = 10.0) -> None:
        await self.drain(timeout_s)
        for t in list(self._tasks):
            t.cancel()
        if self._judge is not None and hasattr(self._judge, "aclose"):
            await self._judge.aclose()
        if self.stats.sampled:
            log.info("shadow judge %s: %s, spent $%.6f", self.endpoint.name, self.stats, self.spent_usd)
