"""caproute as a LiteLLM routing plugin (issue 27, item 1), against LiteLLM itself.

- In process: LiteLLM's ``Router(plugins=[plugin])`` in front of three local echo backends; the
  plugin narrows the candidates to the router's decision (the same as ``RoutingPipeline.decide``),
  walks caproute's fallback order when the chosen backend fails (LiteLLM's retries), takes
  per-request lambda from the request's metadata, and records the decision in the signals, the
  answer, the feedback store and the request log, from which ``caproute feedback export`` makes
  observations and a replay log: the routing record is the proxy's (candidates, the drawn model, its
  propensity), so ``caproute replay`` of the served router reproduces its own logged choices, with
  and without the plugin's ``explore=EPS``.
- Through LiteLLM's proxy (``litellm --config`` with ``router_settings.plugins``, a subprocess on a
  free port) when a proxy-capable LiteLLM is found; otherwise that test skips and says why.

LiteLLM is an optional extra (``caproute[litellm]``, part of ``all``); without it the module skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

litellm = pytest.importorskip("litellm", reason="LiteLLM is not installed (pip install 'caproute[litellm]')")

from caproute.errors import ConfigError  # noqa: E402
from caproute.integrations.litellm import CaprouteRoutingPlugin  # noqa: E402
from caproute.serve.echo import ANSWER, echo_app  # noqa: E402
from caproute.serve.testing import TEST_MODELS, UvicornThread, free_port, train_router  # noqa: E402

#: the LiteLLM release series these tests ran against (the extra allows >= 1.94, < 1.111)
TESTED_LITELLM = "1.110"
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")   # no network fetch of LiteLLM's price map
TEXT = "question 3: topic3word1 topic3word7 filler12"


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory):
    return train_router(tmp_path_factory.mktemp("litellm") / "router")


def _model_list(servers: dict) -> list[dict]:
    return [{"model_name": "caproute",
             "litellm_params": {"model": f"openai/{name}", "api_base": srv.base_url + "/v1", "api_key": "x"}}
            for name, srv in servers.items()]


@contextlib.contextmanager
def _litellm_router(plugin: CaprouteRoutingPlugin, servers: dict, **router_kw):
    """LiteLLM's Router over the echo servers with the plugin as routing plugin and callback; on exit
    the plugin leaves LiteLLM's callback lists (LiteLLM copies it there) and is closed (its records
    flushed), and the servers stop."""
    from litellm import Router

    saved = list(litellm.callbacks)
    try:
        for s in servers.values():
            s.start()
        litellm.callbacks = [plugin]
        yield Router(model_list=_model_list(servers), plugins=[plugin], **router_kw)
    finally:
        litellm.callbacks = saved
        litellm.logging_callback_manager.remove_callback_from_all_lists(plugin)
        plugin.close()
        for s in servers.values():
            s.stop()


def _wait_logged(plugin: CaprouteRoutingPlugin, n: int, timeout_s: float = 10.0) -> None:
    """Until LiteLLM's success callbacks (run after the answer) have logged ``n`` requests."""
    deadline = time.monotonic() + timeout_s
    while plugin.request_log.written < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_litellm_version_is_the_tested_one():
    version = importlib.metadata.version("litellm")
    assert version.startswith(TESTED_LITELLM + "."), (
        f"LiteLLM {version} is installed; these tests pin {TESTED_LITELLM}.x. Run them against the new "
        "release, then update TESTED_LITELLM, the extra's bound in pyproject.toml and docs/integrations.md")
    from litellm.types.router import RoutingContext, RoutingPlugin

    assert isinstance(CaprouteRoutingPlugin.__new__(CaprouteRoutingPlugin), RoutingPlugin)
    assert set(RoutingContext.model_fields) >= {"candidate_models", "signals", "metadata", "structured_messages"}


