"""Routers predict latency (the PROPOSED latency term, issue 27 item 4): the supervision carries
mu_latency, the pipeline's latency model predicts it, decide(lam_t) weighs it; hand-computed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from caproute.errors import ConfigError
from caproute.routers.latency import LatencyModel, fit_ridge
from caproute.routers.pipeline import PIPELINE_FILE, RoutingPipeline, train_pipeline
from caproute.supervise.ablations import build_supervision

COLUMNS = ["dataset", "split", "query_id", "model", "prompt_variant_id", "decode_id", "observation_type",
           "score", "cost", "question", "latency_s"]
# two models, every query alike: 'slow' (quality 0.9, cost 2e-3 USD, 5 s), 'fast' (0.6, 1e-3 USD, 0.5 s)
SPEC = {"slow": (0.9, 2e-3, 5.0), "fast": (0.6, 1e-3, 0.5)}


def two_models(n_queries: int = 12, latency: bool = True) -> pd.DataFrame:
    rows = []
    for q in range(n_queries):
        for name, (score, cost, lat) in SPEC.items():
            for d in range(2):   # two decodes with the same score: sigma_q = 0
                rows.append(("lat", "train" if q < 10 else "test", f"q{q}", name, -1, d, "decoding_variation",
                             score, cost, f"question number {q} about topic {q % 3}", lat))
    obs = pd.DataFrame(rows, columns=COLUMNS)
    return obs if latency else obs.drop(columns="latency_s")


def test_ridge_by_hand():
    # X = [[1], [0]], y = [3, 1], alpha 1: b = 2, centred y = [1, -1];
    # w = (X'X + 1)^-1 X'y = (1 + 1)^-1 * 1 = 0.5
    w, b = fit_ridge(np.array([[1.0], [0.0]]), np.array([3.0, 1.0]), 1.0)
    assert b == 2.0 and w == pytest.approx([0.5], abs=1e-9)
    m = LatencyModel(alpha=1.0).fit(np.array([[1.0], [0.0]]), np.array([[3.0], [1.0]]), ("a",))
    # x = 1: 2.5; x = 0: 2.0; x = 10: 2 + 5 = 7, clipped to the training range [1, 3]
    np.testing.assert_allclose(m.predict(np.array([[1.0], [0.0], [10.0]])), [[2.5], [2.0], [3.0]], atol=1e-9)


def test_latency_model_skips_unknown_pairs_and_round_trips(tmp_path):
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    lat = np.array([[1.0, np.nan], [1.0, 4.0], [1.0, 4.0]])   # model b: unknown on row 0
    m = LatencyModel().fit(X, lat, ("a", "b"))
    # constant targets per model: w = 0, the prediction is each model's mean everywhere
    np.testing.assert_allclose(m.predict(X), [[1.0, 4.0]] * 3, atol=1e-12)
    back = LatencyModel.load(m.save(tmp_path / "lat"))
    np.testing.assert_allclose(back.predict(X), m.predict(X), atol=1e-6)
    with pytest.raises(ValueError, match=r"models \['b'\] have no observation with a latency"):
        LatencyModel().fit(X, np.array([[1.0, np.nan]] * 3), ("a", "b"))


def test_supervision_carries_mu_latency():
    obs = two_models()
    obs.loc[(obs["query_id"] == "q0") & (obs["model"] == "fast") & (obs["decode_id"] == 1), "latency_s"] = 1.5
    sup = build_supervision(obs[obs["split"] == "train"])
    assert sup.models == ("fast", "slow")
    assert sup.mu_latency[0].tolist() == [1.0, 5.0]           # (0.5 + 1.5) / 2 and 5
    assert sup.mu_latency[1:].tolist() == [[0.5, 5.0]] * 9
    assert sup.subset(np.array([1, 0])).mu_latency[1].tolist() == [1.0, 5.0]
    assert build_supervision(two_models(latency=False)).mu_latency is None


def test_fastest_model_wins_when_lambda_t_is_large(tmp_path):
    """kNN on identical statistics predicts them exactly; cost min-max: slow 1, fast 0; sigma 0.
    lambda 0.05: U(slow) = 0.9 - 0.05 - 5 lambda_t, U(fast) = 0.6 - 0.5 lambda_t: slow wins below
    lambda_t = 0.25 / 4.5 = 0.0556, fast above."""
    p = train_pipeline(two_models(), router="knn")
    assert p.has_latency
    text = ["question number 11 about topic 2"]
    d0 = p.decide(text)[0]
    assert d0.model == "slow" and d0.lam_t == 0.0 and d0.mu_latency is None
    assert d0.utility == pytest.approx({"slow": 0.85, "fast": 0.6})
    assert "mu_latency" not in d0.to_dict() and d0.to_dict()["lambda_t"] == 0.0
    assert p.decide(text, lam_t=0.05)[0].model == "slow"
    d = p.decide(text, lam_t=0.1)[0]
    assert d.model == "fast" and d.lam_t == 0.1
    assert d.mu_latency == pytest.approx({"slow": 5.0, "fast": 0.5})
    assert d.utility == pytest.approx({"slow": 0.35, "fast": 0.55})
    assert d.to_dict()["mu_latency"] == pytest.approx({"slow": 5.0, "fast": 0.5})
    pred = p.predict_stats(text)
    np.testing.assert_allclose(pred.mu_latency, [[0.5, 5.0]])
    # saved and loaded: the same decisions
    back = RoutingPipeline.load(p.save(tmp_path / "r"))
    assert back.has_latency and back.decide(text, lam_t=0.1)[0].to_dict() == d.to_dict()
    with pytest.raises(ConfigError, match="lambda_t must be a finite number >= 0"):
        p.decide(text, lam_t=-1.0)


def test_without_latencies_lambda_t_is_a_clear_error(tmp_path):
    p = train_pipeline(two_models(latency=False), router="knn")
    assert not p.has_latency and p.decide(["q"], lam_t=0.0)[0].model == "slow"
    with pytest.raises(ConfigError, match="needs predicted latencies"):
        p.decide(["q"], lam_t=0.1)
    # a model with no known latency at all (e.g. imported feedback): trained, without a latency model
    obs = two_models()
    obs.loc[obs["model"] == "fast", "latency_s"] = np.nan
    p = train_pipeline(obs, router="knn")
    assert not p.has_latency and p.decide(["q"])[0].model == "slow"


def test_format_1_pipeline_loads_without_latency(tmp_path):
    """A router directory written before the latency model (pipeline format 1) still loads and
    routes; asking it for lambda_t > 0 names the directory and says to retrain."""
    out = train_pipeline(two_models(), router="knn").save(tmp_path / "old")
    cfg = json.loads((out / PIPELINE_FILE).read_text())
    cfg["format_version"] = 1
    del cfg["latency"]
    (out / PIPELINE_FILE).write_text(json.dumps(cfg))
    import shutil

    shutil.rmtree(out / "latency")
    old = RoutingPipeline.load(out)
    assert old.latency is None and old.decide(["question number 11"])[0].model == "slow"
    with pytest.raises(ConfigError, match=r"old\) has none.*retrain"):
        old.decide(["question number 11"], lam_t=0.1)
    cfg["format_version"] = 3
    (out / PIPELINE_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="format_version 3, this caproute reads 2"):
        RoutingPipeline.load(out)


def test_fixed_route_ignores_lambda_t():
    p = train_pipeline(two_models(), router="cheapest")
    assert p.decide(["q"], lam_t=10.0)[0].model == "fast"


def test_route_cli_lambda_t(tmp_path):
    from typer.testing import CliRunner

    from caproute.cli import app

    train_pipeline(two_models(), router="knn").save(tmp_path / "r")
    r = CliRunner().invoke(app, ["route", "--router", str(tmp_path / "r"), "--lambda-t", "0.1", "--format", "json",
                                 "question number 11 about topic 2"])
    assert r.exit_code == 0, r.output
    (d,) = json.loads(r.output)
    assert d["model"] == "fast" and d["lambda_t"] == 0.1 and d["mu_latency"] == pytest.approx({"slow": 5.0, "fast": 0.5})
    train_pipeline(two_models(latency=False), router="knn").save(tmp_path / "old")
    r = CliRunner().invoke(app, ["route", "--router", str(tmp_path / "old"), "--lambda-t", "0.1", "q"])
    assert isinstance(r.exception, ConfigError) and "needs predicted latencies" in str(r.exception)
