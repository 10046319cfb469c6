"""The proxy over real HTTP: uvicorn on loopback in front of real (constant-time) backends, driven by
the official ``openai`` client and httpx. The llama.cpp pool runs in tests/test_serve_pool.py."""

from __future__ import annotations

import json
import logging
import re

import httpx
import openai
import pytest

from caproute.errors import ConfigError
from caproute.serve.app import create_app
from caproute.serve.auth import append_key
from caproute.serve.calibrate import CalibrationTarget, calibrate_router, write_policy
from caproute.serve.config import BudgetSpec, ServeConfig
from caproute.serve.echo import ANSWER, echo_app
from caproute.serve.testing import (
    TEST_MODELS,
    UvicornThread,
    free_port,
    synthetic_observations,
    train_router,
    write_pool_yaml,
)

NAMES = TEST_MODELS  # a router trained on synthetic data: big (best, dearest), mid, small (cheapest)
USER = [{"role": "user", "content": "what is 2 + 2?"}]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    router = train_router(d / "router")
    backends = {n: UvicornThread(echo_app(n)).start() for n in NAMES}
    failing = UvicornThread(echo_app("big", fail_status=503)).start()
    pool = write_pool_yaml(
        d / "pool.yaml",
        [{"name": n, "base_url": b.base_url + "/v1", "model": n} for n, b in backends.items()],
    )
    # 'big' answers 503, 'mid' refuses connections (nothing listens there), 'small' works
    broken = write_pool_yaml(
        d / "broken.yaml",
        [
            {"name": "big", "base_url": failing.base_url + "/v1", "model": "big"},
            {"name": "mid", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "mid"},
            {"name": "small", "base_url": backends["small"].base_url + "/v1", "model": "small"},
        ],
    )
    yield {"dir": d, "router": router, "pool": pool, "broken": broken}
    for b in [*backends.values(), failing]:
        b.stop()


def serve(env, name="app", **kw):
    cfg = ServeConfig(
        **{
            "routers": {"dars-knn": env["router"]},
            "pool": env["pool"],
            "insecure_local": True,
            "feedback_db": env["dir"] / f"{name}.sqlite3",
            **kw,
        }
    )
    return UvicornThread(create_app(cfg))


@pytest.fixture(scope="module")
def srv(env):
    with serve(env, budgets={"cheap": BudgetSpec(lam=100.0), "quality": BudgetSpec(lam=0.0, beta=0.0)}) as s:
        yield s


def client(srv, key="unused", **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url + "/v1", api_key=key, max_retries=0, **kw)


def test_models(srv):
    ids = [m.id for m in client(srv).models.list().data]
    assert ids == ["caproute/dars-knn", "big", "mid", "small"]


def test_routed_completion_carries_decision(srv):
    raw = client(srv).chat.completions.with_raw_response.create(
        model="caproute/dars-knn", messages=USER, max_tokens=4, temperature=0
    )
    comp = raw.parse()
    meta = comp.model_extra["caproute"]
    assert raw.headers["x-caproute-model"] == comp.model == meta["model"] == meta["decision"]["model"]
    assert comp.choices[0].message.content == ANSWER and comp.id == raw.headers["x-caproute-response-id"]
    d = meta["decision"]
    assert (
        set(d["mu_q"]) == set(d["mu_c"]) == set(d["sigma_q"]) == set(d["utility"]) == {"big", "mid", "small"}
    )
    for m in d["utility"]:  # U = mu_q - lambda mu_c - beta sigma_q, with the router's defaults
        assert d["utility"][m] == pytest.approx(d["mu_q"][m] - 0.05 * d["mu_c"][m] - 0.2 * d["sigma_q"][m])
    assert d["model"] == max(d["utility"], key=d["utility"].get)
    assert meta["policy_version"] == "default:lambda=0.05,beta=0.2" and meta["attempts"] == []
    assert meta["spend_usd"] > 0 and not meta["spend_estimated"]