def test_candidates_by_name_suffix_and_model_map(router_dir):
    p = CaprouteRoutingPlugin(router_dir)
    assert p.candidates_for(["openai/big", "hosted_vllm/mid", "small", "openai/other"]) == {
        "big": "openai/big", "mid": "hosted_vllm/mid", "small": "small"}
    assert p.candidates_for(["openai/gpt-x"]) == {}
    q = CaprouteRoutingPlugin(router_dir, model_map={"big": "openai/gpt-x"})
    assert q.candidates_for(["openai/gpt-x", "openai/big"]) == {"big": "openai/gpt-x"}
    # LiteLLM registers one callback per key: two plugins in one process must not collide
    key = litellm.logging_callback_manager._get_custom_logger_key
    assert key(p) != key(q)
    with pytest.raises(ConfigError, match="model_map names"):
        CaprouteRoutingPlugin(router_dir, model_map={"nope": "openai/x"})
    with pytest.raises(ConfigError, match="exactly one"):
        CaprouteRoutingPlugin()
    with pytest.raises(ConfigError, match="epsilon must be in"):
        CaprouteRoutingPlugin(router_dir, explore=1.5)
    with pytest.raises(ConfigError, match="explore= samples from a router"):
        CaprouteRoutingPlugin(duel_policy=router_dir, explore=0.1)


def test_run_narrows_then_walks_the_fallback_order(router_dir):
    """Hand-driven: the first run decides; each retry (previous signals in the metadata) takes the next model."""
    from litellm.types.router import RoutingContext

    from caproute.routers.pipeline import RoutingPipeline
    from caproute.serve.routing import fallback_order

    p = CaprouteRoutingPlugin(router_dir, max_attempts=2)
    d = RoutingPipeline.load(router_dir).decide([TEXT])[0]
    expected = fallback_order(d.utility, d.mu_c, d.model, list(TEST_MODELS))
    cands = ["openai/small", "openai/big", "openai/mid", "openai/unknown"]
    metadata: dict = {}
    seen = []
    for _ in range(3):
        ctx = RoutingContext(raw_messages=[{"role": "user", "content": TEXT}],
                             structured_messages=[{"role": "user", "content": TEXT}],
                             candidate_models=list(cands), metadata=metadata)
        ctx = asyncio.run(p.run(ctx))
        sig = ctx.signals["caproute"]
        seen.append((ctx.candidate_models, sig["model"], sig["attempt"]))
        metadata = {"routing_plugin_signals": ctx.signals}   # what LiteLLM hands a retry
    assert seen[0] == ([f"openai/{expected[0]}"], expected[0], 0)
    assert seen[1] == ([f"openai/{expected[1]}"], expected[1], 1)
    assert seen[2] == seen[1]                               # max_attempts = 2: the last one repeats
    assert sig["models"] == expected[:2] and sig["decided_model"] == d.model
    assert sig["mu_q"] == pytest.approx(d.mu_q[d.model]) and sig["mu_c"] == pytest.approx(d.mu_c[d.model])
    assert sig["sigma_q"] == pytest.approx(d.sigma_q[d.model])
    assert sig["policy_version"] == "default:lambda=0.05,beta=0.2"
    # a model group with none of caproute's models is left alone
    ctx = RoutingContext(raw_messages=[], structured_messages=[], candidate_models=["openai/x", "openai/y"])
    assert asyncio.run(p.run(ctx)).candidate_models == ["openai/x", "openai/y"]


def test_request_lambda_is_validated(router_dir):
    from litellm.types.router import RoutingContext

    p = CaprouteRoutingPlugin(router_dir)
    ctx = RoutingContext(raw_messages=[], structured_messages=[{"role": "user", "content": TEXT}],
                         candidate_models=["openai/big", "openai/mid", "openai/small"],
                         metadata={"caproute": {"lambda": -1}})
    with pytest.raises(ValueError, match="metadata.caproute.lambda"):
        asyncio.run(p.run(ctx))


