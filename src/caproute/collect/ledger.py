"""What a run did and why it stopped: :class:`RunStats`, the stop rule and the exit rule, and the
budget ledger that admits requests against ``--budget-usd``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from caproute.collect.client import EndpointDown


class BudgetStop(Exception):
    """The budget does not admit the next request: the run stops."""


@dataclass
class RunStats:
    total: int = 0
    done: int = 0
    skipped_existing: int = 0
    errors: int = 0
    score_failures: int = 0  # context scorers: results not parsed (observation not stored, counted)
    spend_usd: float = 0.0  # actual cost of the answers received (usage x prices)
    reserved_usd: float = 0.0  # expected cost of the requests in flight (budget accounting)
    estimate_usd: float | None = None  # upper-bound estimate of the missing work (every answer at max_tokens)
    budget_usd: float | None = None
    rewrite_calls: int = 0
    rewrites_template: int = 0
    rewrites_model: int = 0
    stopped: str | None = None
    stop_kind: str | None = None  # budget (the user's own limit), interrupted, errors, endpoints, failed
    dead_endpoints: dict[str, str] = field(default_factory=dict)  # endpoint -> why its breaker opened
    started: float = field(default_factory=time.monotonic)
    per_model: dict[str, int] = field(default_factory=dict)
    error_messages: list[str] = field(default_factory=list)
    adaptive: dict | None = None  # collect --adaptive: generations used and saved vs the full grid

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "started"} | {"rate_per_s": self.rate}


def stop_run(stats: RunStats, kind: str, reason: str) -> None:
    """Record why a run stops (the first reason wins)."""
    if stats.stopped is None:
        stats.stopped, stats.stop_kind = reason, kind


def exit_reason(stats: RunStats) -> str | None:
    """None when a run did its job (the plan was completed, or it stopped at the user's own budget);
    otherwise the one-line reason for a non-zero exit."""
    if stats.stop_kind == "budget":
        return None
    if stats.stop_kind is not None:
        return f"stopped: {stats.stopped}"
    if stats.dead_endpoints:
        return "endpoint down: " + "; ".join(stats.dead_endpoints.values())
    if stats.errors:
        return (f"{stats.errors} request(s) failed ({stats.done} of {stats.total} generations stored); rerun "
                "the same command to retry them. First error: " + (stats.error_messages or ["?"])[0])
    return None


def endpoint_down(e: BaseException) -> EndpointDown | None:
    """The :class:`EndpointDown` behind ``e`` (itself or a cause, e.g. wrapped by the judge)."""
    while e is not None:
        if isinstance(e, EndpointDown):
            return e
        e = e.__cause__
    return None


class BudgetLedger:
    """Spend against ``--budget-usd`` (issue 16).

    A request starts when the actual spend, plus what the requests in flight are expected to cost,
    plus its own expected cost stays within the budget. "Expected" is the mean actual cost per
    generation seen so far for that endpoint; before its first answer it is the upper bound (prompt
    estimate + max_tokens). A request that does not fit waits for the ones in flight instead of
    stopping the run; the first request to an endpoint whose cost is still unknown is sent while the
    actual spend is under the budget (one probe, so that an upper bound larger than the budget does
    not stop the run before anything is known). The run stops when nothing is in flight and the next
    request's expected cost no longer fits: it ends close to the budget on actual spend, and passes it
    by at most what the requests in flight cost above their expectation.
    """

    def __init__(self, stats: RunStats, budget_usd: float | None, stop: asyncio.Event):
        self.stats, self.budget_usd, self.stop = stats, budget_usd, stop
        self.seen_cost: dict[str, list[float]] = {}  # endpoint -> [USD, generations]
        self.probing: set[str] = set()
        self.freed = asyncio.Condition()

    def charge(self, usd: float) -> None:
        """Add actual spend; reaching the budget stops the run."""
        stats, budget = self.stats, self.budget_usd
        stats.spend_usd += usd
        if budget is not None and stats.spend_usd >= budget and not self.stop.is_set():
            stop_run(stats, "budget", f"budget of ${budget} reached (spent ${stats.spend_usd:.6f})")
            self.stop.set()

    def expected_usd(self, endpoint: str, upper_per_gen: float, n: int) -> float:
        s = self.seen_cost.get(endpoint)
        return (s[0] / s[1] if s and s[1] else upper_per_gen) * n

    def observe_cost(self, endpoint: str, usd: float, n: int) -> None:
        s = self.seen_cost.setdefault(endpoint, [0.0, 0])
        s[0] += usd
        s[1] += n

    async def admit(self, endpoint: str, upper_per_gen: float, n: int) -> float:
        """Reserve the expected cost of ``n`` generations, waiting for requests in flight while it
        does not fit; raises :class:`BudgetStop` (budget reached) when it cannot fit."""
        stats, budget = self.stats, self.budget_usd
        async with self.freed:
            while True:
                exp = self.expected_usd(endpoint, upper_per_gen, n)
                if budget is None or stats.spend_usd + stats.reserved_usd + exp <= budget:
                    stats.reserved_usd += exp
                    return exp
                if (endpoint not in self.seen_cost and endpoint not in self.probing
                        and stats.spend_usd < budget and not self.stop.is_set()):
                    self.probing.add(endpoint)
                    stats.reserved_usd += exp
                    return exp
                if stats.reserved_usd <= 1e-15 or self.stop.is_set():
                    stop_run(stats, "budget",
                             f"budget of ${budget} reached (spent ${stats.spend_usd:.6f}; the next "
                             f"request would cost about ${exp:.6f})")
                    self.stop.set()
                    raise BudgetStop
                await self.freed.wait()

    async def release(self, reserved: float, endpoint: str) -> None:
        """Return a reservation once the request has ended (its actual cost is charged apart)."""
        async with self.freed:
            self.stats.reserved_usd = max(0.0, self.stats.reserved_usd - reserved)
            self.probing.discard(endpoint)
            self.freed.notify_all()
