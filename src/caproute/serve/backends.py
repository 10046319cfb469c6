"""Calls to the pool's OpenAI-compatible backends over one shared ``httpx.AsyncClient``.

Failure classes decide what the proxy does next:

- :class:`BackendFailure` (retryable): a deadline passed (connect, first byte or total, see
  :class:`~caproute.core.http.Deadline`), refused/broken connection, HTTP 5xx or 429, a
  200 whose body is not a valid chat completion (not JSON, an error object, content that is not a
  string, usage that is a string, negative or absurd: ``bad_response``), or an answer with no
  content at all. The router falls back to the next model by predicted utility.
- :class:`BackendRejected` (not retried): any other 4xx, e.g. a prompt too long for the model; the
  client gets the backend's status and message in OpenAI's error shape.

Each pool model admits at most its ``max_concurrency`` requests at once (streams hold their slot
until they end); the others wait in a FIFO queue, inside their request's deadline.

Backend API keys are read from the environment variables named in the pool YAML when the app
starts, kept in request headers only, and never logged or echoed in errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from caproute.collect.config import ModelEndpoint, PoolConfig
from caproute.data.text import SurrogateCarry, clean_json, decode_text
from caproute.serve import jsonwire

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
    """An open stream whose first content chunk has arrived (the point of no fallback).

    ``aclose()`` closes the backend connection (if the stream did not end) and frees the model's
    concurrency slot; call it exactly when the client's stream ends, however it ends."""

    model: str
    response: httpx.Response
    chunks: AsyncIterator[dict | None]  # the rest of the stream (see :func:`sse_chunks`)
    head: list[dict]  # parsed chunks up to and including the first one with content
    first_byte_s: float
    release: Callable[[], None] = field(default=lambda: None, repr=False)
    _closed: bool = field(default=False, repr=False)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await _close(self.response)
        finally:
            self.release()


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
        concurrency_divisor: int = 1,
        max_response_bytes: int | None = None,
    ):
        self.pool, self.lean, self.max_response_bytes = pool, lean_transport, max_response_bytes
        self.endpoints: dict[str, ModelEndpoint] = {m.name: m for m in pool.models}
        # resolved here, not at startup: a missing API-key variable is a named ConfigError when the
        # app is built (before the banner), not a traceback from the server's lifespan
        self._headers: dict[str, dict[str, str]] = {}
        for name, ep in self.endpoints.items():
            headers = {"content-type": "application/json"}
            if ep.api_key_env:
                headers["authorization"] = f"Bearer {ep.api_key()}"  # ConfigError names the model and variable
            self._headers[name] = headers
        self._max_connections, self._connect_timeout = max_connections, connect_timeout_s
        # with several worker processes each admits its share of max_concurrency (at least 1)
        self.limits = {
            n: max(1, -(-ep.max_concurrency // max(1, concurrency_divisor)))
            for n, ep in self.endpoints.items()
        }
        self._slots: dict[str, asyncio.Semaphore] = {}
        self.waiting: dict[str, int] = dict.fromkeys(self.endpoints, 0)
        self.active: dict[str, int] = dict.fromkeys(self.endpoints, 0)
        self.sender = None  # caproute.core.http.DirectSender, opened by start()
        self._urls: dict[str, httpx.URL] = {}
        self._wire_headers: dict[str, httpx.Headers] = {}
        self._targets: dict = {}  # name -> caproute.core.http.Target (the non-streaming POST)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.endpoints)

    async def start(self) -> None:
        from caproute.core.http import DirectSender, make_mounts

        self._slots = {n: asyncio.Semaphore(k) for n, k in self.limits.items()}
        cap = {} if self.max_response_bytes is None else {"max_response_bytes": self.max_response_bytes}
        self.sender = DirectSender(make_mounts(lean=self.lean, max_connections=self._max_connections, **cap))
        # parsed once: every request to a model reuses its URL and header block
        self._urls = {n: httpx.URL(f"{ep.base_url}/chat/completions") for n, ep in self.endpoints.items()}
        self._wire_headers = {n: self.sender.headers(h) for n, h in self._headers.items()}
        self._targets = {n: self.sender.target(self._urls[n], self._wire_headers[n]) for n in self.endpoints}

    async def aclose(self) -> None:
        if self.sender is not None:
            await self.sender.aclose()
            self.sender = None

    def deadline(self, name: str, not_after: float | None = None):
        """The :class:`~caproute.core.http.Deadline` of one attempt on ``name``: the
        endpoint's (total ``timeout_s``, connect, first byte), ending no later than ``not_after``."""
        from caproute.collect.client import endpoint_deadline

        return endpoint_deadline(self.endpoints[name], self._connect_timeout).bound(not_after)

    def payload(self, name: str, body: dict[str, Any]) -> bytes:
        ep = self.endpoints[name]
        out = {**ep.extra_body, **body, "model": ep.model}
        return jsonwire.dumps(out)

    def _request(self, name: str, body: dict[str, Any], not_after: float | None) -> httpx.Request:
        from caproute.core.http import DEADLINE_EXTENSION

        return self.sender.request(
            "POST",
            self._urls[name],
            content=self.payload(name, body),
            headers=self._wire_headers[name],
            extensions={DEADLINE_EXTENSION: self.deadline(name, not_after)},
        )

    async def _acquire(self, name: str, not_after: float | None) -> Callable[[], None]:
        """Wait for a free slot of ``name`` (FIFO) until ``not_after``; returns its release."""
        sem = self._slots[name]
        self.waiting[name] += 1
        try:
            if not_after is None or not sem.locked():
                await sem.acquire()  # a free slot is taken at once: no timer to arm and cancel
            else:
                left = min(not_after - time.monotonic(), self.endpoints[name].timeout_s)
                try:
                    async with asyncio.timeout(max(left, 0.0)):
                        await sem.acquire()
                except TimeoutError:
                    raise BackendFailure(
                        name,
                        "timeout",
                        f"queued {left:.3g} s behind {self.limits[name]} running request(s) "
                        "(max_concurrency) without a free slot",
                    ) from None
        finally:
            self.waiting[name] -= 1
        self.active[name] += 1
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self.active[name] -= 1
                sem.release()

        return release

    async def complete(
        self, name: str, body: dict[str, Any], not_after: float | None = None
    ) -> tuple[dict, float]:
        """Non-streaming chat completion: (parsed and validated body, seconds)."""
        from caproute.collect.client import MalformedResponse, parse_completion

        release = await self._acquire(name, not_after)
        t0 = time.perf_counter()
        try:
            try:
                status, content = await self.sender.post(
                    self._targets[name], self.payload(name, body), self.deadline(name, not_after)
                )
            except httpx.HTTPError as e:
                raise transport_failure(name, e) from None
        finally:
            release()
        elapsed = time.perf_counter() - t0
        text = decode_text(content)  # the one text rule: invalid UTF-8 and lone surrogates -> U+FFFD
        _check_status(name, status, text)
        try:
            data = jsonwire.loads(text)
            if "\\u" in text:  # only a \u escape can put a lone surrogate into decoded (clean) text
                data = clean_json(data)
        except json.JSONDecodeError:
            raise BackendFailure(name, "bad_response", "body is not JSON") from None
        try:
            choices, _ = parse_completion(data)
        except MalformedResponse as e:
            raise BackendFailure(name, "bad_response", f"{e.field}: {e.problem}") from None
        if not any(t for t, _ in choices) and not any(has_content(c.get("message")) for c in data["choices"]):
            raise BackendFailure(name, "empty", "the model returned no content")
        return data, elapsed

    async def open_stream(
        self, name: str, body: dict[str, Any], not_after: float | None = None
    ) -> StreamStart:
        """Open a streaming completion and read up to the first chunk with content.

        Until then any failure (including a stream that ends empty, or one that only sends
        ``: ping`` comments until its deadline) is retryable; the caller commits to this model
        only once this returns, and must ``aclose()`` the returned stream.
        """
        release = await self._acquire(name, not_after)
        t0 = time.perf_counter()
        resp = None
        try:
            resp = await self.sender.send(self._request(name, body, not_after), stream=True)
            if resp.status_code >= 400:
                text = decode_text(await resp.aread())
                await resp.aclose()
                _check_status(name, resp.status_code, text)
            chunks = sse_chunks(resp.aiter_lines())
            head: list[dict] = []
            async for chunk in chunks:
                if chunk is None:  # [DONE] before any content
                    break
                problem = chunk_problem(chunk)
                if problem is not None:
                    raise BackendFailure(name, problem[0], problem[1])
                head.append(chunk)
                if any(
                    has_content(c.get("delta")) for c in chunk.get("choices") or [] if isinstance(c, dict)
                ):
                    return StreamStart(name, resp, chunks, head, time.perf_counter() - t0, release)
            await resp.aclose()
            raise BackendFailure(name, "empty", "the stream ended without content")
        except httpx.HTTPError as e:
            await _close(resp)
            release()
            raise transport_failure(name, e) from None
        except BaseException:
            await _close(resp)
            release()
            raise


def transport_failure(name: str, e: httpx.HTTPError) -> BackendFailure:
    """The retryable failure of an HTTP error: ``timeout``, ``too_large`` (above
    ``max_response_bytes``), ``bad_http`` (malformed HTTP) or ``connection``."""
    from caproute.core.http import ResponseTooLarge

    if isinstance(e, httpx.TimeoutException):
        return BackendFailure(name, "timeout", str(e) or type(e).__name__)
    reason = ("too_large" if isinstance(e, ResponseTooLarge) else
              "bad_http" if isinstance(e, httpx.RemoteProtocolError) else "connection")
    return BackendFailure(name, reason, f"{type(e).__name__}: {str(e)[:200]}")


def chunk_problem(chunk: dict) -> tuple[str, str] | None:
    """(reason, detail) when a stream chunk cannot be forwarded: an error event, choices that are
    not a list of objects, or delta content that is not a string. ``None`` when it is fine."""
    if "error" in chunk and "choices" not in chunk:
        return "stream_error", str(chunk["error"])[:200]
    choices = chunk.get("choices")
    if choices is None:
        return None
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        return "bad_response", "choices: expected a list of objects"
    for i, c in enumerate(choices):
        delta = c.get("delta")
        if delta is None:
            continue
        if not isinstance(delta, dict):
            return "bad_response", f"choices[{i}].delta: expected an object"
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            return (
                "bad_response",
                f"choices[{i}].delta.content: expected a string, got {type(content).__name__}",
            )
    return None


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
    """Parsed ``data:`` events of an SSE stream; ``None`` for ``[DONE]``; other lines are skipped.

    Text follows caproute's one rule (:mod:`caproute.data.text`): a surrogate pair that the backend
    split across two chunks (an emoji cut between tokens) is joined, a lone surrogate becomes U+FFFD
    (a high surrogate left at ``[DONE]`` comes as one last chunk with U+FFFD).
    """
    carry: dict[int, SurrogateCarry] = {}
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            held = [(i, c.flush()) for i, c in carry.items()]
            if any(t for _, t in held):
                yield {"choices": [{"index": i, "delta": {"content": t}, "finish_reason": None}
                                   for i, t in held if t]}
            yield None
            return
        if not data:
            continue
        try:
            chunk = jsonwire.loads(data)
        except json.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            yield _repair_chunk(chunk, carry)


def _text_choices(chunk: dict) -> list[dict]:
    """The choices of ``chunk`` whose delta content is a string."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return []
    return [c for c in choices
            if isinstance(c, dict) and isinstance(c.get("delta"), dict) and isinstance(c["delta"].get("content"), str)]


def _repair_chunk(chunk: dict, carry: dict[int, SurrogateCarry]) -> dict:
    """``chunk`` under the text rule, each choice's content delta through its :class:`SurrogateCarry`."""
    raw = [(c.get("index"), c["delta"]["content"]) for c in _text_choices(chunk)]
    out = clean_json(chunk)
    for c, (index, text) in zip(_text_choices(out), raw, strict=True):
        c["delta"]["content"] = carry.setdefault(index if isinstance(index, int) else 0, SurrogateCarry()).push(text)
    return out
