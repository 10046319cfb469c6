"""An async chat client on the official ``openai`` SDK for any OpenAI-compatible endpoint.

What it adds to the SDK (whose own retries are switched off so ours are the only ones):

- retries with exponential backoff and full jitter on 429, 5xx, timeouts and connection errors,
  never sooner than the server's ``Retry-After`` / ``retry-after-ms``;
- fan-out: when a server returns fewer than ``n`` choices (llama.cpp ignores ``n``), the missing
  ones are requested again, each with its own seed;
- per-generation token usage and USD cost from the pool prices; when a server reports no usage the
  tokens are estimated (4 characters per token) and ``cost_known`` is False;
- per-model concurrency (semaphore) and request-rate limits (minimum spacing of request starts).
- a per-request deadline (connect, first byte, total: :class:`caproute.core.http.Deadline`)
  enforced by the same ``httpx`` client construction the proxy uses (:func:`make_client`), so a
  server that trickles bytes cannot hold a request past ``timeout_s``;
- a circuit breaker per endpoint: after ``breaker_failures`` consecutive connection failures
  (refused, reset, closed mid-answer; timeouts do not count) the client sends nothing more to that
  endpoint and every request fails at once with :class:`EndpointDown`, which names it;
- every answer validated before use (:func:`parse_completion`): a string or negative ``usage``, a
  non-string ``content`` or an absurd token count is a :class:`MalformedResponse`, retried like a
  5xx and then reported, never stored or charged.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import time
from dataclasses import dataclass
from typing import Any

from caproute.collect.config import ModelEndpoint
from caproute.errors import CaprouteError

CHARS_PER_TOKEN = 4.0
"""PROPOSED: token estimate used only when a server reports no usage (cost_known = False)."""


MAX_TOKENS_PER_RESPONSE = 10_000_000
"""PROPOSED: more prompt or completion tokens than this in one answer's usage is absurd (no chat
model has a context near it); such an answer is a :class:`MalformedResponse`, never charged."""


class GenerationError(CaprouteError):
    """A request failed after all retries (or with a non-retryable status)."""


class EndpointDown(GenerationError):
    """The endpoint stopped accepting connections: its circuit breaker is open for this run."""

    def __init__(self, endpoint: str, message: str):
        super().__init__(message)
        self.endpoint = endpoint

    def again(self) -> EndpointDown:
        """A fresh exception with the same message (one instance is never raised twice)."""
        return EndpointDown(self.endpoint, str(self))


class MalformedResponse(GenerationError):
    """A 200 answer whose body is not a usable chat completion (``field``: what is wrong where)."""

    def __init__(self, field: str, problem: str, where: str = ""):
        super().__init__(f"{where}malformed response: {field}: {problem}")
        self.field, self.problem = field, problem


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


def _count(value: Any, field: str, *, limit: int = MAX_TOKENS_PER_RESPONSE) -> int:
    """A token count: a non-negative integer (an integral float is accepted) up to ``limit``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedResponse(
            field, f"expected a non-negative integer, got {type(value).__name__} {value!r:.40}"
        )
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise MalformedResponse(field, f"expected a non-negative integer, got {value!r}")
    if value < 0:
        raise MalformedResponse(field, f"negative token count {value!r}")
    if value > limit:
        raise MalformedResponse(field, f"{value:.3g} tokens exceeds the cap of {limit:,} (absurd usage)")
    return int(value)


def parse_usage(usage: Any) -> Usage | None:
    """Validated token usage of one answer; ``None`` when the server reported none (or no counts).

    Raises :class:`MalformedResponse` for a usage that is not an object, counts that are not
    non-negative integers or exceed :data:`MAX_TOKENS_PER_RESPONSE`, or a ``prompt_tokens_details``
    that is neither null nor an object with an integer ``cached_tokens`` <= ``prompt_tokens``.
    """
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise MalformedResponse("usage", f"expected an object, got {type(usage).__name__} {usage!r:.40}")
    pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if pt is None or ct is None:
        return None
    pt, ct = _count(pt, "usage.prompt_tokens"), _count(ct, "usage.completion_tokens")
    details = usage.get("prompt_tokens_details")
    cached = 0
    if details is not None:
        if not isinstance(details, dict):
            raise MalformedResponse(
                "usage.prompt_tokens_details", f"expected an object, got {type(details).__name__}"
            )
        c = details.get("cached_tokens")
        if c is not None:
            cached = _count(c, "usage.prompt_tokens_details.cached_tokens")
            if cached > pt:
                raise MalformedResponse(
                    "usage.prompt_tokens_details.cached_tokens", f"{cached} cached of {pt} prompt tokens"
                )
    return Usage(pt, ct, cached)


