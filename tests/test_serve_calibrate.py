"""``caproute calibrate`` end to end: a router and a traffic sample of observations with a known
ordering (synthetic, see caproute.serve.testing), the builtin set, and a request file; the written
policy loads; errors exit 2 with a clear message and write nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from caproute.cli import app
from caproute.data.formats import write_observations
from caproute.data.validate import canonicalize
from caproute.serve.calibrate import load_policy
from caproute.serve.testing import synthetic_observations, train_router

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cal")
    obs = synthetic_observations()
    write_observations(canonicalize(obs, source="synthetic"), d / "obs.parquet", "parquet")
    return train_router(d / "router", obs), d / "obs.parquet", obs


def invoke(*args):
    r = runner.invoke(app, ["calibrate", *map(str, args)])
    assert r.exit_code == 0, r.output
    return r


def test_cost_target_from_observations(setup, tmp_path):
    router, data, obs = setup
    out, png = tmp_path / "policy.json", tmp_path / "sweep.png"
    # halfway between always-cheapest and always-best mean cost per query: the target binds
    per_model = obs.groupby(["query_id", "model"])["cost"].mean().groupby("model").mean()
    target = (per_model["big"] + per_model["small"]) / 2
    r = invoke("--router", router, "--data", data, "--target-cost", target, "--out", out, "--png", png)
    pol = load_policy(out)
    assert pol.target.kind == "cost" and pol.expected["mean_cost_usd"] <= target and pol.lam > 0
    assert pol.sample["outcomes"] == "observed" and pol.sample["n"] == 100
    assert 0 < pol.expected["model_share"]["big"] < 1 and sum(
        pol.expected["model_share"].values()
    ) == pytest.approx(1)
    assert png.stat().st_size > 1000 and f"lambda = {pol.lam:.6g}" in r.output


def test_share_and_quality_targets(setup, tmp_path):
    router, data, _ = setup
    out = tmp_path / "share.json"
    invoke(
        "--router",
        router,
        "--data",
        data,
        "--split",
        "test",
        "--target-share",
        "0.2",
        "--strong-model",
        "big",
        "--out",
        out,
    )
    doc = json.loads(out.read_text())
    assert doc["expected"]["model_share"]["big"] <= 0.2 and doc["sample"]["n"] == 40
    out = tmp_path / "quality.json"
    invoke("--router", router, "--data", data, "--quality-floor", "0.6", "--out", out)
    pol = load_policy(out)
    assert (
        pol.expected["mean_quality"] >= 0.6 and pol.expected["model_share"]["big"] < 1
    )  # cheaper than all-big


def test_builtin_sample(tmp_path):
    from caproute.data.source import load_observations

    obs, _ = load_observations(data="builtin")
    router = train_router(tmp_path / "router", obs)
    out = tmp_path / "p.json"
    invoke("--router", router, "--data", "builtin", "--quality-floor", "0", "--out", out)
    pol = load_policy(out)  # the cheapest routing of the builtin set
    assert pol.sample["n"] == obs["query_id"].nunique() and set(pol.models) == set(obs["model"].unique())


def test_request_sample_uses_predictions(setup, tmp_path):
    router, _, _ = setup
    sample = tmp_path / "traffic.jsonl"
    sample.write_text(
        "\n".join(
            json.dumps(x)
            for x in [
                {"input": "question 3: topic3word1 topic3word7 filler2"},
                {"messages": [{"role": "user", "content": "question 7: topic7word2 filler9"}]},
                {"prompt": "hello"},
            ]
        )
        + "\n"
    )
    out = tmp_path / "p.json"
    invoke("--router", router, "--sample", sample, "--quality-floor", "0.3", "--out", out)
    assert load_policy(out).sample["outcomes"] == "predicted" and load_policy(out).sample["n"] == 3


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "caproute", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_errors_exit_2_and_write_nothing(setup, tmp_path):
    router, data, _ = setup
    out = tmp_path / "never.json"
    r = run_cli("calibrate", "--router", router, "--data", data, "--quality-floor", "0.99", "--out", out)
    assert r.returncode == 2 and "quality floor 0.99 is above the best mean quality" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "ok"}\n{"messages": "not a list"}\n')
    r = run_cli("calibrate", "--router", router, "--sample", bad, "--target-cost", "1", "--out", out)
    assert r.returncode == 2 and "bad.jsonl, line 2, field 'messages'" in r.stderr and not out.exists()
    r = run_cli("calibrate", "--router", router, "--data", data, "--out", out)
    assert r.returncode == 2 and "give exactly one of --target-cost" in r.stderr
