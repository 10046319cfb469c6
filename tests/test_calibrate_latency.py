"""A latency budget in calibration (PROPOSED latency term, issue 27 item 4): lambda_t fitted so the
routed mean latency meets the budget; hand-computed, then ``caproute calibrate --latency-budget-ms``
end to end and the policy served (its lambda_t in the decision and the policy version)."""

from __future__ import annotations

import json

import numpy as np
import openai
import pytest
from typer.testing import CliRunner

from caproute.cli import app
from caproute.data.formats import write_observations
from caproute.data.validate import canonicalize
from caproute.errors import ConfigError
from caproute.serve.calibrate import CalibrationError, CalibrationTarget, fit_lambda, load_policy
from caproute.serve.testing import TEST_MODELS, synthetic_observations, train_router

# Two queries, models (strong, weak), beta = 0, lambda = 0: base U = mu_q. Predicted latency 2 s
# (strong) and 0.5 s (weak). The strong model wins query 1 while 0.9 - 2 t > 0.5 - 0.5 t, i.e.
# lambda_t < 0.4 / 1.5 = 0.2667, and query 2 while lambda_t < 0.1 / 1.5 = 0.0667. Mean latency:
# both strong 2.0 s, split 1.25 s, both weak 0.5 s. Grid: 0, 0.0333, 0.1667 (midpoint), 0.5333.
MU_Q = np.array([[0.9, 0.5], [0.8, 0.7]])
MU_C = np.array([[1.0, 0.0], [1.0, 0.0]])
SIG = np.zeros((2, 2))
USD = np.array([[10.0, 1.0], [10.0, 1.0]])
LAT = np.array([[2.0, 0.5], [2.0, 0.5]])
MODELS = ("strong", "weak")


def fit(budget_s, lam=0.0, latency=None, mu_latency=LAT):
    return fit_lambda(CalibrationTarget("latency", budget_s), MODELS, MU_Q, MU_C, SIG, 0.0, USD, MU_Q,
                      lam=lam, mu_latency=mu_latency, latency=latency)


def test_latency_budget_by_hand():
    cal = fit(1.5)
    assert cal.lam_t == pytest.approx((0.1 / 1.5 + 0.4 / 1.5) / 2) and cal.lam == 0.0
    assert cal.mean_latency == pytest.approx(1.25) and cal.share == pytest.approx({"strong": 0.5, "weak": 0.5})
    assert cal.mean_cost == pytest.approx(5.5) and cal.target_value() == pytest.approx(1.25)
    assert cal.sweep.lambda_ts == pytest.approx([0.0, 0.1 / 3, 0.5 / 3, 0.8 / 1.5])
    assert fit(3.0).lam_t == 0.0                      # lambda_t = 0 already meets it
    assert fit(0.5).lam_t == pytest.approx(0.8 / 1.5)  # only all-weak does
    with pytest.raises(CalibrationError, match=r"below the fastest routing on this sample \(0.5 s"):
        fit(0.4)
    with pytest.raises(CalibrationError, match="needs predicted latencies"):
        fit(1.0, mu_latency=None)


def test_latency_budget_at_a_fixed_lambda():
    """lambda = 0.25: base U, query 1: strong 0.65 vs weak 0.5; query 2: strong 0.55 vs weak 0.7
    (weak already). lambda_t = 0 routes split: mean latency 1.25 meets 1.5."""
    cal = fit(1.5, lam=0.25)
    assert (cal.lam, cal.lam_t) == (0.25, 0.0) and cal.mean_latency == pytest.approx(1.25)
    # the only breakpoint is query 1's (0.65 - 0.5) / 1.5 = 0.1: all weak above it
    assert fit(1.0, lam=0.25).lam_t == pytest.approx(0.2)


def test_observed_latency_decides_predicted_is_the_drift_reference():
    """Observed latencies 1.0 / 0.2 s: split routing averages 0.6 s, which meets 0.7 s (the predicted
    1.25 s would not); drift is measured against the predicted mean of the choices (1.25 s)."""
    obs_lat = np.array([[1.0, 0.2], [1.0, 0.2]])
    cal = fit(0.7, latency=obs_lat)
    assert cal.lam_t == pytest.approx(0.5 / 3) and cal.mean_latency == pytest.approx(0.6)
    assert cal.pred_latency == pytest.approx(1.25) and cal.target_value() == pytest.approx(1.25)