def test_router_in_process_fallback_feedback_and_export(router_dir, tmp_path):
    """LiteLLM's Router over real echo backends: the decision, a fallback, per-request lambda,
    the request log and feedback store, and `caproute feedback export` of the traffic."""
    from caproute.routers.pipeline import RoutingPipeline
    from caproute.serve.feedback_export import export_feedback
    from caproute.serve.log_store import read_requests

    pipe = RoutingPipeline.load(router_dir)
    best = pipe.decide([TEXT], lam=0.0)[0]
    cheap = pipe.decide([TEXT], lam=100.0)[0]
    assert best.model != cheap.model
    servers = {m: UvicornThread(echo_app(m, fail_status=500 if m == best.model else None)) for m in TEST_MODELS}
    plugin = CaprouteRoutingPlugin(router_dir, lam=0.0, feedback_db=tmp_path / "fb.sqlite3",
                                   log_store=tmp_path / "log.sqlite3")
    with _litellm_router(plugin, servers, num_retries=2, retry_after=0) as router:
        async def calls():
            msgs = [{"role": "user", "content": TEXT}]
            a = await router.acompletion(model="caproute", messages=msgs)
            b = await router.acompletion(model="caproute", messages=msgs, metadata={"caproute": {"lambda": 100}})
            chunks = [c async for c in await router.acompletion(
                model="caproute", messages=msgs, stream=True, metadata={"caproute": {"lambda": 100}})]
            return a, b, chunks

        a, b, chunks = asyncio.run(calls())
        # the best model failed (500): LiteLLM's retry took caproute's second choice
        assert a.caproute["decided_model"] == best.model and a.caproute["attempt"] == 1
        assert a.caproute["model"] == a.caproute["models"][1] and a.choices[0].message.content == ANSWER
        assert a.caproute["policy_version"] == "plugin:lambda=0,beta=0.2"
        assert b.caproute["model"] == cheap.model and b.caproute["attempt"] == 0
        assert b.caproute["params_source"] == "request" and b.caproute["lambda"] == 100.0
        stamped = [c.caproute for c in chunks if getattr(c, "caproute", None)]   # once, on a chunk the hook sees
        assert len(stamped) == 1 and stamped[0]["model"] == cheap.model
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER
        assert plugin.feedback(b.caproute["response_id"], 1.0).responses[0]["model"] == cheap.model
        plugin.feedback(a.caproute["response_id"], 0.0)
        _wait_logged(plugin, 3)
    logged = read_requests(tmp_path / "log.sqlite3").set_index("response_id")
    assert logged.loc[a.caproute["response_id"], "model"] == a.caproute["model"]
    assert logged.loc[b.caproute["response_id"], "answer"] == ANSWER
    assert json.loads(logged.loc[b.caproute["response_id"], "messages"]) == [{"role": "user", "content": TEXT}]
    # the proxy's routing record: the candidates caproute chose among, the drawn model, propensity 1
    rec = logged.loc[b.caproute["response_id"]]
    assert json.loads(rec["candidates"]) == list(pipe.models) and rec["chosen"] == cheap.model
    assert rec["propensity"] == 1.0 and b.caproute["propensity"] == 1.0 and "explored" not in b.caproute
    assert json.loads(rec["propensities"]) == {m: float(m == cheap.model) for m in pipe.models}
    assert (rec["lam"], rec["beta"], rec["lam_t"]) == (100.0, 0.2, 0.0) and rec["routing_text"] == TEXT
    assert rec["policy_version"] == "request:lambda=100,beta=0.2" and rec["explore"] is None
    from caproute.serve.calibrate import directory_fingerprint

    assert rec["router_version"] == directory_fingerprint(router_dir)
    # the fallback: logged with the model that answered, beside the drawn one; the replay log skips it
    fell = logged.loc[a.caproute["response_id"]]
    assert fell["chosen"] == best.model != fell["model"]
    rep = export_feedback(tmp_path / "fb.sqlite3", log_store=tmp_path / "log.sqlite3",
                          observations=tmp_path / "obs.parquet", replay_log=tmp_path / "replay.jsonl")
    assert rep.observations == 2 and rep.skipped_not_logged == 0
    assert rep.replay_rows == 1 and rep.replay_skipped == {"not_routed": 0, "no_routing_record": 0,
                                                          "fallback": 1, "no_feedback": 1}
    import pandas as pd

    obs = pd.read_parquet(tmp_path / "obs.parquet").set_index("model")
    assert obs.loc[cheap.model, "score"] == 1.0 and obs.loc[a.caproute["model"], "score"] == 0.0


def _proxy_command() -> list[str] | None:
    """A ``litellm`` proxy executable whose interpreter has the proxy's dependencies: $CAPROUTE_LITELLM_PROXY,
    the repository's .venv-litellm (``make litellm-proxy``), or this interpreter's own."""
    root = Path(__file__).resolve().parents[1]
    for exe in (os.environ.get("CAPROUTE_LITELLM_PROXY"), root / ".venv-litellm" / "bin" / "litellm",
                Path(sys.executable).parent / "litellm", shutil.which("litellm")):
        if not exe or not Path(exe).is_file():
            continue
        py = Path(exe).parent / "python"
        ok = subprocess.run([str(py), "-c", "import websockets, backoff, apscheduler, orjson, litellm.proxy"],
                            capture_output=True, timeout=120).returncode == 0
        if ok:
            return [str(exe)]
    return None


