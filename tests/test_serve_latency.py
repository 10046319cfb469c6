"""Per-request lambda_t (the PROPOSED latency weight, issue 27 item 4) through the proxy over real
HTTP, as lambda and beta: the request body's ``caproute`` object, the model suffix, a named budget,
the server default (``--lambda-t``), /v1/route, and the anthropic client. The router is trained on
synthetic observations whose latencies are constant per model (big 3 s, mid 0.1 s, small 2 s), so
its latency model predicts exactly those (ridge weights 0) and lambda_t = 100 must pick 'mid': its
U is at least mu_q - 10 while the others' are at most 1 - 200."""

from __future__ import annotations

import json
import sqlite3

import httpx
import openai
import pytest

from caproute.errors import ConfigError
from caproute.serve.app import create_app
from caproute.serve.config import BudgetSpec, ServeConfig
from caproute.serve.echo import echo_app
from caproute.serve.testing import (
    TEST_MODELS,
    UvicornThread,
    synthetic_observations,
    train_router,
    write_pool_yaml,
)

LATENCY = {"big": 3.0, "mid": 0.1, "small": 2.0}
USER = [{"role": "user", "content": "what is 2 + 2?"}]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve-latency")
    obs = synthetic_observations()
    obs["latency_s"] = obs["model"].map(LATENCY)
    routers = {"r": train_router(d / "router", obs), "old": train_router(d / "nolat")}
    backends = {n: UvicornThread(echo_app(n)).start() for n in TEST_MODELS}
    pool = write_pool_yaml(d / "pool.yaml", [{"name": n, "base_url": b.base_url + "/v1", "model": n}
                                             for n, b in backends.items()])
    yield {"dir": d, "routers": routers, "pool": pool}
    for b in backends.values():
        b.stop()


def serve(env, name, **kw):
    cfg = ServeConfig(**{"routers": env["routers"], "pool": env["pool"], "insecure_local": True,
                         "feedback_db": env["dir"] / f"{name}.sqlite3", **kw})
    return UvicornThread(create_app(cfg))


@pytest.fixture(scope="module")
def srv(env):
    with serve(env, "app", budgets={"fast": BudgetSpec(lam_t=100.0)}) as s:
        yield s


def chat(srv, model, extra=None):
    c = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model=model, messages=USER, extra_body=extra)
    return raw.headers, raw.parse().model_extra["caproute"]


def test_lambda_t_in_the_request_body_picks_the_fastest(srv):
    headers, meta = chat(srv, "caproute/r", {"caproute": {"lambda": 0, "beta": 0, "lambda_t": 100}})
    d = meta["decision"]
    assert d["model"] == "mid" and headers["x-caproute-model"] == "mid"
    assert d["lambda_t"] == 100 and meta["params_source"] == "request"
    assert headers["x-caproute-policy-version"] == meta["policy_version"] == "request:lambda=0,beta=0,lambda_t=100"
    assert d["mu_latency"] == pytest.approx(LATENCY, abs=1e-6)
    for m in TEST_MODELS:   # U = mu_q - 0 mu_c - 100 mu_latency - 0 sigma_q
        assert d["utility"][m] == pytest.approx(d["mu_q"][m] - 100 * d["mu_latency"][m])
    # without lambda_t: the paper's U, no latency in the decision, the version string unchanged
    headers, meta = chat(srv, "caproute/r", {"caproute": {"lambda": 0, "beta": 0}})
    assert meta["decision"]["lambda_t"] == 0 and "mu_latency" not in meta["decision"]
    assert meta["policy_version"] == "request:lambda=0,beta=0"
    assert meta["decision"]["model"] == max(meta["decision"]["mu_q"], key=meta["decision"]["mu_q"].get)


def test_lambda_t_by_suffix_budget_and_route(srv):
    _, meta = chat(srv, "caproute/r:lambda_t=100")
    assert (meta["decision"]["model"], meta["params_source"], meta["decision"]["lambda_t"]) == ("mid", "model-suffix", 100)
    _, meta = chat(srv, "caproute/r@fast")
    assert (meta["decision"]["model"], meta["params_source"]) == ("mid", "budget:fast")
    r = httpx.post(srv.base_url + "/v1/route", json={"model": "caproute/r", "input": ["a", "b"], "lambda_t": 100})
    assert r.status_code == 200, r.text
    assert [d["model"] for d in r.json()["decisions"]] == ["mid", "mid"]
    assert r.json()["decisions"][0]["lambda_t"] == 100
    with pytest.raises(openai.BadRequestError, match="lambda=<x>, beta=<x> or lambda_t=<x>"):
        chat(srv, "caproute/r:latency=1")
    with pytest.raises(openai.BadRequestError, match=r"caproute.lambda_t: Input should be greater than or equal to 0"):
        chat(srv, "caproute/r", {"caproute": {"lambda_t": -1}})


def test_router_without_latencies_refuses_lambda_t(srv, env):
    """A router trained without latency_s routes as before; lambda_t > 0 is a 409 (the router conflicts with the request) that says why,
    and a server-wide --lambda-t with such a router fails at start."""
    _, meta = chat(srv, "caproute/old")
    assert meta["decision"]["lambda_t"] == 0
    with pytest.raises(openai.ConflictError, match="router .old..*needs predicted latencies"):
        chat(srv, "caproute/old", {"caproute": {"lambda_t": 0.5}})
    with pytest.raises(ConfigError, match="needs predicted latencies"):
        create_app(ServeConfig(routers=env["routers"], pool=env["pool"], insecure_local=True, lam_t=0.5,
                               feedback_db=env["dir"] / "bad.sqlite3"))


