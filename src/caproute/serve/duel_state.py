"""The online duel policy's checkpoints: every acknowledged pairwise feedback reaches the policy.

The feedback store (SQLite, fsync'd before ``/v1/feedback`` answers 200) is the log; the saved
policy is a checkpoint of that log. The policy's ``checkpoint_`` records which store it follows
(``feedback_store_id``, a random id kept in the store's ``meta`` table) and the sequence number
(SQLite ``rowid``) of the last feedback applied. :func:`catch_up` applies, in log order, every
duel feedback after that number and then saves the policy atomically, so

- a server killed (even ``kill -9``) after acknowledging feedback but before saving the policy
  re-applies that feedback when it restarts: nothing acknowledged is lost;
- nothing is applied twice: the sequence number is saved in the same atomic checkpoint as the
  policy state;
- a duel's result is learned once: only the first decisive (not tie) comparison of a duel's two
  answers moves the policy. A replay of it (the store keeps one comparison per pair and key, in
  place), another key's verdict on the same duel, or a changed mind is stored but never learned,
  so replays cannot move the policy.

A policy that follows no store yet (fresh from ``caproute duel init``) or another store starts at
the store's current end: feedback given to another policy is not replayed into this one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

log = logging.getLogger("caproute.serve")

PENDING_SQL = """
SELECT f.rowid AS seq, f.feedback_id, a.duel_id AS duel_id, a.duel_arm AS winner_arm,
       b.duel_arm AS loser_arm, a.routing_text AS routing_text
FROM feedback f
JOIN responses a ON a.response_id = f.response_id
JOIN responses b ON b.response_id = f.other_response_id
WHERE f.kind = 'pairwise' AND f.tie = 0 AND a.kind = 'duel' AND b.kind = 'duel'
  AND a.duel_id IS NOT NULL AND a.duel_id = b.duel_id AND f.rowid > ?
  AND NOT EXISTS (
    SELECT 1 FROM feedback g
    JOIN responses c ON c.response_id = g.response_id
    JOIN responses d ON d.response_id = g.other_response_id
    WHERE g.kind = 'pairwise' AND g.tie = 0 AND c.duel_id = a.duel_id AND d.duel_id = a.duel_id
      AND g.rowid < f.rowid)
ORDER BY f.rowid
"""


async def _query(store, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    return await asyncio.wrap_future(store.query(sql, params))


async def store_identity(store) -> tuple[str, int]:
    """(store id, last feedback sequence number) of a started FeedbackStore; creates the id once."""
    await _query(store, "INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))
    sid = (await _query(store, "SELECT value FROM meta WHERE key = 'store_id'"))[0]["value"]
    last = (await _query(store, "SELECT coalesce(max(rowid), 0) AS n FROM feedback"))[0]["n"]
    return str(sid), int(last)


async def attach(duel, store) -> int:
    """Tie the duel policy to ``store`` and re-apply feedback it missed; returns how many."""
    sid, last = await store_identity(store)
    cp = duel.policy.checkpoint_
    if cp.get("feedback_store_id") != sid:
        if cp.get("feedback_store_id") is not None:
            log.warning(
                "duel policy checkpoint follows feedback store %s, not this one (%s): starting at its end",
                cp.get("feedback_store_id"),
                sid,
            )
        duel.policy.checkpoint_ = {"feedback_store_id": sid, "feedback_seq": last}
        return 0
    n = await catch_up(duel, store)
    if n:
        log.info("duel policy: re-applied %d feedback(s) acknowledged after its last checkpoint", n)
    return n


async def catch_up(duel, store) -> int:
    """Apply every pending duel feedback in log order, then save one checkpoint. Returns the count."""
    async with duel.save_lock:
        seq = int(duel.policy.checkpoint_.get("feedback_seq", 0))
        rows = await _query(store, PENDING_SQL, (seq,))
        if not rows:
            return 0
        for r in rows:
            x = duel.embeddings.get(r["duel_id"])
            if x is None:  # after a restart: embed the stored routing text again
                x = await asyncio.to_thread(duel.policy.embed, r["routing_text"] or "")
            # update(x, i, j, y): y = +1 when arm i's answer was preferred
            await asyncio.to_thread(duel.policy.update, x, int(r["winner_arm"]), int(r["loser_arm"]), 1)
            duel.updates += 1
        duel.policy.checkpoint_ = {**duel.policy.checkpoint_, "feedback_seq": int(rows[-1]["seq"])}
        await asyncio.to_thread(duel.policy.save, duel.state_out)
        return len(rows)
