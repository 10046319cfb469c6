"""Calls to the pool's OpenAI-compatible backends over one shared ``httpx.AsyncClient``.

Failure classes decide what the proxy does next:

- :class:`BackendFailure` (retryable): timeout, refused/broken connection, HTTP 5xx or 429, a body
  that is not a chat completion, or an answer with no content at all. The router falls back to the
  next model by predicted utility.
- :class:`BackendRejected` (not retried): any other 4xx, e.g. a prompt too long for the model; the
  client gets the backend's status and message in OpenAI's error shape.

Backend API keys are read from the environment variables named in the pool YAML when the app
starts, kept in request headers only, and never logged or echoed in errors.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from caproute.collect.config import ModelEndpoint, PoolConfig

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class BackendFailure(Exception):
    """A retryable failure of one attempt on one model."""

    def __init__(self, model: str, reason: str, detail: str, status: int | None = None):
        super().__init__(f"{model}: {reason} ({detail})")
        self.model, self.reason, self.detail, self.status = model, reason, detail, status


class BackendRejected(Exception):
    """The backend refused the request itself (4xx other than 429): passed to the client."""

    def __init__(self, model: str, status: int, message: str):
        super().__init__(f"{model}: HTTP {status}: {message}")
        self.model, self.status, self.message = model, status, message


@dataclass
class StreamStart:
    """An open stream whose first content chunk has arrived (the point of no fallback)."""

    model: str
    response: httpx.Response
    chunks: AsyncIterator[dict | None]  # the rest of the stream (see :func:`sse_chunks`)
    head: list[dict]  # parsed chunks up to and including the first one with content
    first_byte_s: float


def _error_message(resp_text: str) -> str:
    try:
        body = json.loads(resp_text)
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message") if isinstance(err, dict) else None
        return str(msg or err)[:500]
    except (json.JSONDecodeError, AttributeError):
        return resp_text[:500]


def has_content(message_or_delta: dict | None) -> bool:
    """True when a message (or stream delta) carries text, a refusal or tool calls."""
    if not isinstance(message_or_delta, dict):
        return False
    content = message_or_delta.get("content")
    if isinstance(content, str) and content != "":
        return True
    if isinstance(content, list) and content:
        return True
    return bool(
        message_or_delta.get("tool_calls")
        or message_or_delta.get("function_call")
        or message_or_delta.get("refusal")
    )


class Backends:
    """One endpoint per pool model; ``start()`` reads keys and opens the client."""

    def __init__(
        self,
        pool: PoolConfig,
        *,
        max_connections: int = 512,
        connect_timeout_s: float = 5.0,
        lean_transport: bool = True,
    ):
        self.pool, self.lean = pool, lean_transport
        self.endpoints: dict[str, ModelEndpoint] = {m.name: m for m in pool.models}
        self._headers: dict[str, dict[str, str]] = {}
        self._max_connections, self._connect_timeout = max_connections, connect_timeout_s
        self.client: httpx.AsyncClient | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.endpoints)

    async def start(self) -> None:
        for name, ep in self.endpoints.items():
            headers = {"content-type": "application/json"}
            if ep.api_key_env:
                headers["authorization"] = f"Bearer {ep.api_key()}"  # ConfigError names the variable only
            self._headers[name] = headers
        # keep-alive expiry below the usual 5 s server idle timeout (uvicorn, llama.cpp), so a pooled
        # connection is not reused just as the server closes it
        limits = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
            keepalive_expiry=3.0,
        )
        mounts = {"https://": httpx.AsyncHTTPTransport(limits=limits)}
        if self.lean:  # plain-HTTP backends (local servers) through the lean transport, see transport.py
            from caproute.serve.transport import LeanTransport

            mounts["http://"] = LeanTransport(max_idle_per_host=self._max_connections, keepalive_expiry=3.0)
        else:
            mounts["http://"] = httpx.AsyncHTTPTransport(limits=limits)
        self.client = httpx.AsyncClient(mounts=mounts, timeout=None, trust_env=False)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def _timeout(self, ep: ModelEndpoint) -> httpx.Timeout:
        return httpx.Timeout(ep.timeout_s, connect=min(self._connect_timeout, ep.timeout_s))

    def payload(self, name: str, body: dict[str, Any]) -> bytes:
        ep = self.endpoints[name]
        out = {**ep.extra_body, **body, "model": ep.model}
        return json.dumps(out).encode()

    def _request(self, name: str, body: dict[str, Any]) -> httpx.Request:
        ep = self.endpoints[name]
        return self.client.build_request(
            "POST",
            f"{ep.base_url}/chat/completions",
            content=self.payload(name, body),
            headers=self._headers[name],
            timeout=self._timeout(ep),
        )

    async def complete(self, name: str, body: dict[str, Any]) -> tuple[dict, float]:
        """Non-streaming chat completion: (parsed body, seconds)."""
        t0 = time.perf_counter()
        try:
            resp = await self.client.send(self._request(name, body))
        except httpx.TimeoutException as e:
            raise BackendFailure(name, "timeout", type(e).__name__) from None
        except httpx.HTTPError as e:
            raise BackendFailure(name, "connection", f"{type(e).__name__}: {str(e)[:200]}") from None
        elapsed = time.perf_counter() - t0
        _check_status(name, resp.status_code, resp.text)
        try:
            data = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BackendFailure(name, "bad_response", "body is not JSON") from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise BackendFailure(name, "bad_response", "no choices in the answer")
        if not any(has_content(c.get("message")) for c in choices if isinstance(c, dict)):
            raise BackendFailure(name, "empty", "the model returned no content")
        return data, elapsed

    async def open_stream(self, name: str, body: dict[str, Any]) -> StreamStart:
        """Open a streaming completion and read up to the first chunk with content.

        Until then any failure (including a stream that ends empty) is retryable; the caller
        commits to this model only once this returns.
        """
        t0 = time.perf_counter()
        resp = None
        try:
            resp = await self.client.send(self._request(name, body), stream=True)
            if resp.status_code >= 400:
                text = (await resp.aread()).decode(errors="replace")
                await resp.aclose()
                _check_status(name, resp.status_code, text)
            chunks = sse_chunks(resp.aiter_lines())
            head: list[dict] = []
            async for chunk in chunks:
                if chunk is None:  # [DONE] before any content
                    break
                if "error" in chunk and "choices" not in chunk:
                    raise BackendFailure(name, "stream_error", str(chunk["error"])[:200])
                head.append(chunk)
                if any(
                    has_content(c.get("delta")) for c in chunk.get("choices") or [] if isinstance(c, dict)
                ):
                    return StreamStart(name, resp, chunks, head, time.perf_counter() - t0)
            await resp.aclose()
            raise BackendFailure(name, "empty", "the stream ended without content")
        except httpx.TimeoutException as e:
            await _close(resp)
            raise BackendFailure(name, "timeout", type(e).__name__) from None
        except httpx.HTTPError as e:
            await _close(resp)
            raise BackendFailure(name, "connection", f"{type(e).__name__}: {str(e)[:200]}") from None
        except BaseException:
            await _close(resp)
            raise


async def _close(resp: httpx.Response | None) -> None:
    if resp is not None:
        with contextlib.suppress(httpx.HTTPError):
            await resp.aclose()


def _check_status(name: str, status: int, text: str) -> None:
    if status < 400:
        return
    if status in RETRYABLE_STATUS or status >= 500:
        raise BackendFailure(name, f"http_{status}", _error_message(text), status)
    raise BackendRejected(name, status, _error_message(text))


async def sse_chunks(lines: AsyncIterator[str]) -> AsyncIterator[dict | None]:
    """Parsed ``data:`` events of an SSE stream; ``None`` for ``[DONE]``; other lines are skipped."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            yield None
            return
        if not data:
            continue
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            yield chunk