def test_server_default_lambda_t(env):
    with serve(env, "default", routers={"r": env["routers"]["r"]}, lam_t=100.0, lam=0.0, beta=0.0) as s:
        headers, meta = chat(s, "caproute/r")
        assert meta["decision"]["model"] == "mid" and meta["params_source"] == "default"
        assert headers["x-caproute-policy-version"] == "default:lambda=0,beta=0,lambda_t=100"
        # a request's lambda_t = 0 turns the latency term off again
        _, meta = chat(s, "caproute/r", {"caproute": {"lambda_t": 0}})
        assert meta["decision"]["lambda_t"] == 0 and meta["policy_version"] == "request:lambda=0,beta=0"


def test_lambda_t_through_the_anthropic_client(srv):
    anthropic = pytest.importorskip("anthropic")
    c = anthropic.Anthropic(base_url=srv.base_url, api_key="unused", max_retries=0, timeout=30)
    raw = c.messages.with_raw_response.create(model="caproute/r", max_tokens=8, messages=USER,
                                              extra_body={"caproute": {"lambda_t": 100}})
    assert raw.headers["x-caproute-model"] == "mid"
    assert raw.parse().model_extra["caproute"]["decision"]["lambda_t"] == 100


def test_config_lambda_t_and_flags_win(tmp_path):
    """``lambda_t:`` in the serve YAML, in a budget, and the flags --lambda/--lambda-t winning over
    the file's ``lambda:``/``lambda_t:`` (a flag and the same field in the file used to clash)."""
    from caproute.serve.config import load_serve_config

    f = tmp_path / "serve.yaml"
    f.write_text("routers: {r: r}\npool: pool.yaml\nlambda: 0.2\nlambda_t: 0.1\nbudgets: {fast: {lambda_t: 5}}\n")
    c = load_serve_config(f)
    assert (c.lam, c.lam_t, c.budgets["fast"].lam_t) == (0.2, 0.1, 5.0)
    c = load_serve_config(f, lam=0.5, lam_t=0.3)
    assert (c.lam, c.lam_t) == (0.5, 0.3)
    f.write_text("routers: {r: r}\npool: pool.yaml\nlambda_t: -1\n")
    with pytest.raises(ConfigError, match="field 'lambda_t': Input should be greater than or equal to 0"):
        load_serve_config(f)


def test_serve_flag_lambda_t_is_checked():
    from typer.testing import CliRunner

    from caproute.cli import app

    r = CliRunner().invoke(app, ["serve", "--router", "r", "--pool", "p.yaml", "--lambda-t", "-1"])
    assert r.exit_code == 2 and "--lambda-t" in r.output


def test_lambda_t_is_logged_exported_and_replayed(env, tmp_path):
    """The request log keeps the lambda_t each routed request was decided at, ``feedback export
    --replay-log`` writes it, and replay decides every candidate at it. Hand-checked: at lambda = beta
    = 0, lambda_t = 100 the server picks 'mid' (see the module docstring), at lambda_t = 0 the model of
    highest mu_q ('mid' is not it, checked below); there is no exploration (propensity 1), so a
    candidate decided at lambda_t = 0 on the first row would leave the log's support. 'old' has no
    latency model: refused by name, as the server refuses it."""
    from caproute.evaluate.replay import candidate_policy, load_candidates, replay_log
    from caproute.evaluate.replay_log import read_request_log
    from caproute.serve.feedback_export import export_feedback

    log_path = tmp_path / "requests.sqlite3"
    with serve(env, "logged", log_store=log_path) as s:
        _, fast = chat(s, "caproute/r", {"caproute": {"lambda": 0, "beta": 0, "lambda_t": 100}})
        _, plain = chat(s, "caproute/r", {"caproute": {"lambda": 0, "beta": 0}})
        for m in (fast, plain):
            r = httpx.post(s.base_url + "/v1/feedback", json={"response_id": m["response_id"], "score": 1,
                                                               "scale": "thumbs"})
            assert r.status_code == 200, r.text
    assert fast["model"] == "mid" and plain["model"] != "mid"
    con = sqlite3.connect(log_path)
    logged = dict(con.execute("SELECT response_id, lam_t FROM requests").fetchall())
    con.close()
    assert logged == {fast["response_id"]: 100.0, plain["response_id"]: 0.0}

    out = tmp_path / "replay.jsonl"
    export_feedback(env["dir"] / "logged.sqlite3", log_store=log_path, replay_log=out)
    rows = {r["request_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert {k: (r["lambda"], r["beta"], r["lambda_t"], r["chosen"]) for k, r in rows.items()} == {
        fast["response_id"]: (0.0, 0.0, 100.0, "mid"), plain["response_id"]: (0.0, 0.0, 0.0, plain["model"])}

    log = read_request_log(out)
    cands = load_candidates([env["routers"]["r"], env["routers"]["old"]])
    pi, _, _ = candidate_policy(cands["router"], log)
    chose = [log.models[j] for j in pi[:, :-1].argmax(axis=1)]
    assert chose == [rows[i]["chosen"] for i in log.request_ids]  # 'mid' where the log says lambda_t = 100
    res = replay_log(log, {"nolat": cands["nolat"]}, n_boot=10)
    assert list(res.refused) == ["nolat"] and "lambda_t = 100 needs predicted latencies" in res.refused["nolat"]
    assert sorted(g["lambda_t"] for g in res.meta["decided_at"]["nolat"]) == [0.0, 100.0]
