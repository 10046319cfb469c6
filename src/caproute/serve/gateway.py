"""The proxy's gateway, a pure ASGI middleware in front of every route: API-key check (401), the
request body limit (413, also while the body streams in), the per-endpoint request counter,
in-flight gauge and latency histogram, and the answer to an unexpected error (500, in the route's
shape) where nothing was sent yet. :class:`FastLane` behind it serves the hot routes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pydantic import ValidationError
from starlette.requests import Request

from caproute.serve import jsonwire
from caproute.serve.auth import bearer, key_id
from caproute.serve.errors import ApiError
from caproute.serve.schemas import CLEAN_TEXT

if TYPE_CHECKING:
    from caproute.serve.state import ServeState

OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes", code="request_too_large")


class GatewayMiddleware:
    """``on_error(request, exc)``: the response to an exception that reached the gateway before a
    response began (the gateway's own 401, 400 and 413 among them): the route's error for an
    :class:`ApiError`, else a 500 (sent, then the exception is raised on to the server, which logs
    it, as Starlette's server-error middleware does)."""

    def __init__(self, app, state: ServeState, on_error):
        self.app, self.state, self.on_error = app, state, on_error
        self.limit = state.config.max_body_bytes
        self.auth = not state.config.insecure_local or len(state.keyring) > 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in _ENDPOINTS else "other"
        m = self.state.metrics
        t0 = time.perf_counter()
        status = {"code": 500}  # until a response starts

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
            await send(message)

        scope.setdefault("state", {})["t0"] = t0
        m.inflight.inc()
        try:
            headers = dict(scope["headers"])
            if self.auth and path not in OPEN_PATHS and scope["method"] != "OPTIONS":
                # OpenAI clients send 'Authorization: Bearer', Anthropic's 'x-api-key'
                key = bearer(headers.get(b"authorization", b"").decode("latin-1")) or (
                    headers.get(b"x-api-key", b"").decode("latin-1").strip() or None
                )
                scope["state"]["key_id"] = key_id(key)  # who, for per-key feedback and limits
                if not self.state.keyring.check(key):
                    msg = (
                        "missing API key (send 'Authorization: Bearer <key>' or 'x-api-key: <key>')"
                        if key is None
                        else "invalid API key"
                    )
                    raise ApiError(401, msg, code="invalid_api_key", headers={"www-authenticate": "Bearer"})
            length = headers.get(b"content-length")
            if length is not None:
                try:
                    too_big = int(length) > self.limit
                except ValueError:
                    raise ApiError(400, "invalid Content-Length header") from None
                if too_big:
                    raise BodyTooLarge(self.limit)
            received = 0

            async def receive_limited():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.limit:
                        raise BodyTooLarge(self.limit)
                return message

            await self.app(scope, receive_limited, send_wrapped)
        except Exception as exc:
            if "started" in status:
                raise
            await self.on_error(Request(scope), exc)(scope, receive, send_wrapped)
            if not isinstance(exc, ApiError):
                raise
        finally:
            m.inflight.dec()
            m.requests.labels(endpoint, str(status["code"])).inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - t0)


_ENDPOINTS = frozenset(
    {"/v1/chat/completions", "/v1/messages", "/v1/models", "/v1/route", "/v1/feedback", "/healthz", "/metrics"}
)


class FastLane:
    """The hot routes without FastAPI's per-request machinery (its middleware stack, route
    matching, dependency solving): a pure ASGI dispatcher behind the gateway (so auth, the body
    limit, the endpoint metrics and the server-error answer are the same) and in front of the
    FastAPI app (``app``), which serves everything else.

    ``routes`` maps a POST path to ``(model, handler)``; the handler is the very function FastAPI
    serves on that path, called as ``handler(body, request)``, so the answer is the same. Only the
    plain case takes the lane: a JSON (or unlabelled) body that parses to an object and validates
    against ``model``. Anything else (another method or content type, bad JSON, a validation
    error) goes on to FastAPI with the body replayed, so every error comes from the one place that
    makes it. ``on_error(request, err)`` turns an :class:`ApiError` of the handler (or of the body
    limit) into the route's error response, as the app's exception handler does; exceptions while
    the response is sent, and other exceptions, propagate to the gateway (its error answer where
    nothing was sent yet, the same as FastAPI's for its routes).
    """

    def __init__(self, app, routes: dict, on_error):
        self.app, self.routes, self.on_error = app, routes, on_error

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None or not _json_or_unlabelled(scope["headers"]):
            return await self.app(scope, receive, send)
        request = Request(scope, receive, send)
        messages = []   # as received: replayed to FastAPI when the lane does not serve the request
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
        except ApiError as err:   # the body limit tripped while the body streamed in
            return await self.on_error(request, err)(scope, receive, send)
        body = None
        if messages[-1]["type"] == "http.request":   # else the client left before its body ended
            raw = b"".join(m.get("body", b"") for m in messages)
            model, handler = route
            try:
                obj, clean = jsonwire.loads_clean(raw) if raw else (None, False)
                body = model.model_validate(obj, context=CLEAN_TEXT if clean else None) if isinstance(obj, dict) else None
            except (ValueError, ValidationError):   # JSONDecodeError and UnicodeDecodeError are ValueErrors
                body = None
        if body is None:
            return await self.app(scope, _replay(messages, receive), send)
        try:
            response = await handler(body, request)
        except ApiError as err:
            response = self.on_error(request, err)
        await response(scope, receive, send)


def _json_or_unlabelled(headers) -> bool:
    """Whether FastAPI would parse the body as JSON: no content type, or application/json."""
    for k, v in headers:
        if k == b"content-type":
            kind = v.split(b";", 1)[0].strip().lower()
            return kind == b"application/json"
    return True


def _replay(messages: list, receive):
    """A ``receive`` that hands over ``messages`` (already received) first, then the client's own."""
    pending = list(messages)

    async def replayed():
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
