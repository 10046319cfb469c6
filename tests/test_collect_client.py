"""The async client against a real local HTTP server that misbehaves on purpose (429, 500, no usage)."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from _chatstub import ChatStub, Raw, completion
from caproute.collect.client import ChatClient, GenerationError, RetryPolicy, parse_retry_after
from caproute.collect.config import ModelEndpoint


class Script:
    """What the server answers, in order: ("status", code, headers) or ("ok", choices, usage)."""

    def __init__(self, steps, default=("ok", 1, True)):
        self.steps = list(steps)
        self.default = default
        self.requests: list[dict] = []
        self.times: list[float] = []
        self.lock = threading.Lock()

    def next(self, body):
        with self.lock:
            self.requests.append(body)
            self.times.append(time.monotonic())
            return self.steps.pop(0) if self.steps else self.default


def _answer(step, body: dict) -> Raw:
    if step[0] == "status":
        _, code, headers = step
        return Raw(code, {"error": {"message": f"scripted {code}", "type": "x"}}, headers)
    _, n_choices, with_usage = step
    texts = [f"Final Answer: {body.get('seed')}-{i}" for i in range(n_choices)]
    return Raw(200, completion(body["model"], texts, (100, 10 * n_choices) if with_usage else None))


@pytest.fixture
def serve():
    servers = []

    def start(script):
        stub = ChatStub(lambda body: _answer(script.next(body), body))
        servers.append(stub)
        return stub.url

    yield start
    for s in servers:
        s.close()


def endpoint(url, **kw):
    base = dict(
        name="m",
        base_url=url,
        model="m-id",
        api_key_env="",
        price_input_per_1m=1.0,
        price_output_per_1m=2.0,
        timeout_s=5,
    )
    return ModelEndpoint(**(base | kw))


def run(coro_fn):
    async def main():
        return await coro_fn()

    return asyncio.run(main())


FAST = RetryPolicy(max_retries=4, base_delay_s=0.01, max_delay_s=0.05)
MSG = [{"role": "user", "content": "hi"}]


def test_retries_429_then_500_honouring_retry_after(serve):
    script = Script([("status", 429, {"Retry-After": "0.4"}), ("status", 500, {}), ("ok", 1, True)])
    url = serve(script)

    async def go():
        c = ChatClient(endpoint(url), retry=FAST)
        try:
            return await c.generate(MSG, n=1, seed=7), c.retries_done
        finally:
            await c.aclose()

    (g,), retries = run(go)
    assert retries == 2 and g.attempts == 3 and len(script.requests) == 3
    assert script.times[1] - script.times[0] >= 0.4  # waited at least Retry-After
    assert g.text == "Final Answer: 7-0" and g.cost_known
    assert (g.input_tokens, g.output_tokens) == (100, 10)
    assert g.cost == pytest.approx((100 * 1.0 + 10 * 2.0) / 1e6)


def test_gives_up_after_max_retries(serve):
    script = Script([("status", 503, {})] * 10)
    url = serve(script)

    async def go():
        c = ChatClient(endpoint(url), retry=RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.02))
        try:
            await c.generate(MSG)
        finally:
            await c.aclose()

    with pytest.raises(GenerationError, match="after 3 attempt"):
        run(go)
    assert len(script.requests) == 3


def test_client_errors_are_not_retried(serve):
    script = Script([("status", 400, {})] * 3)
    url = serve(script)

    async def go():
        c = ChatClient(endpoint(url), retry=FAST)
        try:
            await c.generate(MSG)
        finally:
            await c.aclose()

    with pytest.raises(GenerationError, match="BadRequestError"):
        run(go)
    assert len(script.requests) == 1


def test_connection_errors_are_retried_then_reported():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def go():
        c = ChatClient(
            endpoint(f"http://127.0.0.1:{port}/v1"),
            retry=RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.02),
        )
        try:
            await c.generate(MSG)
        finally:
            await c.aclose()

    with pytest.raises(GenerationError, match="APIConnectionError.*after 3 attempt"):
        run(go)


def test_fan_out_when_server_ignores_n(serve):
    script = Script([], default=("ok", 1, True))  # like llama.cpp: always one choice
    url = serve(script)

    async def go():
        c = ChatClient(endpoint(url, supports_n=True), retry=FAST)
        try:
            return await c.generate(MSG, n=3, seed=100, temperature=0.7, top_p=0.95, max_tokens=9)
        finally:
            await c.aclose()

    gens = run(go)
    assert [g.text for g in gens] == ["Final Answer: 100-0", "Final Answer: 101-0", "Final Answer: 102-0"]
    assert [r.get("n") for r in script.requests] == [3, 2, None]  # asks for what is still missing
    assert [r["seed"] for r in script.requests] == [100, 101, 102]
    assert script.requests[0]["temperature"] == 0.7 and script.requests[0]["max_tokens"] == 9


def test_several_choices_split_usage(serve):
    script = Script([("ok", 2, True)])
    url = serve(script)

    async def go():
        c = ChatClient(endpoint(url, supports_n=True), retry=FAST)
        try:
            return await c.generate(MSG, n=2, seed=1)
        finally:
            await c.aclose()

    a, b = run(go)
    # 100 prompt tokens shared evenly; 20 completion tokens split by text length (equal here)
    assert (a.input_tokens, b.input_tokens) == (50, 50)
    assert (a.output_tokens, b.output_tokens) == (10, 10)
    assert a.cost + b.cost == pytest.approx((100 * 1 + 20 * 2) / 1e6)


def test_missing_usage_marks_cost_unknown(serve):
    script = Script([("ok", 1, False)])
    url = serve(script)

    async def go():
        c = ChatClient(endpoint(url), retry=FAST)
        try:
            return await c.generate([{"role": "user", "content": "x" * 40}], seed=3)
        finally:
            await c.aclose()

    (g,) = run(go)
    assert not g.cost_known
    assert g.input_tokens == 10  # 40 characters / 4
    assert g.output_tokens == round(len("Final Answer: 3-0") / 4)
    assert g.cost == pytest.approx((10 * 1 + g.output_tokens * 2) / 1e6)


def test_no_seed_sent_when_unsupported(serve):
    script = Script([])
    url = serve(script)

    async def go():
        c = ChatClient(endpoint(url, supports_seed=False), retry=FAST)
        try:
            return await c.generate(MSG, seed=5)
        finally:
            await c.aclose()

    run(go)
    assert "seed" not in script.requests[0]


def test_rate_limit_spaces_requests(serve):
    script = Script([])
    url = serve(script)

    async def go():
        c = ChatClient(endpoint(url, requests_per_minute=300, max_concurrency=4), retry=FAST)  # 0.2 s apart
        try:
            await asyncio.gather(*(c.generate(MSG, seed=i) for i in range(3)))
        finally:
            await c.aclose()

    run(go)
    assert len(script.times) == 3


def test_rate_limiter_spaces_request_starts():
    # The spacing is a property of the request starts (when the limiter lets a request go); the
    # server's arrival times also include connection set-up, which load can delay for the first one.
    from caproute.collect.client import _RateLimiter

    lim = _RateLimiter(300)  # 0.2 s apart
    starts = []

    async def one():
        await lim.wait()
        starts.append(time.monotonic())

    async def go():
        await asyncio.gather(*(one() for _ in range(3)))

    run(go)
    starts.sort()
    assert starts[1] - starts[0] >= 0.2 - 1e-3 and starts[2] - starts[1] >= 0.2 - 1e-3


def test_parse_retry_after():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({}) is None and parse_retry_after(None) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    from email.utils import formatdate

    d = parse_retry_after({"retry-after": formatdate(time.time() + 30, usegmt=True)})
    assert 25 <= d <= 31


def test_backoff_is_exponential_with_jitter_and_capped():
    p = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    rng = random.Random(0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        ds = [p.delay(attempt, None, rng) for _ in range(50)]
        assert all(0.5 * cap <= d <= cap for d in ds)
        assert len(set(ds)) > 1  # jitter
    assert p.delay(0, 5.0, rng) == 5.0  # never sooner than Retry-After