def parse_content(value: Any, field: str) -> str | None:
    """A message's ``content``: a string, null, or a list of text parts (joined)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(p, dict) and isinstance(p.get("text", ""), str) for p in value
    ):
        return "".join(p.get("text", "") for p in value)
    raise MalformedResponse(field, f"expected a string, got {type(value).__name__} {value!r:.40}")


def parse_completion(data: Any) -> tuple[list[tuple[str, str | None]], Usage | None]:
    """(text, finish_reason) per choice and the usage of a non-streaming chat completion body."""
    if not isinstance(data, dict):
        raise MalformedResponse("<body>", f"expected a JSON object, got {type(data).__name__}")
    if "error" in data and not data.get("choices"):
        raise MalformedResponse("error", f"error object in a 200 answer: {str(data['error'])[:200]}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse("choices", "missing or empty")
    out = []
    for i, c in enumerate(choices):
        if not isinstance(c, dict):
            raise MalformedResponse(f"choices[{i}]", "expected an object")
        msg = c.get("message")
        if msg is not None and not isinstance(msg, dict):
            raise MalformedResponse(f"choices[{i}].message", "expected an object")
        text = parse_content((msg or {}).get("content"), f"choices[{i}].message.content")
        fr = c.get("finish_reason")
        if fr is not None and not isinstance(fr, str):
            raise MalformedResponse(f"choices[{i}].finish_reason", f"expected a string, got {fr!r:.40}")
        out.append((text or "", fr))
    return out, parse_usage(data.get("usage"))


async def check_reachable(endpoints, timeout_s: float = 3.0) -> None:
    """Fail fast when endpoints cannot be reached at all (TCP connect to each base URL's host).

    Raises :class:`CaprouteError` "no endpoint reachable (is the pool up?)" when none answers, and
    names the unreachable ones when only some do. Cloud endpoints behind HTTPS are checked the same
    way (a TCP connect, no request is sent).
    """
    import httpx

    async def probe(ep) -> str | None:
        url = httpx.URL(ep.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(url.host, port), timeout_s)
        except (OSError, TimeoutError) as e:
            return f"{ep.name} at {ep.base_url} ({type(e).__name__}: {getattr(e, 'strerror', None) or e})"
        w.close()
        return None

    eps = list({ep.name: ep for ep in endpoints}.values())
    bad = [b for b in await asyncio.gather(*(probe(ep) for ep in eps)) if b is not None]
    if not bad:
        return
    if len(bad) == len(eps):
        raise CaprouteError("no endpoint reachable (is the pool up?): " + "; ".join(bad))
    raise CaprouteError("endpoint(s) not reachable (is the pool up?): " + "; ".join(bad))


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost: float
    cost_known: bool
    latency_s: float
    seed: int | None
    attempts: int


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_malformed_retries: int = 1
    """PROPOSED: a malformed 200 is retried once at most (at the first backoff step): it is a
    server bug more often than load, so the long backoff meant for 429/5xx would only waste time."""

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Full-jitter exponential backoff, at least ``retry_after`` seconds when the server asks."""
        cap = min(self.max_delay_s, self.base_delay_s * (2**attempt))
        d = rng.uniform(0.5 * cap, cap)
        if retry_after is not None:
            d = max(d, retry_after)
        return d


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _connection_failure(exc: BaseException) -> bool:
    """True for a failure to connect or a connection lost mid-answer (a dead or restarting server),
    False for timeouts (a slow server is alive) and for every answer that arrived."""
    import openai

    return isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError)


