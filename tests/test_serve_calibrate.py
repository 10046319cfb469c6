"""``caproute calibrate`` end to end: a router trained on the builtin set, its observations as the
traffic sample, a written policy that the server can load; errors exit 2 with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from caproute.cli import app
from caproute.serve.calibrate import load_policy
from caproute.serve.testing import train_builtin_router

runner = CliRunner()


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    return train_builtin_router(tmp_path_factory.mktemp("cal") / "router")


def test_calibrate_cost_target_from_observations(router, tmp_path):
    out, png = tmp_path / "policy.json", tmp_path / "sweep.png"
    r = runner.invoke(app, ["calibrate", "--router", str(router), "--data", "builtin", "--target-cost", "3e-5",
                            "--out", str(out), "--png", str(png)])
    assert r.exit_code == 0, r.output
    pol = load_policy(out)
    assert pol.target.kind == "cost" and pol.expected["mean_cost_usd"] <= 3e-5
    assert pol.sample["outcomes"] == "observed" and pol.sample["n"] == 100 and pol.lam > 0
    assert sum(pol.expected["model_share"].values()) == pytest.approx(1.0)
    assert png.stat().st_size > 1000 and f"lambda = {pol.lam:.6g}" in r.output


def test_calibrate_share_and_quality_targets(router, tmp_path):
    out = tmp_path / "share.json"
    r = runner.invoke(app, ["calibrate", "--router", str(router), "--data", "builtin", "--split", "test",
                            "--target-share", "0.2", "--strong-model", "large-c", "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["expected"]["model_share"]["large-c"] <= 0.2 and doc["sample"]["n"] == 40
    out = tmp_path / "quality.json"
    r = runner.invoke(app, ["calibrate", "--router", str(router), "--data", "builtin", "--quality-floor", "0.6",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert load_policy(out).expected["mean_quality"] >= 0.6


def test_calibrate_on_request_sample_uses_predictions(router, tmp_path):
    sample = tmp_path / "traffic.jsonl"
    sample.write_text("\n".join(json.dumps(x) for x in [
        {"input": "[arithmetic] synthetic question 3 of difficulty 0.2"},
        {"messages": [{"role": "user", "content": "[reasoning] synthetic question 7 of difficulty 0.9"}]},
        {"prompt": "hello"}]) + "\n")
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["calibrate", "--router", str(router), "--sample", str(sample), "--quality-floor", "0.3",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert load_policy(out).sample == {**load_policy(out).sample, "outcomes": "predicted", "n": 3}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "caproute", *args], capture_output=True, text=True, timeout=120)


def test_calibrate_errors_exit_2_and_write_nothing(router, tmp_path):
    out = tmp_path / "never.json"
    r = run_cli("calibrate", "--router", str(router), "--data", "builtin", "--quality-floor", "0.99", "--out", str(out))
    assert r.returncode == 2 and "quality floor 0.99 is above the best mean quality" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "ok"}\n{"messages": "not a list"}\n')
    r = run_cli("calibrate", "--router", str(router), "--sample", str(bad), "--target-cost", "1", "--out", str(out))
    assert r.returncode == 2 and "bad.jsonl, line 2, field 'messages'" in r.stderr and not out.exists()
    r = run_cli("calibrate", "--router", str(router), "--data", "builtin", "--out", str(out))
    assert r.returncode == 2 and "give exactly one of --target-cost" in r.stderr
