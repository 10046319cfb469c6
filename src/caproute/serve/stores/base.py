"""The one state interface behind the proxy: what a running server keeps beyond one request.

A :class:`ProxyState` holds

- ``store``: registrations (every answered response id) and feedback, durable before a 200
  (:class:`~caproute.serve.feedback.FeedbackStore` or its PostgreSQL subclass);
- ``request_log``: the opt-in log of prompts and answers (None when off);
- ``sticky``: conversation id -> model (``get``/``set``);
- the dueling policy's learning: :meth:`attach_duel` on start (rebuild from the checkpoint and the
  feedback or increments after it), :meth:`learn` after pairwise feedback (True when it moved the
  policy);
- spend and token counters (the Prometheus counters of this process; PostgreSQL adds them up
  over replicas).

Two implementations: :class:`~caproute.serve.stores.sqlite.SqliteState` (files on this host, the
default) and :class:`~caproute.serve.stores.postgres.PostgresState` (``--state postgresql://...``,
shared by replicas). Rate limits and drift windows stay per process in both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar


class ProxyState(ABC):
    kind: ClassVar[str]
    #: other processes write the same store (feedback may name an id another process registered)
    shared: bool = False
    store: Any
    request_log: Any
    sticky: Any

    @staticmethod
    @abstractmethod
    def check(config) -> None:
        """Raise :class:`~caproute.errors.ConfigError` unless the state can be opened (before the banner)."""

    @abstractmethod
    async def start(self, metrics) -> None:
        """Open the stores (``metrics``: the app's :class:`~caproute.serve.metrics.ServeMetrics`)."""

    @abstractmethod
    async def attach_duel(self, duel) -> None:
        """Bring the duel policy up to date with the feedback learned before this start."""

    @abstractmethod
    async def learn(self, duel, stored) -> bool:
        """Apply stored pairwise feedback to the duel policy; True when it moved the policy."""

    @abstractmethod
    async def stop(self, duel=None) -> None:
        """Flush and close (and save the duel policy where this state keeps it)."""
