"""The default state: SQLite files on this host (the feedback store, the request log and, with
``--workers N``, the sticky map beside the feedback store); the duel policy is checkpointed to
``--duel-state-out`` and catches up from the feedback store (:mod:`caproute.serve.duel_state`).
Behaviour and files are those of caproute before the state interface."""

from __future__ import annotations

import asyncio

from caproute.serve.conversation import SharedStickyMap, StickyMap, sticky_path
from caproute.serve.feedback import FeedbackStore
from caproute.serve.log_store import RequestLog
from caproute.serve.stores.base import ProxyState


class SqliteState(ProxyState):
    kind = "sqlite"

    def __init__(self, config):
        self.config = config
        self.shared = config.workers > 1
        # several workers share one sticky map (a file next to the feedback store); one keeps it in memory
        self.sticky = (SharedStickyMap(sticky_path(config.feedback_db), config.sticky_max_entries, config.sticky_ttl_s)
                       if config.workers > 1 else StickyMap(config.sticky_max_entries, config.sticky_ttl_s))
        self.store = FeedbackStore(config.feedback_db, max_pending=config.max_pending_registrations)
        self.request_log = RequestLog(config.log_store) if config.log_store is not None else None

    @staticmethod
    def check(config) -> None:
        FeedbackStore.check_path(config.feedback_db)
        if config.log_store is not None:
            RequestLog.check_path(config.log_store)

    async def start(self, metrics) -> None:
        await asyncio.to_thread(self.store.start)
        if self.request_log is not None:
            await asyncio.to_thread(self.request_log.start)

    async def attach_duel(self, duel) -> None:
        from caproute.serve.duel_state import attach

        await attach(duel, self.store)  # re-applies feedback acknowledged after the checkpoint

    async def learn(self, duel, stored) -> bool:
        from caproute.serve.duel_state import catch_up

        # applies this feedback (and any before it, in log order) and saves one atomic checkpoint; a
        # duel's result is learned once (a replay, or a later verdict on the same duel, applies nothing)
        return await catch_up(duel, self.store) > 0

    async def stop(self, duel=None) -> None:
        if duel is not None and duel.updates:
            await asyncio.to_thread(duel.policy.save, duel.state_out)
        await asyncio.to_thread(self.store.close)
        if self.request_log is not None:
            await asyncio.to_thread(self.request_log.close)
