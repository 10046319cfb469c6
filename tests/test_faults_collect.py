"""The collector's client and runner against a misbehaving backend (tests/faultserver.py).

Every request ends within its deadline (total ``timeout_s``, also for a server that trickles bytes
or sends only ``: ping``), malformed answers are named failures that are never stored or charged,
and a pool that is down fails fast before anything is written."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from caproute.collect.client import ChatClient, GenerationError, MalformedResponse, RetryPolicy
from caproute.collect.config import ModelEndpoint, parse_pool_config
from caproute.collect.queries import load_queries
from caproute.collect.runner import CollectSpec, collect
from caproute.data.store import ObservationStore
from caproute.errors import CaprouteError
from caproute.serve.testing import UvicornThread, free_port

sys.path.insert(0, str(Path(__file__).parent))
from faultserver import ANSWER, FaultServer  # noqa: E402

TIMEOUT_S, SLACK = 1.0, 1.5
ONE_RETRY = RetryPolicy(max_retries=1, base_delay_s=0.01, max_delay_s=0.02)
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def fault():
    f = FaultServer(trickle_s=0.3, slow_s=3.0)
    with UvicornThread(f) as s:
        f.url = s.base_url + "/v1"
        yield f


@pytest.fixture(autouse=True)
def _reset(fault):
    fault.modes.clear()


def endpoint(url, model="m", **kw):
    base = dict(
        name=model,
        base_url=url,
        model=model,
        api_key_env="",
        price_input_per_1m=1.0,
        price_output_per_1m=2.0,
        timeout_s=TIMEOUT_S,
    )
    return ModelEndpoint(**(base | kw))


def generate(ep, retry=ONE_RETRY, elapsed: list | None = None):
    """``ChatClient.generate`` once; ``elapsed`` gets the seconds of the call itself."""

    async def go():
        c = ChatClient(ep, retry=retry)
        t = time.monotonic()
        try:
            return await c.generate(MSG, seed=1), c
        finally:
            if elapsed is not None:
                elapsed.append(time.monotonic() - t)
            await c.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["trickle", "ping", "hang", "slow_first"])
def test_slow_servers_hit_the_total_deadline(fault, mode):
    fault.modes["m"] = mode
    took = []
    with pytest.raises(GenerationError, match="APITimeoutError.*after 2 attempt"):
        generate(endpoint(fault.url), elapsed=took)
    assert took[0] <= 2 * TIMEOUT_S + SLACK
    assert fault.wait_idle(2.0), "a connection stayed open after its deadline"


def test_first_byte_deadline(fault):
    fault.modes["m"] = "slow_first"  # 3 s before the headers
    took = []
    with pytest.raises(GenerationError, match="first byte deadline"):
        generate(endpoint(fault.url, timeout_s=30.0, first_byte_timeout_s=0.5), elapsed=took)
    assert took[0] <= 2 * 0.5 + SLACK


@pytest.mark.parametrize(
    "mode,field",
    [
        ("usage_string", "usage"),
        ("usage_negative", "usage.completion_tokens"),
        ("usage_huge", "usage.completion_tokens"),
        ("usage_details", "usage.prompt_tokens_details"),
        ("content_int", "choices[0].message.content"),
        ("garbage", "<body>"),
        ("error200", "error"),
    ],
)
def test_malformed_answers_are_named_failures(fault, mode, field):
    fault.modes["m"] = mode
    with pytest.raises(MalformedResponse) as e:
        generate(endpoint(fault.url))
    assert e.value.field == field and "after 2 attempt" in str(e.value)


def test_500_is_retried_then_reported(fault):
    fault.modes["m"] = "500"
    with pytest.raises(GenerationError, match="InternalServerError.*after 2 attempt"):
        generate(endpoint(fault.url))


def test_the_pool_sets_retries_and_a_retry_budget(fault):
    fault.modes["m"] = "500"
    # max_retries from the pool file (no RetryPolicy given)
    with pytest.raises(GenerationError, match="after 3 attempt"):
        generate(endpoint(fault.url, max_retries=2), retry=None)
    # a budget smaller than the first backoff (0.25-0.5 s): the first failure is the last try
    with pytest.raises(GenerationError, match=r"after 1 attempt\(s\); retry_budget_s = 0.2 spent"):
        generate(endpoint(fault.url, max_retries=50, retry_budget_s=0.2), retry=None)
    with pytest.raises(ValueError, match="retry_budget_s"):
        endpoint(fault.url, retry_budget_s=0)


def test_good_answer_after_a_malformed_one_is_used(fault):
    fault.modes["m"] = "usage_huge"

    async def go():
        c = ChatClient(endpoint(fault.url), retry=ONE_RETRY)
        try:
            task = asyncio.create_task(c.generate(MSG, seed=1))
            while not fault.requests or fault.requests[-1][1] != "usage_huge":
                await asyncio.sleep(0.005)
            fault.modes["m"] = "ok"
            return await task, c.malformed
        finally:
            await c.aclose()

    fault.requests.clear()
    (g,), malformed = asyncio.run(go())
    assert malformed == 1 and g.text == ANSWER and g.output_tokens == 2 and g.cost < 1e-5


# -- the runner ---------------------------------------------------------------------------------------
def pool_cfg(url: str, models=("a", "b")):
    def m(name):
        return {
            "name": name,
            "base_url": url,
            "model": name,
            "api_key_env": "",
            "price_input_per_1m": 1.0,
            "price_output_per_1m": 2.0,
            "max_concurrency": 2,
            "timeout_s": 5,
        }

    return parse_pool_config(
        {
            "models": [m(n) for n in models],
            "rewriter": {"model": "rw", "endpoint": m("rw"), "max_attempts": 1},
            "tasks": {"t": {"prompt_template": "Q: {question}", "scorer": "numeric", "max_tokens": 5}},
        },
        source="test",
    )


SPEC = dict(
    dataset="d",
    task="t",
    models=("a", "b"),
    rewrites=1,
    decodes=1,
    test_rewrites=1,
    test_decodes=1,
    similarity_check=False,
)


def queries(tmp_path, n=2):
    p = tmp_path / "q.jsonl"
    p.write_text(
        "".join(
            json.dumps(
                {"query_id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1), "split": "train"}
            )
            + "\n"
            for i in range(n)
        )
    )
    return load_queries(p)


def rows(path):
    with ObservationStore(path, read_only=True) as s:
        return s.read(dataset="d")


@pytest.mark.parametrize("mode", ["usage_huge", "usage_string", "content_int"])
def test_collect_counts_malformed_answers_and_charges_nothing(fault, tmp_path, mode):
    fault.modes.update(a=mode, b=mode)  # the rewriter answers well
    q = queries(tmp_path)
    stats, _ = collect(pool_cfg(fault.url), q, tmp_path / "s.duckdb", CollectSpec(**SPEC), progress=False)
    assert stats.done == 0 and stats.errors == 2 * len(q)  # one unit per (query, model)
    assert all("malformed response" in m for m in stats.error_messages)
    assert stats.spend_usd < 1e-3  # the rewriter's few tokens, no 1e30-token bill
    assert len(rows(tmp_path / "s.duckdb")) == 0


def test_collect_against_a_pool_that_is_down_fails_fast(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    t = time.monotonic()
    with pytest.raises(CaprouteError, match=r"no endpoint reachable \(is the pool up\?\)"):
        collect(pool_cfg(url), queries(tmp_path), tmp_path / "s.duckdb", CollectSpec(**SPEC), progress=False)
    assert time.monotonic() - t < 10
