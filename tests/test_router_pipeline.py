"""train_pipeline / RoutingPipeline: train on the builtin data, decide, save, load, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from caproute.cli import app
from caproute.data.source import load_observations
from caproute.errors import ConfigError
from caproute.routers.pipeline import Decision, RoutingPipeline, train_pipeline


@pytest.fixture(scope="module")
def obs():
    return load_observations(data="builtin")[0]


@pytest.fixture(scope="module")
def test_texts(obs):
    from caproute.features.text import query_texts

    test = obs[obs["split"] == "test"]
    return query_texts(test)[1]


def test_train_decide(obs, test_texts):
    p = train_pipeline(obs, router="knn")
    assert p.models == tuple(sorted(obs["model"].unique()))
    assert p.meta["n_train_queries"] == obs[obs["split"] == "train"]["query_id"].nunique()
    assert p.meta["supervision"] == "dars" and p.meta["beta"] == 0.2 and p.meta["lam"] == 0.05
    (name,) = obs["dataset"].unique()
    assert p.meta["dataset"] == name
    lo, hi = p.meta["cost_normalizer"][name]
    train = obs[obs["split"] == "train"]
    assert (lo, hi) == (train["cost"].min(), train["cost"].max())
    ds = p.decide(test_texts[:5])
    assert len(ds) == 5 and all(isinstance(d, Decision) for d in ds)
    for d in ds:
        u = {m: d.mu_q[m] - 0.05 * d.mu_c[m] - 0.2 * d.sigma_q[m] for m in p.models}
        assert d.model == max(u, key=u.get) and p.models[d.index] == d.model
        assert d.utility == pytest.approx(u)
        json.dumps(d.to_dict())
    # batch and single decisions agree
    assert [d.model for d in ds] == [p.decide(t)[0].model for t in test_texts[:5]]


def test_lambda_changes_decisions(obs, test_texts):
    """A huge cost weight routes every query to its cheapest predicted model, no cost weight to
    its best predicted quality."""
    p = train_pipeline(obs, router="knn")
    for d in p.decide(test_texts, lam=1000.0, beta=0.0):
        assert d.mu_c[d.model] == min(d.mu_c.values())
    for d in p.decide(test_texts, lam=0.0, beta=0.0):
        assert d.mu_q[d.model] == max(d.mu_q.values())


def test_single_supervision_routes_with_beta_zero(obs):
    p = train_pipeline(obs, router="knn", supervision="single", seed=3)
    assert p.meta["beta"] == 0.0 and p.meta["supervision"] == "single"
    np.testing.assert_array_equal(p.router.targets_[2], 0.0)     # sigma_q = 0 single-shot


def test_save_load_identical(obs, test_texts, tmp_path):
    p = train_pipeline(obs, router="knn")
    p.save(tmp_path / "r")
    # the builtin observations have latency_s: the latency model is saved too (format 2)
    assert {f.name for f in (tmp_path / "r").iterdir()} == {"encoder", "router", "latency", "pipeline.json"}
    q = RoutingPipeline.load(tmp_path / "r")
    assert q.meta == json.loads(json.dumps(p.meta))
    a, b = p.decide(test_texts, 0.1, 0.3), q.decide(test_texts, 0.1, 0.3)
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
    p.save(tmp_path / "r")   # replacing an existing router directory is fine


def test_bad_directories(obs, tmp_path):
    with pytest.raises(ConfigError, match="no such router directory"):
        RoutingPipeline.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="pipeline.json"):
        RoutingPipeline.load(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    p = train_pipeline(obs, router="best_fixed")
    with pytest.raises(ConfigError, match="not a caproute router directory"):
        p.save(other)
    assert (other / "precious.txt").read_text() == "keep me"
    p.save(tmp_path / "ok")
    (tmp_path / "ok" / "pipeline.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        RoutingPipeline.load(tmp_path / "ok")


def test_bad_arguments(obs):
    with pytest.raises(ConfigError, match="unknown router"):
        train_pipeline(obs, router="nope")
    with pytest.raises(ConfigError, match="unknown supervision"):
        train_pipeline(obs, router="knn", supervision="triple")
    with pytest.raises(ConfigError, match="unknown encoder"):
        train_pipeline(obs, router="knn", features="bag")


def test_cli_train_route(tmp_path):
    runner = CliRunner()
    out = tmp_path / "r"
    res = runner.invoke(app, ["train", "--data", "builtin", "--router", "knn", "--out", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["route", "--router", str(out), "--format", "json", "--lambda", "0.1",
                              "What is 17 + 26?"])
    assert res.exit_code == 0, res.output
    (d,) = json.loads(res.output)
    assert d["query"] == "What is 17 + 26?"
    assert d["lambda"] == 0.1 and d["model"] in d["mu_q"] and set(d) >= {"mu_c", "sigma_q", "utility"}
    res = runner.invoke(app, ["route", "--router", str(out), "what is 2+2"])
    assert res.exit_code == 0 and "utility" in res.output
    res = runner.invoke(app, ["routers"])
    assert res.exit_code == 0 and "knn" in res.output


@pytest.mark.parametrize("name", ["mlp", "embedllm", "mirt", "rmsoftmax", "graphrouter", "avengerspro", "mf",
                                  "cheapest", "random"])
def test_every_family_through_the_pipeline(obs, test_texts, tmp_path, name):
    p = train_pipeline(obs, router=name, seed=7)
    ds = p.decide(test_texts[:6], lam=0.05, beta=0.2)
    assert all(d.model in p.models for d in ds)
    p.save(tmp_path / name)
    q = RoutingPipeline.load(tmp_path / name)
    assert [d.to_dict() for d in q.decide(test_texts[:6], 0.05, 0.2)] == [d.to_dict() for d in ds]
    if name == "graphrouter":   # descriptions encoded with the pipeline's encoder + one-hot ids
        assert p.router.net_.model_features.shape == (3, p.encoder.dim + 3)
    if name == "rmsoftmax":
        assert p.router.lambda_max == 0.10 and ds[0].kind == "policy"
        assert sum(ds[0].mu_q.values()) == pytest.approx(1.0)


def test_knn_exact_match_through_pipeline(obs):
    """A training query routed again finds itself (distance 0): its prediction is the mean target
    of the training queries with exactly its feature vector (often just itself)."""
    from caproute.features.text import query_texts

    p = train_pipeline(obs, router="knn")
    ids, texts = query_texts(obs[obs["split"] == "train"])
    X = p.encoder.transform(texts)
    for j in (0, 5, 17):
        same = np.flatnonzero((X[j] == X).all(axis=1))
        pred = p.predict_stats([texts[j]])
        expected = p.router.targets_[0][same].mean(axis=0)
        assert pred.mu_q[0] == pytest.approx(expected, abs=1e-6)
