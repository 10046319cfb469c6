"""Append-only history of duels (x_t, a_t^1, a_t^2, y_t), stored in growable numpy arrays."""

from __future__ import annotations

import numpy as np


class DuelHistory:
    """Rows: context x (d,), first arm, second arm, feedback y in {+1, -1}, and the duel feature
    z = phi(x, a_first) - phi(x, a_second) (d,) kept for fast minibatch gradients (recomputed, not
    saved). Not thread-safe by itself (policies hold their lock around it)."""

    def __init__(self, dim: int, capacity: int = 256):
        self.dim = int(dim)
        self.n = 0
        self._x = np.zeros((capacity, self.dim))
        self._z = np.zeros((capacity, self.dim))
        self._first = np.zeros(capacity, dtype=np.int64)
        self._second = np.zeros(capacity, dtype=np.int64)
        self._y = np.zeros(capacity)

    def append(self, x: np.ndarray, first: int, second: int, y: float, z: np.ndarray | None = None) -> None:
        if self.n == len(self._y):
            cap = max(2 * self.n, 16)
            self._x = np.resize(self._x, (cap, self.dim))
            self._z = np.resize(self._z, (cap, self.dim))
            self._first = np.resize(self._first, cap)
            self._second = np.resize(self._second, cap)
            self._y = np.resize(self._y, cap)
        self._x[self.n] = x
        self._first[self.n] = first
        self._second[self.n] = second
        self._y[self.n] = y
        self._z[self.n] = 0.0 if z is None else z
        self.n += 1

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.n]

    @property
    def z(self) -> np.ndarray:
        return self._z[: self.n]

    @property
    def first(self) -> np.ndarray:
        return self._first[: self.n]

    @property
    def second(self) -> np.ndarray:
        return self._second[: self.n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.n]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"history_x": self.x.copy(), "history_first": self.first.copy(),
                "history_second": self.second.copy(), "history_y": self.y.copy()}

    @classmethod
    def from_arrays(cls, dim: int, arrays: dict[str, np.ndarray]) -> DuelHistory:
        h = cls(dim, capacity=max(16, len(arrays["history_y"])))
        n = len(arrays["history_y"])
        h._x[:n] = arrays["history_x"].reshape(n, dim)
        h._first[:n] = arrays["history_first"]
        h._second[:n] = arrays["history_second"]
        h._y[:n] = arrays["history_y"]
        h.n = n
        return h

    def set_z(self, z: np.ndarray) -> None:
        """Replace the stored duel features (n, d), e.g. after loading."""
        self._z[: self.n] = z
