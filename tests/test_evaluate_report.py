"""The bench report folder and the ``caproute bench`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _evaluate_toy import toy_observations  # noqa: E402
from caproute.errors import ConfigError  # noqa: E402
from caproute.evaluate import plots  # noqa: E402
from caproute.evaluate.bench import BenchConfig, run_bench  # noqa: E402
from caproute.evaluate.protocol import prepare_experiment  # noqa: E402
from caproute.evaluate.report import table1, table2, to_markdown, write_report  # noqa: E402

CAPROUTE = Path(sys.executable).parent / "caproute"


@pytest.fixture(scope="module")
def toy_result():
    exp = prepare_experiment(toy_observations())
    rng = np.random.default_rng(0)
    X_train = rng.normal(size=(len(exp.train_query_ids), 5)).astype(np.float32)
    X_test = rng.normal(size=(len(exp.test_query_ids), 5)).astype(np.float32)
    config = BenchConfig(routers=("knn", "best_fixed"), single_shot_runs=4, kxr_subsamples=2,
                         kxr_protocols=((1, 1), (2, 2)), betas=(0.0, 0.2), lambdas=(0.0, 0.05, 1.0))
    return run_bench(exp, config, X_train=X_train, X_test=X_test, progress=False)


def test_table1_shape(toy_result):
    t = table1(toy_result)
    assert list(t.columns) == ["Router", "Single-shot U_rew", "Single-shot U_dec", "DARS U_rew", "DARS U_dec",
                               "Δ U_rew", "Δ U_dec", "single-shot runs"]
    assert list(t["Router"]) == ["knn", "best_fixed_train", "best fixed", "oracle"]
    assert t.iloc[2]["DARS U_dec"] == "0.667 (a)"
    assert t.iloc[3]["DARS U_rew"] == "0.808"
    t2 = table2(toy_result)
    assert list(t2["Variant"]) == ["single-shot", "Input-only", "Output-only", "w/o Risk", "w/ Rew. Risk",
                                   "w/ Dec. Risk", "Full DARS"]
    assert list(t2.columns) == ["Variant", "knn", "Avg"]       # studies skip the baselines by default
    assert "|" in to_markdown(t2).splitlines()[0]


def test_write_report_files(toy_result, tmp_path):
    out = write_report(toy_result, tmp_path / "rep")
    names = {p.name for p in out.iterdir()}
    for f in ("report.md", "report.html", "bench.json", "rows.csv", "runs.csv", "ablation.csv", "kxr.csv",
              "beta.csv", "pareto.csv", "pair.csv", "variance.csv", "table1_utility.csv", "table2_ablation.csv",
              "fig2c_router_variance.png", "fig4a_kxr.png", "fig4b_pareto.png", "fig4c_beta.png",
              "fig_two_model_curves.png"):
        assert f in names, f
    md = (out / "report.md").read_text()
    assert "## Table 1: test utility, single-shot vs DARS" in md and "| knn |" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    assert "src='http" not in html and 'src="http' not in html
    data = json.loads((out / "bench.json").read_text())
    assert data["dataset"] == "toy" and len(data["rows"]) == 2 * 2 * 2 + 4
    # writing again replaces the earlier report
    write_report(toy_result, out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_write_report_refuses_a_foreign_folder_and_leaves_nothing_on_failure(toy_result, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a caproute report folder"):
        write_report(toy_result, other)
    assert (other / "keep.txt").read_text() == "mine"

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "plot_beta", boom)
    with pytest.raises(RuntimeError):
        write_report(toy_result, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]


def _cli(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(CAPROUTE), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_cli_bench_builtin(tmp_path):
    r = _cli("bench", "--data", "builtin", "--routers", "knn,random", "--single-shot-runs", "2",
             "--studies", "main,ablation", "--json", "rows.json", "--report", "rep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "knn" in r.stdout and "oracle" in r.stdout
    rows = json.loads((tmp_path / "rows.json").read_text())
    keys = {(x["router"], x["supervision"], x["view"]) for x in rows}
    assert ("knn", "single", "decode") in keys and ("knn", "dars", "rewrite") in keys
    assert ("best_fixed", None, "decode") in keys and ("oracle", None, "rewrite") in keys
    assert all(x["n_runs"] == 2 for x in rows if x["supervision"] == "single")
    assert (tmp_path / "rep" / "report.html").exists()


def test_cli_bench_errors_are_clear(tmp_path):
    r = _cli("bench", "--data", "builtin", "--routers", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "unknown router 'nope'" in r.stderr and "Traceback" not in r.stderr
    r = _cli("bench", "--data", "builtin", "--dataset", "gpqa", "--routers", "knn", cwd=tmp_path)
    assert r.returncode == 2 and "no dataset 'gpqa'" in r.stderr
    r = _cli("bench", "--data", "builtin", "--routers", "knn", "--kxr", "3by3", cwd=tmp_path)
    assert r.returncode == 2 and "--kxr" in r.stderr
    assert not (tmp_path / "rows.json").exists()


def test_read_result_round_trip(toy_result, tmp_path):
    from caproute.evaluate.report import read_result, render_markdown

    out = write_report(toy_result, tmp_path / "rep")
    back = read_result(out)
    assert render_markdown(back) == render_markdown(toy_result)
    assert back.config == toy_result.config