def test_proxy_with_yaml_config(router_dir, tmp_path):
    """``litellm --config`` with ``router_settings.plugins`` and ``litellm_settings.callbacks``."""
    cmd = _proxy_command()
    if cmd is None:
        pytest.skip("no LiteLLM proxy installed (its extra pulls litellm-proxy; `make litellm-proxy` "
                    "builds .venv-litellm, or set CAPROUTE_LITELLM_PROXY=/path/to/litellm)")
    import httpx

    servers = {m: UvicornThread(echo_app(m)) for m in TEST_MODELS}
    (tmp_path / "caproute_plugin.py").write_text(
        "from caproute.integrations.litellm import CaprouteRoutingPlugin\n"
        f"plugin = CaprouteRoutingPlugin({str(router_dir)!r}, log_store={str(tmp_path / 'log.sqlite3')!r},\n"
        f"                               feedback_db={str(tmp_path / 'fb.sqlite3')!r})\n")
    port, key = free_port(), "sk-caproute-test-0123456789abcdef"
    proc = None
    try:
        for s in servers.values():
            s.start()
        lines = ["model_list:"] + [
            f"  - {{model_name: caproute, litellm_params: {{model: openai/{m}, api_base: '{s.base_url}/v1', "
            "api_key: x}}" for m, s in servers.items()]
        lines += ["router_settings:", "  plugins: [caproute_plugin.plugin]",
                  "litellm_settings:", "  callbacks: [caproute_plugin.plugin]"]
        (tmp_path / "config.yaml").write_text("\n".join(lines) + "\n")
        # the proxy's interpreter finds caproute and its dependencies the way this one does
        env = {**os.environ, "LITELLM_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.Popen([*cmd, "--config", "config.yaml", "--port", str(port), "--host", "127.0.0.1"],
                                cwd=tmp_path, env=env, stdout=open(tmp_path / "proxy.log", "w"),  # noqa: SIM115
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"LiteLLM proxy did not start:\n{(tmp_path / 'proxy.log').read_text()[-3000:]}")
            time.sleep(1)
        import openai

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key)
        raw = client.chat.completions.with_raw_response.create(
            model="caproute", messages=[{"role": "user", "content": TEXT}])
        resp = raw.parse()
        from caproute.routers.pipeline import RoutingPipeline

        d = RoutingPipeline.load(router_dir).decide([TEXT])[0]
        body = resp.model_extra["caproute"]
        assert body["model"] == d.model == raw.headers["x-caproute-model"]
        assert raw.headers["x-litellm-model-name"] == f"openai/{d.model}"
        assert raw.headers["x-caproute-response-id"] == body["response_id"]
        assert resp.choices[0].message.content == ANSWER
        rid = body["response_id"]
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for s in servers.values():
            s.stop()
    from caproute.serve.log_store import read_requests

    logged = read_requests(tmp_path / "log.sqlite3")
    assert rid in set(logged["response_id"])


def test_request_lambda_t_from_metadata(router_dir, tmp_path):
    """Per-request lambda_t in ``metadata.caproute`` as lambda/beta. Hand-checked: latencies constant
    per model (big 3 s, mid 0.1 s, small 2 s) are what the latency model predicts, so at lambda = beta
    = 0 and lambda_t = 100 U is at least mu_q - 10 for 'mid' and at most 1 - 200 for the others; a
    router without a latency model refuses lambda_t > 0 by name; a negative lambda_t is named."""
    from litellm.types.router import RoutingContext

    from caproute.serve.testing import synthetic_observations

    obs = synthetic_observations()
    obs["latency_s"] = obs["model"].map({"big": 3.0, "mid": 0.1, "small": 2.0})
    p = CaprouteRoutingPlugin(train_router(tmp_path / "lat", obs))
    cands = ["openai/big", "openai/mid", "openai/small"]

    def run(plugin, params):
        ctx = RoutingContext(raw_messages=[], structured_messages=[{"role": "user", "content": TEXT}],
                             candidate_models=list(cands), metadata={"caproute": params})
        return asyncio.run(plugin.run(ctx)).signals["caproute"]

    fast = run(p, {"lambda": 0, "beta": 0, "lambda_t": 100})
    assert (fast["decided_model"], fast["lambda_t"]) == ("mid", 100.0)
    assert fast["policy_version"] == "request:lambda=0,beta=0,lambda_t=100"
    plain = run(p, {"lambda": 0, "beta": 0})
    assert plain["lambda_t"] == 0.0 and plain["policy_version"] == "request:lambda=0,beta=0"
    assert plain["decided_model"] != "mid"   # without the latency term another model wins: the test can fail
    with pytest.raises(ConfigError, match="lambda_t = 0.5 needs predicted latencies"):
        run(CaprouteRoutingPlugin(router_dir), {"lambda_t": 0.5})
    with pytest.raises(ValueError, match="metadata.caproute.lambda_t"):
        run(p, {"lambda_t": -1})


