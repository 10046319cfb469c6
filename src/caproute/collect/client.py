"""An async chat client on the official ``openai`` SDK for any OpenAI-compatible endpoint.

What it adds to the SDK (whose own retries are switched off so ours are the only ones):

- retries with exponential backoff and full jitter on 429, 5xx, timeouts and connection errors,
  never sooner than the server's ``Retry-After`` / ``retry-after-ms``;
- fan-out: when a server returns fewer than ``n`` choices (llama.cpp ignores ``n``), the missing
  ones are requested again, each with its own seed;
- per-generation token usage and USD cost from the pool prices; when a server reports no usage the
  tokens are estimated (4 characters per token) and ``cost_known`` is False;
- per-model concurrency (semaphore) and request-rate limits (minimum spacing of request starts).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass

from caproute.collect.config import ModelEndpoint
from caproute.errors import CaprouteError

CHARS_PER_TOKEN = 4.0
"""PROPOSED: token estimate used only when a server reports no usage (cost_known = False)."""


class GenerationError(CaprouteError):
    """A request failed after all retries (or with a non-retryable status)."""


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


def _retryable(exc: BaseException) -> tuple[bool, float | None]:
    import openai

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

        self.endpoint = endpoint
        self.retry = retry or RetryPolicy()
        self._sdk = AsyncOpenAI(
            base_url=endpoint.base_url, api_key=endpoint.api_key(), timeout=endpoint.timeout_s, max_retries=0
        )
        self._sem = asyncio.Semaphore(endpoint.max_concurrency)
        self._limiter = _RateLimiter(endpoint.requests_per_minute)
        self._rng = random.Random(seed)
        self.retries_done = 0

    async def aclose(self) -> None:
        await self._sdk.close()

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
        attempt = 0
        while True:
            await self._limiter.wait()
            t0 = time.monotonic()
            try:
                async with self._sem:
                    resp = await self._sdk.chat.completions.create(**kwargs)
                return resp, time.monotonic() - t0, attempt + 1
            except Exception as e:
                ok, retry_after = _retryable(e)
                if not ok or attempt >= self.retry.max_retries:
                    raise GenerationError(
                        f"model '{self.endpoint.name}' at {self.endpoint.base_url}: "
                        f"{type(e).__name__}: {e} (after {attempt + 1} attempt(s))"
                    ) from e
                self.retries_done += 1
                await asyncio.sleep(self.retry.delay(attempt, retry_after, self._rng))
                attempt += 1

    def _split_usage(
        self, resp, messages: list[dict], latency: float, seed: int | None, attempts: int
    ) -> list[Generation]:
        choices = list(resp.choices or [])
        texts = [(c.message.content or "") if c.message is not None else "" for c in choices]
        usage = getattr(resp, "usage", None)
        known = usage is not None and usage.prompt_tokens is not None and usage.completion_tokens is not None
        if known:
            in_tok = int(usage.prompt_tokens)
            out_tok = int(usage.completion_tokens)
            details = getattr(usage, "prompt_tokens_details", None)
            cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
        else:
            in_tok = _estimate_tokens("".join(str(m.get("content", "")) for m in messages))
            out_tok = sum(_estimate_tokens(t) for t in texts)
            cached = 0
        k = max(len(choices), 1)
        # With several choices per request the prompt is shared: split it evenly; split the
        # completion tokens in proportion to each choice's length.
        total_chars = sum(len(t) for t in texts) or 1
        out = []
        for i, (c, t) in enumerate(zip(choices, texts, strict=True)):
            share = (len(t) / total_chars) if len(choices) > 1 else 1.0
            o = int(round(out_tok * share)) if len(choices) > 1 else out_tok
            inp = in_tok // k + (1 if i < in_tok % k else 0)
            cch = cached // k + (1 if i < cached % k else 0)
            out.append(
                Generation(
                    text=t,
                    finish_reason=c.finish_reason,
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
