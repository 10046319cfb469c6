"""Live traffic against a calibrated policy: is the server still routing as calibrated?

Over a sliding window of the last ``window`` routed requests (per router) it tracks

- ``share_tv``: total-variation distance 0.5 * sum_m |p_live(m) - p_cal(m)| of the model shares;
- ``target``: deviation of the policy's target metric: for a cost target the live mean spend per
  request (USD, from the backends' usage) relative to the calibrated mean cost; for a share target
  the live share of the strong model minus the calibrated one (absolute); for a quality floor the
  live mean predicted mu_q relative to the calibrated one; for a latency budget the live mean
  predicted mu_latency of the chosen models relative to the calibrated one.

Drift is reported once the window is full; the server exports both as gauges and logs a warning
when either leaves its tolerance (and an info line when it comes back).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


def share_tv(live_counts: np.ndarray, expected: np.ndarray) -> float:
    """Total-variation distance between live shares (from counts) and expected shares."""
    live_counts = np.asarray(live_counts, float)
    total = live_counts.sum()
    if total <= 0:
        return 0.0
    return float(0.5 * np.abs(live_counts / total - np.asarray(expected, float)).sum())


@dataclass
class DriftState:
    share_tv: float
    target_deviation: float
    n: int
    drifting: bool
    changed: bool  # drifting flipped with this observation


class DriftMonitor:
    """Sliding-window drift of one router's live traffic from its policy (thread-safe)."""

    def __init__(
        self,
        models,
        expected_share: dict[str, float],
        target_kind: str,
        target_value: float,
        strong_model: str | None = None,
        window: int = 200,
        share_tolerance: float = 0.1,
        target_tolerance: float = 0.2,
    ):
        self.models = tuple(models)
        self.expected = np.array([float(expected_share.get(m, 0.0)) for m in self.models])
        self.kind, self.value = target_kind, float(target_value)
        self.strong = self.models.index(strong_model) if strong_model in self.models else None
        self.window, self.share_tol, self.target_tol = (
            int(window),
            float(share_tolerance),
            float(target_tolerance),
        )
        self._idx: deque[int] = deque()
        self._val: deque[float] = deque()
        self._counts = np.zeros(len(self.models))
        self._sum = 0.0
        self._drifting = False
        self._lock = threading.Lock()

    def record(self, model_index: int, spend_usd: float, predicted_quality: float,
               predicted_latency: float | None = None) -> DriftState:
        """Add one routed request; returns the window's drift after it."""
        v = {"cost": spend_usd, "latency": predicted_latency}.get(self.kind, predicted_quality)
        v = 0.0 if v is None else v
        with self._lock:
            self._idx.append(model_index)
            self._val.append(v)
            self._counts[model_index] += 1
            self._sum += v
            if len(self._idx) > self.window:
                self._counts[self._idx.popleft()] -= 1
                self._sum -= self._val.popleft()
            n = len(self._idx)
            tv = share_tv(self._counts, self.expected)
            dev = self._target_deviation(n)
            drifting = n >= self.window and (tv > self.share_tol or abs(dev) > self.target_tol)
            changed = drifting != self._drifting
            self._drifting = drifting
        return DriftState(tv, dev, n, drifting, changed)

    def _target_deviation(self, n: int) -> float:
        if n == 0:
            return 0.0
        if self.kind == "share":
            return float(self._counts[self.strong] / n - self.value) if self.strong is not None else 0.0
        live = self._sum / n
        if self.value == 0:
            return 0.0 if live == 0 else float("inf")
        return float((live - self.value) / self.value)
