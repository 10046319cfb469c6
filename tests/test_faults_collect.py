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

from caproute.collect.client import ChatClient, EndpointDown, GenerationError, MalformedResponse, RetryPolicy
from caproute.collect.config import ModelEndpoint, parse_pool_config
from caproute.collect.ledger import RunStats, exit_reason, stop_run
from caproute.collect.plan import CollectSpec
from caproute.collect.queries import load_queries
from caproute.collect.runner import collect
from caproute.data.store import ObservationStore
from caproute.errors import CaprouteError
from caproute.serve.testing import UvicornThread, free_port

sys.path.insert(0, str(Path(__file__).parent))
from _chatstub import pool_model  # noqa: E402
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
        return pool_model(name, url, timeout_s=5)

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


# -- endpoints that die during a run (issue 21: circuit breaker, exit status) ----------------------
def vanishing_port() -> int:
    """A port that accepts one connection (the collector's reachability check) and then refuses
    every connection: a server that answered and then died."""
    import socket
    import threading

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()

    def run():
        conn, _ = s.accept()
        conn.close()
        s.close()

    threading.Thread(target=run, daemon=True).start()
    return s.getsockname()[1]


def test_breaker_opens_after_consecutive_connection_failures():
    url = f"http://127.0.0.1:{free_port()}/v1"  # refuses
    ep = endpoint(url, breaker_failures=3)

    async def go():
        c = ChatClient(ep, retry=RetryPolicy(max_retries=50, base_delay_s=0.01, max_delay_s=0.02))
        try:
            with pytest.raises(EndpointDown) as first:
                await c.generate(MSG, seed=1)
            assert c.connection_failures == 3  # not 51 attempts: the breaker stopped the retries
            t = time.monotonic()
            with pytest.raises(EndpointDown) as again:  # nothing is sent any more
                await c.generate(MSG, seed=2)
            assert time.monotonic() - t < 0.5 and c.connection_failures == 3
            return first.value, again.value
        finally:
            await c.aclose()

    first, again = asyncio.run(go())
    assert first.endpoint == "m" and url in str(first) and "3 consecutive connection failures" in str(first)
    assert "pool status" in str(first) and str(again) == str(first)


def test_timeouts_do_not_open_the_breaker(fault):
    fault.modes["m"] = "hang"
    with pytest.raises(GenerationError) as e:
        generate(endpoint(fault.url, breaker_failures=1))
    assert not isinstance(e.value, EndpointDown) and "APITimeoutError" in str(e.value)


def test_a_dead_endpoint_stops_its_work_and_fails_the_run(fault, tmp_path):
    """One model's server dies: its work stops within seconds (named, left for a rerun), the other
    model finishes, the run's exit reason names the dead endpoint; a rerun fills the gap exactly."""
    dead = f"http://127.0.0.1:{vanishing_port()}/v1"
    cfg = pool_cfg(fault.url)
    cfg.models[1] = cfg.models[1].model_copy(update={"base_url": dead})
    q = queries(tmp_path, n=4)
    t = time.monotonic()
    stats, _ = collect(cfg, q, tmp_path / "s.duckdb", CollectSpec(**SPEC), progress=False)
    assert time.monotonic() - t < 60
    assert set(stats.dead_endpoints) == {"b"} and stats.errors == 0
    assert stats.per_model == {"a": 4}
    why = exit_reason(stats)
    assert why is not None and "model 'b'" in why and dead in why and "stopped accepting connections" in why
    # a rerun against a healthy server stores exactly the missing rows
    stats2, _ = collect(pool_cfg(fault.url), q, tmp_path / "s.duckdb", CollectSpec(**SPEC), progress=False)
    assert exit_reason(stats2) is None and stats2.per_model == {"b": 4} and stats2.skipped_existing == 4
    r = rows(tmp_path / "s.duckdb")
    assert len(r) == 8 and not r.duplicated(["query_id", "model", "prompt_variant_id", "decode_id"]).any()


def test_every_endpoint_dead_stops_the_run(fault, tmp_path):
    cfg = pool_cfg(fault.url, models=("a",))  # the rewriter answers
    cfg.models[0] = cfg.models[0].model_copy(update={"base_url": f"http://127.0.0.1:{vanishing_port()}/v1"})
    spec = CollectSpec(**(SPEC | {"models": ("a",)}))
    stats, _ = collect(cfg, queries(tmp_path, n=3), tmp_path / "s.duckdb", spec, progress=False)
    assert stats.stop_kind == "endpoints" and "no model endpoint is left" in stats.stopped
    assert stats.done == 0 and exit_reason(stats).startswith("stopped: no model endpoint is left")


def test_exit_reason_rules():
    assert exit_reason(RunStats(total=4, done=4)) is None
    s = RunStats(total=4, done=2)
    stop_run(s, "budget", "adaptive budget of 0.5 x the full grid reached")
    assert exit_reason(s) is None  # the user's own budget: exit 0
    s = RunStats(total=4, errors=4, error_messages=["model 'a' at u: InternalServerError"])
    assert "4 request(s) failed (0 of 4" in exit_reason(s) and "InternalServerError" in exit_reason(s)
    s = RunStats(total=4, done=3)
    stop_run(s, "errors", "50 errors (--max-errors)")
    stop_run(s, "budget", "later reasons do not replace the first")
    assert exit_reason(s) == "stopped: 50 errors (--max-errors)"
