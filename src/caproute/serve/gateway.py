"""The proxy's gateway, a pure ASGI middleware in front of every route: API-key check (401), the
request body limit (413, also while the body streams in), and the per-endpoint request counter,
in-flight gauge and latency histogram."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from caproute.serve.auth import bearer, key_id
from caproute.serve.errors import ApiError

if TYPE_CHECKING:
    from caproute.serve.state import ServeState

OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes", code="request_too_large")


class GatewayMiddleware:
    def __init__(self, app, state: ServeState):
        self.app, self.state = app, state
        self.limit = state.config.max_body_bytes
        self.auth = not state.config.insecure_local or len(state.keyring) > 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in _ENDPOINTS else "other"
        m = self.state.metrics
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
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
                    await _send_error(
                        path,
                        send_wrapped,
                        ApiError(401, msg, code="invalid_api_key", headers={"www-authenticate": "Bearer"}),
                    )
                    return
            length = headers.get(b"content-length")
            if length is not None:
                try:
                    too_big = int(length) > self.limit
                except ValueError:
                    await _send_error(path, send_wrapped, ApiError(400, "invalid Content-Length header"))
                    return
                if too_big:
                    await _send_error(path, send_wrapped, BodyTooLarge(self.limit))
                    return
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
        finally:
            m.inflight.dec()
            m.requests.labels(endpoint, str(status["code"])).inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - t0)


_ENDPOINTS = frozenset(
    {"/v1/chat/completions", "/v1/messages", "/v1/models", "/v1/route", "/v1/feedback", "/healthz", "/metrics"}
)


async def _send_error(path: str, send, err: ApiError) -> None:
    from caproute.serve.anthropic import PATH, from_openai_error

    obj = err.body()
    body = json.dumps(from_openai_error(err.status, obj) if path == PATH else obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
