"""The online dueling mode (``caproute/duel``): two answers from the pair the bandit policy selects,
and learning from pairwise feedback on their response ids (checkpoints in
:mod:`caproute.serve.duel_state`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

from fastapi.responses import Response

from caproute.serve.conversation import routing_text
from caproute.serve.errors import ApiError
from caproute.serve.log_store import log_answer
from caproute.serve.naming import DUEL, router_model_id
from caproute.serve.routed_chat import answer_spend, first_answer, json_response
from caproute.serve.schemas import ChatCompletionRequest

if TYPE_CHECKING:
    from caproute.serve.state import ServeState

MAX_EMBEDDINGS = 10_000  # duel id -> query embedding, oldest dropped first


async def chat_duel(state: ServeState, raw: dict, body: ChatCompletionRequest) -> Response:
    """Two answers from the pair the online policy selects; pairwise feedback on their ids updates it."""
    if body.stream:
        raise ApiError(
            400,
            "the duel mode returns two complete answers and does not stream",
            param="stream",
            code="duel_no_stream",
        )
    duel, cfg = state.duel, state.config
    text = routing_text(raw["messages"], cfg.conversation, cfg.max_routing_chars)
    x = await asyncio.to_thread(duel.policy.embed, text)
    i, j = duel.policy.select(x)
    arms = list(duel.policy.models_)
    did = f"duel-{uuid.uuid4().hex}"

    async def answer(first: int, avoid: set[str]):
        """Arm ``first``; if it fails, the next policy models in order (each arm falls back alone)."""
        ranked = [k for k in [first, *[a for a in range(len(arms)) if a != first]][: cfg.max_attempts]
                  if k == first or duel.pool_names[arms[k]] not in avoid]
        order = [duel.pool_names[arms[k]] for k in ranked]
        tried: list[dict] = []
        name, (data, _) = await first_answer(
            state, order, lambda n: state.backends.complete(n, raw), tried
        )
        return ranked[order.index(name)], name, data, tried

    (ka, na, da, ta), (kb, nb, db, tb) = await asyncio.gather(
        answer(i, set()), answer(j, {duel.pool_names[arms[i]]} if i != j else set())
    )
    duel.embeddings[did] = x
    while len(duel.embeddings) > MAX_EMBEDDINGS:
        duel.embeddings.pop(next(iter(duel.embeddings)))
    ids = [f"{did}-a", f"{did}-b"]
    choices = []
    for arm_pos, (k, name, data, rid) in enumerate(((ka, na, da, ids[0]), (kb, nb, db, ids[1]))):
        c = dict(data["choices"][0])
        c["index"] = arm_pos
        choices.append(c)
        spend, _ = answer_spend(state, name, raw, data.get("usage") or {}, None)
        state.store.register(
            {
                "response_id": rid,
                "kind": "duel",
                "model": name,
                "duel_id": did,
                "duel_arm": k,
                "routing_text": text,
                "decision": {"arm": arms[k], "selected": [arms[i], arms[j]], "spend_usd": spend},
            }
        )
        log_answer(state, response_id=rid, kind="duel", router=None, model=name, raw=raw, data=data, spend=spend)
    out = {
        "id": did,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": router_model_id(DUEL),
        "choices": choices,
        "usage": {
            k: (da.get("usage") or {}).get(k, 0) + (db.get("usage") or {}).get(k, 0)
            for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        },
        "caproute": {
            "duel": {
                "duel_id": did,
                "models": [na, nb],
                "response_ids": ids,
                "selected": [duel.pool_names[arms[i]], duel.pool_names[arms[j]]],
                "attempts": ta + tb,
                "policy": duel.policy.name,
                "policy_step": duel.policy.t_,
            },
            "feedback": "POST /v1/feedback {winner_id, loser_id} with the two response_ids",
        },
    }
    headers = {
        "x-caproute-model": f"{na},{nb}",
        "x-caproute-response-id": ",".join(ids),
        "x-caproute-duel-id": did,
    }
    return json_response(out, headers=headers)


async def duel_update(state: ServeState, stored) -> bool:
    """Learn from pairwise feedback on the two answers of one duel (ties are stored, not learned)."""
    duel = state.duel
    rows = stored.responses
    if duel is None or len(rows) != 2 or stored.feedback.tie:
        return False
    a, b = rows
    if a["kind"] != "duel" or b["kind"] != "duel" or a["duel_id"] != b["duel_id"] or a["duel_id"] is None:
        return False
    # the state applies it (SQLite: catch up with the feedback log and checkpoint; PostgreSQL: the
    # duel's increment); a duel's result is learned once (a replay or a later verdict applies nothing)
    return await state.state_store.learn(duel, stored)