def test_stream(srv):
    with client(srv).chat.completions.with_streaming_response.create(
        model="caproute/dars-knn", messages=USER, stream=True, max_tokens=4
    ) as resp:
        model = resp.headers["x-caproute-model"]
        chunks = list(resp.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert chunks[0].model_extra["caproute"]["model"] == model == chunks[-1].model
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-cr")


def test_direct_pool_model(srv):
    raw = client(srv).chat.completions.with_raw_response.create(model="mid", messages=USER)
    comp = raw.parse()
    assert raw.headers["x-caproute-model"] == comp.model == "mid"
    assert comp.model_extra["caproute"]["decision"] is None and comp.model_extra["caproute"]["router"] is None


def test_lambda_beta_per_request(srv):
    c = client(srv)

    def decide(model, extra=None):
        comp = c.chat.completions.create(model=model, messages=USER, extra_body=extra)
        return comp.model_extra["caproute"]

    cheap = decide("caproute/dars-knn@cheap")
    assert (cheap["decision"]["lambda"], cheap["params_source"], cheap["decision"]["model"]) == (
        100.0,
        "budget:cheap",
        "small",
    )
    assert decide("caproute/dars-knn:lambda=100,beta=0")["decision"]["model"] == "small"
    suffix = decide("caproute/dars-knn@cheap:lambda=0")
    assert suffix["decision"]["lambda"] == 0 and suffix["params_source"] == "model-suffix"
    body = decide("caproute/dars-knn:lambda=100", {"caproute": {"lambda": 0, "beta": 0.5}})
    assert (body["decision"]["lambda"], body["decision"]["beta"], body["params_source"]) == (
        0,
        0.5,
        "request",
    )
    assert body["decision"]["model"] == "big"
    assert decide("caproute", {"caproute": {"budget": "quality"}})["decision"]["beta"] == 0.0
    with pytest.raises(openai.NotFoundError, match="unknown budget .nope."):
        c.chat.completions.create(model="caproute/dars-knn@nope", messages=USER)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.chat.completions.create(model="gpt-4o", messages=USER)


def test_sticky_conversation(srv):
    c = client(srv)
    first = c.chat.completions.create(
        model="caproute/dars-knn",
        messages=USER,
        extra_body={"caproute": {"conversation_id": "conv-1", "lambda": 0}},
    )
    assert first.model == "big"
    later = c.chat.completions.create(
        model="caproute/dars-knn:lambda=100",
        messages=USER + [{"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3 + 3?"}],
        extra_headers={"x-caproute-conversation-id": "conv-1"},
    )
    assert later.model == "big" and later.model_extra["caproute"]["sticky"]
    assert later.model_extra["caproute"]["decision"]["model"] == "small"  # what it would have picked
    other = c.chat.completions.create(
        model="caproute/dars-knn:lambda=100",
        messages=USER,
        extra_headers={"x-caproute-conversation-id": "conv-2"},
    )
    assert other.model == "small" and not other.model_extra["caproute"]["sticky"]


def test_route_and_feedback(srv):
    r = httpx.post(
        srv.base_url + "/v1/route", json={"input": ["what is 2+2", "prove the theorem"], "lambda": 0}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "caproute.route" and len(body["decisions"]) == 2
    assert all(d["lambda"] == 0 and d["id"].startswith("route-") for d in body["decisions"])
    one = httpx.post(
        srv.base_url + "/v1/route", json={"messages": USER, "model": "caproute/dars-knn@cheap"}
    ).json()
    assert one["decisions"][0]["model"] == "small" and one["params_source"] == "budget:cheap"
    comp = client(srv).chat.completions.create(model="caproute/dars-knn", messages=USER)
    fb = httpx.post(
        srv.base_url + "/v1/feedback", json={"response_id": comp.id, "score": 0.9, "comment": "ok"}
    )
    assert fb.status_code == 200 and fb.json()["stored"] and fb.json()["kind"] == "scalar"
    pair = httpx.post(
        srv.base_url + "/v1/feedback", json={"winner_id": body["decisions"][0]["id"], "loser_id": comp.id}
    )
    assert pair.status_code == 200 and pair.json()["policy_updated"] is False
    missing = httpx.post(
        srv.base_url + "/v1/feedback", json={"winner_id": comp.id, "loser_id": "chatcmpl-nope"}
    )
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "loser_id: unknown response id 'chatcmpl-nope'",
        "type": "not_found_error",
        "param": "loser_id",
        "code": "response_not_found",
    }
    assert httpx.post(srv.base_url + "/v1/route", json={"input": "x", "model": "mid"}).status_code == 400


@pytest.mark.parametrize(
    "content, headers, status, fragment",
    [
        (b'{"model": "caproute", "messages": [', {"content-type": "application/json"}, 400, "JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, 400, "body"),
        (b'{"model": "caproute"}', {"content-type": "application/json"}, 400, "messages"),
        (
            b'{"model": "caproute", "messages": [{"role": "user", "content": 5}]}',
            {"content-type": "application/json"},
            400,
            "messages[0].content",
        ),
        (
            b'{"model": "caproute", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
            {"content-type": "application/json"},
            400,
            "max_tokens",
        ),
        (
            b'{"model": "caproute", "messages": [{"role": "user", "content": "' + b"x" * 70_000 + b'"}]}',
            {"content-type": "application/json"},
            413,
            "larger than 65536 bytes",
        ),
    ],
)
def test_malformed_bodies(env, content, headers, status, fragment):
    with serve(env, "limits", max_body_bytes=65536) as s:
        r = httpx.post(s.base_url + "/v1/chat/completions", content=content, headers=headers)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and fragment in err["message"]
        # chunked upload without Content-Length also hits the limit
        if status == 413:
            r = httpx.post(
                s.base_url + "/v1/chat/completions",
                content=iter([content[:40000], content[40000:]]),
                headers=headers,
            )
            assert r.status_code == 413


def test_unexpected_errors_are_500s_in_the_routes_shape(env, caplog):
    """An exception no handler foresaw: a 500 in the route's API shape, counted, and logged, on the
    fast lane (chat, messages: the gateway answers) as on FastAPI's routes (/v1/models)."""
    srv = serve(env, "internal")
    state = srv.server.config.app.state.caproute
    with srv as s, caplog.at_level(logging.ERROR, logger="caproute.serve"):
        def boom(model):
            raise RuntimeError("boom")

        state.parse_target = boom
        r = httpx.post(s.base_url + "/v1/chat/completions", json={"model": "caproute", "messages": USER})
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error", r.text
        assert r.json()["error"]["message"] == "internal error: RuntimeError"
        r = httpx.post(s.base_url + "/v1/messages", json={"model": "caproute", "max_tokens": 5, "messages": USER})
        assert r.status_code == 500 and r.json()["type"] == "error", r.text
        assert r.json()["error"]["type"] == "api_error"
        state.started = "not a number"  # /v1/models computes int(state.started)
        r = httpx.get(s.base_url + "/v1/models")
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error", r.text
        metrics = httpx.get(s.base_url + "/metrics").text
        assert 'caproute_requests_total{endpoint="/v1/chat/completions",status="500"} 1.0' in metrics
        assert 'caproute_requests_total{endpoint="/v1/messages",status="500"} 1.0' in metrics
    assert sum("internal error on" in r.getMessage() for r in caplog.records) == 3


def test_too_many_messages(env):
    with (
        serve(env, "msgs", max_messages=2) as s,
        pytest.raises(openai.BadRequestError, match="at most 2 messages"),
    ):
        client(s).chat.completions.create(model="caproute", messages=USER * 3)


def test_fallback_on_5xx_and_refused(env):
    with serve(env, "fallback", pool=env["broken"], lam=0.0) as s:
        comp = client(s).chat.completions.create(model="caproute/dars-knn", messages=USER)
        meta = comp.model_extra["caproute"]
        assert meta["decision"]["model"] == "big" and comp.model == "small" and meta["fallback"]
        assert [(a["model"], a["reason"]) for a in meta["attempts"]] == [
            ("big", "http_503"),
            ("mid", "connection"),
        ]
        with client(s).chat.completions.with_streaming_response.create(
            model="caproute/dars-knn", messages=USER, stream=True
        ) as resp:
            chunks = list(resp.parse())
        assert resp.headers["x-caproute-model"] == "small"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
        metrics = httpx.get(s.base_url + "/metrics").text
        assert 'caproute_backend_errors_total{model="big",reason="http_503"} 2.0' in metrics
        assert 'caproute_fallbacks_total{router="dars-knn"} 2.0' in metrics


def test_all_backends_fail_is_an_error_not_an_empty_answer(env):
    with serve(env, "allfail", pool=env["broken"], lam=0.0, max_attempts=2) as s:
        with pytest.raises(openai.APIStatusError) as e:
            client(s).chat.completions.create(model="caproute/dars-knn", messages=USER)
        assert e.value.status_code == 502
        assert "big: http_503" in e.value.message and "mid: connection" in e.value.message
        with pytest.raises(openai.APIStatusError) as e:  # a direct request has no fallback
            client(s).chat.completions.create(model="big", messages=USER, stream=True)
        assert e.value.status_code == 502


def test_api_keys(env):
    keys = env["dir"] / "keys.txt"
    key = append_key(keys, "test")
    with serve(env, "auth", insecure_local=False, keys_file=keys) as s:
        with pytest.raises(openai.AuthenticationError, match="invalid API key"):
            client(s, key="cr-wrong").chat.completions.create(model="caproute", messages=USER)
        r = httpx.post(s.base_url + "/v1/route", json={"input": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(s.base_url + "/metrics").status_code == 401
        assert httpx.get(s.base_url + "/healthz").status_code == 200
        assert client(s, key=key).chat.completions.create(model="caproute", messages=USER).choices
    with pytest.raises(ConfigError, match="no API keys"):
        create_app(
            ServeConfig(routers={"r": env["router"]}, pool=env["pool"], feedback_db=env["dir"] / "x.db")
        )


def test_cors_off_by_default(env, srv):
    pre = {"origin": "https://example.com", "access-control-request-method": "POST"}
    r = httpx.options(srv.base_url + "/v1/chat/completions", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    with serve(env, "cors", cors_origins=["https://example.com"]) as s:
        r = httpx.options(s.base_url + "/v1/chat/completions", headers=pre)
        assert r.headers["access-control-allow-origin"] == "https://example.com"


def test_metrics_and_health(srv):
    c = client(srv)
    c.chat.completions.create(model="caproute/dars-knn", messages=USER)
    health = httpx.get(srv.base_url + "/healthz").json()
    assert health["status"] == "ok" and health["routers"] == ["dars-knn"]
    text = httpx.get(srv.base_url + "/metrics").text
    routed = {
        m: float(v)
        for m, v in re.findall(r'caproute_routed_total\{model="(\w+)",router="dars-knn"\} (\S+)', text)
    }
    shares = {
        m: float(v)
        for m, v in re.findall(r'caproute_routed_share\{model="(\w+)",router="dars-knn"\} (\S+)', text)
    }
    assert routed and sum(shares.values()) == pytest.approx(1.0)
    assert shares == pytest.approx({m: routed.get(m, 0) / sum(routed.values()) for m in shares})
    assert re.search(r'caproute_routing_overhead_seconds_count\{router="dars-knn"\} [1-9]', text)
    assert re.search(r'caproute_spend_usd_total\{model="\w+"\} [0-9.e-]+', text)
    assert 'caproute_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
    assert (
        "caproute_request_latency_seconds_bucket" in text
        and "caproute_backend_latency_seconds_bucket" in text
    )


def test_config_errors_name_the_problem(env, tmp_path):
    other_names = synthetic_observations(models=("alpha", "beta", "gamma"))
    plain = train_router(tmp_path / "plain", other_names)  # models the pool does not have
    with pytest.raises(ConfigError) as e:
        create_app(ServeConfig(routers={"r": plain}, pool=env["pool"], insecure_local=True))
    assert "has no model named ['alpha', 'beta', 'gamma']" in str(e.value) and "model_map" in str(e.value)
    cfg = ServeConfig(
        routers={"r": plain},
        pool=env["pool"],
        insecure_local=True,
        feedback_db=tmp_path / "f.db",
        model_map={"alpha": "big", "beta": "mid", "gamma": "small"},
    )
    with UvicornThread(create_app(cfg)) as s:
        comp = client(s).chat.completions.create(model="caproute/r", messages=USER)
        d = comp.model_extra["caproute"]["decision"]
        assert comp.model == d["model"] in {"big", "mid", "small"}
        assert d["router_model"] in {"alpha", "beta", "gamma"} and set(d["utility"]) == {
            "big",
            "mid",
            "small",
        }
    with pytest.raises(ConfigError, match="pool config not found"):
        create_app(ServeConfig(routers={"r": plain}, pool=tmp_path / "none.yaml", insecure_local=True))


def test_policy_and_drift(env, caplog):
    cal, doc = calibrate_router(
        env["router"],
        CalibrationTarget("share", 0.5, "big"),
        (synthetic_observations(), "synthetic"),
        window=20,
    )
    policy = write_policy(doc, env["dir"] / "policy.json")
    assert 0 < cal.share["big"] <= 0.5 and cal.share["mid"] > 0
    caplog.set_level(logging.WARNING, logger="caproute.serve")
    with serve(env, "policy", policies=[policy]) as s:
        r = httpx.post(s.base_url + "/v1/route", json={"input": "q"}).json()
        assert r["policy_version"] == doc["version"] and r["decisions"][0]["lambda"] == pytest.approx(cal.lam)
        assert (
            httpx.get(s.base_url + "/v1/models").json()["data"][0]["caproute"]["policy_version"]
            == doc["version"]
        )
        c = client(s)
        for _ in range(20):  # one text, so one model, 100 % share: far from the calibrated shares
            c.chat.completions.create(model="caproute/dars-knn", messages=USER)
        text = httpx.get(s.base_url + "/metrics").text
        assert 'caproute_policy_out_of_tolerance{router="dars-knn"} 1.0' in text
        tv = float(
            re.search(r'caproute_policy_drift\{metric="share_tv",router="dars-knn"\} (\S+)', text).group(1)
        )
        assert tv > 0.1
    assert any("drifted from policy" in rec.getMessage() for rec in caplog.records)
    other = train_router(env["dir"] / "other-router", synthetic_observations(seed=1))  # another fingerprint
    with pytest.raises(ConfigError, match="none of the served routers"):
        create_app(
            ServeConfig(routers={"dars-knn": other}, pool=env["pool"], insecure_local=True, policies=[policy])
        )


def test_feedback_is_durable(env):
    db = env["dir"] / "durable.sqlite3"
    with serve(env, "durable") as s:
        ids = [client(s).chat.completions.create(model="caproute", messages=USER).id for _ in range(3)]
        for i in ids:
            assert (
                httpx.post(s.base_url + "/v1/feedback", json={"response_id": i, "score": 1}).status_code
                == 200
            )
    import sqlite3

    con = sqlite3.connect(db)
    rows = con.execute("SELECT response_id, score FROM feedback ORDER BY created").fetchall()
    decisions = con.execute("SELECT decision FROM responses WHERE kind = 'chat'").fetchall()
    con.close()
    assert [r[0] for r in rows] == ids and all(r[1] == 1.0 for r in rows)
    assert all(json.loads(d[0])["model"] in NAMES for d in decisions)


def test_openapi_schema_conformance(srv):
    """schemathesis against the live server's OpenAPI schema on loopback (bounded examples per operation):
    no 5xx, documented status codes and content types, schema-valid requests accepted."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(srv.base_url + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert {(op.method, op.path) for op in ops} >= {
        ("post", "/v1/chat/completions"),
        ("post", "/v1/route"),
        ("post", "/v1/feedback"),
        ("get", "/v1/models"),
    }
    for op in ops:

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case):
            case.call_and_validate()

        check()