LATENCY = {"big": 3.0, "mid": 0.1, "small": 2.0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cal-latency")
    obs = synthetic_observations()
    obs["latency_s"] = obs["model"].map(LATENCY)
    write_observations(canonicalize(obs, source="synthetic"), d / "obs.parquet", "parquet")
    return train_router(d / "router", obs), d / "obs.parquet", d


def test_calibrate_latency_budget_cli_and_serve(setup, tmp_path):
    """Observed mean latency per query: all big 3 s, all mid 0.1 s. A 1,000 ms budget at lambda 0
    needs lambda_t > 0; the policy loads, and served it routes with its lambda_t."""
    router, data, d = setup
    out = tmp_path / "latency.json"
    r = CliRunner().invoke(app, ["calibrate", "--router", str(router), "--data", str(data), "--split", "test",
                                 "--latency-budget-ms", "1000", "--lambda", "0", "--out", str(out),
                                 "--png", str(tmp_path / "sweep.png")])
    assert r.exit_code == 0, r.output
    pol = load_policy(out)
    assert pol.target.kind == "latency" and pol.target.value == 1.0 and pol.lam == 0.0 and pol.lam_t > 0
    exp = pol.expected
    assert exp["mean_latency_s"] <= 1.0 and pol.sample["latency"] == "observed"
    assert f"lambda_t = {pol.lam_t:.6g}" in r.output and "mean latency" in r.output
    assert json.loads(out.read_text())["format_version"] == 2
    # the same budget needs no latency weight when it is loose
    loose = tmp_path / "loose.json"
    r = CliRunner().invoke(app, ["calibrate", "--router", str(router), "--data", str(data), "--split", "test",
                                 "--latency-budget-ms", "5000", "--out", str(loose)])
    assert r.exit_code == 0, r.output
    assert load_policy(loose).lam_t == 0.0
    bad = CliRunner().invoke(app, ["calibrate", "--router", str(router), "--data", str(data),
                                   "--target-cost", "1", "--lambda", "0", "--out", str(tmp_path / "x.json")])
    assert isinstance(bad.exception, ConfigError) and "--lambda is the cost weight kept fixed" in str(bad.exception)
    assert not (tmp_path / "x.json").exists()

    from caproute.serve.app import create_app
    from caproute.serve.config import ServeConfig
    from caproute.serve.echo import echo_app
    from caproute.serve.testing import UvicornThread, write_pool_yaml

    backends = {n: UvicornThread(echo_app(n)).start() for n in TEST_MODELS}
    try:
        pool = write_pool_yaml(d / "pool.yaml", [{"name": n, "base_url": b.base_url + "/v1", "model": n}
                                                 for n, b in backends.items()])
        cfg = ServeConfig(routers={"r": router}, pool=pool, policies=[out], insecure_local=True,
                          feedback_db=tmp_path / "fb.sqlite3")
        with UvicornThread(create_app(cfg)) as srv:
            c = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0)
            raw = c.chat.completions.with_raw_response.create(
                model="caproute/r", messages=[{"role": "user", "content": "what is 2 + 2?"}])
            meta = raw.parse().model_extra["caproute"]
            assert meta["params_source"] == "policy" and raw.headers["x-caproute-policy-version"] == pol.version
            assert meta["decision"]["lambda_t"] == pytest.approx(pol.lam_t) and "mu_latency" in meta["decision"]
    finally:
        for b in backends.values():
            b.stop()


def test_litellm_plugin_applies_a_latency_policy(setup, tmp_path):
    """The LiteLLM plugin's chooser routes with the policy's lambda_t (not only its lambda/beta)."""
    import asyncio
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")   # no network fetch of LiteLLM's price map
    pytest.importorskip("litellm")

    from caproute.integrations.litellm import _RouterChooser

    router, data, _ = setup
    out = tmp_path / "latency.json"
    r = CliRunner().invoke(app, ["calibrate", "--router", str(router), "--data", str(data), "--split", "test",
                                 "--latency-budget-ms", "1000", "--lambda", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    pol = load_policy(out)
    chooser = _RouterChooser(router, "r", out, None, None)
    choice = asyncio.run(chooser.choose("what is 2 + 2?", {}))
    assert choice.params_source == "policy" and choice.policy_version == pol.version
    assert pol.lam_t > 0 and choice.decision["lambda_t"] == pytest.approx(pol.lam_t)
    assert "mu_latency" in choice.decision