def _retryable(exc: BaseException) -> tuple[bool, float | None]:
    import openai

    if isinstance(exc, MalformedResponse):  # like a 5xx: the next answer may be well-formed
        return True, None
    if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):  # timeout subclasses it
        return True, None
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        ra = parse_retry_after(getattr(exc.response, "headers", None))
        if status == 429 or status >= 500 or status == 408:
            return True, ra
        return False, None
    return False, None


class _RateLimiter:
    """Spaces request starts at least ``60 / requests_per_minute`` seconds apart."""

    def __init__(self, rpm: float | None):
        self.interval = 60.0 / rpm if rpm else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self.interval


def _estimate_tokens(text: str) -> int:
    return int(round(len(text) / CHARS_PER_TOKEN))


class ChatClient:
    """Async chat completions for one pool model. Create inside a running event loop."""

    def __init__(self, endpoint: ModelEndpoint, *, retry: RetryPolicy | None = None, seed: int = 0):
        from openai import AsyncOpenAI

        from caproute.core.http import make_client

        self.endpoint = endpoint
        self.retry = retry or RetryPolicy(max_retries=endpoint.max_retries)
        self._http = make_client(
            lean=False,
            max_connections=max(8, endpoint.max_concurrency),
            default_deadline=endpoint_deadline(endpoint),
        )
        self._sdk = AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key(),
            timeout=endpoint.timeout_s,
            max_retries=0,
            http_client=self._http,
        )
        self._sem = asyncio.Semaphore(endpoint.max_concurrency)
        self._limiter = _RateLimiter(endpoint.requests_per_minute)
        self._rng = random.Random(seed)
        self.retries_done = 0
        self.malformed = 0  # answers rejected by parse_completion (each retried or reported)
        self.connection_failures = 0  # consecutive, over all requests to this endpoint
        self.down: EndpointDown | None = None  # the open circuit breaker, once tripped

    async def aclose(self) -> None:
        await self._sdk.close()
        await self._http.aclose()

    async def _request(
        self,
        messages: list[dict],
        *,
        n: int,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        stop: list[str] | None = None,
    ):
        kwargs = dict(
            model=self.endpoint.model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
        )
        if stop:
            kwargs["stop"] = list(stop)
        if n > 1:
            kwargs["n"] = n
        if seed is not None and self.endpoint.supports_seed:
            kwargs["seed"] = seed
        if self.endpoint.extra_body:
            kwargs["extra_body"] = dict(self.endpoint.extra_body)
        attempt = malformed_seen = 0
        started = time.monotonic()
        budget = self.endpoint.retry_budget_s
        while True:
            await self._limiter.wait()
            t0 = time.monotonic()
            try:
                async with self._sem:
                    if self.down is not None:
                        raise self.down.again()
                    raw = await self._sdk.chat.completions.with_raw_response.create(**kwargs)
                    try:
                        data = json.loads(raw.http_response.content)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        raise MalformedResponse("<body>", "not JSON") from None
                    parsed = parse_completion(data)
                self.connection_failures = 0
                return parsed, time.monotonic() - t0, attempt + 1
            except EndpointDown:
                raise
            except Exception as e:
                self._count_connection(e)
                if self.down is not None:
                    raise self.down.again() from e
                bad = isinstance(e, MalformedResponse)
                if bad:
                    self.malformed += 1
                    malformed_seen += 1
                ok, retry_after = _retryable(e)
                limit = self.retry.max_malformed_retries if bad else self.retry.max_retries
                last = not ok or attempt >= self.retry.max_retries or (bad and malformed_seen > limit)
                wait = 0.0 if last else self.retry.delay(0 if bad else attempt, retry_after, self._rng)
                # with a retry budget, no new try starts after it: give up now
                spent = not last and budget is not None and time.monotonic() - started + wait >= budget
                if last or spent:
                    where = f"model '{self.endpoint.name}' at {self.endpoint.base_url}: "
                    tries = f" (after {attempt + 1} attempt(s)" + (
                        f"; retry_budget_s = {budget:g} spent)" if spent else ")")
                    if isinstance(e, MalformedResponse):
                        raise MalformedResponse(e.field, e.problem + tries, where) from e
                    detail = f"{type(e).__name__}: {e}"
                    cause = str(e.__cause__ or "")
                    if cause and cause not in detail:  # e.g. which deadline passed
                        detail += f" ({cause})"
                    raise GenerationError(f"{where}{detail}{tries}") from e
                self.retries_done += 1
                await asyncio.sleep(wait)
                attempt += 1

    def _count_connection(self, e: BaseException) -> None:
        """Count consecutive connection failures; open the breaker at ``breaker_failures``."""
        if not _connection_failure(e):
            self.connection_failures = 0
            return
        self.connection_failures += 1
        limit = self.endpoint.breaker_failures
        if self.connection_failures >= limit and self.down is None:
            cause = e.__cause__ or e
            self.down = EndpointDown(
                self.endpoint.name,
                f"model '{self.endpoint.name}' at {self.endpoint.base_url} stopped accepting connections "
                f"({limit} consecutive connection failures, last: {type(cause).__name__}: {cause}); "
                "nothing more is sent to it in this run (a local pool server: `caproute pool status` "
                "shows whether its process died, with its exit status and log)",
            )

    def _split_usage(
        self, parsed, messages: list[dict], latency: float, seed: int | None, attempts: int
    ) -> list[Generation]:
        choices, usage = parsed
        texts = [t for t, _ in choices]
        known = usage is not None
        if known:
            in_tok, out_tok, cached = usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
        else:
            in_tok = _estimate_tokens("".join(str(m.get("content", "")) for m in messages))
            out_tok = sum(_estimate_tokens(t) for t in texts)
            cached = 0
        k = max(len(choices), 1)
        # With several choices per request the prompt is shared: split it evenly; split the
        # completion tokens in proportion to each choice's length.
        total_chars = sum(len(t) for t in texts) or 1
        out = []
        for i, ((t, finish), _) in enumerate(zip(choices, texts, strict=True)):
            share = (len(t) / total_chars) if len(choices) > 1 else 1.0
            o = int(round(out_tok * share)) if len(choices) > 1 else out_tok
            inp = in_tok // k + (1 if i < in_tok % k else 0)
            cch = cached // k + (1 if i < cached % k else 0)
            out.append(
                Generation(
                    text=t,
                    finish_reason=finish,
                    input_tokens=inp,
                    output_tokens=o,
                    cached_input_tokens=cch,
                    cost=self.endpoint.cost_usd(inp, o, cch),
                    cost_known=known,
                    latency_s=latency,
                    seed=None if seed is None else seed + i,
                    attempts=attempts,
                )
            )
        return out

    async def generate(
        self,
        messages: list[dict],
        *,
        n: int = 1,
        max_tokens: int = 32,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> list[Generation]:
        """``n`` generations for one prompt (fan-out when the server returns fewer choices).

        Generation ``i`` uses seed ``seed + i``, so a repeated call reproduces the same samples on
        servers that honour seeds.
        """
        results: list[Generation] = []
        ask_n = n if self.endpoint.supports_n else 1
        while len(results) < n:
            s = None if seed is None else seed + len(results)
            want = min(ask_n, n - len(results))
            resp, latency, attempts = await self._request(
                messages,
                n=want,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=s,
                stop=stop,
            )
            got = self._split_usage(resp, messages, latency, s, attempts)
            if not got:
                raise GenerationError(f"model '{self.endpoint.name}': response with no choices")
            results.extend(got[: n - len(results)])
        return results


def endpoint_deadline(ep: ModelEndpoint, default_connect_s: float = 5.0):
    """The :class:`~caproute.core.http.Deadline` of one request to ``ep``: total
    ``timeout_s``; connect ``connect_timeout_s`` (default 5 s) and first byte
    ``first_byte_timeout_s`` (default: the total), both capped by the total."""
    from caproute.core.http import Deadline

    connect = ep.connect_timeout_s if ep.connect_timeout_s is not None else default_connect_s
    first = ep.first_byte_timeout_s
    return Deadline(
        total_s=ep.timeout_s,
        connect_s=min(connect, ep.timeout_s),
        first_byte_s=None if first is None else min(first, ep.timeout_s),
    )
