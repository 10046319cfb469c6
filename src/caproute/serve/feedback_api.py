"""``POST /v1/feedback`` behind the route: a scalar or pairwise rating stored durably (one per
response and API key, rate-limited per key), and the duel policy's update from pairwise feedback."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from caproute.serve.duel_chat import duel_update
from caproute.serve.errors import ApiError
from caproute.serve.feedback import Feedback, InvalidFeedback, UnknownResponse
from caproute.serve.schemas import FeedbackRequest

if TYPE_CHECKING:
    from caproute.serve.state import ServeState

log = logging.getLogger("caproute.serve")


async def receive_feedback(state: ServeState, body: FeedbackRequest, client: str | None) -> dict:
    """Store the feedback of API key ``client`` and answer the route's body; 404 for an unknown
    response id, 400 for invalid pairs, 429 over the key's rate, 503 when the store fails."""
    state.feedback_limiter.check(client, "feedback")
    if body.score is not None:
        from caproute.data.ratings import rating_to_unit

        fb = Feedback("scalar", body.response_id, score=rating_to_unit(body.score, body.scale), comment=body.comment,
                      key_id=client, raw_score=body.score, scale=body.scale or "unit")
    else:
        fb = Feedback("pairwise", body.winner_id, body.loser_id, tie=body.tie, comment=body.comment, key_id=client)
    try:
        stored = await add_feedback(state, fb)
    except UnknownResponse as e:
        param = {
            "response_id": "response_id" if fb.kind == "scalar" else "winner_id",
            "other_response_id": "loser_id",
        }[e.field]
        raise ApiError(
            404, f"{param}: unknown response id '{e.response_id}'", param=param, code="response_not_found"
        ) from None
    except InvalidFeedback as e:
        raise ApiError(400, str(e), param="loser_id", code="invalid_feedback") from None
    except Exception as e:
        log.error("feedback store failed: %s", e)
        raise ApiError(503, "feedback could not be stored; retry", code="feedback_store_unavailable") from None
    state.metrics.feedback.labels(fb.kind).inc()
    updated = await duel_update(state, stored) if fb.kind == "pairwise" else False
    return {
        "object": "caproute.feedback",
        "id": stored.feedback_id,
        "kind": fb.kind,
        "stored": True,
        "replaced": stored.replaced,
        "policy_updated": updated,
    }


async def add_feedback(state: ServeState, fb: Feedback):
    """Store feedback. With several workers or replicas, the response may have been answered by another
    process whose registration is still queued there: an unknown id is looked up again for up
    to 2 s (PROPOSED) before it is a 404."""
    end = time.monotonic() + (2.0 if state.state_store.shared else 0.0)  # workers or replicas
    while True:
        try:
            return await asyncio.wrap_future(state.store.add(fb))
        except UnknownResponse:
            if time.monotonic() >= end:
                raise
            await asyncio.sleep(0.05)
