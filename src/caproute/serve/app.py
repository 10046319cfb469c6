"""The OpenAI-compatible routing proxy: :func:`create_app` builds a FastAPI app from a
:class:`~caproute.serve.config.ServeConfig`.

``create_app`` loads and checks the routers, pool, policies and budgets (a bad config fails
before anything listens); the app's lifespan opens the backend client, the feedback store and
the online duel policy, and closes them after in-flight requests drained. Handlers only
translate HTTP to library calls: routing decisions come from the routers' pipelines, the math of
calibration and drift lives in :mod:`caproute.serve.calibrate` / :mod:`caproute.serve.drift`.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``POST /v1/route``,
``POST /v1/feedback``, ``GET /healthz``, ``GET /metrics``. Every routed answer carries the
``x-caproute-model`` header and a ``caproute`` object in the body (stream: in the first chunk).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from caproute.serve.backends import BackendFailure, BackendRejected, StreamStart, chunk_problem
from caproute.serve.config import ServeConfig
from caproute.serve.conversation import message_text, routing_text
from caproute.serve.errors import ApiError, error_body, validation_message
from caproute.serve.feedback import Feedback, InvalidFeedback, UnknownResponse
from caproute.serve.gateway import GatewayMiddleware
from caproute.serve.log_store import delta_text, log_answer
from caproute.serve.naming import DUEL, Target, router_model_id
from caproute.serve.routing import RouterHandle, fallback_order
from caproute.serve.schemas import (
    CaprouteOptions,
    ChatCompletionRequest,
    ErrorResponse,
    FeedbackRequest,
    RouteRequest,
)
from caproute.serve.state import Duel, Params, ServeState  # noqa: F401 (Duel: older imports)

log = logging.getLogger("caproute.serve")

CONVERSATION_HEADER = "x-caproute-conversation-id"
CHARS_PER_TOKEN = 4  # estimate for streams whose backend reports no usage (llama.cpp)

_ERR = {"model": ErrorResponse}
COMMON_ERRORS = {
    400: {**_ERR, "description": "invalid request"},
    401: {**_ERR, "description": "missing or bad API key"},
    413: {**_ERR, "description": "body too large"},
}
CHAT_RESPONSES = {
    200: {
        "description": "a chat completion (JSON), or server-sent chunks when stream is true",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    },
    **COMMON_ERRORS,
    404: {**_ERR, "description": "unknown model"},
    502: {**_ERR, "description": "no backend answered"},
    504: {**_ERR, "description": "every backend timed out"},
}


# -- the app ----------------------------------------------------------------------------------------


def create_app(config: ServeConfig) -> FastAPI:
    """Build the proxy app for ``config`` (loads routers and checks everything; opens nothing)."""
    from caproute import __version__

    state = ServeState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.start()
        log.info("caproute serve: routers %s, pool %s", sorted(state.routers), list(state.pool_names))
        try:
            yield
        finally:
            state.draining = True
            await state.stop()

    app = FastAPI(
        title="caproute routing proxy",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="OpenAI-compatible proxy that routes each request with a trained caproute router.",
    )
    app.state.caproute = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        message, param = validation_message(exc.errors())
        code = (
            "invalid_json"
            if any(e.get("type") == "json_invalid" for e in exc.errors())
            else "invalid_request"
        )
        return JSONResponse(error_body(message, param=param, code=code), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.__cause__, ApiError):  # e.g. the body limit tripped while FastAPI read the body
            return await _api_error(request, exc.__cause__)
        if isinstance(exc.__cause__, UnicodeDecodeError):  # JSON is UTF-8 text (RFC 8259); escapes are repaired
            err = ApiError(400, f"the body is not JSON: not UTF-8 ({exc.__cause__.reason})", code="invalid_json")
        elif exc.status_code == 404:
            err = ApiError(404, f"no route {request.method} {request.url.path}", code="not_found")
        elif exc.status_code == 405:
            err = ApiError(
                405, f"method {request.method} not allowed on {request.url.path}", code="method_not_allowed"
            )
        else:
            err = ApiError(exc.status_code, str(exc.detail))
        return JSONResponse(err.body(), status_code=err.status, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse(
            error_body(f"internal error: {type(exc).__name__}", type="server_error", code="internal_error"),
            status_code=500,
        )

    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", CONVERSATION_HEADER],
            expose_headers=["x-caproute-model", "x-caproute-response-id"],
        )
    app.add_middleware(GatewayMiddleware, state=state)

    # -- endpoints -----------------------------------------------------------------------------
    def openapi() -> dict:
        """The schema without FastAPI's 422 entries: validation errors are 400s in OpenAI's shape."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for item in doc.get("paths", {}).values():
                for op in item.values():
                    op.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                doc.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        """Liveness and what is served (no authentication)."""
        return {
            "status": "draining" if state.draining else "ok",
            "routers": sorted(state.routers),
            "pool": list(state.pool_names),
            "duel": state.duel is not None,
            "uptime_s": round(time.time() - state.started, 3),
        }

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            401: COMMON_ERRORS[401],
        },
    )
    async def metrics() -> Response:
        """Prometheus metrics of this app."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", tags=["openai"], responses={401: COMMON_ERRORS[401]})
    async def models() -> dict:
        """Routers as virtual models (``caproute/<name>``), the duel mode, and the pool models."""
        created = int(state.started)
        data = [
            {
                "id": router_model_id(n),
                "object": "model",
                "created": created,
                "owned_by": "caproute",
                "caproute": {
                    "kind": "router",
                    "models": [h.pool_names[m] for m in h.models],
                    "policy_version": h.policy.version if h.policy else None,
                },
            }
            for n, h in state.routers.items()
        ]
        if state.duel is not None:
            data.append(
                {
                    "id": router_model_id(DUEL),
                    "object": "model",
                    "created": created,
                    "owned_by": "caproute",
                    "caproute": {"kind": "duel", "models": list(state.duel.pool_names.values())},
                }
            )
        data += [
            {"id": n, "object": "model", "created": created, "owned_by": "pool", "caproute": {"kind": "pool"}}
            for n in state.pool_names
        ]
        return {"object": "list", "data": data}

    @app.post(
        "/v1/route",
        tags=["caproute"],
        responses={**COMMON_ERRORS, 404: {**_ERR, "description": "unknown router"}},
    )
    async def route(body: RouteRequest) -> Response:
        """The routing decision only: chosen model, per-model mu_q, mu_c, sigma_q, utility."""
        t0 = time.perf_counter()
        state.admit()
        target = state.parse_target(body.model)
        if target.kind != "router":
            raise ApiError(
                400,
                f"model '{body.model}' is not a router (use caproute/<router>)",
                param="model",
                code="not_a_router",
            )
        handle = state.routers[target.name]
        params = state.params(
            handle, target, CaprouteOptions(budget=body.budget, lam=body.lam, beta=body.beta)
        )
        if body.messages is not None:
            texts = [
                routing_text(
                    [m.model_dump() for m in body.messages], config.conversation, config.max_routing_chars
                )
            ]
        else:
            texts = [body.input] if isinstance(body.input, str) else list(body.input)
            if len(texts) > config.max_route_inputs:
                raise ApiError(
                    400,
                    f"at most {config.max_route_inputs} inputs per request",
                    param="input",
                    code="too_many_inputs",
                )
            texts = [t[-config.max_routing_chars :] for t in texts]
        if len(texts) == 1:
            decisions = [await handle.batcher.decide(texts[0], params.lam, params.beta)]
        else:
            decisions = await handle.batcher.decide_many(texts, params.lam, params.beta)
        state.metrics.overhead.labels(handle.name).observe(time.perf_counter() - t0)
        out = []
        for d in decisions:
            rid = f"route-{uuid.uuid4().hex}"
            dd = decision_dict(d, handle)
            state.store.register(
                {
                    "response_id": rid,
                    "kind": "route",
                    "router": handle.name,
                    "model": dd["model"],
                    "policy_version": params.version,
                    "lam": params.lam,
                    "beta": params.beta,
                    "decision": dd,
                }
            )
            out.append({"id": rid, **dd})
        return _json(
            {
                "object": "caproute.route",
                "router": router_model_id(handle.name),
                "policy_version": params.version,
                "params_source": params.source,
                "decisions": out,
            }
        )

    @app.post(
        "/v1/feedback",
        tags=["caproute"],
        responses={
            **COMMON_ERRORS,
            404: {**_ERR, "description": "unknown response id"},
            503: {**_ERR, "description": "the store could not be written"},
        },
    )
    async def feedback(body: FeedbackRequest, request: Request) -> dict:
        """Scalar or pairwise feedback tied to response ids; stored durably before the reply. One
        rating per (response, API key): a repeat replaces it. Rate-limited per key (429)."""
        client = request.scope.get("state", {}).get("key_id")
        state.feedback_limiter.check(client, "feedback")
        if body.score is not None:
            fb = Feedback("scalar", body.response_id, score=body.score, comment=body.comment, key_id=client)
        else:
            fb = Feedback("pairwise", body.winner_id, body.loser_id, tie=body.tie, comment=body.comment,
                          key_id=client)
        try:
            stored = await _add_feedback(state, fb)
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
            raise ApiError(
                503, "feedback could not be stored; retry", code="feedback_store_unavailable"
            ) from None
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

    @app.post("/v1/chat/completions", tags=["openai"], responses=CHAT_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI chat completions; ``model`` picks a router, the duel mode, or a pool model."""
        if len(body.messages) > config.max_messages:
            raise ApiError(
                400,
                f"at most {config.max_messages} messages per request",
                param="messages",
                code="too_many_messages",
            )
        target = state.parse_target(body.model)
        raw = body.model_dump(exclude_unset=True, exclude={"caproute"})
        opts = body.caproute
        conv = (opts.conversation_id if opts and opts.conversation_id else None) or request.headers.get(
            CONVERSATION_HEADER
        )
        if conv is not None and len(conv) > 256:
            raise ApiError(400, "conversation id longer than 256 characters", param="conversation_id")
        if target.kind == "duel":
            return await chat_duel(state, raw, body)
        t_in = request.scope["state"].get("t0", time.perf_counter())
        return await chat_routed(state, target, raw, body, opts, conv, t_in, request=request)

    return app


