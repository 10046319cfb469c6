"""The OpenAI-compatible routing proxy: :func:`create_app` builds a FastAPI app from a
:class:`~caproute.serve.config.ServeConfig`.

This module keeps the routes only. ``create_app`` builds a :class:`~caproute.serve.state.ServeState`
(loads and checks the routers, pool, policies and budgets: a bad config fails before anything
listens); the app's lifespan opens the backend client, the feedback store and the online duel
policy, and closes them after in-flight requests drained. Handlers only translate HTTP to library
calls: a routed chat is :class:`~caproute.serve.routed_chat.RoutedChat`, the duel mode
:mod:`caproute.serve.duel_chat`, feedback :mod:`caproute.serve.feedback_api`, auth and body
limits :mod:`caproute.serve.gateway`; the math of calibration and drift lives in
:mod:`caproute.serve.calibrate` / :mod:`caproute.serve.drift`.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/messages`` (Anthropic's Messages API,
translated by :mod:`caproute.serve.anthropic`), ``GET /v1/models``, ``POST /v1/route``,
``POST /v1/feedback``, ``GET /healthz``, ``GET /metrics``. Every routed answer carries the
``x-caproute-model`` header and a ``caproute`` object in the body (stream: in the first chunk).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from caproute.serve import anthropic
from caproute.serve.config import ServeConfig
from caproute.serve.conversation import routing_text
from caproute.serve.duel_chat import chat_duel
from caproute.serve.errors import ApiError, error_body, validation_message
from caproute.serve.feedback_api import receive_feedback
from caproute.serve.gateway import FastLane, GatewayMiddleware
from caproute.serve.naming import DUEL, router_model_id
from caproute.serve.routed_chat import RoutedChat, decision_dict, json_response
from caproute.serve.schemas import (
    CaprouteOptions,
    ChatCompletionRequest,
    ErrorResponse,
    FeedbackRequest,
    RouteRequest,
)
from caproute.serve.state import Duel, ServeState  # noqa: F401 (Duel: for older imports)

log = logging.getLogger("caproute.serve")

CONVERSATION_HEADER = "x-caproute-conversation-id"
_CONV_KEY = CONVERSATION_HEADER.encode("latin-1")

_ERR = {"model": ErrorResponse}
COMMON_ERRORS = {
    400: {**_ERR, "description": "invalid request"},
    401: {**_ERR, "description": "missing or bad API key"},
    413: {**_ERR, "description": "body too large"},
}
LATENCY_UNAVAILABLE = {409: {**_ERR, "description": "lambda_t > 0 asked of a router without a latency model"}}
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
    **LATENCY_UNAVAILABLE,
    502: {**_ERR, "description": "no backend answered"},
    504: {**_ERR, "description": "every backend timed out"},
}

MESSAGES_RESPONSES = {
    200: {
        "description": "an Anthropic message (JSON), or its server-sent events when stream is true",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    },
    **{status: {"description": r["description"]} for status, r in CHAT_RESPONSES.items() if status != 200},
}


# -- the app ----------------------------------------------------------------------------------------


class ProxyApp(FastAPI):
    """The proxy's FastAPI app, entered through caproute's own front for HTTP requests.

    :attr:`front` (set by :func:`create_app`: the gateway, CORS where configured, the fast lane)
    receives every HTTP request before FastAPI's middleware stack does; the routes the lane does
    not serve reach that stack from the lane, and lifespan events go to FastAPI directly. The
    hot routes thus skip five ASGI layers (FastAPI's and Starlette's entry, the server-error,
    exception-telemetry and body-limit middleware) whose work the gateway already does: the
    server-error answer (:class:`~caproute.serve.gateway.GatewayMiddleware`), the body limit,
    and caproute's own spans and metrics (:mod:`caproute.serve.telemetry`).
    """

    front = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.front is not None:
            scope["app"] = self
            return await self.front(scope, receive, send)
        return await super().__call__(scope, receive, send)


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

    app = ProxyApp(
        title="caproute routing proxy",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="OpenAI-compatible proxy that routes each request with a trained caproute router.",
    )
    app.state.caproute = state

    def _error(request: Request, body: dict, status: int, headers: dict | None = None) -> JSONResponse:
        """An error in the shape of the route's API (Anthropic's on /v1/messages, OpenAI's elsewhere)."""
        if request.url.path == anthropic.PATH:
            body = anthropic.from_openai_error(status, body)
        return JSONResponse(body, status_code=status, headers=headers)

    def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(request, exc.body(), exc.status, exc.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return api_error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        message, param = validation_message(exc.errors())
        code = (
            "invalid_json"
            if any(e.get("type") == "json_invalid" for e in exc.errors())
            else "invalid_request"
        )
        return _error(request, error_body(message, param=param, code=code), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.__cause__, ApiError):  # e.g. the body limit tripped while FastAPI read the body
            return api_error(request, exc.__cause__)
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
        return _error(request, err.body(), err.status, getattr(exc, "headers", None))

    def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path, exc_info=exc)
        return _error(
            request,
            error_body(f"internal error: {type(exc).__name__}", type="server_error", code="internal_error"),
            500,
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return internal_error(request, exc)

    # the front every HTTP request enters (ProxyApp): the gateway (auth, body limit, metrics, the
    # server-error answer), CORS where configured, then the fast lane for the hot routes (filled in
    # below); what the lane does not serve goes on to FastAPI's own stack
    lane: dict = {}
    front = FastLane(
        partial(FastAPI.__call__, app),
        routes=lane,
        on_error=api_error,
    )
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        front = CORSMiddleware(
            front,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "x-api-key", "anthropic-version", "content-type", CONVERSATION_HEADER],
            expose_headers=["x-caproute-model", "x-caproute-response-id"],
        )
    app.front = GatewayMiddleware(
        front,
        state,
        on_error=lambda request, exc: (
            api_error(request, exc) if isinstance(exc, ApiError) else internal_error(request, exc)
        ),
    )

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
        responses={**COMMON_ERRORS, 404: {**_ERR, "description": "unknown router"}, **LATENCY_UNAVAILABLE},
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
            handle, target, CaprouteOptions(budget=body.budget, lam=body.lam, beta=body.beta, lam_t=body.lam_t)
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
            decisions = [await handle.batcher.decide(texts[0], params.lam, params.beta, params.lam_t)]
        else:
            decisions = await handle.batcher.decide_many(texts, params.lam, params.beta, params.lam_t)
        state.metrics.overhead.labels(handle.name).observe(time.perf_counter() - t0)
        out = []
        for d in decisions:
            rid = f"route-{os.urandom(16).hex()}"  # 32 hex digits, as uuid4().hex
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
        return json_response(
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
        return await receive_feedback(state, body, request.scope.get("state", {}).get("key_id"))

    def check_messages(n: int) -> None:
        if n > config.max_messages:
            raise ApiError(
                400,
                f"at most {config.max_messages} messages per request",
                param="messages",
                code="too_many_messages",
            )

    def conversation(opts: CaprouteOptions | None, request: Request) -> str | None:
        conv = opts.conversation_id if opts and opts.conversation_id else None
        if conv is None:  # request.headers.get without building Headers (scope keys are lower-case)
            conv = next((v.decode("latin-1") for k, v in request.scope["headers"] if k == _CONV_KEY), None)
        if conv is not None and len(conv) > 256:
            raise ApiError(400, "conversation id longer than 256 characters", param="conversation_id")
        return conv

    @app.post("/v1/chat/completions", tags=["openai"], responses=CHAT_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI chat completions; ``model`` picks a router, the duel mode, or a pool model."""
        check_messages(len(body.messages))
        target = state.parse_target(body.model)
        raw = body.model_dump(exclude_unset=True, exclude={"caproute"})
        opts = body.caproute
        conv = conversation(opts, request)
        if target.kind == "duel":
            return await chat_duel(state, raw, body)
        chat = RoutedChat(state, raw, conv=conv, t_in=request.scope["state"].get("t0"), request=request)
        await chat.decide(target, opts)
        return await chat.respond(stream=bool(body.stream))

    @app.post("/v1/messages", tags=["anthropic"], responses=MESSAGES_RESPONSES)
    async def messages(body: anthropic.MessagesRequest, request: Request) -> Response:
        """Anthropic's Messages API, routed exactly as chat completions (``model`` picks a router
        or a pool model); errors and events in Anthropic's shape."""
        check_messages(len(body.messages))
        target = state.parse_target(body.model)
        if target.kind == "duel":
            raise ApiError(400, "the duel mode is served on /v1/chat/completions only", param="model")
        chat = anthropic.AnthropicChat(
            state,
            anthropic.to_openai(body),
            conv=conversation(body.caproute, request),
            t_in=request.scope["state"].get("t0"),
            request=request,
        )
        await chat.decide(target, body.caproute)
        chat.require_tools()
        return await chat.respond(stream=bool(body.stream))

    lane.update(
        {
            "/v1/chat/completions": (ChatCompletionRequest, chat_completions),
            "/v1/messages": (anthropic.MessagesRequest, messages),
            "/v1/route": (RouteRequest, lambda body, request: route(body)),
        }
    )
    return app