QUESTIONS = [f"question {q}: topic{q % 5}word1 topic{q % 5}word7 filler{q}" for q in range(12)]


@pytest.mark.parametrize("eps", [0.0, 0.6])
def test_litellm_traffic_exports_to_a_replay_log_and_replays(router_dir, tmp_path, eps):
    """LiteLLM-served traffic -> feedback -> ``feedback export --replay-log`` -> ``replay_log``. The
    served router replays to its own logged choices: without exploration every row supports only the
    drawn model and IPS is the logged mean; with ``explore=0.6`` (epsilon, 3 models) the logged
    propensities are 1 - 0.6 + 0.6/3 = 0.6 for the router's choice and 0.2 for the others, and IPS is
    Σ r/p over the rows where the draw was the router's choice, divided by n (hand-computed below)."""
    from caproute.evaluate.replay import replay_log
    from caproute.evaluate.replay_log import read_request_log
    from caproute.routers.pipeline import RoutingPipeline
    from caproute.serve.feedback_export import export_feedback

    pipe = RoutingPipeline.load(router_dir)
    decided = {q: d.model for q, d in zip(QUESTIONS, pipe.decide(QUESTIONS), strict=True)}
    servers = {m: UvicornThread(echo_app(m)) for m in TEST_MODELS}
    plugin = CaprouteRoutingPlugin(router_dir, feedback_db=tmp_path / "fb.sqlite3", log_store=tmp_path / "log.sqlite3",
                                   explore=eps, explore_seed=3)
    score = {"big": 1.0, "mid": 0.75, "small": 0.25}     # the user's rating of each model's answer
    with _litellm_router(plugin, servers, num_retries=0) as router:
        async def calls():
            return [await router.acompletion(model="caproute", messages=[{"role": "user", "content": q}])
                    for q in QUESTIONS]

        answers = asyncio.run(calls())
        for ans in answers:
            plugin.feedback(ans.caproute["response_id"], score[ans.caproute["model"]])
        _wait_logged(plugin, len(QUESTIONS))
    drawn = [a.caproute["model"] for a in answers]
    explored = [m != decided[q] for q, m in zip(QUESTIONS, drawn, strict=True)]
    assert any(explored) == (eps > 0)   # seed 3 explores at least once: the exploring branch is tested
    for q, m, a in zip(QUESTIONS, drawn, answers, strict=True):
        assert a.caproute["propensity"] == pytest.approx((0.6 if m == decided[q] else 0.2) if eps else 1.0)
    out = tmp_path / "replay.jsonl"
    rep = export_feedback(tmp_path / "fb.sqlite3", log_store=tmp_path / "log.sqlite3", replay_log=out)
    assert rep.replay_rows == len(QUESTIONS) and rep.replay_explored == (eps > 0), rep.replay_skipped
    rows = {r["request_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    for q, a in zip(QUESTIONS, answers, strict=True):
        r = rows[a.caproute["response_id"]]
        assert (r["query"], r["chosen"], r["reward"]) == (q, a.caproute["model"], score[a.caproute["model"]])
        assert r["candidates"] == list(pipe.models) and (r["lambda"], r["beta"]) == (pipe.lam, pipe.beta)
        expect = {m: (0.6 if m == decided[q] else 0.2) if eps else float(m == decided[q]) for m in pipe.models}
        assert r["propensities"] == pytest.approx(expect) and r["propensity"] == pytest.approx(expect[r["chosen"]])
        assert r["explore"] == ({"eps": eps, "mode": "epsilon", "temperature": None} if eps else None)

    log = read_request_log(out)
    assert log.support.all() if eps else (log.support.sum(axis=1) == 1).all()
    res = replay_log(log, {"served": pipe}, n_boot=20)
    assert res.refused == {}    # it agrees with its own log on every request
    ips = res.rows.set_index("estimator").loc["ips", "value"]
    rewards = [score[m] for m in drawn]
    if eps:
        hand = sum(r / 0.6 for r, x in zip(rewards, explored, strict=True) if not x) / len(QUESTIONS)
    else:
        hand = sum(rewards) / len(QUESTIONS)
    assert ips == pytest.approx(hand)