def _json(obj: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        json.dumps(obj, separators=(",", ":")),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def decision_dict(d, handle: RouterHandle) -> dict:
    """A pipeline Decision with pool model names (``router_model`` keeps the router's name)."""
    dd = d.to_dict()
    pool = handle.pool_names
    if any(k != v for k, v in pool.items()):
        for key in ("mu_q", "mu_c", "sigma_q", "utility"):
            dd[key] = {pool[m]: v for m, v in dd[key].items()}
        dd["router_model"] = dd["model"]
        dd["model"] = pool[dd["model"]]
    return dd


# -- chat: routed and direct ------------------------------------------------------------------------


async def chat_routed(
    state: ServeState,
    target: Target,
    raw: dict,
    body: ChatCompletionRequest,
    opts: CaprouteOptions | None,
    conv: str | None,
    t_in: float,
    request: Request | None = None,
) -> Response:
    cfg, m = state.config, state.metrics
    t0 = time.perf_counter()
    state.admit()
    # the whole request's deadline (all attempts), counted from when the proxy received it
    not_after = (
        time.monotonic() + cfg.request_timeout_s - (t0 - t_in) if cfg.request_timeout_s is not None else None
    )
    handle = params = decision = None
    sticky = False
    if target.kind == "direct":
        order = [target.name]
    else:
        handle = state.routers[target.name]
        params = state.params(handle, target, opts)
        text = routing_text(raw["messages"], cfg.conversation, cfg.max_routing_chars)
        decision = decision_dict(await handle.batcher.decide(text, params.lam, params.beta), handle)
        models = [handle.pool_names[x] for x in handle.models]
        order = fallback_order(decision["utility"], decision["mu_c"], decision["model"], models)
        if conv is not None:
            stuck = state.sticky.get(conv, handle.name)
            if stuck is not None and stuck in order:
                order = [stuck, *[x for x in order if x != stuck]]
                sticky = True
        order = order[: cfg.max_attempts]
        m.overhead.labels(handle.name).observe(time.perf_counter() - t0)
    rid = f"chatcmpl-cr{uuid.uuid4().hex}"
    meta = {
        "response_id": rid,
        "router": router_model_id(handle.name) if handle else None,
        "policy_version": params.version if params else None,
        "params_source": params.source if params else "direct",
        "decision": decision,
        "conversation_id": conv,
        "sticky": sticky,
        "routing_overhead_ms": round((time.perf_counter() - t0) * 1e3, 3),
    }
    if body.stream:
        return await _stream(state, handle, params, order, raw, rid, meta, conv, t_in, not_after)
    attempts = []
    for name in order:
        if not_after is not None and time.monotonic() >= not_after:
            break  # the request's deadline passed: answer now (504 if every attempt timed out)
        try:
            data, elapsed = await _unless_client_leaves(request, state.backends.complete(name, raw, not_after))
        except _ClientLeft:
            log.info("client left during the call to %s: backend request cancelled", name)
            return Response(status_code=499)
        except BackendFailure as e:
            attempts.append({"model": name, "reason": e.reason, "detail": e.detail})
            m.backend_errors.labels(name, e.reason).inc()
            log.warning(
                "backend %s failed (%s: %s); %s",
                name,
                e.reason,
                e.detail,
                "falling back" if name != order[-1] else "no fallback left",
            )
            continue
        except BackendRejected as e:
            m.backend_errors.labels(name, f"http_{e.status}").inc()
            raise ApiError(
                e.status if 400 <= e.status < 500 else 502,
                f"backend '{name}' rejected the request: {e.message}",
                code="backend_rejected",
            ) from None
        m.backend_latency.labels(name).observe(elapsed)
        usage = data.get("usage") or {}
        spend, estimated = _spend(state, name, raw, usage, None)
        _account(state, handle, params, name, spend, decision, attempts, conv)
        backend_id = data.get("id")
        data["id"], data["model"] = rid, name
        data["caproute"] = {
            **meta,
            "model": name,
            "backend_id": backend_id,
            "attempts": attempts,
            "fallback": bool(attempts),
            "spend_usd": spend,
            "spend_estimated": estimated,
        }
        _register(state, rid, "chat" if handle else "direct", handle, params, name, conv, decision)
        log_answer(state, response_id=rid, kind="chat" if handle else "direct", router=handle.name if handle else None,
                   model=name, raw=raw, data=data, spend=spend, estimated=estimated)
        headers = _headers(name, rid, meta)
        headers["server-timing"] = _server_timing(t_in, meta["routing_overhead_ms"], elapsed)
        return _json(data, headers=headers)
    raise _all_failed(order, attempts)


def _server_timing(t_in: float, route_ms: float, backend_s: float) -> str:
    """``Server-Timing``: routing decision, backend call, and the proxy's own time (total - backend)."""
    total_ms = (time.perf_counter() - t_in) * 1e3
    backend_ms = backend_s * 1e3
    return (
        f"route;dur={route_ms:.3f}, backend;dur={backend_ms:.3f}, proxy;dur={total_ms - backend_ms:.3f}, "
        f"total;dur={total_ms:.3f}"
    )


async def _add_feedback(state: ServeState, fb: Feedback):
    """Store feedback. With several workers, the response may have been answered by another
    process whose registration is still queued there: an unknown id is looked up again for up
    to 2 s (PROPOSED) before it is a 404."""
    end = time.monotonic() + (2.0 if state.config.workers > 1 else 0.0)
    while True:
        try:
            return await asyncio.wrap_future(state.store.add(fb))
        except UnknownResponse:
            if time.monotonic() >= end:
                raise
            await asyncio.sleep(0.05)


class _ClientLeft(Exception):
    pass


async def _unless_client_leaves(request: Request | None, coro):
    """Await ``coro``; if the client disconnects first, cancel it (which closes the backend
    connection) and raise :class:`_ClientLeft`."""
    if request is None:
        return await coro
    current = asyncio.current_task()
    left = False

    async def gone() -> None:
        nonlocal left
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left = True
        current.cancel()  # the backend call is cancelled where it waits; that closes its connection

    watch = asyncio.ensure_future(gone())  # one task per request; the call itself runs in this one
    try:
        return await coro
    except asyncio.CancelledError:
        if left:
            current.uncancel()
            raise _ClientLeft from None
        raise
    finally:
        watch.cancel()


def _usage_ok(state: ServeState, name: str, usage) -> bool:
    """False (and counted as a bad_response of ``name``) when a stream's usage is malformed."""
    from caproute.collect.client import MalformedResponse, parse_usage

    try:
        parse_usage(usage)
        return True
    except MalformedResponse as e:
        state.metrics.backend_errors.labels(name, "bad_response").inc()
        log.warning("backend %s: malformed usage in a stream (%s: %s); tokens estimated", name, e.field, e.problem)
        return False


def _all_failed(order: list[str], attempts: list[dict]) -> ApiError:
    detail = "; ".join(f"{a['model']}: {a['reason']} ({a['detail']})" for a in attempts)
    status = 504 if attempts and all(a["reason"] == "timeout" for a in attempts) else 502
    return ApiError(
        status,
        f"no backend answered (tried {len(attempts)} of the ranked models {order}): {detail}",
        code="backends_unavailable",
    )


def _headers(model: str, rid: str, meta: dict) -> dict[str, str]:
    h = {"x-caproute-model": model, "x-caproute-response-id": rid}
    if meta.get("router"):
        h["x-caproute-router"] = meta["router"]
    if meta.get("policy_version"):
        h["x-caproute-policy-version"] = meta["policy_version"]
    return h


def _spend(
    state: ServeState, name: str, raw: dict, usage: dict, completion_chunks: int | None
) -> tuple[float, bool]:
    """USD of one answer from its usage, or estimated (prompt chars / 4, one token per chunk)."""
    from caproute.collect.client import MalformedResponse, parse_usage

    ep = state.backends.endpoints[name]
    try:
        u = parse_usage(usage or None)
    except MalformedResponse as e:  # only streams get here: complete() validated its usage
        state.metrics.backend_errors.labels(name, "bad_response").inc()
        log.warning("backend %s: ignoring malformed usage (%s: %s); tokens estimated", name, e.field, e.problem)
        u = None
    estimated = u is None
    if estimated:
        chars = sum(len(message_text(msg.get("content"))) for msg in raw.get("messages", []))
        pt, ct, cached = max(1, chars // CHARS_PER_TOKEN), int(completion_chunks or 0), 0
    else:
        pt, ct, cached = u.prompt_tokens, u.completion_tokens, u.cached_tokens
    state.metrics.tokens.labels(name, "prompt").inc(pt)
    state.metrics.tokens.labels(name, "completion").inc(ct)
    spend = ep.cost_usd(pt, ct, cached if isinstance(cached, int) else 0)
    state.metrics.spend.labels(name).inc(spend)
    return spend, estimated


def _account(
    state: ServeState,
    handle: RouterHandle | None,
    params: Params | None,
    name: str,
    spend: float,
    decision: dict | None,
    attempts: list,
    conv: str | None,
) -> None:
    if handle is None:
        return
    m = state.metrics
    models = tuple(handle.pool_names[x] for x in handle.models)
    m.routed_to(handle.name, name, models)
    if attempts:
        m.fallbacks.labels(handle.name).inc()
    if conv is not None:
        state.sticky.set(conv, handle.name, name)
    if handle.drift is not None and params is not None and params.policy is handle.policy:
        idx = models.index(name)
        st = handle.drift.record(idx, spend, float(decision["mu_q"][name]))
        m.drift.labels(handle.name, "share_tv").set(st.share_tv)
        m.drift.labels(handle.name, "target").set(st.target_deviation)
        m.drifting.labels(handle.name).set(1.0 if st.drifting else 0.0)
        if st.changed and st.drifting:
            log.warning(
                "router %s: live traffic drifted from policy %s (share TV %.3f, target deviation %.3f over "
                "the last %d requests; tolerances %.3f / %.3f); consider `caproute calibrate` again",
                handle.name,
                handle.policy.version,
                st.share_tv,
                st.target_deviation,
                st.n,
                handle.drift.share_tol,
                handle.drift.target_tol,
            )
        elif st.changed:
            log.info(
                "router %s: live traffic back within policy %s tolerance", handle.name, handle.policy.version
            )


def _register(
    state: ServeState,
    rid: str,
    kind: str,
    handle: RouterHandle | None,
    params: Params | None,
    model: str,
    conv: str | None,
    decision: dict | None,
    **extra,
) -> None:
    state.store.register(
        {
            "response_id": rid,
            "kind": kind,
            "router": handle.name if handle else None,
            "model": model,
            "conversation_id": conv,
            "policy_version": params.version if params else None,
            "lam": params.lam if params else None,
            "beta": params.beta if params else None,
            "decision": decision,
            **extra,
        }
    )


async def _stream(
    state: ServeState, handle, params, order, raw, rid, meta, conv, t0, not_after=None
) -> Response:
    m = state.metrics
    attempts: list[dict] = []
    start: StreamStart | None = None
    for name in order:
        if not_after is not None and time.monotonic() >= not_after:
            break
        try:
            start = await state.backends.open_stream(name, raw, not_after)
            break
        except BackendFailure as e:
            attempts.append({"model": name, "reason": e.reason, "detail": e.detail})
            m.backend_errors.labels(name, e.reason).inc()
            log.warning("backend %s failed (%s: %s) before streaming", name, e.reason, e.detail)
        except BackendRejected as e:
            m.backend_errors.labels(name, f"http_{e.status}").inc()
            raise ApiError(
                e.status if 400 <= e.status < 500 else 502,
                f"backend '{name}' rejected the request: {e.message}",
                code="backend_rejected",
            ) from None
    if start is None:
        raise _all_failed(order, attempts)
    name = start.model
    m.backend_latency.labels(name).observe(start.first_byte_s)
    info = {**meta, "model": name, "attempts": attempts, "fallback": bool(attempts)}

    def encode(chunk: dict, first: bool) -> bytes:
        chunk["id"], chunk["model"] = rid, name
        if first:
            chunk["caproute"] = info
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    async def body():
        n_chunks, usage, completed = 0, {}, False
        parts: list[str] = []  # the answer text, for the request log
        try:
            first = True
            for chunk in start.head:
                n_chunks += 1
                yield encode(chunk, first)
                first = False
            async for chunk in start.chunks:
                if chunk is None:
                    completed = True
                    break
                problem = chunk_problem(chunk)
                if problem is not None:
                    raise BackendFailure(name, *problem)
                if chunk.get("usage") is not None:
                    if _usage_ok(state, name, chunk["usage"]):
                        usage = chunk["usage"]
                    else:
                        del chunk["usage"]  # not forwarded; the tokens are estimated
                n_chunks += 1
                if state.request_log is not None:
                    parts.append(delta_text(chunk))
                yield encode(chunk, False)
            if not completed:
                raise BackendFailure(name, "stream_cut", "the backend closed the stream without [DONE]")
            yield b"data: [DONE]\n\n"
        except (BackendFailure, httpx.HTTPError) as e:
            reason = e.reason if isinstance(e, BackendFailure) else "stream_cut"
            m.backend_errors.labels(name, reason).inc()
            log.warning("stream from %s broke after %d chunks: %s", name, n_chunks, e)
            err = error_body(
                f"the backend '{name}' failed mid-stream ({reason}); the answer is incomplete",
                type="server_error",
                code="backend_stream_failed",
            )
            yield b"data: " + json.dumps(err).encode() + b"\n\n"
        finally:
            # registered first: the client has the id since the first chunk, whatever happens next
            _register(
                state, rid, "chat" if handle else "direct", handle, params, name, conv, meta["decision"]
            )
            # the client may have left (the body task is being cancelled): close the backend
            # connection and free the model's slot regardless
            with anyio.CancelScope(shield=True):
                await start.aclose()
            try:
                spend, est = _spend(state, name, raw, usage, n_chunks)
                _account(state, handle, params, name, spend, meta["decision"], attempts, conv)
                log_answer(state, response_id=rid, kind="chat" if handle else "direct",
                           router=handle.name if handle else None, model=name, raw=raw,
                           text="".join(delta_text(c) for c in start.head) + "".join(parts), usage=usage,
                           spend=spend, estimated=est)
            except Exception:
                log.exception("accounting of stream %s from %s failed", rid, name)

    headers = _headers(name, rid, meta)
    headers["cache-control"] = "no-cache"
    headers["server-timing"] = _server_timing(t0, meta["routing_overhead_ms"], start.first_byte_s)
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


# -- duel mode --------------------------------------------------------------------------------------


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
        tried = []
        for k in [first, *[a for a in range(len(arms)) if a != first]][: cfg.max_attempts]:
            name = duel.pool_names[arms[k]]
            if name in avoid and k != first:
                continue
            try:
                data, _ = await state.backends.complete(name, raw)
                return k, name, data, tried
            except BackendFailure as e:
                state.metrics.backend_errors.labels(name, e.reason).inc()
                tried.append({"model": name, "reason": e.reason, "detail": e.detail})
            except BackendRejected as e:
                raise ApiError(
                    e.status if 400 <= e.status < 500 else 502,
                    f"backend '{name}' rejected the request: {e.message}",
                    code="backend_rejected",
                ) from None
        raise _all_failed([duel.pool_names[a] for a in arms], tried)

    (ka, na, da, ta), (kb, nb, db, tb) = await asyncio.gather(
        answer(i, set()), answer(j, {duel.pool_names[arms[i]]} if i != j else set())
    )
    duel.embeddings[did] = x
    while len(duel.embeddings) > 10_000:
        duel.embeddings.pop(next(iter(duel.embeddings)))
    ids = [f"{did}-a", f"{did}-b"]
    choices = []
    for arm_pos, (k, name, data, rid) in enumerate(((ka, na, da, ids[0]), (kb, nb, db, ids[1]))):
        c = dict(data["choices"][0])
        c["index"] = arm_pos
        choices.append(c)
        spend, _ = _spend(state, name, raw, data.get("usage") or {}, None)
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
    return _json(out, headers=headers)


async def duel_update(state: ServeState, stored) -> bool:
    """Learn from pairwise feedback on the two answers of one duel (ties are stored, not learned)."""
    duel = state.duel
    rows = stored.responses
    if duel is None or len(rows) != 2 or stored.feedback.tie:
        return False
    a, b = rows
    if a["kind"] != "duel" or b["kind"] != "duel" or a["duel_id"] != b["duel_id"] or a["duel_id"] is None:
        return False
    from caproute.serve.duel_state import catch_up

    # applies this feedback (and any before it, in log order) and saves one atomic checkpoint; a
    # duel's result is learned once (a replay, or a later verdict on the same duel, applies nothing)
    return await catch_up(duel, state.store) > 0
