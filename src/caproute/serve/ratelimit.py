"""Per-client rate limits (token buckets), e.g. on ``/v1/feedback``: one client cannot flood the store.

Each client (API key; one shared client without keys) has a bucket of ``burst`` tokens refilled at
``rate_per_s``; a request takes one token or is refused with 429 ``rate_limited`` and a
``Retry-After`` header. The buckets are per process (with ``--workers N`` a client gets up to N
times the rate) and bounded: at most ``max_clients`` are kept, the least recently used go first
(a forgotten client starts with a full bucket, which is the state its bucket would refill to).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from caproute.serve.errors import ApiError


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, *, max_clients: int = 100_000, clock=time.monotonic):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_clients, self.clock = rate_per_s, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, time)
        self.refused = 0

    def wait_s(self, client: str) -> float:
        """Take a token for ``client``: 0.0 when allowed, else the seconds until one is free."""
        now = self.clock()
        tokens, t = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - t) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if allowed:
            return 0.0
        self.refused += 1
        return (1.0 - tokens) / self.rate

    def check(self, client: str | None, what: str) -> None:
        """Raise a 429 ``rate_limited`` :class:`ApiError` when ``client`` is over its rate."""
        wait = self.wait_s(client or "")
        if wait > 0:
            raise ApiError(
                429,
                f"too many {what} requests from this API key: at most {self.rate:g}/s "
                f"(bursts of {self.burst}); retry in {wait:.2g} s",
                type="rate_limit_error",
                code="rate_limited",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
