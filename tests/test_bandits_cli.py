"""``caproute duel`` end to end (real MiniLM, real CCFT fine-tuning on the builtin set) and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def duel(*args, cwd=None) -> subprocess.CompletedProcess:
    env_vars = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OPENBLAS_NUM_THREADS": "1",
                "TOKENIZERS_PARALLELISM": "false"}
    import os

    return subprocess.run([sys.executable, "-m", "caproute", "duel", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **env_vars}, timeout=900)


@pytest.mark.parametrize("args,message", [
    (["--data", "builtin", "--policy", "fgts-cdb,thompson"], "unknown policies"),
    (["--data", "builtin", "--embeddings", "openai"], "unknown embeddings"),
    (["--data", "builtin", "--dataset", "gpqa"], "unknown dataset"),
    (["--data", "no/such/file.parquet"], "no such file"),
    ([], "exactly one of --store or --data"),
    (["--data", "builtin", "--lambda", "-1"], "--lambda"),
    (["--data", "builtin", "--lambda", "nan"], "--lambda"),
    (["--data", "builtin", "--lambda-c", "-1"], "--lambda-c"),
])
def test_duel_errors_are_clear(args, message, tmp_path):
    out = tmp_path / "rows.json"
    res = duel(*args, "--rounds", "5", "--seeds", "1", "--json", str(out))
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_duel_lambda_is_the_cost_weight_of_r_star_and_lambda_c_its_old_spelling(monkeypatch):
    """``--lambda`` reaches the environment's r* = score - lambda * cost; ``--lambda-c`` still does,
    with a deprecation warning."""
    from typer.testing import CliRunner

    import caproute.bandits.environment as environment
    from caproute.cli import app

    seen = []

    def fake_load(**kw):
        seen.append(kw["lam"])
        raise SystemExit(0)        # stop before any encoder or policy runs

    monkeypatch.setattr(environment, "load_environment", fake_load)
    runner = CliRunner()
    assert runner.invoke(app, ["duel", "--data", "builtin", "--lambda", "0.5"]).exit_code == 0
    res = runner.invoke(app, ["duel", "--data", "builtin", "--lambda-c", "0.25"])
    assert res.exit_code == 0 and "--lambda-c is deprecated" in res.output
    assert runner.invoke(app, ["duel", "--data", "builtin"]).exit_code == 0
    assert seen == [0.5, 0.25, 1.0]


@pytest.mark.slow
def test_duel_builtin_end_to_end(tmp_path):
    out, rep = tmp_path / "rows.json", tmp_path / "report"
    res = duel("--data", "builtin", "--rounds", "80", "--seeds", "2", "--sampler", "laplace",
               "--policy", "fgts-cdb,uniform,best-fixed,eps-greedy,maxinp,dars-knn",
               "--embeddings", "ccft-excel-perf-cost,minilm", "--ccft-epochs", "1", "--ccft-per-category", "3",
               "--json", str(out), "--report", str(rep), "--cache", str(tmp_path / "cache"))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(out.read_text())
    got = {(r["policy"], r["embeddings"]) for r in rows}
    assert got == {("fgts-cdb", "ccft-excel-perf-cost"), ("fgts-cdb", "minilm"), ("uniform", "none"),
                   ("best-fixed", "none"), ("eps-greedy", "ccft-excel-perf-cost"), ("eps-greedy", "minilm"),
                   ("maxinp", "ccft-excel-perf-cost"), ("maxinp", "minilm"), ("dars-knn", "ccft"),
                   ("dars-knn", "minilm")}
    for r in rows:
        assert {"policy", "embeddings", "rounds", "regret_mean", "regret_std"} <= set(r)
        assert r["rounds"] == 80 and r["seeds"] == 2 and r["regret_mean"] >= 0
    # named for what ran, with the settings printed (issue 24.1)
    assert {r["method"] for r in rows if r["policy"] == "fgts-cdb"} == {"FGTS.CDB (Laplace+importance, η 0.25, μ 1/√T)"}
    assert "sampler laplace (importance feel-good), η 0.25, μ 1/√T = 0.1118, arm component γ 0" in res.stdout
    by = {(r["policy"], r["embeddings"]): r["regret_mean"] for r in rows}
    assert by[("best-fixed", "none")] < by[("uniform", "none")]
    for f in ("regret.png", "weak_regret.png", "table.md", "meta.json", "curves.npz"):
        assert (rep / f).stat().st_size > 0
    meta = json.loads((rep / "meta.json").read_text())
    from caproute.data.source import read_source

    assert meta["n_offline"] + meta["n_online"] == meta["n_queries"] == read_source("builtin")["query_id"].nunique()
    assert all(c.startswith("cluster-") for c in meta["categories"])       # k-means pseudo-categories
    # every run reports how distinct the arms are (the paper's arms: no per-model component)
    assert meta["settings"]["arm_residual"] == 0.0 and meta["spec"]["ccft"]["residual"] == 0.0
    for name in ("ccft-excel-perf-cost", "minilm"):
        a = meta["arms"][name]
        assert a["K"] == len(meta["models"]) and a["distinct"] + sum(len(g) - 1 for g in a["tied"]) == a["K"]
        assert 1 <= a["rank"] <= a["K"]
        assert f"arms [{name}]: {a['distinct']} distinct of {a['K']}, rank {a['rank']}" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["--first-seed", "-1"], "--first-seed"),
    (["--split-seed", "-1"], "--split-seed"),
    (["--split-seed", "every"], "'per-seed'"),
    (["--subsample-seed", "-2"], "--subsample-seed"),
])
def test_duel_seed_options_are_validated(args, message):
    from typer.testing import CliRunner

    from caproute.cli import app

    res = CliRunner().invoke(app, ["duel", "--data", "builtin", "--rounds", "5", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_duel_split_seed_varies_the_split_and_the_ccft_fit_and_reproduces(tmp_path):
    """--split-seed seeds the offline split and the CCFT fit: two split seeds give two splits and two
    fits; the same split seed (fresh cache, so the encoder is fitted again) gives the same split, fit
    and regrets; --split-seed per-seed gives seed s the split s, so each seed of such a run is rerun by
    --first-seed s --seeds 1 --split-seed s (how docs/results-dueling.md's rows are reproduced).

    Three runs: the per-seed run's seed 1 is the fresh-cache rerun of the one-seed run with split seed 1
    (and its seed 2 that of split seed 2); its two seeds' regrets are read back from the 2-seed mean and
    standard deviation (ddof 0: mean -+ std)."""
    def run(name, *args):
        res = duel("--data", "builtin", "--rounds", "30", "--policy", "fgts-cdb,uniform", "--sampler", "laplace",
                   "--embeddings", "ccft-excel-perf-cost", "--ccft-epochs", "1", "--ccft-per-category", "3",
                   "--cache", str(tmp_path / f"cache-{name}"), "--report", str(tmp_path / name), *args)
        assert res.returncode == 0, res.stderr[-3000:]
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        rows = {r["policy"]: (r["regret_mean"], r["regret_std"])
                for r in json.loads((tmp_path / name / "rows.json").read_text())}
        return meta, rows, res.stdout

    emb = "ccft-excel-perf-cost"
    a, rows_a, out_a = run("a", "--seeds", "1", "--first-seed", "1", "--split-seed", "1")
    b, rows_b, _ = run("b", "--seeds", "1", "--first-seed", "2", "--split-seed", "2")
    assert a["split_seed"] == 1 and b["split_seed"] == 2 and "split seed 1 (subsample seed 0)" in out_a
    assert a["n_queries"] == b["n_queries"]                                  # one query pool (subsample seed 0)
    assert a["offline_queries"] != b["offline_queries"]                      # another split
    assert a["embedding_digest"][emb] != b["embedding_digest"][emb]          # another CCFT fit
    assert all(rows_a[p][1] == 0 and rows_b[p][1] == 0 for p in rows_a)      # one seed: no spread
    # per-seed: seeds 1 and 2 on splits 1 and 2 (fresh cache), each identical to its one-seed run above
    per, rows_per, out_per = run("per", "--seeds", "2", "--first-seed", "1", "--split-seed", "per-seed")
    assert [s["split_seed"] for s in per["splits"]] == [1, 2] and "seed 2: split seed 2" in out_per
    for s, one in zip(per["splits"], (a, b), strict=True):
        assert s["offline_queries"] == one["offline_queries"] and s["embedding_digest"] == one["embedding_digest"]
    for p in ("fgts-cdb", "uniform"):
        mean, std = rows_per[p]
        assert [mean - std, mean + std] == pytest.approx(sorted([rows_a[p][0], rows_b[p][0]]), rel=1e-6)
    assert rows_a["fgts-cdb"][0] != rows_b["fgts-cdb"][0]
